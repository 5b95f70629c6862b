"""Records the ledger returns when an on-call person investigates.

Audit records (what was asked and served), decisions, corrections, constraints,
epochs, version history, and the shapes of diff, blame, trace and impact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, JsonValue, computed_field
from whenever import Instant

from episteme.errors import InvalidInput
from episteme.ledger.model import MAX_SEQ, Assertion, Hidden, Lifecycle
from episteme.timeutil import to_us

COPY_THE_PLACE = (
    "give the place the page before ended at, as it gave it (its `next`, the --before"
    " of the CLI's line under the page, or the console's link to older changes)"
)
_SHOWN = 120
_CURSOR = re.compile(r"([0-9]{1,19})\.([0-9]{1,19})\.([0-9a-f]{64})\.([01])")
"""A `ChangeCursor` as text: time, seq, assertion id (BLAKE3, hexadecimal), 0 or 1."""


class Version(BaseModel):
    """One interval of an assertion's lifecycle in transaction time."""

    seq: int
    lifecycle: Lifecycle
    confidence: float
    tx_from: Instant
    tx_to: Instant | None
    prev_lifecycle: Lifecycle | None
    actor: str
    reason: str | None
    cause: str
    superseded: list[str] = Field(default_factory=list)
    """The assertions this one superseded as it became approved in this version's event:
    the subject's earlier approved values (a single-valued subject holds one). Filled in
    by blame; empty where a version is read for anything else."""


@dataclass(slots=True)
class ServedItem:
    """An assertion as it was served: the lifecycle and confidence the reader saw.

    A plain dataclass, like `Change`: an audit listing can hold thousands. Not frozen: a
    frozen dataclass sets each field through `object.__setattr__`, five times slower.
    """

    assertion_id: str
    subject: str
    lifecycle: Lifecycle
    confidence: float
    value: JsonValue = None


class QueryRecord(BaseModel):
    """One audited read."""

    id: str
    seq: int
    at: Instant
    agent: str
    lens: str
    subject: str | None
    text: str | None
    as_of: Instant | None
    returned: list[ServedItem]
    hidden: Hidden
    latency_us: int
    context: dict[str, Any]


class DecisionRecord(BaseModel):
    """An action an agent took, citing the reads it relied on."""

    id: str
    seq: int
    at: Instant
    agent: str
    action: str
    query_ids: list[str]
    context: dict[str, Any]


class ConstraintRecord(BaseModel):
    """A negative constraint: what must not be done in a scope, and what to do instead.

    Its scope is a subject (and all below it), tags (the kinds of plan it covers, such
    as ``deploy`` or ``npm``), or both."""

    id: str
    seq: int
    at: Instant
    scope: str | None
    forbid: list[str]
    patterns: list[str]
    prefer: str | None
    reason: str
    origin: str
    created_by: str
    items: list[str] = []
    """Identifiers (package names, paths, image tags) forbidden exactly as written."""
    half_life_days: float = 30.0
    hits: int = 0
    last_hit_at: Instant | None = None
    tags: list[str] = []
    """The kinds of plan it covers; a check naming one of them meets it."""
    retired_at: Instant | None = None
    """When it was retired: it no longer answers checks (None: it does)."""
    retired_by: str | None = None
    retired_reason: str | None = None


class CheckRecord(BaseModel):
    """An audited pre-flight check: who checked which plan, and what it hit."""

    id: str
    seq: int
    at: Instant
    agent: str
    plan: str
    scope: list[str]
    items: list[str]
    checked: int
    violations: list[dict[str, Any]]
    """``{constraint_id, matched, found_in, strength, severity}`` as answered."""
    context: dict[str, Any]
    tags: list[str] = []

    @property
    def outcome(self) -> Literal["passed", "warned", "violated"]:
        """``violated`` when it hit an active constraint, ``warned`` when only dormant ones."""
        severities = {v["severity"] for v in self.violations}
        if "violation" in severities:
            return "violated"
        return "warned" if severities else "passed"


class NotificationRecord(BaseModel):
    """Something raised: a correction, a conflict, a trust drop, an expiry (by the gardener),
    or a diagnosis waiting for its approver."""

    key: str
    type: str
    seq: int | None
    at: Instant
    summary: str
    data: dict[str, Any]


class CorrectionRecord(BaseModel):
    """An assertion marked incorrect, with the right value and constraint it led to."""

    id: str
    seq: int
    at: Instant
    assertion_id: str
    by: str
    reason: str
    replacement_id: str | None
    constraint_id: str | None


