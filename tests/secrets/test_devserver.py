"""The dev vault speaks what the official 1Password Connect SDK expects: the real client
(`onepasswordconnectsdk`) against the real server over TCP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from onepasswordconnectsdk.client import Client, new_client
from onepasswordconnectsdk.config import load_dict
from onepasswordconnectsdk.errors import (
    FailedToRetrieveItemException,
    FailedToRetrieveVaultException,
)

from episteme.errors import InvalidInput
from episteme.secrets.devitems import default_items, load_items, make_id, references
from episteme.secrets.devserver import create_devserver_app
from tests.integration.server import live_server
from tests.secrets.conftest import CANARY, TOKEN, canary_items

CONNECT_ID = re.compile(r"^[a-z0-9]{26}$")
PRELOADED = [
    "op://Infrastructure/prod-db/password",
    "op://Infrastructure/prod-db/username",
    "op://Infrastructure/prod-db/host",
    "op://Infrastructure/staging-db/password",
    "op://Infrastructure/staging-db/username",
    "op://Infrastructure/aws-cloudwatch/access-key",
    "op://Infrastructure/aws-cloudwatch/secret-key",
    "op://Infrastructure/aws-ec2/access-key",
    "op://Infrastructure/aws-ec2/secret-key",
    "op://Infrastructure/k8s-prod/token",
    "op://Infrastructure/datadog/api-key",
    "op://Infrastructure/grafana/admin-password",
    "op://Services/payment-api/api-key",
    "op://Services/email-service/smtp-password",
]


@pytest.fixture
def sdk(dev_vault: str) -> Iterator[Client]:
    client = new_client(dev_vault, TOKEN)
    assert isinstance(client, Client)
    yield client
    client.session.close()


def test_the_sdk_lists_vaults_and_gets_one_by_title_and_by_id(sdk: Client) -> None:
    vaults = sdk.get_vaults()
    assert [v.name for v in vaults] == ["Infrastructure", "Services"]
    assert all(CONNECT_ID.match(v.id) for v in vaults)
    infra = sdk.get_vault_by_title("Infrastructure")
    assert infra.id == vaults[0].id
    assert infra.items == 7
    assert infra.type == "USER_CREATED"
    assert infra.created_at is not None  # a datetime the SDK parsed
    assert sdk.get_vault(infra.id).name == "Infrastructure"


def test_the_sdk_lists_items_and_gets_one_by_title_and_by_id(sdk: Client) -> None:
    infra = sdk.get_vault_by_title("Infrastructure")
    items = sdk.get_items(infra.id)
    assert [i.title for i in items][:3] == ["prod-db", "staging-db", "aws-cloudwatch"]
    assert all(CONNECT_ID.match(i.id) and i.vault.id == infra.id for i in items)
    assert [i.title for i in sdk.get_items(infra.id, 'title eq "datadog"')] == ["datadog"]

    by_title = sdk.get_item_by_title("prod-db", infra.id)
    by_id = sdk.get_item_by_id(by_title.id, infra.id)
    assert by_title.id == by_id.id
    assert by_id.category == "DATABASE"
    # `get_item` takes names or ids, for the vault as for the item
    assert sdk.get_item("prod-db", "Infrastructure").id == by_id.id
    assert sdk.get_item(by_id.id, infra.id).title == "prod-db"

    fields = {f.label: f for f in by_id.fields}
    assert fields["password"].value == "dev-prod-db-password"
    assert fields["password"].type == "CONCEALED"
    assert fields["password"].purpose == "PASSWORD"
    assert fields["username"].value == "app"
    assert fields["host"].section is None
    assert fields["host"].value == "127.0.0.1"


def test_the_sdk_loads_a_config_dict(sdk: Client) -> None:
    vault = sdk.get_vault_by_title("Services").id
    got = load_dict(
        sdk,
        {
            "key": {"opitem": "payment-api", "opfield": ".api-key", "opvault": vault},
            "smtp": {"opitem": "email-service", "opfield": ".smtp-password", "opvault": vault},
        },
    )
    assert got == {"key": "dev-payment-api-api-key", "smtp": "dev-email-service-smtp-password"}


def test_the_sdk_sees_refusals_and_unknowns_the_way_connect_reports_them(dev_vault: str) -> None:
    wrong = new_client(dev_vault, "not-the-token")
    assert isinstance(wrong, Client)
    with pytest.raises(FailedToRetrieveVaultException, match="401"):
        wrong.get_vaults()
    wrong.session.close()
    sdk = new_client(dev_vault, TOKEN)
    assert isinstance(sdk, Client)
    with pytest.raises(FailedToRetrieveVaultException, match="404"):
        sdk.get_vault("a" * 26)
    # Connect's filters are exact and case-sensitive, and so are the dev vault's
    with pytest.raises(FailedToRetrieveItemException, match="Found 0 vaults"):
        sdk.get_vault_by_title("infrastructure")
    infra = sdk.get_vault_by_title("Infrastructure").id
    with pytest.raises(FailedToRetrieveItemException, match="404"):
        sdk.get_item_by_id("b" * 26, infra)
    sdk.session.close()


def test_every_preloaded_reference_is_served() -> None:
    served = references(default_items())
    assert set(PRELOADED) <= set(served)
    assert all(CONNECT_ID.match(make_id("x", str(i))) for i in range(50))


def test_plain_http_routes_errors_and_filters(dev_vault: str) -> None:
    with httpx.Client(base_url=dev_vault) as http:
        assert http.get("/heartbeat").text == "."
        assert http.get("/health").json()["dependencies"][0]["status"] == "ACTIVE"
        bare = http.get("/v1/vaults")
        assert bare.status_code == 401
        assert bare.json() == {
            "status": 401,
            "message": "missing bearer token: send Authorization: Bearer <token>",
        }
        assert bare.headers["www-authenticate"] == "Bearer"
        assert http.get("/v1/vaults", headers={"Authorization": "Bearer nope"}).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        vaults = http.get("/v1/vaults", headers=auth, params={"filter": 'name eq "Services"'})
        assert [v["name"] for v in vaults.json()] == ["Services"]
        either = http.get(
            "/v1/vaults",
            headers=auth,
            params={"filter": 'name eq "Services" or name eq "Infrastructure"'},
        )
        assert len(either.json()) == 2
        bad = http.get("/v1/vaults", headers=auth, params={"filter": 'name co "Serv"'})
        assert bad.status_code == 400
        assert "invalid filter" in bad.json()["message"]
        assert http.get("/v1/nothing", headers=auth).json()["status"] == 404
        vid = vaults.json()[0]["id"]
        items = http.get(f"/v1/vaults/{vid}/items", headers=auth).json()
        assert "fields" not in items[0]  # summaries, like Connect's
        tagged = http.get(
            f"/v1/vaults/{vid}/items",
            headers=auth,
            params={"filter": 'title eq "payment-api" and tag eq "nope"'},
        )
        assert tagged.json() == []


def test_an_items_file_with_sections_and_ids(tmp_path: Path) -> None:
    spec = canary_items()
    spec["vaults"][0]["id"] = "c" * 26
    path = tmp_path / "items.json"
    path.write_text(json.dumps(spec))
    app = create_devserver_app(load_items(path), TOKEN)
    with live_server(app) as url:
        sdk = new_client(url, TOKEN)
        assert isinstance(sdk, Client)
        item = sdk.get_item("canary-db", "c" * 26)
        labels = {s.id: s.label for s in item.sections}
        assert sorted(labels.values()) == ["admin", "replica"]
        by_section = {
            (labels.get(f.section.id) if f.section else None, f.label): f.value for f in item.fields
        }
        assert by_section[("admin", "password")] == CANARY + "-admin"
        assert by_section[(None, "password")] == CANARY
        sdk.session.close()


def test_ids_are_stable_from_one_start_to_the_next() -> None:
    def ids() -> list[str]:
        with live_server(create_devserver_app(None, TOKEN)) as url:
            sdk = new_client(url, TOKEN)
            assert isinstance(sdk, Client)
            out = [v.id for v in sdk.get_vaults()]
            out += [i.id for i in sdk.get_items(out[0])]
            sdk.session.close()
            return out

    assert ids() == ids()


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"vaults": [{"name": "v", "items": [{"title": "t", "fields": {"p": 5}}]}]}, "a valid str"),
        ({"vaults": [{"name": "v", "bogus": CANARY}]}, "vaults.0.bogus: Extra inputs"),
        ({"vaults": [{"name": "v", "id": CANARY}]}, "vaults.0.id: String should match pattern"),
        ({"vaults": [{"name": "a", "id": "d" * 26}, {"name": "b", "id": "d" * 26}]}, "used twice"),
        ({"items": []}, "vaults: Field required"),
    ],
)  # fmt: skip
def test_a_bad_items_file_is_one_line_that_holds_no_value(
    tmp_path: Path, spec: object, why: str
) -> None:
    path = tmp_path / "items.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(InvalidInput, match=why) as caught:
        load_items(path)
    assert CANARY not in caught.value.message
    assert "\n" not in caught.value.message
    path.write_text('{"vaults": [' + CANARY)
    with pytest.raises(InvalidInput, match="Invalid JSON") as caught:
        load_items(path)
    assert CANARY not in caught.value.message
    with pytest.raises(InvalidInput, match="cannot read it"):
        load_items(tmp_path / "missing.json")


def test_the_app_needs_a_token() -> None:
    with pytest.raises(InvalidInput, match="non-empty token"):
        create_devserver_app(None, " ")
