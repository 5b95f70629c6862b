"""Diagnosis commands: `diagnose`, `deny`, `sessions`, `session show|delete`, `incidents`
(and `approve` for `s_…` ids).

They talk to an `episteme serve` (`--server`, env EPISTEME_URL; token from `--token` or
EPISTEME_TOKEN): credentials are fetched by the server that takes the approval, never by
this terminal. `diagnose` streams the session's progress and, on a terminal, asks for
the approval inline: all, a subset, or deny, with a reason.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from episteme.cli.common import Json, app, emit, next_page, page_option, state
from episteme.errors import InvalidInput
from episteme.ledger.access import Op
from episteme.timeutil import show

if TYPE_CHECKING:
    from episteme.client import Client

Server = Annotated[
    str | None,
    typer.Option(help="URL of `episteme serve` [env EPISTEME_URL].", show_default=False),
]
Token = Annotated[
    str | None,
    typer.Option(help="Bearer token [env EPISTEME_TOKEN].", show_default=False),
]
_ENDS = frozenset({"diagnosis_complete", "error"})
"""The events after which a session has nothing more to say."""


@contextlib.contextmanager
def _client(server: str | None, token: str | None) -> Iterator[Client]:
    """The Python client for the server the options (or the environment) name: it checks
    the address, keeps the token out of every message, and reads only Episteme's answers
    (a proxy's page or another server's is one line, not a traceback)."""
    url = server or os.environ.get("EPISTEME_URL")
    secret = token or os.environ.get("EPISTEME_TOKEN")
    if not url:
        raise InvalidInput("give --server URL (or set EPISTEME_URL) of an `episteme serve`")
    if not secret:
        raise InvalidInput("give --token (or set EPISTEME_TOKEN): a token of yours")
    from episteme.client import Client  # here: httpx costs every other command its start

    with Client(url, secret, trust_env=False) as client:  # no proxy sees the token
        yield client


def _ended(last: dict[str, Any] | None) -> None:
    """Exit 1 when the session ended in an error (a secret store down or refusing, a
    server stopped): said already, as the stream's last event."""
    if last is not None and last.get("type") == "error":
        raise typer.Exit(1)


def _follow(
    client: Client, sid: str, *, after: int = 0, until: str | None = None
) -> Iterator[dict[str, Any]]:
    """A session's events numbered above `after`, as they come, until it ends (or until
    an event of type `until`)."""
    for event in client.session_events(sid):
        n = event.get("n")
        if isinstance(n, int) and n <= after:
            continue
        yield event
        if event.get("type") in _ENDS or event.get("type") == until:
            return


def _print(console: Console, event: dict[str, Any], as_json: bool) -> None:
    if as_json:  # one line an event, however wide: piped output was wrapped at 160
        line = orjson.dumps(event).decode()
        console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
    else:
        _show(console, event)


def _show(console: Console, event: dict[str, Any]) -> None:
    kind = event["type"]
    if kind == "session_start":
        console.print(f"[bold]session {event['session_id']}[/] ({event['environment']})")
    elif kind == "text":
        console.print(escape(event["text"]))
    elif kind == "approval_required":
        console.print("[yellow]approval required[/] for these credential references:")
        for name, refs in event["credentials"].items():
            for role, ref in refs.items():
                console.print(f"  {name:<13} {role:<22} {escape(ref)}")
        console.print(f"(expires {event['expires_at']})")
    elif kind == "approval_accepted":
        console.print(f"approved by {escape(event['approver'])}: {escape(event['reason'])}")
    elif kind == "credential_retrieved":
        console.print(f"  [green]✓[/] {escape(event['reference'])}")
    elif kind == "specialists_selected":
        console.print("specialists: " + ", ".join(event["specialists"]))
        for name, why in event["skipped"].items():
            console.print(f"  [dim]skipped {name}: {escape(why)}[/]")
    elif kind == "specialist_complete":
        error = f" [red]{escape(event['error'])}[/]" if event.get("error") else ""
        n = len(event["findings"])
        console.print(f"  {event['specialist']}: {n} findings in {event['seconds']:.1f} s{error}")
        for f in event["findings"]:
            colour = {"critical": "red", "warning": "yellow"}.get(f["severity"], "dim")
            console.print(f"    [{colour}]{f['severity']}[/] {escape(f['claim'])}")
    elif kind == "diagnosis_complete":  # after its text, shown just before
        _report(console, event["result"], said=event["result"].get("text", ""))
    elif kind == "error":
        console.print(f"[red]{event.get('code', 'error')}:[/] {escape(event['message'])}")


