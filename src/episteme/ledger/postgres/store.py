"""The PostgreSQL store: one ledger shared by many processes and machines (DESIGN §3).

Connections come from a psycopg pool. A write runs in one transaction that first
locks the single `chain_lock` row, so appends from every process form one linear
chain; group commit (shared with SQLite) lets one commit serve the writes queued in
this process meanwhile.

That transaction commits with ``synchronous_commit = off``, so the server releases
the row lock without waiting for the WAL flush. The write is acknowledged only after
a flush that covers it: a one-statement transaction, sent in the same round trip,
that writes a WAL record (``pg_logical_emit_message``) and so commits durably, after
ours in the WAL. Writers in other processes take the lock while this one waits, and
PostgreSQL flushes their commits together. Where the server's own setting is already
``off``, or the function is missing (the distributed engines), the chain transaction
commits as the server is set.

Serialization failures and deadlocks (SQLSTATE 40001, 40P01: routine on the
distributed engines that speak this protocol) run the group again with backoff. A
connection lost before COMMIT fails the writes of its group with `StoreUnavailable`,
and nothing is written. One lost after COMMIT was sent leaves the outcome with the
database: the store waits for the writer lock on a fresh connection (so the lost
transaction has ended) and looks for the journal rows it appended. The group's writes
succeed when they are there (flushed first), fail as before when not, and fail saying
that they may have been recorded when the database cannot tell in time
(`SETTLE_SECONDS`). Reads take a pooled connection per statement and try once more on
a fresh connection when the server went away under them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from importlib import resources
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, unquote

import orjson
import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from episteme.errors import Conflict, InvalidInput, SchemaBehind, StoreUnavailable
from episteme.ledger.canonical import canonical
from episteme.ledger.journal import Draft, Event
from episteme.ledger.model import Candidates
from episteme.ledger.postgres.adapt import (
    WRITE_BEGIN,
    Fetched,
    TxConn,
    configure,
    configure_read_only,
    translate,
)
from episteme.ledger.postgres.wire import READS_PREPARE_UP_TO, Result, Wire, forget
from episteme.ledger.records import RebuildReport
from episteme.ledger.sql import projector
from episteme.ledger.sql.base import WRITE_WAIT_S, SQLStore
from episteme.ledger.sql.projector import Conn
from episteme.ledger.sql.reads import PlanOnce, Reader, tsquery
from episteme.ledger.store import StoreReader

log = logging.getLogger(__name__)

MIGRATIONS = (
    "0001_init.sql",
    "0002_gardener.sql",
    "0003_diagnosis.sql",
    "0004_fold_accents.sql",
    "0005_text.sql",
    "0006_list_order.sql",
    "0007_constraint_tags.sql",
)
SCHEMA_VERSION = len(MIGRATIONS)
APPLICATION = "episteme"
MIGRATION_LOCK = 0x45505354_00000001  # advisory lock key: one migrating process at a time
SETTLE_SECONDS = 3.0
"""How long a write whose connection was lost after COMMIT keeps asking the database
whether it committed, before it reports that it may have been recorded."""
RECONNECT_S = 10.0
"""How long the pool keeps trying to replace a lost connection before it gives up. Its
attempts back off by doubling with no ceiling (1, 2, 4 ... s), so a long wait would
leave a long gap between attempts: after a 70 s outage, 48 s passed between the
database's return and the first call it served. Once the pool gives up, the next call
that finds no connection starts a fresh attempt at once; calls during the outage get
503 after the pool's 10 s wait, as before."""


_T = TypeVar("_T")
SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
"""How a run of reads starts (`reading`): one snapshot for all its statements."""


class _Dialect:
    """The statements PostgreSQL spells differently from SQLite."""

    MATCH = "v.arow IN (SELECT rowid FROM assertions WHERE fts @@ to_tsquery('simple', ?))"
    # The newest first, then their journal rows: a plan that joins before it sorts (the
    # one chosen when the statistics think an agent has few queries in the window) read
    # the payload of every one of them, 22,580 for the busiest agent at 1 M.
    QUERY_ROWS = (
        "SELECT q.id, q.seq, q.at, q.agent, q.lens, q.subject, q.text, q.as_of, j.payload,"
        " q.latency_us FROM (SELECT * FROM queries q {where}"
        " ORDER BY q.at DESC, q.seq DESC LIMIT ?) q"
        " JOIN journal j ON j.seq = q.seq ORDER BY q.at DESC, q.seq DESC"
    )
    # The planner would hash every query that ever served the subject (hundreds of
    # thousands for a busy one) before taking the newest few: take the newest per
    # assertion instead, from the (arow, query_seq) index.
    NEWEST_SERVED: str | None = (
        "SELECT DISTINCT x.query_seq FROM assertions v CROSS JOIN LATERAL"
        " (SELECT s.query_seq FROM served s WHERE s.arow = v.rowid AND s.query_seq <= ?"
        " ORDER BY s.query_seq DESC LIMIT ?) x WHERE {where} ORDER BY x.query_seq DESC LIMIT ?"
    )

    @staticmethod
    def match_text(text: str) -> str:
        return tsquery(text)


class _TxReader(_Dialect, Reader):
    """Reads on one connection: a write's transaction, or a run of reads (`reading`)."""


POOL_ENV = "EPISTEME_DB_POOL"
POOL_SIZE = 10


def pool_size_from_env(environ: Mapping[str, str] = os.environ) -> int:
    """The connections each process's pool may hold: `EPISTEME_DB_POOL`, else 10."""
    raw = environ.get(POOL_ENV, "").strip()
    if not raw:
        return POOL_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidInput(
            f"{POOL_ENV}={raw!r}: give the connections each process may hold, 1 to 100",
            field=POOL_ENV,
        )
    return int(raw)


def _typed_password(url: str) -> str | None:
    """The password as written in a URL (`scheme://user:PASSWORD@host...`), or None."""
    found = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://(?P<userinfo>[^@?#]*)@", url)
    if found is None or ":" not in found["userinfo"]:
        return None
    return found["userinfo"].partition(":")[2] or None


