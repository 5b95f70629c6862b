"""The chain transaction's statements, sent through libpq's pipeline directly.

A write holds the journal's lock from its first statement to COMMIT, and every
statement costs the client about 60 µs in psycopg's cursor and pipeline code: most
of a single assert's client time. `Wire` keeps what psycopg does well (the
connection's adapters dump the parameters and load the rows, through its compiled
`Transformer`) and drives libpq's pipeline calls itself: each statement is prepared
once per connection and then sent with one `PQsendQueryPrepared`, for about 5 µs.

Statements go out without waiting. A read of a result (`fetchone`, `fetchall`,
iteration) or `sync` sends a sync point and reads every result up to it; the first
error among them is raised as psycopg raises it (a `psycopg.errors` class named by
its SQLSTATE), after the rest are read. The caller runs the transaction (BEGIN,
COMMIT or ROLLBACK) through `execute` like any statement; `close` leaves pipeline mode
and `abort` rolls back whatever is left, or closes a connection in an unknown state
so that its pool replaces it.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import select
import weakref
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

from episteme.ledger.sql.projector import OPEN

PREPARED_MAX = 256
"""Statements prepared per connection; past this, new ones are parsed at every use."""
READS_PREPARE_UP_TO = 128
"""Reads outside a write prepare statements only while a connection has fewer than this,
leaving the rest of `PREPARED_MAX` to writes: reads build `IN` lists of every length."""

_names = itertools.count()
"""Prepared statement names are never reused, so a statement that failed to prepare
(and may or may not exist on the server) is simply prepared again under a new one."""


class _Session:
    """What a connection keeps between transactions: its transformer and statements."""

    __slots__ = ("prepared", "transformer")

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.transformer = Transformer(raw)
        self.prepared: dict[tuple[bytes, tuple[int, ...] | None], bytes] = {}


_sessions: weakref.WeakKeyDictionary[psycopg.Connection[Any], _Session] = (
    weakref.WeakKeyDictionary()
)


def forget(raw: psycopg.Connection[Any]) -> None:
    """Forget the statements prepared on `raw`: the server no longer has them (psycopg
    sends DEALLOCATE ALL when a transaction of its own rolls back on a connection where
    it prepared statements too). The next `Wire` prepares them again, under new names."""
    _sessions.pop(raw, None)


@lru_cache(maxsize=4096)
def numbered(sql: str) -> bytes:
    """The shared SQL in libpq's dialect: `$1, $2, …` placeholders, 'infinity' for OPEN."""
    count = itertools.count(1)
    text = re.sub(r"\?", lambda _: f"${next(count)}", sql)
    return text.replace(str(OPEN), "'infinity'").encode()


class Result:
    """One statement's outcome, read when first asked for (shaped like a cursor)."""

    __slots__ = ("_rows", "_wire", "error", "result")

    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self.result: pq.abc.PGresult | None = None
        self.error: psycopg.Error | None = None
        self._rows: list[Any] | None = None

    def _load(self) -> list[Any]:
        if self._rows is None:
            if self.result is None and self.error is None:
                self._wire.sync()
            if self.error is not None:
                raise self.error
            assert self.result is not None
            self._rows = self._wire.load(self.result)
        return self._rows

    def fetchone(self) -> Any:
        rows = self._load()
        return rows[0] if rows else None

    def fetchall(self) -> list[Any]:
        return self._load()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._load())


class _Prepare:
    """A statement being prepared: forgotten again if the server did not take it."""

    __slots__ = ("key", "session")

    def __init__(self, session: _Session, key: tuple[bytes, tuple[int, ...] | None]) -> None:
        self.session, self.key = session, key


_SYNC = object()
_OK = frozenset({pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.EMPTY_QUERY})


