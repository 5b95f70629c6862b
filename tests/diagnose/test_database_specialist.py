"""The database specialist against a real PostgreSQL with 12 connection slots (3 of them
reserved for superusers): sessions idle in transaction, a lock chain, connections running
out, a login refused, a port where nothing listens."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
from pydantic import JsonValue

from episteme.diagnose.findings import PARTIAL, Finding, Redactor, SpecialistContext
from episteme.diagnose.specialists import database
from episteme.diagnose.specialists.database import SpecialistError
from tests.integration.processes import free_port
from tests.postgres import Cluster, running_cluster

REFS = {
    "host": "op://Infrastructure/test-db/host",
    "username": "op://Infrastructure/test-db/username",
    "password": "op://Infrastructure/test-db/password",
}
APP_PASSWORD = "app-password-4c1e"
DIAG_PASSWORD = "diag-password-93ab"
CANARY = "CANARY-5be2-not-the-db-password"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def small() -> Iterator[Cluster]:
    """A cluster with max_connections 12, pg_stat_statements loaded, an application role
    and a monitoring role."""
    with running_cluster() as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_connections = 12")
            conn.execute("ALTER SYSTEM SET superuser_reserved_connections = 3")
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'")
            conn.execute(f"CREATE ROLE diag LOGIN PASSWORD '{DIAG_PASSWORD}' IN ROLE pg_monitor")
        cluster.stop()
        cluster.start()
        yield cluster


@pytest.fixture
def dbname(small: Cluster) -> Iterator[str]:
    """A fresh database with a table the application role may update."""
    url = small.create_database()
    name = unquote(urlsplit(url).path.removeprefix("/"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
        conn.execute("INSERT INTO accounts VALUES (1, 100), (2, 50)")
        conn.execute("GRANT SELECT, UPDATE ON accounts TO app")
    yield name
    small.drop_database(name)


def context(
    cluster: Cluster,
    dbname: str,
    *,
    user: str = "postgres",
    password: str | None = None,
    port: int | None = None,
    credentials: dict[str, str] | None = None,
    **settings: Any,
) -> SpecialistContext:
    values = {
        REFS["host"]: "127.0.0.1",
        REFS["username"]: user,
        REFS["password"]: cluster.password if password is None else password,
    }
    return SpecialistContext(
        problem="checkout times out waiting for a database connection",
        environment="prod",
        settings={"port": port or cluster.port, "dbname": dbname, **settings},
        secret=values.__getitem__,
        credentials=REFS if credentials is None else credentials,
        timeout_s=10,
    )


def connect(
    cluster: Cluster, dbname: str, application: str, *, autocommit: bool = False
) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1",
        port=cluster.port,
        dbname=dbname,
        user="app",
        password=APP_PASSWORD,
        application_name=application,
        autocommit=autocommit,
    )


def by_code(findings: list[Finding]) -> dict[str, Finding]:
    codes = [f.code for f in findings]
    assert len(codes) == len(set(codes)), codes
    return {f.code: f for f in findings}


def dicts(value: JsonValue) -> list[dict[str, Any]]:
    assert isinstance(value, list)
    assert all(isinstance(item, dict) for item in value)
    return [item for item in value if isinstance(item, dict)]


def strings(value: JsonValue) -> list[str]:
    assert isinstance(value, list)
    return [str(item) for item in value]


def wait_until_blocked(conn: psycopg.Connection[Any], pid: int) -> None:
    deadline = time.monotonic() + 5
    while True:
        row = conn.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        if row and row[0] == "Lock":
            return
        assert time.monotonic() < deadline, "the UPDATE never waited on the lock"
        time.sleep(0.02)


@pytest.mark.anyio
async def test_idle_transactions_a_lock_chain_and_connections_running_out(
    small: Cluster, dbname: str
) -> None:
    with psycopg.connect(small.url(dbname), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        for _ in range(3):
            conn.execute("SELECT pg_sleep(0.03)")
    with ExitStack() as stack:
        idle = [stack.enter_context(connect(small, dbname, "checkout")) for _ in range(3)]
        for conn in idle:
            conn.execute("SELECT 1")  # a transaction begins and is never ended
        blocker = stack.enter_context(connect(small, dbname, "billing-job"))
        blocker.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
        waiter = stack.enter_context(connect(small, dbname, "checkout", autocommit=True))
        watcher = stack.enter_context(connect(small, dbname, "checkout", autocommit=True))
        stack.enter_context(connect(small, dbname, "report", autocommit=True))
        update = threading.Thread(
            target=waiter.execute, args=("UPDATE accounts SET balance = balance - 1 WHERE id = 1",)
        )
        update.start()
        stack.callback(update.join, 10)
        stack.callback(blocker.rollback)
        wait_until_blocked(watcher, waiter.info.backend_pid)
        settings: dict[str, Any] = {
            "idle_in_transaction_s": 0,
            "long_query_s": 0,
            "slow_statement_ms": 20,
        }

        found = by_code(await database.run(context(small, dbname, **settings)))

        assert all(f.specialist == "database" and f.tool == "psycopg" for f in found.values())
        assert all(f.credential_ref == REFS["password"] and f.query for f in found.values())
        assert small.password not in "".join(f.model_dump_json() for f in found.values())

        # 7 of the 9 slots left to non-superusers: a warning
        slots = found["db.connection_exhaustion"]
        assert slots.severity == "warning"
        assert slots.evidence["used"] == 7
        assert slots.evidence["usable"] == 9
        assert slots.evidence["max_connections"] == 12
        assert slots.evidence["by_state"] == {"idle in transaction": 4, "idle": 2, "active": 1}
        assert slots.evidence["by_user"] == {"app": 7}
        assert slots.evidence["by_application"] == {"checkout": 5, "billing-job": 1, "report": 1}
        assert slots.evidence["by_client"] == {"127.0.0.1": 7}
        assert "pg_stat_activity" in (slots.query or "")

        stuck = found["db.idle_in_transaction"]
        pids = sorted(c.info.backend_pid for c in [*idle, blocker])
        listed = {s["pid"]: s for s in dicts(stuck.evidence["sessions"])}
        assert sorted(listed) == pids
        assert sorted(strings(stuck.evidence["terminate"])) == sorted(
            f"SELECT pg_terminate_backend({pid})" for pid in pids
        )
        assert listed[blocker.info.backend_pid]["application_name"] == "billing-job"
        assert listed[blocker.info.backend_pid]["usename"] == "app"
        assert listed[blocker.info.backend_pid]["client_addr"] == "127.0.0.1"
        assert str(listed[blocker.info.backend_pid]["last_query"]).startswith("UPDATE accounts")
        assert listed[idle[0].info.backend_pid]["last_query"] == "SELECT 1"

        chain = found["db.lock_chain"]
        assert chain.evidence["heads"] == [blocker.info.backend_pid]
        assert chain.evidence["terminate"] == [
            f"SELECT pg_terminate_backend({blocker.info.backend_pid})"
        ]
        [edge] = dicts(chain.evidence["edges"])
        assert edge["blocker_pid"] == blocker.info.backend_pid
        assert edge["blocked_pid"] == waiter.info.backend_pid
        assert edge["blocker_state"] == "idle in transaction"
        assert str(edge["blocked_query"]).startswith("UPDATE accounts SET balance = balance - 1")
        assert f"pid {blocker.info.backend_pid}" in chain.claim

        running = found["db.long_running"]
        cancel = f"SELECT pg_cancel_backend({waiter.info.backend_pid})"
        assert cancel in strings(running.evidence["cancel"])

        assert found["db.no_idle_timeout"].severity == "warning"
        assert "idle_in_transaction_session_timeout" in found["db.no_idle_timeout"].claim

        slow = found["db.slow_statements"]
        assert slow.severity == "warning"
        statements = dicts(slow.evidence["statements"])
        [sleep] = [s for s in statements if "pg_sleep" in str(s["query"])]
        assert sleep["calls"] == 3
        assert sleep["datname"] == dbname
        assert sleep["mean_ms"] >= 30

        # two more sessions: every slot a non-superuser may take is taken
        stack.enter_context(connect(small, dbname, "checkout", autocommit=True))
        stack.enter_context(connect(small, dbname, "checkout", autocommit=True))
        found = by_code(await database.run(context(small, dbname, **settings)))
        assert found["db.connection_exhaustion"].severity == "critical"
        assert found["db.connection_exhaustion"].evidence["used"] == 9

        # a monitoring role without a reserved slot is refused: that is the finding
        monitor = context(small, dbname, user="diag", password=DIAG_PASSWORD)
        [refused] = await database.run(monitor)
        assert refused.code == "db.connection_exhaustion"
        assert refused.severity == "critical"
        assert "reserved" in str(refused.evidence["server_message"])


@pytest.mark.anyio
async def test_a_secret_in_a_statement_cut_short_is_scrubbed_where_it_was_cut(
    small: Cluster, dbname: str
) -> None:
    # A statement's text is cut twice: at 200 characters by the query (no ellipsis was
    # added, so the start of a password at the end of the evidence was kept), and at 80
    # in the lock chain's claim, whose text goes on after the ellipsis (the scrubber
    # looked for a cut only at the very end). 15 of 18 characters of it were shown.
    secret = "CANARY-7f3a9e-dbpw-cut"
    pad = "x" * (200 - 17 - len("UPDATE accounts SET balance = balance + 1 WHERE id = 1 /* "))
    statement = f"UPDATE accounts SET balance = balance + 1 WHERE id = 1 /* {pad} '{secret}' */"
    assert statement.index(secret) + PARTIAL + 3 < 200 < statement.index(secret) + len(secret)
    claimed = f"UPDATE accounts SET balance = balance + 1 WHERE id = 1 /* pw '{secret}' */"
    assert claimed.index(secret) < 80 < claimed.index(secret) + len(secret)
    with ExitStack() as stack:
        idle = stack.enter_context(connect(small, dbname, "checkout"))
        idle.execute(statement.replace("id = 1", "id = 2"))
        blocker = stack.enter_context(connect(small, dbname, "billing-job"))
        blocker.execute(claimed)
        waiter = stack.enter_context(connect(small, dbname, "checkout", autocommit=True))
        watcher = stack.enter_context(connect(small, dbname, "checkout", autocommit=True))
        update = threading.Thread(
            target=waiter.execute, args=("UPDATE accounts SET balance = balance - 1 WHERE id = 1",)
        )
        update.start()
        stack.callback(update.join, 10)
        stack.callback(blocker.rollback)
        stack.callback(idle.rollback)
        wait_until_blocked(watcher, waiter.info.backend_pid)
        found = await database.run(context(small, dbname, idle_in_transaction_s=0))
    scrubbed = [Redactor([secret]).finding(f).model_dump_json() for f in found]
    said = "".join(scrubbed)
    assert secret[:PARTIAL] not in said, said
    assert "[redacted]..." in said  # the statement cut at 200, with its ellipsis
    chain = Redactor([secret]).finding(by_code(found)["db.lock_chain"])
    assert "pw '[redacted]…" in chain.claim, chain.claim


def _quiet(cluster: Cluster, timeout: float = 10.0) -> None:
    """Wait until no other client backend is listed: one whose client has just closed (the
    fixture's, the previous test's) leaves `pg_stat_activity` a moment later."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{row[0] if row else '?'} client sessions stayed open")
            time.sleep(0.05)