_PASSWORD_IN_URL = re.compile(
    r"(^[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*:)[^@/?#]*(?=@)|([?&]password=)[^&#]*"
)
"""Where a URL holds a password: after its user, and as ?password=."""


def _masked_url(url: str) -> str:
    return _PASSWORD_IN_URL.sub(lambda m: (m.group(1) or m.group(2)) + "***", url)


def describe(url: str) -> str:
    """The database a URL names, for messages: never the password."""
    if "://" in url and url.split("://", 1)[1].split("/", 1)[0].count("@") > 1:
        # an unescaped @ in the password: libpq would read the rest of it as the host
        raise InvalidInput(
            "the URL has more than one @ before the host: write an @ in the password as %40",
            field="db",
        )
    typed = _typed_password(url)
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        # the parser quotes what it could not read: the password, perhaps, in the user
        # part or as ?password=…; masked where it stands in the URL (replacing each of
        # its occurrences in the message gave a short one away by what went missing)
        why = _reason(exc).replace(url, _masked_url(url))
        given = [typed, *re.findall(r"[?&]password=([^&#]*)", url)]
        for secret in sorted({g for g in given if g} | {unquote(g) for g in given if g}):
            if len(secret) >= 4:  # a quoted piece of the URL: long enough to be no word
                why = why.replace(secret, "***")
            elif secret in why:  # and perhaps inside other words: say none of them
                why = "libpq could not read it; its words are not shown, as they quote it"
        raise InvalidInput(f"not a PostgreSQL URL ({why})", field="db") from None
    if typed is not None and re.search(r"[?&]password=", url):
        raise InvalidInput(
            "the URL gives a password twice, before the host and as ?password=: keep one",
            field="db",
        )
    if typed is not None and parts.get("password") != unquote(typed):
        # e.g. a / in it: libpq then reads the user as the host and the password's start
        # as the port, and the rest would show up in messages as the database's name
        raise InvalidInput(
            "the URL's password is not written as a URL needs it (not shown): percent-encode "
            "/ as %2F, @ as %40, % as %25, # as %23, ? as %3F and a space as %20",
            field="db",
        )
    return _shown(parts)


def _shown(parts: Mapping[str, object]) -> str:
    """`postgresql://user@host:port/db` for the server libpq will reach: what the URL
    leaves out is libpq's default (PGHOST, PGPORT, PGUSER, PGDATABASE, a PGSERVICE entry,
    the login name), read as libpq reads it. A Unix socket's directory is written
    percent-encoded, as libpq takes it in a URL; no host at all is libpq's own socket
    directory, left empty (`postgresql://user@:5432/db`)."""
    settings = _libpq_settings(parts)
    default_port = _libpq_settings({}).get("port") or "5432"  # for a host given none
    user = settings.get("user", "")
    hosts = (settings.get("host") or settings.get("hostaddr") or "").split(",")
    ports = settings.get("port", "").split(",")
    if len(ports) != len(hosts):  # one port for every host
        ports = [ports[0]] * len(hosts)
    where = ",".join(
        f"{_host(host)}:{port or default_port}" for host, port in zip(hosts, ports, strict=True)
    )
    dbname = settings.get("dbname") or user
    return f"postgresql://{quote(user, safe='') + '@' if user else ''}{where}/{dbname}"


def _libpq_settings(parts: Mapping[str, object]) -> dict[str, str]:
    """The settings libpq connects with: those of the URL, else its defaults (its
    environment variables, a service file's entry, the login name as the user)."""
    defaults = {
        opt.keyword.decode(): opt.val.decode("utf-8", "replace")
        for opt in pq.Conninfo.get_defaults()
        if opt.val
    }
    return defaults | {key: str(value) for key, value in parts.items() if value not in (None, "")}


_NO_DATABASE = re.compile(r'database "(?P<name>.+?)" does not exist')


def _create_it_first(why: str, role: str) -> str:
    """`why` with the command that makes the database it names as missing, if it does."""
    missing = _NO_DATABASE.search(why)
    if missing is None:
        return why
    owner = f" --owner={shlex.quote(role)}" if role else ""
    return (
        f"{why}: create it first, as a role that may create databases: createdb{owner}"
        f" --encoding=UTF8 --template=template0 {shlex.quote(missing['name'])}"
    )


def _grant_reading(exc: BaseException, role: str) -> str:
    """What to grant a role refused a read of the ledger's tables, as deploy.md has it."""
    if not isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return ""
    who = role if re.fullmatch(r"[a-z_][a-z0-9_$]*", role) else '"' + role.replace('"', '""') + '"'
    return (
        ": grant the role SELECT on the ledger's tables (GRANT SELECT ON ALL TABLES IN"
        f" SCHEMA public TO {who}; for a ledger in another schema, name that one and grant"
        " USAGE on it too)"
    )


def _host(host: str) -> str:
    if host.startswith(("/", "@")):  # a Unix socket's directory (@: an abstract one)
        return quote(host, safe="")
    return f"[{host}]" if ":" in host else host  # an IPv6 address


LIVENESS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}
"""libpq settings each connection gets unless its URL gives its own. Without them a
network that drops packets silently (a partition, a dead host: no reset) holds a call
on TCP's retransmissions for about 15 minutes; with them the call fails after 60 s
with the cause (`tcp_user_timeout`), and a dead idle connection is closed within about
a minute (the keepalives), so the pool replaces it."""


LEADER_LIVENESS = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "30000",
    "idle_session_timeout": "30000",
}
"""The server's side of a leadership's connection. The lock lives as long as the server
keeps the session, and by default the server keeps a silent client's session for about
2 h 11 min (keepalives after 7,200 s idle, then 9 probes 75 s apart): a leader whose host
died or was cut off would hold the lock, and no one would lead, for that long. With
these the server ends the session within about 30 s of silence, whether it had data
waiting to be acknowledged (`tcp_user_timeout`) or not (the keepalives). A process that
is frozen but whose host still answers for it (stopped, a paused VM, stuck in the
kernel) keeps its connection alive; the leader asks on its connection every second, so a
session idle for 30 s (`idle_session_timeout`, PostgreSQL 14 on) is one whose process
stopped asking, and the server ends it."""


