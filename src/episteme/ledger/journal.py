"""The journal: every change and every read as one hash-chained event.

An event is ``{seq, at, actor, kind, payload}``; its canonical JSON is chained with
``hash = BLAKE3(prev_hash || canonical(event))``, starting from 32 zero bytes. The
tables of the store are projections of this journal: `episteme rebuild` replays it,
`episteme verify` recomputes the chain and names the first event that breaks it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import blake3
import orjson
from pydantic import BaseModel

from episteme.errors import IntegrityError
from episteme.ledger.canonical import GENESIS, chain_hash


class EventKind:
    """The event kinds; the payload of each is documented in docs/ledger.md."""

    ASSERTIONS_ADDED = "assertions.added"
    ASSERTION_MOVED = "assertion.moved"
    ASSERTION_CORRECTED = "assertion.corrected"
    EPOCH_SUPERSEDED = "epoch.superseded"
    QUERY_SERVED = "query.served"
    DECISION_RECORDED = "decision.recorded"
    LENS_DEFINED = "lens.defined"
    CONSTRAINT_ADDED = "constraint.added"
    CONSTRAINT_CHECKED = "constraint.checked"
    CONSTRAINT_RETIRED = "constraint.retired"
    WEBHOOK_SET = "webhook.set"
    WEBHOOK_REMOVED = "webhook.removed"
    TOKEN_ISSUED = "token.issued"
    TOKEN_REVOKED = "token.revoked"
    ACCESS_DENIED = "access.denied"

    ALL = frozenset(
        {
            ASSERTIONS_ADDED,
            ASSERTION_MOVED,
            ASSERTION_CORRECTED,
            EPOCH_SUPERSEDED,
            QUERY_SERVED,
            DECISION_RECORDED,
            LENS_DEFINED,
            CONSTRAINT_ADDED,
            CONSTRAINT_CHECKED,
            CONSTRAINT_RETIRED,
            WEBHOOK_SET,
            WEBHOOK_REMOVED,
            TOKEN_ISSUED,
            TOKEN_REVOKED,
            ACCESS_DENIED,
        }
    )


@dataclass(frozen=True, slots=True)
class Draft:
    """An event before the store gives it a sequence number, a time and a hash."""

    kind: str
    actor: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """A journal row. `payload` is the canonical JSON text exactly as hashed."""

    seq: int
    at: int  # microseconds since the Unix epoch, UTC
    actor: str
    kind: str
    payload: str
    hash: bytes

    def data(self) -> dict[str, Any]:
        """The payload, read back. A row damaged on disk (a payload that is not JSON, or
        none) raises `IntegrityError` naming the event, not a decoder's error."""
        try:
            loaded: dict[str, Any] = json.loads(self.payload)
        except (TypeError, ValueError) as exc:
            raise IntegrityError(
                f"event {self.seq} cannot be read back, its payload is damaged ({exc}): "
                "run `episteme verify`, and restore the ledger from a backup"
            ) from None
        return loaded

    def to_json(self) -> dict[str, Any]:
        """The export form (one JSON line per event)."""
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "kind": self.kind,
            "payload": self.data(),
            "hash": self.hash.hex(),
        }


def event_text(seq: int, at: int, actor: str, kind: str, payload: str) -> str:
    """The canonical JSON of an event, the bytes that the chain hashes.

    ``{"actor":…,"at":…,"kind":…,"seq":…,"payload":…}``: the head's keys sorted, then
    the payload as its stored canonical text, so that verification hashes exactly what
    is stored, byte for byte.
    """
    return (
        f'{{"actor":{_quote(actor)},"at":{at},"kind":{_quote(kind)},"seq":{seq},'
        f'"payload":{payload}}}'
    )


def _quote(text: str) -> str:
    return orjson.dumps(text).decode()


def link(prev: bytes, seq: int, at: int, actor: str, kind: str, payload: str) -> bytes:
    """The hash of one event given the hash of the one before it."""
    return chain_hash(prev, event_text(seq, at, actor, kind, payload))


class VerifyReport(BaseModel):
    """The result of recomputing the chain."""

    ok: bool
    events: int
    head: str | None
    first_bad_seq: int | None = None
    problem: str | None = None


def verify_chain(events: Iterable[Event]) -> VerifyReport:
    """Recompute the chain over `events` in order and report the first bad one."""
    return verify_rows((e.seq, e.at, e.actor, e.kind, e.payload, e.hash) for e in events)


def verify_rows(rows: Iterable[tuple[Any, ...]]) -> VerifyReport:
    """`verify_chain` over raw ``(seq, at, actor, kind, payload, hash)`` rows.

    This is the hot loop of `episteme verify`: no objects per row, one hash call.
    """
    prev = GENESIS
    expected = 1
    new_hash = blake3.blake3
    for seq, at, actor, kind, payload, stored in rows:
        problem = _check_row(seq, at, actor, kind, payload, stored, expected)
        if problem is None:
            text = event_text(seq, at, actor, kind, payload)
            if new_hash(prev + text.encode()).digest() != stored:
                problem = "hash does not match its content and the previous event"
        if problem is not None:
            return VerifyReport(
                ok=False, events=expected - 1, head=prev.hex(), first_bad_seq=seq, problem=problem
            )
        prev = stored
        expected += 1
    count = expected - 1
    return VerifyReport(ok=True, events=count, head=prev.hex() if count else None)


def _check_row(
    seq: Any, at: Any, actor: Any, kind: Any, payload: Any, stored: Any, expected: int
) -> str | None:
    if type(seq) is not int or seq != expected:
        return f"sequence number {seq!r} where {expected} was expected"
    if type(at) is not int or type(actor) is not str or type(kind) is not str:
        return "a column has the wrong type"
    if type(payload) is not str or type(stored) is not bytes:
        return "payload or hash has the wrong type"
    return None
