"""Read latency of two versions of Episteme on copies of one benchmark ledger.

    python bench/compare_reads.py --old-src OLD/src --old-home A --new-home B [--rounds 5]

OLD/src is the `src` folder of another checkout (`git worktree add OLD <commit>`); the
new version is the one installed. A and B are copies of the same SQLite benchmark ledger
(`episteme bench generate`), one per version, since a newer version migrates the file.
Rounds alternate old and new, each in a fresh process, so both see the same machine;
each round times `runs` unaudited reads per lens on random subjects after 50 warm-up
reads (with `--audited`, audited queries, each a durable write: give each version its
own copy, and with `--held` also each one's time inside its write transaction, from
after BEGIN to before COMMIT, under the writer lock; with `--back H`, reads as of H
hours before the ledger's last event, as `--at` reads; with `--diff`, `runs` whole-store
diffs of the ledger's last 24 hours after one warm-up diff, instead of reads; with
`--investigate`, the on-call reads instead: `audit` of the agent with the most queries
in the ledger's last 6 hours and `impact` of the most served assertion (`runs` / 5 times
each), `audit` of a random agent's last 6 hours, `served` on a random subject, `trace`
of a random decision and `blame` of a random assertion; with `--checks`, pre-flight
checks of a plan on one random subject (every other one breaking a constraint on it),
each a durable write like an audited query,
against `--constraints` constraints on the ledger's subjects, which the first round on
a copy records when it holds none). Prints the median over rounds
of each round's p50 and p99, and new/old. A and B may be PostgreSQL URLs
(`postgresql://…`) as well.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from common import StepFailed, old_source, script  # beside this file

_ROUND = """
import json, random, sys, time
from episteme.ledger import Ledger
from episteme.timeutil import from_us
home, runs, lens, audited = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
back, held = float(sys.argv[5]), sys.argv[6] == "1"
ledger = Ledger.open(home)
locked = []
if held:  # time each write transaction's work, from after BEGIN to before COMMIT
    import contextlib
    Store = type(ledger.store)
    take = Store._transaction_locked
    @contextlib.contextmanager
    def timed(self):
        with take(self) as conn:
            start = time.perf_counter_ns()
            yield conn
            end = time.perf_counter_ns()
        locked.append((end - start) / 1e6)
    Store._transaction_locked = timed
at = from_us(ledger.store.head()[1] - int(back * 3_600_000_000)) if back else None
subjects = [r[0] for r in ledger.store.conn.execute(
    "SELECT DISTINCT subject FROM assertions ORDER BY subject LIMIT 2000")]
rng = random.Random(1)
times = []
for i in range(runs + 50):
    subject = rng.choice(subjects)
    start = time.perf_counter_ns()
    if audited:
        ledger.query(subject, agent="bench.compare", lens=lens, at=at)
    else:
        ledger.answer(subject, lens=lens, at=at)
    if i >= 50:
        times.append((time.perf_counter_ns() - start) / 1e6)
    else:
        locked.clear()
