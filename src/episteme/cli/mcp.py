"""`episteme mcp`: serve the ledger's MCP tools on stdin/stdout for one agent."""

from __future__ import annotations

import os
import signal

import typer

from episteme.cli.common import Home, app, open_ledger


@app.command("mcp")
def mcp_stdio(ctx: typer.Context, home: Home = None) -> None:
    """Serve MCP over stdio as the principal of the token in EPISTEME_TOKEN.

    An MCP client (Claude Code, Cursor, …) starts this command; stdout carries only
    the protocol. A missing, unknown, revoked or expired token stops it with one line.
    """
    from episteme.api.settings import Settings
    from episteme.mcp import TOKEN_ENV, serve_stdio

    # EPISTEME_MAX_BODY as a server reads it; the server's other settings are not ours
    limit = Settings.from_env("max_body").max_body
    # SIGTERM ends it at once, as before: its loop waits on a stdin reader that a clean
    # stop would wait for (until the client closes the pipe), and it holds no write open
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with open_ledger(ctx, home) as ledger:
        serve_stdio(ledger, os.environ.get(TOKEN_ENV), max_body=limit)
