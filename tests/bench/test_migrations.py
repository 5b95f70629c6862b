"""`bench/migrations.py` at a tiny size: each backend's newest migrations timed on a
generated ledger set back to the version before, which the script checks verifies and
rebuilds clean once migrated. No figure is held to a budget here."""

from __future__ import annotations

import re

from tests.bench.support import run_script


def test_migrations_times_each_backends_newest_migrations() -> None:
    out = run_script("migrations.py", "--assertions", "300", "--constraints", "20", "--rounds", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "SQLite 7 -> 8",
        "SQLite 5 -> 8",
        "PostgreSQL 6 -> 7",
        "PostgreSQL 4 -> 7",
    ]
    for line in lines:
        assert re.search(
            r": 300 assertions, 20 constraints \(\d+ MB\): [\d.]+, [\d.]+ s; median [\d.]+ s$", line
        )
