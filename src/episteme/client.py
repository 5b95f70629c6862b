"""A Python client for the Episteme HTTP API: the ledger's methods, over the wire.

`Client` and `AsyncClient` have the same methods and answer with the library's own
models (`Assertion`, `Answer`, `Trace`, ...). Who is acting is the bearer token's
principal, as for every route. A problem+json error comes back as the matching
`episteme.errors` exception, with the server's detail as its message and its
`field`; a server that cannot be reached raises `StoreUnavailable`.

Each operation is written once, as a builder that returns a `_Call`: the method, the
path, the query or body, and how to read the answer. The two classes only send it::

    from episteme.client import Client

    with Client("http://127.0.0.1:8000", token) as ep:
        ep.add_assertion("auth.jwt.algorithm", "RS256", confidence=0.9)
        answer = ep.query("auth.jwt.algorithm")
        print(answer.items, answer.summary)
        ep.decide("deployed auth config v42", [answer.query_id])

``async with AsyncClient(url, token) as ep`` reads the same, with ``await``.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError
from whenever import Instant, OffsetDateTime, ZonedDateTime

from episteme import __version__, ndjson
from episteme.diagnose.engine import Incident, Session
from episteme.errors import (
    BodyStalled,
    Conflict,
    EpistemeError,
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotFound,
    StoreUnavailable,
    TooLarge,
    Unauthenticated,
    Unsupported,
)
from episteme.ledger.access import Denial, Principal, TokenRecord
from episteme.ledger.constraints import CheckResult, check_list
from episteme.ledger.gardener import GardenerStatus
from episteme.ledger.journal import VerifyReport
from episteme.ledger.learning import ConflictState, ConstraintState
from episteme.ledger.lenses import LensSpec
from episteme.ledger.model import Answer, Assertion
from episteme.ledger.records import (
    Blame,
    CheckRecord,
    Correction,
    DecisionRecord,
    Diff,
    EpochRecord,
    Impact,
    NotificationRecord,
    QueryRecord,
    RebuildReport,
    Trace,
)
from episteme.ledger.trust import TrustScore
from episteme.ledger.webhooks import STORED, Delivery, NotificationType, WebhookSpec
from episteme.timeutil import rfc3339

__all__ = ["AsyncClient", "Client", "EpochView"]

T = TypeVar("T")
P = ParamSpec("P")


class EpochView(BaseModel):
    """An ingestion batch and the assertions it brought."""

    epoch: EpochRecord
    assertions: list[Assertion]


class _Superseded(BaseModel):
    epoch: str
    retracted: list[str]


class _Issued(BaseModel):
    token: str
    record: TokenRecord


class _Missing(Enum):
    MISSING = "missing"


_MISSING = _Missing.MISSING
_ASSERTIONS = TypeAdapter(list[Assertion])
_BLAMES = TypeAdapter(list[Blame])
_QUERIES = TypeAdapter(list[QueryRecord])
_TOKENS = TypeAdapter(list[TokenRecord])
_DENIALS = TypeAdapter(list[Denial])
_LENSES = TypeAdapter(dict[str, LensSpec])
_CONSTRAINTS = TypeAdapter(list[ConstraintState])
_CHECKS = TypeAdapter(list[CheckRecord])
_TRUST = TypeAdapter(list[TrustScore])
_CONFLICTS = TypeAdapter(list[ConflictState])
_SESSIONS = TypeAdapter(list[Session])
_INCIDENTS = TypeAdapter(list[Incident])
_DECISIONS = TypeAdapter(list[DecisionRecord])
_NOTIFICATIONS = TypeAdapter(list[NotificationRecord])
_WEBHOOKS = TypeAdapter(list[WebhookSpec])
_DELIVERIES = TypeAdapter(list[Delivery])


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One request, ready to send, and how to read its answer."""

    method: str
    path: str
    parse: Callable[[bytes], T]
    params: dict[str, str | int] | None = None
    content: bytes | None = None
    also_ok: frozenset[int] = frozenset()  # statuses whose body is an answer, not a problem

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"} if self.content is not None else {}


def _seg(ref: str, field: str = "ref") -> str:
    """One path segment: `ref` percent-encoded. What would name another route is
    refused here: `.` and `..` (resolved as a URL's dot segments), and a slash, which
    the server decodes before it routes (`a%2Fapprove` reaches `/a/approve`). No id or
    name has one."""
    if not isinstance(ref, str):
        raise InvalidInput(f"an id or a name is a string, not {type(ref).__name__}", field=field)
    if not ref:
        raise InvalidInput("an empty id or name: give one", field=field)
    if ref in (".", "..") or "/" in ref or "\\" in ref:
        raise InvalidInput(
            f"{ref!r} is not an id or a name: they have no slash and are not . or ..",
            field=field,
        )
    return quote(ref, safe="")


TIMEOUT_S = 60.0
"""How long a client waits for the server on each step of a call, unless told."""

FOLLOW_SILENCE_S = 60.0
"""How long a followed stream may go without a line before the client gives up on the
server: a server sends a blank line whenever a followed session has been quiet for its
`keepalive_s` (15 s, at most 45 s), so a silence this long is a stopped server or a
broken path to it, not a session waiting for its approval."""


def _listed(values: Iterable[str] | None, field: str) -> list[str]:
    """A list parameter as sent. One string is refused rather than read as a list of its
    characters: a check whose scope became ``['a', 'u', 't', 'h']`` finds no violation."""
    if values is None:
        return []
    check_list(values, field)  # the library's refusal, before anything is sent
    return list(values)


