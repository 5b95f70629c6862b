"""What specialists produce and what they are given.

A specialist is a coroutine ``run(ctx) -> list[Finding]``. It reads the credentials it
declared through `ctx.secret(ref)` (values live only in the memory of the worker running
the session, and never go into a finding, a log line or an exception message), runs its
diagnostic queries with a real client, and reports each observation as a `Finding` that
names the query it ran and the credential *reference* it used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from episteme.errors import WorldError


class SpecialistError(WorldError):
    """A specialist could not look at its system: the login was refused, the server could
    not be reached, or its settings are incomplete. The message never holds a secret."""


Severity = Literal["info", "warning", "critical"]
Environment = Literal["prod", "staging", "dev"]


class Finding(BaseModel):
    """One observation of a specialist, with its provenance."""

    model_config = ConfigDict(extra="forbid")

    specialist: str
    code: str = Field(description="the rule it feeds, e.g. db.connection_exhaustion")
    severity: Severity
    claim: str = Field(description="one sentence a person can act on")
    evidence: dict[str, JsonValue] = Field(default_factory=dict)
    tool: str = Field(description="the client that observed it, e.g. psycopg, boto3:cloudwatch")
    query: str | None = Field(None, description="the query or call it ran")
    credential_ref: str | None = Field(None, description="the op://… reference used, never a value")


NAMES_NOT_SECRETS = frozenset({"host", "port", "username", "user", "dbname", "database", "region"})
"""Credential roles whose values are names (where to sign in, as whom): fetched from the
secret store with the rest, and said in messages ("cannot connect to PostgreSQL at
db-1:5432 (database app, user app)"), so not scrubbed; scrubbing them blanked every
"app" inside "approved" and "apps", and the blanks said what the value was."""

PARTIAL = 6
"""The shortest start of a secret taken for one where a text was cut short (it ends in
an ellipsis)."""


class Redactor:
    """Scrubs secret values out of text: each value wherever it appears whole (a run of
    white space in it matching any other, as in text put on one line; or as a JSON
    string escapes it), and the start of one (`PARTIAL` characters or more) just before
    the ellipsis of a text cut short. Call it on a string; `finding` scrubs what a
    finding says (its claim, its evidence, keys included, and its query), not the names
    that file it (specialist, code, severity, tool, reference)."""

    MARK = "[redacted]"

    def __init__(self, values: Iterable[str]) -> None:
        kept = {v.strip() for v in values if v.strip()}
        # and as a JSON string writes it (a quote, a backslash, a control character
        # escaped), as in an API's answer or a JSON log line quoted whole
        kept |= {json.dumps(v, ensure_ascii=False)[1:-1] for v in kept}
        self._values = sorted(kept, key=len, reverse=True)
        whole = (r"\s+".join(map(re.escape, v.split())) for v in self._values)
        self._whole = re.compile("|".join(whole)) if self._values else None

    def __call__(self, text: str) -> str:
        if self._whole is None:
            return text
        text = self._whole.sub(self.MARK, text)
        if not text.rstrip().endswith(("…", "...")):
            return text
        body = text.rstrip().removesuffix("…").removesuffix("...").rstrip()
        for value in self._values:
            start = value[:PARTIAL]
            at = body.find(start, max(0, len(body) - len(value) + 1))
            while at != -1:  # the first place from which the rest of the text starts it
                if value.startswith(body[at:]):
                    return body[:at] + self.MARK + text[len(body) :]
                at = body.find(start, at + 1)
        return text

    def finding(self, finding: Finding) -> Finding:
        if self._whole is None:
            return finding
        return finding.model_copy(
            update={
                "claim": self(finding.claim),
                "evidence": self._walk(finding.evidence),
                "query": None if finding.query is None else self(finding.query),
            }
        )

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(k): self._walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        return value


def _unchanged(text: str) -> str:
    return text


@dataclass
class SpecialistContext:
    """What a specialist runs with: the problem, the environment, its settings and secrets.

    `settings` holds the non-secret configuration of the specialist for this environment
    (a database's port and name, a Prometheus URL, an AWS region and endpoint, a
    Kubernetes API server URL and namespace). `secret(ref)` returns the value of a
    credential reference the session's approval covered; asking for another raises.
    """

    problem: str
    environment: Environment
    settings: Mapping[str, Any]
    secret: Callable[[str], str]
    credentials: Mapping[str, str] = field(default_factory=dict)
    """Role → reference of the credentials this specialist was granted, e.g.
    ``{"password": "op://Infrastructure/prod-db/password"}``."""
    timeout_s: float = 20.0
    redact: Callable[[str], str] = _unchanged
    """Scrubs the session's secret values out of a text (a `Redactor`): for text read
    from a system that is then changed (grouped, shaped), where the engine's own
    scrubbing of the finding would no longer recognise a value."""


Run = Callable[[SpecialistContext], Awaitable[list[Finding]]]
