"""The `episteme` command: thin Typer skins over the library.

A command opens the `Ledger`, calls one method, prints the result (Rich by
default, ``--json`` for machines), and turns an `EpistemeError` into one readable
line on stderr with the error's exit code (2: your input, 1: the world).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from episteme.cli.common import CliState, app
from episteme.errors import EpistemeError, InvalidInput, database_failed, from_database


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


def main(argv: Sequence[str] | None = None, *, cli_state: CliState | None = None) -> None:
    """Entry point of the console script (tests pass `argv` and a `CliState`)."""
    _register()
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        _one_location(args)
        app(args=args, prog_name="episteme", obj=cli_state)
    except EpistemeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        # The store turns the failures it expects into EpistemeErrors; anything else
        # from the database (a damaged file, a privilege revoked) is the world failing.
        if not from_database(exc):
            raise
        failed = database_failed(exc)
        typer.echo(f"error: {failed.message}", err=True)
        sys.exit(failed.exit_code)


_register()

__all__ = ["app", "main"]