def _wire(value: Any) -> Any:
    """Times as RFC 3339 in UTC, everywhere in a body or a query: `Instant`, whenever's
    offset and zoned times, and aware `datetime`s (a naive one names no moment)."""
    if isinstance(value, Instant):
        return rfc3339(value)
    if isinstance(value, OffsetDateTime | ZonedDateTime):
        return rfc3339(value.to_instant())
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidInput(
                f"{value.isoformat()} names no moment: give a time zone (or an Instant)"
            )
        return rfc3339(Instant(value))
    if isinstance(value, Mapping):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _get(
    path: str, parse: Callable[[bytes], T], **params: str | int | Instant | list[str] | None
) -> _Call[T]:
    query = {k: _wire(v) for k, v in params.items() if v is not None and v != []}
    return _Call("GET", path, parse, params=query or None)


def _send_json(method: str, path: str, body: Any, parse: Callable[[bytes], T]) -> _Call[T]:
    try:
        content = json.dumps(_wire(body), allow_nan=False, ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"cannot send this request as JSON: {exc}") from None
    return _Call(method, path, parse, content=content)


# -- one builder per operation: what each client method sends, and what it returns -----


def _op_whoami() -> _Call[Principal]:
    """The principal this client's token belongs to."""
    return _get("/v1/whoami", Principal.model_validate_json)


def _op_add_assertion(
    subject: str,
    value: JsonValue,
    *,
    confidence: float = 1.0,
    kind: str = "fact",
    lifecycle: str = "proposed",
    source: str | None = None,
    evidence: str | None = None,
    epoch: str | None = None,
    derived_from: Sequence[str] = (),
    valid_from: Instant | None = None,
    valid_to: Instant | None = None,
) -> _Call[Assertion]:
    """Record one assertion as the token's principal (proposed unless said otherwise)."""
    body: dict[str, Any] = {"subject": subject, "value": value, "confidence": confidence}
    body |= {"kind": kind, "lifecycle": lifecycle}
    body |= {"derived_from": _listed(derived_from, "derived_from")}
    body |= _present(
        source=source, evidence=evidence, epoch=epoch, valid_from=valid_from, valid_to=valid_to
    )
    return _send_json("POST", "/v1/assertions", body, Assertion.model_validate_json)


def _op_add_assertions(assertions: Iterable[Mapping[str, Any]]) -> _Call[list[Assertion]]:
    """Record a batch (dicts with `add_assertion`'s fields): all of them, or none."""
    if isinstance(assertions, Mapping | str | bytes):
        raise InvalidInput(
            "assertions is a list: give [assertion] rather than one", field="assertions"
        )
    listed = list(assertions)
    for n, a in enumerate(listed):
        if not isinstance(a, Mapping):
            raise InvalidInput(
                f"assertion {n}: give a dict of add_assertion's fields, not {type(a).__name__}",
                field="assertions",
            )
    body = {"assertions": [dict(a) for a in listed]}
    return _send_json("POST", "/v1/assertions/batch", body, _ASSERTIONS.validate_json)


def _op_get(ref: str) -> _Call[Assertion]:
    """An assertion by id (or unique id prefix), in its current state."""
    return _get(f"/v1/assertions/{_seg(ref)}", Assertion.model_validate_json)


def _review(action: str, ref: str, reason: str | None) -> _Call[Assertion]:
    path = f"/v1/assertions/{_seg(ref)}/{action}"
    return _send_json("POST", path, _present(reason=reason), Assertion.model_validate_json)


def _op_approve(ref: str, *, reason: str | None = None) -> _Call[Assertion]:
    """Approve a proposed assertion; it supersedes the subject's approved value."""
    return _review("approve", ref, reason)


def _op_deprecate(ref: str, *, reason: str | None = None) -> _Call[Assertion]:
    """Deprecate an approved assertion."""
    return _review("deprecate", ref, reason)


def _op_reject(ref: str, *, reason: str | None = None) -> _Call[Assertion]:
    """Reject a proposed assertion (`correct` marks an approved one incorrect)."""
    return _review("reject", ref, reason)


def _op_correct(
    ref: str,
    *,
    reason: str,
    value: JsonValue | Literal[_Missing.MISSING] = _MISSING,
    forbid: bool = False,
) -> _Call[Correction]:
    """Mark an assertion incorrect; optionally record the right value and forbid the bad one."""
    body: dict[str, Any] = {"reason": reason, "forbid": forbid}
    if value is not _MISSING:
        body["value"] = value
    path = f"/v1/assertions/{_seg(ref)}/correct"
    return _send_json("POST", path, body, Correction.model_validate_json)


def _op_query(
    subject: str | None = None,
    *,
    text: str | None = None,
    lens: str = "approved",
    at: Instant | None = None,
    context: Mapping[str, JsonValue] | None = None,
) -> _Call[Answer]:
    """Read through a lens, audited: the answer's `query_id` is the receipt to cite."""
    body = {"lens": lens} | _present(subject=subject, text=text, at=at, context=context)
    return _send_json("POST", "/v1/query", body, Answer.model_validate_json)


def _op_check(
    plan: str = "",
    scope: Sequence[str] = (),
    *,
    items: Sequence[str] = (),
    context: Mapping[str, JsonValue] | None = None,
    tags: Sequence[str] = (),
) -> _Call[CheckResult]:
    """Pre-flight, audited: the negative constraints a plan would violate (before doing it).
    `scope` (subjects) and `tags` each narrow their own side; a side left out narrows
    nothing."""
    body: dict[str, Any] = {"plan": plan, "scope": _listed(scope, "scope")}
    body |= {"items": _listed(items, "items")} | _present(context=context)
    if tags:
        body["tags"] = _listed(tags, "tags")
    return _send_json("POST", "/v1/constraints/check", body, CheckResult.model_validate_json)


