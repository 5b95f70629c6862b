"""Concurrent writers share commits; a failing write fails alone."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from episteme.errors import Conflict, StoreUnavailable
from episteme.ledger import AssertionInput, Ledger
from episteme.ledger.core import record
from episteme.ledger.journal import Draft, EventKind
from episteme.ledger.sql.base import SQLStore, _Pending
from episteme.ledger.sqlite import store as sqlite_store
from episteme.ledger.sqlite.store import SQLiteStore
from episteme.ledger.store import BuildFn, StoreReader
from episteme.timeutil import ManualClock, to_us


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


def test_sqlite_wal_starts_over_under_a_steady_stream_of_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once the WAL holds WAL_RESTART_FRAMES pages, the checkpointer copies what came in
    # during its round with writers held off, so that the next write starts the WAL
    # from its beginning. Without that step a commit always lands during the copy and
    # the file grows by every commit's pages: about 3x from 1,000 writes to 3,000. Here
    # the bound is lowered from 256 MiB to 8 MiB so that 3,000 writes cross it often.
    monkeypatch.setattr(sqlite_store, "WAL_RESTART_FRAMES", 2_000)
    wal = tmp_path / "ledger.db-wal"
    sizes: dict[int, int] = {}
    with Ledger.init(tmp_path) as led:
        for i in range(1, 3001):
            led.assert_one(subject=f"svc.s{i % 50}.port", value=i, agent="a")
            if i in (1000, 3000):
                sizes[i] = wal.stat().st_size
        assert led.store.head()[0] == 3000
    assert sizes[3000] < 2 * sizes[1000], sizes
    with Ledger.open(tmp_path) as led:  # everything acknowledged is there, in order
        assert led.store.head()[0] == 3000
        assert led.verify().ok


def _added(subject: str, value: int) -> BuildFn:
    """A write of one proposed assertion, built as `Ledger.add` builds it (without its
    duplicate check, so that the database is the one to refuse a repeated id)."""

    def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
        inp = AssertionInput(subject=subject, value=value, agent="grouped")
        payload = {"assertions": [record(inp, "grouped", [], at)], "superseded": []}
        return [Draft(EventKind.ASSERTIONS_ADDED, "grouped", payload)]

    return build


def _refused(r: StoreReader, at: int, seq: int) -> list[Draft]:
    raise Conflict("refused by its build")


def test_a_group_of_writes_commits_together_and_a_failing_one_fails_alone(
    ledger: Ledger, clock: ManualClock
) -> None:
    # The group is formed by hand, as the writer lock's holder forms it from the queue.
    # Every write carries the same time, so a repeated write repeats an assertion id: the
    # database refuses it (a unique violation), not the build.
    store = ledger.store
    assert isinstance(store, SQLStore)
    now = to_us(clock.now())
    good = [_Pending(_added(f"svc.g{i}", i), now) for i in range(4)]
    store._commit_group(good)
    assert [p.error for p in good] == [None] * 4
    assert [len(p.events) for p in good] == [1, 1, 1, 1]
    seqs = [p.events[0].seq for p in good]
    assert seqs == list(range(seqs[0], seqs[0] + 4))  # one chain, in queue order
    assert store.regrouped == 0  # (on PostgreSQL: one pipeline, no write run twice)

    mixed = [
        _Pending(_added("svc.m0", 0), now),
        _Pending(_added("svc.g1", 1), now),  # repeats good[1]: the database refuses it
        _Pending(_added("svc.m2", 2), now),
        _Pending(_refused, now),
        _Pending(_added("svc.m4", 4), now),
    ]
    store._commit_group(mixed)
    assert mixed[1].error is not None
    assert mixed[1].events == []
    assert isinstance(mixed[3].error, Conflict)
    assert mixed[3].events == []
    kept = [mixed[i] for i in (0, 2, 4)]
    assert all(p.error is None and len(p.events) == 1 for p in kept)
    assert [p.events[0].seq for p in kept] == [seqs[-1] + 1, seqs[-1] + 2, seqs[-1] + 3]
    assert store.regrouped == (1 if store.PIPELINED else 0)
    assert [a.value for a in store.current_on_subject("svc.g1")] == [1]
    assert store.current_on_subject("svc.m4")[0].value == 4
    assert ledger.verify().ok
    assert ledger.store.head()[0] == seqs[-1] + 3
    assert ledger.rebuild().ok


def _open_files(path: Path) -> int:
    """How many of this process's descriptors point at `path` (Linux /proc)."""
    fd_dir = Path("/proc/self/fd")
    found = 0
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            found += os.readlink(fd) == str(path)
    return found


def _settles(count: Callable[[], int], expected: int, within: float = 5.0) -> int:
    """`count()` once it equals `expected`, or as it is after `within` seconds."""
    deadline = time.monotonic() + within
    while (n := count()) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return n


