"""A 24 h whole-store diff in full against its newest 1,000 and the counts of all (what
`episteme diff` shows), and against the pages below it (`before`: the second, the middle
and the last page of 1,000), with the raw SQL of each as the floor, interleaved in one
process.

    python bench/diff_limit.py LOCATION [--runs 30] [--output FILE]

LOCATION: a ledger home or a PostgreSQL URL holding a benchmark ledger.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import script  # beside this file
from episteme.benchmark.floor import open_floor
from episteme.ledger import Ledger
from episteme.ledger.records import ChangeCursor
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
    counts_sql, below_sql = floor.sql("diff_counts"), floor.sql("diff_below")
    # the pages below the newest, each a cursor (where the page above ended)
    cursors: list[str] = []
    place = ledger.diff(None, since=since, until=until, limit=1000).next
    while place is not None:
        cursors.append(place)
        place = ledger.diff(None, since=since, until=until, limit=1000, before=place).next
    pages = {"second": 0, "middle": len(cursors) // 2, "last": len(cursors) - 1}
    reads: dict[str, Callable[[], Any]] = {
        "full": lambda: ledger.diff(None, since=since, until=until),
        "full floor": lambda: floor.rows(full_sql, window),
        "newest 1,000": lambda: ledger.diff(None, since=since, until=until, limit=1000),
        "newest 1,000 floor": lambda: (
            floor.rows(newest_sql, window),
            floor.rows(counts_sql, window),
        ),
    }
    for page, n in pages.items() if cursors else ():
        cursor = ChangeCursor.parse(cursors[n])
        keyset = (Us(cursor.at), cursor.seq, cursor.seq, cursor.assertion_id)
        below = (*window, *keyset, cursor.assertion_id, int(cursor.later))
        mine = ledger.diff(None, since=since, until=until, limit=1000, before=cursors[n])
        if sorted(c.assertion_id for c in mine.changes) != sorted(
            r[2] for r in floor.rows(below_sql, below)
        ):
            raise SystemExit(f"the floor's {page} page is not the library's")
        reads[f"{page} page"] = functools.partial(
            ledger.diff, None, since=since, until=until, limit=1000, before=cursors[n]
        )
        reads[f"{page} page floor"] = functools.partial(
            lambda args: (floor.rows(below_sql, args), floor.rows(counts_sql, window)), below
        )
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
    out["pages"] = len(cursors) + 1
    for page in pages if cursors else ():
        mine, raw = out[f"{page} page"], out[f"{page} page floor"]
        out[f"{page}/newest p50"] = round(mine["p50_ms"] / out["newest 1,000"]["p50_ms"], 2)
        out[f"{page}/floor p50"] = round(mine["p50_ms"] / raw["p50_ms"], 2)
        out[f"{page}/floor p99"] = round(mine["p99_ms"] / raw["p99_ms"], 2)
    text = json.dumps(out, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    ledger.close()


if __name__ == "__main__":
    script(main)
