"""Both stores, for tests: raw access to a ledger's tables behind the library's back."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

BACKENDS = ("sqlite", "postgresql")


@contextmanager
def raw_connection(location: str | Path) -> Iterator[Any]:
    """A connection that runs the shared SQL (`?` placeholders) on the ledger's tables,
    committing when the block ends. Times in parameters must be `Us` values."""
    if str(location).startswith("postgresql://"):
        import psycopg

        from episteme.ledger.postgres.adapt import TxConn, configure

        with psycopg.connect(str(location)) as conn:  # commits on a clean exit
            configure(conn)
            yield TxConn(conn)
        return
    import sqlite3

    with closing(sqlite3.connect(Path(location) / "ledger.db")) as conn, conn:
        yield conn


SQLITE_BEFORE_TAGS = """
CREATE TABLE old (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, at INTEGER NOT NULL, scope TEXT NOT NULL,
    forbid TEXT NOT NULL, patterns TEXT NOT NULL, prefer TEXT, reason TEXT NOT NULL,
    origin TEXT NOT NULL, created_by TEXT NOT NULL, items TEXT NOT NULL DEFAULT '[]',
    half_life_days REAL NOT NULL DEFAULT 30, hits INTEGER NOT NULL DEFAULT 0,
    last_hit_at INTEGER
) WITHOUT ROWID;
INSERT INTO old SELECT id, seq, at, scope, forbid, patterns, prefer, reason, origin,
    created_by, items, half_life_days, hits, last_hit_at FROM constraints;
DROP TABLE constraints;
ALTER TABLE old RENAME TO constraints;
CREATE INDEX constraints_scope ON constraints (scope);
DROP TABLE constraint_tags;
ALTER TABLE checks DROP COLUMN tags;
DROP INDEX incidents_opened;
PRAGMA user_version = 7;
"""
"""SQLite's schema 8 set back to 7 (constraints without tags), for a ledger holding no
constraint of tags: what version 7 made of the same journal."""

POSTGRES_BEFORE_TAGS = (
    "ALTER TABLE constraints ALTER COLUMN scope SET NOT NULL",
    "ALTER TABLE constraints DROP COLUMN tags",
    "ALTER TABLE constraints DROP COLUMN retired_at, DROP COLUMN retired_by,"
    " DROP COLUMN retired_reason",
    "DROP TABLE constraint_tags",
    "ALTER TABLE checks DROP COLUMN tags",
    "DROP INDEX incidents_opened",
    "UPDATE meta SET value = '6' WHERE key = 'schema_version'",
)
"""The same on PostgreSQL: schema 7 set back to 6."""


def set_back_before_tags(location: str | Path) -> None:
    """A ledger of this version as the version before constraints had tags left it."""
    if isinstance(location, Path):
        import sqlite3

        with closing(sqlite3.connect(location / "ledger.db", isolation_level=None)) as conn:
            conn.executescript(f"BEGIN; {SQLITE_BEFORE_TAGS} COMMIT;")
        return
    import psycopg

    with psycopg.connect(location, autocommit=True) as conn:
        for statement in POSTGRES_BEFORE_TAGS:
            conn.execute(statement)


def back_to_jsonb(conn: Any) -> None:
    """PostgreSQL's JSON columns as versions 1 to 4 made them (jsonb), and the ledger at
    version 4, on a psycopg connection in autocommit."""
    from episteme.ledger.postgres.store import _JSON_COLUMNS

    for table, _, columns in _JSON_COLUMNS:
        for column in columns:
            conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} DROP DEFAULT")
            conn.execute(
                f"ALTER TABLE {table} ALTER COLUMN {column} TYPE jsonb USING {column}::jsonb"
            )
    conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")


def old_sqlite_ledger(home: Path) -> Path:
    """A ledger file of schema version 1, as the first release wrote it; its path."""
    import sqlite3

    from episteme.ledger.sqlite import store as sqlite_store

    home.mkdir(parents=True, exist_ok=True)
    path = home / "ledger.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in sqlite_store._split(sqlite_store._schema_sql("0001_init.sql")):
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {sqlite_store.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    return path


def as_nobody(work: Callable[[], str]) -> str:
    """`work()` run as a user without rights (root passes every permission check): in a
    forked child that drops to uid 65534 when this process is root; what it returned."""
    if os.geteuid() != 0:
        return work()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            out = work()
        except BaseException as exc:
            out = f"{type(exc).__name__}: {exc}"
        with os.fdopen(write, "wb") as pipe:
            pipe.write(out.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as got:
        out = got.read().decode()
    os.waitpid(pid, 0)
    return out
