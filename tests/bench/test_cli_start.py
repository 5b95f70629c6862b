"""`bench/cli_start.py` at a tiny size, this checkout against itself: both figures
printed with medians, p90s and a ratio. No figure is held to a budget here."""

from __future__ import annotations

import re

from tests.bench.support import ROOT, run_script


def test_cli_start_times_a_command_and_the_import() -> None:
    out = run_script("cli_start.py", "--old-src", str(ROOT / "src"), "--runs", "1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["episteme blame auth", "import episteme.cli"]
    for line in lines:
        assert re.search(r"old median \d+ ms \(p90 \d+\), new median \d+ ms \(p90 \d+\)", line)
