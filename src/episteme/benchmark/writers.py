"""Durable writers: single assertions per second from several processes on one ledger.

Each figure is the rate of `Ledger.assert_one` (one assertion, acknowledged once durable)
from P processes of T threads, counted in 1-second windows (the median window, the
1st-percentile one and the slowest). Its floor is the same load on the same ledger in
the same run with the store's previous write path: the commit waits for the disk while
it holds the writer lock (``defer_flush=False``). The two alternate, round after round,
so drift (the growing ledger, the page cache, checkpoints) falls on both alike; a ratio
under 1 in the report means the current path is faster.

Every write lands under the subject prefix ``bench.writers`` (1,000 subjects per writing
thread): run it on a copy of a benchmark ledger when later figures must be comparable,
since its writes fall in the last 24 hours that the diff figures read.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from episteme.benchmark.floor import is_postgres
from episteme.benchmark.http import Load, _rate_figure, children_load, windows
from episteme.benchmark.run import Report, _machine
from episteme.ledger.core import Ledger
from episteme.ledger.sql.base import SQLStore
from episteme.ledger.store import open_store

AGENT = "bench-writer"
BUDGET_PER_PROCESS = 1_000.0  # durable single asserts per second, per process
SUBJECTS = 1_000  # subjects each writing thread spreads its assertions over


def _writer_child() -> None:
    """One writing process: JSON arguments on stdin; "ready", then on "go" its windows."""
    args = json.loads(sys.stdin.readline())
    tag = secrets.token_hex(4)
    with Ledger(open_store(args["where"], defer_flush=args["defer"])) as ledger:
        # one write first: the store's connections and threads exist before counting
        ledger.assert_one(subject=f"bench.writers.{tag}.ready", value=0, agent=AGENT)
        print("ready", flush=True)
        sys.stdin.readline()

        def write(k: int, i: int) -> None:
            # spread over subjects, as real single asserts are: one subject of thousands
            # of alternatives would make every later read of it slow
            subject = f"bench.writers.{tag}.t{k}.s{i % SUBJECTS}"
            ledger.assert_one(subject=subject, value=i, agent=AGENT)

        counts = windows(write, args["threads"], args["warmup"], args["seconds"])
    print(json.dumps(counts), flush=True)


_CHILD = "from episteme.benchmark.writers import _writer_child; _writer_child()"


def run(
    where: Path | str,
    *,
    processes: Sequence[int] = (1, 2, 4),
    threads: int = 1,
    seconds: int = 5,
    warmup: float = 1.0,
    rounds: int = 3,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Measure durable single asserts per second for each process count, beside the
    previous write path in the same run (`rounds` alternations of `seconds` each)."""
    say = progress or (lambda _: None)
    location = str(where)
    figures = []
    for n in processes:
        ours, held = Load(windows=[]), Load(windows=[])
        for r in range(rounds):
            # alternate which goes first, so neither always follows the other
            for defer in (r % 2 == 0, r % 2 == 1):
                label = "flush after the lock" if defer else "flush under the lock"
                say(f"{n} process{'es' * (n > 1)} × {threads}, {label}, round {r + 1}/{rounds}")
                args = {"where": location, "defer": defer, "threads": threads}
                load = children_load(_CHILD, args | {"warmup": warmup, "seconds": seconds}, n)
                (ours if defer else held).windows.extend(load.windows)
        each = f"{threads} thread{'s' * (threads > 1)}"
        name = f"durable asserts/s, {n} process{'es' * (n > 1)} × {each}"
        figure = _rate_figure(
            name,
            ours,
            held,
            "the same load with the flush under the writer lock",
            f"{rounds} rounds of {seconds} s; per process {ours.rates()[0] / n:,.0f}/s",
        )
        figure.budget = BUDGET_PER_PROCESS * n
        figures.append(figure)
    with Ledger(open_store(location)) as ledger:
        assert isinstance(ledger.store, SQLStore)
        top = ledger.store.conn.execute("SELECT max(rowid) FROM assertions").fetchone()
        info = {"assertions": int(top[0] or 0) if top else 0, "events": ledger.store.head()[0]}
    machine = _machine() | {
        "load": {"threads_per_process": threads, "seconds": seconds, "rounds": rounds}
    }
    backend = "postgresql" if is_postgres(location) else "sqlite"
    return Report(machine=machine, ledger=info, figures=figures, backend=backend)