def _report(console: Console, result: dict[str, Any], said: str = "") -> None:
    """The conclusion (unless the text `said` began with it), the three likeliest
    causes with what to do, and what to watch."""
    if not said.startswith(result["conclusion"]):
        console.print(f"[bold]{escape(result['conclusion'])}[/]")
    for h in result["hypotheses"][:3]:
        console.print(f"- {escape(h['title'])} (confidence {h['confidence']:.2f})")
        for step in h["remediation"]:
            console.print(f"    → {escape(step)}")
    if result["hypotheses"]:
        for step in result["hypotheses"][0]["monitoring"]:
            console.print(f"  monitor: {escape(step)}")


def _ask(console: Console, sid: str, refs: list[str]) -> tuple[str, list[str] | None, str]:
    try:
        choice = typer.prompt("approve [a]ll, a [s]ubset, or [d]eny?", default="a")
        if choice.strip().lower().startswith("d"):
            return "deny", None, typer.prompt("reason for denying")
        chosen: list[str] | None = None
        if choice.strip().lower().startswith("s"):
            for n, ref in enumerate(refs, 1):
                console.print(f"  {n}. {escape(ref)}")
            picked = typer.prompt("numbers to approve (e.g. 1,3)")
            chosen = _picked(picked, refs)
        return "approve", chosen, typer.prompt("reason for approving")
    except typer.Abort:  # the input ended (or Ctrl-C) before an answer
        raise InvalidInput(
            f"no answer was given: the session waits; an approver runs"
            f" `episteme approve {sid} --reason …`"
        ) from None


def _picked(answer: str, refs: list[str]) -> list[str]:
    """The references numbered in `answer` (1,3), from 1. 0 and -1 picked the last
    reference and the one before it (Python's indexing), approving what was not asked."""
    numbers = [p for p in answer.replace(" ", "").split(",") if p]
    if not numbers or not all(
        n.isascii() and n.isdigit() and 1 <= int(n) <= len(refs) for n in numbers
    ):
        raise InvalidInput(f"pick numbers between 1 and {len(refs)}, such as 1,3")
    return [refs[int(n) - 1] for n in dict.fromkeys(numbers)]


def _cannot_approve(client: Client, waiting: dict[str, Any]) -> str | None:
    """Why the caller, who started the session, cannot approve it, if they cannot."""
    if not client.whoami().allows(Op.APPROVE_CREDENTIALS):  # approver, or admin
        return "the approver role"
    if not waiting.get("self_approval", False):
        return "someone else: this server does not let a requester approve their own session"
    return None


