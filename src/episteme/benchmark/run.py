"""The on-call latency budget, measured against the engine's own floor.

Each figure is timed over many runs after a warm-up (p50, p99, max). Beside it, in
the same run, the **floor**: the same work as raw SQL through the same driver on the
same database (`floor.py`: SQLite's file, or the PostgreSQL database). An audited
read's floor is the lookup plus a durable insert of an audit row of the same size (the
work any audited store must do); a read's floor is the lookup's SQL. Ratios are
ours / floor (p99) and ours / budget.

The run appends to the ledger it measures (audited queries, the assert figures), and
the floors write into a scratch table that is dropped at the end.
"""

from __future__ import annotations

import itertools
import os
import platform
import random
import resource
import sqlite3
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from whenever import Instant

from episteme.benchmark.floor import ASSERTION_COLUMNS, IMPACT, JOURNAL, Floor, open_floor
from episteme.ledger.canonical import canonical
from episteme.ledger.core import Ledger, content_record
from episteme.ledger.lenses import BUILTIN
from episteme.ledger.model import LIVE, AssertionInput, Kind, Lifecycle
from episteme.ledger.sql.projector import OPEN, Us, search_text
from episteme.timeutil import from_us, to_us

BUDGET_MS = {
    "point query (approved, audited)": 1.0,
    "time-travel query (audited)": 2.0,
    "24h diff, whole store": 250.0,
    "trace of a decision": 10.0,
    "impact of the most served assertion": 50.0,
    "audit of one agent, 6h": 50.0,
}
BUDGET_RATE = {
    "single durable assert": 2_000.0,
    "batch assert (1,000 per call)": 50_000.0,
    "verify": 200_000.0,
}


@dataclass
class Figure:
    name: str
    unit: str  # "ms" (latency) or "/s" (throughput)
    runs: int
    p50: float
    p99: float
    max: float
    floor_p50: float | None = None
    floor_p99: float | None = None
    budget: float | None = None
    note: str = ""

    @property
    def floor_ratio(self) -> float | None:
        if self.floor_p99 in (None, 0):
            return None
        assert self.floor_p99 is not None
        if self.unit == "/s":  # throughput: how many times slower than the floor
            return self.floor_p99 / self.p50 if self.p50 else None
        return self.p99 / self.floor_p99

    @property
    def budget_ratio(self) -> float | None:
        if self.budget is None:
            return None
        return self.p99 / self.budget if self.unit == "ms" else self.p50 / self.budget


@dataclass
class Report:
    machine: dict[str, Any]
    ledger: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    backend: str = "sqlite"

    def to_json(self) -> dict[str, Any]:
        figs = []
        for f in self.figures:
            d = asdict(f)
            d["floor_ratio"] = f.floor_ratio
            d["budget_ratio"] = f.budget_ratio
            figs.append(d)
        return {
            "backend": self.backend,
            "machine": self.machine,
            "ledger": self.ledger,
            "figures": figs,
        }


def _ms(samples_ns: list[int]) -> tuple[float, float, float]:
    s = sorted(samples_ns)
    p99 = s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]
    return statistics.median(s) / 1e6, p99 / 1e6, s[-1] / 1e6


def _time(fn: Callable[[int], object], runs: int, warmup: int) -> list[int]:
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(runs):
        t = time.perf_counter_ns()
        fn(i)
        out.append(time.perf_counter_ns() - t)
    return out


