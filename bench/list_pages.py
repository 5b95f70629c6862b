"""What a page of a list costs, newest and deep: the decisions list against the
statement of the previous version (which sorted the whole table for every page), and a
page far back asked for with `before` against the newest page and the raw SQL.

    PYTHONPATH=.:src python bench/list_pages.py [--decisions 50000] [--runs 300]

Makes a SQLite ledger (or uses `--db URL`, a fresh PostgreSQL database) holding
`--decisions` decisions and as many audited reads, each recorded through the library,
then times, `--runs` times each in turn, every page of 100: the newest and one 90 % of
the way back. Prints the median and p99 of each in milliseconds, and each as a ratio to
the raw SQL of the same page measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import script  # beside this file
from episteme.ledger import Ledger

PAGE = 100


def _fill(ledger: Ledger, n: int) -> None:
    for i in range(n):
        answer = ledger.query(f"svc.s{i % 500}", agent=f"agent-{i % 20}")
        ledger.decide(f"rolled out {i}", agent=f"agent-{i % 20}", query_ids=[answer.query_id or ""])


def _timed(run: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        run()
        out.append((time.perf_counter() - began) * 1000)
    return out


def _row(name: str, times: list[float], baseline: list[float] | None) -> str:
    med = statistics.median(times)
    p99 = statistics.quantiles(times, n=100)[98]
    ratio = "" if baseline is None else f"  ×{med / statistics.median(baseline):.2f} of raw SQL"
    return f"{name:<44} median {med:8.3f} ms  p99 {p99:8.3f} ms{ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--db", help="a fresh PostgreSQL database's URL (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        location: str | Path = args.db or Path(tmp) / "home"
        with Ledger.init(location) as ledger:
            began = time.perf_counter()
            _fill(ledger, args.decisions)
            took = time.perf_counter() - began
            print(f"{args.decisions:,} decisions and audited reads in {took:.0f} s")
            every = ledger.decisions(limit=args.decisions)
            deep = every[int(len(every) * 0.9)].seq
            reads = ledger.audit(limit=2 * args.decisions)
            deep_read = reads[int(len(reads) * 0.9)].seq

            def raw(sql: str, params: list[Any]) -> Callable[[], object]:
                def run() -> object:
                    return ledger.store.reading(lambda r: r.conn.execute(sql, params).fetchall())

                return run

            sub = "(SELECT at FROM journal WHERE seq < ? ORDER BY seq DESC LIMIT 1)"
            decision = "SELECT id, seq, at, agent, action, context FROM decisions"
            read = (  # the audit's main statement; the items served are read by a second
                "SELECT q.id, q.seq, q.at, q.agent, q.lens, q.subject, q.text, q.as_of,"
                " j.payload, q.latency_us FROM queries q JOIN journal j ON j.seq = q.seq"
            )
            cases: list[tuple[str, Callable[[], object]]] = [
                (
                    "decisions, newest page: raw SQL",
                    raw(f"{decision} ORDER BY at DESC, seq DESC LIMIT ?", [PAGE]),
                ),
                (
                    "decisions, newest page: previous statement",
                    raw(f"{decision} ORDER BY seq DESC LIMIT ?", [PAGE]),
                ),
                ("decisions, newest page: Ledger.decisions", lambda: ledger.decisions(limit=PAGE)),
                (
                    "decisions, 90 % back: raw SQL",
                    raw(
                        f"{decision} WHERE seq < ? AND at <= {sub}"
                        " ORDER BY at DESC, seq DESC LIMIT ?",
                        [deep, deep, PAGE],
                    ),
                ),
                (
                    "decisions, 90 % back: Ledger.decisions(before=)",
                    lambda: ledger.decisions(limit=PAGE, before=deep),
                ),
                (
                    "audit, 90 % back: raw SQL",
                    raw(
                        f"{read} WHERE q.seq < ? AND q.at <= {sub}"
                        " ORDER BY q.at DESC, q.seq DESC LIMIT ?",
                        [deep_read, deep_read, PAGE],
                    ),
                ),
                ("audit, newest page: Ledger.audit", lambda: ledger.audit(limit=PAGE)),
                (
                    "audit, 90 % back: Ledger.audit(before=)",
                    lambda: ledger.audit(limit=PAGE, before=deep_read),
                ),
            ]
            times: dict[str, list[float]] = {name: [] for name, _ in cases}
            for _ in range(args.runs):  # in turn, so that a slow moment falls on all alike
                for name, run in cases:
                    times[name] += _timed(run, 1)
            baselines = {
                "decisions, newest page: previous statement": "decisions, newest page: raw SQL",
                "decisions, newest page: Ledger.decisions": "decisions, newest page: raw SQL",
                "decisions, 90 % back: Ledger.decisions(before=)": "decisions, 90 % back: raw SQL",
                "audit, newest page: Ledger.audit": "audit, 90 % back: raw SQL",
                "audit, 90 % back: Ledger.audit(before=)": "audit, 90 % back: raw SQL",
            }
            for name, _ in cases:
                base = baselines.get(name)
                print(_row(name, times[name], None if base is None else times[base]))


if __name__ == "__main__":
    script(main)
