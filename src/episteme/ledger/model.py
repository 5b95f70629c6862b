"""The ledger's data model (DESIGN §2): subjects, assertions, lifecycle, answers.

An assertion is immutable content addressed by the BLAKE3 hash of its canonical
JSON. What changes over time, its lifecycle and confidence, lives in version
intervals kept by the store. Inputs are validated here, once, for every skin
(CLI, API, client): a bad subject, value, confidence or time never reaches the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
)
from whenever import Instant

from episteme.errors import Conflict, InvalidInput
from episteme.ledger.canonical import check_json
from episteme.text import quoted
from episteme.timeutil import from_us

# No leading '-': such a subject would read as an option on the command line.
SUBJECT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")
MAX_SUBJECT = 255


class Lifecycle(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    DEPRECATED = "deprecated"
    SUPERSEDED = "superseded"
    REJECTED = "rejected"


class Kind(StrEnum):
    FACT = "fact"
    DECISION = "decision"
    OBSERVATION = "observation"
    CONSTRAINT = "constraint"


SINGLE_VALUED = frozenset({Kind.FACT, Kind.DECISION})
"""Kinds with one approved value per subject: approving a new one supersedes the old."""

Via = Literal["review", "supersession", "correction", "retraction"]

_REVIEW_MOVES = {
    (Lifecycle.PROPOSED, Lifecycle.APPROVED),
    (Lifecycle.PROPOSED, Lifecycle.REJECTED),
    (Lifecycle.APPROVED, Lifecycle.DEPRECATED),
}


def check_move(current: Lifecycle, target: Lifecycle, via: Via, assertion_id: str) -> None:
    """Refuse a lifecycle move that DESIGN §2 does not allow.

    Review moves: proposed → approved | rejected, approved → deprecated.
    Supersession: approved → superseded. Correction and epoch retraction: any → rejected.
    """
    short = assertion_id[:12]
    if current is Lifecycle.REJECTED:
        raise Conflict(f"assertion {short} is rejected; a rejected assertion cannot move again")
    if via == "review" and (current, target) in _REVIEW_MOVES:
        return
    if via == "supersession" and current is Lifecycle.APPROVED and target is Lifecycle.SUPERSEDED:
        return
    if via in ("correction", "retraction") and target is Lifecycle.REJECTED:
        return
    if target is Lifecycle.REJECTED and via == "review":
        hint = (
            f"; to mark {article(str(current))} assertion incorrect, correct it (`episteme correct"
            f" {short}`, or POST /v1/assertions/{short}/correct)"
        )
    else:
        hint = f"; {article(str(current))} assertion {_ALLOWED[current]}"
    raise Conflict(f"assertion {short} is {current}: it cannot become {target}{hint}")


_ALLOWED = {
    Lifecycle.PROPOSED: "can be approved or rejected",
    Lifecycle.APPROVED: "can be deprecated, or corrected if it is wrong",
    Lifecycle.DEPRECATED: "can only be corrected, if it is wrong",
    Lifecycle.SUPERSEDED: "can only be corrected, if it is wrong",
}
"""The moves left to an assertion of each lifecycle but rejected, as refusals name them."""


def check_subject(subject: str, *, field: str = "subject", given: str | None = None) -> str:
    """Return `subject` if it is a dotted key such as ``auth.jwt.algorithm`` (read from
    `given`, which a refusal quotes, when it is not what was typed)."""
    if len(subject) > MAX_SUBJECT or not SUBJECT_RE.fullmatch(subject):
        noun = "topic" if field == "topic" else "subject"
        shown = subject if given is None else given
        raise InvalidInput(
            f"invalid {noun} {shown!r}: use dotted segments of letters, digits, '_' or '-', "
            f"not starting with '-' (e.g. auth.jwt.algorithm), at most {MAX_SUBJECT} characters",
            field=field,
        )
    return subject


def check_prefix(prefix: str, *, field: str = "subject") -> str:
    """A subject read as a prefix (it covers everything below it), written plainly or
    with a trailing ``.`` or ``.*`` (``auth.jwt.*``); returned plain."""
    plain = prefix.removesuffix(".*").removesuffix(".")
    return check_subject(plain, field=field, given=prefix)  # quoting what was typed


def check_name(name: str, what: str) -> str:
    """Return `name` if it can identify an agent, a person, an epoch or a lens."""
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid {what} {name!r}: start with a letter or digit; then letters, digits "
            "or _ . @ : -, at most 128 characters",
            field=what,
        )
    return name


MAX_LIMIT = 1_000_000
"""The most rows one listing returns (a larger --limit is a mistake, not a wish)."""


def check_limit(limit: int) -> int:
    """Return `limit` if it can bound a listing: 1 to `MAX_LIMIT`."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT:,}", field="limit")
    return limit


