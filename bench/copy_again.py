"""`episteme copy` into PostgreSQL, into a fresh database and again after a copy that
was killed half-way, on one source ledger.

    PYTHONPATH=. python bench/copy_again.py --from HOME [--rounds 3] [--kill-after 4]

HOME is a SQLite benchmark ledger (`episteme bench generate --home HOME ...`). Each round
starts a throwaway PostgreSQL database (the test suite's `tests.postgres` cluster, from
the Debian binaries), copies HOME into a fresh database, then starts a copy into a second
one as a process, kills it with SIGKILL after `--kill-after` seconds, runs VACUUM ANALYZE
there (as autovacuum would within a minute) and copies again. Prints each round's two
times and the medians, and the ratio of the second to the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import psycopg
from tests.postgres import running_cluster

from common import script  # beside this file
from episteme.ledger.copy import copy_ledger


def _round(source: str, kill_after: float) -> tuple[float, float, int]:
    with running_cluster() as cluster:
        fresh = cluster.create_database()
        began = time.monotonic()
        report = copy_ledger(source, fresh)
        first = time.monotonic() - began
        again = cluster.create_database()
        killed = subprocess.Popen(
            [sys.executable, "-m", "episteme", "copy", "--from", source, "--to", again],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(kill_after)
        killed.kill()
        killed.wait()
        with psycopg.connect(again, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        began = time.monotonic()
        copy_ledger(source, again)
        return first, time.monotonic() - began, report.events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill-after", type=float, default=4.0)
    args = parser.parse_args()
    rounds = [_round(args.source, args.kill_after) for _ in range(args.rounds)]
    for n, (first, second, events) in enumerate(rounds, 1):
        print(
            f"round {n}: {events:,} events: fresh {first:.1f} s, after a killed copy {second:.1f} s"
        )
    fresh = statistics.median(r[0] for r in rounds)
    again = statistics.median(r[1] for r in rounds)
    summary = {
        "fresh_s": round(fresh, 2),
        "again_s": round(again, 2),
        "ratio": round(again / fresh, 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    script(main)
