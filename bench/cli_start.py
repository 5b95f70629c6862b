"""How long a CLI command takes from start to exit, this version against another.

    python bench/cli_start.py --old-src OLD/src [--runs 20]

OLD/src is the `src` folder of another checkout (`git worktree add OLD <commit>`); the
new version is this checkout's `src`. Each run starts a fresh interpreter for
`episteme blame auth` on a fresh SQLite ledger, and for `import episteme.cli` alone,
alternating old and new. Bytecode is written to a cache of each version's own (as an
installed package has it compiled), and one run of each warms it. Prints the median and
p90 of each, and new/old.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import old_source, p90, positive, script  # beside this file

NEW_SRC = Path(__file__).resolve().parents[1] / "src"


def _env(src: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPATH": str(src), "PYTHONPYCACHEPREFIX": str(cache)}


def _run(argv: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, check=False)
    took = time.perf_counter() - began
    if done.returncode not in (0, 2):  # 2: `blame` of a subject with no assertion
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-src", required=True, type=old_source)
    parser.add_argument("--runs", type=positive, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = str(Path(tmp) / "home")
        envs = {
            "old": _env(Path(args.old_src), Path(tmp) / "cache-old"),
            "new": _env(NEW_SRC, Path(tmp) / "cache-new"),
        }
        subprocess.run([sys.executable, "-m", "episteme", "init", "--home", home],
                       env=envs["new"], capture_output=True, check=True)  # fmt: skip
        figures = {
            "episteme blame auth": ["-m", "episteme", "blame", "auth", "--home", home],
            "import episteme.cli": ["-c", "import episteme.cli"],
        }
        for name, argv in figures.items():
            times: dict[str, list[float]] = {"old": [], "new": []}
            for which in ("old", "new"):
                _run(argv, envs[which])  # compiles the bytecode once
            for _ in range(args.runs):
                for which in ("old", "new"):
                    times[which].append(_run(argv, envs[which]))
            old, new = (statistics.median(times[w]) for w in ("old", "new"))
            print(
                f"{name}: old median {old * 1000:.0f} ms (p90 {p90(times['old']) * 1000:.0f}),"
                f" new median {new * 1000:.0f} ms (p90 {p90(times['new']) * 1000:.0f}),"
                f" new/old {new / old:.2f}"
            )


if __name__ == "__main__":
    script(main)
