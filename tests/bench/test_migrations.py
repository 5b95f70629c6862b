"""`bench/migrations.py` at a tiny size: each backend's newest migration timed on a
generated ledger set back to the version before, which the script checks verifies and
rebuilds clean once migrated. No figure is held to a budget here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_migrations_times_each_backends_newest_migration() -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    script = str(ROOT / "bench" / "migrations.py")
    out = subprocess.run(
        [sys.executable, script, "--assertions", "300", "--rounds", "2"],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["SQLite 5 -> 6", "PostgreSQL 4 -> 5"]
    for line in lines:
        assert re.search(r": 300 assertions \(\d+ MB\): [\d.]+, [\d.]+ s; median [\d.]+ s$", line)