def with_liveness(url: str) -> str:
    """`url` as connection settings, with `LIVENESS` for what it does not set."""
    given = conninfo_to_dict(url)
    return make_conninfo(url, **{k: v for k, v in LIVENESS.items() if k not in given})


def _over_limit(exc: BaseException) -> bool:
    """A statement over one of PostgreSQL's limits (SQLSTATE class 54: a text too long for
    a tsvector, a statement too complex). An OperationalError to psycopg, but the fault of
    one write's value: the connection and the transaction's other writes are sound."""
    return str(getattr(exc, "sqlstate", None) or "").startswith("54")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _PooledConn:
    """The store's read connection: each statement borrows one from the pool."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    def execute(self, sql_text: str, parameters: Any = (), /) -> Fetched:
        def run(c: psycopg.Connection[Any]) -> Fetched:
            return Fetched(c.execute(translate(sql_text), parameters, binary=True).fetchall())

        return self._store.borrowed(run)

    def executemany(self, sql_text: str, parameters: Any, /) -> None:
        raise TypeError("the read connection does not write")


class _LostBeforeCommit(StoreUnavailable):
    """A write transaction's connection was found dead before COMMIT was sent, or without
    the statements prepared on it: nothing was written, and the group may run again (on
    a fresh connection, for one the server ended while it was idle: a restart, an idle
    timeout, a terminated backend)."""


class PostgresStore(_Dialect, SQLStore):
    """A ledger in a PostgreSQL database (or one that speaks its protocol)."""

    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    FATAL = (
        psycopg.OperationalError,
        psycopg.errors.ReadOnlySqlTransaction,
        psycopg.errors.InsufficientPrivilege,
    )
    """The whole group fails: the connection, or what the server lets this role do."""
    PIPELINED = True
    RETRY = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)
    RECONNECT = (_LostBeforeCommit,)
    SCHEMA_VERSION = SCHEMA_VERSION
    SINCE: ClassVar[dict[str, int]] = {
        "gardener": MIGRATIONS.index("0002_gardener.sql") + 1,
        "diagnosis": MIGRATIONS.index("0003_diagnosis.sql") + 1,
    }

    def __init__(
        self,
        url: str,
        *,
        create: bool = False,
        ensure: bool = False,
        pool_size: int | None = None,
        defer_flush: bool = True,
        read_only: bool = False,
    ) -> None:
        super().__init__()
        assert not (read_only and (create or ensure))
        self.read_only = read_only
        self.read_retries = 0
        """Reads run again after a serialization failure (`borrowed`), since opening."""
        self.defer_flush = False
        """Whether chain commits release the lock before the WAL flush (see `_chain_tx`)."""
        self.appended: list[tuple[int, bytes]] = []
        """The journal rows (sequence number, hash) the open chain transaction appended,
        rows of savepoints rolled back included: how a write that lost its connection at
        COMMIT learns whether it committed (`_committed`)."""
        self.url = describe(url)
        self._role = _libpq_settings(conninfo_to_dict(url)).get("user", "")
        self._making = create or ensure
        """Whether this open may make the ledger: a missing database is then named with
        the command that creates it."""
        size = pool_size or pool_size_from_env()  # refused before anything is made
        self.where = self.url
        self._dsn = with_liveness(url)
        self.created = False
        self.migrated_from: int | None = None
        self.schema_version = SCHEMA_VERSION
        self.remote = True
        try:
            with self._connect() as conn:
                if read_only:
                    self._found(conn)
                else:
                    self._prepare(conn, create=create, ensure=ensure)
                row = conn.execute("SELECT current_schema()").fetchone()
                self.schema = str(row[0]) if row else "public"
                self.defer_flush = defer_flush and not read_only and _can_defer_flush(conn)
                self.plan_once = _plan_once(conn)  # how its readers plan a lens's reads
        except psycopg.errors.LockNotAvailable as exc:
            if self.migrated_from is None:
                raise self.unavailable(exc) from None
            raise SchemaBehind(
                f"{self.url} holds a ledger of schema version {self.migrated_from}, and this"
                f" episteme needs {SCHEMA_VERSION}; migrating it waited {WRITE_WAIT_S:.0f} s"
                " for its tables, which another session holds (an open transaction, a"
                " pg_dump, a server of the older version): end it, then run `episteme"
                " migrate`"
            ) from None
        except psycopg.OperationalError as exc:
            raise self.unavailable(exc) from None
        except psycopg.Error as exc:  # e.g. a role without CREATE on the schema
            upgrading = self.migrated_from
            if upgrading is not None:  # an older ledger this role may not migrate
                how = (
                    "run `episteme migrate` on the primary, with this episteme"
                    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction)  # a standby
                    else "run `episteme migrate` as a role that may create tables in its schema"
                )
                raise SchemaBehind(
                    f"{self.url} holds a ledger of schema version {upgrading}, and this "
                    f"episteme needs {SCHEMA_VERSION}; migrating it failed: {_reason(exc)}: " + how
                ) from None
            if read_only:  # it reads the schema's version: it was refused a read
                raise StoreUnavailable(
                    f"cannot read the ledger at {self.url}: {_reason(exc)}"
                    + _grant_reading(exc, self._role)
                ) from None
            raise StoreUnavailable(
                f"PostgreSQL at {self.url} refused to set up the ledger: {_reason(exc)}"
            ) from None
        self.pool = ConnectionPool(
            self._dsn,
            min_size=1,
            max_size=size,
            kwargs={"autocommit": True},
            configure=configure_read_only if read_only else configure,
            timeout=10.0,
            reconnect_timeout=RECONNECT_S,
            open=True,
            name="episteme",
        )
        self._conn = _PooledConn(self)
        self._leaderships: list[_AdvisoryLeadership] = []
        self._closed = threading.Event()

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            raise self.unavailable(exc) from None
        (configure_read_only if self.read_only else configure)(conn)
        return conn

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, PoolTimeout):
            why = f"no connection could be had within 10 s ({self._why_no_connection()})"
        else:
            why = _reason(exc)
            if self._making:
                why = _create_it_first(why, self._role)
        return StoreUnavailable(f"PostgreSQL at {self.url} is unavailable: {why}")

    def _why_no_connection(self) -> str:
        """Why the pool had no connection to give: one direct attempt says what the
        pool's own attempts met (a password rotated, too many clients, the server
        away), or, when it succeeds, that the pool's connections were all in use."""
        try:
            with psycopg.connect(self._dsn, autocommit=True, connect_timeout=2):
                pass
        except psycopg.Error as exc:
            return _reason(exc).removeprefix("connection failed: ")
        stats = self.pool.get_stats()
        if stats.get("pool_size", 0) < self.pool.max_size:
            return (
                "the pool's own attempts had failed, and the database takes connections "
                "again now: retry"
            )
        size = self.pool.max_size
        return f"all {size} of this process's connections were busy: look for slow statements"

    @property
    def conn(self) -> Conn:
        return self._conn

    def borrowed(self, read: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """`read` on a connection borrowed from the pool (reads outside a write). A read
        that conflicts (SQLSTATE 40001, which distributed engines report for reads too)
        runs again with backoff, and one that lost its server runs once more on a fresh
        connection: reads change nothing."""
        conflicts, lost = 0, False
        while True:
            try:
                with self.pool.connection() as c:
                    return read(c)
            except PoolTimeout as exc:
                raise self.unavailable(exc) from None
            except self.RETRY:
                self._conflicted(conflicts, "reads")
                conflicts += 1
                self.read_retries += 1
            except psycopg.OperationalError as exc:
                if lost:
                    raise self.unavailable(exc) from None
                lost = True
                self.pool.check()  # the server restarted: drop the dead connections, try again
            except psycopg.errors.InvalidSqlStatementName:
                if lost:
                    raise
                lost = True  # `reading` forgot the connection's statements: prepare again

    def candidates(
        self,
        subject: str | None,
        as_of: int | None = None,
        text: str | None = None,
        lifecycles: Collection[str] | None = None,
        listed: Collection[str] = (),
    ) -> Candidates:
        """A lens's statements go out together on one borrowed connection: one round trip,
        where each statement on its own would borrow one and wait for its answer. Not one
        snapshot: an audited query reads inside its write's transaction, and this is for
        the unaudited answer, which a snapshot's round trip slowed by 4 to 10 %."""
        return self.reading(
            lambda r: r.candidates(subject, as_of, text, lifecycles, listed), snapshot=False
        )

    def reading(self, read: Callable[[StoreReader], _T], *, snapshot: bool = True) -> _T:
        """`read` in one snapshot, on one borrowed connection in pipeline mode (`Wire`).

        Its statements run in one read-only REPEATABLE READ transaction, so a write
        committed meanwhile is seen by all of them or none; the transaction costs a round
        trip more (COMMIT), which `snapshot=False` saves. They go out without waiting,
        and a result is waited for only when read; each statement on `conn` borrows a
        connection of its own. Statements are prepared once per connection while it has
        fewer than `READS_PREPARE_UP_TO` (planning a join costs more than running it),
        parsed at each use past that: reads build `IN` lists of every length, and the rest
        of the allowance is the writes'."""
        self.check_current()

        def run(raw: psycopg.Connection[Any]) -> _T:
            wire = Wire(raw, room=READS_PREPARE_UP_TO)
            try:
                if snapshot:
                    wire.execute(SNAPSHOT)
                done = read(_TxReader(wire, self.plan_once))
                if snapshot:
                    wire.execute("COMMIT")
                wire.finish()
            except BaseException as exc:  # a read that finds nothing raises too
                wire.abort(exc)
                if isinstance(exc, psycopg.errors.InvalidSqlStatementName):
                    forget(raw)
                raise
            return done

        return self.borrowed(run)

    def _reader(self, conn: Conn) -> Reader:
        return _TxReader(conn, self.plan_once)

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            for lead in self._leaderships:
                lead.release()
            self.pool.close()

    def probe(self, timeout: float = 2.0) -> int:
        """The journal's length, within `timeout`: `/health` must answer while the database
        is away, not after the pool's usual wait (and retry) for a connection."""
        return self.probe_reading(lambda r: r.head()[0], timeout)

    def probe_reading(self, read: Callable[[StoreReader], _T], timeout: float = 2.0) -> _T:
        try:
            with self.pool.connection(timeout=timeout) as c:
                try:
                    with c.transaction():
                        # and the statements too: a lock on the journal (an operator's
                        # VACUUM FULL or LOCK TABLE) held it for the writers' 30 s
                        ms = max(1, int(timeout * 1000))
                        c.execute(f"SET LOCAL statement_timeout = {ms}")
                        return read(self._reader(TxConn(c)))
                except BaseException:
                    # psycopg's rollback may have deallocated every statement prepared on
                    # it: forgotten, or the next requests on it failed "does not exist"
                    forget(c)
                    raise
        except PoolTimeout:
            raise StoreUnavailable(
                f"PostgreSQL at {self.url} is unavailable: no connection within {timeout:g} s"
            ) from None
        except psycopg.OperationalError as exc:
            self.pool.check()  # drop the dead connections so the next call reconnects
            raise self.unavailable(exc) from None

    def workers(self) -> dict[str, str]:
        stats = self.pool.get_stats()
        return {
            "pool": (
                f"{stats.get('pool_size', 0)} connections, {stats.get('pool_available', 0)} idle,"
                f" {stats.get('requests_waiting', 0)} waiting"
            ),
            "write_retries": f"{self.retries} since start (serialization failures, deadlocks)",
            "read_retries": f"{self.read_retries} since start (serialization failures)",
        }

    # -- schema ------------------------------------------------------------------------

    def _prepare(self, conn: psycopg.Connection[Any], *, create: bool, ensure: bool) -> None:
        """Check the database holds a ledger of a version we know; create or migrate it."""
        row = conn.execute("SHOW server_encoding").fetchone()
        found = row[0] if row else "?"  # bytes where the database has no encoding
        encoding = found.decode("ascii", "replace") if isinstance(found, bytes) else str(found)
        if encoding.upper() != "UTF8":  # text it cannot encode would fail later, as a 500
            raise InvalidInput(
                f"{self.url} stores text as {encoding}; the ledger needs UTF8: create the "
                "database with ENCODING 'UTF8' (and TEMPLATE template0 if the cluster "
                "default is another)",
                field="db",
            )
        if not create and self._current(conn):
            return  # nothing to decide: no lock, and no word of waiting for one
        with conn.transaction():
            # one process at a time decides and migrates; the others then find it done,
            # however long it takes (minutes at a million assertions): their wait is not
            # the 30 s a write may wait for a lock
            got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            if got.fetchone() != (True,):
                log.warning(
                    "%s: another process is creating or migrating the ledger; waiting for it",
                    self.url,
                )
                found = conn.execute("SHOW lock_timeout").fetchone()
                conn.execute("SET LOCAL lock_timeout = 0")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                # back to the wait of a write, for the migration this process may now run
                conn.execute("SELECT set_config('lock_timeout', %s, true)", found)
            version = self._version(conn, creating=create)
            if version is None:
                if not (create or ensure):
                    raise StoreUnavailable(
                        f"no ledger in {self.url}: run `episteme init --db URL` first"
                    )
                self._migrate(conn, 0)
                self.created = True
                return
            if create:
                raise Conflict(f"{self.url} already holds a ledger")
            self._not_newer(version)
            if version < SCHEMA_VERSION:
                self.migrated_from = version  # (named in the error if migrating fails)
                self._migrate(conn, version)

    def _current(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether the ledger is there, of this version, as most opens find it. Read
        without the migration lock, and without waiting for a table a migration holds
        (then: not known, and the caller takes the lock to find out)."""
        try:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '100ms'")
                return self._version(conn) == SCHEMA_VERSION
        except psycopg.errors.LockNotAvailable:
            return False

    def _found(self, conn: psycopg.Connection[Any]) -> None:
        """Check the database holds a ledger of a version we know, changing nothing: an
        older one is kept as found (`schema_version`)."""
        version = self._version(conn)
        if version is None:
            raise StoreUnavailable(f"no ledger in {self.url}: give the database that holds it")
        self._not_newer(version)
        self.schema_version = version

    def _not_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"{self.url} has schema version {version}, newer than this episteme "
                f"({SCHEMA_VERSION}): upgrade episteme"
            )

    def _version(self, conn: psycopg.Connection[Any], *, creating: bool = False) -> int | None:
        # in the schema where the ledger's tables are made, not wherever the search path
        # finds a table of that name (another schema's ledger, another app's `meta`)
        row = conn.execute("SELECT current_schema()").fetchone()
        schema = row[0] if row else None
        if schema is None:
            raise StoreUnavailable(
                f"{self.url}: no schema of the connection's search_path exists, so there is"
                " nowhere to keep the ledger: create one, or set search_path to one"
            )
        found = conn.execute(
            "SELECT to_regclass(format('%%I.meta', %s::text)),"
            " to_regclass(format('%%I.journal', %s::text)),"
            " to_regclass('meta')::text",
            (schema, schema),
        ).fetchone()
        assert found is not None
        meta, journal, elsewhere = found
        if meta is None:
            if journal is not None:
                raise StoreUnavailable(
                    f"{self.url} has a journal table but is not an Episteme ledger: "
                    "give an empty database"
                )
            if elsewhere is not None and not creating:
                # a schema made in front of the ledger's on the search path (one named
                # after the role, as PostgreSQL advises): never a new ledger in its place
                raise StoreUnavailable(
                    f"{self.url}: the connection's schema {schema!r} holds no ledger, but"
                    f" its search_path finds one at {elsewhere}: set search_path (in the"
                    " URL: options=-csearch_path%3D...) to the ledger's schema, or run"
                    f" `episteme init` to start a new one in {schema!r}"
                )
            return None
        rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if rows.get("application") != APPLICATION:
            raise StoreUnavailable(f"{self.url} is not an Episteme ledger: give an empty database")
        version = rows.get("schema_version")
        if version is None or not (version.isascii() and version.isdigit()) or int(version) < 1:
            found = "none" if version is None else repr(version[:40])
            raise StoreUnavailable(
                f"{self.url} holds a ledger whose schema version in table meta is not a "
                f"version number (found {found}): restore the database from a backup"
            )
        return int(version)

    @staticmethod
    def _migrate(conn: psycopg.Connection[Any], version: int) -> None:
        conn.execute("SET LOCAL standard_conforming_strings = on")  # '\\' is two characters
        for name in MIGRATIONS[version:]:
            conn.execute(_script(name))
        if 0 < version < _JSON_AS_TEXT:
            _canonical_json_columns(conn)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('application', %s), ('schema_version', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (APPLICATION, str(SCHEMA_VERSION)),
        )

    # -- writing -----------------------------------------------------------------------

    def _transaction_locked(self) -> AbstractContextManager[Conn]:
        self._writable()
        return self._chain_tx()

    def _jobs_transaction(self) -> AbstractContextManager[Conn]:
        self._writable()
        return self._tx()

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        """A transaction on a pooled connection (not holding the journal's writer lock)."""
        with self._failures(), self.pool.connection() as raw:
            try:
                with raw.transaction():
                    yield TxConn(raw)
            except BaseException:
                forget(raw)  # psycopg's rollback may have deallocated every statement
                raise

    @contextmanager
    def _chain_tx(self) -> Iterator[Conn]:
        """A transaction holding the journal's writer lock (the `chain_lock` row).

        It runs in libpq's pipeline mode (`Wire`) with its own BEGIN and COMMIT: BEGIN
        and the lock go out with the transaction's first read (one round trip, not
        three), and COMMIT goes out together with the statement that makes it durable
        (when the flush is deferred): the server releases the lock at COMMIT, then waits
        for the disk on that statement's own commit, which follows ours in the WAL, all
        in one round trip. The write returns after both, so it is durable when
        acknowledged. A backfill chunk rides the same pipeline: statements whose results
        nobody reads go out without waiting, and a round trip is spent only where a
        result is read.
        """
        with self._failures(), self.pool.connection() as raw:
            wire = Wire(raw)
            commit: Result | None = None
            self.appended = []
            try:
                wire.execute(WRITE_BEGIN)
                left = self._lock_wait()
                if left < WRITE_WAIT_S - 1:  # its group waited in this process already
                    wire.execute(f"SET LOCAL lock_timeout = {max(1, int(left * 1000))}")
                wire.execute(self._LOCK_DEFERRED if self.defer_flush else self._LOCK)
                yield wire
                commit = wire.execute("COMMIT")
                if self.defer_flush:
                    wire.execute(self._FLUSH)
                wire.sync()
                wire.close()
            except BaseException as exc:
                wire.abort(exc)
                lost = raw.closed and isinstance(exc, psycopg.OperationalError)
                if commit is None and lost and not isinstance(exc, self.RETRY):
                    raise _LostBeforeCommit(self.unavailable(exc).message) from None
                stale = isinstance(exc, psycopg.errors.InvalidSqlStatementName)
                if stale:
                    forget(raw)  # the server dropped the statements prepared on it
                rolled_back = commit is None or commit.error is not None  # or never sent
                if stale and rolled_back:  # nothing was written: run it again
                    raise _LostBeforeCommit(f"{self.url}: {_reason(exc)}") from None
                if rolled_back or not isinstance(exc, Exception):
                    raise
                outcome = self._committed(self.appended, lost=raw.closed)
                if outcome is False:
                    raise
                if outcome is None:
                    raise StoreUnavailable(
                        f"{self.unavailable(exc).message}; this happened as a write was "
                        "committing, and it may have been recorded: look for it in the "
                        "ledger before making it again"
                    ) from None
                log.warning("a write committed as its connection was lost (%s)", _reason(exc))

    def _reconnect(self) -> None:
        self.pool.check()  # the server ended one idle connection: maybe all of them

    def _append(
        self, conn: Conn, drafts: Sequence[Draft], seq: int, at: int, prev: bytes
    ) -> list[Event]:
        events = super()._append(conn, drafts, seq, at, prev)
        self.appended.extend((e.seq, e.hash) for e in events)
        return events

    _LOCK = "SELECT id FROM chain_lock WHERE id = 1 FOR UPDATE"
    # the commit need not wait for the WAL flush: the flush follows it (see _chain_tx)
    _LOCK_DEFERRED = (
        "SELECT set_config('synchronous_commit', 'off', true), id"
        " FROM chain_lock WHERE id = 1 FOR UPDATE"
    )
    _FLUSH = "SELECT pg_logical_emit_message(true, 'episteme', 'flush')"

    def _committed(self, appended: list[tuple[int, bytes]], *, lost: bool) -> bool | None:
        """How a transaction ended that failed after COMMIT was sent (its connection lost,
        or the statement after COMMIT refused), from the journal rows it `appended`: True
        when the journal holds one of them, False when it holds none, None when the
        database cannot say within `SETTLE_SECONDS`. The writer lock is taken first, so
        the transaction has ended (a backend may still be finishing our COMMIT). A
        savepoint rolled back inside it leaves rows that are not there; any one of them
        found means it committed. A commit found here is flushed before this returns:
        with the flush deferred, it may still be in the server's WAL buffers, and a flush
        of our own covers everything before it."""
        if not appended:
            return None if lost else False  # nothing to look for
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            left = deadline - time.monotonic()
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(  # libpq's shortest connect timeout is 2 s
                    self._dsn, autocommit=True, connect_timeout=max(2, math.ceil(left))
                ) as conn,
            ):
                configure(conn)
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = {max(1, int(left * 1000))}")
                    conn.execute(self._LOCK)
                    rows = conn.execute(
                        "SELECT seq, hash FROM journal WHERE seq = ANY(%s)",
                        ([seq for seq, _ in appended],),
                    ).fetchall()
                found = {(int(seq), bytes(h)) for seq, h in rows}
                if found.isdisjoint(appended):
                    return False
                if self.defer_flush:
                    conn.execute(self._FLUSH)
                return True
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)  # the database away for a moment

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """Database failures of a write, as the store reports them."""
        try:
            yield
        except self.RETRY:
            raise
        except psycopg.errors.LockNotAvailable:
            raise StoreUnavailable(
                f"{self.url}: the ledger stayed locked for {WRITE_WAIT_S:.0f} s: look for a "
                "stuck import or backfill, or a statement locking its tables (VACUUM FULL, "
                "ALTER TABLE, LOCK TABLE)"
            ) from None
        except (psycopg.OperationalError, PoolTimeout) as exc:
            if _over_limit(exc):
                raise  # one write's value, not the database: that write fails alone
            raise self.unavailable(exc) from None
        except (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege) as e:
            raise StoreUnavailable(
                f"PostgreSQL at {self.url} refused the write: {_reason(e)} (a standby, a "
                "role or database set read-only, or a role without the rights docs/deploy.md "
                "lists: point the ledger at the primary, or grant them)"
            ) from None

    @contextmanager
    def _pipelined(self, conn: Conn) -> Iterator[Callable[[], object]]:
        """A group runs in the chain transaction's pipeline: the journal row and the
        projection inserts of a write go out together, and one round trip (`sync`) ends
        each write, instead of one per statement."""
        assert isinstance(conn, Wire), "a chain transaction runs in a pipeline"
        yield conn.sync

    def _fails_group(self, exc: BaseException) -> bool:
        return super()._fails_group(exc) and not _over_limit(exc)

    def _before_import(self) -> None:
        """Vacuum and analyze the ledger's tables before an import fills them. A copy or
        import interrupted (the database stopped, Ctrl-C) leaves them empty but full of
        dead rows that autovacuum may not have reached, nor the statistics counted (a
        stop in immediate mode resets them): copying again then took 18 times as long,
        or never ended. On an empty ledger this takes milliseconds a table; a ledger with
        events is left alone (the import refuses it)."""
        with self.pool.connection() as c:  # autocommit: VACUUM runs in no transaction
            if c.execute("SELECT 1 FROM journal LIMIT 1").fetchone() is not None:
                return
            tables = c.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()
            for (table,) in tables:
                c.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))

    def _bulk(self, conn: Conn) -> None:
        # The projection's lookups are by key (a query's served rows, an assertion's
        # row). Planned while the tables look empty, they scan them whole, once per
        # event, as the import fills them: after a failed or killed copy, whose rows
        # vacuum then counted as none, a copy of 32,467 events took 134 s against 13 s.
        conn.execute("SET LOCAL enable_seqscan = off")

    def _item_error(self, exc: Exception) -> Exception:
        # a NUL character in a text field, a text too long for the full-text index
        if isinstance(exc, psycopg.DataError) or _over_limit(exc):
            return InvalidInput(f"PostgreSQL refused a value: {_reason(exc)}")
        return exc

    def leadership(self, name: str) -> _AdvisoryLeadership:
        """Leadership of `name` among every process on this database (freed by `close`)."""
        self._writable()
        lead = _AdvisoryLeadership(name, self)
        self._leaderships.append(lead)
        return lead

    # -- integrity ---------------------------------------------------------------------

    def rebuild(self, repair: bool = False) -> RebuildReport:
        """Replay the journal into a scratch schema; compare; optionally replace.

        The replay catches up under the writer lock before comparing, so writes that
        land meanwhile are not reported as differences.
        """
        self._writable()
        fresh = sql.Identifier(f"episteme_rebuild_{secrets.token_hex(4)}")
        main = sql.Identifier(self.schema)
        with self._failures(), self._connect() as raw:
            try:
                raw.execute(sql.SQL("CREATE SCHEMA {}").format(fresh))
                raw.execute(sql.SQL("SET search_path TO {}").format(fresh))
                with raw.transaction():
                    raw.execute("SET LOCAL standard_conforming_strings = on")
                    for name in MIGRATIONS:
                        raw.execute(_script(name))
                    count, seen = self.replay_to(TxConn(raw), self.events())
                with raw.transaction():
                    raw.execute(
                        sql.SQL("SELECT id FROM {}.chain_lock WHERE id = 1 FOR UPDATE").format(main)
                    )
                    tail = raw.execute(
                        sql.SQL(
                            "SELECT seq, at, actor, kind, payload, hash FROM {}.journal"
                            " WHERE seq > %s ORDER BY seq"
                        ).format(main),
                        (seen,),
                        binary=True,
                    )
                    count += self.replay(TxConn(raw), (Event(*r) for r in tail))
                    diffs = {}
                    for table in projector.PROJECTIONS:
                        cols = _columns(raw, self.schema, table)
                        n = _difference(
                            raw,
                            cols,
                            sql.SQL("{}.{}").format(main, sql.Identifier(table)),
                            sql.SQL("{}.{}").format(fresh, sql.Identifier(table)),
                        )
                        if n:
                            diffs[table] = n
                    if repair and diffs:
                        for table in projector.PROJECTIONS:
                            cols = _columns(raw, self.schema, table)
                            target = sql.SQL("{}.{}").format(main, sql.Identifier(table))
                            source = sql.SQL("{}.{}").format(fresh, sql.Identifier(table))
                            raw.execute(sql.SQL("DELETE FROM {}").format(target))
                            raw.execute(
                                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                                    target, cols, cols, source
                                )
                            )
            except BaseException:
                # the failure is what to report, not the clean-up's (which a read-only
                # database refuses too, naming DROP SCHEMA where CREATE SCHEMA failed)
                with contextlib.suppress(psycopg.Error):
                    _drop_scratch(raw, fresh)
                raise
            _drop_scratch(raw, fresh)
        return RebuildReport(
            ok=not diffs, events=count, differences=diffs, repaired=bool(repair and diffs)
        )


