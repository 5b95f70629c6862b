"""SQLite and PostgreSQL are one ledger: the same program gives the same journal and
every read answers alike (issue 5: the same semantics for every operation), but for the
measured latency of each audited read.

Each example plays one random program (the operations of `test_properties`) on a fresh
ledger of each backend, on clocks that move alike. Ids are content ids and every time
comes from the clock, so nothing else may differ: not an event, not a refusal,
not an answer, not an error message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from whenever import TimeDelta

from episteme.errors import EpistemeError
from episteme.ledger import BUILTIN, Ledger, LensSpec, Lifecycle
from episteme.ledger.copy import copy_ledger
from episteme.ledger.gardener import Gardener
from episteme.ledger.journal import Event, EventKind
from episteme.ledger.model import dump, parse_assertion
from episteme.ledger.webhooks import WebhookSpec, deliveries
from episteme.timeutil import from_us
from tests.ledger.test_properties import (
    READS,
    SUBJECTS,
    T0,
    Fresh,
    Run,
    assertion,
    fresh_ledger,
    op,
    ref,
    step_us,
)

_SERVED = EventKind.QUERY_SERVED
_LATENCY = re.compile(r'"latency_us":\d+,')
SEARCHES = ("RS256", "ES256", "svc", "alice a", "!!", "vault-prod", "é")

# values whose storage differs between the engines unless the store keeps them exactly:
# jsonb would turn 1e16 into an integer, reorder keys and drop -0.0's sign
VALUES = ("RS256", "ES256", 1e16, -0.0, 0.1, 2**63 - 1, True, None, "é", {"b": 1, "a": [1]})
HOUR = 3_600_000_000
wide_assertion = assertion.map(dict) | st.fixed_dictionaries(
    {
        "subject": st.sampled_from(SUBJECTS),
        "value": st.sampled_from(VALUES),
        "agent": st.sampled_from(("alice", "bob")),
        "lifecycle": st.sampled_from(("proposed", "approved")),
        "source": st.none() | st.sampled_from(("vault://prod/jwt", "https://example.org/É")),
        "evidence": st.none() | st.sampled_from(("RS256 in vault-prod", "a, b; c!")),
        "valid_from": st.none() | st.integers(-2, 2).map(lambda h: T0.add(hours=h)),
        "valid_to": st.none() | st.integers(-1, 3).map(lambda h: T0.add(hours=h)),
    }
)
wide_op = st.one_of(
    op,
    st.tuples(st.just("add"), st.lists(st.tuples(wide_assertion, st.none() | ref), max_size=3)),
    st.tuples(st.just("lens"), st.sampled_from((0.0, 0.5, 0.95)), st.booleans()),
    st.tuples(
        st.just("constrain"),
        st.sampled_from(("svc", "svc.a", "-bad", None)),
        st.booleans(),
        st.sampled_from(((), ("deploy",), ("Deploy", "npm"), ("bad tag",))),
    ),
    st.tuples(
        st.just("check"),
        st.sampled_from(("use ES256", "rotate RS256", " ")),
        st.booleans(),
        st.sampled_from(((), ("deploy",), ("npm", "terraform"))),
    ),
    st.tuples(st.just("search"), st.sampled_from(SEARCHES), st.sampled_from(("all", "custom"))),
)
wide_programs = st.lists(st.tuples(wide_op, step_us), min_size=6, max_size=30).map(
    lambda ops: [(("add", [({"subject": "svc.a", "value": 0, "agent": "alice"}, None)]), 0), *ops]
)


class WideRun(Run):
    """`Run`, and custom lenses, constraints, checks and searches."""

    def apply(self, name: str, *args: Any) -> None:
        led = self.ledger
        if name == "add":  # a valid time that ends before it starts is refused here
            for fields, _ in args[0]:
                parse_assertion(fields)
            super().apply(name, *args)
        elif name == "lens":
            confidence, expired = args
            spec = LensSpec(
                lifecycles=frozenset({Lifecycle.APPROVED, Lifecycle.PROPOSED}),
                min_confidence=confidence,
                include_expired=expired,
                pick="newest",
            )
            led.define_lens("custom", spec, by="oncall")
        elif name == "constrain":
            scope, pattern, tags = args
            terms = {"patterns": ["ES(256|384)"]} if pattern else {"forbid": ["ES256"]}
            led.add_constraint(
                scope=scope, tags=tags, reason="prod verifies RS256", by="oncall", **terms
            )
        elif name == "check":
            plan, scoped, tags = args
            led.check(plan, ["svc.a"] if scoped else [], agent="deploy", tags=tags)
        elif name == "search":
            text, lens = args
            self.query_ids.append(
                str(led.query(None, agent="deploy", lens=lens, text=text).query_id)
            )
        else:
            super().apply(name, *args)


def outcome(read: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """What a read gave: its JSON form, or the refusal (kind, message, field)."""
    try:
        got = read(*args, **kwargs)
    except EpistemeError as exc:
        return ("refused", type(exc).__name__, exc.message, exc.field)
    return timeless(dump(got))


def timeless(data: Any) -> Any:
    """`data` without the latencies of audited reads, which no two runs share."""
    if isinstance(data, dict):
        return {k: timeless(v) for k, v in data.items() if k != "latency_us"}
    if isinstance(data, list):
        return [timeless(v) for v in data]
    return data


def events(journal: Iterable[Event]) -> list[tuple[Any, ...]]:
    """The journal, but for how long each audited read took, which no two runs share
    (and so for the hashes that cover it)."""
    return [
        (
            e.seq,
            e.at,
            e.actor,
            e.kind,
            _LATENCY.sub("", e.payload) if e.kind == _SERVED else e.payload,
        )
        for e in journal
    ]


def reads(led: Ledger, run: Run, times: list[int]) -> Iterator[tuple[str, Any]]:
    """Every read of the on-call questions, named, over everything the program made."""
    for t in [None, *times]:
        at = None if t is None else from_us(t)
        for subject in READS:
            for lens in BUILTIN:
                yield (
                    f"answer {subject} {lens} {t}",
                    outcome(led.answer, subject, lens=lens, at=at),
                )
        for text in SEARCHES:
            yield f"search {text} {t}", outcome(led.answer, None, lens="all", text=text, at=at)
    first, last = from_us(min(times)), from_us(max(times))
    for prefix in (None, "svc", "svc.a", "svc.c"):
        before = first.subtract(microseconds=1)
        yield f"diff {prefix}", outcome(led.diff, prefix, since=before, until=last)
        yield (
            f"diff {prefix} newest 3",
            outcome(led.diff, prefix, since=first, until=last, limit=3),
        )
    for target in [*SUBJECTS, *dict.fromkeys(run.ids)]:
        yield f"blame {target}", outcome(led.blame, target)
    for target in dict.fromkeys(run.ids):
        yield f"impact {target}", outcome(led.impact, target, recent=5)
    for target in run.query_ids:
        yield f"trace {target}", outcome(led.trace, target)
    for d in led.decisions(limit=1000):
        yield f"trace {d.id}", outcome(led.trace, d.id)
    for subject in SUBJECTS:
        yield f"served {subject}", outcome(led.served, subject, limit=1000)
        yield f"served {subject} at", outcome(led.served, subject, at=last, limit=2)
    yield "audit", outcome(led.audit, limit=1000)
    yield "audit svc.a", outcome(led.audit, subject="svc.a", since=first, limit=1000)
    yield "decisions", outcome(led.decisions, agent="deploy", limit=1000)
    for name in ("e1", "e2", "e3"):
        yield f"epoch {name}", outcome(led.epoch, name)
    yield "constraints", outcome(led.constraints)
    yield "constraints of deploy or on svc.a", outcome(led.constraints, "svc.a", ["deploy"])
    yield "checks", outcome(led.checks, limit=1000)
    yield "lenses", outcome(led.lenses)
    yield "gardener", outcome(Gardener(led).run_until_caught_up)
    yield "trust", outcome(led.trust_scores)
    yield "conflicts", outcome(led.conflicts, include_resolved=True)
    yield "notifications", outcome(led.notifications, limit=1000)
    report = led.verify()  # its head is a hash over the latencies too
    yield "verify", (report.ok, report.events, report.first_bad_seq, report.problem)


@settings(max_examples=20, deadline=None)
@given(program=wide_programs, data=st.data())
def test_the_same_program_gives_the_same_journal_and_answers_on_both_backends(
    program: list[tuple[Any, int]], data: st.DataObject, fresh_location: Fresh
) -> None:
    with ExitStack() as stack:
        runs, places = [], []
        for backend in ("sqlite", "postgresql"):
            led, clock, where = stack.enter_context(fresh_ledger(fresh_location, backend))
            runs.append((led, WideRun(led, clock).play(program)))
            places.append(where)
        lite_where = places[0]
        (lite, lite_run), (pg, pg_run) = runs

        journal = lite.export()
        assert events(pg.export()) == events(journal)
        # and the SQLite journal copied to PostgreSQL is the same journal, hashes and all,
        # and gives the same answers
        where = stack.enter_context(fresh_location("postgresql"))
        copy_ledger(lite_where, where)
        copied = stack.enter_context(Ledger.open(where, clock=lite_run.clock))
        assert list(copied.export()) == list(lite.export())
        assert [outcome(copied.answer, s, lens=n) for s in READS for n in BUILTIN] == [
            outcome(lite.answer, s, lens=n) for s in READS for n in BUILTIN
        ]
        assert (pg_run.ids, pg_run.query_ids, pg_run.refused) == (
            lite_run.ids,
            lite_run.query_ids,
            lite_run.refused,
        )

        at = sorted({e.at for e in lite.export()})
        times = sorted({*data.draw(st.lists(st.sampled_from(at), max_size=3)), at[0], at[-1]})
        times.append(data.draw(st.integers(at[0] - 1, at[-1] + 1)))
        for (what, mine), (same, theirs) in zip(
            reads(lite, lite_run, times), reads(pg, pg_run, times), strict=True
        ):
            assert what == same
            assert theirs == mine, what
        # and the answers after a minute more, which times nothing in the journal
        for _, run in runs:
            run.clock.advance(TimeDelta(minutes=1))
        assert [outcome(pg.answer, s, lens="consensus") for s in READS] == [
            outcome(lite.answer, s, lens="consensus") for s in READS
        ]


def test_what_the_gardener_and_checks_keep_reads_back_as_written_on_both_backends(
    fresh_location: Fresh,
) -> None:
    # Notifications, webhook jobs, check violations and specs are JSON the store keeps
    # beside the journal: a wrong value of 1e16 or -0.0 must read back as itself (not
    # 10000000000000000 or 0.0), keys in the order written, on either backend.
    value = {"z": -0.0, "n": 1e16, "a": [1.0, -0.0, 2**63 - 1]}
    texts = []
    for backend in ("sqlite", "postgresql"):
        with fresh_ledger(fresh_location, backend) as (led, clock, _):
            led.set_webhook(
                WebhookSpec(name="pager", url="http://127.0.0.1:9/", timeout_s=2.5), by="oncall"
            )
            led.define_lens("custom", LensSpec(min_confidence=0.25, pick="newest"), by="oncall")
            bad = led.assert_one(
                subject="svc.a.jwt", value=value, agent="alice", lifecycle="approved"
            )
            led.assert_one(subject="svc.a.jwt", value=-0.0, agent="bob", lifecycle="approved")
            clock.advance(TimeDelta(seconds=1))
            led.correct(bad.id, by="oncall", reason="prod verifies RS256", value=1e16, forbid=True)
            led.add_constraint(scope="svc", reason="no ES", by="oncall", forbid=["ES256", "ES384"])
            led.check("use ES256 on svc.a", ["svc.a"], agent="deploy")
            Gardener(led).run_until_caught_up()
            read = {
                "notifications": dump(led.notifications(limit=100)),
                "deliveries": dump(deliveries(led.store)),
                "checks": dump(led.checks(limit=100)),
                "lenses": dump(led.lenses()),
                "webhooks": dump(led.webhooks()),
                "constraints": dump(led.constraints()),
            }
            texts.append(orjson.dumps(timeless(read)).decode())
    lite, pg = texts
    assert '"wrong_value":{"a":[1.0,-0.0,9223372036854775807],"n":1e+16,"z":-0.0}' in lite
    assert pg == lite
