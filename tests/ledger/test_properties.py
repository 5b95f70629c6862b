"""Properties of the ledger over random sequences of operations (Hypothesis).

Each example runs a random program of asserts, reviews, corrections, epoch
supersessions, audited reads and decisions on a real ledger (each property runs on
SQLite and on PostgreSQL), on a clock that moves by random steps (often 0 µs, so
several events share a timestamp).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from whenever import Instant, TimeDelta

from episteme.errors import EpistemeError
from episteme.ledger import BUILTIN, Answer, AssertionInput, Ledger, Lifecycle
from episteme.ledger.lenses import apply_lens
from episteme.ledger.model import LIVE, Hidden
from episteme.ledger.sql.projector import Us
from episteme.timeutil import ManualClock, from_us, to_us
from tests.backends import BACKENDS, raw_connection

T0 = Instant.parse_iso("2026-11-21T09:00:00Z")
SUBJECTS = ("svc.a", "svc.a.b", "svc.c")
READS = ("svc", "svc.a", "svc.a.*", "svc.a.b", "svc.c")
VALUES = ("RS256", "ES256", 1, 2)
EPOCHS = ("e1", "e2")
LENSES = tuple(BUILTIN)
UNKNOWN = -1  # a reference to an id that the ledger does not know

ref = st.integers(UNKNOWN, 63)  # mostly an index into the ids so far
assertion = st.fixed_dictionaries(
    {
        "subject": st.sampled_from(SUBJECTS),
        "value": st.sampled_from(VALUES),
        "agent": st.sampled_from(("alice", "bob")),
        "kind": st.sampled_from(("fact", "fact", "observation")),
        "lifecycle": st.sampled_from(("proposed", "approved")),
        "confidence": st.sampled_from((0.3, 0.9, 1.0)),
        "epoch": st.none() | st.sampled_from(EPOCHS),
    }
)
add_op = st.tuples(
    st.just("add"), st.lists(st.tuples(assertion, st.none() | ref), min_size=1, max_size=3)
)
op = st.one_of(
    add_op,
    st.tuples(st.sampled_from(("approve", "deprecate", "reject")), ref),
    st.tuples(st.just("correct"), ref, st.none() | st.sampled_from(VALUES), st.booleans()),
    st.tuples(st.just("supersede"), st.sampled_from(EPOCHS)),
    st.tuples(
        st.just("query"),
        st.sampled_from(READS),
        st.sampled_from(LENSES),
        st.none() | st.integers(0, 200_000_000),
    ),
    st.tuples(st.just("decide"), st.lists(ref, max_size=3)),
)
step_us = st.sampled_from((0, 0, 0, 1, 250, 1_000_000, 60_000_000))
programs = st.lists(st.tuples(op, step_us), min_size=6, max_size=30).map(
    lambda ops: [(("add", [({"subject": "svc.a", "value": 0, "agent": "alice"}, None)]), 0), *ops]
)


@dataclass
class Run:
    """A ledger driven by a program; refused operations must leave the journal alone."""

    ledger: Ledger
    clock: ManualClock
    ids: list[str] = field(default_factory=list)
    query_ids: list[str] = field(default_factory=list)
    refused: int = 0

    def pick(self, n: int, ids: list[str], unknown: str) -> str:
        return ids[n % len(ids)] if ids and n != UNKNOWN else unknown

    def play(self, program: list[tuple[Any, int]]) -> Run:
        for operation, step in program:
            self.clock.advance(TimeDelta(microseconds=step))
            before = self.ledger.store.head()
            try:
                self.apply(*operation)
            except EpistemeError:
                assert self.ledger.store.head() == before
                self.refused += 1
        return self

    def apply(self, name: str, *args: Any) -> None:
        led = self.ledger
        if name == "add":
            inputs = [
                AssertionInput(
                    **fields,
                    derived_from=() if d is None else (self.pick(d, self.ids, "zzzz0000"),),
                )
                for fields, d in args[0]
            ]
            self.ids += [a.id for a in led.add(inputs)]
        elif name in ("approve", "deprecate", "reject"):
            getattr(led, name)(self.pick(args[0], self.ids, "zzzz0000"), by="reviewer")
        elif name == "correct":
            target, value, forbid = args
            extra = {} if value is None else {"value": value}
            c = led.correct(
                self.pick(target, self.ids, "zzzz0000"),
                by="oncall",
                reason="wrong",
                forbid=forbid,
                **extra,
            )
            if c.replacement is not None:
                self.ids.append(c.replacement.id)
        elif name == "supersede":
            led.supersede_epoch(args[0], by="oncall", reason="bad batch")
        elif name == "query":
            subject, lens, back = args
            at = None if back is None else self.clock.now().subtract(microseconds=back)
            ans = led.query(subject, agent="deploy", lens=lens, at=at)
            assert ans.query_id is not None
            self.query_ids.append(ans.query_id)
            if lens == "approved":
                assert_only_approved(ans)
        elif name == "decide":
            cited = [self.pick(n, self.query_ids, "q_" + "0" * 24) for n in args[0]]
            led.decide("rolled out", agent="deploy", query_ids=cited)
        else:  # pragma: no cover
            raise AssertionError(name)


Fresh = Callable[[str], AbstractContextManager[str | Path]]


@contextmanager
def fresh_ledger(
    fresh_location: Fresh, backend: str
) -> Iterator[tuple[Ledger, ManualClock, str | Path]]:
    with fresh_location(backend) as where:
        clock = ManualClock(T0)
        with Ledger.init(where, clock=clock) as led:
            yield led, clock, where


def on_both_backends(
    sqlite: int, postgresql: int, **strategies: st.SearchStrategy[Any]
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A property run on each backend with its own number of examples. The body takes
    what `strategies` draw, `fresh_location` and `backend`.

    A PostgreSQL example makes a database and migrates it, and each rebuild makes a
    scratch schema: about a second an example, ten times a SQLite one. PostgreSQL runs
    a third as many, enough to hold its store to the same properties (every run draws
    new programs), while SQLite explores the programs. No example database is kept:
    the bodies share one inner function, and a failure prints its falsifying example.
    """

    def wrap(body: Callable[..., None]) -> Callable[..., None]:
        def test(backend: str, fresh_location: Fresh) -> None:
            examples = sqlite if backend == "sqlite" else postgresql

            @settings(max_examples=examples, deadline=None, database=None)
            @given(**strategies)
            def run(**drawn: Any) -> None:
                body(**drawn, fresh_location=fresh_location, backend=backend)

            run()

        test.__name__ = test.__qualname__ = body.__name__
        test.__doc__ = body.__doc__
        return pytest.mark.parametrize("backend", BACKENDS)(test)

    return wrap


