"""vault:// references against HashiCorp Vault's KV v2 engine, with the real hvac client.

No Vault server can be installed here, so the server is a stub of the one endpoint the
backend calls (``GET /v1/{mount}/data/{path}``, answering as Vault does); what is real
is hvac, the HTTP between them, and our mapping of its answers and errors.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from episteme.errors import InvalidInput, NotFound
from episteme.secrets import Broker
from episteme.secrets.store import (
    SecretStoreError,
    SecretStoreRefused,
    SecretStoreUnavailable,
    Unconfigured,
)
from episteme.secrets.vault import VaultKV2, from_env
from episteme.timeutil import ManualClock
from tests.integration.server import live_server
from tests.secrets.conftest import CANARY
from tests.secrets.test_onepassword import _closed_port

pytestmark = pytest.mark.anyio
VAULT_TOKEN = "hvs.test-token"
SECRETS: dict[tuple[str, str], dict[str, Any]] = {
    ("secret", "prod/db"): {"password": CANARY, "username": "app", "port": 5432},
    ("kv", "deleted"): {},
}


async def _read(request: Request) -> JSONResponse:
    if request.headers.get("x-vault-token") != VAULT_TOKEN:
        return JSONResponse({"errors": ["permission denied"]}, 403)
    mount, path = request.path_params["mount"], request.path_params["path"]
    if mount == "broken":
        return JSONResponse({"errors": ["internal error"]}, 500)
    data = SECRETS.get((mount, path))
    if not data:
        return JSONResponse({"errors": []}, 404)
    meta = {
        "version": 3,
        "created_time": "2026-11-21T09:00:00Z",
        "deletion_time": "",
        "destroyed": False,
    }
    return JSONResponse({"request_id": "r", "lease_id": "", "renewable": False, "lease_duration": 0,
                         "data": {"data": data, "metadata": meta}, "wrap_info": None,
                         "warnings": None, "auth": None})  # fmt: skip


@pytest.fixture(scope="module")
def vault_stub() -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/{mount}/data/{path:path}", _read)])
    with live_server(app) as url:
        yield url


def _env(url: str, token: str = VAULT_TOKEN) -> dict[str, str]:
    return {"VAULT_ADDR": url, "VAULT_TOKEN": token}


async def test_a_kv2_secret_field(vault_stub: str, clock: ManualClock) -> None:
    broker = Broker.from_env(_env(vault_stub), clock=clock)
    refs = [
        "vault://secret/prod/db#password",
        "vault://secret/prod/db#USERNAME",
        "vault://secret/prod/db#port",
    ]
    lease = await broker.lease(refs, ttl_s=60)
    assert [lease.get(r) for r in refs] == [CANARY, "app", "5432"]
    lease.wipe()


CASES: list[tuple[str, str, type[Exception], str]] = [
    (
        "vault://secret/prod/nothing#password",
        VAULT_TOKEN,
        NotFound,
        "has no secret 'prod/nothing' in the KV v2 engine at 'secret'",
    ),
    ("vault://kv/deleted#x", VAULT_TOKEN, NotFound, "has no secret 'deleted'"),
    (
        "vault://secret/prod/db#pass",
        VAULT_TOKEN,
        NotFound,
        "no field 'pass' in secret 'prod/db' (fields: password, port, username)",
    ),
    ("vault://secret/prod/db#password", "wrong", SecretStoreRefused, "refused the token"),
    ("vault://broken/x#y", VAULT_TOKEN, SecretStoreUnavailable, "is unavailable"),
    ("vault://secret/prod/db", VAULT_TOKEN, InvalidInput, "vault://mount/path/to/secret#field"),
]


@pytest.mark.parametrize(("ref", "token", "error", "says"), CASES)
async def test_vault_errors_name_the_reference(
    vault_stub: str, clock: ManualClock, ref: str, token: str, error: type[Exception], says: str
) -> None:
    broker = Broker.from_env(_env(vault_stub, token), clock=clock)
    with pytest.raises(error) as caught:
        await broker.lease([ref], ttl_s=60)
    assert says in str(caught.value)
    assert str(caught.value).startswith(ref) or "cannot read reference" in str(caught.value)
    assert CANARY not in str(caught.value)
    assert token not in str(caught.value)


async def test_vault_down(clock: ManualClock) -> None:
    url = _closed_port()
    broker = Broker.from_env({"EPISTEME_VAULT_ADDR": url, "EPISTEME_VAULT_TOKEN": "t"}, clock=clock)
    with pytest.raises(SecretStoreUnavailable, match=f"Vault at {url} cannot be reached"):
        await broker.lease(["vault://secret/prod/db#password"], ttl_s=60)


async def test_vault_settings(clock: ManualClock) -> None:
    assert isinstance(from_env({}), Unconfigured)
    assert isinstance(from_env({"VAULT_ADDR": "http://v:8200"}), Unconfigured)
    assert isinstance(
        from_env({**_env("http://v:8200"), "EPISTEME_VAULT_TIMEOUT": "x"}), Unconfigured
    )
    backend = from_env({**_env("http://v:8200/"), "VAULT_NAMESPACE": "team"})
    assert isinstance(backend, VaultKV2)
    assert (backend.url, backend.namespace) == ("http://v:8200", "team")
    assert VAULT_TOKEN not in repr(backend)
    with pytest.raises(SecretStoreError, match="set EPISTEME_VAULT_ADDR and EPISTEME_VAULT_TOKEN"):
        await Broker.from_env({}, clock=clock).lease(["vault://secret/a#b"], ttl_s=60)


async def test_without_hvac_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    monkeypatch.setitem(sys.modules, "hvac", None)  # what `import hvac` meets when it is absent
    broker = Broker.from_env(_env("http://127.0.0.1:1"), clock=clock)
    with pytest.raises(InvalidInput, match=r"pip install 'episteme\[vault\]'"):
        await broker.lease(["vault://secret/prod/db#password"], ttl_s=60)