def _drop_scratch(raw: psycopg.Connection[Any], schema: sql.Identifier) -> None:
    raw.execute("RESET search_path")
    raw.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))


class _AdvisoryLeadership:
    """A session advisory lock on a connection of its own (not pooled: the session is
    the lock). The server drops it when the process or its connection dies."""

    def __init__(self, name: str, store: PostgresStore) -> None:
        self.name, self._store = name, store
        digest = hashlib.blake2b(f"episteme:lead:{name}".encode(), digest_size=8).digest()
        self._key = int.from_bytes(digest, "big", signed=True)
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False
        self._busy = threading.Lock()  # held while the connection talks to the server
        self._left = False  # a release gave up on a database that did not answer

    def acquire(self) -> bool:
        with self._busy:
            try:
                if self._conn is None or self._conn.closed:
                    self._held = False
                    self._conn = self._store._connect()
                    _server_side_liveness(self._conn)
                if self._held:
                    self._conn.execute("SELECT 1")  # still connected, so still ours
                    return True
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
                self._held = bool(row and row[0])
                return self._held
            except (psycopg.OperationalError, StoreUnavailable):
                self._drop()
                return False

    def release(self, wait: float = 2.0) -> None:
        """Unlock and close within `wait` seconds, or leave it: a database that stopped
        answering holds `acquire`'s check, or the unlock itself (a frozen server's kernel
        still acknowledges what is sent, so no socket timeout ends the wait), and closing
        a connection another thread is using can crash the process. The unlock runs on a
        thread of its own, which keeps the connection until it is done. The session, and
        the lock with it, then end when this process does; a later release does not wait
        again for the same answer."""
        deadline = time.monotonic() + wait
        if self._busy.acquire(timeout=0 if self._left else wait):
            done = threading.Event()

            def drop() -> None:
                try:
                    self._drop()
                finally:
                    self._busy.release()
                    done.set()

            threading.Thread(target=drop, name=f"release-{self.name}", daemon=True).start()
            if done.wait(max(0.0, deadline - time.monotonic())):
                self._left = False
                return
        if not self._left:
            log.warning(
                "leadership %s: the database does not answer; the lock is left to end"
                " with this process",
                self.name,
            )
        self._left = True

    def _drop(self) -> None:
        held, self._held = self._held, False
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                if held:  # at once: a closed session frees it only when its backend ends
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
                self._conn.close()
            self._conn = None


