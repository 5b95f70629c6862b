"""What only the PostgreSQL store has: retries of serialization failures."""

from __future__ import annotations

import threading

import psycopg
from whenever import Instant, TimeDelta

from episteme.ledger import AssertionInput, Ledger
from episteme.ledger.store import open_store
from episteme.timeutil import ManualClock, to_us


def test_writers_under_serializable_isolation_are_retried_into_one_chain(pg_url: str) -> None:
    # Distributed engines run SERIALIZABLE: conflicts come back as SQLSTATE 40001, which
    # the store answers by running the group again. Two stores (two pools), four threads.
    with psycopg.connect(pg_url, autocommit=True) as admin:
        name = admin.execute("SELECT current_database()").fetchone()
        assert name is not None
        admin.execute(
            f'ALTER DATABASE "{name[0]}" SET default_transaction_isolation = serializable'
        )
    Ledger.init(pg_url).close()
    ledgers = [Ledger(open_store(pg_url)), Ledger(open_store(pg_url))]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        led = ledgers[i % 2]
        try:
            for n in range(15):
                led.add([AssertionInput(subject=f"svc.w{i}", value=n, agent=f"agent-{i}")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == []
        retried = sum(getattr(led.store, "retries", 0) for led in ledgers)
        assert retried > 0  # the conflicts happened, and were absorbed
        with psycopg.connect(pg_url) as check:
            level = check.execute("SHOW transaction_isolation").fetchone()
        assert level == ("serializable",)
        report = ledgers[0].verify()
        assert report.ok
        assert report.events == 60
        assert ledgers[0].rebuild().ok
    finally:
        for led in ledgers:
            led.close()


def test_a_value_the_database_refuses_fails_alone_inside_a_group(pg_url: str) -> None:
    # PostgreSQL text cannot hold NUL: the write that carries one is refused as bad input,
    # while the writes sharing its commit (same group, same pipeline) are kept.
    from episteme.errors import InvalidInput

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
