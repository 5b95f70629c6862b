"""Secret-store commands: `dev-vault`, a development 1Password Connect server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from episteme.cli.common import app, state
from episteme.text import plural

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command("dev-vault")
def dev_vault(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 8080,
    items: Annotated[
        Path | None,
        typer.Option(
            "--items",
            help="JSON file of vaults and items to serve instead of the development defaults.",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="EPISTEME_DEV_VAULT_TOKEN",
            help="Bearer token clients must send [env EPISTEME_DEV_VAULT_TOKEN; "
            "default: a new one, printed once].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a development 1Password Connect API (fake credentials) for diagnosis and tests."""
    import uvicorn

    from episteme.cli.server import check_listen
    from episteme.secrets.devitems import default_items, load_items, references
    from episteme.secrets.devserver import create_devserver_app, new_token

    check_listen(host, port)  # before anything is printed: uvicorn would wait in silence
    spec = load_items(items) if items is not None else default_items()
    secret = token or new_token()
    server = create_devserver_app(spec, secret)
    console = state(ctx).console
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    refs = references(spec)
    count = sum(len(v.items) for v in spec.vaults)
    console.print(
        f"dev vault on {url}: {plural(len(spec.vaults), 'vault')}, {plural(count, 'item')},"
        f" {plural(len(refs), 'reference')}"
        f" ({'from ' + str(items) if items else 'development values'})",
        markup=False,
    )
    if host not in _LOOPBACK:
        typer.echo(
            f"warning: listening on {host}: whoever reaches it with the token reads these values",
            err=True,
        )
    console.print("references:", markup=False)
    for ref in refs:
        console.print(f"  {ref}", markup=False, highlight=False, soft_wrap=True)
    console.print("point Episteme (or the 1Password SDK, as OP_CONNECT_HOST/TOKEN) at it:")
    console.print(
        f"  export EPISTEME_OP_CONNECT_HOST={url}", markup=False, highlight=False, soft_wrap=True
    )
    if token:
        console.print("  export EPISTEME_OP_CONNECT_TOKEN=<the token given>", markup=False)
    else:  # a new token: shown this once
        console.print(
            f"  export EPISTEME_OP_CONNECT_TOKEN={secret}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    uvicorn.run(server, host=host, port=port, log_level="warning")