def assert_only_approved(ans: Answer) -> None:
    assert all(i.assertion.lifecycle is Lifecycle.APPROVED for i in ans.items)


def hidden_as_named(led: Ledger, subject: str, lens: str, at: Instant | None) -> Hidden:
    """What an answer hides: live alternatives in lifecycles it cannot show are counted
    and named by the store without being read."""
    return led.answer(subject.removesuffix(".*"), lens=lens, at=at).hidden


def hidden_as_read(led: Ledger, subject: str, lens: str, at: Instant | None) -> Hidden:
    """The same, with every live alternative read as a row and hidden by the lens."""
    spec = led.lens_spec(lens)
    as_of = None if at is None else to_us(at)
    found = led.store.candidates(subject.removesuffix(".*"), as_of, None, spec.lifecycles | LIVE)
    valid_at = to_us(at or led.clock.now())
    return apply_lens(spec, found.rows, lambda agent, subject: 1.0, found.elsewhere, valid_at)[1]


def view(ans: Answer) -> tuple[Any, ...]:
    items = [(i.assertion.id, i.assertion.lifecycle, i.assertion.confidence) for i in ans.items]
    hidden = ans.hidden
    return items, hidden.count, hidden.by_lifecycle, sorted(hidden.ids)


@on_both_backends(sqlite=30, postgresql=10, program=programs, data=st.data())
def test_query_as_of_equals_replay_of_journal_up_to_then(
    program: list[tuple[Any, int]], data: st.DataObject, fresh_location: Fresh, backend: str
) -> None:
    with fresh_ledger(fresh_location, backend) as (led, clock, _):
        Run(led, clock).play(program)
        events = list(led.export())
        times = sorted({e.at for e in events})
        exact = data.draw(st.lists(st.sampled_from(times), min_size=1, max_size=3, unique=True))
        between = data.draw(st.integers(times[0] - 1, times[-1] + 1))
        for t in [*exact, between]:
            prefix = [e for e in events if e.at <= t]
            with tempfile.TemporaryDirectory() as tmp, Ledger.init(Path(tmp) / "r") as replay:
                assert replay.import_events(prefix) == len(prefix)
                for subject in READS:
                    for lens in LENSES:
                        then = led.answer(subject, lens=lens, at=from_us(t))
                        assert view(then) == view(replay.answer(subject, lens=lens))


