"""What the benchmark scripts share: how they take an older version's source and how they
end on bad input (one line, as the CLI does, not a traceback).

The scripts run as ``python bench/NAME.py``, with this folder first on the path."""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def old_source(text: str) -> str:
    """An argparse type: the `src` folder of another checkout of Episteme. A folder
    that holds none is refused: Python would import the installed version in its place,
    and the comparison would set this version against itself."""
    if not (Path(text) / "episteme" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(
            f"{text} holds no episteme package: give the src folder of another checkout"
            " (git worktree add /tmp/episteme-old REV, then /tmp/episteme-old/src)"
        )
    return str(Path(text).resolve())


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def p90(times: Sequence[float]) -> float:
    """The 90th percentile (with few runs, the slowest but the top tenth)."""
    return statistics.quantiles(times, n=10, method="inclusive")[-1] if len(times) > 1 else times[0]


def script(main: Callable[[], None]) -> None:
    """Run a script's `main`, ending on a library error or a failed step with its message
    on one line and exit code 2 (1 for a failed step)."""
    from episteme.errors import EpistemeError

    try:
        main()
    except EpistemeError as exc:
        sys.exit(f"error: {exc.message}")
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


class StepFailed(Exception):
    """A measuring process that failed: its last line of error output says why."""
