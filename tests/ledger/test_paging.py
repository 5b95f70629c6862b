"""Walking a list page by page: `before` (a journal position) and, for notifications,
`after` (a key) get past any number of items recorded at one time, where `until`
cannot. Both backends."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from whenever import TimeDelta

from episteme.errors import InvalidInput
from episteme.ledger import Ledger
from episteme.ledger.gardener import Gardener
from episteme.timeutil import ManualClock

N = 7  # items per list, all at one time (the clock does not move)
PAGE = 3


def walk(
    read: Callable[..., Sequence[Any]], cursor: str, field: str, size: int = PAGE
) -> list[Any]:
    """Every page of `read`, each asked for with the last item's `field` as `cursor`."""
    seen: list[Any] = []
    page = read(limit=size)
    while page:
        seen += page
        assert len(seen) <= 3 * N, "the walk does not end"
        page = read(limit=size, **{cursor: getattr(page[-1], field)})
    return seen


def fill(ledger: Ledger, tick: Callable[[], object] = lambda: None) -> None:
    """N of each list's items; `tick` runs before each (the clock stands still unless it
    moves it)."""
    ledger.add_constraint(scope="deploy", reason="no", by="oncall", forbid=["ES256"])
    for n in range(N):
        tick()
        a = ledger.assert_one(subject=f"svc.s{n}", value=n, agent="bot", lifecycle="approved")
        tick()
        answer = ledger.query(f"svc.s{n}", agent="reader")
        tick()
        ledger.query("other", agent="elsewhere")
        tick()
        ledger.decide(f"deploy {n}", agent="reader", query_ids=[answer.query_id or ""])
        tick()
        ledger.check(f"use ES256 {n}", ["deploy"], agent="reader")
        tick()
        ledger.deny(f"bot-{n}", None, "assert", "POST /v1/assertions", "no")
        tick()
        ledger.correct(a.id, by="oncall", reason="wrong", value=n + 1)
    Gardener(ledger).run_until_caught_up()


def _lists(ledger: Ledger) -> dict[str, Callable[..., Sequence[Any]]]:
    return {
        "audit": ledger.audit,
        "audit by agent": lambda **kw: ledger.audit(agent="reader", **kw),
        "audit of a subject": lambda **kw: ledger.audit(subject="svc", **kw),
        "served": lambda until=None, **kw: ledger.served("svc", at=until, **kw),
        "decisions": ledger.decisions,
        "decisions by agent": lambda **kw: ledger.decisions(agent="reader", **kw),
        "checks": ledger.checks,
        "checks by agent": lambda **kw: ledger.checks(agent="reader", **kw),
        "denials": ledger.denials,
    }


def test_every_list_walks_past_a_time_many_items_share(ledger: Ledger) -> None:
    fill(ledger)
    for name, read in _lists(ledger).items():
        everything = read(limit=1000)
        assert len({item.at for item in everything}) == 1, name  # one time for them all
        walked = walk(read, "before", "seq")
        assert [i.seq for i in walked] == [i.seq for i in everything], name
        # `until` at the oldest item's time, the way the docs once advised, stalls
        stuck = read(limit=PAGE, until=everything[0].at)
        assert stuck == read(limit=PAGE), name
    assert len(ledger.audit(limit=1000)) == 2 * N
    assert len(ledger.served("svc", limit=1000)) == N

    notes = ledger.notifications(limit=1000)
    assert len(notes) >= N
    assert len({n.at for n in notes}) == 1
    assert [n.key for n in walk(ledger.notifications, "after", "key")] == [n.key for n in notes]
    corrections = ledger.notifications(type="correction", limit=1000)
    walked = walk(lambda **kw: ledger.notifications(type="correction", **kw), "after", "key")
    assert [n.key for n in walked] == [n.key for n in corrections]
    assert len(walked) == N


def test_pages_on_a_moving_clock_are_the_list_in_journal_order(
    ledger: Ledger, clock: ManualClock
) -> None:
    # Times that move by a microsecond now and then: most page edges fall between two
    # items of one time, some between two times. A page's time bound (the time of the
    # event just before its position) must keep every older item of its list.
    steps = itertools.cycle([0, 1, 0, 0, 1, 1, 0])
    fill(ledger, lambda: clock.advance(TimeDelta(microseconds=next(steps))))
    for name, read in _lists(ledger).items():
        everything = read(limit=1000)
        assert len({item.at for item in everything}) > 1, name
        assert [i.seq for i in everything] == sorted((i.seq for i in everything), reverse=True)
        for page in (1, 2, 3):
            walked = walk(read, "before", "seq", page)
            assert [i.seq for i in walked] == [i.seq for i in everything], (name, page)
    notes = ledger.notifications(limit=1000)
    for page in (1, 2, 3):
        assert walk(ledger.notifications, "after", "key", page) == notes


def test_a_key_that_no_notification_can_have_is_refused(ledger: Ledger) -> None:
    for key in ("", "x" * 1025, "a\x00b"):
        with pytest.raises(InvalidInput, match="after must be a notification's key") as exc:
            ledger.notifications(after=key)
        assert exc.value.field == "after"


def test_a_position_is_any_seq_and_filters_still_hold(ledger: Ledger) -> None:
    fill(ledger)
    every = ledger.audit(limit=1000)
    middle = every[N].seq
    assert [q.seq for q in ledger.audit(before=middle, limit=1000)] == [
        q.seq for q in every if q.seq < middle
    ]
    # a position between two items, or past the newest, is as good as an item's own
    assert ledger.audit(before=middle + 1, limit=1) == [every[N]]
    assert len(ledger.decisions(before=10**12, limit=1000)) == N
    assert ledger.audit(agent="elsewhere", before=middle, limit=1000) == [
        q for q in every if q.seq < middle and q.agent == "elsewhere"
    ]
    assert ledger.checks(before=1) == []


@pytest.mark.parametrize("before", [0, -1, 2**63])
def test_a_position_out_of_range_is_refused(ledger: Ledger, before: int) -> None:
    for read in (ledger.audit, ledger.decisions, ledger.checks, ledger.denials):
        with pytest.raises(InvalidInput, match="before must be a journal position") as exc:
            read(before=before)
        assert exc.value.field == "before"
    with pytest.raises(InvalidInput, match="before must be"):
        ledger.served("svc", before=before)


def test_an_unknown_notification_key_is_refused(ledger: Ledger) -> None:
    fill(ledger)
    with pytest.raises(InvalidInput, match="no notification has the key 'nope'") as exc:
        ledger.notifications(after="nope")
    assert exc.value.field == "after"
