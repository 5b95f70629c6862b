"""Audited queries under sustained load: two versions of Episteme, alternated.

    python bench/sustained.py --old-src OLD/src --home HOME [--rounds 3]
        [--processes 1] [--threads 8] [--seconds 10] [--output FILE]

OLD/src is the `src` folder of another checkout (`git worktree add OLD <commit>`); the
new version is the one installed. HOME is a SQLite benchmark ledger home (`episteme
bench generate`); it is not written to. Each round copies it once per version and runs,
on each copy, `processes` processes of `threads` threads making audited `approved`
queries on random subjects (after 50 each to warm up) from a common start for
`seconds` seconds. A round reports the queries per second of all processes together,
the latency p50 and p99 of every query, and the largest size of the WAL file seen
(sampled every 0.2 s: it is deleted when the last connection closes). Prints each
round as a JSON line (also appended to FILE), then the median over rounds and new/old.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import old_source, script  # beside this file

_WORKER = """
import json, random, sys, threading, time
from episteme.ledger import Ledger
home, threads, me = sys.argv[1], int(sys.argv[2]), int(sys.argv[5])
start, seconds = float(sys.argv[3]), float(sys.argv[4])
ledger = Ledger.open(home)
subjects = [r[0] for r in ledger.store.conn.execute(
    "SELECT DISTINCT subject FROM assertions ORDER BY subject LIMIT 2000")]
times = []
def agent(n):
    rng = random.Random(me * 1000 + n)
    for _ in range(50):
        ledger.query(rng.choice(subjects), agent="bench.sustained", lens="approved")
    while time.time() < start:
        time.sleep(0.005)
    mine = []
    while time.time() < start + seconds:
        began = time.perf_counter_ns()
        ledger.query(rng.choice(subjects), agent="bench.sustained", lens="approved")
        mine.append((time.perf_counter_ns() - began) / 1e6)
    times.extend(mine)
workers = [threading.Thread(target=agent, args=(n,)) for n in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
ledger.close()
with open(sys.argv[6], "w") as f:
    json.dump(times, f)
"""


def _run(home: Path, src: str | None, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    start = time.time() + 4.0 + args.processes  # after imports and the warm-up
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WORKER,
                str(home),
                str(args.threads),
                str(start),
                str(args.seconds),
                str(me),
                str(home / f"times-{me}.json"),
            ],
            env=env,
        )
        for me in range(args.processes)
    ]
    wal, largest = home / "ledger.db-wal", 0
    while any(p.poll() is None for p in procs):
        with contextlib.suppress(FileNotFoundError):
            largest = max(largest, wal.stat().st_size)
        time.sleep(0.2)
    times: list[float] = []
    for me, p in enumerate(procs):
        if p.returncode != 0:
            raise SystemExit(f"a worker failed (exit {p.returncode})")
        times += json.loads((home / f"times-{me}.json").read_text())
    times.sort()
    return {
        "rate": len(times) / args.seconds,
        "p50": times[len(times) // 2],
        "p99": times[int(len(times) * 0.99)],
        "wal_mb": largest / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-src", required=True, type=old_source)
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if not (args.home / "ledger.db").is_file():
        parser.error(f"{args.home} holds no ledger.db: give a SQLite ledger home")
    rounds: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="sustained-") as scratch:
        for n in range(args.rounds):
            order = ["old", "new"] if n % 2 == 0 else ["new", "old"]
            for version in order:
                copy = Path(scratch) / version
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(args.home, copy)
                result = _run(copy, args.old_src if version == "old" else None, args)
                line = {
                    "version": version,
                    "round": n + 1,
                    "processes": args.processes,
                    "threads": args.threads,
                    "seconds": args.seconds,
                } | result
                print(json.dumps(line), flush=True)
                if args.output:
                    with args.output.open("a") as f:
                        f.write(json.dumps(line) + "\n")
                rounds[version].append(result)
    for key in ("rate", "p50", "p99", "wal_mb"):
        old = statistics.median(r[key] for r in rounds["old"])
        new = statistics.median(r[key] for r in rounds["new"])
        print(f"{key:>7}: old {old:10.2f}  new {new:10.2f}  new/old {new / old:5.2f}")


if __name__ == "__main__":
    script(main)
