"""op:// references through the broker against a real dev vault: names and ids in any
case, sections, every way it can fail, and a canary value that never gets out."""

from __future__ import annotations

import logging
import pickle
import socket
from typing import Any

import httpx
import pytest

from episteme.diagnose.engine import lease_from_env
from episteme.errors import EpistemeError, InvalidInput, NotFound
from episteme.secrets.broker import Broker, LeaseClosed, NotLeased
from episteme.secrets.devitems import default_items, references
from episteme.secrets.onepassword import OnePasswordConnect
from episteme.secrets.store import SecretStoreError, SecretStoreRefused, SecretStoreUnavailable
from episteme.timeutil import ManualClock
from tests.secrets.conftest import CANARY, TOKEN, connect_env
from tests.secrets.test_devserver import PRELOADED

pytestmark = pytest.mark.anyio


def _served_values() -> dict[str, str]:
    out: dict[str, str] = {}
    for vault in default_items().vaults:
        for item in vault.items:
            base = f"op://{vault.name}/{item.title}"
            out.update({f"{base}/{k}": v for k, v in item.fields.items()})
            for section, fields in item.sections.items():
                out.update({f"{base}/{section}/{k}": v for k, v in fields.items()})
                out.update({f"{base}/{k}": v for k, v in fields.items()})
    return out


async def test_every_preloaded_reference_resolves(broker: Broker) -> None:
    expected = _served_values()
    wanted = [*PRELOADED, *references(default_items())]
    lease = await broker.lease(wanted, ttl_s=60)
    assert lease.refs == tuple(dict.fromkeys(wanted))
    for ref in wanted:
        assert lease.get(ref) == expected[ref], ref
    assert lease.get("op://Infrastructure/prod-db/password") == "dev-prod-db-password"
    assert lease.get("op://Infrastructure/prod-db/host") == "127.0.0.1"
    lease.wipe()


