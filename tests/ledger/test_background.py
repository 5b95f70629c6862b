"""Leadership and the job queue, on both stores (SQLite file locks, PostgreSQL advisory
locks and SKIP LOCKED)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from episteme.errors import NotFound
from episteme.ledger import Ledger
from episteme.ledger.background import Leader
from episteme.ledger.store import open_store

SECOND = 1_000_000
T = 1_763_715_600_000_000  # a fixed "now" in microseconds


def test_one_process_leads_and_the_next_takes_over_on_release(
    ledger: Ledger, location: str | Path
) -> None:
    other_store = open_store(location)
    try:
        mine = ledger.store.leadership("background")
        theirs = other_store.leadership("background")
        assert mine.acquire()
        assert not theirs.acquire()
        assert mine.acquire()  # still ours
        assert other_store.leadership("gardener").acquire()  # another name is another lock
        mine.release()
        assert theirs.acquire()
        assert not mine.acquire()
        theirs.release()
    finally:
        other_store.close()


def test_a_leader_thread_reports_changes(ledger: Ledger, location: str | Path) -> None:
    changes: list[bool] = []
    gained = threading.Event()

    def seen(leading: bool) -> None:
        changes.append(leading)
        gained.set()

    leader = Leader(ledger.store.leadership("background"), interval=0.05, on_change=seen).start()
    try:
        assert gained.wait(5)
        assert leader.state() == "leading"
    finally:
        leader.stop()
    assert changes == [True, False]
    assert leader.state() == "stopped"
    assert ledger.store.leadership("background").acquire()  # stop released it


def test_jobs_are_leased_in_order_and_settled_once(ledger: Ledger) -> None:
    store = ledger.store
    first = store.enqueue_job("mail", {"to": "oncall"}, T)
    second = store.enqueue_job("mail", {"to": "sre"}, T + 1)
    store.enqueue_job("other", {}, T)
    later = store.enqueue_job("mail", {"to": "later"}, T, run_after_us=T + 60 * SECOND)

    job = store.lease_job("mail", "w1", T + 10, lease_us=30 * SECOND)
    assert job is not None
    assert (job.id, job.payload, job.attempts) == (first, {"to": "oncall"}, 1)
    nxt = store.lease_job("mail", "w2", T + 10, lease_us=30 * SECOND)
    assert nxt is not None
    assert nxt.id == second
    assert store.lease_job("mail", "w3", T + 10, lease_us=30 * SECOND) is None  # `later` waits

    with pytest.raises(NotFound, match="not leased to w2"):
        store.complete_job(first, "w2", T + 20)
    store.complete_job(first, "w1", T + 20)
    with pytest.raises(NotFound):
        store.complete_job(first, "w1", T + 21)  # done is done

    store.fail_job(second, "w2", T + 20, "smtp timeout", retry_in_us=5 * SECOND)
    assert store.lease_job("mail", "w3", T + 21, lease_us=SECOND) is None
    again = store.lease_job("mail", "w3", T + 6 * SECOND, lease_us=SECOND)
    assert again is not None
    assert (again.id, again.attempts) == (second, 2)
    store.fail_job(second, "w3", T + 6 * SECOND, "bounced", retry_in_us=None)  # for good

    # a lease that runs out frees the job; the old holder can no longer settle it
    waiting = store.lease_job("mail", "w4", T + 61 * SECOND, lease_us=SECOND)
    assert waiting is not None
    assert waiting.id == later
    taken = store.lease_job("mail", "w5", T + 63 * SECOND, lease_us=SECOND)
    assert taken is not None
    assert (taken.id, taken.attempts) == (later, 2)
    with pytest.raises(NotFound):
        store.complete_job(later, "w4", T + 63 * SECOND)
    store.complete_job(later, "w5", T + 63 * SECOND)
    assert store.lease_job("mail", "w6", T + 10**9, lease_us=SECOND) is None


def test_concurrent_workers_lease_each_job_exactly_once(
    ledger: Ledger, location: str | Path
) -> None:
    jobs = {ledger.store.enqueue_job("work", {"n": n}, T) for n in range(60)}
    stores = [ledger.store, open_store(location), open_store(location)]
    got: list[list[int]] = [[] for _ in range(6)]

    def work(i: int) -> None:
        store = stores[i % len(stores)]
        while (job := store.lease_job("work", f"w{i}", T + 1, lease_us=60 * SECOND)) is not None:
            got[i].append(job.id)
            store.complete_job(job.id, f"w{i}", T + 2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for s in stores[1:]:
            s.close()
    leased = [j for g in got for j in g]
    assert sorted(leased) == sorted(jobs)  # every job once, none twice
