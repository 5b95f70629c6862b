"""A write whose connection is lost while it commits (PostgreSQL): the store asks the
database how the transaction ended, and reports the write as it really ended.

The connection is cut by a TCP relay of ours between the store and a real server, at
the moment the server's reply to COMMIT passes through it (the transaction has
committed; the client never hears so), or the server's backend is ended inside COMMIT
(a deferred trigger that sleeps holds it there), before the commit is recorded.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from episteme.errors import InvalidInput, StoreUnavailable
from episteme.ledger import Assertion, Ledger
from episteme.ledger.postgres import store as pg_store
from episteme.ledger.store import open_store
from tests.postgres import Cluster

COMMIT_REPLY = b"C\x00\x00\x00\x0bCOMMIT\x00"
"""The server's CommandComplete message for COMMIT: the transaction has committed."""


class Relay:
    """A TCP relay to PostgreSQL that can cut a connection when a given reply passes
    (dropping that reply), and refuse new connections for a while."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._cut_at: bytes | None = None
        self.cuts = 0
        self.refusing = threading.Event()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_at(self, reply: bytes) -> None:
        """Cut the next connection whose server sends `reply`, before the client sees it."""
        with self._lock:
            self._cut_at = reply

    def close(self) -> None:
        self._listener.close()
        for s in list(self._open):
            _shut(s)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing.is_set():
                _shut(client)
                continue
            server = socket.create_connection(self._target)
            self._open += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        tail = b""
        try:
            while data := src.recv(65536):
                if replies and self._cutting(tail + data):
                    break
                dst.sendall(data)
                tail = data[-len(COMMIT_REPLY) :]
        except OSError:
            pass
        finally:
            _shut(src)
            _shut(dst)

    def _cutting(self, data: bytes) -> bool:
        with self._lock:
            if self._cut_at is None or self._cut_at not in data:
                return False
            self._cut_at = None
            self.cuts += 1
            return True


def _shut(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


@pytest.fixture
def relayed(pg_url: str) -> Iterator[tuple[Relay, str]]:
    """The test database's URL through a relay, and the relay."""
    parts = conninfo_to_dict(pg_url)
    relay = Relay(str(parts["host"]), int(str(parts["port"])))
    try:
        yield relay, pg_url.replace(f":{parts['port']}/", f":{relay.port}/", 1)
    finally:
        relay.close()


def _subjects(pg_url: str, subject: str) -> int:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT count(*) FROM assertions WHERE subject = %s", (subject,))
        found = row.fetchone()
    assert found is not None
    return int(found[0])


def test_a_write_that_committed_as_its_connection_was_lost_is_reported_written(
    relayed: tuple[Relay, str], pg_url: str
) -> None:
    relay, url = relayed
    Ledger.init(url).close()
    with Ledger(open_store(url)) as led:
        led.assert_one(subject="svc.before", value=1, agent="a")
        relay.cut_at(COMMIT_REPLY)
        written = led.assert_one(subject="svc.cut", value=2, agent="a")
        assert relay.cuts == 1  # the reply to its COMMIT never reached the store
        assert led.get(written.id).value == 2
        after = led.assert_one(subject="svc.after", value=3, agent="a")  # the pool goes on
        assert led.verify().ok
        assert [e.kind for e in led.store.events()][-3:] == ["assertions.added"] * 3
        assert after.id != written.id
    assert _subjects(pg_url, "svc.cut") == 1  # once: written, not reported failed