async def _item(url: str, vault: str, title: str) -> tuple[str, dict[str, Any]]:
    """The id of `vault` and the full JSON of its item `title`, as Connect serves them."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=auth) as http:
        [vid] = [v["id"] for v in (await http.get("/v1/vaults")).json() if v["name"] == vault]
        items = (await http.get(f"/v1/vaults/{vid}/items")).json()
        [iid] = [i["id"] for i in items if i["title"] == title]
        full: dict[str, Any] = (await http.get(f"/v1/vaults/{vid}/items/{iid}")).json()
    return vid, full


async def test_names_and_ids_match_in_any_case(broker: Broker, dev_vault: str) -> None:
    vid, db = await _item(dev_vault, "Infrastructure", "prod-db")
    field_id = next(f["id"] for f in db["fields"] if f["label"] == "password")
    refs = {
        "op://infrastructure/PROD-DB/Password": "dev-prod-db-password",
        f"op://{vid}/{db['id']}/password": "dev-prod-db-password",
        f"op://{vid.upper()}/prod-db/{field_id}": "dev-prod-db-password",
        f"op://Infrastructure/{db['id'].upper()}/{field_id.upper()}": "dev-prod-db-password",
        "op://INFRASTRUCTURE/prod-db/HOST": "127.0.0.1",
        "op://services/Payment-API/API-KEY": "dev-payment-api-api-key",
    }
    lease = await broker.lease(list(refs), ttl_s=60)
    assert {ref: lease.get(ref) for ref in refs} == refs


async def test_sections_and_look_alike_names(canary_vault: str, clock: ManualClock) -> None:
    broker = Broker.from_env(connect_env(canary_vault), clock=clock)
    _, db = await _item(canary_vault, "Infrastructure", "canary-db")
    admin = next(s["id"] for s in db["sections"] if s["label"] == "admin")
    by_id = f"op://Infrastructure/canary-db/{admin}/role"
    lease = await broker.lease(
        [
            by_id,
            "op://Infrastructure/canary-db/admin/password",
            "op://Infrastructure/canary-db/REPLICA/password",
            "op://Infrastructure/canary-db/host",
            "op://Infrastructure/twin/token",  # "twin" and "Twin": the exact case wins
            "op://Infrastructure/Twin/token",
            "op://Infrastructure/twin /token",
        ],
        ttl_s=60,
    )
    assert lease.get(by_id) == "rw"
    assert lease.get("op://Infrastructure/canary-db/admin/password") == CANARY + "-admin"
    assert lease.get("op://Infrastructure/canary-db/REPLICA/password") == CANARY + "-replica"
    assert lease.get("op://Infrastructure/canary-db/host") == "replica"
    assert lease.get("op://Infrastructure/twin/token") == "one"
    assert lease.get("op://Infrastructure/Twin/token") == "two"
    assert lease.get("op://Infrastructure/twin /token") == "three"
    lease.wipe()


NOT_FOUND = [
    ("op://Nowhere/prod-db/password", "no vault 'Nowhere' (vaults the token can read: "),
    ("op://Infrastructure/nothing/password", "no item 'nothing' in vault 'Infrastructure' ("),
    ("op://Infrastructure/prod-db/pasword", "no field 'pasword' in item 'prod-db' (fields: "),
    ("op://Infrastructure/prod-db/admin/password", "no section 'admin' in item 'prod-db' ("),
    ("op://Infrastructure/prod-db/connection/password", "no section 'connection' in item"),
]
MALFORMED = [
    ("op://Infrastructure/prod-db", "a reference looks like op://vault/item/field"),
    ("op:/Infrastructure/prod-db/password", "is not shown"),
    ("sm://Infrastructure/prod-db/password", "no secret store handles sm:// references"),
]


@pytest.mark.parametrize(
    ("ref", "error", "says"),
    [(r, NotFound, m) for r, m in NOT_FOUND] + [(r, InvalidInput, m) for r, m in MALFORMED],
)
async def test_what_is_missing_is_named(
    broker: Broker, ref: str, error: type[EpistemeError], says: str
) -> None:
    with pytest.raises(error) as caught:
        await broker.lease(["op://Infrastructure/prod-db/username", ref], ttl_s=60)
    assert type(caught.value) is error
    assert says in caught.value.message
    if "not shown" not in says:
        assert ref in caught.value.message
    assert "\n" not in caught.value.message


async def test_not_found_lists_what_there_is(broker: Broker) -> None:
    expected = {
        "op://Nowhere/prod-db/password": "(vaults the token can read: Infrastructure, Services)",
        "op://Infrastructure/nothing/password": "(items: aws-cloudwatch, aws-ec2, datadog,",
        "op://Infrastructure/prod-db/pasword": "(fields: host, password, port, username)",
        "op://Infrastructure/prod-db/admin/password": "(sections: none)",
    }
    for ref, says in expected.items():
        with pytest.raises(NotFound) as caught:
            await broker.lease([ref], ttl_s=60)
        assert says in caught.value.message


async def test_a_name_two_things_share_asks_for_the_id(
    canary_vault: str, clock: ManualClock
) -> None:
    broker = Broker.from_env(connect_env(canary_vault), clock=clock)
    with pytest.raises(InvalidInput, match=r"3 vaults are named 'DUPlicate': use the id of one \("):
        await broker.lease(["op://DUPlicate/x/y"], ttl_s=60)
    with pytest.raises(InvalidInput, match=r"2 items in vault 'Infrastructure' are named 'TWIN'"):
        await broker.lease(["op://Infrastructure/TWIN/token"], ttl_s=60)
    with pytest.raises(NotFound) as caught:
        await broker.lease(["op://Infrastructure/canary-db/admin/host"], ttl_s=60)
    assert caught.value.message == (
        "op://Infrastructure/canary-db/admin/host: no field 'host' in section 'admin' of item "
        "'canary-db' (fields: password, role)"
    )
    with pytest.raises(InvalidInput, match=r"2 fields in item 'canary-db' are named 'role'"):
        await broker.lease(["op://Infrastructure/canary-db/role"], ttl_s=60)
    lease = await broker.lease(["op://Infrastructure/canary-db/admin/role"], ttl_s=60)
    assert lease.get("op://Infrastructure/canary-db/admin/role") == "rw"
    with pytest.raises(NotFound, match="no item 'x' in vault 'duplicate'"):
        await broker.lease(["op://duplicate/x/y"], ttl_s=60)  # the exact case picks one


async def test_a_refused_token_is_a_clear_world_error(dev_vault: str, clock: ManualClock) -> None:
    broker = Broker.from_env(connect_env(dev_vault, token="not-the-token"), clock=clock)
    with pytest.raises(SecretStoreRefused) as caught:
        await broker.lease(["op://Infrastructure/prod-db/password"], ttl_s=60)
    message = caught.value.message
    assert message.startswith("op://Infrastructure/prod-db/password: ")
    assert f"1Password Connect at {dev_vault} refused the Connect token (401)" in message
    assert "EPISTEME_OP_CONNECT_TOKEN" in message
    assert "not-the-token" not in message
    assert caught.value.status == 503
    assert caught.value.exit_code == 1


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_a_store_that_is_down_is_a_world_error(clock: ManualClock) -> None:
    url = _closed_port()
    broker = Broker.from_env(connect_env(url), clock=clock)
    with pytest.raises(SecretStoreUnavailable) as caught:
        await broker.lease(["op://Infrastructure/prod-db/password"], ttl_s=60)
    assert (
        f"op://Infrastructure/prod-db/password: 1Password Connect at {url} cannot be reached"
        in (caught.value.message)
    )


async def test_connect_settings_come_from_either_name(dev_vault: str, clock: ManualClock) -> None:
    sdk_names = {"OP_CONNECT_HOST": dev_vault, "OP_CONNECT_TOKEN": TOKEN}
    lease = await Broker.from_env(sdk_names, clock=clock).lease(
        ["op://Services/payment-api/api-key"], ttl_s=60
    )
    assert lease.get("op://Services/payment-api/api-key") == "dev-payment-api-api-key"
    # the Episteme names win over the SDK's
    both = {**connect_env(dev_vault), "OP_CONNECT_HOST": _closed_port(), "OP_CONNECT_TOKEN": "x"}
    assert (
        len(
            await Broker.from_env(both, clock=clock).lease(
                ["op://Services/payment-api/api-key"], 60
            )
        )
        == 1
    )
    for env, says in [
        ({}, "set EPISTEME_OP_CONNECT_HOST and EPISTEME_OP_CONNECT_TOKEN"),
        ({"OP_CONNECT_HOST": dev_vault}, "set EPISTEME_OP_CONNECT_TOKEN (or"),
        (connect_env("localhost:8080"), "must be a URL such as http://localhost:8080"),
        ({**connect_env(dev_vault), "EPISTEME_OP_CONNECT_TIMEOUT": "soon"}, "number of seconds"),
    ]:
        with pytest.raises(SecretStoreError, match="no 1Password Connect is configured") as caught:
            await Broker.from_env(env, clock=clock).lease(["op://a/b/c"], ttl_s=60)
        assert says in caught.value.message
        assert caught.value.message.startswith("op://a/b/c: ")


async def test_the_engine_leases_from_the_environment(
    dev_vault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `episteme serve` runs on approval: `lease_from_env` → `Broker.from_env`."""
    for name, value in connect_env(dev_vault).items():
        monkeypatch.setenv(name, value)
    lease = await lease_from_env(["op://Infrastructure/k8s-prod/token"], 30)
    assert lease.get("op://Infrastructure/k8s-prod/token") == "dev-k8s-prod-token"
    lease.wipe()
    with pytest.raises(LeaseClosed):
        lease.get("op://Infrastructure/k8s-prod/token")