@pytest.mark.anyio
async def test_a_quiet_database_without_pg_stat_statements(small: Cluster, dbname: str) -> None:
    # no host credential granted: the host comes from the settings
    granted = {k: v for k, v in REFS.items() if k != "host"}
    _quiet(small)
    ctx = context(small, dbname, credentials=granted, host="127.0.0.1")

    found = by_code(await database.run(ctx))

    assert set(found) == {"db.connections", "db.no_idle_timeout", "db.pg_stat_statements_missing"}
    assert found["db.connections"].severity == "info"
    assert found["db.connections"].evidence["used"] == 0
    missing = found["db.pg_stat_statements_missing"]
    assert missing.severity == "info"
    assert "not installed" in missing.claim


@pytest.mark.anyio
async def test_a_refused_login_names_host_and_user_never_the_password(
    small: Cluster, dbname: str
) -> None:
    with pytest.raises(SpecialistError) as caught:
        await database.run(context(small, dbname, password=CANARY))

    message = str(caught.value)
    assert "127.0.0.1" in message
    assert str(small.port) in message
    assert "user postgres" in message
    assert "password authentication failed" in message
    exc: BaseException | None = caught.value
    while exc is not None:
        assert CANARY not in str(exc)
        assert CANARY not in repr(exc.args)
        exc = exc.__cause__ or exc.__context__


@pytest.mark.anyio
async def test_a_port_where_nothing_listens_fails_fast(small: Cluster) -> None:
    port = free_port()
    started = time.monotonic()

    with pytest.raises(SpecialistError, match=f"cannot connect to PostgreSQL at 127.0.0.1:{port}"):
        await database.run(context(small, "postgres", port=port))

    assert time.monotonic() - started < 3


@pytest.mark.anyio
async def test_settings_without_a_host_are_refused_before_connecting(small: Cluster) -> None:
    granted = {k: v for k, v in REFS.items() if k != "host"}

    with pytest.raises(SpecialistError, match="no host"):
        await database.run(context(small, "postgres", credentials=granted))
