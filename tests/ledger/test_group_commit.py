"""Concurrent writers share commits; a failing write fails alone."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from episteme.errors import Conflict
from episteme.ledger import Ledger
from episteme.ledger.sqlite.store import SQLiteStore
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
    # SQLite: every acknowledged write was synced after its commit, some syncs serving
    # several. PostgreSQL flushes in the commit's round trip instead (its WAL test).
    durability = ledger.store.durability
    assert durability.deferred == isinstance(ledger.store, SQLiteStore)
    if isinstance(ledger.store, SQLiteStore):
        assert durability.durable == durability.committed
        assert 0 < durability.flushes <= durability.committed


def test_sqlite_commits_under_the_lock_without_sync_and_syncs_the_wal_after(
    tmp_path: Path,
) -> None:
    # The writer's commit skips the sync (synchronous=NORMAL); the store fdatasyncs the
    # live WAL file before acknowledging. A truncated WAL (same file) and a replaced
    # WAL (new file: another program removed it) are both synced where they are.
    path = tmp_path / "ledger.db"
    Ledger.init(tmp_path).close()
    store = SQLiteStore(path)
    with Ledger(store) as led:
        assert store._wconn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        led.assert_one(subject="svc.a", value=1, agent="a")
        assert store.durability.durable == store.durability.committed > 0
        wal = Path(f"{path}-wal")
        assert os.fstat(store._wal).st_ino == wal.stat().st_ino
        with sqlite3.connect(path) as other:
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        led.assert_one(subject="svc.a", value=2, agent="a")
        assert os.fstat(store._wal).st_ino == wal.stat().st_ino
        synced = store.durability.flushes
        moved = tmp_path / "old-wal"
        with sqlite3.connect(path) as other:
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        wal.rename(moved)  # as if the file had been deleted and made again
        wal.write_bytes(b"")
        store._sync_wal()
        assert os.fstat(store._wal).st_ino == wal.stat().st_ino
        assert store.durability.flushes == synced
        wal.unlink()
        moved.rename(wal)
        store._sync_wal()
        assert os.fstat(store._wal).st_ino == wal.stat().st_ino
        assert led.verify().ok

    full = SQLiteStore(path, defer_flush=False)
    with Ledger(full) as led:
        assert full._wconn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert not full.durability.deferred
        led.assert_one(subject="svc.a", value=3, agent="a")
        assert full.durability.flushes == 0
        assert led.verify().ok
