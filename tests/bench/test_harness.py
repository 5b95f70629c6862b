"""The benchmark harness at a tiny size, on both backends: it runs, it is deterministic,
it stays honest.

No timing is asserted here; figures live in docs/benchmarks.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from whenever import Instant

from episteme.benchmark.generate import Spec, generate
from episteme.benchmark.run import run
from episteme.errors import InvalidInput
from episteme.ledger import Ledger
from episteme.ledger.journal import Draft, EventKind
from episteme.ledger.store import open_store
from tests.backends import raw_connection
from tests.conftest import Cli

TINY = Spec(assertions=400, subjects=40, agents=6, days=2, queries=800, seed=3)
END = Instant.parse_iso("2026-11-21T12:00:00Z")


def _generate(location: str | Path, spec: Spec = TINY):  # type: ignore[no-untyped-def]
    store = open_store(location, create=True)
    try:
        return generate(store, spec, end=END)
    finally:
        store.close()


def _has_table(location: str | Path, name: str) -> bool:
    with raw_connection(location) as conn:
        if isinstance(location, Path):
            found = "SELECT count(*) FROM sqlite_master WHERE name = ?"
        else:
            found = "SELECT count(*) FROM pg_class WHERE oid = to_regclass(?)"
        return bool(conn.execute(found, (name,)).fetchone()[0])


def test_generated_ledger_verifies_and_rebuilds_exactly(location: str | Path) -> None:
    summary = _generate(location)
    assert summary.assertions == TINY.assertions
    assert summary.queries == TINY.queries
    assert summary.decisions > 0
    assert summary.moves > 0
    assert summary.hot_served > 0
    with Ledger.open(location) as ledger:
        assert ledger.verify().ok
        report = ledger.rebuild()
        assert report.ok, report.differences


def test_generation_is_deterministic_from_the_seed(tmp_path: Path, pg_url: str) -> None:
    one = _generate(tmp_path / "one")
    two = _generate(tmp_path / "two")
    on_postgres = _generate(pg_url)  # the same chain, whatever the store
    with Ledger.open(tmp_path / "one") as a, Ledger.open(tmp_path / "two") as b:
        assert a.verify().head == b.verify().head
        with Ledger.open(pg_url) as c:
            assert c.verify().head == a.verify().head
    assert one.events == two.events == on_postgres.events


def test_every_figure_is_measured_beside_its_floor(location: str | Path) -> None:
    _generate(location)
    report = run(location, runs=5, heavy_runs=2, rebuild=True)
    assert report.backend == ("sqlite" if isinstance(location, Path) else "postgresql")
    names = [f.name for f in report.figures]
    for expected in (
        "point query (approved, audited)",
        "point query (latest, audited)",
        "point query (consensus, audited)",
        "time-travel query (audited)",
        "served at a past time",
        "24h diff, whole store",
        "24h diff, whole store, newest 1,000",
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
    assert data["backend"] == report.backend
    assert data["ledger"]["assertions"] >= TINY.assertions
    assert data["ledger"]["bytes_per_assertion"] > 0
    assert data["ledger"]["warmed_by"] in ("file read", "pg_prewarm", "table scans")
    # the floors' scratch table is gone and the ledger is still whole
    assert not _has_table(location, "bench_floor")
    with Ledger.open(location) as ledger:
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


def test_bench_commands_on_postgresql(cli: Cli, tmp_path: Path, pg_url: str) -> None:
    r = cli(
        "bench", "generate", "--db", pg_url, "--assertions", "200", "--subjects", "20",
        "--agents", "4", "--days", "1", "--queries", "300", home_arg=False,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "200 assertions" in " ".join(r.out.split())
    out = tmp_path / "results" / "tiny.json"
    r = cli(
        "bench", "run", "--db", pg_url, "--runs", "3", "--heavy-runs", "2", "--no-warm",
        "--output", str(out), home_arg=False,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "postgresql" in r.out
    data = json.loads(out.read_text())
    assert data["backend"] == "postgresql"
    assert data["machine"]["fsync"] in ("on", "off")
    assert {f["name"] for f in data["figures"]} >= {"verify", "blame", "single durable assert"}


def test_bench_commands_take_one_ledger(cli: Cli, tmp_path: Path) -> None:
    for args, words in (
        ((), "exactly one of --home"),
        (("--home", str(tmp_path), "--db", "postgresql://h/db"), "not both"),
    ):
        for command in ("generate", "run"):
            r = cli("bench", command, *args, home_arg=False)
            assert r.code == 2
            assert words in r.err
    r = cli("bench", "run", "--db", str(tmp_path), home_arg=False)
    assert r.code == 2
    assert "PostgreSQL URL" in r.err


def test_backfill_refuses_a_time_before_the_head_and_writes_nothing(location: str | Path) -> None:
    _generate(location, Spec(assertions=20, subjects=4, agents=2, days=1, queries=10, seed=1))
    with Ledger.open(location) as ledger:
        head = ledger.verify().head
        seq, last_at, _ = ledger.store.head()
        payload = {"decision_id": "d_x", "action": "x", "query_ids": [], "context": {}}
        late = Draft(EventKind.DECISION_RECORDED, "a", payload)
        with pytest.raises(InvalidInput, match="before the journal head"):
            ledger.store.backfill([(last_at + 1, late), (last_at, late)])
        assert ledger.store.head()[0] == seq
        assert ledger.verify().head == head