def test_sqlite_readers_close_with_their_threads_and_with_the_store(home: Path) -> None:
    # A server's worker threads come and go (an idle one ends after seconds): each opens
    # a reader, which used to stay open, with its page cache, until the store closed.
    db = home / "ledger.db"
    with Ledger.init(home) as ledger:
        ledger.add([AssertionInput(subject=f"svc.k{i}", value=i, agent="a") for i in range(20)])
        ledger.answer("svc", lens="all")  # this thread's reader

        def read_in_a_thread() -> None:
            t = threading.Thread(target=lambda: ledger.answer("svc", lens="all"))
            t.start()
            t.join()

        # SQLite keeps the descriptor of a closed connection for the next one to reuse
        # (closing it would drop the process's locks on the file): count from there
        read_in_a_thread()
        before = _settles(lambda: _open_files(db), 5)
        for _ in range(25):
            read_in_a_thread()
        # a thread's locals are cleared just after join() returns: wait for the last one
        assert _settles(lambda: _open_files(db), before) == before  # not before + 25

        started, release = threading.Event(), threading.Event()
        ended: list[BaseException] = []

        def idle() -> None:  # a live thread that read once and waits
            ledger.answer("svc", lens="all")
            started.set()
            release.wait(10)
            try:
                ledger.answer("svc", lens="all")  # its next read closes its reader
            except BaseException as exc:
                ended.append(exc)

        t = threading.Thread(target=idle)
        t.start()
        assert started.wait(10)
        ledger.close()  # closes this thread's reader; the idle thread's is left to it
        assert _open_files(db) >= 1
        release.set()
        t.join()
    assert [type(e) for e in ended] == [StoreUnavailable]
    assert "was closed" in str(ended[0])
    assert _settles(lambda: _open_files(db), 0) == 0


def _write_until_closed(ledger: Ledger, n: int, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        try:
            ledger.add([AssertionInput(subject=f"w{n}.k{i}", value="x" * 50_000, agent="a")])
        except StoreUnavailable:
            return
        i += 1


def test_closing_a_sqlite_store_under_writes_leaves_no_checkpointer_behind(tmp_path: Path) -> None:
    # A write under way when close() ran used to start a new checkpointer after close()
    # had stopped the old one: its thread and descriptors outlived the store.
    def checkpointers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "episteme-checkpoint"}

    before = checkpointers()  # of ledgers that other tests left open
    for cycle in range(15):
        home = tmp_path / f"home{cycle}"
        Ledger.init(home).close()
        ledger = Ledger.open(home)
        stop = threading.Event()
        writers = [
            threading.Thread(target=_write_until_closed, args=(ledger, n, stop)) for n in range(2)
        ]
        for w in writers:
            w.start()
        time.sleep(0.05)
        ledger.close()
        stop.set()
        for w in writers:
            w.join()
    assert checkpointers() - before == set()
    open_here = [fd for fd in Path("/proc/self/fd").iterdir() if str(tmp_path) in _readlink(fd)]
    assert open_here == []


def _readlink(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:  # closed since the listing
        return ""


def test_a_write_waits_for_the_writer_lock_no_longer_than_its_own_limit(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write queued behind a group that was waiting for another process's lock used to
    # wait for that group's limit and then for its own, in full: 60 s where 30 s was said.
    from episteme.ledger.sql import base

    monkeypatch.setattr(base, "WRITE_WAIT_S", 2.0, raising=False)
    outcomes: dict[str, tuple[float, BaseException | None]] = {}

    def write(ledger: Ledger, name: str) -> None:
        began = time.monotonic()
        try:
            ledger.assert_one(subject=f"svc.{name}", value=1, agent="a")
            outcomes[name] = (time.monotonic() - began, None)
        except BaseException as exc:
            outcomes[name] = (time.monotonic() - began, exc)

    with Ledger.init(home) as ledger:
        held = os.open(f"{ledger.store.path}-lock", os.O_RDWR)  # type: ignore[attr-defined]
        fcntl.flock(held, fcntl.LOCK_EX)  # another process's writer, stuck
        try:
            first = threading.Thread(target=write, args=(ledger, "first"))
            first.start()
            time.sleep(1.0)
            second = threading.Thread(target=write, args=(ledger, "second"))
            second.start()
            first.join(40)
            second.join(40)
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
            os.close(held)
        for name in ("first", "second"):
            waited, error = outcomes[name]
            assert isinstance(error, StoreUnavailable), (name, error)
            assert "locked by another writer" in error.message or "ahead of it" in error.message
            assert waited < 10, (name, waited)  # its own 2 s, not 30 s (or 59) as before
        ledger.assert_one(subject="svc.after", value=1, agent="a")  # the lock is free again
        assert ledger.verify().ok


def test_a_write_behind_a_long_one_gives_up_unrecorded(
    ledger: Ledger, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It leaves the queue as it gives up, so no later group runs it after its caller was
    # told it failed.
    from episteme.ledger.sql import base

    monkeypatch.setattr(base, "WRITE_WAIT_S", 1.0)
    store = ledger.store
    assert isinstance(store, SQLStore)
    now = to_us(clock.now())
    slow = _added("svc.slow", 1)
    ran: list[str] = []

    def long(r: StoreReader, at: int, seq: int) -> list[Draft]:
        time.sleep(2.5)
        return slow(r, at, seq)

    def behind(r: StoreReader, at: int, seq: int) -> list[Draft]:
        ran.append("behind")
        return _added("svc.behind", 1)(r, at, seq)

    ahead = threading.Thread(target=store.write, args=(long, now))
    ahead.start()
    time.sleep(0.3)
    with pytest.raises(StoreUnavailable, match="waited 1 s for the writes ahead of it"):
        store.write(behind, now)  # (the message of the wait in this process alone)
    ahead.join(10)
    store.write(_added("svc.after", 1), now)  # the next group holds the one after alone
    assert ran == []
    assert [e.seq for e in store.events()] == [1, 2]