@on_both_backends(sqlite=25, postgresql=8, program=programs, data=st.data())
def test_rebuild_is_clean_and_repairs_a_tampered_projection(
    program: list[tuple[Any, int]], data: st.DataObject, fresh_location: Fresh, backend: str
) -> None:
    with fresh_ledger(fresh_location, backend) as (led, clock, home):
        Run(led, clock).play(program)
        report = led.rebuild()
        assert report.ok
        assert report.differences == {}
        assert report.events == led.store.head()[0]

        with raw_connection(home) as raw:
            rows = raw.execute("SELECT arow, seq, lifecycle FROM versions").fetchall()
            aid, seq, lifecycle = data.draw(st.sampled_from(rows))
            ident = raw.execute("SELECT id FROM assertions WHERE rowid = ?", (aid,)).fetchone()[0]
            taken = {lc for a, s, lc in rows if (a, s) == (aid, seq)}
            wrong = data.draw(st.sampled_from([lc for lc in Lifecycle if lc not in taken]))
            raw.execute(
                "UPDATE versions SET lifecycle = ? WHERE arow = ? AND seq = ? AND lifecycle = ?",
                (str(wrong), aid, seq, lifecycle),
            )

        damaged = led.rebuild()
        assert not damaged.ok
        assert damaged.differences == {"versions": 2}
        assert not damaged.repaired
        with raw_connection(home) as raw:  # checking alone repairs nothing
            still = "SELECT lifecycle FROM versions WHERE arow = ? AND seq = ? AND lifecycle = ?"
            assert raw.execute(still, (aid, seq, str(wrong))).fetchone() is not None

        repaired = led.rebuild(repair=True)
        assert repaired.repaired
        assert repaired.differences == {"versions": 2}
        assert led.rebuild().ok
        assert lifecycle in [v.lifecycle for v in led.store.versions(ident) if v.seq == seq]
        assert wrong not in [v.lifecycle for v in led.store.versions(ident) if v.seq == seq]


JOURNAL_COLUMNS = ("seq", "at", "actor", "kind", "payload", "hash")
CHARS = "aZ0 .:{}\"'é\\"


@on_both_backends(sqlite=40, postgresql=12, program=programs, data=st.data())
def test_verify_finds_any_altered_journal_byte(
    program: list[tuple[Any, int]], data: st.DataObject, fresh_location: Fresh, backend: str
) -> None:
    with fresh_ledger(fresh_location, backend) as (led, clock, home):
        Run(led, clock).play(program)
        assert led.verify().ok
        n = led.store.head()[0]
        led.close()

        row = data.draw(st.integers(1, n), label="row")
        column = data.draw(st.sampled_from(JOURNAL_COLUMNS), label="column")
        with raw_connection(home) as raw:
            (old,) = raw.execute(f"SELECT {column} FROM journal WHERE seq = ?", (row,)).fetchone()
            expected = row
            if column == "seq":  # move it past either end, never onto another row
                new = data.draw(st.integers(n + 1, n + 1000) | st.integers(-1000, 0))
                seqs = sorted([s for s in range(1, n + 1) if s != row] + [new])
                expected = next(s for i, s in enumerate(seqs, 1) if s != i)
            elif column == "at":
                new = Us(old + data.draw(st.integers(-(10**9), 10**9).filter(bool)))
            elif column == "hash":
                i = data.draw(st.integers(0, len(old) - 1))
                flip = data.draw(st.integers(1, 255))
                new = old[:i] + bytes([old[i] ^ flip]) + old[i + 1 :]
            else:
                i = data.draw(st.integers(0, len(old) - 1))
                char = data.draw(st.sampled_from(CHARS).filter(lambda c: c != old[i]))
                new = old[:i] + char + old[i + 1 :]
            assert new != old
            raw.execute(f"UPDATE journal SET {column} = ? WHERE seq = ?", (new, row))

        with Ledger.open(home) as reopened:
            report = reopened.verify()
        assert not report.ok
        assert report.first_bad_seq == expected