def _op_add_constraint(
    scope: str | None = None,
    *,
    reason: str,
    forbid: Sequence[str] = (),
    patterns: Sequence[str] = (),
    items: Sequence[str] = (),
    prefer: str | None = None,
    half_life_days: float = 30.0,
    tags: Sequence[str] = (),
) -> _Call[ConstraintState]:
    """Record a negative constraint (supervisor) on `scope` (a subject and all below it),
    on plans of `tags` (deploy, npm), or both."""
    body = {
        "reason": reason,
        "forbid": _listed(forbid, "forbid"),
        "patterns": _listed(patterns, "patterns"),
        "items": _listed(items, "items"),
        "half_life_days": half_life_days,
    } | _present(scope=scope, prefer=prefer)
    if tags:
        body["tags"] = _listed(tags, "tags")
    return _send_json("POST", "/v1/constraints", body, ConstraintState.model_validate_json)


def _op_diagnose(
    problem: str, *, environment: str = "prod", context: Mapping[str, JsonValue] | None = None
) -> _Call[Session]:
    """Open a diagnosis session; it waits for an approver (see docs/diagnosis.md)."""
    body = {"problem": problem, "environment": environment} | _present(context=context)
    return _send_json("POST", "/v1/diagnosis/diagnose", body, Session.model_validate_json)


def _op_approve_session(
    session_id: str, *, reason: str, references: Sequence[str] | None = None
) -> _Call[Session]:
    """Approve a session's credentials (all, or `references`); it then runs on the server."""
    listed = None if references is None else _listed(references, "references")
    body = {"reason": reason, "references": listed}
    path = f"/v1/diagnosis/approve/{_seg(session_id, 'id')}"
    return _send_json("POST", path, body, Session.model_validate_json)


def _op_deny_session(session_id: str, *, reason: str) -> _Call[Session]:
    """Deny a session's credentials: it ends, nothing is fetched."""
    path = f"/v1/diagnosis/deny/{_seg(session_id, 'id')}"
    return _send_json("POST", path, {"reason": reason}, Session.model_validate_json)


def _op_session(session_id: str) -> _Call[Session]:
    """A diagnosis session: its status, the references it asked for, its result."""
    return _get(f"/v1/diagnosis/status/{_seg(session_id, 'id')}", Session.model_validate_json)


def _op_sessions(*, limit: int = 100, after: str | None = None) -> _Call[list[Session]]:
    """Diagnosis sessions, newest first; `after` (the last item's `id`) pages on."""
    return _get("/v1/diagnosis/sessions", _SESSIONS.validate_json, limit=limit, after=after)


def _op_incidents(
    *, limit: int = 100, status: str | None = None, after: str | None = None
) -> _Call[list[Incident]]:
    """Incidents alerts opened, newest first (`status`: "open" or "resolved"); `after`
    (the last item's `key`) pages on."""
    return _get(
        "/v1/diagnosis/incidents", _INCIDENTS.validate_json,
        limit=limit, status=status, after=after,
    )  # fmt: skip


def _op_delete_session(session_id: str) -> _Call[None]:
    """Delete a diagnosis session and its events (approver)."""
    return _Call("DELETE", f"/v1/diagnosis/sessions/{_seg(session_id, 'id')}", _nothing)


def _op_send_alerts(payload: Mapping[str, Any]) -> _Call[None]:
    """Hand the server an Alertmanager webhook payload (version 4), as Alertmanager does:
    it opens an incident and its diagnosis in the background."""
    if not isinstance(payload, Mapping):
        raise InvalidInput(
            f"the payload is a JSON object (a mapping), not {type(payload).__name__}",
            field="payload",
        )
    return _send_json("POST", "/v1/diagnosis/alerts", dict(payload), _nothing)


def _op_constraints(
    scope: str | None = None, tags: Sequence[str] = (), *, retired: bool = False
) -> _Call[list[ConstraintState]]:
    """Constraints with their strength now: all, or those on `scope` (a subject, above and
    below it) and those of `tags`; the retired ones too with `retired`."""
    return _get(
        "/v1/constraints",
        _CONSTRAINTS.validate_json,
        scope=scope,
        tag=_listed(tags, "tags"),
        retired="true" if retired else None,
    )


def _op_retire_constraint(ref: str, *, reason: str) -> _Call[ConstraintState]:
    """Retire a constraint (supervisor): kept in the record, it answers no check."""
    return _send_json(
        "POST",
        f"/v1/constraints/{_seg(ref)}/retire",
        {"reason": reason},
        ConstraintState.model_validate_json,
    )


def _op_constraint(ref: str) -> _Call[ConstraintState]:
    """One constraint by id (or unique id prefix), with its strength now."""
    return _get(f"/v1/constraints/{_seg(ref)}", ConstraintState.model_validate_json)


def _op_checks(
    *,
    agent: str | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
    limit: int = 100,
    before: int | None = None,
) -> _Call[list[CheckRecord]]:
    """Audited pre-flight checks, newest first; `before` (the last item's `seq`) pages on."""
    return _get(
        "/v1/checks", _CHECKS.validate_json,
        agent=agent, since=since, until=until, limit=limit, before=before,
    )  # fmt: skip


def _op_trust(
    *, agent: str | None = None, topic: str | None = None, at: Instant | None = None
) -> _Call[list[TrustScore]]:
    """Trust per agent and topic, with the evidence that moved it."""
    return _get("/v1/trust", _TRUST.validate_json, agent=agent, topic=topic, at=at)


def _op_conflicts(*, include_resolved: bool = False) -> _Call[list[ConflictState]]:
    """Subjects with two approved values at once."""
    params = {"all": "true"} if include_resolved else {}
    return _get("/v1/conflicts", _CONFLICTS.validate_json, **params)


