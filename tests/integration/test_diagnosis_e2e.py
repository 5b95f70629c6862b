"""Diagnosis end to end, on real parts: a PostgreSQL with 12 connection slots and
sessions held idle in transaction, the dev vault (the Connect API) holding its password,
the real broker and database specialist, the API over HTTP with NDJSON streams, and a
model (pydantic-ai's function model) that records every prompt.

The canary is the database password. After the sessions it is in no HTTP response, no
NDJSON line, no log record, no byte of the ledger's files, no exception and no prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from whenever import TimeDelta

from episteme.api import Settings, create_app
from episteme.diagnose.config import Access, DiagnosisConfig
from episteme.diagnose.engine import DiagnosisEngine, lease_from_env
from episteme.diagnose.narrator import ModelNarrator
from episteme.ledger import Ledger
from episteme.secrets.devitems import ItemsFile
from episteme.secrets.devserver import create_devserver_app
from episteme.timeutil import ManualClock
from tests.integration.server import live_server
from tests.postgres import Cluster, running_cluster

CANARY = "CANARY-7c41-prod-db-password"
VAULT_TOKEN = "dev-vault-token-e2e"
HELD = 9  # of 10 slots usable by non-superusers (90 %): exhaustion, critical


@pytest.fixture(scope="module")
def small() -> Iterator[Cluster]:
    """12 slots, 2 reserved for superusers; `diag` signs in with the canary password."""
    with running_cluster() as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_connections = 12")
            conn.execute("ALTER SYSTEM SET superuser_reserved_connections = 2")
            conn.execute(f"CREATE ROLE diag LOGIN PASSWORD '{CANARY}' IN ROLE pg_monitor")
            conn.execute("CREATE ROLE app LOGIN PASSWORD 'app'")
        cluster.stop()
        cluster.start()
        yield cluster


@pytest.fixture
def held(small: Cluster) -> Iterator[list[int]]:
    """Application sessions left idle in transaction, as a leaking pool leaves them."""
    conns = []
    try:
        for n in range(HELD):  # the specialist's own session takes the last slot
            conn = psycopg.connect(
                host="127.0.0.1",
                port=small.port,
                dbname="postgres",
                user="app",
                password="app",
                application_name=f"checkout-{n}",
            )
            conn.execute("SELECT 1")  # opens the transaction, then nothing
            conns.append(conn)
        yield [c.info.backend_pid for c in conns]
    finally:
        for c in conns:
            c.close()


@pytest.fixture
def vault_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    items = ItemsFile.model_validate(
        {
            "vaults": [
                {
                    "name": "Infrastructure",
                    "items": [
                        {
                            "title": "prod-db",
                            "category": "DATABASE",
                            "fields": {
                                "host": "127.0.0.1",
                                "username": "diag",
                                "password": CANARY,
                            },
                        }
                    ],
                }
            ]
        }
    )
    with live_server(create_devserver_app(items, VAULT_TOKEN)) as url:
        monkeypatch.setenv("EPISTEME_OP_CONNECT_HOST", url)
        monkeypatch.setenv("EPISTEME_OP_CONNECT_TOKEN", VAULT_TOKEN)
        yield url


class Prompts:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        text = repr(messages)
        self.seen.append(text)
        answer = "database" if "Which of these specialists" in text else "The pool leaks."
        return ModelResponse(parts=[TextPart(answer)])


@pytest.fixture
def served(
    tmp_path: Path, small: Cluster, vault_url: str, clock: ManualClock
) -> Iterator[tuple[str, dict[str, str], Ledger, Prompts, Path]]:
    home = tmp_path / "home"
    prompts = Prompts()
    with Ledger.init(home, clock=clock) as ledger:
        access = Access(
            credentials={
                "host": "op://Infrastructure/prod-db/host",
                "username": "op://Infrastructure/prod-db/username",
                "password": "op://Infrastructure/prod-db/password",
            },
            settings={"port": small.port, "dbname": "postgres", "idle_in_transaction_s": 0},
        )
        config = DiagnosisConfig(specialists={"database": {"prod": access}})
        engine = DiagnosisEngine(
            ledger, lease_from_env, config=config, narrator=ModelNarrator(FunctionModel(prompts))
        )
        app = create_app(
            Settings(home=home, mcp=False, background=False), ledger=ledger, diagnosis=engine
        )
        tokens = {
            who: ledger.issue_token(who, [role], by="admin")[0]
            for who, role in [("dev", "agent"), ("lead", "approver"), ("am", "agent")]
        }
        with live_server(app) as url:
            yield url, tokens, ledger, prompts, home


def _post(url: str, token: str, path: str, body: Any, texts: list[str]) -> list[dict[str, Any]]:
    r = httpx.post(
        url + path,
        json=body,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/x-ndjson"},
        timeout=60,
    )
    texts.append(r.text)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [orjson.loads(line) for line in r.text.splitlines() if line]


def test_connection_exhaustion_found_and_no_secret_left_anywhere(
    served: tuple[str, dict[str, str], Ledger, Prompts, Path],
    held: list[int],
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url, tokens, ledger, prompts, home = served
    texts: list[str] = []
    body = {"problem": "checkout: database connection failures in prod", "environment": "prod"}
    first = _post(url, tokens["dev"], "/diagnose", body, texts)
    sid = first[0]["session_id"]
    assert first[-1]["type"] == "approval_required"
    assert "op://Infrastructure/prod-db/password" in first[-1]["references"]
    rest = _post(url, tokens["lead"], f"/approve/{sid}", {"reason": "incident 4711"}, texts)
    assert [e["type"] for e in rest if e["type"] == "credential_retrieved"] == [
        "credential_retrieved"
    ] * 3
    done = rest[-1]
    assert done["type"] == "diagnosis_complete", rest[-1]
    result = done["result"]
    best = result["hypotheses"][0]
    assert best["rule"] == "connection_exhaustion"
    assert any("idle_in_transaction_session_timeout" in step for step in best["remediation"])
    assert any("pool" in step for step in best["remediation"])
    by_code = {f["code"]: f for f in result["findings"]}
    assert by_code["db.connection_exhaustion"]["severity"] == "critical"
    kill = by_code["db.idle_in_transaction"]["evidence"]["terminate"]
    assert {f"SELECT pg_terminate_backend({pid})" for pid in held} <= set(kill)
    assert result["text"] == "The pool leaks."

    # a denied session and an expired one fetch nothing
    other = _post(url, tokens["dev"], "/diagnose", body, texts)[0]["session_id"]
    r = httpx.post(
        f"{url}/deny/{other}",
        json={"reason": "not now"},
        headers={"Authorization": f"Bearer {tokens['lead']}"},
    )
    texts.append(r.text)
    assert r.json()["status"] == "denied"
    late = _post(url, tokens["dev"], "/diagnose", body, texts)[0]["session_id"]
    clock.advance(TimeDelta(hours=2))
    r = httpx.post(
        f"{url}/approve/{late}",
        json={"reason": "too late"},
        headers={"Authorization": f"Bearer {tokens['lead']}"},
    )
    texts.append(r.text)
    assert r.status_code == 409
    for quiet in (other, late):
        events = httpx.get(
            f"{url}/status/{quiet}?stream=true",
            headers={"Authorization": f"Bearer {tokens['dev']}"},
        ).text
        texts.append(events)
        assert "credential_retrieved" not in events

    # Alertmanager sends the same alert twice: one incident, one session
    alert = {
        "version": "4",
        "groupKey": '{}:{alertname="PostgresTooManyConnections"}',
        "status": "firing",
        "receiver": "episteme",
        "commonLabels": {"alertname": "PostgresTooManyConnections", "env": "prod"},
        "commonAnnotations": {"summary": "connections near max_connections"},
        "alerts": [
            {"status": "firing", "labels": {"datname": "postgres"}, "fingerprint": "c0ffee"}
        ],
    }
    for _ in range(2):
        r = httpx.post(
            f"{url}/alerts", json=alert, headers={"Authorization": f"Bearer {tokens['am']}"}
        )
        assert r.status_code == 202
    listed = httpx.get(f"{url}/sessions", headers={"Authorization": f"Bearer {tokens['dev']}"})
    texts.append(listed.text)

    # the canary is nowhere
    assert ledger.verify().ok
    files = b"".join(p.read_bytes() for p in home.iterdir() if p.is_file())
    assert CANARY.encode() not in files
    assert CANARY not in "".join(texts)
    assert CANARY not in caplog.text
    assert prompts.seen
    assert not any(CANARY in p for p in prompts.seen)
    assert sum("PostgresTooManyConnections" in s["problem"] for s in listed.json()) <= 1
