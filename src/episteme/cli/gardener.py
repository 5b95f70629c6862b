"""Gardener and webhook commands: `gardener [status|replay]`, `webhook add|list|remove|
deliveries`."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, get_args

import typer
from rich.markup import escape
from rich.table import Table

from episteme.cli.common import (
    Home,
    Json,
    app,
    emit,
    next_page,
    open_ledger,
    page_option,
    state,
    typed,
)
from episteme.cli.server import local_actor
from episteme.errors import InvalidInput, WorldError
from episteme.ledger import Ledger
from episteme.ledger.gardener import BATCH, Gardener, GardenerLoop, worker_name
from episteme.ledger.webhooks import Deliverer, NotificationType, WebhookSpec, deliveries
from episteme.timeutil import show

_GIVEN = "episteme.gardener"
"""Where the gardener group's --home and --json wait for its command (`ctx.meta`)."""

gardener_app = typer.Typer(
    help="The gardener: trust, conflicts, expiries and notifications from the journal.",
    invoke_without_command=True,
)
app.add_typer(gardener_app, name="gardener")


@gardener_app.callback()
def gardener_run(
    ctx: typer.Context,
    home: Home = None,
    once: Annotated[bool, typer.Option(help="Catch up with the journal, then exit.")] = False,
    batch: Annotated[
        int, typer.Option(min=1, max=100_000, help="Events applied per transaction.")
    ] = BATCH,
    as_json: Json = False,
) -> None:
    """Run the gardener alone (when no `episteme serve` runs it), until interrupted."""
    if ctx.invoked_subcommand is not None:
        # `gardener --home H status` means the status of H: what is given here, the
        # command reads (and what only a run takes, it refuses rather than drops)
        if once or batch != BATCH:
            raise InvalidInput(
                f"--once and --batch run the gardener: drop them for `gardener"
                f" {ctx.invoked_subcommand}`"
            )
        ctx.meta[_GIVEN] = {"home": home if typed(ctx, "home") else None, "as_json": as_json}
        return
    if as_json and not once:
        raise InvalidInput("--json prints what --once did: a running gardener prints no result")
    console = state(ctx).console
    with open_ledger(ctx, home) as ledger:
        gardener = Gardener(ledger, batch=batch)
        if once:
            applied = gardener.run_until_caught_up()
            gardener.scan()
            status = gardener.status()
            sent = _deliver_due(ledger)
            result = {"applied": applied, "cursor": status.cursor, "deliveries": sent}
            if not emit(ctx, as_json, result):
                console.print(f"applied {applied} events; cursor at {status.cursor}")
                if sent is None:
                    console.print(
                        "webhook deliveries left to the process that leads the background work"
                    )
                elif sent:
                    done = ", ".join(f"{n} {outcome}" for outcome, n in sorted(sent.items()))
                    console.print(f"webhook deliveries due: {done}")
            return
        leadership = ledger.store.leadership("background")
        if not leadership.acquire():
            raise InvalidInput(
                "another process runs the background work (an `episteme serve` or a gardener):"
                " stop it first, or use `episteme gardener status`"
            )
        deliverer = Deliverer(
            ledger.store,
            ledger.webhooks,
            ledger.clock,
            worker=worker_name(),
        )
        loop = GardenerLoop(gardener, deliver=deliverer.run_once)
        console.print(f"gardener following {ledger.store.where} (Ctrl-C to stop)")
        loop.start()
        try:
            while loop.running:
                loop.wait(1.0)
                # asked every second, as a server's leader asks: the lead is the session's,
                # which the database ends when it goes quiet (a frozen leader's)
                if not leadership.acquire():
                    raise WorldError(
                        "lost the lead of the background work (its database session ended):"
                        " another process may lead it now; start this again to compete"
                    )
        except KeyboardInterrupt:
            pass
        finally:
            loop.stop()
            deliverer.hand_back()
            deliverer.close()
            leadership.release()


def _deliver_due(ledger: Ledger) -> dict[str, int] | None:
    """Try each webhook delivery that is due once, as the leader of the background work
    would (what fails waits for its next try, at a later run); how each went. None when
    another process leads the background work: its deliverer sends them."""
    leadership = ledger.store.leadership("background")
    if not leadership.acquire():
        return None
    outcomes: Counter[str] = Counter()
    deliverer = Deliverer(ledger.store, ledger.webhooks, ledger.clock, worker=worker_name())
    deliverer.outcome_listeners.append(lambda outcome: outcomes.update([outcome]))
    try:
        while deliverer.run_once():
            pass
    finally:
        deliverer.hand_back()  # interrupted: what was in hand is ready again at once
        deliverer.close()
        leadership.release()
    return dict(outcomes)


