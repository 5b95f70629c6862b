"""`episteme copy`: move a ledger between stores (SQLite and PostgreSQL, either way)."""

from __future__ import annotations

from typing import Annotated

import typer

from episteme.cli.common import Json, app, emit, given_location, state
from episteme.ledger.copy import copy_ledger

_LOCATION = "a home directory, sqlite:///PATH or postgresql://USER@HOST/DATABASE"


@app.command("copy")
def copy_(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Option("--from", help=f"The ledger to copy: {_LOCATION}.", show_default=False)
    ],
    dest: Annotated[
        str,
        typer.Option(
            "--to",
            help=(
                "Where to copy it, refused when not empty: a home or SQLite file is created"
                " when absent; a PostgreSQL database must exist (createdb --owner=ROLE"
                f" --encoding=UTF8 --template=template0 NAME): {_LOCATION}."
            ),
            show_default=False,
        ),
    ],
    as_json: Json = False,
) -> None:
    """Copy a ledger's journal into an empty store, projecting and verifying it."""
    report = copy_ledger(given_location(source, "--from"), given_location(dest, "--to"))
    if not emit(ctx, as_json, report):
        n = f"{report.events} event{'' if report.events == 1 else 's'}"
        head = f"head {report.head_hash[:12]}…" if report.head_hash else "empty journal"
        if report.sessions:
            n += f" and {report.sessions} diagnosis session{'' if report.sessions == 1 else 's'}"
        what = f"copied {n}"
        if report.resumed:
            what = f"found the journal copied already; finished the copy ({what})"
        state(ctx).console.print(
            f"{what} from {report.source} to {report.destination}; chain verified ({head})",
            markup=False,
            soft_wrap=True,
        )
