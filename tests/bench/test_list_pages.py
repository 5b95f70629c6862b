"""`bench/list_pages.py` at a tiny size: every page it times is printed with a median,
a p99 and, beside its raw SQL, a ratio. No figure is held to a budget here."""

from __future__ import annotations

import re

from tests.bench.support import run_script


def test_list_pages_times_newest_and_deep_pages() -> None:
    out = run_script("list_pages.py", "--decisions", "300", "--runs", "5")
    assert out.returncode == 0, out.stderr
    first, *rows = out.stdout.splitlines()
    assert first.startswith("300 decisions and audited reads in ")
    assert len(rows) == 8
    for row in rows:
        assert re.search(r"median +[\d.]+ ms +p99 +[\d.]+ ms", row), row
    assert sum("of raw SQL" in row for row in rows) == 5
