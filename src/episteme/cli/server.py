"""Server commands: `serve`, `token create|list|revoke`, `denials`."""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from episteme.cli import render
from episteme.cli.common import (
    Before,
    Home,
    Json,
    TimeOpt,
    app,
    default_home,
    emit,
    next_page,
    open_ledger,
    state,
    when,
)
from episteme.errors import InvalidInput, WorldError
from episteme.ledger import Ledger

if TYPE_CHECKING:
    from episteme.api.settings import Settings


def local_actor() -> str:
    """Who a local admin command acts as: the operating-system user."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "local:admin"


def check_listen(host: str, port: int) -> None:
    """Refuse, in one line, an address this server could not listen on: a name that does
    not resolve, an address of another machine, a port in use or not allowed. (The
    server binds again as it starts; this check only says why it could not.)"""
    listening(host, port).close()


def listening(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` and listening (connections made now wait in its
    backlog until the server accepts them), or the one-line refusal `check_listen`
    says."""
    where = f"{host}:{port}"
    # as uvicorn binds: IPv6 for an address with a colon, IPv4 for any other (a name that
    # resolves to both, `localhost`, is served on 127.0.0.1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        found = socket.getaddrinfo(
            host, port, family, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(
            f"cannot listen on {where}: the host is not an address or a name this machine"
            f" resolves ({why}); use an address such as 127.0.0.1 or 0.0.0.0",
            field="host",
        ) from None
    family, kind, proto, _, address = found[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind(address)
        sock.listen(2048)  # uvicorn's backlog
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sock


def serve_settings(home: str | None, **flags: object) -> Settings:
    """The server's settings: flags over `EPISTEME_*` variables over defaults. The ledger
    is `--home` (a directory or a database URL), else `EPISTEME_DB`, else the default
    home, as for every other command: a `--home` given wins over `EPISTEME_DB`."""
    from episteme.api.settings import Settings

    where = home or os.environ.get("EPISTEME_DB") or None
    url = where if where and "://" in where else None
    # db="" rather than None: None would leave EPISTEME_DB's value in place
    return Settings.from_env(home=None if url else (where or default_home()), db=url or "", **flags)


METRICS_PREFIX = "episteme-metrics-"


def _remove_stale_metrics() -> None:
    """Remove the counters' directories of servers that were killed (SIGKILL leaves them):
    each is named after its server's process, and is stale once that process is gone."""
    for found in Path(tempfile.gettempdir()).glob(f"{METRICS_PREFIX}*-*"):
        pid = found.name.removeprefix(METRICS_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(found, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


class ListenError(WorldError):
    """The server's address cannot be bound: in use, not this machine's, not allowed."""


@app.command()
def serve(
    ctx: typer.Context,
    home: Home = None,
    host: Annotated[str | None, typer.Option(help="Address to bind [env EPISTEME_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env EPISTEME_PORT; 8000].")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes [env EPISTEME_WORKERS; 1].")
    ] = None,
    max_body: Annotated[
        int | None, typer.Option(help="Largest request body in bytes [env EPISTEME_MAX_BODY].")
    ] = None,
    shutdown_timeout: Annotated[
        int | None,
        typer.Option(
            help="Seconds to wait for open requests when stopping"
            " [env EPISTEME_SHUTDOWN_TIMEOUT; 20].",
        ),
    ] = None,
) -> None:
    """Serve the REST API, /metrics and MCP at /mcp (creating the ledger and an admin token)."""
    # The counters' directory is this command's to make (below, for several workers). One
    # inherited from the environment would be read when prometheus-client is imported,
    # and a single worker would write its counters there (or fail to, if it is gone).
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

    settings = serve_settings(
        home,
        host=host,
        port=port,
        workers=workers,
        max_body=max_body,
        shutdown_timeout=shutdown_timeout,
    )
    for warning in type(settings).misspelt():
        typer.echo(f"warning: {warning}", err=True)
    # What the app reads as it starts, refused here in one line rather than by a
    # traceback after "serving … on …"
    from episteme.diagnose.config import DiagnosisConfig
    from episteme.diagnose.narrator import from_env as narrator_from_env

    DiagnosisConfig.load()
    narrator_from_env()
    # The address, before anything is created or printed; with one worker, the socket it
    # serves on, so that "serving … on …" is said once a connection waits to be answered.
    with listening(settings.host, settings.port) as sock:  # closed however the serving ends
        if settings.workers > 1:
            sock.close()  # uvicorn binds for its workers
        _serve(ctx, settings, sock)


def _serve(ctx: typer.Context, settings: Settings, sock: socket.socket) -> None:
    """`serve`, once its address is known to be free (and, with one worker, listened on
    by `sock`)."""
    import uvicorn

    from episteme.api.app import create_app
    from episteme.api.metrics import MULTIPROC_ENV
    from episteme.logs import uvicorn_config
    from episteme.web.session import KEY_ENV as CONSOLE_KEY_ENV

    console = state(ctx).console
    ledger = Ledger.open(settings.location, clock=state(ctx).clock, ensure=True)
    store_url = ledger.store.where
    with ledger:
        made = ledger.bootstrap_admin(by=local_actor())
        if made is not None:
            secret, record = made
            console.print(f"created admin token {record.id}; it is shown once, keep it safe:")
            console.print(secret, markup=False, highlight=False)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host  # IPv6
    where = f"http://{host}:{settings.port}"
    console.print(f"serving {store_url} on {where} (API reference: {where}/docs)")
    if settings.workers == 1:
        config = uvicorn.Config(
            create_app(settings, clock=state(ctx).clock),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            log_config=uvicorn_config(),
            timeout_graceful_shutdown=settings.shutdown_timeout,
        )
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        if not server.started:  # its startup failed, and said why in the log
            raise typer.Exit(3)
        return
    # The workers share their counters through files in a directory of this server's
    # own: another server on the same home or database keeps its own, and none is
    # left behind for the next start to read as its own.
    _remove_stale_metrics()
    metrics_dir = tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    # The console's sessions are signed with one key per process unless it is given:
    # this server's workers share one of its making (several servers need it set).
    os.environ.setdefault(CONSOLE_KEY_ENV, secrets.token_hex(32))
    os.environ.update(settings.to_env())
    try:
        uvicorn.run(
            "episteme.api.app:factory",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level="warning",
            log_config=uvicorn_config(),
            timeout_graceful_shutdown=settings.shutdown_timeout,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


token_app = typer.Typer(help="Bearer tokens: who may call the API and MCP.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="The principal, e.g. deploy-agent.")],
    role: Annotated[
        list[str], typer.Option("--role", help="agent, supervisor, approver or admin (repeatable).")
    ],
    kind: Annotated[
        str | None, typer.Option(help="agent or human [default: agent for agent-only tokens].")
    ] = None,
    expires: TimeOpt = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Issue a token; the secret is printed once and never stored."""
    with open_ledger(ctx, home) as ledger:
        at = when(ctx, expires, "--expires")
        secret, record = ledger.issue_token(name, role, by=local_actor(), kind=kind, expires=at)
    if not emit(ctx, as_json, {"token": secret, "record": record}):
        console = state(ctx).console
        roles = ", ".join(record.roles)
        console.print(f"token {record.id} for {record.principal} ({record.kind}; {roles})")
        console.print(secret, markup=False, highlight=False)
        console.print("it is shown once: store it in your secret store now")


@token_app.command("list")
def token_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="Only this principal.")] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Tokens with their principal, roles and state (never secrets)."""
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        rows = ledger.tokens(name)
        now = ledger.clock.now()
    if not emit(ctx, as_json, rows):
        if not rows:
            state(ctx).console.print("no token" + (f" of {name}" if name else ""))
            return
        state(ctx).console.print(render.tokens(rows, now))


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    ref: Annotated[
        str,
        typer.Argument(
            help="A token id (t_…), its secret (ep_…, never shown), or a principal: all its tokens."
        ),
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why.")],
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Revoke a token now; calls with it get 401 and are recorded."""
    with open_ledger(ctx, home) as ledger:
        rows = ledger.revoke_token(ref, by=local_actor(), reason=reason)
    if not emit(ctx, as_json, rows):
        for t in rows:
            state(ctx).console.print(f"revoked {t.id} ({t.principal})")


@app.command()
def denials(
    ctx: typer.Context,
    principal: Annotated[str | None, typer.Option(help="Only this principal.")] = None,
    since: TimeOpt = None,
    until: TimeOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    before: Before = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Refused calls, newest first: who tried what, and why it was refused."""
    t1 = when(ctx, since, "--since")
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        rows = ledger.denials(
            principal=principal,
            since=t1,
            until=when(ctx, until, "--until"),
            limit=limit,
            before=before,
        )
    if not emit(ctx, as_json, rows):
        if not rows:
            state(ctx).console.print("no refused call" + (" in that window" if t1 else ""))
            return
        state(ctx).console.print(render.denials(rows))
        next_page(ctx, rows, limit, "--before", since=t1)
