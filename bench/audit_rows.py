"""What an audited query's rows keyed by assertion cost: the point query with and without.

    python bench/audit_rows.py --home HOME [--rounds 3] [--queries 4000] [--output FILE]

HOME is a SQLite benchmark ledger home (`episteme bench generate`); it is not written
to. An audited query records what it served twice over: one `served` row per item in
the query's order (appended at the end of its table), plus, per item, an entry in the
`served_assertion` index and an upsert of the item's `exposure` row. Those two are keyed
by assertion, so each lands on a page of its own, and impact ("who was served this, how
often") is two lookups. This measures what they cost the query: each round copies HOME
twice, drops the index on one copy and runs it with the exposure upsert left out (a
ledger that could not answer impact: a measurement, not a mode), then makes QUERIES
audited `approved` point queries on each copy in one thread, on the subjects and in the
order of `episteme bench run`'s point query, after 200 to warm up. Prints each round as
a JSON line (also appended to FILE): p50 and p99 of all queries and by answer size
(at most one item; 10 or more), then the median over rounds and without/with. On the
copy without, it then times what deferring those writes would cost: the run's served
rows folded into a table keyed by assertion and into `exposure`, 250 queries to a
transaction (synchronous FULL; the WAL emptied between folds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import script  # beside this file

_WORKER = """
import json, random, sqlite3, sys, time
from episteme.benchmark.run import Bench
from episteme.ledger.sql import projector

if sys.argv[3] == "without":
    served = projector._query_served

    class _NoExposure:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            if sql.startswith("INSERT INTO exposure"):
                return None
            return self.conn.execute(sql, *args)

    def without(conn, ev, data):
        return served(_NoExposure(conn), ev, data)

    for kind, handler in list(projector._HANDLERS.items()):
        if handler is served:
            projector._HANDLERS[kind] = without

bench = Bench(sys.argv[1], 10)
ledger, subjects, rng = bench.ledger, bench.subjects, random.Random(11)
mark = ledger.store.conn.execute("SELECT coalesce(max(query_seq), 0) FROM served").fetchone()[0]
for _ in range(200):
    ledger.query(subjects[rng.randrange(len(subjects))], agent="bench", lens="approved")
rows = []
for _ in range(int(sys.argv[2])):
    subject = subjects[rng.randrange(len(subjects))]
    began = time.perf_counter_ns()
    answer = ledger.query(subject, agent="bench", lens="approved")
    rows.append(((time.perf_counter_ns() - began) / 1e6, len(answer.items)))
bench.close()
folds = []
if sys.argv[3] == "without":
    # what deferring those writes would cost: fold this run's served rows, 250 queries
    # at a time, into a table keyed by assertion and into exposure, one transaction each
    db = sqlite3.connect(sys.argv[1] + "/ledger.db", isolation_level=None)
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE served_by (arow INTEGER, query_seq INTEGER,"
               " PRIMARY KEY (arow, query_seq)) WITHOUT ROWID")
    db.execute("INSERT INTO served_by SELECT arow, query_seq FROM served"
               " WHERE query_seq <= ? ORDER BY arow, query_seq", (mark,))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    seqs = [r[0] for r in db.execute(
        "SELECT DISTINCT query_seq FROM served WHERE query_seq > ? ORDER BY 1", (mark,))]
    for i in range(0, len(seqs) - 250, 250):
        lo, hi = seqs[i], seqs[i + 249]
        began = time.perf_counter_ns()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO served_by SELECT arow, query_seq FROM served"
                   " WHERE query_seq BETWEEN ? AND ? ORDER BY arow, query_seq", (lo, hi))
        db.execute("INSERT INTO exposure (arow, agent, n) SELECT s.arow, q.agent, count(*)"
                   " FROM served s JOIN queries q ON q.seq = s.query_seq"
                   " WHERE s.query_seq BETWEEN ? AND ? GROUP BY s.arow, q.agent"
                   " ORDER BY s.arow ON CONFLICT (arow, agent)"
                   " DO UPDATE SET n = exposure.n + excluded.n", (lo, hi))
        db.execute("COMMIT")
        folds.append((time.perf_counter_ns() - began) / 1e6)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
json.dump({"rows": rows, "folds": folds}, sys.stdout)
"""

_BUCKETS = {"all": (0, 10**9), "at most 1 item": (0, 1), "10+ items": (10, 10**9)}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def _summary(rows: list[list[float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, (lo, hi) in _BUCKETS.items():
        times = [t for t, n in rows if lo <= n <= hi]
        if times:
            out[name] = {
                "n": len(times),
                "p50": round(_pct(times, 0.5), 3),
                "p99": round(_pct(times, 0.99), 3),
            }
    return out


def _run(home: Path, queries: int, variant: str, scratch: Path) -> dict[str, Any]:
    copy = scratch / variant
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(home, copy)
    if variant == "without":
        with sqlite3.connect(copy / "ledger.db") as db:
            db.execute("DROP INDEX served_assertion")
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(copy), str(queries), variant],
        capture_output=True,
        text=True,
        check=True,
    )
    shutil.rmtree(copy)
    out = json.loads(done.stdout)
    summary: dict[str, Any] = _summary(out["rows"])
    if out["folds"]:
        folds = out["folds"]
        summary["fold of 250 queries"] = {
            "n": len(folds),
            "p50": round(statistics.median(folds), 3),
            "max": round(max(folds), 3),
        }
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=4000)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.home.parent) as tmp:
        for r in range(args.rounds):
            order = ["with", "without"] if r % 2 == 0 else ["without", "with"]
            result = {"round": r + 1}
            for variant in order:
                result[variant] = _run(args.home, args.queries, variant, Path(tmp))
            rounds.append(result)
            line = json.dumps(result)
            print(line, flush=True)
            if args.output:
                with args.output.open("a") as f:
                    f.write(line + "\n")
    for name in _BUCKETS:
        if not all(name in x["with"] and name in x["without"] for x in rounds):
            print(f"{name:>15}: no answer of this size in every round")
            continue
        for p in ("p50", "p99"):
            w = statistics.median(x["with"][name][p] for x in rounds)
            wo = statistics.median(x["without"][name][p] for x in rounds)
            print(f"{name:>15} {p}: with {w:.2f} ms, without {wo:.2f} ms ({wo / w:.2f}x)")
    fold = statistics.median(x["without"]["fold of 250 queries"]["p50"] for x in rounds)
    print(f"folding the rows of 250 queries afterwards: {fold:.1f} ms at p50")


if __name__ == "__main__":
    script(main)
