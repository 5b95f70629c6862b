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

from pydantic import BaseModel

from episteme.ledger.canonical import GENESIS, canonical, chain_hash


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
        loaded: dict[str, Any] = json.loads(self.payload)
        return loaded

    def to_json(self) -> dict[str, Any]:
        """The export form (one JSON line per event)."""
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "kind": self.kind,
            "payload": json.loads(self.payload),
            "hash": self.hash.hex(),
        }


def event_text(seq: int, at: int, actor: str, kind: str, payload: str) -> str:
    """The canonical JSON of an event, the bytes that the chain hashes.

    The payload is embedded as its stored canonical text so that verification
    hashes exactly what is stored, byte for byte.
    """
    head = canonical({"actor": actor, "at": at, "kind": kind, "seq": seq})
    return head[:-1] + ',"payload":' + payload + "}"


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
    prev = GENESIS
    expected_seq = 1
    count = 0
    for ev in events:
        problem = _check_row(ev, expected_seq)
        if problem is None:
            h = link(prev, ev.seq, ev.at, ev.actor, ev.kind, ev.payload)
            if h != ev.hash:
                problem = "hash does not match its content and the previous event"
        if problem is not None:
            return VerifyReport(
                ok=False, events=count, head=prev.hex(), first_bad_seq=ev.seq, problem=problem
            )
        prev = ev.hash
        expected_seq += 1
        count += 1
    return VerifyReport(ok=True, events=count, head=prev.hex() if count else None)


def _check_row(ev: Event, expected_seq: int) -> str | None:
    if not isinstance(ev.seq, int) or ev.seq != expected_seq:
        return f"sequence number {ev.seq!r} where {expected_seq} was expected"
    if not isinstance(ev.at, int) or not isinstance(ev.actor, str) or not isinstance(ev.kind, str):
        return "a column has the wrong type"
    if not isinstance(ev.payload, str) or not isinstance(ev.hash, bytes):
        return "payload or hash has the wrong type"
    return None