times.sort()
out = {"p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)]}
if locked:
    locked.sort()
    out |= {"held_p50": locked[len(locked) // 2], "held_p99": locked[int(len(locked) * 0.99)]}
print(json.dumps(out))
"""

_DIFF = """
import json, sys, time
from episteme.ledger import Ledger
from episteme.timeutil import from_us
home, runs = sys.argv[1], int(sys.argv[2])
ledger = Ledger.open(home)
last = ledger.store.head()[1]
since, until = from_us(last - 86_400_000_000), from_us(last)
ledger.diff(None, since=since, until=until)
times = []
for i in range(runs):
    start = time.perf_counter_ns()
    ledger.diff(None, since=since, until=until)
    times.append((time.perf_counter_ns() - start) / 1e6)
times.sort()
print(json.dumps({"p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)]}))
"""


_INVESTIGATE = """
import json, random, sys, time
from episteme.ledger import Ledger
from episteme.ledger.sql.projector import Us
from episteme.timeutil import from_us
home, runs = sys.argv[1], int(sys.argv[2])
ledger = Ledger.open(home)
rows = lambda sql: [r[0] for r in ledger.store.conn.execute(sql)]
hot = rows("SELECT a.id FROM (SELECT arow, count(*) AS n FROM served GROUP BY arow"
           " ORDER BY n DESC LIMIT 1) AS t JOIN assertions a ON a.rowid = t.arow")
agents = rows("SELECT DISTINCT agent FROM queries ORDER BY agent LIMIT 200")
subjects = rows("SELECT DISTINCT subject FROM assertions ORDER BY subject LIMIT 2000")
decisions = rows("SELECT id FROM decisions ORDER BY seq LIMIT 2000")
ids = rows("SELECT id FROM assertions ORDER BY rowid LIMIT 5000")
last = ledger.store.head()[1]
since, until = from_us(last - 6 * 3_600_000_000), from_us(last)
busiest = [r[0] for r in ledger.store.conn.execute(
    "SELECT agent FROM queries WHERE at >= ? GROUP BY agent ORDER BY count(*) DESC, agent"
    " LIMIT 1", (Us(last - 6 * 3_600_000_000),))]
rng = random.Random(1)
reads = {  # the busiest agent first, before other audits have shaped any plan cache
    "audit, busiest agent": (max(1, runs // 5), busiest and (lambda: ledger.audit(
        agent=busiest[0], since=since, until=until))),
    "impact": (max(1, runs // 5), hot and (lambda: ledger.impact(hot[0]))),
    "audit": (runs, agents and (lambda: ledger.audit(
        agent=rng.choice(agents), since=since, until=until))),
    "served": (runs, lambda: ledger.served(rng.choice(subjects))),
    "trace": (runs, decisions and (lambda: ledger.trace(rng.choice(decisions)))),
    "blame": (runs, lambda: ledger.blame(rng.choice(ids))),
}
out = {}
for name, (n, read) in reads.items():
    if not read:
        continue
    times = []
    for i in range(n + 10):
        start = time.perf_counter_ns()
        read()
        if i >= 10:
            times.append((time.perf_counter_ns() - start) / 1e6)
    times.sort()
    out[name] = {"p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)]}
print(json.dumps(out))
"""


_CHECKS = """
import json, random, sys, time
from episteme.ledger import Ledger
home, runs, constraints = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ledger = Ledger.open(home)
subjects = [r[0] for r in ledger.store.conn.execute(
    "SELECT DISTINCT subject FROM assertions ORDER BY subject LIMIT 2000")]
rng = random.Random(1)
if not ledger.constraints():  # the same constraints on each copy, made by either version
    for n in range(constraints):
        ledger.add_constraint(scope=subjects[n % len(subjects)], forbid=[f"bad-{n}"],
                              reason="bench", by="bench.compare")
times = []
for i in range(runs + 50):
    k = rng.randrange(len(subjects))
    term = f"bad-{k}" if i % 2 else "something allowed"  # every other plan breaks one
    start = time.perf_counter_ns()
    ledger.check(f"use {term} on {subjects[k]}", [subjects[k]], agent="bench.compare")
    if i >= 50:
        times.append((time.perf_counter_ns() - start) / 1e6)
times.sort()
print(json.dumps({"p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)]}))
"""


def run_round(code: str, args: list[str], src: str | None) -> dict[str, Any]:
    """Run `code` with `args` in a fresh interpreter (importing Episteme from `src`, else
    the installed one); the JSON object it prints."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        said = out.stderr.strip().splitlines() or [f"exit code {out.returncode}"]
        raise StepFailed(f"a round on {args[0]} failed: {said[-1]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _round(args: argparse.Namespace, home: str, lens: str, src: str | None) -> dict[str, float]:
    flags = ["1" if args.audited else "0", str(args.back), "1" if args.held else "0"]
    return run_round(_ROUND, [home, str(args.runs), lens, *flags], src)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-src", required=True, type=old_source)
    parser.add_argument("--old-home", required=True)
    parser.add_argument("--new-home", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--lens", action="append", default=None)
    parser.add_argument("--audited", action="store_true", help="time audited queries")
    parser.add_argument("--diff", action="store_true", help="time 24 h whole-store diffs")
    parser.add_argument(
        "--investigate", action="store_true", help="time impact, audit, served, trace and blame"
    )
    parser.add_argument(
        "--checks", action="store_true", help="time audited pre-flight checks (durable writes)"
    )
    parser.add_argument(
        "--constraints", type=int, default=1000, help="with --checks: constraints to record"
    )
    parser.add_argument(
        "--held",
        action="store_true",
        help="with --audited: also time each write transaction's work (BEGIN to COMMIT)",
    )
    parser.add_argument(
        "--back", type=float, default=0.0, help="read as of this many hours before the last event"
    )
    args = parser.parse_args()
    if args.held and not args.audited:
        parser.error("--held times audited queries' writes: add --audited")
    if args.investigate and (args.audited or args.diff or args.lens or args.back):
        parser.error("--investigate times its own reads: drop --audited, --diff, --lens, --back")
    if args.checks and (args.audited or args.diff or args.lens or args.back or args.investigate):
        parser.error("--checks times checks alone: drop the options of reads")
    if args.investigate:
        _investigate(args)
        return
    if args.checks:
        old, new = [], []
        for _ in range(args.rounds):
            for home, src, out in ((args.old_home, args.old_src, old), (args.new_home, None, new)):
                out.append(run_round(_CHECKS, [home, str(args.runs), str(args.constraints)], src))
        print(json.dumps(_row({"figure": "check"}, old, new)))
        return
    for lens in ["diff"] if args.diff else args.lens or ["approved", "latest", "consensus"]:
        old, new = [], []
        for _ in range(args.rounds):
            if args.diff:
                old.append(run_round(_DIFF, [args.old_home, str(args.runs)], args.old_src))
                new.append(run_round(_DIFF, [args.new_home, str(args.runs)], None))
                continue
            old.append(_round(args, args.old_home, lens, args.old_src))
            new.append(_round(args, args.new_home, lens, None))
        print(json.dumps(_row({"figure" if args.diff else "lens": lens}, old, new)))


def _investigate(args: argparse.Namespace) -> None:
    old, new = [], []
    for _ in range(args.rounds):
        old.append(run_round(_INVESTIGATE, [args.old_home, str(args.runs)], args.old_src))
        new.append(run_round(_INVESTIGATE, [args.new_home, str(args.runs)], None))
    for figure in new[0]:
        print(
            json.dumps(_row({"figure": figure}, [r[figure] for r in old], [r[figure] for r in new]))
        )


def _row(
    row: dict[str, Any], old: list[dict[str, float]], new: list[dict[str, float]]
) -> dict[str, Any]:
    """`row` with the median over rounds of old's and new's p50 and p99 (and of the lock's
    holds, where timed), and new/old."""
    for q in ("p50", "p99", "held_p50", "held_p99"):
        if q not in new[0]:
            continue
        o = statistics.median(r[q] for r in old)
        n = statistics.median(r[q] for r in new)
        row |= {
            f"old_{q}_ms": round(o, 3),
            f"new_{q}_ms": round(n, 3),
            f"{q}_ratio": round(n / o, 2),
        }
    return row


if __name__ == "__main__":
    script(main)
