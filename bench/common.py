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
    """The 90th percentile (inclusive: with two runs, between them); nan with none."""
    if len(times) < 2:
        return times[0] if times else float("nan")
    return statistics.quantiles(times, n=10, method="inclusive")[-1]


def script(main: Callable[[], None]) -> None:
    """Run a script's `main`, ending on a library error or a failed step with its message
    on one line: exit code 2 for a library error about what was given (as the CLI), 1
    for the world's (a database away) and for a failed step."""
    from episteme.errors import EpistemeError

    try:
        main()
    except EpistemeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


class StepFailed(Exception):
    """A measuring process that failed: its last line of error output says why."""
