"""Both stores, for tests: raw access to a ledger's tables behind the library's back."""

from __future__ import annotations

from collections.abc import Iterator
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
