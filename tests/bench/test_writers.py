"""The durable-writers benchmark at a tiny size, on both backends: it starts writing
processes, counts their acknowledged asserts beside the held-flush path, and the
ledger still verifies afterwards. No timing is asserted here."""

from __future__ import annotations

import json
from pathlib import Path

from episteme.ledger import Ledger
from episteme.ledger.store import open_store
from tests.conftest import Cli


def test_bench_writers_runs_on_either_backend(
    cli: Cli, tmp_path: Path, location: str | Path
) -> None:
    open_store(location, ensure=True).close()
    where = ("--home", str(location)) if isinstance(location, Path) else ("--db", location)
    out = tmp_path / "writers.json"
    r = cli(
        "bench", "writers", *where, "--processes", "1", "--processes", "2", "--seconds", "1",
        "--warmup", "0", "--rounds", "1", "--output", str(out), home_arg=False,
    )  # fmt: skip
    assert r.code == 0, r.err
    data = json.loads(out.read_text())
    assert data["backend"] == ("sqlite" if isinstance(location, Path) else "postgresql")
    names = [f["name"] for f in data["figures"]]
    assert names == [
        "durable asserts/s, 1 process × 1 thread",
        "durable asserts/s, 2 processes × 1 thread",
    ]
    for f in data["figures"]:
        assert f["p50"] > 0, f
        assert f["floor_p99"] is not None, f
        assert f["budget"] == 1_000 * (1 if "1 process" in f["name"] else 2)
    with Ledger.open(location) as ledger:
        assert ledger.verify().ok
        written = data["ledger"]["assertions"]
        # every counted write is in the ledger (counts exclude warm-up and readiness writes)
        counted = sum(f["p50"] for f in data["figures"])  # 1 window each: the median is it
        counted += sum(f["floor_p99"] for f in data["figures"])
        assert written >= counted


def test_bench_writers_needs_a_ledger(cli: Cli, tmp_path: Path) -> None:
    r = cli("bench", "writers", "--home", str(tmp_path / "none"), home_arg=False)
    assert r.code != 0
    assert "no ledger in" in r.err
    assert "Traceback" not in r.err