@app.command()
def diagnose(
    ctx: typer.Context,
    problem: Annotated[str, typer.Argument(help="What is wrong, in words.")],
    env: Annotated[str, typer.Option("--env", help="prod, staging or dev.")] = "prod",
    server: Server = None,
    token: Token = None,
    ask: Annotated[
        bool | None,
        typer.Option(
            "--ask/--no-ask",
            help="Ask for the approval here (default: when the input is a terminal).",
            show_default=False,
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Diagnose a problem: stream the analysis, approve credentials inline, see the cause."""
    if ask and as_json:  # it never asked: JSON lines are for a program, not a person
        raise InvalidInput(
            "--ask asks a person on this terminal and --json prints events for a program:"
            " give one of them"
        )
    console = state(ctx).console
    with _client(server, token) as client:
        sid = client.diagnose(problem, environment=env).id
        seen, last = 0, None
        for last in _follow(client, sid, until="approval_required"):
            _print(console, last, as_json)
            seen = last.get("n", seen)
        if last is None or last.get("type") != "approval_required":
            _ended(last)  # it ended before its approval
            return
        waiting = last
        interactive = sys.stdin.isatty() if ask is None else ask
        needs = _cannot_approve(client, waiting) if interactive and not as_json else None
        if as_json or not interactive or needs:
            if not as_json:
                also = f" (approving it needs {needs})" if needs else ""
                console.print(f"an approver runs: episteme approve {sid} --reason '…'{also}")
            return
        verb, refs, reason = _ask(console, sid, list(waiting["references"]))
        if verb == "deny":
            client.deny_session(sid, reason=reason)
            console.print(f"denied {sid}")
            return
        client.approve_session(sid, reason=reason, references=refs)
        last = None
        for last in _follow(client, sid, after=seen):
            _show(console, last)
        _ended(last)


def approve_session(
    ctx: typer.Context,
    sid: str,
    refs: list[str] | None,
    reason: str | None,
    server: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """`episteme approve s_…`: approve a diagnosis session's credentials and follow it."""
    if not reason:
        raise InvalidInput("approving credentials needs a --reason")
    console = state(ctx).console
    with _client(server, token) as client:
        client.approve_session(sid, reason=reason, references=refs or None)
        shown = False  # from the approval on: what came before was shown to the requester
        last = None
        for last in _follow(client, sid):
            shown = shown or last.get("type") == "approval_accepted"
            if shown:
                _print(console, last, as_json)
    _ended(last)


@app.command()
def deny(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(help="The session id (s_…).")],
    reason: Annotated[str, typer.Option(help="Why the credentials are refused.")],
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Deny a diagnosis session's credentials: it ends, nothing is fetched."""
    with _client(server, token) as client:
        session = client.deny_session(id, reason=reason)
    if not emit(ctx, as_json, session):
        state(ctx).console.print(f"denied {id}")


@app.command()
def sessions(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    after: Annotated[
        str | None, page_option("SESSION", "the sessions that follow this one")
    ] = None,
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Diagnosis sessions, newest first."""
    with _client(server, token) as client:
        rows = client.sessions(limit=limit, after=after)
    if emit(ctx, as_json, rows):
        return
    table = Table("session", "status", "env", "requester", "problem")
    for s in rows:
        table.add_row(s.id, s.status, s.environment, s.requester, escape(s.problem[:60]))
    state(ctx).console.print(table if rows else "no session")
    next_page(ctx, rows, limit, "--after", "id")


@app.command()
def incidents(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="open (still firing) or resolved.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    after: Annotated[str | None, page_option("KEY", "the incidents that follow this one")] = None,
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Incidents Alertmanager's alerts opened, newest first, and their sessions."""
    with _client(server, token) as client:
        rows = client.incidents(limit=limit, status=status, after=after)
    if emit(ctx, as_json, rows):
        return
    table = Table("incident", "status", "alert", "sent", "session", "opened")
    for i in rows:
        name = i.labels.get("alertname", "")
        table.add_row(i.key, i.status, escape(name), str(i.alerts), i.session_id or "-",
                      show(i.opened_at))  # fmt: skip
    state(ctx).console.print(table if rows else "no incident")
    next_page(ctx, rows, limit, "--after", "key")


session_app = typer.Typer(help="One diagnosis session: what it found, or remove it.")
app.add_typer(session_app, name="session")
SessionId = Annotated[str, typer.Argument(help="The session id (s_…).")]


@session_app.command("show")
def session_show(
    ctx: typer.Context,
    id: SessionId,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Instead of the summary, stream its events from the first until it ends.",
        ),
    ] = False,
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """A session: its status, the credential references it asked for, who decided, and
    what it found (a session an alert opened, or one approved in the console)."""
    console = state(ctx).console
    with _client(server, token) as client:
        session = client.session(id)
        if follow:
            last = None
            for last in _follow(client, id):
                _print(console, last, as_json)
            _ended(last)
            return
    if emit(ctx, as_json, session):
        return
    console.print(f"[bold]session {session.id}[/] ({session.environment}): {session.status}")
    console.print(f"problem: {escape(session.problem)}")
    console.print(f"requested by {escape(session.requester)} at {session.created_at}")
    if session.incident:
        console.print(f"incident: {session.incident}")
    console.print("specialists: " + (", ".join(session.specialists) or "none"))
    for ref in session.requested:
        console.print(f"  asks for {escape(ref)}")
    if session.decided_by:
        console.print(f"decided by {escape(session.decided_by)}: {escape(session.reason or '')}")
    if session.status == "waiting_for_approval":
        console.print(f"an approver runs: episteme approve {session.id} --reason '…'")
    if session.error:
        console.print(f"[red]error:[/] {escape(session.error)}")
    if session.result is not None:
        _report(console, session.result.model_dump(mode="json"))


@session_app.command("delete")
def session_delete(
    ctx: typer.Context,
    id: SessionId,
    server: Server = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Delete a session and its events (approver); what it recorded in the ledger stays."""
    with _client(server, token) as client:
        client.delete_session(id)
    if not emit(ctx, as_json, {"deleted": id}):
        state(ctx).console.print(f"deleted {id}")