def _op_notifications(
    *,
    type: NotificationType | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
    limit: int = 100,
    after: str | None = None,
) -> _Call[list[NotificationRecord]]:
    """What was raised, newest first: corrections, conflicts, trust drops, expiries, approvals;
    `after` (the last item's `key`) pages on."""
    return _get(
        "/v1/notifications", _NOTIFICATIONS.validate_json,
        type=type, since=since, until=until, limit=limit, after=after,
    )  # fmt: skip


def _op_gardener() -> _Call[GardenerStatus]:
    """The gardener's cursor in the journal, and how far behind the head it is."""
    return _get("/v1/gardener", GardenerStatus.model_validate_json)


def _op_webhooks() -> _Call[list[WebhookSpec]]:
    """The webhooks notifications go to (admin)."""
    # as recorded: a webhook the server holds from before a rule on URLs is read back
    return _get("/v1/webhooks", lambda raw: _WEBHOOKS.validate_json(raw, context={STORED: True}))


def _op_set_webhook(
    name: str,
    url: str,
    *,
    format: Literal["json", "slack"] = "json",
    events: Sequence[NotificationType] | None = None,
    secret: str | None = None,
    timeout_s: float = 5.0,
    max_attempts: int = 8,
) -> _Call[WebhookSpec]:
    """Add or replace a webhook (admin). `url` and `secret` may be ``env:VAR`` references,
    resolved by the server; a secret value itself is refused."""
    body: dict[str, Any] = {"url": url, "format": format, "timeout_s": timeout_s}
    body |= {"max_attempts": max_attempts} | _present(secret=secret)
    if events is not None:
        body["events"] = _listed(events, "events")
    path = f"/v1/webhooks/{_seg(name, 'name')}"
    return _send_json("PUT", path, body, WebhookSpec.model_validate_json)


def _op_remove_webhook(name: str) -> _Call[None]:
    """Remove a webhook (admin)."""
    return _Call("DELETE", f"/v1/webhooks/{_seg(name, 'name')}", _nothing)


def _op_deliveries(*, limit: int = 100, before: int | None = None) -> _Call[list[Delivery]]:
    """Webhook deliveries, newest first: state, attempts, last error, next try (admin);
    `before` (the last item's `job_id`) pages on."""
    return _get("/v1/webhooks/deliveries", _DELIVERIES.validate_json, limit=limit, before=before)


def _op_decide(
    action: str, query_ids: Sequence[str], *, context: Mapping[str, JsonValue] | None = None
) -> _Call[DecisionRecord]:
    """Record an action and the query ids (receipts) it relied on."""
    body = {"action": action, "query_ids": _listed(query_ids, "query_ids")}
    body |= _present(context=context)
    return _send_json("POST", "/v1/decisions", body, DecisionRecord.model_validate_json)


def _op_decisions(
    *,
    agent: str | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
    limit: int = 100,
    before: int | None = None,
) -> _Call[list[DecisionRecord]]:
    """Recorded decisions by agent and window, newest first, with the receipts they cite;
    `before` (the last item's `seq`) pages on."""
    return _get(
        "/v1/decisions", _DECISIONS.validate_json,
        agent=agent, since=since, until=until, limit=limit, before=before,
    )  # fmt: skip


def _op_served(
    subject: str, *, at: Instant | None = None, limit: int = 100, before: int | None = None
) -> _Call[list[QueryRecord]]:
    """What agents were actually served about a subject, up to a time; `before` (the last
    item's `seq`) pages on."""
    return _get(
        "/v1/served", _QUERIES.validate_json, subject=subject, at=at, limit=limit, before=before
    )


def _op_audit(
    *,
    agent: str | None = None,
    subject: str | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
    limit: int = 100,
    before: int | None = None,
) -> _Call[list[QueryRecord]]:
    """Audited reads by agent, subject and window, newest first; `before` (the last item's
    `seq`) pages on."""
    return _get(
        "/v1/audit", _QUERIES.validate_json,
        agent=agent, subject=subject, since=since, until=until, limit=limit, before=before,
    )  # fmt: skip


def _op_diff(
    prefix: str | None = None,
    *,
    since: Instant,
    until: Instant | None = None,
    limit: int = 1000,
    before: str | None = None,
) -> _Call[Diff]:
    """What changed under a subject prefix between two times: the newest `limit` changes
    (below `before`, a page's `next`, when given), with the counts and total of them all."""
    return _get(
        "/v1/diff", Diff.model_validate_json,
        prefix=prefix, since=since, until=until, limit=limit, before=before,
    )  # fmt: skip


def _op_blame(ref: str) -> _Call[list[Blame]]:
    """Who introduced an assertion (by id), or each assertion on a subject."""
    return _get(f"/v1/blame/{_seg(ref)}", _BLAMES.validate_json)


def _op_trace(ref: str) -> _Call[Trace]:
    """Decision or query → queries → assertions → agents, sources and epochs."""
    return _get(f"/v1/trace/{_seg(ref)}", Trace.model_validate_json)


def _op_impact(ref: str, *, recent: int = 20) -> _Call[Impact]:
    """Assertion → the queries that served it, agents, decisions, derived assertions."""
    return _get(f"/v1/impact/{_seg(ref)}", Impact.model_validate_json, recent=recent)


def _op_epoch(name: str) -> _Call[EpochView]:
    """An ingestion batch and what it brought."""
    return _get(f"/v1/epochs/{_seg(name)}", EpochView.model_validate_json)


def _op_supersede_epoch(name: str, *, reason: str) -> _Call[list[str]]:
    """Retract everything an epoch brought, in one event; returns the retracted ids."""

    def retracted(content: bytes) -> list[str]:
        return _Superseded.model_validate_json(content).retracted

    path = f"/v1/epochs/{_seg(name)}/supersede"
    return _send_json("POST", path, {"reason": reason}, retracted)


