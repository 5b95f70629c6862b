"""How long the newest migrations of each backend take on a generated ledger: SQLite's
6 and 7 (text search reindexed through a view; two indexes for lists) and PostgreSQL's
5 and 6 (JSON columns as text, the full-text column recomputed: one rewrite of
`assertions`; the same two indexes).

    PYTHONPATH=. python bench/migrations.py [--assertions 100000] [--rounds 3]

Generates one ledger of each kind with `episteme bench generate --assertions N
--subjects 2000 --queries 0` (PostgreSQL in the test suite's throwaway cluster, from the
Debian binaries: fsync off, so the figure leaves out the disk's flushes), then, each
round, sets it back to the version before (the schema that version made) and times the
first open, which migrates it. Prints each round's time and the median, and checks that
the migrated ledger verifies and that a rebuild finds nothing to repair.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import psycopg
from tests.postgres import running_cluster

from episteme.ledger import Ledger
from episteme.ledger.postgres.store import _JSON_COLUMNS

_SQLITE_BEFORE = """
DROP TABLE assertions_fts;
DROP VIEW assertions_search;
CREATE VIRTUAL TABLE assertions_fts USING fts5 (
    subject, value, source, content = 'assertions', content_rowid = 'rowid'
);
INSERT INTO assertions_fts(assertions_fts) VALUES('rebuild');
DROP INDEX decisions_at;
DROP INDEX notifications_at;
PRAGMA user_version = 5;
"""


def _generate(where: str, assertions: int) -> None:
    spec = ["--assertions", str(assertions), "--subjects", "2000", "--queries", "0"]
    command = [sys.executable, "-m", "episteme", "bench", "generate", *spec, *where.split(" ", 1)]
    subprocess.run(command, check=True, capture_output=True)


def _timed_open(location: str | Path, version: int) -> float:
    began = time.perf_counter()
    with Ledger.open(location) as led:
        assert led.store.migrated_from == version, led.store.migrated_from
    took = time.perf_counter() - began
    with Ledger.open(location) as led:
        assert led.verify().ok
        assert led.rebuild().ok
    return took


def sqlite_rounds(assertions: int, rounds: int) -> tuple[list[float], float]:
    base = Path(tempfile.mkdtemp(prefix="episteme-migrations-"))
    try:
        _generate(f"--home {base / 'made'}", assertions)
        made = base / "made" / "ledger.db"
        with sqlite3.connect(made) as conn:
            conn.executescript(_SQLITE_BEFORE)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        times = []
        for n in range(rounds):
            home = base / f"round-{n}"
            home.mkdir()
            shutil.copy(made, home / "ledger.db")
            times.append(_timed_open(home, 5))
            shutil.rmtree(home)
        return times, made.stat().st_size / 1e6
    finally:
        shutil.rmtree(base)


def postgres_rounds(assertions: int, rounds: int) -> tuple[list[float], float]:
    before = (resources.files("episteme.ledger.postgres") / "0004_fold_accents.sql").read_text()
    with running_cluster() as cluster:
        url = cluster.create_database()
        _generate(f"--db {url}", assertions)
        times, size = [], 0.0

        def back(conn: psycopg.Connection[tuple[object, ...]]) -> None:
            conn.execute(before)  # the full-text column as version 4 made it
            conn.execute("DROP INDEX decisions_at, notifications_at")
            for table, _, columns in _JSON_COLUMNS:
                for column in columns:
                    conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} DROP DEFAULT")
                    conn.execute(
                        f"ALTER TABLE {table} ALTER COLUMN {column} TYPE jsonb"
                        f" USING {column}::jsonb"
                    )
            conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
            conn.execute("VACUUM ANALYZE")

        for _ in range(rounds):
            with psycopg.connect(url, autocommit=True) as conn:
                back(conn)
                found = conn.execute("SELECT pg_total_relation_size('assertions')").fetchone()
                size = (found[0] if found else 0) / 1e6
            times.append(_timed_open(url, 4))
        return times, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assertions", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, Callable[[int, int], tuple[list[float], float]]] = {
        "SQLite 5 -> 7": sqlite_rounds,
        "PostgreSQL 4 -> 6": postgres_rounds,
    }
    for name, run in runs.items():
        times, size = run(args.assertions, args.rounds)
        shown = ", ".join(f"{t:.2f}" for t in times)
        print(
            f"{name}: {args.assertions:,} assertions ({size:.0f} MB): {shown} s;"
            f" median {statistics.median(times):.2f} s"
        )


if __name__ == "__main__":
    main()
