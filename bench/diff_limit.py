"""A 24 h whole-store diff in full against its newest 1,000 and the counts of all (what
`episteme diff` shows), with the raw SQL of each as the floor, interleaved in one process.

    python bench/diff_limit.py LOCATION [--runs 30] [--output FILE]

LOCATION: a ledger home or a PostgreSQL URL holding a benchmark ledger.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from episteme.benchmark.floor import open_floor
from episteme.ledger import Ledger
from episteme.ledger.sql.projector import Us
from episteme.timeutil import from_us

DAY_US = 86_400_000_000


def _percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50_ms": round(times[len(times) // 2], 3),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("location")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    location: str | Path = args.location if "://" in args.location else Path(args.location)
    ledger = Ledger.open(location)
    floor = open_floor(location)
    last = ledger.store.head()[1]
    window = (Us(last - DAY_US), Us(last))
    since, until = from_us(window[0]), from_us(window[1])
    full_sql, newest_sql = floor.sql("diff"), floor.sql("diff_newest")
    counts_sql = floor.sql("diff_counts")
    reads: dict[str, Callable[[], Any]] = {
        "full": lambda: ledger.diff(None, since=since, until=until),
        "full floor": lambda: floor.rows(full_sql, window),
        "newest 1,000": lambda: ledger.diff(None, since=since, until=until, limit=1000),
        "newest 1,000 floor": lambda: (
            floor.rows(newest_sql, window),
            floor.rows(counts_sql, window),
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in reads}
    for _ in range(args.runs):
        for name, read in reads.items():
            start = time.perf_counter_ns()
            read()
            times[name].append((time.perf_counter_ns() - start) / 1e6)
    changes = ledger.diff(None, since=since, until=until, limit=1).total
    out: dict[str, Any] = {"changes": changes, "runs": args.runs}
    out |= {name: _percentiles(t) for name, t in times.items()}
    out["newest/full p50"] = round(out["newest 1,000"]["p50_ms"] / out["full"]["p50_ms"], 4)
    out["newest/floor p50"] = round(
        out["newest 1,000"]["p50_ms"] / out["newest 1,000 floor"]["p50_ms"], 2
    )
    text = json.dumps(out, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    ledger.close()


if __name__ == "__main__":
    main()