def _op_lenses() -> _Call[dict[str, LensSpec]]:
    """Built-in and custom lenses, by name."""
    return _get("/v1/lenses", _LENSES.validate_json)


def _op_define_lens(name: str, spec: LensSpec | Mapping[str, Any]) -> _Call[LensSpec]:
    """Define (or redefine) a custom lens, from a `LensSpec` or a mapping of its fields."""
    if not isinstance(spec, LensSpec):
        try:
            spec = LensSpec.model_validate(spec)
        except ValidationError as exc:
            raise InvalidInput(f"not a lens: {_first(exc)}", field="spec") from None
    body = spec.model_dump(mode="json")
    path = f"/v1/lenses/{_seg(name, 'name')}"
    return _send_json("PUT", path, body, LensSpec.model_validate_json)


def _op_create_token(
    name: str,
    roles: Sequence[str],
    *,
    kind: Literal["agent", "human"] | None = None,
    expires: Instant | None = None,
) -> _Call[tuple[str, TokenRecord]]:
    """Issue a token for a principal: the secret and its record (the secret only here)."""

    def issued(content: bytes) -> tuple[str, TokenRecord]:
        found = _Issued.model_validate_json(content)
        return found.token, found.record

    body = {"name": name, "roles": _listed(roles, "roles")} | _present(kind=kind, expires=expires)
    return _send_json("POST", "/v1/tokens", body, issued)


def _op_tokens(name: str | None = None) -> _Call[list[TokenRecord]]:
    """Tokens (active, expired and revoked), optionally of one principal; never secrets."""
    return _get("/v1/tokens", _TOKENS.validate_json, name=name)


def _op_revoke_token(ref: str, *, reason: str) -> _Call[list[TokenRecord]]:
    """Revoke a token by id or by its secret, or every active token of a principal by
    name. `ref` goes in the body: a secret in a URL is kept by proxies and logs."""
    body = {"ref": ref, "reason": reason}
    return _send_json("POST", "/v1/tokens/revoke", body, _TOKENS.validate_json)


def _op_denials(
    *,
    principal: str | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
    limit: int = 100,
    before: int | None = None,
) -> _Call[list[Denial]]:
    """Refused calls, newest first: who tried what, and why it was refused; `before` (the
    last item's `seq`) pages on."""
    return _get(
        "/v1/denials", _DENIALS.validate_json,
        principal=principal, since=since, until=until, limit=limit, before=before,
    )  # fmt: skip


def _op_verify() -> _Call[VerifyReport]:
    """Recompute the journal's hash chain."""
    return _get("/v1/verify", VerifyReport.model_validate_json)


def _op_rebuild(*, repair: bool = False) -> _Call[RebuildReport]:
    """Replay the journal into fresh projections and compare; optionally repair."""
    return _send_json("POST", "/v1/rebuild", {"repair": repair}, RebuildReport.model_validate_json)


def _op_health() -> _Call[dict[str, Any]]:
    """Liveness (no token needed): ``status`` is ``ok``, or ``degraded`` when the server
    answers 503 with its report. A 503 without one (a proxy's page) raises
    `StoreUnavailable`."""
    return _Call("GET", "/health", _json_object, also_ok=frozenset({503}))


def _op_metrics() -> _Call[str]:
    """The server's Prometheus metrics, in the text exposition format."""
    return _get("/metrics", _exposition)


def _exposition(content: bytes) -> str:
    """Prometheus's text format; a page (a proxy's sign-in page answering 200) is not."""
    text = content.decode()
    if text.lstrip().startswith("<"):
        raise ValueError("a page, not Prometheus's text format")
    return text


def _nothing(content: bytes) -> None:
    """An answer with nothing to read (204, or an acceptance). Anything but nothing or
    JSON is not the server's (a proxy's sign-in page answering 200): refused as such."""
    if content.strip():
        orjson.loads(content)  # a JSONDecodeError is a ValueError: `_answer` names it


_EXPORT = _Call("GET", "/v1/export", orjson.loads)


def _session_events(session_id: str) -> _Call[Any]:
    path = f"/v1/diagnosis/status/{_seg(session_id, 'id')}"
    return _Call("GET", path, orjson.loads, params={"stream": "true"})


def _json_object(content: bytes) -> dict[str, Any]:
    found = orjson.loads(content)
    if not isinstance(found, dict):
        raise ValueError("expected a JSON object")
    return found


def _line(call: _Call[Any], line: bytes) -> dict[str, Any]:
    """One line of an NDJSON stream: a JSON object, or the error that it is not. An
    `error` event that ends a followed stream for its reader rather than for the
    session (no `n`) is raised as every other call raises it, rather than ending the
    stream as if the session had: the reader's token stopped being valid
    (`unauthenticated`), or the server is stopping (`stopping`)."""
    try:
        found = _json_object(line)
    except ValueError:
        raise StoreUnavailable(
            f"a line of the answer to {call.method} {call.path} is not a JSON object; "
            "are the client and the server the same version of Episteme?"
        ) from None
    code = found.get("code")
    kind = _READERS.get(code) if isinstance(code, str) and found.get("type") == "error" else None
    if kind is not None and "n" not in found:
        said = found.get("message")
        raise kind(said if isinstance(said, str) and said else f"the stream ended: {kind.title}")
    return found


_READERS: dict[str, type[EpistemeError]] = {
    "unauthenticated": Unauthenticated,
    "stopping": StoreUnavailable,
}
"""The codes of the `error` events that end a followed stream for its reader."""


# -- answers and errors ----------------------------------------------------------------

