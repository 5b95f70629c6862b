"""Shared pieces of the CLI: the app, its state, common options and parsing."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.text import Text
from whenever import Instant

from episteme.cli import render
from episteme.errors import EpistemeError, InvalidInput, SchemaBehind
from episteme.ledger import Ledger
from episteme.ledger.model import dump
from episteme.text import visible
from episteme.timeutil import HELP as TIME_HELP
from episteme.timeutil import Clock, SystemClock, parse_time

app = typer.Typer(
    name="episteme",
    help="Episteme: what your agents believed, why, who told them, and how to fix it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


@dataclass
class CliState:
    """What commands share: the clock (the demo injects one) and the console."""

    clock: Clock = field(default_factory=SystemClock)
    console: Console = field(default_factory=lambda: _console())


class ShownConsole(Console):
    """Rich's console, showing the control characters of what it prints as escapes:
    agents write the values, sources and actions people read here, and an escape
    sequence in one could rewrite what the terminal shows (erase "RS256", print
    "ES256" in green). Rich's own markup is unaffected: it holds no control character."""

    def render_str(self, text: str, **kw: Any) -> Text:
        return super().render_str(visible(text), **kw)


def _console() -> Console:
    probe = Console()
    # Piped output (logs, CI, the demo's transcript) gets room for whole ids and times.
    return ShownConsole(highlight=False, width=None if probe.is_terminal else 160)


def default_home() -> Path:
    return Path(os.environ.get("EPISTEME_HOME") or Path.home() / ".episteme")


Home = Annotated[
    str | None,
    typer.Option(
        "--home",
        "--db",
        envvar=["EPISTEME_DB", "EPISTEME_HOME"],
        help=(
            "Ledger home directory, or database URL (sqlite:///PATH, postgresql://...)"
            " [env EPISTEME_DB or EPISTEME_HOME; default ~/.episteme]."
        ),
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
TimeOpt = Annotated[str | None, typer.Option(help=f"TIME: {TIME_HELP}.", show_default=False)]


def page_option(metavar: str, what: str) -> Any:
    """The option that asks a list for its next page: `what` it gives."""
    return typer.Option(
        metavar=metavar,
        help=f"The next page: {what} (a full page says which).",
        show_default=False,
    )


Before = Annotated[int | None, page_option("SEQ", "what was recorded before this journal position")]


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def location(home: str | None) -> str | Path:
    """Where the ledger is: the --home/--db given, else the default home."""
    return default_home() if home is None else given_location(home, "--home/--db")


def given_location(where: str, flag: str) -> str:
    """A home or database URL given as `flag`. One given empty is refused (a shell
    variable unset, most likely), not taken for the default home or the working
    directory."""
    if not where.strip():
        raise InvalidInput(
            f"{flag} is empty: give a home directory, a SQLite file or a database URL (is "
            "the variable you meant to give unset?)",
            field=flag.removeprefix("--").partition("/")[0],
        )
    return where


def open_ledger(
    ctx: typer.Context, home: str | None, *, reads: Literal["journal", "knowledge"] | None = None
) -> Ledger:
    """The ledger at `home`, for a command that writes, or that only `reads`.

    A command that only reads opens it read-only, so that it reads a ledger on read-only
    media or one this user may not write, and changes nothing: "journal" (verify,
    export) reads it as it is, whatever its schema version; "knowledge" reads its
    projections with this version's queries, so an older ledger is migrated first, as
    every start does; where it cannot be, the open fails saying why and what can still
    be read.
    """
    from episteme.ledger.store import open_store
    from episteme.ledger.trust import TrustPolicy

    policy = TrustPolicy.from_env()  # refused before the ledger is opened, or migrated
    where = location(home)
    if reads is None:
        return Ledger(open_store(where), clock=state(ctx).clock, policy=policy)
    store = open_store(where, read_only=True)
    if reads == "knowledge" and store.schema_version < store.SCHEMA_VERSION:
        try:
            store.close()
            store = open_store(where)  # migrated, as every start does
        except SchemaBehind:  # a role or a database that may not migrate it: it says so
            raise
        except EpistemeError as exc:  # read-only media, or another user's
            store.check_current(why=f"migrating it failed: {exc.message}")
            raise
    return Ledger(store, clock=state(ctx).clock, policy=policy)


def when(ctx: typer.Context, text: str | None, option: str) -> Instant | None:
    if text is None:
        return None
    try:
        return parse_time(text, state(ctx).clock.now())
    except InvalidInput as exc:
        raise InvalidInput(f"{option}: {exc.message}", field=option) from None


def typed(ctx: typer.Context, name: str) -> bool:
    """Whether the parameter `name` was typed on the command line (not taken from the
    environment or its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def next_page(
    ctx: typer.Context,
    rows: Sequence[Any],
    limit: int,
    option: str,
    field: str = "seq",
    since: Instant | None = None,
) -> None:
    """Under a full page, the option that asks for the next, with the last item's
    `field` (its seq, a notification's key, a delivery's job id); and the window's start
    as this page resolved it, when it had one (`--since 6h` read again later would start
    later and lose the oldest)."""
    if rows and len(rows) == limit:
        at = f"{option} {shlex.quote(str(getattr(rows[-1], field)))}"
        ask = " add" if since is None else f", run it again with --since {since.format_iso()}"
        state(ctx).console.print(
            f"[dim]{limit:,} shown; for older ones{ask} {at}[/]", highlight=False, soft_wrap=True
        )


def emit(ctx: typer.Context, as_json: bool, data: BaseModel | list[Any] | dict[str, Any]) -> bool:
    """Print `data` as JSON when asked; return True if it was printed."""
    if as_json:
        state(ctx).console.print(
            render.as_json(dump(data)), markup=False, emoji=False, highlight=False, soft_wrap=True
        )
    return as_json
