"""Durable single asserts per second of two versions of Episteme, on one ledger.

    python bench/compare_writes.py --old-src OLD/src --db URL [--threads 1 --threads 4]

OLD/src is the `src` folder of another checkout (`git worktree add OLD <commit>`); the
new version is the one installed. URL is a PostgreSQL benchmark ledger, or give
`--home DIR` for a SQLite one; both versions write to it, so they must share its
schema version (use a copy: every round appends). Rounds alternate old and new, each
in a fresh process, the first of each pair swapping round by round, so both see the
same machine. A round is `seconds` of `Ledger.assert_one` from T threads of one process,
each acknowledged once durable, after 50 writes to warm up. Prints, per thread count,
the median over rounds of the rate and of the client CPU per write, and new/old.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Iterable

from common import old_source, script  # beside this file
from compare_reads import run_round  # beside this file

_ROUND = """
import json, secrets, sys, threading, time
from episteme.ledger import Ledger
from episteme.ledger.store import open_store
where, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ledger = Ledger(open_store(where))
tag = secrets.token_hex(4)
for i in range(50):
    ledger.assert_one(subject=f"bench.compare.{tag}.warm{i}", value=i, agent="compare")
counts = [0] * threads
stop = time.perf_counter() + seconds
def write(k):
    i = 0
    while time.perf_counter() < stop:
        subject = f"bench.compare.{tag}.t{k}.s{i % 1000}"
        ledger.assert_one(subject=subject, value=i, agent=f"compare-{k}")
        i += 1
    counts[k] = i
cpu, start = time.process_time(), time.perf_counter()
workers = [threading.Thread(target=write, args=(k,)) for k in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
elapsed, n = time.perf_counter() - start, sum(counts)
ledger.close()
print(json.dumps({"rate": n / elapsed, "cpu_ms": (time.process_time() - cpu) / n * 1e3}))
"""


def _round(where: str, threads: int, seconds: float, src: str | None) -> dict[str, float]:
    return run_round(_ROUND, [where, str(threads), str(seconds)], src)


def _range(values: Iterable[float]) -> list[float]:
    seen = list(values)
    return [round(min(seen), 3), round(max(seen), 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-src", required=True, type=old_source)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="PostgreSQL URL of the ledger")
    where.add_argument("--home", help="directory of a SQLite ledger")
    parser.add_argument("--threads", type=int, action="append", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    location = args.db or args.home
    for threads in args.threads or [1, 4]:
        old, new = [], []
        for r in range(args.rounds):
            order = [(args.old_src, old), (None, new)]
            for src, into in order if r % 2 == 0 else order[::-1]:
                into.append(_round(location, threads, args.seconds, src))
        row: dict[str, object] = {"threads": threads, "rounds": args.rounds}
        for q in ("rate", "cpu_ms"):
            o = statistics.median(x[q] for x in old)
            n = statistics.median(x[q] for x in new)
            row |= {
                f"old_{q}": round(o, 3),
                f"new_{q}": round(n, 3),
                f"{q}_ratio": round(n / o, 2),
                f"old_{q}_range": _range(x[q] for x in old),
                f"new_{q}_range": _range(x[q] for x in new),
            }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    script(main)
