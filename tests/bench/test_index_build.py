"""`bench/index_build.py` at a tiny size: each backend's list index built on a table of
synthetic decisions, each round timed. No figure is held to a budget here."""

from __future__ import annotations

import re

from tests.bench.support import run_script


def test_index_build_times_each_backend() -> None:
    out = run_script("index_build.py", "--rows", "200", "--rounds", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["SQLite", "PostgreSQL"]
    for line in lines:
        assert re.search(
            r": decisions \(at\) over 200 rows: [\d.]+, [\d.]+ s; median [\d.]+ s$", line
        )