def _server_side_liveness(conn: psycopg.Connection[Any]) -> None:
    """`LEADER_LIVENESS` on `conn`, each where the server has the setting (PostgreSQL has
    them all; a Unix socket ignores them, and some compatible engines lack them)."""
    for name, value in LEADER_LIVENESS.items():
        try:
            conn.execute(f"SET {name} = {value}")
        except psycopg.OperationalError:
            raise
        except psycopg.Error:  # a setting this engine does not have
            log.debug("leadership connection: %s not set", name)


def _can_defer_flush(conn: psycopg.Connection[Any]) -> bool:
    """Whether chain commits can skip the flush and be flushed after: the server commits
    synchronously by default and this role may write a WAL message. Not on engines
    without either (CockroachDB, YugabyteDB): there every commit is as the server does."""
    try:
        row = conn.execute(
            "SELECT current_setting('synchronous_commit', true),"
            " to_regprocedure('pg_logical_emit_message(boolean,text,text)') IS NOT NULL"
            " AND has_function_privilege('pg_logical_emit_message(boolean,text,text)',"
            " 'execute')"
        ).fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0] not in (None, "off") and row[1])


_PLANNING = {"plan_cache_mode": "force_generic_plan", "max_parallel_workers_per_gather": "0"}


def _plan_once(conn: psycopg.Connection[Any]) -> PlanOnce | None:
    """A lens's reads of a subject planned once per connection: a generic plan, without
    parallel workers (a plan that fits every subject expects more rows than one has, and
    starting workers took 10 ms of a 1 ms read). The values the transaction had are kept
    aside first (in `episteme.*` settings) and put back after the statements; all of it
    lasts for the transaction only. Tried once here: an engine that lacks a setting or
    refuses a value plans as it does."""

    def each(template: str) -> str:
        return "SELECT " + ", ".join(template.format(k=k, v=v) for k, v in _PLANNING.items())

    plan = PlanOnce(
        (
            each("set_config('episteme.{k}', current_setting('{k}'), true)"),
            each("set_config('{k}', '{v}', true)"),
        ),
        each("set_config('{k}', current_setting('episteme.{k}'), true)"),
    )
    now = each("current_setting('{k}')")
    try:
        with conn.transaction():
            was = conn.execute(now).fetchone()
            for statement in plan.before:
                conn.execute(statement)
            conn.execute(plan.after)
            if conn.execute(now).fetchone() != was:
                return None
    except psycopg.Error:
        return None
    return plan