def check_context(context: dict[str, Any] | None) -> None:
    """Refuse a caller's context (task, session) that is not plain JSON."""
    problem = None if context is None else check_json(context)
    if problem:
        raise InvalidInput(f"invalid context: {problem}", field="context")


Confidence = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class AssertionInput(BaseModel):
    """What an agent or person submits; the ledger adds recorded_at and the id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str
    value: JsonValue
    agent: str
    kind: Kind = Kind.FACT
    confidence: Confidence = 1.0
    lifecycle: Literal[Lifecycle.PROPOSED, Lifecycle.APPROVED] = Lifecycle.PROPOSED
    source: str | None = None
    evidence: str | None = None
    epoch: str | None = None
    derived_from: tuple[str, ...] = ()
    valid_from: Instant | None = None
    valid_to: Instant | None = None

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str) -> str:
        if len(v) > MAX_SUBJECT or not SUBJECT_RE.fullmatch(v):
            raise ValueError(
                "use dotted segments of letters, digits, '_' or '-', not starting with '-' "
                "(e.g. auth.jwt.algorithm)"
            )
        return v

    @field_validator("value")
    @classmethod
    def _value(cls, v: JsonValue) -> JsonValue:
        problem = check_json(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("agent", "epoch")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not NAME_RE.fullmatch(v):
            raise ValueError("start with a letter or digit; then letters, digits or _ . @ : -")
        return v

    @field_validator("valid_to")
    @classmethod
    def _valid_interval(cls, v: Instant | None, info: ValidationInfo) -> Instant | None:
        # a field's check (valid_from is validated before it), so the error names the field
        start = info.data.get("valid_from")
        if v is not None and start is not None and v <= start:
            raise ValueError("valid_to must be after valid_from")
        return v


class Assertion(BaseModel):
    """An assertion with the lifecycle and confidence it had at the time asked about."""

    id: str
    subject: str
    value: JsonValue
    kind: Kind
    agent: str
    source: str | None
    evidence: str | None
    epoch: str | None
    derived_from: tuple[str, ...]
    valid_from: Instant | None
    valid_to: Instant | None
    recorded_at: Instant
    lifecycle: Lifecycle
    confidence: float


HIDDEN_IDS = 20
"""How many hidden ids an answer lists; the counts are always complete."""

LIVE = frozenset({"proposed", "approved"})
"""Lifecycles whose hidden assertions are listed by id: the live alternatives to an answer.
Hidden history (superseded, deprecated, rejected) is counted, not listed."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """An assertion as a store reads it, before it is worth building an `Assertion`.

    Lenses decide on these light rows; only what a lens shows becomes an `Assertion`.
    `value` and `derived_from` are JSON text, times are microseconds; `pos` is the
    assertion's place in recording order (where a store read it: 0 otherwise).
    """

    id: str
    subject: str
    value: str
    kind: str
    agent: str
    source: str | None
    evidence: str | None
    epoch: str | None
    derived_from: str
    valid_from: int | None
    valid_to: int | None
    recorded_at: int
    lifecycle: str
    confidence: float
    pos: int = 0

    def assertion(self) -> Assertion:
        return Assertion.model_construct(
            id=self.id,
            subject=self.subject,
            value=orjson.loads(self.value),
            kind=Kind(self.kind),
            agent=self.agent,
            source=self.source,
            evidence=self.evidence,
            epoch=self.epoch,
            derived_from=tuple(orjson.loads(self.derived_from)),
            valid_from=None if self.valid_from is None else from_us(self.valid_from),
            valid_to=None if self.valid_to is None else from_us(self.valid_to),
            recorded_at=from_us(self.recorded_at),
            lifecycle=Lifecycle(self.lifecycle),
            confidence=self.confidence,
        )


class Candidates(NamedTuple):
    """What a store reads for a lens on one subject."""

    rows: list[Candidate]
    """The assertions in the lifecycles asked for, in recording order."""
    elsewhere: dict[str, int]
    """The others, counted by lifecycle."""
    listed: list[tuple[int, str]]
    """(`pos`, id) of the first `HIDDEN_IDS` of the others whose lifecycle was asked to
    be listed, in recording order: what a lens names of what it hides, without reading
    the rows."""


_REASONS = (
    ("expired", "expired"),
    ("not yet valid", "not yet valid"),
    ("confidence", "below the lens's confidence"),
    ("trust", "by an agent below the lens's trust"),
    ("agent", "by an agent the lens does not take"),
    ("source", "from a source the lens does not take"),
    ("older", "not the newest"),
)
"""The reasons a lens hides for (`lenses._exclusion`), as an answer's summary says them."""


