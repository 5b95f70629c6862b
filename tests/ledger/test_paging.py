"""Walking a list page by page: `before` (a journal position) and, for notifications,
`after` (a key) get past any number of items recorded at one time, where `until`
cannot. Both backends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from episteme.errors import InvalidInput
from episteme.ledger import Ledger
from episteme.ledger.gardener import Gardener

N = 7  # items per list, all at one time (the clock does not move)
PAGE = 3


def walk(read: Callable[..., Sequence[Any]], cursor: str, field: str) -> list[Any]:
    """Every page of `read`, each asked for with the last item's `field` as `cursor`."""
    seen: list[Any] = []
    page = read(limit=PAGE)
    while page:
        seen += page
        assert len(seen) <= 2 * N, "the walk does not end"
        page = read(limit=PAGE, **{cursor: getattr(page[-1], field)})
    return seen


def fill(ledger: Ledger) -> None:
    ledger.add_constraint(scope="deploy", reason="no", by="oncall", forbid=["ES256"])
    for n in range(N):
        a = ledger.assert_one(subject=f"svc.s{n}", value=n, agent="bot", lifecycle="approved")
        answer = ledger.query(f"svc.s{n}", agent="reader")
        ledger.query("other", agent="elsewhere")
        ledger.decide(f"deploy {n}", agent="reader", query_ids=[answer.query_id or ""])
        ledger.check(f"use ES256 {n}", ["deploy"], agent="reader")
        ledger.deny(f"bot-{n}", None, "assert", "POST /v1/assertions", "no")
        ledger.correct(a.id, by="oncall", reason="wrong", value=n + 1)
    Gardener(ledger).run_until_caught_up()


def test_every_list_walks_past_a_time_many_items_share(ledger: Ledger) -> None:
    fill(ledger)
    lists: dict[str, Callable[..., Sequence[Any]]] = {
        "audit": ledger.audit,
        "audit by agent": lambda **kw: ledger.audit(agent="reader", **kw),
        "audit of a subject": lambda **kw: ledger.audit(subject="svc", **kw),
        "served": lambda until=None, **kw: ledger.served("svc", at=until, **kw),
        "decisions": ledger.decisions,
        "checks": ledger.checks,
        "denials": ledger.denials,
    }
    for name, read in lists.items():
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