class Wire:
    """A connection in libpq's pipeline mode, speaking the shared SQL (a `Conn`)."""

    __slots__ = ("_encoding", "_pending", "_poll", "_room", "_session", "pg", "raw")

    def __init__(self, raw: psycopg.Connection[Any], *, room: int = PREPARED_MAX) -> None:
        """`room`: prepare new statements only while the connection has fewer prepared
        than this (`READS_PREPARE_UP_TO` for reads outside a write)."""
        self.raw = raw
        self._room = min(room, PREPARED_MAX)
        self.pg = raw.pgconn
        session = _sessions.get(raw)
        if session is None:
            session = _sessions[raw] = _Session(raw)
        self._session = session
        self._encoding = raw.info.encoding
        self._pending: list[Result | _Prepare | object] = []
        self._poll: select.poll | None = None
        self.pg.enter_pipeline_mode()

    # -- sending -------------------------------------------------------------------------

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Result:
        query = numbered(sql)
        tx = self._session.transformer
        if parameters:
            values = tx.dump_sequence(parameters, [PyFormat.AUTO] * len(parameters))
            types, formats = tx.types, tx.formats
        else:
            values, types, formats = None, None, None
        key = (query, types)
        name = self._session.prepared.get(key)
        if name is None and len(self._session.prepared) >= self._room:
            # statements of many shapes (IN lists of every length): parse this one each time
            self.pg.send_query_params(query, values, types, formats, pq.Format.BINARY)
            return self._expect()
        if name is None:
            name = f"_ep_{next(_names)}".encode()
            self.pg.send_prepare(name, query, param_types=types)
            self._pending.append(_Prepare(self._session, key))
            self._session.prepared[key] = name
        self.pg.send_query_prepared(name, values, formats, pq.Format.BINARY)
        return self._expect()

    def _expect(self) -> Result:
        result = Result(self)
        self._pending.append(result)
        return result

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        for row in parameters:
            self.execute(sql, row)

    # -- receiving -----------------------------------------------------------------------

    def sync(self) -> None:
        """Wait for every statement sent so far; raise the first error among them."""
        self.pg.pipeline_sync()
        self._pending.append(_SYNC)
        self._flush()
        pending, self._pending = self._pending, []
        error: psycopg.Error | None = None
        skipped: list[Result] = []
        for item in pending:
            res = self._next()
            if item is _SYNC:
                if res is None or res.status != pq.ExecStatus.PIPELINE_SYNC:
                    raise psycopg.OperationalError("the server's replies fell out of order")
                continue
            assert res is not None
            self._next()  # the end of this statement's results
            if res.status in _OK:
                if isinstance(item, Result):
                    item.result = res
                continue
            if isinstance(item, _Prepare):
                item.session.prepared.pop(item.key, None)
            elif isinstance(item, Result):
                skipped.append(item)
            if error is None and res.status != pq.ExecStatus.PIPELINE_ABORTED:
                error = psycopg.errors.error_from_result(res, encoding=self._encoding)
        if skipped:
            # a statement the server skipped reports the error that stopped it
            if error is None:
                error = psycopg.OperationalError("the server skipped statements of a pipeline")
            for item in skipped:
                item.error = error
            raise error

    def load(self, res: pq.abc.PGresult) -> list[Any]:
        if not res.ntuples:
            return []
        tx = self._session.transformer
        tx.set_pgresult(res)
        return tx.load_rows(0, res.ntuples, tuple)

    def _next(self) -> pq.abc.PGresult | None:
        pg = self.pg
        while pg.is_busy():
            self._wait(select.POLLIN)
            pg.consume_input()
        return pg.get_result()

    def _flush(self) -> None:
        # read while writing: a long pipeline must not block on a server waiting for us
        while self.pg.flush():
            if self._wait(select.POLLIN | select.POLLOUT) & select.POLLIN:
                self.pg.consume_input()

    def _wait(self, events: int) -> int:
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self.pg.socket, events)
        else:
            self._poll.modify(self.pg.socket, events)
        while True:
            ready = self._poll.poll()
            if ready:
                return ready[0][1]

    # -- ending --------------------------------------------------------------------------

    def close(self) -> None:
        """Leave pipeline mode (every result has been read)."""
        if self.pg.pipeline_status != pq.PipelineStatus.OFF:
            self.pg.exit_pipeline_mode()

    def finish(self) -> None:
        """Read what is still unread (raising its first error), then leave pipeline mode."""
        if self._pending:
            self.sync()
        self.close()

    def abort(self, exc: BaseException) -> None:
        """Roll back after `exc` (if a transaction is open). A connection whose state is
        unknown (interrupted mid-reply, failing again here, or not idle afterwards) is
        closed instead, and its pool replaces it rather than lend it out again."""
        if isinstance(exc, Exception):
            try:
                with contextlib.suppress(psycopg.DatabaseError):
                    self.sync()  # what was sent before the failure
                if self.pg.transaction_status != pq.TransactionStatus.IDLE:
                    self.execute("ROLLBACK")
                    self.sync()
                self.close()
                if self.pg.transaction_status == pq.TransactionStatus.IDLE:
                    return
            except Exception:
                pass
        self.raw.close()