@on_both_backends(sqlite=30, postgresql=10, program=programs, data=st.data())
def test_approved_lens_serves_only_approved_assertions(
    program: list[tuple[Any, int]], data: st.DataObject, fresh_location: Fresh, backend: str
) -> None:
    with fresh_ledger(fresh_location, backend) as (led, clock, _):
        Run(led, clock).play(program)  # every audited read through `approved` is checked too
        times = [e.at for e in led.export()]
        for _ in range(3):
            at = data.draw(st.none() | st.integers(times[0] - 1, times[-1] + 1).map(from_us))
            for subject in READS:
                assert_only_approved(led.answer(subject, lens="approved", at=at))
                for lens in LENSES:
                    assert hidden_as_read(led, subject, lens, at) == hidden_as_named(
                        led, subject, lens, at
                    )
                served = led.query(subject, agent="deploy", lens="approved", at=at)
                assert_only_approved(served)
                record = led.store.query_record(served.query_id or "")
                assert record is not None
                assert {i.lifecycle for i in record.returned} <= {Lifecycle.APPROVED}


@on_both_backends(sqlite=25, postgresql=8, program=programs)
def test_trust_stays_in_bounds_and_no_correction_raises_it(
    program: list[tuple[Any, int]], fresh_location: Fresh, backend: str
) -> None:
    """Whatever happened, every score is in [0, 1]; at the moment of each correction,
    nobody's score on any topic is higher after it than before; a replay agrees."""
    from episteme.ledger.gardener import Gardener
    from episteme.ledger.journal import EventKind
    from episteme.ledger.trust import TrustBook, topic_of, weigh
    from episteme.timeutil import to_us

    with fresh_ledger(fresh_location, backend) as (led, clock, _):
        Run(led, clock).play(program)
        gardener = Gardener(led, batch=7)
        gardener.run_until_caught_up()
        evidence = led.store.trust_evidence(None, None, None)
        for when in (T0, clock.now(), clock.now().add(hours=24 * 365)):
            assert all(0.0 <= s.score <= 1.0 for s in led.trust_scores(at=when))
        pairs = {(e.agent, topic_of(e.subject)) for e in evidence}
        for ev in led.store.events():
            if ev.kind != EventKind.ASSERTION_CORRECTED:
                continue
            for agent, topic in pairs:
                mine = [e for e in evidence if (e.agent, topic_of(e.subject)) == (agent, topic)]
                before = weigh([e for e in mine if e.seq < ev.seq], ev.at, led.policy)[0]
                after = weigh([e for e in mine if e.seq <= ev.seq], ev.at, led.policy)[0]
                assert after <= before + 1e-12, (agent, topic, ev.seq)
        # the running totals that present-time reads use agree with the evidence rows
        # Read one pair at a time, and all at once as a ranked lens reads them: pairs of
        # (agent, subject) below each topic, and one agent with no evidence. All at once,
        # the reads happen up front (one per topic at a past time) and no pair reads again.
        reads = _CountedTrust(led.store)
        book = TrustBook(reads, led.policy, clock)
        below = {(agent, topic): f"{topic}.svc.key" for agent, topic in pairs}
        wanted = [(agent, subject) for (agent, _), subject in below.items()]
        wanted.append(("nobody", "auth.jwt.alg"))
        for when in (None, T0, T0.add(hours=12), clock.now().subtract(hours=1)):
            at_us = to_us(when or clock.now())
            one_by_one = book.at(when)
            singly = {}
            for (agent, topic), subject in below.items():
                rows = [e for e in evidence if (e.agent, topic_of(e.subject)) == (agent, topic)]
                expected = weigh(rows, at_us, led.policy)[0]
                singly[agent, subject] = one_by_one(agent, subject)
                assert singly[agent, subject] == pytest.approx(expected, rel=1e-9)
                assert one_by_one(agent, topic) == singly[agent, subject]
            reads.calls = 0
            together = book.at(when, wanted)
            topics = {topic for _, topic in pairs} | {"auth"}
            assert reads.calls == (1 if when is None else len(topics))
            for (agent, subject), score in singly.items():
                assert together(agent, subject) == score
            assert together("nobody", "auth.jwt.alg") == 0.5
            assert reads.calls == (1 if when is None else len(topics))  # nothing read again
        gardener.replay()
        assert led.store.trust_evidence(None, None, None) == evidence


class _CountedTrust:
    """A store's trust reads, counted (what the batched trust read is measured by)."""

    def __init__(self, store: Any) -> None:
        self.store, self.calls = store, 0

    def trust_totals(self, pairs: Any) -> Any:
        self.calls += 1
        return self.store.trust_totals(pairs)

    def trust_weights(self, agents: Any, topic: str, until: int) -> Any:
        self.calls += 1
        return self.store.trust_weights(agents, topic, until)
