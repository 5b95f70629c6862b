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