class Hidden(BaseModel):
    """What a lens left out of an answer, so that no answer hides silently.

    `count` and the breakdowns are exact; `ids` lists the hidden live alternatives
    (proposed or approved), at most `HIDDEN_IDS` of them.
    """

    count: int = 0
    by_lifecycle: dict[str, int] = Field(default_factory=dict)
    by_reason: dict[str, int] = Field(default_factory=dict)
    ids: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        if not self.count:
            return "nothing hidden"
        parts = [
            f"{n} {state} assertion{'s' if n != 1 else ''}"
            for state, n in self.by_lifecycle.items()
        ]
        # every reason but the lifecycle, which the parts already say
        why = [f"{self.by_reason[r]} {words}" for r, words in _REASONS if r in self.by_reason]
        return ", ".join(parts) + " hidden" + (f" ({', '.join(why)})" if why else "")


class Item(BaseModel):
    """One assertion in an answer, with its lens score when the lens ranks."""

    assertion: Assertion
    score: float | None = None


class ConflictNote(BaseModel):
    """Approved values of one subject that hold at the same time."""

    key: str
    subject: str
    assertion_ids: list[str]
    values: list[JsonValue]

    def summary(self) -> str:
        shown = ", ".join(orjson.dumps(v).decode() for v in self.values)
        return f"conflict on {self.subject}: {len(self.values)} approved values ({shown})"


class Answer(BaseModel):
    """The answer to a read: what the lens showed, what it hid, and the audit receipt."""

    query_id: str | None
    agent: str
    lens: str
    subject: str | None
    text: str | None
    as_of: Instant | None
    asked_at: Instant
    items: list[Item]
    hidden: Hidden
    latency_us: int = 0
    conflicts: list[ConflictNote] = Field(default_factory=list)
    """Approved values that disagree at the same valid time: the answer is contested."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def summary(self) -> str:
        """What was hidden, in words ("1 proposed assertion hidden"), and any conflict."""
        return "; ".join([self.hidden.summary(), *(c.summary() for c in self.conflicts)])


def dump(data: Any) -> Any:
    """JSON-ready form of models, lists and dicts of them: RFC 3339 times."""
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list | tuple):
        return [dump(m) for m in data]
    if isinstance(data, dict):
        return {k: dump(v) for k, v in data.items()}
    return data


def parse_assertion(data: Any, *, where: str = "assertion") -> AssertionInput:
    """Validate raw input into an `AssertionInput`, or raise one readable `InvalidInput`."""
    try:
        return AssertionInput.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"invalid {where}: {describe(exc)}", field=_loc(exc)) from None


def describe(exc: ValidationError, *, shown: bool = True) -> str:
    """The first validation problem of `exc` as one line: ``confidence: must be <= 1``;
    with what was given unless not `shown` (a file that may hold a secret)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "input"
    given = err.get("input")
    if shown and isinstance(given, str | int | float | bool) and err["type"] != "missing":
        loc += f" {quoted(given)}"
    msg = plain_message(err["msg"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {msg}{more}"


_ENUM_REPR = re.compile(r"<\w+\.\w+: ('[^']*')>")


def plain_message(msg: str) -> str:
    """pydantic's message for people: no "Value error, " and no enum reprs (it lists the
    values a literal takes as ``<Lifecycle.PROPOSED: 'proposed'>``)."""
    msg = _ENUM_REPR.sub(r"\1", msg.removeprefix("Value error, "))
    if msg == "value or calculation out of range":  # whenever's, for a time it read
        return "out of range: times run from year 1 to 9999, in UTC"
    return msg


def _loc(exc: ValidationError) -> str | None:
    loc = exc.errors()[0]["loc"]
    return ".".join(str(p) for p in loc) if loc else None


def article(word: str) -> str:
    """`word` with its indefinite article: "an assertion", "a decision"."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


MAX_SEQ = 2**63 - 1
"""The largest journal position a store can hold (a signed 64-bit integer)."""


def check_before(before: int | None, what: str = "a journal position (an item's seq)") -> None:
    """`before`, the position a page of a list starts below (a journal seq, or a job's
    id), is a positive 64-bit integer."""
    if before is not None and not 1 <= before <= MAX_SEQ:
        raise InvalidInput(f"before must be {what}, 1 or more", field="before")


MAX_KEY = 1024
"""The longest key or id an `after` takes (a notification's key, a session's id)."""


def check_after(after: str | None, what: str) -> None:
    """`after`, the key or id a page of a list follows, is text that such an item can
    have: 1 to `MAX_KEY` characters, no NUL."""
    if after is not None and (
        not isinstance(after, str) or not 0 < len(after) <= MAX_KEY or "\x00" in after
    ):
        raise InvalidInput(
            f"after must be {what} (text of 1 to {MAX_KEY:,} characters)", field="after"
        )


def check_window(since: Instant | None, until: Instant | None) -> None:
    """A window whose end is before its start is refused, not answered "none"."""
    if since is not None and until is not None and until < since:
        raise InvalidInput("the end of the window is before its start: swap them", field="until")