async def test_the_canary_never_gets_out(
    canary_vault: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A secret value served by the store is in no message, repr or log record, on any path."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "uvicorn", "uvicorn.error", "uvicorn.access", "episteme"):
        caplog.set_level(logging.DEBUG, logger=name)
    texts: list[str] = []
    broker = Broker.from_env(connect_env(canary_vault), clock=clock)
    password = "op://Infrastructure/canary-db/password"
    lease = await broker.lease([password, "op://Infrastructure/canary-db/admin/password"], ttl_s=60)
    assert lease.get(password) == CANARY  # the store did serve it
    texts += [repr(lease), str(lease), repr(broker), repr(OnePasswordConnect(canary_vault, TOKEN))]
    texts += [repr(broker.backends[s]) for s in ("op", "env", "file", "vault")]
    failing = [
        "op://Infrastructure/canary-db/nope",  # not found: lists the field labels
        "op://Infrastructure/canary-db/admin/nope",
        "op://Infrastructure/canary-db/nope/password",
        "op://Infrastructure/canary-db",
        "op://Infrastructure/Twin/password",
    ]
    for ref in failing:
        with pytest.raises(EpistemeError) as caught:
            await broker.lease([password, ref], ttl_s=60)
        texts += [caught.value.message, str(caught.value), repr(caught.value)]
    refused = Broker.from_env(connect_env(canary_vault, token="wrong"), clock=clock)
    with pytest.raises(SecretStoreRefused) as caught:
        await refused.lease([password], ttl_s=60)
    texts.append(str(caught.value))
    for misuse in (
        lambda: lease.get(CANARY),
        lambda: lease.get("op://Infrastructure/other/password"),
    ):
        with pytest.raises(NotLeased) as not_leased:
            misuse()
        texts.append(str(not_leased.value))
    with pytest.raises(TypeError) as no_pickle:
        pickle.dumps(lease)
    texts.append(str(no_pickle.value))
    lease.wipe()
    with pytest.raises(LeaseClosed) as closed:
        lease.get(password)
    texts += [str(closed.value), repr(lease)]
    texts += [r.getMessage() for r in caplog.records]
    texts += [r.exc_text or "" for r in caplog.records]
    assert any("HTTP Request: GET" in t for t in texts)  # httpx did log its requests
    leaks = [t for t in texts if CANARY in t]
    assert leaks == []
