"""The floor: what the database itself needs for the work a figure measures.

A floor runs the same SQL the library's work comes down to, through the same driver,
on the same database, in the same run: Python's `sqlite3` on the ledger's file, or a
raw psycopg connection set up as the store sets up its own (`configure`, the shared
SQL through `translate`, binary results). So ours / floor means the same on both
backends: what the library adds over the engine.

The statements are written once, in the SQL the stores share (`?` placeholders,
times as `Us`); the full-text match comes from the store's own dialect, as the library's
reads do. The served and audit floors take a query's hidden tally and context out of its
journal payload with the database's JSON functions, as raw SQL would; the library reads
the payload and parses it itself (see `Reader._queries`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from episteme.ledger.model import HIDDEN_IDS
from episteme.ledger.sql.projector import OPEN
from episteme.ledger.sql.reads import Reader
from episteme.ledger.store import DB_FILE, POSTGRES_SCHEMES

_A = "a.id, a.subject, a.value, a.agent, v.lifecycle, v.confidence"
_CURRENT = f"SELECT {_A} FROM versions v JOIN assertions a ON a.rowid = v.arow"
ASSERTION_COLUMNS = (
    "rowid, id, subject, value, kind, agent, source, evidence, epoch, derived_from,"
    " valid_from, valid_to, recorded_at, seq"
)
"""The stored columns of `assertions` (PostgreSQL adds a generated text-search column)."""

IMPACT = (
    "SELECT agent, n FROM exposure WHERE arow = (SELECT rowid FROM assertions WHERE id = ?)",
    "SELECT q.id FROM served s JOIN queries q ON q.seq = s.query_seq"
    " WHERE s.arow = (SELECT rowid FROM assertions WHERE id = ?) ORDER BY s.query_seq DESC"
    " LIMIT 20",
    "SELECT d.*, c.query_id FROM decisions d JOIN citations c ON c.decision_id = d.id"
    " WHERE d.id IN (SELECT decision_id FROM reliance"
    " WHERE arow = (SELECT rowid FROM assertions WHERE id = ?))",
)


def _first(where: str) -> str:
    """The ids of the first live alternatives a lens hides ({in}: their lifecycles)."""
    return (
        f"SELECT f.arow, a.id FROM (SELECT v.arow FROM versions v WHERE {where}"
        f" AND v.lifecycle IN ({{in}}) ORDER BY v.arow + 0 LIMIT {HIDDEN_IDS}) f"
        " JOIN assertions a ON a.rowid = f.arow ORDER BY f.arow"
    )


# {in}: the lifecycles a lens shows (hides, in *_counts and *_ids); {MATCH}: the store's
# dialect; {HIDDEN}, {CONTEXT}: fields of the journal payload (`Floor.json_field`)
SQL: dict[str, str] = {
    "point": f"{_CURRENT} WHERE v.subject = ? AND v.tx_to = {OPEN} AND v.lifecycle IN ({{in}})",
    "point_counts": (
        f"SELECT v.lifecycle, count(*) FROM versions v WHERE v.subject = ? AND v.tx_to = {OPEN}"
        " AND v.lifecycle NOT IN ({in}) GROUP BY v.lifecycle"
    ),
    "point_ids": _first(f"v.subject = ? AND v.tx_to = {OPEN}"),
    "as_of": (
        f"{_CURRENT} WHERE v.subject = ? AND v.tx_to > ? AND v.tx_from <= ?"
        " AND v.lifecycle IN ({in})"
    ),
    "as_of_counts": (
        "SELECT v.lifecycle, count(*) FROM versions v WHERE v.subject = ? AND v.tx_to > ?"
        " AND v.tx_from <= ? AND v.lifecycle NOT IN ({in}) GROUP BY v.lifecycle"
    ),
    "as_of_ids": _first("v.subject = ? AND v.tx_to > ? AND v.tx_from <= ?"),
    "served": (
        "SELECT q.id, q.at, q.agent, s.arow, s.lifecycle, {HIDDEN}"
        " FROM queries q JOIN journal j ON j.seq = q.seq"
        " JOIN served s ON s.query_seq = q.seq WHERE q.seq IN (SELECT s.query_seq FROM served s"
        " JOIN assertions a ON a.rowid = s.arow WHERE a.subject = ?) AND q.at <= ?"
        " ORDER BY q.at DESC LIMIT 50"
    ),
    "diff": (
        "SELECT v.seq, v.cause, a.id, a.subject, a.value, v.lifecycle, v.actor FROM versions v"
        " JOIN assertions a ON a.rowid = v.arow WHERE v.tx_from >= ? AND v.tx_from <= ?"
    ),
    "diff_newest": (  # the newest 1,000 (`DIFF_COUNTS`: and the counts of all)
        "SELECT v.seq, v.cause, a.id, a.subject, a.value, v.lifecycle, v.actor FROM (SELECT *"
        " FROM versions v WHERE v.tx_from >= ? AND v.tx_from <= ?"
        " ORDER BY v.tx_from DESC, v.seq DESC, v.arow DESC, (v.prev_lifecycle IS NOT NULL) DESC"
        " LIMIT 1000) v"
        " JOIN assertions a ON a.rowid = v.arow"
    ),
    "diff_below": (  # the 1,000 below a page's last change (time, seq, assertion, 0|1)
        "SELECT v.seq, v.cause, a.id, a.subject, a.value, v.lifecycle, v.actor FROM (SELECT *"
        " FROM versions v WHERE v.tx_from >= ? AND v.tx_from <= ? AND v.tx_from <= ?"
        " AND (v.seq < ? OR (v.seq = ? AND (v.arow < (SELECT rowid FROM assertions WHERE id = ?)"
        " OR (v.arow = (SELECT rowid FROM assertions WHERE id = ?) AND ? = 1"
        " AND v.prev_lifecycle IS NULL))))"
        " ORDER BY v.tx_from DESC, v.seq DESC, v.arow DESC, (v.prev_lifecycle IS NOT NULL) DESC"
        " LIMIT 1000) v"
        " JOIN assertions a ON a.rowid = v.arow"
    ),
    "diff_counts": (
        "SELECT v.cause, count(*) FROM versions v WHERE v.tx_from >= ? AND v.tx_from <= ?"
        " GROUP BY v.cause"
    ),
    "diff_prefix": (
        "SELECT v.seq, v.cause, a.id, a.subject, a.value, v.lifecycle, v.actor FROM versions v"
        " JOIN assertions a ON a.rowid = v.arow WHERE (v.subject = ? OR (v.subject > ?"
        " AND v.subject < ?)) AND v.tx_from >= ? AND v.tx_from <= ?"
    ),
    "blame": (
        f"SELECT {', '.join('a.' + c.strip() for c in ASSERTION_COLUMNS.split(','))}, v.*"
        " FROM assertions a JOIN versions v ON v.arow = a.rowid WHERE a.id = ? ORDER BY v.seq"
    ),
    "trace": (
        "SELECT c.query_id, q.agent, a.id, a.agent, a.source, a.epoch"
        " FROM citations c JOIN queries q ON q.id = c.query_id"
        " JOIN served s ON s.query_seq = q.seq JOIN assertions a ON a.rowid = s.arow"
        " WHERE c.decision_id = ?"
    ),
    "audit": (
        "SELECT q.id, q.at, q.lens, s.arow, s.lifecycle, {HIDDEN}, {CONTEXT}"
        " FROM queries q JOIN journal j ON j.seq = q.seq"
        " LEFT JOIN served s ON s.query_seq = q.seq WHERE q.agent = ? AND q.at >= ?"
        " AND q.at <= ? ORDER BY q.at DESC LIMIT 100"
    ),
    "text": (f"{_CURRENT} WHERE v.tx_to = {OPEN} AND v.lifecycle IN ({{in}}) AND {{MATCH}}"),
    "text_counts": (
        f"SELECT v.lifecycle, count(*) FROM versions v WHERE v.tx_to = {OPEN}"
        " AND v.lifecycle NOT IN ({in}) AND {MATCH} GROUP BY v.lifecycle"
    ),
    "text_ids": _first(f"v.tx_to = {OPEN} AND {{MATCH}}"),
}
JOURNAL = "SELECT seq, at, actor, kind, payload, hash FROM journal"


class Floor:
    """Raw SQL on the ledger's database: one connection, autocommit between statements."""

    backend = ""
    dialect: type[Reader] = Reader
    json_field = "json_extract(j.payload, '$.{}')"
    """A field of the journal payload, in SQL (`{}`: its name)."""
    separate_fts = False
    """Whether full-text words live in their own table that an insert must fill."""

    def sql(self, key: str, lifecycles: str = "") -> str:
        """A floor statement in this backend's dialect; `lifecycles`: quoted, comma-joined."""
        text = SQL[key].replace("{in}", lifecycles)
        d = self.dialect
        return (
            text.replace("{MATCH}", d.MATCH)
            .replace("{HIDDEN}", self.json_field.format("hidden"))
            .replace("{CONTEXT}", self.json_field.format("context"))
        )

    def match(self, text: str) -> str:
        """The full-text parameter for `text`, as the library makes it."""
        return self.dialect.match_text(text)

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def run(self, sql: str, args: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    def runmany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    def begin_write(self) -> None:
        """Begin a transaction holding the writer lock a ledger write holds."""
        raise NotImplementedError

    def scan(self, sql: str) -> int:
        """Stream every row of `sql` through the driver; how many there were."""
        raise NotImplementedError

    def size(self) -> int:
        """Bytes the ledger takes on disk."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The engine's version and the settings that decide durable-write figures."""
        raise NotImplementedError

    def warm(self) -> str:
        """Bring the database into the OS cache, as a long-running server has it; how."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SQLiteFloor(Floor):
    """The ledger file through Python's `sqlite3`, committing with `synchronous=FULL`."""

    backend = "sqlite"
    separate_fts = True

    def __init__(self, home: Path) -> None:
        from episteme.ledger.sqlite.store import SQLiteStore

        self.dialect = SQLiteStore
        self.home = home
        self.db = sqlite3.connect(home / DB_FILE, isolation_level=None)
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("PRAGMA wal_autocheckpoint = 0")  # the store's policy: see _Checkpointer
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (k INTEGER PRIMARY KEY, payload TEXT)"
        )

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.db.execute(sql, args).fetchall()

    def run(self, sql: str, args: Sequence[Any] = ()) -> None:
        self.db.execute(sql, args)

    def runmany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    def begin_write(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def scan(self, sql: str) -> int:
        return sum(1 for _ in self.db.execute(sql))

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.home.glob(f"{DB_FILE}*"))

    def warm(self) -> str:
        warm_files(self.home)
        return "file read"

    def describe(self) -> dict[str, Any]:
        return {"synchronous": "FULL", "journal_mode": "WAL"}

    def close(self) -> None:
        if self.db.in_transaction:  # a figure failed inside its transaction
            self.db.execute("ROLLBACK")
        self.db.execute("DROP TABLE IF EXISTS bench_floor")
        self.db.close()


