"""`episteme dev-vault`: help, a bad items file, and the real command serving the SDK."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from onepasswordconnectsdk.client import Client, new_client

from tests.conftest import Cli
from tests.integration.processes import free_port
from tests.secrets.conftest import CANARY, canary_items


def test_help(cli: Cli) -> None:
    r = cli("dev-vault", "--help", home_arg=False)
    assert r.code == 0, r.err
    for option in ("--host", "--port", "--items", "--token", "EPISTEME_DEV_VAULT_TOKEN"):
        assert option in r.out


def test_a_bad_items_file_is_one_line_and_exit_2(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"vaults": [{"name": "v", "items": [{"title": "t", "x": CANARY}]}]}))
    r = cli("dev-vault", "--items", str(path), home_arg=False)
    assert r.code == 2
    assert r.err.startswith(f"error: --items {path}: vaults.0.items.0.x: Extra inputs")
    assert len(r.err.strip().splitlines()) == 1
    assert CANARY not in r.out + r.err


def test_an_address_it_cannot_listen_on_is_refused_before_it_starts(cli: Cli) -> None:
    # It printed the vaults and a new token, then waited in silence for ever.
    r = cli("dev-vault", "--port", "99999", home_arg=False)
    assert r.code == 2
    assert "--port" in r.err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli("dev-vault", "--port", str(port), home_arg=False)
    assert r.code == 1
    assert r.err == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert r.out == ""


@contextmanager
def dev_vault(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """Run `episteme dev-vault` on a free port; yield its URL and what it printed."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "episteme", "dev-vault", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while not lines or "EPISTEME_OP_CONNECT_TOKEN=" not in lines[-1]:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"dev-vault exited: {''.join(lines)}")
            lines.append(line)
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/heartbeat", timeout=1).text == ".":
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "dev-vault did not start"
            time.sleep(0.05)
        yield url, lines
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_it_prints_a_new_token_once_and_serves_the_sdk() -> None:
    with dev_vault() as (url, lines):
        printed = "".join(lines)
        assert f"dev vault on {url}: 2 vaults, 9 items" in printed
        assert f"export EPISTEME_OP_CONNECT_HOST={url}" in printed
        [token_line] = [ln for ln in lines if "EPISTEME_OP_CONNECT_TOKEN=" in ln]
        token = token_line.split("=", 1)[1].strip()
        assert token.startswith("dev-vault-")
        assert printed.count(token) == 1
        sdk = new_client(url, token)
        assert isinstance(sdk, Client)
        item = sdk.get_item("k8s-prod", "Infrastructure")
        assert [f.value for f in item.fields if f.label == "token"] == ["dev-k8s-prod-token"]
        sdk.session.close()


def test_a_given_token_and_items_file(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text(json.dumps(canary_items()))
    with dev_vault("--items", str(path), env={"EPISTEME_DEV_VAULT_TOKEN": "given-token"}) as (
        url,
        lines,
    ):
        printed = "".join(lines)
        assert "given-token" not in printed
        assert CANARY not in printed
        assert "op://Infrastructure/canary-db/admin/password" in printed
        sdk = new_client(url, "given-token")
        assert isinstance(sdk, Client)
        assert sdk.get_vault_by_title("Infrastructure").items == 4
        sdk.session.close()
