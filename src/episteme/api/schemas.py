"""Request bodies of the API, with examples for the OpenAPI document.

Bodies refuse unknown fields. None of them names who is acting: the principal is
the bearer token's. Values are checked again by the library, which is the authority
on subjects, names and lifecycle moves.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema
from whenever import Instant

from episteme.ledger.access import Role, TokenRecord
from episteme.ledger.constraints import MAX_PATTERN, MAX_REASON, MAX_TAGS, MAX_WORD, TAG
from episteme.ledger.learning import MAX_ITEM, MAX_ITEMS, MAX_PLAN, MAX_SCOPE
from episteme.ledger.model import MAX_SUBJECT, NAME_RE, SUBJECT_RE, Kind, Lifecycle
from episteme.ledger.webhooks import NOTIFICATION_TYPES, NotificationType

WireTime = Annotated[
    Instant,
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            # years 1000-8999 and at most nanoseconds: the range every offset can reach
            "pattern": r"^[1-8][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
            r"(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$",
            "example": "2026-11-21T21:00:00Z",
        }
    ),
]
"""An instant on the wire: RFC 3339, any offset (answers always use UTC, ``Z``)."""


SUBJECT = SUBJECT_RE.pattern
PREFIX = SUBJECT.removesuffix("$") + r"(?:\.\*|\.)?$"
"""A subject read as a prefix: as a subject, or with a trailing ``.`` or ``.*``."""
NAME = NAME_RE.pattern
Subject = Annotated[str, Field(max_length=MAX_SUBJECT, pattern=SUBJECT)]
Tag = Annotated[str, Field(max_length=64, pattern=TAG)]
Prefix = Annotated[str, Field(max_length=MAX_SUBJECT + 2, pattern=PREFIX)]
Name = Annotated[str, Field(max_length=128, pattern=NAME)]


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class AssertionBody(BaseModel):
    model_config = _examples(
        {
            "subject": "auth.jwt.algorithm",
            "value": "RS256",
            "confidence": 0.92,
            "source": "runbook://auth/jwt",
            "epoch": "auth-docs-2026-11",
        }
    )

    subject: Subject = Field(description="dotted subject, e.g. auth.jwt.algorithm")
    value: JsonValue = Field(description="any JSON value")
    kind: Kind = Kind.FACT
    confidence: float = Field(1.0, ge=0.0, le=1.0, strict=True)
    lifecycle: Literal[Lifecycle.PROPOSED, Lifecycle.APPROVED] = Lifecycle.PROPOSED
    source: str | None = Field(None, max_length=2048)
    evidence: str | None = Field(None, max_length=65536)
    epoch: Name | None = None
    derived_from: list[str] = Field(default_factory=list, max_length=1000)
    valid_from: WireTime | None = None
    valid_to: WireTime | None = None


class BatchBody(BaseModel):
    model_config = _examples({"assertions": [{"subject": "auth.jwt.algorithm", "value": "RS256"}]})

    assertions: list[AssertionBody] = Field(min_length=1, max_length=10_000)


class QueryBody(BaseModel):
    model_config = _examples(
        {"subject": "auth.jwt.algorithm", "lens": "approved", "context": {"task": "deploy"}},
        {"subject": "auth", "lens": "approved", "at": "2026-11-21T21:00:00Z"},
        {"text": "jwt algorithm", "lens": "consensus"},
    )

    subject: Prefix | None = Field(
        None, description="a subject, or a prefix covering everything below it (auth.jwt.*)"
    )
    text: str | None = Field(None, max_length=1024, description="full-text words")
    lens: Name = Field("approved", description="approved (default), latest, consensus, all, custom")
    at: WireTime | None = Field(None, description="read as of this time (default: now)")
    context: dict[str, JsonValue] = Field(
        default_factory=dict, description="the caller's task, session or ticket, kept in the audit"
    )


class DecisionBody(BaseModel):
    model_config = _examples(
        {"action": "deployed auth config v42", "query_ids": ["q_3f9a1c2b7d4e5f60a1b2c3d4"]}
    )

    action: str = Field(min_length=1, max_length=4096)
    query_ids: list[str] = Field(default_factory=list, max_length=1000)
    context: dict[str, JsonValue] = Field(default_factory=dict)


class ReviewBody(BaseModel):
    model_config = _examples({"reason": "matches the production config"})

    reason: str | None = Field(None, max_length=4096)


class CorrectBody(BaseModel):
    model_config = _examples(
        {"reason": "production verifies RS256", "value": "RS256", "forbid": True}
    )

    reason: str = Field(min_length=1, max_length=4096)
    value: JsonValue = Field(None, description="the right value, recorded as approved")
    forbid: bool = Field(
        False, strict=True, description="add a negative constraint against the bad value"
    )


class ReasonBody(BaseModel):
    model_config = _examples({"reason": "the document was withdrawn"})

    reason: str = Field(min_length=1, max_length=4096)


class RevokeBody(BaseModel):
    model_config = _examples({"ref": "deploy-agent", "reason": "leaked in a CI log"})

    ref: str = Field(
        min_length=1,
        max_length=256,
        description="a token's id, its secret (ep_…: a secret never goes in a URL, which"
        " proxies and logs keep), or a principal's name (then every active token of it)",
    )
    reason: str = Field(min_length=1, max_length=4096)


class RebuildBody(BaseModel):
    model_config = _examples({"repair": False})

    repair: bool = Field(False, strict=True)


class TokenBody(BaseModel):
    model_config = _examples(
        {"name": "deploy-agent", "roles": ["agent"]},
        {"name": "alice", "roles": ["supervisor"], "expires": "2026-12-31T00:00:00Z"},
    )

    name: Name = Field(description="the principal")
    roles: list[Role] = Field(min_length=1)
    kind: Literal["agent", "human"] | None = Field(
        None, description="default: agent for agent-only tokens, human otherwise"
    )
    expires: WireTime | None = None


class IssuedToken(BaseModel):
    """A new token: `token` is shown here once and never again."""

    token: str
    record: TokenRecord


class CheckBody(BaseModel):
    model_config = _examples(
        {
            "plan": "add node-fetch and call the billing API with it",
            "scope": ["code.http_client"],
            "items": ["node-fetch"],
        },
        {"plan": "set auth.jwt.algorithm to ES256", "scope": ["auth.jwt.algorithm"]},
        {"plan": "deploy checkout v2.4.1 to prod", "tags": ["deploy"]},
    )

    plan: str = Field(
        "",
        max_length=MAX_PLAN,
        description="what you are about to do (may be left out when `items` names what it uses)",
    )
    scope: list[Subject] = Field(
        default_factory=list,
        max_length=MAX_SCOPE,
        description="subjects the plan touches: the constraints on them, above and below"
        " them; left empty, every constraint on any subject",
    )
    subjects: list[Subject] = Field(
        default_factory=list, max_length=MAX_SCOPE, description="the same as scope (older name)"
    )
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="the kinds of plan it is (deploy, npm, db-migration): the constraints "
        "of these tags; left empty, every constraint of any tag",
    )
    items: list[Annotated[str, Field(min_length=1, max_length=MAX_ITEM)]] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="identifiers the plan uses: package names, paths, image tags",
    )
    context: dict[str, JsonValue] | None = Field(None, description="your task, session, ...")


class ConstraintBody(BaseModel):
    model_config = _examples(
        {
            "scope": "code.http_client",
            "forbid": ["node-fetch"],
            "prefer": "axios",
            "reason": "node-fetch v2 leaks sockets behind our proxy",
        },
        {
            "tags": ["deploy"],
            "patterns": ["--force"],
            "reason": "a forced deploy skips the canary that caught the last two outages",
        },
    )

    scope: Subject | None = Field(
        None, description="the subject it covers, and all below it (or give tags)"
    )
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="the kinds of plan it covers (deploy, npm): a check naming one meets it",
    )
    reason: str = Field(min_length=1, max_length=MAX_REASON, description="why it is forbidden")
    forbid: list[Annotated[str, Field(min_length=1, max_length=MAX_WORD)]] = Field(
        default_factory=list, max_length=100, description="terms, matched as whole words"
    )
    patterns: list[Annotated[str, Field(min_length=1, max_length=MAX_PATTERN)]] = Field(
        default_factory=list,
        max_length=100,
        description="regular expressions (RE2 syntax, any case)",
    )
    items: list[Annotated[str, Field(min_length=1, max_length=MAX_WORD)]] = Field(
        default_factory=list, max_length=100, description="identifiers, matched exactly"
    )
    prefer: str | None = Field(None, max_length=MAX_WORD, description="the preferred alternative")
    half_life_days: float = Field(30.0, gt=0, le=3650, description="freshness half-life")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    store: str
    journal_events: int | None = Field(
        description="the journal's length; null when the store cannot be read"
    )
    workers: dict[str, str]
    process: int = Field(
        default_factory=os.getpid,
        description="the server process that answered: with several workers each answers"
        " for itself, and one of all the servers on a ledger leads its background work",
    )


class WebhookBody(BaseModel):
    model_config = _examples(
        {
            "url": "env:SLACK_WEBHOOK_URL",
            "format": "slack",
            "events": ["correction", "trust_drop"],
            "secret": "env:EPISTEME_WEBHOOK_SECRET",
        }
    )

    url: str = Field(
        max_length=2048, description="http(s)://… or env:VAR (a URL that is itself a secret)"
    )
    format: Literal["json", "slack"] = "json"
    events: list[NotificationType] | None = Field(
        None,
        max_length=len(NOTIFICATION_TYPES),
        description="the notification types it takes (default: all)",
    )
    secret: str | None = Field(
        None, max_length=256, description="env:VAR holding the HMAC signing secret"
    )
    timeout_s: float = Field(5.0, gt=0, le=60)
    max_attempts: int = Field(8, ge=1, le=50)
