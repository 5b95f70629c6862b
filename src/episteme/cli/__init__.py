"""The `episteme` command: thin Typer skins over the library.

A command opens the `Ledger`, calls one method, prints the result (Rich by
default, ``--json`` for machines), and turns an `EpistemeError` into one readable
line on stderr with the error's exit code (2: your input, 1: the world).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

import orjson
import typer
from pydantic import ValidationError

from episteme.cli.common import CliState, app
from episteme.errors import EpistemeError, InvalidInput, database_failed, from_database
from episteme.text import visible


def _register() -> None:
    # commands register on import
    from episteme.cli import bench, demo, diagnose, gardener, learning, ledger, server  # noqa: F401
    from episteme.cli import copy as copy_commands  # noqa: F401
    from episteme.cli import mcp as mcp_commands  # noqa: F401
    from episteme.cli import secrets as secret_commands  # noqa: F401


_LOCATION = ("--home", "--db")


def _one_location(args: Sequence[str]) -> None:
    """Refuse `--home` and `--db` given together: they are one option, and the parser
    would keep the last in silence, serving a SQLite home to someone who also asked for
    PostgreSQL. (One of them given twice is the usual override: the last wins.)"""
    given = set()
    for arg in args:
        if arg == "--":
            break
        name = arg.partition("=")[0]
        if name in _LOCATION:
            given.add(name)
    if len(given) > 1:
        raise InvalidInput(
            "give one of --home DIR and --db URL, not both: each names the ledger to use",
            field="home",
        )


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends a command as Ctrl-C does, through its clean-ups (a transaction rolled
    back, an export's part-file removed), rather than where it stands."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None, *, cli_state: CliState | None = None) -> None:
    """Entry point of the console script (tests pass `argv` and a `CliState`)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    if argv is None:  # the process's own command (`serve` puts uvicorn's in its place)
        signal.signal(signal.SIGTERM, _stop)
    try:
        _one_location(args)
        app(args=args, prog_name="episteme", obj=cli_state)
    except KeyboardInterrupt:  # before a command's own handling (typer building it)
        sys.exit(130)
    except EpistemeError as exc:
        _fail(exc.message, exc.exit_code)
    except Exception as exc:
        # The store turns the failures it expects into EpistemeErrors; anything else
        # from the database (a damaged file, a privilege revoked) is the world failing.
        if from_database(exc):
            failed = database_failed(exc)
            _fail(failed.message, failed.exit_code)
        if isinstance(exc, BrokenPipeError):  # the reader went away (| head): be quiet
            with contextlib.suppress(OSError, ValueError, AttributeError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        if isinstance(exc, UnicodeEncodeError) and "surrogate" in exc.reason:
            # an argument's bytes that are not UTF-8 (Python keeps them as surrogates),
            # met where text is encoded before anything checked it
            _fail("an argument holds bytes that are not UTF-8 text: give it as UTF-8", 2)
        if _unreadable_row(exc):
            _fail(UNREADABLE_ROW, 1)
        if isinstance(exc, OSError):  # a file named, or the output: a full disk, closed
            why = (exc.strerror or str(exc) or type(exc).__name__).lower()
            _fail(
                f"{exc.filename}: {why}" if exc.filename else f"cannot write the output: {why}", 1
            )
        raise


UNREADABLE_ROW = (
    "a row of the ledger cannot be read back as JSON: the file was changed or damaged "
    "outside Episteme; run `episteme verify` (the journal), then `episteme rebuild "
    "--repair` to rebuild what the journal holds, or restore from a backup"
)


def _unreadable_row(exc: Exception) -> bool:
    """Whether `exc` is stored JSON that does not parse (a row edited or a page damaged
    under the ledger): orjson's error, or pydantic's reading a JSON column."""
    if isinstance(exc, orjson.JSONDecodeError):
        return True
    return isinstance(exc, ValidationError) and any(
        e["type"] == "json_invalid" for e in exc.errors()
    )


def _fail(message: str, code: int) -> NoReturn:
    with contextlib.suppress(OSError, ValueError):  # stderr closed as well
        typer.echo(f"error: {visible(message)}", err=True)
    sys.exit(code)


try:
    _register()  # the commands' modules: a second or so, which Ctrl-C may cut short
except KeyboardInterrupt:
    sys.exit(130)  # quietly, as a command stopped by Ctrl-C does

__all__ = ["app", "main"]
