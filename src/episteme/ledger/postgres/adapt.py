"""How the shared SQL talks to PostgreSQL through psycopg.

The shared statements are SQLite's dialect with `?` placeholders; `translate` turns
them into psycopg's (`%s`, and the open-interval sentinel into 'infinity'). Times
cross as `Us`, bound in binary as `timestamptz` and read back as integer
microseconds; jsonb comes back as its text, as SQLite's JSON columns do. Rows are
therefore the same tuples on both stores, and so is every reader above them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format

from episteme.ledger.sql.base import WRITE_WAIT_S
from episteme.ledger.sql.projector import OPEN, Us

_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, PostgreSQL's epoch, in Unix microseconds
_TIMESTAMPTZ_OID = 1184
_INT8 = struct.Struct("!q")


class _UsDumper(Dumper):
    format = Format.BINARY
    oid = _TIMESTAMPTZ_OID

    def dump(self, obj: Any) -> bytes:
        # 'infinity' is the largest int64, as OPEN is: the sentinel maps onto itself
        return _INT8.pack(OPEN if obj == OPEN else obj - _PG_EPOCH_US)


class _UsLoader(Loader):
    format = Format.BINARY

    def load(self, data: Any) -> int:
        v: int = _INT8.unpack(data)[0]
        return OPEN if v == OPEN else v + _PG_EPOCH_US


class _JsonTextLoader(Loader):
    """jsonb as its text (binary jsonb is a version byte, then the text)."""

    format = Format.BINARY

    def load(self, data: Any) -> str:
        return bytes(data[1:]).decode()


WRITE_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"
"""How a write starts, whatever the database's default isolation: the chain transaction
reads the journal's head after it holds the writer lock, and must see the commit of the
writer before it (under REPEATABLE READ its snapshot, taken at the lock, would not, and
two writers would take the same sequence number)."""


def configure(conn: psycopg.Connection[Any]) -> None:
    """Set up a new connection: adapters, writes in READ COMMITTED (`WRITE_BEGIN`), and
    how long to wait for the writer lock."""
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED  # psycopg's own BEGINs
    conn.adapters.register_dumper(Us, _UsDumper)
    conn.adapters.register_loader("timestamptz", _UsLoader)
    conn.adapters.register_loader("jsonb", _JsonTextLoader)
    conn.execute(f"SET lock_timeout = '{WRITE_WAIT_S:.0f}s'")


def configure_read_only(conn: psycopg.Connection[Any]) -> None:
    """`configure`, and every transaction read-only: the server refuses any write."""
    configure(conn)
    conn.execute("SET default_transaction_read_only = on")


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """The shared SQL in psycopg's dialect."""
    return sql.replace("%", "%%").replace("?", "%s").replace(str(OPEN), "'infinity'")


class Fetched:
    """Rows already read, shaped like a cursor (the connection has gone back to its pool)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class TxConn:
    """One psycopg connection inside a transaction, speaking the shared SQL."""

    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        return self.raw.execute(translate(sql), parameters, binary=True)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        rows = list(parameters)
        if rows:
            with self.raw.cursor() as cur:
                cur.executemany(translate(sql), rows)