class Bench:
    """Probes and timings over one ledger, and its floor beside it."""

    def __init__(self, location: str | Path, runs: int, seed: int = 1) -> None:
        self.runs = runs
        self.rng = random.Random(seed)
        self.ledger = Ledger.open(location)
        try:
            self.db: Floor = open_floor(location)
        except BaseException:
            self.ledger.close()
            raise
        self._probes()

    def close(self) -> None:
        self.db.close()
        self.ledger.close()

    def _probes(self) -> None:
        q = self.db.rows
        n = q("SELECT max(rowid) FROM assertions")[0][0] or 0
        picks = [self.rng.randint(1, max(1, n)) for _ in range(2000)]
        marks = ",".join("?" * len(picks))
        rows = q(f"SELECT subject, id FROM assertions WHERE rowid IN ({marks})", picks)
        self.subjects = [r[0] for r in rows]
        self.assertion_ids = [r[1] for r in rows]
        self.first_at, self.last_at = q("SELECT min(at), max(at) FROM journal")[0]
        self.decisions = [r[0] for r in q("SELECT id FROM decisions ORDER BY seq LIMIT 2000")]
        self.agents = [r[0] for r in q("SELECT DISTINCT agent FROM queries LIMIT 200")]
        hot = q(
            "SELECT a.id, t.n FROM (SELECT arow, count(*) AS n FROM served GROUP BY arow"
            " ORDER BY n DESC LIMIT 1) AS t JOIN assertions a ON a.rowid = t.arow"
        )
        self.hot: str = hot[0][0] if hot else ""
        self.hot_served: int = hot[0][1] if hot else 0
        row = q("SELECT payload FROM journal WHERE kind = 'query.served' LIMIT 1")
        self.audit_row = row[0][0] if row else "{}"
        self.assertions = n
        self.events = q("SELECT max(seq) FROM journal")[0][0] or 0

    def pick(self, items: list[Any]) -> Any:
        return items[self.rng.randrange(len(items))]

    def past(self) -> Us:
        return Us(self.rng.randint(self.first_at, self.last_at))

    def figure(
        self,
        name: str,
        ours: Callable[[int], object],
        floor: Callable[[int], object] | None,
        runs: int | None = None,
        note: str = "",
    ) -> Figure:
        runs = runs or self.runs
        warm = max(5, runs // 10)
        p50, p99, mx = _ms(_time(ours, runs, warm))
        f50 = f99 = None
        if floor is not None:
            f50, f99, _ = _ms(_time(floor, runs, warm))
        return Figure(name, "ms", runs, p50, p99, mx, f50, f99, BUDGET_MS.get(name), note)

    def _floor_audited(
        self, sql: str, args: Callable[[], tuple[Any, ...]], *more: str
    ) -> Callable[[int], None]:
        """The lookup (one or more statements, same arguments) and a durable audit row."""
        db = self.db

        def run(_: int) -> None:
            values = args()
            db.begin_write()
            for statement in (sql, *more):
                db.rows(statement, values)
            db.run("INSERT INTO bench_floor (payload) VALUES (?)", (self.audit_row,))
            db.run("COMMIT")

        return run

    def lens_floor(
        self, lens: str, kind: str, args: Callable[[], tuple[Any, ...]]
    ) -> Callable[[int], None]:
        """A lens reads the rows it may show, counts the rest, and names the first of the
        live alternatives it cannot show."""
        shown = BUILTIN[lens].lifecycles
        quoted = ",".join(f"'{x}'" for x in sorted(shown))
        rows = self.db.sql(kind, quoted)
        if len(shown) == len(Lifecycle):
            return self._floor_audited(rows, args)
        more = [self.db.sql(f"{kind}_counts", quoted)]
        if named := sorted(LIVE - shown):
            more.append(self.db.sql(f"{kind}_ids", ",".join(f"'{x}'" for x in named)))
        return self._floor_audited(rows, args, *more)

    def _floor_read(self, key: str, args: Callable[[], tuple[Any, ...]]) -> Callable[[int], None]:
        sql, rows = self.db.sql(key), self.db.rows

        def run(_: int) -> None:
            rows(sql, args())

        return run


def run(
    location: str | Path,
    *,
    runs: int = 1000,
    heavy_runs: int = 100,
    rebuild: bool = False,
    warm_cache: bool = True,
) -> Report:
    """Measure every figure on the ledger at a home or a PostgreSQL URL.

    `warm_cache`: bring the database into the OS cache first, as a long-running server
    has it (SQLite: its files read once; PostgreSQL: pg_prewarm, or table scans).
    """
    b = Bench(location, runs)
    L = b.ledger
    figs: list[Figure] = []
    try:
        warmed = b.db.warm() if warm_cache else "no"

        def subj() -> Any:
            return b.pick(b.subjects)

        for lens, name in (
            ("approved", "point query (approved, audited)"),
            ("latest", "point query (latest, audited)"),
            ("consensus", "point query (consensus, audited)"),
        ):
            figs.append(
                b.figure(
                    name,
                    lambda _, lens=lens: L.query(subj(), agent="bench", lens=lens),  # type: ignore[misc]
                    b.lens_floor(lens, "point", lambda: (subj(),)),
                )
            )

        def at() -> Any:
            return from_us(b.past())

        figs.append(
            b.figure(
                "time-travel query (audited)",
                lambda _: L.query(subj(), agent="bench", at=at()),
                b.lens_floor("approved", "as_of", lambda: (subj(), *(b.past(),) * 2)),
            )
        )
        figs.append(
            b.figure(
                "served at a past time",
                lambda _: L.served(subj(), at=at(), limit=50),
                b._floor_read("served", lambda: (subj(), b.past())),
            )
        )
        day = 86_400_000_000

        def window() -> Any:
            return (Us(b.last_at - day), Us(b.last_at))

        changes = len(L.store.changes(None, *window()))
        figs.append(
            b.figure(
                "24h diff, whole store",
                lambda _: L.diff(None, since=from_us(window()[0]), until=from_us(window()[1])),
                b._floor_read("diff", window),
                runs=heavy_runs,
                note=f"{changes:,} changes in the window",
            )
        )

        newest_sql, counts_sql = b.db.sql("diff_newest"), b.db.sql("diff_counts")

        def newest_floor(_: int) -> None:
            b.db.rows(newest_sql, window())
            b.db.rows(counts_sql, window())

        figs.append(
            b.figure(
                "24h diff, whole store, newest 1,000",
                lambda _: L.diff(
                    None, since=from_us(window()[0]), until=from_us(window()[1]), limit=1000
                ),
                newest_floor,
                runs=heavy_runs,
                note="and the counts of all, as `episteme diff` shows",
            )
        )

        def prefix() -> Any:
            return b.pick(b.subjects).split(".")[0]

        figs.append(
            b.figure(
                "24h diff, one prefix",
                lambda _: L.diff(prefix(), since=from_us(window()[0]), until=from_us(window()[1])),
                b._floor_read(
                    "diff_prefix", lambda: ((p := prefix()), p + ".", p + "/", *window())
                ),
                runs=heavy_runs,
            )
        )

        def aid() -> Any:
            return b.pick(b.assertion_ids)

        figs.append(
            b.figure("blame", lambda _: L.blame(aid()), b._floor_read("blame", lambda: (aid(),)))
        )
        if b.decisions:

            def dec() -> Any:
                return b.pick(b.decisions)

            figs.append(
                b.figure(
                    "trace of a decision",
                    lambda _: L.trace(dec()),
                    b._floor_read("trace", lambda: (dec(),)),
                )
            )
        if b.hot:

            def impact_floor(_: int) -> None:
                for sql in IMPACT:
                    b.db.rows(sql, (b.hot,))

            figs.append(
                b.figure(
                    "impact of the most served assertion",
                    lambda _: L.impact(b.hot),
                    impact_floor,
                    note=f"served {b.hot_served:,} times",
                )
            )
        six_h = 6 * 3_600_000_000

        def agent_window() -> Any:
            return (b.pick(b.agents), Us(b.last_at - six_h), Us(b.last_at))

        def audit_ours(_: int) -> object:
            agent, t1, t2 = agent_window()
            return L.audit(agent=agent, since=from_us(t1), until=from_us(t2))

        figs.append(
            b.figure("audit of one agent, 6h", audit_ours, b._floor_read("audit", agent_window))
        )

        def word() -> Any:  # a value word: matches a few dozen assertions, as a search would
            return f"v{b.rng.randint(0, 999)}"

        figs.append(
            b.figure(
                "full-text query (audited)",
                lambda _: L.query(None, agent="bench", text=word()),
                b.lens_floor("approved", "text", lambda: (b.db.match(word()),)),
            )
        )
        figs += _writes(b)
        figs.append(_verify(b))
        if rebuild:
            t = time.perf_counter()
            L.store.rebuild()  # the replay alone (`episteme rebuild` verifies the chain first)
            secs = time.perf_counter() - t
            figs.append(Figure("rebuild", "s", 1, secs, secs, secs, note=f"{b.events:,} events"))
        size = b.db.size()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ledger_info = {
            "assertions": b.assertions,
            "events": b.events,
            "bytes": size,
            "bytes_per_assertion": size / max(1, b.assertions),
            "max_rss_mb": rss,
            "warmed_by": warmed,
        }
        machine = _machine() | b.db.describe()
        return Report(machine=machine, ledger=ledger_info, figures=figs, backend=b.db.backend)
    finally:
        b.close()


def _writes(b: Bench) -> list[Figure]:
    L = b.ledger
    serial = itertools.count()

    def one(i: int) -> AssertionInput:
        return AssertionInput.model_construct(
            subject=b.pick(b.subjects),
            value=next(serial),  # unique: a batch never repeats itself
            agent="bench",
            kind=Kind.FACT,
            confidence=0.9,
            lifecycle=Lifecycle.PROPOSED,
            source="bench",
            evidence=None,
            epoch=None,
            derived_from=(),
            valid_from=None,
            valid_to=None,
        )

    runs = b.runs
    single = _time(lambda i: L.add([one(i)]), runs, 10)

    db = b.db
    columns = ASSERTION_COLUMNS

    def floor_inserts(n: int) -> None:
        # The same rows into the same tables in raw SQL, rolled back to a savepoint so the
        # ledger stays whole, then a durable commit of a journal-sized row.
        at = to_us(Instant.now())
        recs = [
            content_record(subject=b.pick(b.subjects), value=next(serial), kind="fact",
                           agent="bench", recorded_at=at, lifecycle="proposed", confidence=0.9,
                           source="bench")
            for _ in range(n)
        ]  # fmt: skip
        db.begin_write()
        db.run("SAVEPOINT floor")
        first = db.rows("SELECT coalesce(max(rowid), 0) + 1 FROM assertions")[0][0]
        rows = [
            (first + i, a["id"], a["subject"], canonical(a["value"]), a["kind"], a["agent"],
             a["source"], None, None, "[]", None, None, Us(at), 0)
            for i, a in enumerate(recs)
        ]  # fmt: skip
        db.runmany(f"INSERT INTO assertions ({columns}) VALUES ({','.join('?' * 14)})", rows)
        if db.separate_fts:  # PostgreSQL computes its text-search column itself
            db.runmany(
                "INSERT INTO assertions_fts (rowid, subject, value, source) VALUES (?,?,?,?)",
                [(r[0], r[2], search_text(r[3]), r[6]) for r in rows],
            )
        db.runmany(
            f"INSERT INTO versions VALUES (?,0,?,'proposed',0.9,?,{OPEN},NULL,'b',NULL,'added')",
            [(r[0], r[2], Us(at)) for r in rows],
        )
        db.run("ROLLBACK TO SAVEPOINT floor")
        db.run("RELEASE SAVEPOINT floor")
        db.run("INSERT INTO bench_floor (payload) VALUES (?)", (canonical(recs),))
        db.run("COMMIT")

    fsingle = _time(lambda _: floor_inserts(1), runs, 10)
    batches = max(5, runs // 50)
    batch = _time(lambda i: L.add([one(i) for _ in range(1000)]), batches, 2)
    fbatch = _time(lambda _: floor_inserts(1000), batches, 2)

    def rate(ns: list[int], per: int) -> float:
        return per * 1e9 / statistics.median(ns)

    return [
        Figure(
            "single durable assert",
            "/s",
            runs,
            rate(single, 1),
            1e9 / sorted(single)[round(0.99 * (len(single) - 1))],
            1e9 / max(single),
            rate(fsingle, 1),
            rate(fsingle, 1),
            BUDGET_RATE["single durable assert"],
            "p50 is the median rate; p99/max are the rates of the p99 and slowest calls",
        ),
        Figure(
            "batch assert (1,000 per call)",
            "/s",
            batches,
            rate(batch, 1000),
            1000e9 / sorted(batch)[round(0.99 * (len(batch) - 1))],
            1000e9 / max(batch),
            rate(fbatch, 1000),
            rate(fbatch, 1000),
            BUDGET_RATE["batch assert (1,000 per call)"],
        ),
    ]


def _verify(b: Bench) -> Figure:
    rates, floors = [], []
    for _ in range(3):
        t = time.perf_counter()
        report = b.ledger.verify()
        rates.append(report.events / (time.perf_counter() - t))
        t = time.perf_counter()
        count = b.db.scan(JOURNAL)
        floors.append(count / (time.perf_counter() - t))
    return Figure(
        "verify",
        "/s",
        3,
        statistics.median(rates),
        min(rates),
        min(rates),
        statistics.median(floors),
        statistics.median(floors),
        BUDGET_RATE["verify"],
        "events per second; floor: reading the journal rows through the driver, no hashing",
    )


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "at": Instant.now().format_iso(),
    }
