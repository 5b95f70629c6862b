"""Running a script of `bench/` as the README does: from the repository root, with it
and `src` on the path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`bench/NAME ARGS`, its output captured; five minutes at most."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *args],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
