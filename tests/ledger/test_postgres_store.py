"""What only the PostgreSQL store has: retries of serialization failures."""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from whenever import Instant, TimeDelta

from episteme.errors import InvalidInput, NotFound, StoreUnavailable
from episteme.ledger import AssertionInput, Ledger, LensSpec
from episteme.ledger.copy import copy_ledger
from episteme.ledger.gardener import Gardener
from episteme.ledger.postgres import store as postgres_store
from episteme.ledger.postgres.store import LEADER_LIVENESS, MIGRATION_LOCK
from episteme.ledger.sql.reads import ACCENTED, UNACCENTED
from episteme.ledger.store import open_store
from episteme.ledger.webhooks import WebhookSpec, deliveries
from episteme.timeutil import ManualClock, to_us
from tests.backends import back_to_jsonb
from tests.conftest import Cli, Result
from tests.postgres import running_cluster


def _in_threads(work: Callable[[int], None], n: int) -> list[BaseException]:
    """Run `work(i)` for i in range(n), each in its own thread; what they raised."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


@contextmanager
def _two_stores(url: str) -> Iterator[list[Ledger]]:
    """Two ledgers on one database, each with its own store (its own pool), as two
    processes would have them; closed afterwards."""
    ledgers = [Ledger(open_store(url)), Ledger(open_store(url))]
    try:
        yield ledgers
    finally:
        for led in ledgers:
            led.close()


def _default_isolation(url: str, level: str) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        name = admin.execute("SELECT current_database()").fetchone()
        assert name is not None
        admin.execute(f'ALTER DATABASE "{name[0]}" SET default_transaction_isolation = {level}')


def test_serialization_failures_are_retried_into_one_chain(pg_url: str) -> None:
    # Distributed engines run SERIALIZABLE: conflicts come back as SQLSTATE 40001, which
    # the store answers by running the group again. A trigger raises 40001 in one
    # transaction of five (by its id: a run again has a new one, and may pass), as such
    # an engine would; two stores (two pools), four threads.
    Ledger.init(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "CREATE FUNCTION conflict() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF txid_current() % 5 = 0 THEN RAISE EXCEPTION 'could not serialize access'"
            " USING ERRCODE = '40001'; END IF; RETURN NEW; END $$"
        )
        admin.execute(
            "CREATE TRIGGER conflict BEFORE INSERT ON journal"
            " FOR EACH ROW EXECUTE FUNCTION conflict()"
        )
    # A group run again runs its writes' builds again: what each call returns must be
    # what its last run recorded (not the rolled-back run's, nor both).
    returned: list[tuple[str, str, str]] = []

    def write(i: int) -> None:
        led = ledgers[i % 2]
        for n in range(10):
            added = led.add([AssertionInput(subject=f"svc.w{i}", value=n, agent=f"a-{i}")])
            assert [a.value for a in added] == [n]
            if n % 2:
                q = led.query(f"svc.w{i}", agent=f"a-{i}", lens="latest")
                d = led.decide("deploy", agent=f"a-{i}", query_ids=[q.query_id])
                assert q.query_id is not None
                assert d.query_ids == [q.query_id]
                returned.append((added[0].id, q.query_id, d.id))

    with _two_stores(pg_url) as ledgers:
        errors = _in_threads(write, 4)
        assert errors == []
        retried = sum(getattr(led.store, "retries", 0) for led in ledgers)
        assert retried > 0  # the conflicts happened, and were absorbed
        report = ledgers[0].verify()
        assert report.ok
        assert report.events == 4 * (10 + 5 * 2)
        assert ledgers[0].rebuild().ok
        assert len(returned) == 4 * 5
        for aid, qid, did in returned:
            assert ledgers[0].store.assertion(aid) is not None
            decision = ledgers[1].trace(did).decision
            assert decision is not None
            assert decision.query_ids == [qid]


@pytest.mark.parametrize("level", ["'repeatable read'", "serializable"])
def test_writes_keep_one_chain_whatever_the_databases_default_isolation(
    pg_url: str, level: str
) -> None:
    """Writes run READ COMMITTED on any database: under a snapshot taken at the writer
    lock, a writer would not see the commit it waited for, and reuse its sequence number."""
    _default_isolation(pg_url, level)
    Ledger.init(pg_url).close()
    with _two_stores(pg_url) as ledgers:

        def write(i: int) -> None:
            for n in range(15):
                ledgers[i % 2].assert_one(subject=f"svc.w{i}", value=n, agent=f"a-{i}")

        assert _in_threads(write, 4) == []
        assert sum(getattr(led.store, "retries", 0) for led in ledgers) == 0
        report = ledgers[0].verify()
        assert (report.ok, report.events) == (True, 4 * 15)
        assert ledgers[1].rebuild().ok


@pytest.mark.parametrize("level", ["'repeatable read'", "serializable"])
def test_two_processes_set_up_one_fresh_database_whatever_its_isolation(
    pg_url: str, level: str
) -> None:
    """Two servers starting at once on an empty database: one creates the ledger, the
    other waits on the migration lock and then finds it (not "is not a ledger")."""
    _default_isolation(pg_url, level)
    opened: list[Ledger] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(Ledger.open(pg_url, ensure=True))
        except BaseException as exc:
            errors.append(exc)

    with psycopg.connect(pg_url, autocommit=True) as holder, holder.transaction():
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        threads = [threading.Thread(target=start) for _ in range(2)]
        for t in threads:
            t.start()
        # both wait on the lock, their first statement, before either creates anything
        waiting = 0
        for _ in range(500):
            row = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            waiting = row[0] if row else 0
            if waiting == 2:
                break
            time.sleep(0.01)
        assert waiting == 2
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert len(opened) == 2
        assert sorted(getattr(led.store, "created", None) for led in opened) == [False, True]
        assert all(led.verify().ok for led in opened)
    finally:
        for led in opened:
            led.close()


def test_a_value_the_database_refuses_fails_alone_inside_a_group(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL text cannot hold NUL: the write that carries one is refused as bad input,
    # while the writes sharing its commit (same group, same pipeline) are kept. The ledger
    # refuses NUL itself before any backend sees it; that check is turned off here so that
    # PostgreSQL's own refusal, which any other value it cannot store would meet, is tested.
    from episteme.errors import InvalidInput
    from episteme.ledger.sql import base

    monkeypatch.setattr(base, "check_no_nul", lambda payload, text: None)
    with Ledger.init(pg_url) as led:
        outcomes: list[object] = []
        lock = threading.Lock()

        def write(i: int) -> None:
            source = "bad\x00source" if i == 3 else f"runbook-{i}"
            try:
                a = led.assert_one(subject=f"svc.n{i}", value=i, agent="ops", source=source)
                result: object = a.id
            except InvalidInput as exc:
                result = exc
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        refused = [o for o in outcomes if isinstance(o, InvalidInput)]
        assert len(refused) == 1
        assert "PostgreSQL refused a value" in refused[0].message
        assert len(outcomes) == 8
        assert led.verify().events == 7
        assert led.rebuild().ok
        assert led.store.current_on_subject("svc.n3") == []  # nothing half-written
        assert len(led.store.current_on_subject("svc.n4")) == 1


def test_the_newest_reads_on_a_subject_match_the_general_statement(pg_url: str) -> None:
    """PostgreSQL takes the newest reads of a subject per assertion (`NEWEST_SERVED`);
    whatever the subject, prefix, time and limit, it answers as the general statement."""
    clock = ManualClock(Instant.parse_iso("2026-11-21T09:00:00Z"))
    with Ledger.init(pg_url, clock=clock) as ledger:
        subjects = ["svc.a", "svc.a.x", "svc.b", "svc_c", "other"]
        for n in range(40):
            clock.advance(TimeDelta(seconds=1))
            subject = subjects[n % len(subjects)]
            ledger.assert_one(subject=subject, value=n, agent="w", lifecycle="approved")
            for lens in ("approved", "all"):
                ledger.query(subjects[(n * 3) % len(subjects)].split(".")[0], agent="r", lens=lens)
                ledger.query(subject, agent="r", lens=lens)
        store = ledger.store
        times = [None, *(to_us(clock.now().subtract(seconds=s)) for s in (5, 17, 39, 80))]
        for subject in ["svc", "svc.a", "svc.a.x", "svc_c", "svc.zzz", "other"]:
            for until in times:
                for limit in (1, 3, 50):
                    fast = store.queries(subject=subject, until=until, limit=limit)
                    store.NEWEST_SERVED = None  # the general statement
                    slow = store.queries(subject=subject, until=until, limit=limit)
                    del store.NEWEST_SERVED
                    assert [q.id for q in fast] == [q.id for q in slow], (subject, until, limit)
                    assert fast == slow


def _flushed(admin: psycopg.Connection[Any], xid: int, since: str, upto: str) -> bool:
    """Whether the commit record of transaction `xid` lies in the WAL flushed by `upto`
    (`xid` is the row's xmin: the transaction itself for a write alone, or its savepoint,
    listed among the commit's subtransactions, for a write in a group); pg_walinspect
    reads only flushed WAL, so a record past the flush is not found."""
    ahead = admin.execute("SELECT %s::pg_lsn >= %s::pg_lsn", (since, upto)).fetchone()
    if ahead and ahead[0]:
        return False  # nothing written since `since` is flushed yet
    row = admin.execute(
        "SELECT count(*) FROM pg_get_wal_records_info(%s::pg_lsn, %s::pg_lsn)"
        " WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT'"
        " AND (xid = %s::xid OR description ~ ('subxacts:.*\\m' || %s || '\\M'))",
        (since, upto, str(xid), str(xid)),
    ).fetchone()
    return bool(row and row[0])


def _writes_flushed(pg_url: str, led: Ledger, threads: int, tag: str) -> tuple[int, int]:
    """Of 5 single asserts per thread, how many had their commit flushed by the time
    they returned (each thread checks its own writes on its own connection)."""
    counts = [0] * threads

    def write(k: int) -> None:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            for n in range(5):
                since = _lsn(admin, "pg_current_wal_insert_lsn()")
                aid = led.assert_one(subject=f"svc.{tag}{k}", value=n, agent=f"a{k}").id
                upto = _lsn(admin, "pg_current_wal_flush_lsn()")
                counts[k] += _flushed(admin, _xmin(admin, aid), since, upto)

    workers = [threading.Thread(target=write, args=(k,)) for k in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    return sum(counts), 5 * threads


def test_a_write_returns_only_once_its_commit_is_flushed(pg_url: str) -> None:
    # The chain transaction commits without waiting for the WAL flush (so the chain lock
    # is free sooner); the store must flush before returning, for a write alone and for
    # writes that queued behind others (committed together, in one pipeline). The WAL
    # writer is put to sleep for 10 s, so only the store's own flush can cover the
    # commit in time. The same check on a store whose flush is switched off shows the
    # check can fail.
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        admin.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        admin.execute("SELECT pg_reload_conf()")
        try:
            Ledger.init(pg_url).close()
            with Ledger(open_store(pg_url)) as led:
                assert getattr(led.store, "defer_flush", False)
                assert _writes_flushed(pg_url, led, 1, "alone") == (5, 5)
                assert _writes_flushed(pg_url, led, 6, "queued") == (30, 30)
                led.store._FLUSH = "SELECT 1"  # type: ignore[attr-defined]  # no flush
                flushed, total = _writes_flushed(pg_url, led, 1, "unflushed")
                assert flushed < total
                flushed, total = _writes_flushed(pg_url, led, 6, "unflushed")
                assert flushed < total
        finally:
            admin.execute("ALTER SYSTEM RESET wal_writer_delay")
            admin.execute("SELECT pg_reload_conf()")


def _lsn(admin: psycopg.Connection[Any], expr: str) -> str:
    row = admin.execute(f"SELECT {expr}::text").fetchone()
    assert row is not None
    return str(row[0])


def _xmin(admin: psycopg.Connection[Any], assertion_id: str) -> int:
    row = admin.execute(
        "SELECT xmin::text::bigint FROM assertions WHERE id = %s", (assertion_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_chain_commits_keep_the_servers_setting_where_it_is_off(pg_url: str) -> None:
    # A server set to commit asynchronously promises no flush: the store adds none.
    with psycopg.connect(pg_url, autocommit=True) as admin:
        name = admin.execute("SELECT current_database()").fetchone()
        assert name is not None
        admin.execute(f'ALTER DATABASE "{name[0]}" SET synchronous_commit = off')
    Ledger.init(pg_url).close()
    with Ledger(open_store(pg_url)) as led:
        assert not getattr(led.store, "defer_flush", True)
        led.assert_one(subject="svc.x", value=1, agent="a")
        assert led.verify().ok


def test_reads_outside_a_write_come_back_by_themselves_after_a_restart() -> None:
    """A lens's statements share one borrowed connection in a pipeline; after the server
    restarts, the pool's dead connections are replaced and the next read answers."""
    with running_cluster() as cluster:
        url = cluster.create_database()
        with Ledger.init(url) as ledger:
            kept = ledger.assert_one(subject="svc.a", value=1, agent="a", lifecycle="approved")
            ledger.assert_one(subject="svc.a", value=2, agent="b")
            before = ledger.answer("svc", lens="approved")
            cluster.stop("fast")
            cluster.start()
            after = ledger.answer("svc", lens="approved")
            assert after.model_dump(exclude={"asked_at"}) == before.model_dump(exclude={"asked_at"})
            assert [i.assertion.id for i in after.items] == [kept.id]
            assert after.hidden.count == 1
            assert len(after.hidden.ids) == 1
            cluster.stop("fast")
            cluster.start()
            assert ledger.get(kept.id).id == kept.id  # a read of one statement, too


def test_a_long_outage_is_followed_by_a_prompt_return(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's reconnection attempts back off by doubling; once they had run for
    the whole outage, the next came long after the database was back (17-29 s after
    a 40 s outage). The pool now gives up after a while (`RECONNECT_S`), and the next
    call starts afresh. Here the while is 3 s and the outage 20 s: unbounded, the
    attempts back off 1, 2, 4, 8, 16 s (with jitter), and the store came back 7.3 s
    after the database did; bounded, in 0.02 s."""
    monkeypatch.setattr(postgres_store, "RECONNECT_S", 3.0)
    with running_cluster() as cluster:
        url = cluster.create_database()
        with Ledger.init(url) as ledger:
            ledger.assert_one(subject="svc.a", value=1, agent="a")
            cluster.stop("fast")
            down = time.monotonic()
            while time.monotonic() - down < 20:  # /health's probe, as a load balancer asks
                with pytest.raises(StoreUnavailable):
                    ledger.store.probe()
                time.sleep(1.0)
            cluster.start()
            back = time.monotonic()
            while True:
                try:
                    ledger.assert_one(subject="svc.a", value=2, agent="a")
                    break
                except StoreUnavailable:
                    assert time.monotonic() - back < 60, "the store never came back"
            assert time.monotonic() - back < 5  # 17-29 s after 40 s before, by the backoff
            assert ledger.verify().ok


def test_an_investigation_reads_on_one_connection_and_leaves_it_usable(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # blame, trace, impact, served and audit run their statements on one borrowed
    # connection in a pipeline: each statement on its own would borrow one and wait
    with Ledger.init(pg_url) as ledger:
        first = ledger.assert_one(subject="svc.a", value=1, agent="ops", lifecycle="approved")
        ledger.assert_one(subject="svc.a", value=2, agent="ops", derived_from=[first.id])
        q = ledger.query("svc", agent="deploy", context={"ticket": "INC-1"})
        d = ledger.decide("deployed", agent="deploy", query_ids=[q.query_id or ""])
        store: Any = ledger.store
        borrowed = store.borrowed
        borrows: list[int] = []

        def counted(read: Any) -> Any:
            borrows.append(1)
            return borrowed(read)

        store.borrowed = counted
        reads = {
            "blame": lambda: ledger.blame("svc.a"),
            "trace": lambda: ledger.trace(d.id),
            "impact": lambda: ledger.impact(first.id),
            "served": lambda: ledger.served("svc.a"),
            "audit": lambda: ledger.audit(agent="deploy"),
        }
        for name, read in reads.items():
            borrows.clear()
            found = read()
            assert found, name
            assert len(borrows) == 1, name
        assert ledger.trace(d.id).queries[0].context == {"ticket": "INC-1"}

        # a read that finds nothing raises, and hands back a connection still usable
        def replaced() -> tuple[int, int]:  # connections given back broken, and opened
            stats = store.pool.get_stats()
            return stats.get("returns_bad", 0), stats.get("connections_num", 0)

        before = replaced()
        for _ in range(store.pool.max_size + 1):
            with pytest.raises(NotFound):
                ledger.blame("svc.nothing")
        # and so does a statement the server refuses, read or left unread
        for unread in (False, True):
            with pytest.raises(psycopg.errors.DivisionByZero):
                store.reading(lambda r, unread=unread: _refused(r, unread))
        assert replaced() == before
        assert store.reading(lambda r: r.conn.execute("SELECT 1").fetchall()) == [(1,)]
        # reads prepare their statements only while a connection has room below the reads'
        # share (their IN lists come in every length); the rest is left to the writes
        from episteme.ledger.postgres import store as pg_store
        from episteme.ledger.postgres.wire import _sessions

        def prepared() -> int:
            return sum(len(s.prepared) for s in list(_sessions.values()))

        def seven_ids(r: Any) -> object:  # an IN list of a length not read before
            return r.assertions([f"{i:064x}" for i in range(7)])

        had = prepared()
        monkeypatch.setattr(pg_store, "READS_PREPARE_UP_TO", 0)
        assert store.reading(seven_ids) == []
        assert prepared() == had  # no room left for reads: parsed, not prepared
        monkeypatch.setattr(pg_store, "READS_PREPARE_UP_TO", 128)
        assert store.reading(seven_ids) == []
        assert prepared() == had + 1
        assert [b.assertion.id for b in ledger.blame(first.id)] == [first.id]


def test_a_read_that_conflicts_runs_again(pg_url: str) -> None:
    # distributed engines answer reads with 40001 too; a read changes nothing, so the
    # store runs it again, and gives up with a clear error if it keeps conflicting
    conflict = "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"
    with Ledger.init(pg_url) as ledger:
        fact = ledger.assert_one(subject="svc.a", value=1, agent="ops")
        store: Any = ledger.store
        tries: list[int] = []

        def flaky(r: Any) -> object:
            tries.append(1)
            if len(tries) < 3:
                r.conn.execute(conflict).fetchall()
            return r.assertion(fact.id)

        found = store.reading(flaky)
        assert found is not None
        assert found.id == fact.id
        assert len(tries) == 3
        assert store.read_retries == 2
        assert store.retries == 0  # the writes'
        assert store.workers()["read_retries"].startswith("2 since start")
        with pytest.raises(StoreUnavailable, match="reads kept conflicting after 8 attempts"):
            store.reading(lambda r: r.conn.execute(conflict).fetchall())
        assert ledger.blame(fact.id)[0].assertion.id == fact.id  # its connections still work


def _refused(r: Any, unread: bool) -> object:
    failing = r.conn.execute("SELECT 1 / 0")
    if unread:
        return None  # left for the store to read when the reading ends
    return failing.fetchall()


def test_a_lens_plans_its_reads_of_a_subject_once(pg_url: str) -> None:
    # PostgreSQL planned a lens's three statements at every query (it costs more than
    # running them); the store has them planned once per connection, without parallel
    # workers, and puts both settings back for the rest of the transaction
    changed = (
        "SELECT name, statement, generic_plans, custom_plans FROM pg_prepared_statements"
        " WHERE statement LIKE '%lifecycle%'"
    )
    settings = (
        "SELECT current_setting('plan_cache_mode'),"
        " current_setting('max_parallel_workers_per_gather')"
    )
    with Ledger.init(pg_url) as ledger:
        ledger.assert_one(subject="svc.a", value=1, agent="ops", lifecycle="approved")
        proposal = ledger.assert_one(subject="svc.a.port", value=2, agent="ops")
        ledger.assert_one(subject="svc.b", value=3, agent="ops", lifecycle="approved")
        store: Any = ledger.store
        assert store.plan_once is not None

        def lens(r: Any) -> tuple[Any, ...]:
            before = {row[0]: row[2:] for row in r.conn.execute(changed)}
            # what this transaction has, not what the server had when the store opened
            r.conn.execute("SELECT set_config('max_parallel_workers_per_gather', '3', true)")
            was = r.conn.execute(settings).fetchone()
            seen = [r.candidates(s, None, None, {"approved"}, {"proposed"}) for s in 3 * ["svc.a"]]
            after = {row[0]: (row[1], row[2:]) for row in r.conn.execute(changed)}
            return before, was, seen, after, r.conn.execute(settings).fetchone()

        before, was, seen, after, now = store.reading(lens)
        assert was[1] == "3"
        assert now == was  # the transaction's own settings, again
        runs = {
            name: (text, g - before.get(name, (0, 0))[0], c - before.get(name, (0, 0))[1])
            for name, (text, (g, c)) in after.items()
        }
        lens_runs = [(g, c) for text, g, c in runs.values() if "versions v" in text and g + c]
        assert sorted(lens_runs) == [(3, 0)] * 3  # rows, counts, names of the hidden
        rows, elsewhere, listed = seen[0]
        assert [c.subject for c in rows] == ["svc.a"]
        assert elsewhere == {"proposed": 1}
        assert [i for _, i in listed] == [proposal.id]
        store.plan_once = None  # as the server plans them: the same answer
        assert (
            store.reading(lambda r: r.candidates("svc.a", None, None, {"approved"}, {"proposed"}))
            == seen[0]
        )


def test_every_connection_gives_up_on_a_silent_network(pg_url: str) -> None:
    # A network that drops packets without a reset held a call for TCP's retransmissions
    # (about 15 minutes); each connection now carries timeouts that end it, unless the
    # URL sets its own. (Measured with a partition between two network namespaces, in
    # docs/deploy.md; making one needs privileges a test run may not have.)
    Ledger.init(pg_url).close()
    separator = "&" if "?" in pg_url else "?"
    for url, user_timeout in (
        (pg_url, "60000"),
        (f"{pg_url}{separator}tcp_user_timeout=5000", "5000"),
    ):
        store = open_store(url)
        try:
            with store.pool.connection() as pooled:
                got = conninfo_to_dict(pooled.info.dsn)
            lead = store.leadership("probe")
            assert lead.acquire()
            own = conninfo_to_dict(lead._conn.info.dsn)  # type: ignore[attr-defined]
            lead.release()
        finally:
            store.close()
        for params in (got, own):  # the pool's, and a session of its own
            assert params["tcp_user_timeout"] == user_timeout
            assert (params["keepalives"], params["keepalives_idle"]) == ("1", "30")
            assert (params["keepalives_interval"], params["keepalives_count"]) == ("10", "3")
            assert params["connect_timeout"] == "10"


@pytest.mark.parametrize(
    ("damage", "found"),
    [
        ("UPDATE meta SET value = 'abc' WHERE key = 'schema_version'", "found 'abc'"),
        ("DELETE FROM meta WHERE key = 'schema_version'", "found none"),
        # a traceback (ValueError: "²" is a digit to str.isdigit), and a migration of a
        # ledger from nothing ("relation meta already exists")
        ("UPDATE meta SET value = '²' WHERE key = 'schema_version'", "found '²'"),
        ("UPDATE meta SET value = '0' WHERE key = 'schema_version'", "found '0'"),
    ],
)
def test_a_damaged_schema_version_is_named_not_a_traceback(
    pg_url: str, damage: str, found: str
) -> None:
    Ledger.init(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(damage)
    with pytest.raises(
        StoreUnavailable, match=f"schema version .* not a version number \\({found}\\)"
    ):
        Ledger.open(pg_url)


def test_the_ledger_is_the_one_in_the_connections_own_schema(pg_url: str) -> None:
    # With search_path "app, public", a ledger in public was taken for app's: `init` said
    # "already holds a ledger" and writes went to public's journal.
    with Ledger.init(pg_url) as public:
        public.assert_one(subject="svc.a", value="public's", agent="a")
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA app")
    in_app = pg_url + ("&" if "?" in pg_url else "?") + "options=-csearch_path%3Dapp,public"
    with Ledger.init(in_app) as app:
        assert app.store.schema == "app"
        app.assert_one(subject="svc.a", value="app's", agent="a")
        assert [i.assertion.value for i in app.answer("svc.a", lens="all").items] == ["app's"]
    with Ledger.open(pg_url) as public:
        assert [i.assertion.value for i in public.answer("svc.a", lens="all").items] == ["public's"]
        assert public.verify().events == 1
    # a schema made later in front of the ledger's (one named after the role, as
    # PostgreSQL advises) must not become a new, empty ledger that `serve` then serves
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA newer")
    in_front = pg_url + ("&" if "?" in pg_url else "?") + "options=-csearch_path%3Dnewer,public"
    for ensure in (True, False):
        with pytest.raises(StoreUnavailable, match=r"schema 'newer' holds no ledger, but its"):
            Ledger.open(in_front, ensure=ensure)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        assert admin.execute("SELECT to_regclass('newer.meta')").fetchone() == (None,)
    nowhere = pg_url + ("&" if "?" in pg_url else "?") + "options=-csearch_path%3Dmissing"
    with pytest.raises(StoreUnavailable, match="no schema of the connection's search_path"):
        Ledger.open(nowhere, ensure=True)


def test_a_process_starting_during_a_long_migration_waits_for_it(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Starters waited for the migration lock under the 30 s lock timeout of a write: every
    # server, gardener and second `migrate` started beside a migration of over 30 s (0004
    # at 150,000 assertions: 46 s) exited, "unavailable: canceling statement due to lock
    # timeout". Here writes wait 1 s, and the migration holds its lock for 3.
    _a_ledger_to_migrate_where_writes_wait_1s(pg_url, monkeypatch)
    with psycopg.connect(pg_url) as migrating:
        migrating.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        release = threading.Timer(3.0, migrating.commit)
        release.start()
        started = time.monotonic()
        with Ledger.open(pg_url) as led:
            assert time.monotonic() - started >= 2.5
            assert led.verify().ok
        release.join()


def _a_ledger_to_migrate_where_writes_wait_1s(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger at schema version 4, and a lock wait of 1 s instead of a write's 30."""
    monkeypatch.setattr("episteme.ledger.postgres.adapt.WRITE_WAIT_S", 1.0)
    monkeypatch.setattr("episteme.ledger.postgres.store.WRITE_WAIT_S", 1.0)
    Ledger.init(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")


def test_opening_a_ledger_of_this_version_takes_no_migration_lock(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Every open took the lock: processes opening at once said "another process is
    # creating or migrating the ledger; waiting for it" where nothing migrated.
    Ledger.init(pg_url).close()
    with psycopg.connect(pg_url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        release = threading.Timer(3.0, holder.rollback)  # else an open took it: for ever
        release.start()
        with caplog.at_level(logging.WARNING), Ledger.open(pg_url) as led:
            assert led.verify().ok
        release.join()
    assert "waiting for it" not in caplog.text


def test_a_migration_blocked_by_another_session_says_so(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It said "migrating it failed: canceling statement due to lock timeout: run `episteme
    # migrate` as a role that may create tables", to the owner, while a pg_dump held a table.
    _a_ledger_to_migrate_where_writes_wait_1s(pg_url, monkeypatch)
    with psycopg.connect(pg_url) as reader:
        reader.execute("SELECT 1 FROM assertions LIMIT 1")  # its transaction stays open
        with pytest.raises(StoreUnavailable) as blocked:
            Ledger.open(pg_url)
        reader.rollback()
    message = blocked.value.message
    assert "schema version 4, and this episteme needs" in message
    assert "migrating it waited 1 s for its tables, which another session holds" in message
    with Ledger.open(pg_url) as led:  # once it is gone, the next start migrates
        assert led.store.migrated_from == 4


def test_a_process_that_waited_for_the_migration_lock_still_bounds_its_migration(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After waiting (with no limit) for another process's migration lock, the wait was
    # reset to the server's default, none: its own migration then waited for ever behind
    # a reader of the old version, and every later reader queued behind it.
    _a_ledger_to_migrate_where_writes_wait_1s(pg_url, monkeypatch)
    with psycopg.connect(pg_url) as reader, psycopg.connect(pg_url) as migrating:
        reader.execute("SELECT 1 FROM assertions LIMIT 1")  # its transaction stays open
        migrating.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        release = threading.Timer(1.0, migrating.rollback)  # it gave up, as above
        release.start()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="migrating it waited 1 s for its tables"):
            Ledger.open(pg_url)
        assert time.monotonic() - started < 30  # bounded: it waited for ever before
        release.join()
        reader.rollback()


def test_the_server_ends_a_silent_leaders_session_within_seconds(pg_url: str) -> None:
    """The lock is the session's: by default the server keeps a dead client's session,
    and so the lock, for over 2 hours. The leadership's connection asks for less (on TCP,
    which the tests use: a Unix socket ignores these)."""
    with Ledger.open(pg_url, ensure=True) as led:
        lead = led.store.leadership("background")
        assert lead.acquire()
        conn = lead._conn  # type: ignore[attr-defined]
        shown = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
        }
        assert shown == {
            "tcp_keepalives_idle": "10",
            "tcp_keepalives_interval": "5",
            "tcp_keepalives_count": "3",
        }
        assert conn.execute("SHOW tcp_user_timeout").fetchone()[0] == "30000"
        assert conn.execute("SHOW idle_session_timeout").fetchone()[0] == "30s"
        lead.release()


def test_a_frozen_leader_loses_the_lead_to_a_standby(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stopped process (SIGSTOP, a paused VM) whose host still acknowledged its TCP held
    # the lock, and so the background work of every server, for as long as it was
    # stopped. A leader that stops asking on its connection is one whose process froze:
    # here for 3 s (30 s when served), on a clock of the server's own.
    monkeypatch.setitem(LEADER_LIVENESS, "idle_session_timeout", "3000")
    with Ledger.open(pg_url, ensure=True) as first, Ledger.open(pg_url) as second:
        frozen, standby = (led.store.leadership("background") for led in (first, second))
        assert frozen.acquire()
        deadline = time.monotonic() + 15
        while not standby.acquire():  # the standby asks every second, as Leader does
            assert time.monotonic() < deadline, "the frozen leader kept the lead"
            time.sleep(0.5)
        assert not frozen.acquire()  # thawed: it finds it has lost the lead, and says so
        standby.release()
        frozen.release()


RIGHTS = (  # as docs/deploy.md lists them
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}",
)


def test_a_role_with_the_rights_deploy_md_lists_serves_everything(pg_cluster: Any) -> None:
    # docs/deploy.md listed rights on the tables alone; the job queue's ids come from a
    # sequence, so the gardener failed on every batch that queued a webhook delivery.
    role = f"app_{secrets.token_hex(4)}"
    url = pg_cluster.create_database()
    name = conninfo_to_dict(url)["dbname"]
    Ledger.init(url).close()  # the owner creates the schema
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'app'")
        for grant in RIGHTS:
            admin.execute(grant.format(role=role))
    app = f"postgresql://{role}:app@127.0.0.1:{pg_cluster.port}/{name}"
    with Ledger.open(app) as ledger:
        ledger.set_webhook(WebhookSpec(name="pager", url="http://127.0.0.1:9/hook"), by="admin")
        wrong = ledger.assert_one(subject="svc.a", value=1, agent="bot", lifecycle="approved")
        ledger.query("svc", agent="deploy")
        ledger.correct(wrong.id, by="oncall", reason="it is 2", value=2, forbid=True)
        ledger.issue_token("deploy", ["agent"], by="admin")
        assert Gardener(ledger).run_until_caught_up() > 0
        assert [d.state for d in deliveries(ledger.store)] == ["pending"]
        assert ledger.verify().ok


def test_the_restore_recipe_deploy_md_gives_works_on_this_postgresql(
    pg_cluster: Any, tmp_path: Path
) -> None:
    # It made the database as postgres without --owner: since PostgreSQL 15 the schema
    # public is the owner's, and pg_restore --no-owner as the app's role was refused
    # ("permission denied for schema public").
    role = f"app_{secrets.token_hex(4)}"
    url = pg_cluster.create_database()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'app'")
        admin.execute(f'ALTER DATABASE "{conninfo_to_dict(url)["dbname"]}" OWNER TO {role}')
    app = url.replace("postgres:" + pg_cluster.password, f"{role}:app", 1)
    with Ledger.init(app) as ledger:
        ledger.assert_one(subject="svc.a", value=1, agent="bot")
    restored = f"r_{secrets.token_hex(4)}"
    dump = tmp_path / "episteme.dump"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    server = ["--host=127.0.0.1", f"--port={pg_cluster.port}"]
    steps = [  # (who runs it, the command), as the page has them
        (app, ["pg_dump", "--format=custom", f"--file={dump}", app]),
        (
            pg_cluster.url(),
            [
                "createdb",
                *server,
                "--username=postgres",
                f"--owner={role}",
                "--encoding=UTF8",
                "--template=template0",
                restored,
            ],
        ),
        (
            app,
            ["pg_restore", f"--dbname={app.rsplit('/', 1)[0]}/{restored}", "--no-owner", str(dump)],
        ),
    ]
    for who, argv in steps:
        password = conninfo_to_dict(who)["password"]
        done = subprocess.run(
            [str(pg_cluster.bindir / argv[0]), *argv[1:]],
            env=env | {"PGPASSWORD": str(password)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    try:
        with Ledger.open(f"{app.rsplit('/', 1)[0]}/{restored}", read_only=True) as copy:
            assert copy.verify().ok
            assert copy.store.head()[0] == 1
    finally:
        pg_cluster.drop_database(restored)


def _too_long_for_tsvector() -> str:
    # about 970 KB of distinct words: a tsvector of about 1.2 MB, over PostgreSQL's 1 MB
    return " ".join(f"w{i}q{i * 7919 % 100_003}" for i in range(70_000))


def test_a_value_over_a_postgresql_limit_fails_its_own_write_alone(pg_url: str) -> None:
    # SQLSTATE class 54 is an OperationalError to psycopg: it failed every write of its
    # group as "PostgreSQL is unavailable", so one agent's long text turned most other
    # agents' writes into 503s (398 of 411 in 12 threads).
    big = _too_long_for_tsvector()
    with Ledger.init(pg_url) as ledger:
        with pytest.raises(InvalidInput, match="refused a value: string is too long for tsvector"):
            ledger.assert_one(subject="svc.big", value=big, agent="bot")
        failures: list[BaseException] = []

        def small(n: int) -> None:
            for i in range(15):
                try:
                    ledger.assert_one(subject=f"svc.s{n}.k{i}", value=i, agent=f"a{n}")
                except BaseException as exc:
                    failures.append(exc)

        def large(n: int) -> None:  # each takes PostgreSQL a second or more to refuse
            for _ in range(2):
                with pytest.raises(InvalidInput):
                    ledger.assert_one(subject="svc.big", value=big, agent="bot")

        errors = _in_threads(lambda n: small(n) if n < 6 else large(n), 8)
        assert errors == []
        assert failures == []
        assert ledger.store.head()[0] == 6 * 15
        assert ledger.verify().ok


def test_a_copy_of_a_value_postgresql_cannot_hold_stores_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    with Ledger.init(tmp_path / "home") as ledger:  # SQLite has no such limit
        ledger.assert_one(subject="svc.a", value=1, agent="bot")
        ledger.assert_one(subject="svc.big", value=_too_long_for_tsvector(), agent="bot")
    with pytest.raises(InvalidInput, match=r"cannot be stored in .*tsvector.*nothing was stored"):
        copy_ledger(tmp_path / "home", pg_url)
    with Ledger.open(pg_url) as copied:
        assert copied.store.head()[0] == 0


@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII"])
def test_a_database_that_does_not_store_utf8_is_refused_at_once(
    pg_cluster: Any, encoding: str
) -> None:
    # LATIN1 took the ledger, then answered 500 for the first value it cannot encode;
    # SQL_ASCII took it, then called it "not an Episteme ledger" at every open.
    name = f"enc_{secrets.token_hex(4)}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(
            f"CREATE DATABASE {name} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C'"
            " TEMPLATE template0"
        )
    url = pg_cluster.url(name)
    for opening in (Ledger.init, Ledger.open):
        with pytest.raises(InvalidInput, match=f"stores text as {encoding}; the ledger needs UTF8"):
            opening(url)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('journal')").fetchone() == (None,)


def test_the_health_probe_answers_in_time_while_the_journal_is_locked(pg_url: str) -> None:
    # Its 2 s covered getting a connection, not the statement: an operator's lock on the
    # journal (VACUUM FULL, LOCK TABLE) held /health for the writers' 30 s lock timeout.
    with Ledger.init(pg_url) as ledger, psycopg.connect(pg_url) as operator:
        operator.execute("LOCK TABLE journal IN ACCESS EXCLUSIVE MODE")
        asked = time.monotonic()
        with pytest.raises(StoreUnavailable, match="statement timeout"):
            ledger.store.probe(timeout=1.0)
        assert time.monotonic() - asked < 10
        operator.rollback()
        assert ledger.store.probe() == 0


def test_the_pool_size_is_a_setting(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ten connections a process was fixed: a database with a small max_connections
    # could not take several servers with several workers each.
    monkeypatch.setenv("EPISTEME_DB_POOL", "3")
    with Ledger.init(pg_url) as ledger:
        assert ledger.store.pool.max_size == 3  # type: ignore[attr-defined]
        assert "connections" in ledger.store.workers()["pool"]
    for wrong in ("0", "101", "ten"):
        monkeypatch.setenv("EPISTEME_DB_POOL", wrong)
        with pytest.raises(InvalidInput, match=r"EPISTEME_DB_POOL=.*1 to 100"):
            Ledger.open(pg_url)


def test_the_gardener_command_keeps_its_lead_and_says_when_it_loses_it(
    pg_url: str, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `episteme gardener` took the lead once and never asked on its connection again:
    # with the idle timeout, the server ended its session after 30 s, and a server took
    # the lead while the gardener went on working beside it.
    monkeypatch.setitem(LEADER_LIVENESS, "idle_session_timeout", "2000")
    Ledger.init(pg_url).close()
    done: list[Result] = []
    runner = threading.Thread(
        target=lambda: done.append(cli("gardener", "--home", pg_url, home_arg=False))
    )
    runner.start()
    with Ledger.open(pg_url) as other, psycopg.connect(pg_url, autocommit=True) as admin:
        locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        deadline = time.monotonic() + 15
        while admin.execute(locks).fetchone() == (0,):  # until the gardener leads
            assert time.monotonic() < deadline, done
            time.sleep(0.1)
        standby = other.store.leadership("background")
        time.sleep(5)  # past twice the idle timeout
        assert not standby.acquire(), "the gardener lost its lead while it ran"
        admin.execute(  # the database ends its session
            "SELECT pg_terminate_backend(pid) FROM pg_locks"
            " WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
        )
        runner.join(15)
        assert not runner.is_alive()
        (result,) = done
        assert result.code == 1, result.err
        assert "lost the lead of the background work" in result.err
        assert standby.acquire()
        standby.release()


def test_the_accent_fold_is_fts5s_and_the_migrations(pg_url: str) -> None:
    # The letters PostgreSQL folds are those SQLite's FTS5 indexes as their base letter,
    # and migration 0004 folds the same ones as the queries do.
    fts5 = sqlite3.connect(":memory:")
    fts5.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
    fts5.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'row')")
    folded = {}
    for c in map(chr, [*range(0xC0, 0x250), *range(0x1E00, 0x1F00)]):
        fts5.execute("DELETE FROM t")
        fts5.execute("INSERT INTO t VALUES (?)", (c,))
        terms = [row[0] for row in fts5.execute("SELECT term FROM v")]
        if c.isalpha() and len(terms) == 1 and terms[0] not in (c, c.lower()):
            folded[c] = terms[0]
    assert dict(zip(ACCENTED, UNACCENTED, strict=True)) == folded
    sql = (resources.files("episteme.ledger.postgres") / "0004_fold_accents.sql").read_text()
    assert f"'{ACCENTED}',\n    '{UNACCENTED}'" in sql
    # a ledger made before 0004 is folded when it is opened
    with Ledger.init(pg_url) as ledger:
        ledger.assert_one(subject="dc.primary", value="Zürich", agent="ops")
    with psycopg.connect(pg_url, autocommit=True) as admin:  # as 0001 made the column
        admin.execute("DROP INDEX assertions_fts")
        admin.execute("ALTER TABLE assertions DROP COLUMN fts")
        admin.execute(
            "ALTER TABLE assertions ADD COLUMN fts tsvector GENERATED ALWAYS AS"
            " (to_tsvector('simple', subject || ' ' || value)) STORED"
        )
        admin.execute("CREATE INDEX assertions_fts ON assertions USING gin (fts)")
        admin.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with Ledger.open(pg_url) as ledger:
        assert ledger.store.migrated_from == 3
        assert [i.assertion.value for i in ledger.answer(None, text="zurich").items] == []
        found = ledger.answer(None, lens="all", text="zurich").items
        assert [i.assertion.value for i in found] == ["Zürich"]


def test_json_columns_migrated_from_jsonb_rebuild_as_they_are(pg_url: str) -> None:
    # Migration 0005 keeps JSON as text; the rows a ledger wrote as jsonb before it are
    # rewritten in the store's canonical form, so a rebuild finds nothing to repair.
    with Ledger.init(pg_url) as ledger:
        ledger.issue_token("deploy", ["agent", "supervisor"], by="oncall")
        ledger.define_lens("custom", LensSpec(min_confidence=0.25, pick="newest"), by="oncall")
        ledger.add_constraint(scope="svc", reason="no ES", by="oncall", forbid=["ES256", "x, y"])
        ledger.check("use ES256", ["svc.a", "svc.b"], agent="deploy")
        ledger.set_webhook(WebhookSpec(name="pager", url="http://127.0.0.1:9/"), by="oncall")
    with psycopg.connect(pg_url, autocommit=True) as admin:  # as 0001 to 0004 made them
        back_to_jsonb(admin)
        assert admin.execute("SELECT roles::text FROM tokens").fetchone() == (
            '["agent", "supervisor"]',
        )
    with Ledger.open(pg_url) as ledger:
        assert ledger.store.migrated_from == 4
        report = ledger.rebuild(repair=False)
        assert (report.ok, report.differences) == (True, {})
    with psycopg.connect(pg_url, autocommit=True) as admin:
        assert admin.execute("SELECT roles::text FROM tokens").fetchone() == (
            '["agent","supervisor"]',
        )


def test_a_failed_probe_leaves_no_connection_with_statements_it_lost(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A /health probe that timed out rolled back, and psycopg's rollback deallocated
    # every statement prepared on that connection (once psycopg had prepared one of its
    # own); the store still named them, and the next reads there failed under load:
    # 'prepared statement "_ep_32" does not exist'.
    from episteme.ledger.postgres import wire

    monkeypatch.setenv("EPISTEME_DB_POOL", "1")  # every call on the one connection
    with Ledger.open(pg_url, ensure=True) as led:
        led.assert_one(subject="a.b", value=1, agent="x")
        assert led.answer("a.b", lens="all").items  # the store's statements, prepared
        with led.store.pool.connection() as c:  # the pool's one connection
            for _ in range(6):  # psycopg prepares a statement of its own past 5 uses
                c.execute("SELECT %s::int", (1,))
            assert c in wire._sessions
        with psycopg.connect(pg_url) as locker:
            locker.execute("LOCK TABLE journal IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreUnavailable):
                led.store.probe_reading(lambda r: r.head()[0], 0.2)
            locker.rollback()
        with led.store.pool.connection() as c:
            # forgotten whether or not the server dropped them (it may have): prepared
            # again under new names, never named when they may be gone
            assert c not in wire._sessions
        for _ in range(20):
            assert led.answer("a.b", lens="all").items
