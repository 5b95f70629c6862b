"""How long the newest migrations of each backend take on a generated ledger: SQLite's
6, 7 and 8 (text search reindexed through a view; two indexes for lists; constraints
made again with tags, an index of incidents) and PostgreSQL's 5, 6 and 7 (JSON columns
as text, the full-text column recomputed: one rewrite of `assertions`; the same two
indexes; constraints' tags).

    PYTHONPATH=. python bench/migrations.py [--assertions 100000] [--constraints 1000]
        [--rounds 3]

Generates one ledger of each kind with `episteme bench generate --assertions N
--subjects 2000 --queries 0` (PostgreSQL in the test suite's throwaway cluster, from the
Debian binaries: fsync off, so the figure leaves out the disk's flushes) and records
`--constraints` constraints and as many checks that hit them. Then, each round, it sets
the ledger back to a version before (the schema that version made: the newest one
alone, then the newest ones together) and times the first open, which migrates it.
Prints each round's time and the median, and checks that the migrated ledger verifies
and that a rebuild finds nothing to repair.
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
from importlib import resources
from pathlib import Path

import psycopg
from tests.backends import POSTGRES_BEFORE_TAGS, SQLITE_BEFORE_TAGS, back_to_jsonb
from tests.postgres import running_cluster

from common import script  # beside this file
from episteme.ledger import Ledger

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


def _generate(where: str, assertions: int, constraints: int) -> None:
    spec = ["--assertions", str(assertions), "--subjects", "2000", "--queries", "0"]
    command = [sys.executable, "-m", "episteme", "bench", "generate", *spec, *where.split(" ", 1)]
    subprocess.run(command, check=True, capture_output=True)
    location = where.split(" ", 1)[1]
    with Ledger.open(Path(location) if where.startswith("--home") else location) as led:
        for n in range(constraints):
            scope = f"svc.s{n % 2000}"
            led.add_constraint(scope=scope, forbid=[f"bad-{n}"], reason="bench", by="oncall")
            led.check(f"use bad-{n}", [scope], agent="deploy-agent")


def _timed_open(location: str | Path, version: int) -> float:
    began = time.perf_counter()
    with Ledger.open(location) as led:
        assert led.store.migrated_from == version, led.store.migrated_from
    took = time.perf_counter() - began
    with Ledger.open(location) as led:
        assert led.verify().ok
        assert led.rebuild().ok
    return took


Rounds = dict[str, tuple[list[float], float]]
"""Each run's name: the time of each round (s), and the size of what it rewrote (MB)."""


def sqlite_rounds(assertions: int, constraints: int, rounds: int) -> Rounds:
    base = Path(tempfile.mkdtemp(prefix="episteme-migrations-"))
    try:
        _generate(f"--home {base / 'made'}", assertions, constraints)
        made = base / "made" / "ledger.db"
        out: Rounds = {}
        for name, version, script in (
            ("SQLite 7 -> 8", 7, SQLITE_BEFORE_TAGS),
            ("SQLite 5 -> 8", 5, SQLITE_BEFORE_TAGS + _SQLITE_BEFORE),
        ):
            times = []
            for n in range(rounds):
                home = base / f"round-{n}"
                home.mkdir()
                shutil.copy(made, home / "ledger.db")
                with sqlite3.connect(home / "ledger.db") as conn:
                    conn.executescript(script)
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                times.append(_timed_open(home, version))
                shutil.rmtree(home)
            out[name] = (times, made.stat().st_size / 1e6)
        return out
    finally:
        shutil.rmtree(base)


def postgres_rounds(assertions: int, constraints: int, rounds: int) -> Rounds:
    before = (resources.files("episteme.ledger.postgres") / "0004_fold_accents.sql").read_text()

    def back_to_4(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        for statement in POSTGRES_BEFORE_TAGS:
            conn.execute(statement)
        conn.execute(before)  # the full-text column as version 4 made it
        conn.execute("DROP INDEX decisions_at, notifications_at")
        back_to_jsonb(conn)

    def back_to_6(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        for statement in POSTGRES_BEFORE_TAGS:
            conn.execute(statement)

    with running_cluster() as cluster:
        url = cluster.create_database()
        _generate(f"--db {url}", assertions, constraints)
        out: Rounds = {}
        for name, version, back in (
            ("PostgreSQL 6 -> 7", 6, back_to_6),
            ("PostgreSQL 4 -> 7", 4, back_to_4),
        ):
            times, size = [], 0.0
            for _ in range(rounds):
                with psycopg.connect(url, autocommit=True) as conn:
                    back(conn)
                    conn.execute("VACUUM ANALYZE")
                    found = conn.execute("SELECT pg_total_relation_size('assertions')").fetchone()
                    size = (found[0] if found else 0) / 1e6
                times.append(_timed_open(url, version))
            out[name] = (times, size)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assertions", type=int, default=100_000)
    parser.add_argument("--constraints", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for run in (sqlite_rounds, postgres_rounds):
        for name, (times, size) in run(args.assertions, args.constraints, args.rounds).items():
            shown = ", ".join(f"{t:.2f}" for t in times)
            print(
                f"{name}: {args.assertions:,} assertions, {args.constraints:,} constraints"
                f" ({size:.0f} MB): {shown} s; median {statistics.median(times):.3f} s"
            )


if __name__ == "__main__":
    script(main)
