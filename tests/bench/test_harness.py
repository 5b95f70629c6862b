"""The benchmark harness at a tiny size: it runs, it is deterministic, it stays honest.

No timing is asserted here; figures live in docs/benchmarks.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from whenever import Instant

from episteme.benchmark.generate import Spec, generate
from episteme.benchmark.run import run
from episteme.ledger import Ledger
from episteme.ledger.store import open_store
from tests.conftest import Cli

TINY = Spec(assertions=400, subjects=40, agents=6, days=2, queries=800, seed=3)
END = Instant.parse_iso("2026-11-21T12:00:00Z")


def _generate(home: Path, spec: Spec = TINY):  # type: ignore[no-untyped-def]
    store = open_store(home, create=True)
    try:
        return generate(store, spec, end=END)
    finally:
        store.close()


def test_generated_ledger_verifies_and_rebuilds_exactly(tmp_path: Path) -> None:
    summary = _generate(tmp_path)
    assert summary.assertions == TINY.assertions
    assert summary.queries == TINY.queries
    assert summary.decisions > 0
    assert summary.moves > 0
    assert summary.hot_served > 0
    with Ledger.open(tmp_path) as ledger:
        assert ledger.verify().ok
        report = ledger.rebuild()
        assert report.ok, report.differences


def test_generation_is_deterministic_from_the_seed(tmp_path: Path) -> None:
    one = _generate(tmp_path / "one")
    two = _generate(tmp_path / "two")
    with Ledger.open(tmp_path / "one") as a, Ledger.open(tmp_path / "two") as b:
        assert a.verify().head == b.verify().head
    assert one.events == two.events


def test_every_figure_is_measured_beside_its_floor(tmp_path: Path) -> None:
    _generate(tmp_path)
    report = run(tmp_path, runs=5, heavy_runs=2, rebuild=True)
    names = [f.name for f in report.figures]
    for expected in (
        "point query (approved, audited)",
        "point query (latest, audited)",
        "point query (consensus, audited)",
        "time-travel query (audited)",
        "served at a past time",
        "24h diff, whole store",
        "24h diff, one prefix",
        "blame",
        "trace of a decision",
        "impact of the most served assertion",
        "audit of one agent, 6h",
        "full-text query (audited)",
        "single durable assert",
        "batch assert (1,000 per call)",
        "verify",
        "rebuild",
    ):
        assert expected in names
    for f in report.figures:
        assert min(f.p50, f.p99, f.max) > 0, f
        if f.name != "rebuild":
            assert f.floor_ratio is not None, f
    data = json.loads(json.dumps(report.to_json()))
    assert data["ledger"]["assertions"] >= TINY.assertions
    assert data["ledger"]["bytes_per_assertion"] > 0
    # the floors' scratch table is gone and the ledger is still whole
    with Ledger.open(tmp_path) as ledger:
        tables = ledger.store.conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'bench_floor'"
        ).fetchone()[0]
        assert tables == 0
        assert ledger.verify().ok
        assert ledger.rebuild().ok


def test_bench_commands(cli: Cli, tmp_path: Path) -> None:
    home = tmp_path / "bench"
    r = cli(
        "bench", "generate", "--home", str(home), "--assertions", "200", "--subjects", "20",
        "--agents", "4", "--days", "1", "--queries", "300", home_arg=False,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "200 assertions" in " ".join(r.out.split())
    again = cli("bench", "generate", "--home", str(home), home_arg=False)
    assert again.code == 2
    assert "already has a ledger" in again.err
    out = tmp_path / "results" / "tiny.json"
    r = cli(
        "bench", "run", "--home", str(home), "--runs", "3", "--heavy-runs", "2",
        "--output", str(out), home_arg=False,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "point query (approved, audited)" in r.out
    figures = json.loads(out.read_text())["figures"]
    assert {f["name"] for f in figures} >= {"verify", "blame", "single durable assert"}
    missing = cli("bench", "run", "--home", str(tmp_path / "nope"), home_arg=False)
    assert missing.code == 2
    assert "bench generate" in missing.err