def test_a_write_whose_outcome_cannot_be_learned_says_it_may_be_recorded(
    relayed: tuple[Relay, str], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay, url = relayed
    monkeypatch.setattr(pg_store, "SETTLE_SECONDS", 1.0)
    Ledger.init(url).close()
    with Ledger(open_store(url)) as led:
        led.assert_one(subject="svc.before", value=1, agent="a")  # a connection in the pool
        relay.cut_at(COMMIT_REPLY)
        relay.refusing.set()  # the database stays out of reach while the store asks
        with pytest.raises(StoreUnavailable) as failed:
            led.assert_one(subject="svc.cut", value=2, agent="a")
        assert relay.cuts == 1
        message = failed.value.message
        assert "may have been recorded" in message
        assert "look for it in the ledger before making it again" in message
        relay.refusing.clear()
        shown = led.answer("svc.cut", lens="all").items
        assert [i.assertion.value for i in shown] == [2]  # it had committed
        assert led.verify().ok
    assert _subjects(pg_url, "svc.cut") == 1


def test_a_group_cut_at_commit_keeps_what_committed_and_refuses_what_failed(
    relayed: tuple[Relay, str], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three writes queue behind the writer lock and commit as one group; the middle one
    # carries a value PostgreSQL refuses, so it is rolled back to its savepoint and the
    # next write takes its place in the journal. The reply to the group's COMMIT is cut:
    # the rows the store looks for include the one rolled back, which is not there.
    from episteme.ledger.sql import base

    monkeypatch.setattr(base, "check_no_nul", lambda payload, text: None)  # as the server sees it
    relay, url = relayed
    Ledger.init(url).close()
    with Ledger(open_store(url)) as led:
        led.assert_one(subject="svc.before", value=0, agent="a")
        store: Any = led.store
        outcomes: dict[int, object] = {}

        def write(i: int) -> None:
            source = "bad\x00source" if i == 1 else f"runbook-{i}"
            try:
                outcomes[i] = led.assert_one(subject=f"svc.g{i}", value=i, agent="a", source=source)
            except Exception as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
        with store._lock:  # they queue as one group
            for t in threads:
                t.start()
            deadline = time.monotonic() + 10
            while len(store._queue) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(store._queue) == 3
            relay.cut_at(COMMIT_REPLY)
        for t in threads:
            t.join(30)
        assert relay.cuts == 1
        assert isinstance(outcomes[1], InvalidInput), outcomes[1]
        kept = [outcomes[0], outcomes[2]]
        assert all(isinstance(o, Assertion) for o in kept), kept
        assert led.verify().ok
        assert led.verify().events == 3
    assert [_subjects(pg_url, f"svc.g{i}") for i in range(3)] == [1, 0, 1]


SLOW_COMMIT = """
CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload LIKE '%svc.slow%' THEN PERFORM pg_sleep(30); END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON journal
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
"""


def test_a_write_whose_server_ended_inside_commit_is_reported_not_written(pg_url: str) -> None:
    Ledger.init(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(SLOW_COMMIT)
        with Ledger(open_store(pg_url)) as led:
            outcome: list[Any] = []

            def write() -> None:
                try:
                    outcome.append(led.assert_one(subject="svc.slow", value=1, agent="a"))
                except StoreUnavailable as exc:
                    outcome.append(exc)

            writer = threading.Thread(target=write)
            writer.start()
            pid = _sleeping_backend(admin)
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))  # inside its COMMIT
            writer.join(timeout=30)
            assert len(outcome) == 1
            failed = outcome[0]
            assert isinstance(failed, StoreUnavailable), failed
            assert "unavailable" in failed.message
            assert "may have been recorded" not in failed.message  # the database said no
            admin.execute("DROP TRIGGER slow_commit ON journal")
            assert led.answer("svc.slow", lens="all").items == []
            led.assert_one(subject="svc.next", value=2, agent="a")
            assert led.verify().ok
    assert _subjects(pg_url, "svc.slow") == 0


def _sleeping_backend(admin: psycopg.Connection[Any]) -> int:
    """The backend sleeping in the deferred trigger, once it is there."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
            " AND pid <> pg_backend_pid()"
        ).fetchone()
        if row is not None:
            return int(row[0])
        time.sleep(0.05)
    raise AssertionError("no write reached its COMMIT in 20 s")


def test_a_write_on_a_connection_the_server_ended_runs_again_on_a_fresh_one(
    pg_url: str,
) -> None:
    # Idle pooled connections ended by the server (a restart, an idle timeout, a
    # terminated backend): the first write found its connection dead before COMMIT
    # and failed with 503. Nothing was sent to commit, so it now runs once more.
    Ledger.init(pg_url).close()
    with Ledger(open_store(pg_url)) as led, psycopg.connect(pg_url, autocommit=True) as admin:
        led.assert_one(subject="svc.before", value=1, agent="a")
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        assert ended is not None
        assert ended[0] >= 1
        written = led.assert_one(subject="svc.after", value=2, agent="a")
        assert led.get(written.id).value == 2
        assert led.verify().ok
    assert _subjects(pg_url, "svc.after") == 1


def test_no_connection_to_be_had_says_why(pg_cluster: Cluster) -> None:
    # The pool's own attempts fail in its background, and a caller waiting for a
    # connection used to hear only "no connection could be made within 10 s".
    role = f"r_{secrets.token_hex(4)}"
    url = pg_cluster.create_database()
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-before'")
        admin.execute(f'ALTER DATABASE "{name}" OWNER TO {role}')
    mine = f"postgresql://{role}:pw-before@127.0.0.1:{pg_cluster.port}/{name}"
    Ledger.init(mine).close()
    with Ledger(open_store(mine)) as led, psycopg.connect(pg_cluster.url(), autocommit=True) as a:
        led.assert_one(subject="svc.before", value=1, agent="a")
        a.execute(f"ALTER ROLE {role} PASSWORD 'pw-after'")  # rotated under a running server
        a.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
        )
        led.store.pool.timeout = 1.0  # type: ignore[attr-defined]  # not the 10 s it waits
        with pytest.raises(StoreUnavailable) as refused:
            led.assert_one(subject="svc.after", value=2, agent="a")
    assert "no connection could be had within 10 s" in refused.value.message
    assert f'password authentication failed for user "{role}"' in refused.value.message
    assert "pw-" not in refused.value.message


def test_a_rolled_back_job_transaction_leaves_the_connection_usable(pg_url: str) -> None:
    # psycopg prepares a statement it ran 5 times, and a transaction of its own that
    # rolls back then sends DEALLOCATE ALL: the writes' own prepared statements went
    # with it, and every later write on that connection failed (an HTTP 500) until the
    # pool replaced it, an hour later.
    from episteme.ledger.postgres.store import PostgresStore

    Ledger.init(pg_url).close()
    store = PostgresStore(pg_url, pool_size=1)  # one connection: the same one each time
    with Ledger(store) as led:
        led.assert_one(subject="svc.a", value=1, agent="a")
        for i in range(6):  # psycopg prepares this insert
            store.enqueue_job("q", {"i": i}, 1_800_000_000_000_000)
        with pytest.raises(psycopg.errors.DivisionByZero), store._tx() as conn:
            conn.execute("SELECT 1/0")
        written = led.assert_one(subject="svc.a", value=2, agent="a")
        assert written.id in {i.assertion.id for i in led.answer("svc", lens="all").items}
        assert led.verify().ok


def test_a_read_only_database_refuses_writes_in_one_line(pg_url: str) -> None:
    # a standby, or a database or role set read-only: reads answer, writes say why
    Ledger.init(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        name = conninfo_to_dict(pg_url)["dbname"]
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        with Ledger(open_store(pg_url)) as led:
            with pytest.raises(StoreUnavailable) as refused:
                led.assert_one(subject="svc.a", value=1, agent="a")
            assert "refused the write: cannot execute" in refused.value.message
            assert "read-only transaction" in refused.value.message
            assert led.verify().ok  # reads answer
            with pytest.raises(StoreUnavailable, match="cannot execute CREATE SCHEMA"):
                led.rebuild()  # what failed, not its clean-up (DROP SCHEMA)
        argv = ["assert", "svc.a", "1", "--agent", "a", "--db", pg_url]
        done = subprocess.run(
            [sys.executable, "-m", "episteme", *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert done.stderr.startswith("error: PostgreSQL at postgresql://")
        assert "refused the write" in done.stderr
        assert "Traceback" not in done.stderr
        assert len(done.stderr.splitlines()) == 1
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SET default_transaction_read_only = off")
            admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')


def test_a_password_with_a_bare_at_sign_is_refused_unshown() -> None:
    # libpq would read the rest of the password as the host, and messages show the host
    with pytest.raises(InvalidInput) as refused:
        open_store("postgresql://ops:Pa@ssWord9@127.0.0.1:5432/ledger")
    assert "write an @ in the password as %40" in refused.value.message
    assert "ssWord9" not in refused.value.message
    with pytest.raises(InvalidInput) as odd:
        open_store("postgresql://ops@127.0.0.1:5432/ledger?foo=bar")
    assert "\n" not in odd.value.message


def test_the_database_is_named_as_libpq_will_reach_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the URL leaves out is libpq's: it was shown as localhost:5432 and no user.
    for variable in ("PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PGUSER", "ops")
    monkeypatch.setenv("PGDATABASE", "ledger")
    monkeypatch.setenv("PGPASSWORD", "Canary7")
    describe = pg_store.describe
    assert describe("postgresql://") == "postgresql://ops@:5432/ledger"  # libpq's socket
    assert describe("postgresql://db.internal") == "postgresql://ops@db.internal:5432/ledger"
    assert describe("postgresql://[::1]:5433/x") == "postgresql://ops@[::1]:5433/x"
    assert describe("postgresql://a,b:5433/x") == "postgresql://ops@a:5432,b:5433/x"
    monkeypatch.setenv("PGHOST", "/run/postgresql")
    monkeypatch.setenv("PGPORT", "5439")
    assert describe("postgresql://reader@/x") == "postgresql://reader@%2Frun%2Fpostgresql:5439/x"
    monkeypatch.delenv("PGDATABASE")
    assert describe("postgresql://") == "postgresql://ops@%2Frun%2Fpostgresql:5439/ops"


def test_health_says_why_the_store_is_unavailable(relayed: tuple[Relay, str]) -> None:
    from starlette.testclient import TestClient

    from episteme.api import Settings, create_app

    relay, url = relayed
    Ledger.init(url).close()
    with Ledger(open_store(url)) as led:
        app = create_app(Settings(db=url, mcp=False, background=False), ledger=led)
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get("/health").json()["store"] == "ok"
            relay.close()  # the database is gone, and so are the connections to it
            health = client.get("/health")
            assert health.status_code == 503
            store = health.json()["store"]
            assert store.startswith("unavailable: PostgreSQL at postgresql://"), store
            assert "is unavailable: " in store


@pytest.mark.parametrize(
    ("location", "words"),
    [
        ("postgresql://ops:Canary7%@127.0.0.1:5432/ledger", "invalid percent-encoded"),
        ("postgresql://ops:Can/ary7@127.0.0.1:5432/ledger", "percent-encode / as %2F"),
        ("postgresql://ops:Can ary7@127.0.0.1:5432/ledger", "unexpected spaces"),
        ("host=127.0.0.1 user=ops password=Canary7 dbname=x", "key=value connection string"),
        # given as ?password=, it was quoted with the rest of the URL
        ("postgresql://ops@[::1/ledger?password=Canary7", "not a PostgreSQL URL"),
        ("postgresql://ops@127.0.0.1/ledger?password=Canary7%zz", "invalid percent-encoded"),
        ("postgresql://ops@127.0.0.1/ledger?password=Can%20ary7&x", "not a PostgreSQL URL"),
        # both: it said the password was not percent-encoded
        ("postgresql://ops:Canary7@127.0.0.1/ledger?password=ary7", "gives a password twice"),
    ],
)
def test_a_password_written_wrongly_is_never_shown(
    location: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parser's message quoted it; with a / in it, libpq read the user as the host and
    # the rest became the database's name in every message; a key=value string was
    # taken for a SQLite path and named as one.
    with pytest.raises(InvalidInput) as refused:
        open_store(location)
    assert words in refused.value.message
    for piece in ("Canary7", "Can/", "ary7"):
        assert piece not in refused.value.message
    # a percent-encoded one is read as written
    from episteme.ledger.postgres.store import describe

    assert describe("postgresql://ops:Can%2Fary%407@127.0.0.1:5432/ledger") == (
        "postgresql://ops@127.0.0.1:5432/ledger"
    )
    # an @ in the query is no password (the user is libpq's: PGUSER here)
    monkeypatch.setenv("PGUSER", "ops")
    assert describe("postgresql://127.0.0.1:5432/ledger?application_name=a@b") == (
        "postgresql://ops@127.0.0.1:5432/ledger"
    )


@pytest.mark.parametrize("password", ["p", "s", "ql", "Canary7"])
def test_a_short_password_is_not_given_away_by_what_its_masking_removed(
    password: str,
) -> None:
    # Each of its occurrences in the parser's message was masked: "***ostgresql://u:***"
    # told that the password was "p".
    url = f"postgresql://u:{password}@[bad"
    with pytest.raises(InvalidInput, match="not a PostgreSQL URL") as refused:
        open_store(url)
    shown = refused.value.message
    assert "***ostgres" not in shown
    assert f"u:{password}@" not in shown
    if len(password) > 4:
        assert 'URI: "postgresql://u:***@[bad"' in shown  # where it stood, and nothing else
