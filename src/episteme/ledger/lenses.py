"""Lenses: named read policies, and what each one hides (DESIGN §2).

A lens filters the candidate assertions of a read and picks among them:

- ``approved`` (the default for agents): approved assertions only;
- ``latest``: per subject, the newest assertion that is not rejected, whatever its
  lifecycle. This is the lens that served a proposal as if it were a decision;
- ``consensus``: proposed and approved, ranked by confidence × trust;
- ``all``: everything, rejected included.

Every lens but ``all`` also leaves out assertions outside their valid time at the
moment read (expired, or not valid yet): an expired assertion stops being current.

Custom lenses are `LensSpec` values stored in the ledger by name. Whatever a lens
leaves out is counted in `Hidden`, so no answer hides silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from episteme.ledger.model import HIDDEN_IDS, LIVE, Confidence, Hidden, Lifecycle

Pick = Literal["all", "newest", "ranked"]
TrustFn = Callable[[str, str], float]
"""trust(agent, subject) in [0, 1]."""

PRIOR_TRUST = 0.5
"""The Beta(1, 1) mean: everyone's trust until the gardener has evidence."""


def prior_trust(agent: str, subject: str) -> float:
    return PRIOR_TRUST


class LensSpec(BaseModel):
    """What a lens shows and how it picks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lifecycles: frozenset[Lifecycle] = frozenset({Lifecycle.APPROVED})
    min_confidence: Confidence = 0.0
    min_trust: Confidence = 0.0
    agents: frozenset[str] | None = Field(default=None, description="allow list; None allows all")
    sources: tuple[str, ...] | None = Field(
        default=None, description="allowed source prefixes; None allows all"
    )
    pick: Pick = "all"
    include_expired: bool = Field(
        default=False, description="also show assertions outside their valid time"
    )
    description: str = ""

    @field_serializer("lifecycles", "agents", when_used="json")
    def _sorted(self, value: frozenset[str] | None) -> list[str] | None:
        # Sets in a stable order: this JSON is hashed into the journal and printed.
        return None if value is None else sorted(str(v) for v in value)


_NOT_REJECTED = frozenset(set(Lifecycle) - {Lifecycle.REJECTED})

BUILTIN: dict[str, LensSpec] = {
    "approved": LensSpec(description="approved assertions only (the default for agents)"),
    "latest": LensSpec(
        lifecycles=_NOT_REJECTED,
        pick="newest",
        description="per subject, the newest non-rejected assertion, whatever its lifecycle",
    ),
    "consensus": LensSpec(
        lifecycles=frozenset({Lifecycle.PROPOSED, Lifecycle.APPROVED}),
        pick="ranked",
        description="proposed and approved, ranked by confidence × trust",
    ),
    "all": LensSpec(
        lifecycles=frozenset(Lifecycle),
        include_expired=True,
        description="everything, rejected, expired and history included",
    ),
}


class LensRow(Protocol):
    """What a lens looks at: an assertion as a store read it (a `Candidate`)."""

    @property
    def pos(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def agent(self) -> str: ...
    @property
    def source(self) -> str | None: ...
    @property
    def lifecycle(self) -> str: ...
    @property
    def confidence(self) -> float: ...
    @property
    def valid_from(self) -> int | None: ...
    @property
    def valid_to(self) -> int | None: ...


R = TypeVar("R", bound=LensRow)


def apply_lens(
    spec: LensSpec,
    candidates: Iterable[R],
    trust: TrustFn = prior_trust,
    elsewhere: Mapping[str, int] | None = None,
    valid_at: int | None = None,
    listed: Sequence[tuple[int, str]] = (),
) -> tuple[list[tuple[R, float | None]], Hidden]:
    """Filter and pick `candidates`; return what is shown (with its score) and what is hidden.

    Candidates come in the order they were recorded (oldest first). `elsewhere` counts,
    by lifecycle, assertions the store did not return because the lens cannot show
    their lifecycle: they are hidden too, and `listed` names the first of the live ones
    as (`pos`, id), so that the hidden ids come in recording order as if they had been
    read. `valid_at` (microseconds) is the moment whose valid time counts; None shows
    assertions whatever their valid time.
    """
    shown: list[tuple[R, float | None]] = []
    hidden = _Tally()
    for state, n in (elsewhere or {}).items():
        hidden.count += n
        hidden.by_lifecycle[state] = hidden.by_lifecycle.get(state, 0) + n
        hidden.by_reason["lifecycle"] = hidden.by_reason.get("lifecycle", 0) + n
    ranked = spec.pick == "ranked"
    decided = [(a, _exclusion(spec, a, trust, valid_at)) for a in candidates]
    newest: dict[str, int] = {}  # subject -> where in `decided` its newest shown one is
    if spec.pick == "newest":
        for i, (a, reason) in enumerate(decided):
            if reason is None:
                newest[a.subject] = i
    named = iter(listed)
    after = next(named, None)
    for i, (a, reason) in enumerate(decided):
        while after is not None and after[0] < a.pos:
            hidden.name(after[1])
            after = next(named, None)
        if reason is None and newest and newest[a.subject] != i:
            reason = "older"  # hidden where it was recorded, so ids keep their order
        if reason is None:
            if not newest:
                shown.append((a, a.confidence * trust(a.agent, a.subject) if ranked else None))
        else:
            hidden.hide(a, reason)
    while after is not None:
        hidden.name(after[1])
        after = next(named, None)
    if newest:  # subjects in the order they first showed, each with its newest
        shown = [(decided[i][0], None) for i in newest.values()]
    elif ranked:
        shown.sort(key=lambda i: (i[0].subject, -(i[1] or 0.0)))
    return shown, hidden.result()


def _exclusion(spec: LensSpec, a: LensRow, trust: TrustFn, valid_at: int | None) -> str | None:
    if a.lifecycle not in spec.lifecycles:
        return "lifecycle"
    if valid_at is not None and not spec.include_expired:
        if a.valid_to is not None and a.valid_to <= valid_at:
            return "expired"
        if a.valid_from is not None and a.valid_from > valid_at:
            return "not yet valid"
    if a.confidence < spec.min_confidence:
        return "confidence"
    if spec.agents is not None and a.agent not in spec.agents:
        return "agent"
    if spec.sources is not None and not any((a.source or "").startswith(s) for s in spec.sources):
        return "source"
    if spec.min_trust and trust(a.agent, a.subject) < spec.min_trust:
        return "trust"
    return None


class _Tally:
    """Counts what a lens hides in plain dicts (a model per increment is slow)."""

    __slots__ = ("by_lifecycle", "by_reason", "count", "ids")

    def __init__(self) -> None:
        self.count = 0
        self.by_lifecycle: dict[str, int] = {}
        self.by_reason: dict[str, int] = {}
        self.ids: list[str] = []

    def hide(self, a: LensRow, reason: str) -> None:
        state = str(a.lifecycle)
        self.count += 1
        self.by_lifecycle[state] = self.by_lifecycle.get(state, 0) + 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if state in LIVE:
            self.name(a.id)

    def name(self, assertion_id: str) -> None:
        """List a hidden live alternative (counted already) while there is room."""
        if len(self.ids) < HIDDEN_IDS:
            self.ids.append(assertion_id)

    def result(self) -> Hidden:
        return Hidden.model_construct(
            count=self.count,
            by_lifecycle=self.by_lifecycle,
            by_reason=self.by_reason,
            ids=self.ids,
        )
