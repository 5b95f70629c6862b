"""The chain transaction's own pipeline (`Wire`) against a real PostgreSQL: it must
read and fail exactly as psycopg's cursor does, and never leave a connection in a
state its pool would lend out again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from episteme.ledger.postgres import wire as wire_module
from episteme.ledger.postgres.adapt import TxConn, configure
from episteme.ledger.postgres.wire import Wire, numbered
from episteme.ledger.sql.projector import OPEN, Us


@pytest.fixture
def raw(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        configure(conn)
        conn.execute(
            "CREATE TABLE w (k int PRIMARY KEY, at timestamptz, doc jsonb, blob bytea,"
            " note text, big bigint, till timestamptz)"
        )
        yield conn


def _in_transaction(raw: psycopg.Connection[Any]) -> Wire:
    wire = Wire(raw)
    wire.execute("BEGIN")
    return wire


def test_the_shared_sql_is_numbered_for_libpq() -> None:
    sql = f"SELECT a FROM t WHERE b = ? AND c < ? AND d = {OPEN} AND e IN (?, ?)"
    assert numbered(sql) == (
        b"SELECT a FROM t WHERE b = $1 AND c < $2 AND d = 'infinity' AND e IN ($3, $4)"
    )


def test_rows_come_back_as_psycopgs_cursor_reads_them(raw: psycopg.Connection[Any]) -> None:
    rows = [
        (1, Us(1_700_000_000_123_456), '{"a": [1, 2]}', b"\x00\xff", "caf\u00e9", 2**40, Us(OPEN)),
        (2, None, None, None, None, None, None),
    ]
    wire = _in_transaction(raw)
    wire.executemany(
        "INSERT INTO w (k, at, doc, blob, note, big, till) VALUES (?,?,?,?,?,?,?)", rows
    )
    got = wire.execute("SELECT k, at, doc, blob, note, big, till FROM w ORDER BY k").fetchall()
    empty = wire.execute("SELECT k FROM w WHERE k < ?", (0,))
    wire.execute("COMMIT")
    wire.sync()
    wire.close()
    expected = TxConn(raw).execute("SELECT k, at, doc, blob, note, big, till FROM w ORDER BY k")
    assert got == expected.fetchall()
    assert got[0][1] == 1_700_000_000_123_456
    assert got[0][6] == OPEN
    assert got[0][2] == '{"a": [1, 2]}'
    assert got[0][3] == b"\x00\xff"
    assert empty.fetchone() is None
    assert list(empty) == []
    assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_an_error_is_raised_by_its_sqlstate_and_nothing_is_kept(
    raw: psycopg.Connection[Any],
) -> None:
    wire = _in_transaction(raw)
    wire.execute("INSERT INTO w (k) VALUES (?)", (1,))
    wire.execute("INSERT INTO w (k) VALUES (?)", (1,))
    after = wire.execute("SELECT count(*) FROM w")
    with pytest.raises(psycopg.errors.UniqueViolation) as failed:
        wire.sync()
    assert "w_pkey" in str(failed.value)
    with pytest.raises(psycopg.errors.UniqueViolation):
        after.fetchone()  # skipped by the server: it reports the error that stopped it
    wire.abort(failed.value)
    assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert raw.execute("SELECT count(*) FROM w").fetchone() == (0,)
    again = _in_transaction(raw)  # the connection, and its prepared statements, still work
    again.execute("INSERT INTO w (k) VALUES (?)", (1,))
    again.execute("COMMIT")
    again.sync()
    again.close()
    assert raw.execute("SELECT k FROM w").fetchall() == [(1,)]


def test_a_statement_the_server_did_not_prepare_is_prepared_again(
    raw: psycopg.Connection[Any],
) -> None:
    # The first statement fails to prepare (no such table); the second was never parsed
    # (its segment was aborted). Both must be prepared afresh once the table exists.
    wire = _in_transaction(raw)
    wire.execute("SELECT x FROM later")
    wire.execute("SELECT count(*) FROM w WHERE k > ?", (0,))
    with pytest.raises(psycopg.errors.UndefinedTable) as failed:
        wire.sync()
    wire.abort(failed.value)
    raw.execute("CREATE TABLE later (x int)")
    raw.execute("INSERT INTO later VALUES (7)")
    wire = _in_transaction(raw)
    assert wire.execute("SELECT x FROM later").fetchall() == [(7,)]
    assert wire.execute("SELECT count(*) FROM w WHERE k > ?", (0,)).fetchone() == (0,)
    wire.execute("COMMIT")
    wire.sync()
    wire.close()


def test_a_long_pipeline_keeps_every_reply_in_its_place(raw: psycopg.Connection[Any]) -> None:
    # 800 statements and 40 MB each way in one round trip, every reply in its place.
    note = "n" * 100_000
    wire = _in_transaction(raw)
    echoes = [wire.execute("SELECT ?::text", (note,)) for _ in range(400)]
    wire.executemany("INSERT INTO w (k, note) VALUES (?, ?)", [(k, note) for k in range(400)])
    wire.execute("COMMIT")
    wire.sync()
    wire.close()
    assert all(e.fetchone() == (note,) for e in echoes)
    assert raw.execute("SELECT count(*), sum(length(note)) FROM w").fetchone() == (400, 40_000_000)


def test_a_lost_connection_is_closed_not_lent_again(
    raw: psycopg.Connection[Any], pg_url: str
) -> None:
    wire = _in_transaction(raw)
    wire.execute("INSERT INTO w (k) VALUES (?)", (1,))
    pid = raw.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError) as failed:
        wire.sync()
    wire.abort(failed.value)
    assert raw.closed
    with psycopg.connect(pg_url) as check:
        assert check.execute("SELECT count(*) FROM w").fetchone() == (0,)


def test_statements_past_the_prepared_limit_still_run(
    raw: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # IN lists of every length are statements of every shape: past the limit they are
    # parsed at each use instead of filling the server with prepared statements
    monkeypatch.setattr(wire_module, "PREPARED_MAX", 3)
    before = raw.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    wire = _in_transaction(raw)
    wire.executemany("INSERT INTO w (k) VALUES (?)", [(k,) for k in range(10)])
    found = [
        wire.execute(f"SELECT count(*) FROM w WHERE k IN ({','.join('?' * n)})", list(range(n)))
        for n in range(1, 8)
    ]
    wire.execute("COMMIT")
    wire.sync()
    wire.close()
    assert [f.fetchone() for f in found] == [(n,) for n in range(1, 8)]
    after = raw.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    assert before is not None
    assert after is not None
    assert after[0] - before[0] <= 3