_BY_STATUS: dict[int, type[EpistemeError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    408: BodyStalled,
    409: Conflict,
    413: TooLarge,
    415: Unsupported,
    422: InvalidInput,
}


def _answer(call: _Call[T], response: httpx.Response) -> T:
    """The parsed answer, or the error the response stands for."""
    if not response.is_success and response.status_code not in call.also_ok:
        raise _problem(call, response)
    try:
        return call.parse(response.content)
    except (ValidationError, ValueError) as exc:
        if not response.is_success:  # a status read as an answer (503 from /health), unread
            raise _problem(call, response) from None
        # Never the values: the answer may hold a secret (a new token) or private data.
        where = ": " + _first(exc) if isinstance(exc, ValidationError) else ""
        raise StoreUnavailable(
            f"the answer to {call.method} {call.path} is not what this client reads{where}; "
            "are the client and the server the same version of Episteme?"
        ) from None


def _problem(call: _Call[Any], response: httpx.Response) -> EpistemeError:
    status = response.status_code
    title = detail = field = None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        title, detail, field = body.get("title"), body.get("detail"), body.get("field")
    field = field if isinstance(field, str) else None
    kind: type[EpistemeError] = _BY_STATUS.get(status, InvalidInput)
    if status >= 500 or status == 429:
        integrity = status == 500 and title == IntegrityError.title
        kind = IntegrityError if integrity else StoreUnavailable
    if not isinstance(detail, str) or not detail:
        detail = _foreign(call, response)
        if 300 <= status < 400:
            field = "base_url"
    error = kind(detail, field=field)
    error.status = status  # as the server answered, which the error's type may not say
    return error


def _foreign(call: _Call[Any], response: httpx.Response) -> str:
    """What an answer without Episteme's problem details says (a proxy's, or a server
    that is not Episteme at this address)."""
    status = response.status_code
    said = f"the server answered {status} {response.reason_phrase or 'error'}"
    said += f" to {call.method} {call.path}"
    if 300 <= status < 400:
        to = response.headers.get("location")
        return f"{said}, pointing to {to}: give the client that address" if to else said
    if status == 429:
        wait = response.headers.get("retry-after")
        return f"{said}: slow down, and retry after {wait} s" if wait else f"{said}: slow down"
    if status in (401, 403, 404, 405):
        return f"{said}, without Episteme's problem details: check the client's base URL"
    return said


def _first(exc: ValidationError) -> str:
    """A validation error's first problem, by place: never the value."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where} {err['msg']}" if where else err["msg"]


def _unreachable(
    url: str, call: _Call[Any], exc: httpx.RequestError, *, silence: float | None = None
) -> StoreUnavailable:
    """What a failed call says. `silence`: the call followed a stream, whose lines may
    be this many seconds apart."""
    why = str(exc) or type(exc).__name__
    if silence is not None and isinstance(exc, httpx.ReadTimeout):
        return StoreUnavailable(
            f"the Episteme server at {url} sent nothing for {silence:g} s on "
            f"{call.method} {call.path} (a followed stream hears from it at least every"
            " 45 s): it is stopped or the path to it is broken; follow again once it answers"
        )
    if isinstance(exc, httpx.DecodingError):
        return StoreUnavailable(
            f"the answer to {call.method} {call.path} could not be decoded ({why}): "
            "is something between the client and the server rewriting it?"
        )
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return StoreUnavailable(
            f"the Episteme server at {url} is unreachable ({why}): check the address, "
            "and that `episteme serve` is running there"
        )
    doing = f"{call.method} {call.path}"
    after = "retry" if call.method == "GET" else "the write may have been applied: look, then retry"
    if isinstance(exc, httpx.TimeoutException):
        return StoreUnavailable(
            f"the Episteme server at {url} did not answer {doing} in time ({why}): {after}, "
            "or give the client a longer timeout"
        )
    return StoreUnavailable(
        f"the connection to the Episteme server at {url} broke during {doing} ({why}): {after}"
    )


# -- the two clients -------------------------------------------------------------------


class _Base:
    """What both clients know: the server's address and how long to wait for it."""

    def __init__(self, base_url: str, *, timeout: float) -> None:
        # Credentials in the URL are dropped: the bearer token is the only credential.
        try:
            self._url = httpx.URL(base_url).copy_with(username=None, password=None)
        except httpx.InvalidURL as exc:
            raise InvalidInput(f"not a server address: {exc}", field="base_url") from None
        if self._url.scheme not in ("http", "https") or not self._url.host:
            raise InvalidInput(
                # not repeated: without a scheme, `user:password@host` reads as a path
                "not a server address: give http:// or https://, a host and a port "
                "(http://127.0.0.1:8000)",
                field="base_url",
            )
        if self._url.query or self._url.fragment:
            raise InvalidInput(  # not repeated: a query may carry a secret
                "not a server address: leave out the query (?…) and fragment (#…); "
                "a path prefix is kept",
                field="base_url",
            )
        if self._url.path.rstrip("/").endswith("/v1"):  # every call would be /v1/v1/…
            raise InvalidInput(
                "not a server address: leave /v1 out of it (the client adds it to each call)",
                field="base_url",
            )
        port = self._url.port
        if port is not None and not 0 < port < 65536:
            raise InvalidInput(
                f"not a server address: port {port} is not one (1 to 65535)", field="base_url"
            )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise InvalidInput(
                f"timeout {timeout!r}: give the seconds to wait, a finite number above 0",
                field="timeout",
            )
        self._timeout = httpx.Timeout(timeout)
        self.base_url = str(self._url)

    def _stream_timeout(self, follow: bool) -> httpx.Timeout:
        """A followed stream's lines come when the session's work makes them, or as the
        server's keep-alive: its reads wait up to `FOLLOW_SILENCE_S`, however short the
        client's own timeout."""
        if not follow:
            return self._timeout
        return httpx.Timeout(
            self._timeout.connect, read=max(FOLLOW_SILENCE_S, self._timeout.read or 0)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    @staticmethod
    def _usable(closed: bool) -> None:
        """Refuse a call on a closed client as every other mistake is refused (httpx
        raises a bare RuntimeError, which no `except EpistemeError` catches)."""
        if closed:
            raise InvalidInput(
                "this client is closed: make a new one (or call it inside its with block)",
                field="client",
            )


def _headers(token: str | None) -> dict[str, str]:
    """The headers every call sends; the token goes to the HTTP client only, never kept here."""
    headers = {"User-Agent": f"episteme-client/{__version__}"}
    if token is None:
        return headers
    # Checked here and never echoed: an HTTP library's own error would quote the value.
    if (
        not isinstance(token, str)
        or not token
        or not token.isascii()
        or not token.isprintable()
        or " " in token
    ):
        raise InvalidInput(
            "the token must be printable ASCII with no spaces or newlines "
            "(strip what you read from a file or variable)",
            field="token",
        )
    return headers | {"Authorization": f"Bearer {token}"}


def _describe(method: Callable[..., Any], build: Callable[..., Any], owner: str) -> None:
    """Give a generated method the builder's name, docstring and signature (plus self)."""
    name = build.__name__.removeprefix("_op_")
    method.__name__ = name
    method.__qualname__ = f"{owner}.{name}"
    method.__doc__ = build.__doc__
    sig = inspect.signature(build)
    ret = sig.return_annotation
    if isinstance(ret, str) and ret.startswith("_Call[") and ret.endswith("]"):
        ret = ret[len("_Call[") : -1]
    self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    method.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[self, *sig.parameters.values()], return_annotation=ret
    )


def _sync(build: Callable[P, _Call[T]]) -> Callable[Concatenate[Client, P], T]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._send(build(*args, **kwargs))

    _describe(method, build, "Client")
    return method


def _async(
    build: Callable[P, _Call[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._send(build(*args, **kwargs))

    _describe(method, build, "AsyncClient")
    return method


class Client(_Base):
    """A blocking client for one Episteme server, acting as one token's principal.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000`` (a path prefix is kept).
        token: the bearer token; only `health` works without one.
        timeout: seconds to wait for the server on each step of a call. The default is
            above the server's own longest wait (a write waits up to 30 s to start, a
            database connection up to 10 s), so that its 503 says what happened rather
            than a timeout here leaving a write in doubt.
        transport: an `httpx` transport to use instead of the network (tests).
        trust_env: use the proxies and certificate files the environment names
            (``HTTPS_PROXY``, ``SSL_CERT_FILE``…), as httpx does; False: connect to the
            server directly, so that no proxy sees the token (the CLI's choice).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        trust_env: bool = True,
    ) -> None:
        super().__init__(base_url, timeout=timeout)
        self._http = httpx.Client(
            base_url=self._url,
            headers=_headers(token),
            timeout=self._timeout,
            transport=transport,
            trust_env=trust_env,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections; the client cannot be used afterwards."""
        self._http.close()

    def _send(self, call: _Call[T]) -> T:
        self._usable(self._http.is_closed)
        try:
            response = self._http.request(
                call.method, call.path, params=call.params, content=call.content,
                headers=call.headers,
            )  # fmt: skip
        except httpx.RequestError as exc:
            raise _unreachable(self.base_url, call, exc) from exc
        return _answer(call, response)

    def export(self) -> Iterator[dict[str, Any]]:
        """The journal, one event per item, read as the server streams it.

        The request is made when iteration starts, so errors are raised there.
        """
        return self._lines(_EXPORT)

    def session_events(self, session_id: str) -> Iterator[dict[str, Any]]:
        """A diagnosis session's events from its first, each as it happens, until the
        session ends (completed, error, denied or expired): it waits through an approval."""
        return self._lines(_session_events(session_id), follow=True)

    def _lines(self, call: _Call[Any], *, follow: bool = False) -> Iterator[dict[str, Any]]:
        """The objects of an NDJSON answer; with `follow`, waiting as long as the server
        does between two events (a session's events come when its work makes them), but
        no longer than `FOLLOW_SILENCE_S` without a line."""
        self._usable(self._http.is_closed)
        wait = self._stream_timeout(follow)
        try:
            with self._http.stream(
                call.method, call.path, params=call.params, timeout=wait
            ) as response:
                if not response.is_success:
                    response.read()
                    raise _problem(call, response)
                for line in ndjson.lines(response.iter_bytes()):
                    yield _line(call, line)
        except httpx.RequestError as exc:
            raise _unreachable(
                self.base_url, call, exc, silence=wait.read if follow else None
            ) from exc

    whoami = _sync(_op_whoami)
    add_assertion = _sync(_op_add_assertion)
    add_assertions = _sync(_op_add_assertions)
    get = _sync(_op_get)
    approve = _sync(_op_approve)
    deprecate = _sync(_op_deprecate)
    reject = _sync(_op_reject)
    correct = _sync(_op_correct)
    query = _sync(_op_query)
    check = _sync(_op_check)
    add_constraint = _sync(_op_add_constraint)
    constraints = _sync(_op_constraints)
    constraint = _sync(_op_constraint)
    retire_constraint = _sync(_op_retire_constraint)
    checks = _sync(_op_checks)
    trust = _sync(_op_trust)
    conflicts = _sync(_op_conflicts)
    notifications = _sync(_op_notifications)
    gardener = _sync(_op_gardener)
    webhooks = _sync(_op_webhooks)
    set_webhook = _sync(_op_set_webhook)
    remove_webhook = _sync(_op_remove_webhook)
    deliveries = _sync(_op_deliveries)
    diagnose = _sync(_op_diagnose)
    approve_session = _sync(_op_approve_session)
    deny_session = _sync(_op_deny_session)
    session = _sync(_op_session)
    sessions = _sync(_op_sessions)
    incidents = _sync(_op_incidents)
    delete_session = _sync(_op_delete_session)
    send_alerts = _sync(_op_send_alerts)
    decide = _sync(_op_decide)
    decisions = _sync(_op_decisions)
    served = _sync(_op_served)
    audit = _sync(_op_audit)
    diff = _sync(_op_diff)
    blame = _sync(_op_blame)
    trace = _sync(_op_trace)
    impact = _sync(_op_impact)
    epoch = _sync(_op_epoch)
    supersede_epoch = _sync(_op_supersede_epoch)
    lenses = _sync(_op_lenses)
    define_lens = _sync(_op_define_lens)
    create_token = _sync(_op_create_token)
    tokens = _sync(_op_tokens)
    revoke_token = _sync(_op_revoke_token)
    denials = _sync(_op_denials)
    verify = _sync(_op_verify)
    rebuild = _sync(_op_rebuild)
    health = _sync(_op_health)
    metrics = _sync(_op_metrics)


class AsyncClient(_Base):
    """`Client` for asyncio or trio: the same methods, as coroutines.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000`` (a path prefix is kept).
        token: the bearer token; only `health` works without one.
        timeout: seconds to wait for the server on each step of a call. The default is
            above the server's own longest wait (a write waits up to 30 s to start, a
            database connection up to 10 s), so that its 503 says what happened rather
            than a timeout here leaving a write in doubt.
        transport: an `httpx` async transport (e.g. ``httpx.ASGITransport(app)``).
        trust_env: use the proxies and certificate files the environment names, as
            httpx does; False: connect to the server directly.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        trust_env: bool = True,
    ) -> None:
        super().__init__(base_url, timeout=timeout)
        self._http = httpx.AsyncClient(
            base_url=self._url,
            headers=_headers(token),
            timeout=self._timeout,
            transport=transport,
            trust_env=trust_env,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections; the client cannot be used afterwards."""
        await self._http.aclose()

    async def close(self) -> None:
        """`aclose`, under the name `Client` gives it."""
        await self.aclose()

    async def _send(self, call: _Call[T]) -> T:
        self._usable(self._http.is_closed)
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params, content=call.content,
                headers=call.headers,
            )  # fmt: skip
        except httpx.RequestError as exc:
            raise _unreachable(self.base_url, call, exc) from exc
        return _answer(call, response)

    def export(self) -> AsyncIterator[dict[str, Any]]:
        """The journal, one event per item, read as the server streams it.

        The request is made when iteration starts, so errors are raised there.
        """
        return self._lines(_EXPORT)

    def session_events(self, session_id: str) -> AsyncIterator[dict[str, Any]]:
        """A diagnosis session's events from its first, each as it happens, until the
        session ends (completed, error, denied or expired): it waits through an approval."""
        return self._lines(_session_events(session_id), follow=True)

    async def _lines(
        self, call: _Call[Any], *, follow: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """The objects of an NDJSON answer; with `follow`, waiting as long as the server
        does between two events (a session's events come when its work makes them), but
        no longer than `FOLLOW_SILENCE_S` without a line."""
        self._usable(self._http.is_closed)
        wait = self._stream_timeout(follow)
        try:
            async with self._http.stream(
                call.method, call.path, params=call.params, timeout=wait
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise _problem(call, response)
                async for line in ndjson.alines(response.aiter_bytes()):
                    yield _line(call, line)
        except httpx.RequestError as exc:
            raise _unreachable(
                self.base_url, call, exc, silence=wait.read if follow else None
            ) from exc

    whoami = _async(_op_whoami)
    add_assertion = _async(_op_add_assertion)
    add_assertions = _async(_op_add_assertions)
    get = _async(_op_get)
    approve = _async(_op_approve)
    deprecate = _async(_op_deprecate)
    reject = _async(_op_reject)
    correct = _async(_op_correct)
    query = _async(_op_query)
    check = _async(_op_check)
    add_constraint = _async(_op_add_constraint)
    constraints = _async(_op_constraints)
    constraint = _async(_op_constraint)
    retire_constraint = _async(_op_retire_constraint)
    checks = _async(_op_checks)
    trust = _async(_op_trust)
    conflicts = _async(_op_conflicts)
    notifications = _async(_op_notifications)
    gardener = _async(_op_gardener)
    webhooks = _async(_op_webhooks)
    set_webhook = _async(_op_set_webhook)
    remove_webhook = _async(_op_remove_webhook)
    deliveries = _async(_op_deliveries)
    diagnose = _async(_op_diagnose)
    approve_session = _async(_op_approve_session)
    deny_session = _async(_op_deny_session)
    session = _async(_op_session)
    sessions = _async(_op_sessions)
    incidents = _async(_op_incidents)
    delete_session = _async(_op_delete_session)
    send_alerts = _async(_op_send_alerts)
    decide = _async(_op_decide)
    decisions = _async(_op_decisions)
    served = _async(_op_served)
    audit = _async(_op_audit)
    diff = _async(_op_diff)
    blame = _async(_op_blame)
    trace = _async(_op_trace)
    impact = _async(_op_impact)
    epoch = _async(_op_epoch)
    supersede_epoch = _async(_op_supersede_epoch)
    lenses = _async(_op_lenses)
    define_lens = _async(_op_define_lens)
    create_token = _async(_op_create_token)
    tokens = _async(_op_tokens)
    revoke_token = _async(_op_revoke_token)
    denials = _async(_op_denials)
    verify = _async(_op_verify)
    rebuild = _async(_op_rebuild)
    health = _async(_op_health)
    metrics = _async(_op_metrics)
