"""`episteme bench`: generate the reference ledger; measure the latency budget and the API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from episteme.benchmark.generate import Spec, generate
from episteme.cli.common import app, state
from episteme.errors import InvalidInput
from episteme.ledger.store import DB_FILE, POSTGRES_SCHEMES, open_store

if TYPE_CHECKING:
    from episteme.benchmark.run import Report

# The measuring modules load in their commands: the HTTP benchmark brings httpx and the
# API, a fifth of a second that every other command would pay at start.

bench_app = typer.Typer(help="Benchmarks: generate a reference ledger, measure it.")
app.add_typer(bench_app, name="bench")

BenchDir = Annotated[
    Path | None,
    typer.Option("--home", help="Directory of a SQLite benchmark ledger.", show_default=False),
]
BenchDb = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="PostgreSQL URL of a benchmark ledger (postgresql://USER@HOST/DATABASE).",
        show_default=False,
    ),
]


def _where(home: Path | None, db: str | None) -> Path | str:
    """The ledger a bench command works on: exactly one of --home and --db."""
    if (home is None) == (db is None):
        raise InvalidInput("give exactly one of --home DIR (SQLite) and --db URL (PostgreSQL)")
    if db is not None:
        if not db.startswith(POSTGRES_SCHEMES):
            raise InvalidInput(f"--db takes a PostgreSQL URL (postgresql://...), not {db!r}")
        return db
    assert home is not None
    return home


@bench_app.command("generate")
def bench_generate(
    ctx: typer.Context,
    home: BenchDir = None,
    db: BenchDb = None,
    assertions: Annotated[int, typer.Option(min=1)] = Spec.assertions,
    subjects: Annotated[int, typer.Option(min=1)] = Spec.subjects,
    agents: Annotated[int, typer.Option(min=1)] = Spec.agents,
    days: Annotated[int, typer.Option(min=1)] = Spec.days,
    queries: Annotated[int, typer.Option(min=0)] = Spec.queries,
    seed: Annotated[int, typer.Option()] = Spec.seed,
) -> None:
    """Build a realistic ledger (deterministic from --seed) in an empty home or database."""
    where = _where(home, db)
    if isinstance(where, Path) and (where / DB_FILE).exists():
        raise InvalidInput(f"{where} already has a ledger: give an empty --home")
    spec = Spec(assertions, subjects, agents, days, queries, seed)
    store = open_store(where, create=True)
    # events: assertion batches, reviews (1 per 5 assertions), queries, decisions
    expected = assertions // 150 + assertions // 5 + queries + queries // 100
    columns = (*Progress.get_default_columns()[:2], BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, TimeElapsedColumn(), console=state(ctx).console) as bar:
            task = bar.add_task("generating events", total=expected)
            summary = generate(store, spec, progress=lambda n: bar.advance(task, n))
            bar.update(task, completed=summary.events, total=summary.events)
    finally:
        store.close()
    state(ctx).console.print(
        f"{summary.events:,} events: {summary.assertions:,} assertions, {summary.moves:,} "
        f"reviews, {summary.corrections:,} corrections, {summary.queries:,} audited queries, "
        f"{summary.decisions:,} decisions; the most served assertion was served "
        f"{summary.hot_served:,} times"
    )


@bench_app.command("run")
def bench_run(
    ctx: typer.Context,
    home: BenchDir = None,
    db: BenchDb = None,
    runs: Annotated[int, typer.Option(min=1, help="Runs per figure.")] = 1000,
    heavy_runs: Annotated[int, typer.Option(min=1, help="Runs of the 24h diffs.")] = 100,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Also time a full rebuild.")] = False,
    warm: Annotated[
        bool,
        typer.Option(
            "--warm/--no-warm",
            help="Bring the database into the OS cache first (SQLite: read its files;"
            " PostgreSQL: pg_prewarm where installed, else table scans).",
        ),
    ] = True,
    output: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """Measure every figure against its SQL floor and its budget."""
    where = _where(home, db)
    if isinstance(where, Path) and not (where / DB_FILE).exists():
        raise InvalidInput(f"no ledger in {where}: run `episteme bench generate --home {where}`")
    from episteme.benchmark.run import run

    report = run(where, runs=runs, heavy_runs=heavy_runs, rebuild=rebuild, warm_cache=warm)
    _show(ctx, report, output, as_json)


def _show(ctx: typer.Context, report: Report, output: Path | None, as_json: bool) -> None:
    """Write the JSON report to `output` if given; print it, or the table and the ledger."""
    data = report.to_json()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(data, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    state(ctx).console.print(table(report))
    info = report.ledger
    line = f"{report.backend}: {info['assertions']:,} assertions, {info['events']:,} events"
    if "bytes_per_assertion" in info:
        line += (
            f", {info['bytes_per_assertion']:.0f} bytes per assertion, max RSS "
            f"{info['max_rss_mb']:.0f} MB"
        )
    state(ctx).console.print(line)


def _counts(flag: str, what: str, default: str) -> Any:
    """A repeatable option of positive counts (its default given in the help)."""
    return typer.Option(flag, min=1, help=f"{what} (repeatable) [{default}].", show_default=False)


@bench_app.command("http")
def bench_http(
    ctx: typer.Context,
    home: BenchDir = None,
    db: BenchDb = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed point queries over HTTP.")] = 2000,
    seconds: Annotated[
        int, typer.Option(min=1, help="Length of each throughput run, in 1-second windows.")
    ] = 10,
    warmup: Annotated[
        float, typer.Option(min=0, help="Seconds of load before each throughput run counts.")
    ] = 2.0,
    connections: Annotated[
        int, typer.Option(min=1, help="Concurrent keep-alive connections of the load.")
    ] = 32,
    workers: Annotated[
        list[int] | None, _counts("--workers", "Server workers to load with", "1 and 2")
    ] = None,
    threads: Annotated[
        int, typer.Option(min=1, help="Threads per process of the library floor.")
    ] = 8,
    warm: Annotated[
        bool,
        typer.Option(
            "--warm/--no-warm",
            help="Bring the database into the cache first (SQLite: its files read once;"
            " PostgreSQL: pg_prewarm where installed, else table scans).",
        ),
    ] = True,
    output: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """Measure the API over HTTP (`episteme serve`) against the library in-process."""
    where = _where(home, db)
    if isinstance(where, Path) and not (where / DB_FILE).exists():
        raise InvalidInput(f"no ledger in {where}: run `episteme bench generate --home {where}`")
    from episteme.benchmark import http as http_bench

    report = http_bench.run(
        where, runs=runs, seconds=seconds, warmup=warmup, connections=connections,
        workers=workers or (1, 2), threads=threads, warm_cache=warm,
        progress=lambda step: typer.echo(f"measuring: {step}", err=True),
    )  # fmt: skip
    _show(ctx, report, output, as_json)


@bench_app.command("writers")
def bench_writers(
    ctx: typer.Context,
    home: BenchDir = None,
    db: BenchDb = None,
    processes: Annotated[
        list[int] | None, _counts("--processes", "Writing processes to measure with", "1, 2 and 4")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="Writing threads per process.")] = 1,
    seconds: Annotated[int, typer.Option(min=1, help="Counted seconds of each run.")] = 5,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of load before counting.")] = 1.0,
    rounds: Annotated[
        int, typer.Option(min=1, help="Alternations with the flush under the lock.")
    ] = 3,
    output: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """Measure durable single asserts per second from several processes on one ledger,
    against the same load with the flush under the writer lock (the previous path)."""
    where = _where(home, db)
    if isinstance(where, Path) and not (where / DB_FILE).exists():
        raise InvalidInput(f"no ledger in {where}: run `episteme bench generate --home {where}`")
    from episteme.benchmark import writers as writers_bench

    report = writers_bench.run(
        where, processes=processes or (1, 2, 4), threads=threads, seconds=seconds,
        warmup=warmup, rounds=rounds,
        progress=lambda step: typer.echo(f"measuring: {step}", err=True),
    )  # fmt: skip
    _show(ctx, report, output, as_json)


_FORMATS: dict[str, Callable[[float], str]] = {
    "ms": lambda v: f"{v:,.3f} ms",
    "/s": lambda v: f"{v:,.0f}/s",
    "s": lambda v: f"{v:,.1f} s",
}


def table(report: Report) -> Table:
    t = Table(title=f"Episteme benchmark ({report.backend})", title_justify="left")
    for col in ("figure", "runs", "p50", "p99", "max", "floor p99", "×floor", "budget", "×budget"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    for f in report.figures:
        fmt = _FORMATS[f.unit]
        floor = "-" if f.floor_p99 is None else fmt(f.floor_p99)
        ratio = "-" if f.floor_ratio is None else f"{f.floor_ratio:.1f}"
        budget = "-" if f.budget is None else fmt(f.budget)
        bratio = "-" if f.budget_ratio is None else f"{f.budget_ratio:.2f}"
        t.add_row(
            f.name, str(f.runs), fmt(f.p50), fmt(f.p99), fmt(f.max), floor, ratio, budget, bratio
        )
    return t
