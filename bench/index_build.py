"""How long the list indexes of SQLite's schema version 7 (PostgreSQL's 6) take to
build: `decisions (at)` over a table of synthetic decisions, on each backend.

    PYTHONPATH=.:src python bench/index_build.py [--rows 1000000] [--rounds 3]

Fills a `decisions` table shaped as the schema makes it (SQLite in a temporary file;
PostgreSQL in the test suite's throwaway cluster, from the Debian binaries: fsync off),
then times `CREATE INDEX` on its time column, dropping it between rounds. Prints each
round's time and the median. `notifications (at)` is the same index over a table that is
smaller by orders of magnitude.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from tests.postgres import running_cluster

from common import script  # beside this file
from episteme.timeutil import from_us

START_US = 1_795_000_000_000_000  # 2026-11-18
CREATE = (
    "CREATE TABLE decisions (id text {collate} PRIMARY KEY, seq bigint NOT NULL,"
    " at {time} NOT NULL, agent text {collate} NOT NULL, action text NOT NULL,"
    " context text NOT NULL){rowid}"
)


def _rows(n: int) -> Iterator[tuple[str, int, int, str, str, str]]:
    for i in range(n):  # one decision every 37 µs, from a hundred agents
        yield f"d_{i:024x}", i + 1, START_US + 37 * i, f"agent-{i % 100}", "rolled out", "{}"


def _timed(build: Callable[[], object], drop: Callable[[], object], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        began = time.perf_counter()
        build()
        out.append(time.perf_counter() - began)
        drop()
    return out


def sqlite_rounds(rows: int, rounds: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "ledger.db")
        conn.execute(CREATE.format(collate="", time="INTEGER", rowid=" WITHOUT ROWID"))
        conn.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?)", _rows(rows))
        conn.commit()

        def build() -> None:
            conn.execute("CREATE INDEX decisions_at ON decisions (at)")
            conn.commit()

        try:
            return _timed(build, lambda: conn.execute("DROP INDEX decisions_at"), rounds)
        finally:
            conn.close()


def postgres_rounds(rows: int, rounds: int) -> list[float]:
    with running_cluster() as cluster:
        url = cluster.create_database()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(CREATE.format(collate='COLLATE "C"', time="timestamptz", rowid=""))
            with conn.cursor().copy("COPY decisions FROM STDIN") as copy:
                for did, seq, at, agent, action, context in _rows(rows):
                    when = from_us(at).to_stdlib()
                    copy.write_row((did, seq, when, agent, action, context))
            conn.execute("VACUUM ANALYZE decisions")
            return _timed(
                lambda: conn.execute("CREATE INDEX decisions_at ON decisions (at)"),
                lambda: conn.execute("DROP INDEX decisions_at"),
                rounds,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for name, run in (("SQLite", sqlite_rounds), ("PostgreSQL", postgres_rounds)):
        times = run(args.rows, args.rounds)
        shown = ", ".join(f"{t:.2f}" for t in times)
        print(
            f"{name}: decisions (at) over {args.rows:,} rows: {shown} s;"
            f" median {statistics.median(times):.2f} s"
        )


if __name__ == "__main__":
    script(main)