class EpochRecord(BaseModel):
    """An ingestion batch and whether it was superseded."""

    name: str
    created_at: Instant
    created_by: str
    assertions: int
    superseded_at: Instant | None
    superseded_by: str | None
    reason: str | None


@dataclass(slots=True)
class Change:
    """One change in a diff: an assertion added or moved, with who and why.

    A plain dataclass (pydantic still serialises it inside `Diff`): a day's diff can hold
    tens of thousands of these, and a model per row would cost more than the query. Not
    frozen, for the same reason: a frozen one took 4.7 µs to build against 0.9 µs.
    """

    seq: int
    at: Instant
    change: str  # added | approved | deprecated | superseded | rejected | corrected | retracted
    assertion_id: str
    subject: str
    value: JsonValue
    agent: str
    lifecycle: Lifecycle
    prev_lifecycle: Lifecycle | None
    actor: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class ChangeCursor:
    """A place in a diff's order, below which its next page starts: the change's time (in
    microseconds), its event's seq, its assertion and whether it is the second of that
    assertion's two versions in the event (added, then superseded by a later item of its
    batch). One event can change any number of assertions, so a seq alone cannot say
    where a page ended. Written `TIME.SEQ.ID.0|1` on the wire, opaque to callers."""

    at: int
    seq: int
    assertion_id: str
    later: bool

    @classmethod
    def of(cls, change: Change) -> ChangeCursor:
        return cls(
            to_us(change.at), change.seq, change.assertion_id, change.prev_lifecycle is not None
        )

    def __str__(self) -> str:
        return f"{self.at}.{self.seq}.{self.assertion_id}.{int(self.later)}"

    @classmethod
    def parse(cls, text: str) -> ChangeCursor:
        """The cursor `text` (a diff's `next`), or a refusal naming `before`."""
        found = _CURSOR.fullmatch(text)
        if found is None or not 1 <= int(found[2]) <= MAX_SEQ or int(found[1]) > MAX_SEQ:
            # a place is about 100 characters: one far longer is not one cut short
            shown = f"{text[:_SHOWN]!r}{'…' if len(text) > _SHOWN else ''}"
            raise InvalidInput(
                f"before {shown} is not a place in a diff: {COPY_THE_PLACE}", field="before"
            )
        return cls(int(found[1]), int(found[2]), found[3], found[4] == "1")


class Diff(BaseModel):
    prefix: str | None
    since: Instant
    until: Instant
    changes: list[Change]
    """In journal order: all of the window's, or its newest (below `before` when given)
    when a limit was asked."""
    counts: dict[str, int]
    """Changes of each kind in the whole window."""
    next: str | None = None
    """Where the window's older changes start when this page left some out: pass it as
    `before` for the next page. Absent on the last page."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> int:
        """Changes in the whole window (more than `changes` holds when it was limited)."""
        return sum(self.counts.values())


class Blame(BaseModel):
    """Who and what introduced an assertion, and every move it made since."""

    assertion: Assertion
    history: list[Version]
    corrections: list[CorrectionRecord]
    epoch: EpochRecord | None
    derived_from: list[Assertion]


class Trace(BaseModel):
    """Decision → queries → assertions → agents, sources and epochs."""

    root: str
    root_kind: str
    decision: DecisionRecord | None
    queries: list[QueryRecord]
    assertions: list[Assertion]
    agents: list[str]
    sources: list[str]
    epochs: list[str]
    checks: list[CheckRecord] | None = None
    """A decision's: the pre-flight checks its agent made in the hour before it (the
    newest 20, newest first), whether or not they were about it; an empty list says it
    made none. None for a query's trace (and from a server that does not say)."""


class Impact(BaseModel):
    """From an assertion outwards: who saw it, what they did, what was built on it."""

    assertion: Assertion
    queries: int
    recent_queries: list[QueryRecord] = Field(default_factory=list)
    agents: dict[str, int]
    decisions: list[DecisionRecord]
    derived: list[Assertion]


class Correction(BaseModel):
    """What `correct` did."""

    correction: CorrectionRecord
    corrected: Assertion
    replacement: Assertion | None
    constraint: ConstraintRecord | None
    superseded: list[str]


class RebuildReport(BaseModel):
    ok: bool
    events: int
    differences: dict[str, int]
    repaired: bool = False
