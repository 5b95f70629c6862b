"""Trust: a decayed beta reputation per (agent, topic) (DESIGN §2, docs/trust.md).

The gardener turns the journal into evidence rows, each a success or failure weight
for one agent on one subject at one time. The score of an agent on a topic (a
subject prefix) at time T is

    score = (prior + S) / (2·prior + S + F)

where S and F sum the weights of the evidence on the topic recorded up to T, each
multiplied by 0.5 ** (age / half_life). With no evidence the score is 0.5. Weights
are never negative, so a score stays in [0, 1], and evidence that only adds failure
(a correction) can only lower it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from whenever import Instant

from episteme.errors import InvalidInput
from episteme.ledger.lenses import TrustFn
from episteme.ledger.sql.learning import Evidence, Weighed
from episteme.timeutil import Clock, from_us, to_us

if TYPE_CHECKING:
    from episteme.ledger.store import StoreReader

_DAY_US = 86_400_000_000
Weight = float


class TrustPolicy(BaseModel):
    """The weights and decay the gardener applies (`EPISTEME_TRUST_*` variables)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    asserted_failure: Weight = Field(default=1.0, ge=0, le=10)
    """To the agent that asserted a value later corrected."""
    cited_failure: Weight = Field(default=0.3, ge=0, le=10)
    """To each agent whose recorded decision cited a query that served the bad value."""
    approver_failure: Weight = Field(default=0.5, ge=0, le=10)
    """To whoever approved the bad value."""
    approved_success: Weight = Field(default=1.0, ge=0, le=10)
    """To the agent whose assertion was approved."""
    confirmed_success: Weight = Field(default=0.3, ge=0, le=10)
    """To each agent whose decision cited a query that served an assertion later approved."""
    half_life_days: float = Field(default=90.0, gt=0, le=36500)
    prior: float = Field(default=1.0, gt=0, le=100)
    alert_below: float = Field(default=0.3, ge=0, le=1)
    """Notify when a correction takes an agent's score on a topic below this."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrustPolicy:
        """The policy from `EPISTEME_TRUST_<FIELD>` variables (defaults otherwise)."""
        env = os.environ if environ is None else environ
        given = {
            name: env[f"EPISTEME_TRUST_{name.upper()}"]
            for name in cls.model_fields
            if f"EPISTEME_TRUST_{name.upper()}" in env
        }
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            err = exc.errors()[0]
            name = f"EPISTEME_TRUST_{str(err['loc'][0]).upper()}"
            raise InvalidInput(f"{name}: {err['msg']}", field=name) from None


def topic_of(subject: str) -> str:
    """The topic a subject counts under for ranking: its first segment (``auth``)."""
    return subject.split(".", 1)[0]


class TrustMove(BaseModel):
    """One piece of evidence, and what it weighs at the time asked about."""

    at: Instant
    seq: int
    role: str
    assertion_id: str
    subject: str
    success: float
    failure: float
    weight_now: float
    reason: str


class TrustScore(BaseModel):
    """An agent's score on a topic at a time, and the evidence that moved it."""

    agent: str
    topic: str
    at: Instant
    score: float
    successes: float
    failures: float
    evidence: int
    moves: list[TrustMove]
    """The newest evidence first (at most `MOVES`)."""


MOVES = 20


def _decay(policy: TrustPolicy, age_us: int) -> float:
    return float(0.5 ** (max(0, age_us) / (policy.half_life_days * _DAY_US)))


def weigh(
    rows: Iterable[Evidence | Weighed], at_us: int, policy: TrustPolicy
) -> tuple[float, float, float]:
    """(score, decayed successes, decayed failures) of `rows` at `at_us`."""
    s = f = 0.0
    for e in rows:
        if e.at > at_us:
            continue
        d = _decay(policy, at_us - e.at)
        s += e.success * d
        f += e.failure * d
    p = policy.prior
    return (p + s) / (2 * p + s + f), s, f


def scores(
    rows: Iterable[Evidence], at_us: int, policy: TrustPolicy, topic: str | None
) -> list[TrustScore]:
    """A score per (agent, topic): `topic` for every row, or each row's first segment."""
    groups: dict[tuple[str, str], list[Evidence]] = {}
    for e in rows:
        groups.setdefault((e.agent, topic or topic_of(e.subject)), []).append(e)
    out = []
    for (agent, name), evidence in sorted(groups.items()):
        score, s, f = weigh(evidence, at_us, policy)
        moves = [
            TrustMove(
                at=from_us(e.at),
                seq=e.seq,
                role=e.role,
                assertion_id=e.assertion_id,
                subject=e.subject,
                success=e.success,
                failure=e.failure,
                weight_now=round((e.success + e.failure) * _decay(policy, at_us - e.at), 6),
                reason=e.reason,
            )
            for e in reversed(evidence[-MOVES:])
        ]
        out.append(
            TrustScore(
                agent=agent,
                topic=name,
                at=from_us(at_us),
                score=score,
                successes=s,
                failures=f,
                evidence=len(evidence),
                moves=moves,
            )
        )
    return out


class TrustBook:
    """Trust for lenses: `at(time)` gives the `TrustFn` a read uses, memoized per read.

    A read at the present takes the gardener's running total for the agent and topic
    (one row); a read at a past time sums the evidence recorded up to then. The pairs a
    read will ask about, given up front (`wanted`), are read together: a ranked lens over
    rows from 25 agents takes one statement at the present (one per topic at a past
    time), not 25 (on PostgreSQL, 25 round trips).
    """

    def __init__(self, reader: StoreReader, policy: TrustPolicy, clock: Clock) -> None:
        self.reader, self.policy, self.clock = reader, policy, clock

    def at(self, when: Instant | None, wanted: Iterable[tuple[str, str]] = ()) -> TrustFn:
        """Scores at `when` (None: now) of (agent, subject) pairs, those in `wanted` read
        at once."""
        at_us = to_us(when or self.clock.now())
        memo: dict[tuple[str, str], float] = {}
        p = self.policy

        def present(keys: set[tuple[str, str]]) -> None:
            totals = self.reader.trust_totals(keys)
            for key in keys:
                total = totals.get(key)
                if total is None:
                    memo[key] = 0.5
                    continue
                s, f, since = total
                d = _decay(p, at_us - since)
                memo[key] = (p.prior + s * d) / (2 * p.prior + (s + f) * d)

        def past(keys: set[tuple[str, str]]) -> None:
            by_topic: dict[str, list[str]] = {}
            for agent, topic in sorted(keys):
                by_topic.setdefault(topic, []).append(agent)
            for topic, agents in by_topic.items():
                mine: dict[str, list[Weighed]] = {a: [] for a in agents}
                for w in self.reader.trust_weights(agents, topic, at_us):
                    mine[w.agent].append(w)
                for agent, rows in mine.items():
                    memo[(agent, topic)] = weigh(rows, at_us, p)[0]

        read = present if when is None else past
        keys = {(agent, topic_of(subject)) for agent, subject in wanted}
        if keys:
            read(keys)

        def trust(agent: str, subject: str) -> float:
            key = (agent, topic_of(subject))
            if key not in memo:
                read({key})
            return memo[key]

        return trust


def fixed(fn: TrustFn) -> Callable[[Instant | None, Iterable[tuple[str, str]]], TrustFn]:
    """A trust function that ignores time (tests and callers with their own scores)."""

    def at(_when: Instant | None, _wanted: Iterable[tuple[str, str]] = ()) -> TrustFn:
        return fn

    return at