class PostgresFloor(Floor):
    """A raw psycopg connection, set up as the store sets up its own."""

    backend = "postgresql"
    json_field = "(j.payload::jsonb -> '{}')"
    SETTINGS = ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers")

    def __init__(self, url: str) -> None:
        import psycopg

        from episteme.ledger.postgres.adapt import configure, translate
        from episteme.ledger.postgres.store import PostgresStore

        self.dialect = PostgresStore
        self._translate = translate
        self.db = psycopg.connect(url, autocommit=True, connect_timeout=10)
        configure(self.db)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor"
            " (k bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload text)"
        )

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.db.execute(self._translate(sql), args, binary=True).fetchall()

    def run(self, sql: str, args: Sequence[Any] = ()) -> None:
        self.db.execute(self._translate(sql), args, binary=True)

    def runmany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.db.cursor() as cur:
            cur.executemany(self._translate(sql), list(rows))

    def begin_write(self) -> None:
        self.db.execute("BEGIN")
        self.db.execute("SELECT id FROM chain_lock WHERE id = 1 FOR UPDATE")

    def scan(self, sql: str) -> int:
        # a server-side cursor, fetched 2,000 rows at a time (the library's page size)
        with self.db.transaction(), self.db.cursor("bench_scan", binary=True) as cur:
            cur.itersize = 2000
            cur.execute(self._translate(sql))
            return sum(1 for _ in cur)

    def size(self) -> int:
        row = self.db.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0

    def describe(self) -> dict[str, Any]:
        version = self.db.execute("SHOW server_version").fetchone()
        settings: dict[str, str] = dict(
            self.db.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                (list(self.SETTINGS),),
            ).fetchall()
        )
        return {"postgresql": version[0] if version else "", **settings}

    def warm(self) -> str:
        """Read every table and index of the ledger once into the OS cache, as a server
        that has been running a while holds them: with pg_prewarm where the database has
        it, else by scanning each table (indexes then warm in each figure's warm-up)."""
        relations = self.db.execute(
            "SELECT c.oid::regclass::text, c.relkind FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'i') ORDER BY 1"
        ).fetchall()
        prewarm = self.db.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_prewarm'")
        if prewarm.fetchone():
            for name, _ in relations:
                self.db.execute("SELECT pg_prewarm(%s::regclass, 'read')", (name,))
            return "pg_prewarm"
        with self.db.transaction():
            for setting in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"):
                self.db.execute(f"SET LOCAL {setting} = off")
            for name, kind in relations:
                if kind == "r":  # the server's own quoting of the name
                    self.db.execute(f"SELECT count(*) FROM {name}")
        return "table scans"

    def close(self) -> None:
        from psycopg.pq import TransactionStatus

        if self.db.info.transaction_status != TransactionStatus.IDLE:  # a figure failed
            self.db.rollback()
        self.db.execute("DROP TABLE IF EXISTS bench_floor")
        self.db.close()


def is_postgres(location: str | Path) -> bool:
    return str(location).startswith(POSTGRES_SCHEMES)


def open_floor(location: str | Path) -> Floor:
    """The floor on the ledger at a home directory or a PostgreSQL URL."""
    if is_postgres(location):
        return PostgresFloor(str(location))
    return SQLiteFloor(Path(location))


def warm_files(home: Path) -> float:
    """Read the SQLite files once, as a long-running server would have; return seconds."""
    started = time.perf_counter()
    for path in sorted(home.glob(f"{DB_FILE}*")):
        with path.open("rb") as f:
            while f.read(1 << 24):
                pass
    return time.perf_counter() - started