_JSON_AS_TEXT = MIGRATIONS.index("0005_text.sql") + 1
"""The schema version from which JSON columns hold the store's canonical text."""

_JSON_COLUMNS = (
    ("assertions", "id", ("derived_from",)),
    ("constraints", "id", ("forbid", "patterns", "items")),
    ("lenses", "name", ("spec",)),
    ("tokens", "id", ("roles",)),
    ("checks", "id", ("scope", "items", "violations")),
    ("webhooks", "name", ("spec",)),
    ("notifications", "key", ("data",)),
    ("jobs", "id", ("payload",)),
)


def _canonical_json_columns(conn: psycopg.Connection[Any]) -> None:
    """Rewrite in canonical form the JSON that migration 0005 turned from jsonb into its
    text, so that rows written before it compare equal to the ones a rebuild writes.
    jsonb's text separates with ", " and ": ", sorts keys otherwise and escapes otherwise;
    a text with none of these (`[]`, `["agent"]`) is canonical already."""
    for table, key, columns in _JSON_COLUMNS:
        for column in columns:
            found = conn.execute(
                sql.SQL("SELECT {}, {} FROM {} WHERE {} ~ %s").format(
                    sql.Identifier(key),
                    sql.Identifier(column),
                    sql.Identifier(table),
                    sql.Identifier(column),
                ),
                (r'(, |": |\\)',),
            ).fetchall()
            changed = [
                (new, k) for k, text in found if (new := canonical(orjson.loads(text))) != text
            ]
            if changed:
                with conn.cursor() as cur:
                    cur.executemany(
                        sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(
                            sql.Identifier(table), sql.Identifier(column), sql.Identifier(key)
                        ),
                        changed,
                    )


def _script(name: str) -> sql.SQL:
    """A migration file of ours, as one multi-statement script."""
    text = resources.files("episteme.ledger.postgres").joinpath(name).read_text()
    return sql.SQL(text)


def _columns(raw: psycopg.Connection[Any], schema: str, table: str) -> sql.Composed:
    """The stored (not generated) columns of a table, in order."""
    rows = raw.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name = %s AND is_generated = 'NEVER' ORDER BY ordinal_position",
        (schema, table),
    ).fetchall()
    return sql.SQL(", ").join(sql.Identifier(r[0]) for r in rows)


def _difference(
    raw: psycopg.Connection[Any], cols: sql.Composed, one: sql.Composable, two: sql.Composable
) -> int:
    total = 0
    for a, b in ((one, two), (two, one)):
        row = raw.execute(
            sql.SQL(
                "SELECT count(*) FROM (SELECT {} FROM {} EXCEPT SELECT {} FROM {}) AS d"
            ).format(cols, a, cols, b)
        ).fetchone()
        total += int(row[0]) if row else 0
    return total
