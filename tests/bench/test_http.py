"""The HTTP benchmark at a tiny size: it serves, loads, measures its floors, and reports.

No timing is asserted here; figures live in docs/benchmarks.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from whenever import Instant

from episteme.benchmark.generate import Spec, generate
from episteme.benchmark.http import POINT, POINT_ONE, Load, _head
from episteme.errors import WorldError
from episteme.ledger import Ledger
from episteme.ledger.store import open_store
from tests.conftest import Cli

TINY = Spec(assertions=300, subjects=30, agents=4, days=1, queries=400, seed=5)
END = Instant.parse_iso("2026-11-21T12:00:00Z")


def test_bench_http_runs_end_to_end(cli: Cli, tmp_path: Path, location: str | Path) -> None:
    # on either backend: the server and the library floor open the same ledger
    store = open_store(location, create=True)
    try:
        summary = generate(store, TINY, end=END)
    finally:
        store.close()
    where = ("--home", str(location)) if isinstance(location, Path) else ("--db", location)
    out = tmp_path / "results" / "http.json"
    r = cli(
        "bench", "http", *where, "--runs", "20", "--seconds", "1",
        "--warmup", "0.1", "--connections", "4", "--workers", "2", "--threads", "2",
        "--output", str(out), home_arg=False,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert POINT in r.out
    data = json.loads(out.read_text())
    assert data["backend"] == ("sqlite" if isinstance(location, Path) else "postgresql")
    figures = {f["name"]: f for f in data["figures"]}
    assert set(figures) == {
        "audited queries/s in the library, 1 thread",
        POINT,
        POINT_ONE,
        "audited queries/s over HTTP, 2 workers",
    }
    for f in figures.values():
        assert min(f["p50"], f["p99"], f["max"]) > 0, f
        if f["unit"] == "/s":  # rates: the worst windows are the low ones
            assert f["max"] <= f["p99"] <= f["p50"]
        else:
            assert f["p50"] <= f["p99"] <= f["max"]
        assert "other than 200" not in f["note"]
    for name in (POINT, "audited queries/s over HTTP, 2 workers"):
        assert figures[name]["floor_ratio"] is not None
        assert figures[name]["budget_ratio"] is not None
    assert figures[POINT]["runs"] == 20
    # the same runs, those whose answer held at most one item (here most or all), with
    # their own floor and no budget of their own
    assert 0 < figures[POINT_ONE]["runs"] <= 20
    assert "held at most one item" in figures[POINT_ONE]["note"]
    assert figures[POINT_ONE]["floor_ratio"] is not None
    assert figures[POINT_ONE]["budget"] is None
    assert data["machine"]["load"]["connections"] == 4
    assert data["ledger"]["assertions"] == TINY.assertions
    # each timed query, over HTTP and in the library, was audited; the journal still verifies
    assert data["ledger"]["events"] >= summary.events + 2 * 20
    with Ledger.open(location) as ledger:
        assert ledger.verify().ok


def test_bench_http_needs_a_ledger(cli: Cli, tmp_path: Path) -> None:
    r = cli("bench", "http", "--home", str(tmp_path / "nope"), home_arg=False)
    assert r.code == 2
    assert "bench generate" in r.err
    r = cli("bench", "http", home_arg=False)
    assert r.code == 2
    assert "exactly one of --home DIR (SQLite) and --db URL (PostgreSQL)" in r.err
    r = cli("bench", "http", "--home", str(tmp_path), "--db", "postgresql://x@y/z", home_arg=False)
    assert r.code == 2
    assert "give one of --home DIR and --db URL, not both" in r.err


def test_response_heads_are_read_for_status_and_length() -> None:
    head = b"HTTP/1.1 201 Created\r\nserver: uvicorn\r\ncontent-length: 42\r\nx: y"
    assert _head(head) == (201, 42)
    with pytest.raises(WorldError, match="Content-Length"):
        _head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked")


def test_window_rates_are_the_median_and_the_worst_windows() -> None:
    load = Load(windows=[900, 1000, 1100, 700, 1000])
    assert load.rates() == (1000.0, 700.0, 700.0)