def _given(ctx: typer.Context, home: str | None, as_json: bool) -> tuple[str | None, bool]:
    """`home` and `as_json` of a gardener command, or those typed before its name (a
    --home typed there wins over one from the environment here)."""
    before = ctx.meta.get(_GIVEN, {})
    if before.get("home") and not typed(ctx, "home"):
        home = before["home"]
    return home, as_json or before.get("as_json", False)


@gardener_app.command("status")
def gardener_status(ctx: typer.Context, home: Home = None, as_json: Json = False) -> None:
    """Where the gardener is: its cursor, the journal's head, and the lag."""
    home, as_json = _given(ctx, home, as_json)
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        status = Gardener(ledger).status()
    if not emit(ctx, as_json, status):
        updated = show(status.updated_at) if status.updated_at else "never"
        state(ctx).console.print(
            f"cursor {status.cursor} of {status.head}: {status.lag_events} events behind "
            f"({status.lag_seconds:.1f} s); last moved {updated}"
        )


@gardener_app.command("replay")
def gardener_replay(ctx: typer.Context, home: Home = None, as_json: Json = False) -> None:
    """Recompute trust from the whole journal (after changing EPISTEME_TRUST_* weights).

    Notifications already raised are not sent again.
    """
    home, as_json = _given(ctx, home, as_json)
    with open_ledger(ctx, home) as ledger:
        gardener = Gardener(ledger)
        applied = gardener.replay()
        status = gardener.status()
    if not emit(ctx, as_json, {"applied": applied, "cursor": status.cursor}):
        state(ctx).console.print(f"replayed {applied} events; cursor at {status.cursor}")


webhook_app = typer.Typer(
    help="Webhooks: where corrections, conflicts, trust drops and approvals go."
)
app.add_typer(webhook_app, name="webhook")


@webhook_app.command("add")
def webhook_add(
    ctx: typer.Context,
    name: str,
    url: Annotated[
        str, typer.Option(help="http(s)://… or env:VAR (a URL that is itself a secret).")
    ],
    format: Annotated[str, typer.Option(help="json or slack.")] = "json",
    event: Annotated[
        list[str] | None,
        typer.Option(help=f"{', '.join(get_args(NotificationType))} (repeatable; default all)."),
    ] = None,
    secret: Annotated[
        str | None, typer.Option(help="env:VAR holding the HMAC signing secret.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 5.0,
    max_attempts: Annotated[int, typer.Option(help="Attempts before giving up.")] = 8,
    by: Annotated[str | None, typer.Option(help="Who adds it [local user].")] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Add a webhook (or replace the one of that name)."""
    fields: dict[str, object] = {
        "name": name,
        "url": url,
        "format": format,
        "secret": secret,
        "timeout_s": timeout,
        "max_attempts": max_attempts,
    }
    if event:
        fields["events"] = event
    spec = WebhookSpec.model_validate(fields)
    with open_ledger(ctx, home) as ledger:
        ledger.set_webhook(spec, by=by or local_actor())
    if not emit(ctx, as_json, spec):
        state(ctx).console.print(f"webhook {escape(spec.describe())}")  # it names itself


@webhook_app.command("list")
def webhook_list(ctx: typer.Context, home: Home = None, as_json: Json = False) -> None:
    """The webhooks notifications go to."""
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        hooks = ledger.webhooks()
    if not emit(ctx, as_json, list(hooks.values())):
        console = state(ctx).console
        for spec in hooks.values():
            console.print(escape(spec.describe()))
        if not hooks:
            console.print("no webhook: add one with `episteme webhook add`")


@webhook_app.command("remove")
def webhook_remove(
    ctx: typer.Context,
    name: str,
    by: Annotated[str | None, typer.Option(help="Who removes it [local user].")] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Stop sending notifications to a webhook."""
    with open_ledger(ctx, home) as ledger:
        ledger.remove_webhook(name, by=by or local_actor())
    if not emit(ctx, as_json, {"removed": name}):
        state(ctx).console.print(f"removed webhook {name}")


@webhook_app.command("deliveries")
def webhook_deliveries(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    before: Annotated[
        int | None, page_option("JOB_ID", "the deliveries queued before this one")
    ] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Deliveries, newest first: state, attempts, the last error and the next try."""
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        rows = deliveries(ledger.store, limit, before=before)
    if not emit(ctx, as_json, rows):
        table = Table("webhook", "notification", "state", "attempts", "last error", "next try")
        for d in rows:
            table.add_row(
                d.webhook,
                escape(d.key),
                d.state,
                str(d.attempts),
                escape(d.error or "-"),
                show(d.next_attempt) if d.next_attempt else "-",
            )
        state(ctx).console.print(table if rows else "no delivery yet")
        next_page(ctx, rows, limit, "--before", "job_id")
