"""Concurrent writers share commits; a failing write fails alone."""

from __future__ import annotations

import threading

from episteme.errors import Conflict
from episteme.ledger import Ledger
from episteme.timeutil import ManualClock


def test_concurrent_writes_commit_in_groups_and_each_gets_its_own_outcome(
    ledger: Ledger, clock: ManualClock
) -> None:
    errors: list[Exception] = []
    ids: list[str] = []
    lock = threading.Lock()

    def agent(n: int) -> None:
        for i in range(25):
            try:
                if i == 7:  # a write refused inside the store, in the middle of a group:
                    # the same content, agent and (fixed clock) time as this agent's first
                    ledger.assert_one(subject=f"svc{n}.k0", value=0, agent=f"agent-{n}")
                a = ledger.assert_one(subject=f"svc{n}.k{i}", value=i, agent=f"agent-{n}")
                q = ledger.query(f"svc{n}", agent=f"agent-{n}", lens="latest")
                assert q.items
                assert all(it.assertion.agent == f"agent-{n}" for it in q.items)
                with lock:
                    ids.append(a.id)
            except Conflict as exc:
                with lock:
                    errors.append(exc)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 8  # each refused write failed, alone
    assert all("already recorded" in e.message for e in errors)
    assert len(ids) == 8 * 24
    assert ledger.verify().ok
    assert ledger.store.head()[0] == 8 * 24 * 2
    assert ledger.rebuild().ok
