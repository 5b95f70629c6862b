"""The ledger over HTTP: each route is the library call, acting as the token's principal."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from starlette.testclient import TestClient
from whenever import TimeDelta

from episteme.api import Settings, create_app
from episteme.ledger import Ledger
from episteme.ledger.gardener import Gardener
from episteme.ledger.webhooks import WebhookSpec, deliveries
from episteme.timeutil import ManualClock
from tests.api.conftest import Api
from tests.integration.server import live_server
from tests.ledger.test_paging import fill
from tests.postgres import Cluster
from tests.receiver import Receiver


def test_the_es256_story_over_http(api: Api, clock: ManualClock) -> None:
    good = api.call(
        "POST",
        "/v1/assertions",
        json={"subject": "auth.jwt.algorithm", "value": "RS256", "confidence": 0.92},
    )
    assert good.status_code == 201
    assert good.json()["agent"] == "agent-1"  # the token's principal, never the body's
    rs = good.json()["id"]
    r = api.call(
        "POST", f"/v1/assertions/{rs}/approve", role="supervisor", json={"reason": "matches prod"}
    )
    assert r.json()["lifecycle"] == "approved"
    clock.advance(TimeDelta(minutes=5))
    bad = api.call(
        "POST",
        "/v1/assertions",
        json={
            "subject": "auth.jwt.algorithm",
            "value": "ES256",
            "confidence": 0.87,
            "epoch": "jwt-migration",
        },
    )
    es = bad.json()["id"]

    ans = api.call(
        "POST", "/v1/query", json={"subject": "auth.jwt.algorithm", "context": {"task": "deploy"}}
    ).json()
    assert [i["assertion"]["value"] for i in ans["items"]] == ["RS256"]
    assert ans["summary"] == "1 proposed assertion hidden"
    assert ans["hidden"]["ids"] == [es]
    latest = api.call(
        "POST", "/v1/query", json={"subject": "auth.jwt.algorithm", "lens": "latest"}
    ).json()
    assert latest["items"][0]["assertion"]["value"] == "ES256"

    d = api.call(
        "POST",
        "/v1/decisions",
        json={"action": "deployed auth config", "query_ids": [latest["query_id"]]},
    )
    assert d.status_code == 201
    assert d.json()["agent"] == "agent-1"
    tr = api.call("GET", f"/v1/trace/{d.json()['id']}").json()
    assert tr["agents"] == ["agent-1"]
    assert es in [a["id"] for a in tr["assertions"]]

    im = api.call("GET", f"/v1/impact/{es}").json()
    assert im["decisions"][0]["id"] == d.json()["id"]
    audit = api.call("GET", "/v1/audit", params={"agent": "agent-1"}).json()
    assert [q["lens"] for q in audit] == ["latest", "approved"]
    assert audit[1]["context"] == {"task": "deploy"}
    served = api.call("GET", "/v1/served", params={"subject": "auth.jwt.algorithm"}).json()
    assert len(served) == 2
    diff = api.call(
        "GET", "/v1/diff", params={"prefix": "auth", "since": "2026-11-21T00:00:00Z"}
    ).json()
    assert diff["counts"]["added"] == 2
    newest = api.call(
        "GET", "/v1/diff", params={"prefix": "auth", "since": "2026-11-21T00:00:00Z", "limit": 1}
    ).json()
    assert newest["changes"] == diff["changes"][-1:]
    assert (newest["counts"], newest["total"]) == (diff["counts"], diff["total"])
    assert diff["next"] is None
    pages, place = [newest["changes"]], newest["next"]
    while place is not None:  # a page at a time, each below the one before
        below = api.call(
            "GET",
            "/v1/diff",
            params={"prefix": "auth", "since": "2026-11-21T00:00:00Z", "until": newest["until"]}
            | {"limit": 1, "before": place},
        ).json()
        pages.append(below["changes"])
        place = below["next"]
    assert [c for p in reversed(pages) for c in p] == diff["changes"]
    assert len(pages) == diff["total"] > 1
    # the Link header, as a list's: the same walk, the window pinned as it was resolved
    r = api.call("GET", "/v1/diff?prefix=auth&since=2026-11-21T00:00:00Z&limit=1")
    walked = []
    while True:
        walked.append(r.json()["changes"])
        if "Link" not in r.headers:
            assert r.json()["next"] is None
            break
        link = r.headers["Link"]
        assert link.startswith("<?")
        assert link.endswith('>; rel="next"')
        assert f"until={newest['until'].replace(':', '%3A')}" in link
        r = api.call("GET", "/v1/diff" + link[1:].split(">")[0])
    assert walked == pages
    assert "Link" not in api.call("GET", "/v1/diff?prefix=auth&since=2026-11-21T00:00:00Z").headers
    blame = api.call("GET", f"/v1/blame/{es[:10]}").json()
    assert blame[0]["assertion"]["agent"] == "agent-1"
    # a subject as long as a subject may be (255), where the path took 128
    long = ".".join(["s" * 50] * 5)
    assert api.call("POST", "/v1/assertions", json={"subject": long, "value": 1}).status_code == 201
    [b] = api.call("GET", f"/v1/blame/{long}").json()
    assert b["assertion"]["subject"] == long
    assert api.call("GET", "/v1/epochs/jwt-migration").json()["epoch"]["assertions"] == 1

    fix = api.call(
        "POST",
        f"/v1/assertions/{es}/correct",
        role="supervisor",
        json={"reason": "prod verifies RS256", "value": "RS256", "forbid": True},
    )
    assert fix.status_code == 200, fix.text
    body = fix.json()
    assert body["corrected"]["lifecycle"] == "rejected"
    assert body["correction"]["by"] == "supervisor-1"
    assert body["constraint"]["forbid"] == ["ES256"]
    check = api.call(
        "POST",
        "/v1/check",
        json={"plan": "switch auth.jwt.algorithm to es256", "subjects": ["auth.jwt.algorithm"]},
    ).json()
    assert [v["matched"] for v in check["violations"]] == ["es256"]
    assert "use 'RS256' instead" in check["violations"][0]["message"]
    ok = api.call("POST", "/v1/check", json={"plan": "rotate the RS256 keys"}).json()
    assert ok["violations"] == []
    assert ok["checked"] == 1


def test_lenses_epochs_and_integrity(api: Api) -> None:
    r = api.call(
        "PUT",
        "/v1/lenses/confident",
        role="supervisor",
        json={"lifecycles": ["approved", "proposed"], "min_confidence": 0.9},
    )
    assert r.status_code == 200
    lenses = api.call("GET", "/v1/lenses").json()
    assert {"approved", "latest", "consensus", "all", "confident"} <= set(lenses)
    # a lens that could show nothing is refused, naming why, and nothing is defined
    for spec, field, words in (
        ({"lifecycles": []}, "lifecycles", "at least one lifecycle"),
        ({"agents": ["Agent Bot!"]}, "agents", "invalid agent 'Agent Bot!'"),
        ({"agents": []}, "agents", "lets none through"),
        ({"sources": []}, "sources", "lets none through"),
        ({"sources": [" "]}, "sources", "leave sources out"),
    ):
        r = api.call("PUT", "/v1/lenses/never", role="supervisor", json=spec)
        assert (r.status_code, r.json()["field"]) == (400, field), r.text
        assert words in r.json()["detail"]
    assert "never" not in api.call("GET", "/v1/lenses").json()
    api.call(
        "POST",
        "/v1/assertions/batch",
        json={
            "assertions": [
                {"subject": "db.pool", "value": 10, "epoch": "e1"},
                {"subject": "db.timeout", "value": 30, "epoch": "e1"},
            ]
        },
    )
    r = api.call("POST", "/v1/epochs/e1/supersede", role="supervisor", json={"reason": "withdrawn"})
    assert len(r.json()["retracted"]) == 2
    assert api.call("GET", "/v1/verify", role="admin").json()["ok"] is True
    assert api.call("POST", "/v1/rebuild", role="admin", json={}).json()["ok"] is True
    lines = api.call("GET", "/v1/export", role="admin").text.splitlines()
    assert len(lines) == api.ledger.store.head()[0]


def test_tokens_over_http(api: Api) -> None:
    r = api.call(
        "POST", "/v1/tokens", role="admin", json={"name": "alice", "roles": ["supervisor", "agent"]}
    )
    assert r.status_code == 201
    secret = r.json()["token"]
    assert r.json()["record"]["kind"] == "human"
    me = api.client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).json()
    assert me["name"] == "alice"
    assert set(me["roles"]) == {"supervisor", "agent"}
    listed = api.call("GET", "/v1/tokens", role="admin", params={"name": "alice"}).json()
    assert [t["principal"] for t in listed] == ["alice"]
    assert "hash" not in listed[0]
    assert listed[0]["state"] == "active"
    assert r.json()["record"]["state"] == "active"
    r = api.call(
        "POST", f"/v1/tokens/{listed[0]['id']}/revoke", role="admin", json={"reason": "left"}
    )
    assert r.json()[0]["revoked_by"] == "admin-1"
    assert (
        api.client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).status_code
        == 401
    )


def _asgi(app: Any, method: str, path: str, headers: dict[str, str], parts: list[Any]) -> None:
    """One request straight to the app, its body in `parts` (a message dict each)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": method, "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip

    async def receive() -> Any:
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        pass

    asyncio.run(app(scope, receive, send))


def _count(api: Api, route: str, method: str, status: str) -> float | None:
    registry = api.app.state.metrics.registry
    labels = {"route": route, "method": method, "status": status}
    value: float | None = registry.get_sample_value(
        "episteme_http_request_duration_seconds_count", labels
    )
    return value


def test_latency_is_filed_under_the_route_whoever_answers(api: Api) -> None:
    # Requests refused before the router ran (a body over the limit, a compressed one),
    # the reference pages, HEAD and clients that hung up were filed under `unmatched`,
    # under GET, or as the 400 nobody received.
    big = {"Content-Type": "application/json", "Content-Length": str(2 * 1024 * 1024)}
    assert api.call("POST", "/v1/assertions", headers=big, content=b"{}").status_code == 413
    gzip = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    api.call("POST", "/v1/decisions", headers=gzip, content=b"{}")
    assert api.call("HEAD", "/health", role=None).status_code == 200
    assert api.client.get("/docs").status_code == 200
    assert api.client.get("/openapi.json").status_code == 200
    assert api.client.get("/mcpfoo").status_code == 404
    auth = api.auth("agent") | {"Content-Type": "application/json"}
    for path in ("/v1/assertions", "/v1/query"):  # the framework, and the shortcut
        cut = [{"type": "http.request", "body": b'{"subj', "more_body": True}]
        _asgi(api.app, "POST", path, auth, cut)
    assert _count(api, "/v1/assertions", "POST", "413") == 1
    assert _count(api, "/v1/decisions", "POST", "415") == 1
    assert _count(api, "/health", "HEAD", "200") == 1
    assert _count(api, "/docs", "GET", "200") == 1
    assert _count(api, "/openapi.json", "GET", "200") == 1
    assert _count(api, "unmatched", "GET", "404") == 1
    assert _count(api, "/v1/assertions", "POST", "499") == 1
    assert _count(api, "/v1/query", "POST", "499") == 1
    assert _count(api, "unmatched", "POST", "413") is None
    text = api.call("GET", "/metrics").text
    assert 'le="30.0"' in text  # a stalled body's 408 is seen in a quantile


def test_health_and_metrics(api: Api) -> None:
    h = api.client.get("/health")
    assert h.status_code == 200
    assert h.json()["store"] == "ok"
    assert h.json()["journal_events"] == 4
    assert h.json()["process"] == os.getpid()  # in-process: this one answered
    api.call("POST", "/v1/assertions", json={"subject": "a.b", "value": 1})
    api.call("POST", "/v1/query", json={"subject": "a.b"})
    api.call("POST", "/v1/query", json={"subject": "a.b", "lens": "latest"})
    api.call("POST", "/v1/assertions/x/approve", role="agent", json={})
    text = api.call("GET", "/metrics").text
    assert 'episteme_queries_total{lens="approved"} 1.0' in text
    assert 'episteme_answers_hiding_total{lens="approved"} 1.0' in text
    assert 'episteme_auth_refusals_total{status="403"} 1.0' in text
    labels = 'method="POST",route="/v1/query",status="200"'
    assert f"episteme_http_request_duration_seconds_count{{{labels}}} 2.0" in text
    assert "episteme_journal_events 8.0" in text


def _sample(text: str, name: str) -> float:
    """The value of one sample of the exposition (`name` with its labels, if any)."""
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in /metrics")


def test_metrics_say_how_far_background_work_is_behind(
    ledger: Ledger, home: Path, clock: ManualClock
) -> None:
    # Only /health said the gardener had stopped, in words, on the worker that led it:
    # nothing an alert could read said that trust and notifications were not following.
    app = create_app(Settings(home=home, mcp=False, background=False), ledger=ledger)
    token, _ = ledger.issue_token("prometheus", ["agent"], by="admin")
    ledger.set_webhook(WebhookSpec(name="pager", url="http://127.0.0.1:9/hook"), by="admin")
    wrong = ledger.assert_one(subject="svc.a", value=1, agent="bot", lifecycle="approved")
    ledger.correct(wrong.id, by="oncall", reason="it is 2", value=2)
    clock.advance(TimeDelta(seconds=90))
    with TestClient(app) as client:

        def scrape() -> str:
            answer = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, answer.text
            return answer.text

        text = scrape()
        assert _sample(text, "episteme_gardener_lag_events") == ledger.store.head()[0]
        assert _sample(text, "episteme_gardener_lag_seconds") == 90.0
        assert _sample(text, "episteme_webhook_deliveries_waiting") == 0
        assert _sample(text, "episteme_webhook_oldest_due_seconds") == 0
        for work in ("gardener", "webhooks"):  # a series at 0 before anything fails
            assert _sample(text, f'episteme_background_errors_total{{work="{work}"}}') == 0
        Gardener(ledger).run_until_caught_up()  # the correction's notification is queued
        clock.advance(TimeDelta(seconds=30))
        text = scrape()
        assert _sample(text, "episteme_gardener_lag_events") == 0
        assert _sample(text, "episteme_gardener_lag_seconds") == 0
        assert _sample(text, "episteme_webhook_deliveries_waiting") == 1
        assert _sample(text, "episteme_webhook_oldest_due_seconds") == 30.0


def test_metrics_count_webhook_deliveries_by_outcome(api: Api, receiver: Receiver) -> None:
    ledger = api.ledger
    hooks = {
        "delivered": receiver.url,
        "retrying": "http://127.0.0.1:9/hook",  # nothing listens: tried again later
    }
    for name, url in hooks.items():
        ledger.set_webhook(WebhookSpec(name=name, url=url), by="admin")
    gone = WebhookSpec(name="failed", url="http://127.0.0.1:9/hook", max_attempts=1)
    ledger.set_webhook(gone, by="admin")
    wrong = ledger.assert_one(subject="svc.a", value=1, agent="bot", lifecycle="approved")
    ledger.correct(wrong.id, by="oncall", reason="it is 2", value=2)
    want = {f'episteme_webhook_deliveries_total{{outcome="{o}"}}': 1.0 for o in hooks}
    want['episteme_webhook_deliveries_total{outcome="failed"}'] = 1.0
    deadline = time.monotonic() + 30
    while True:  # the app's own gardener and deliverer do the work
        text = api.call("GET", "/metrics").text
        got = {name: _sample(text, name) for name in want}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == want
    assert len(receiver.requests) == 1
    assert _sample(text, "episteme_webhook_deliveries_waiting") == 1  # the one to retry


def test_a_stopping_server_hands_back_the_delivery_in_hand(
    ledger: Ledger, home: Path, receiver: Receiver
) -> None:
    # A receiver slower than the 5 s a stopping server gives its background work: the
    # job stayed leased to the gone process (up to 3 x timeout_s + 30 s), and was sent
    # again only then.
    receiver.stall_s = 30
    hook = WebhookSpec(name="slow", url=receiver.url, timeout_s=30)
    ledger.set_webhook(hook, by="admin")
    wrong = ledger.assert_one(subject="svc.a", value=1, agent="bot", lifecycle="approved")
    ledger.correct(wrong.id, by="oncall", reason="it is 2", value=2)
    with TestClient(create_app(Settings(home=home, mcp=False), ledger=ledger)):
        deadline = time.monotonic() + 30
        while not receiver.requests:
            assert time.monotonic() < deadline, "nothing was delivered"
            time.sleep(0.05)
    (delivery,) = deliveries(ledger.store)
    assert (delivery.state, delivery.attempts) == ("retrying", 1)
    assert delivery.error == "the server stopped while sending it"
    assert delivery.next_attempt is not None
    assert delivery.next_attempt <= ledger.clock.now()  # due at once, for the next leader


def _served_as_a_role(pg_cluster: Cluster) -> tuple[str, str, str]:
    """A new ledger, and a role that may read and write its tables, not its sequences
    (as docs/deploy.md once had it): (the owner's URL, the role's URL, the role)."""
    role = f"app_{secrets.token_hex(4)}"
    url = pg_cluster.create_database()
    Ledger.init(url).close()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'app'")
        admin.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
    name = conninfo_to_dict(url)["dbname"]
    return url, f"postgresql://{role}:app@127.0.0.1:{pg_cluster.port}/{name}", role


def test_metrics_count_the_gardeners_failures(pg_cluster: Cluster, home: Path) -> None:
    # A serving role without USAGE on the job queue's sequence (docs/deploy.md once left
    # it out): the gardener failed at every batch that queued a delivery, and /health
    # still answered 200 "ok". The failures are counted now, and the lag grows.
    _url, served, _role = _served_as_a_role(pg_cluster)
    with Ledger.open(served) as ledger:
        token, _ = ledger.issue_token("prometheus", ["agent"], by="admin")
        ledger.set_webhook(WebhookSpec(name="pager", url="http://127.0.0.1:9/hook"), by="admin")
        wrong = ledger.assert_one(subject="svc.a", value=1, agent="bot", lifecycle="approved")
        ledger.correct(wrong.id, by="oncall", reason="it is 2", value=2)
        app = create_app(Settings(home=home, mcp=False), ledger=ledger)
        with TestClient(app) as client:
            deadline = time.monotonic() + 30
            failures = 'episteme_background_errors_total{work="gardener"}'
            while True:
                text = client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).text
                if _sample(text, failures) >= 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert _sample(text, failures) >= 2  # tried again, and failed again
            assert _sample(text, "episteme_gardener_lag_events") > 0


def test_a_database_refusing_the_token_check_is_a_503_on_the_fast_query(
    pg_cluster: Cluster, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # With SELECT on tokens revoked, POST /v1/query answered 503 but logged a 70-line
    # traceback each time (the fast path let the database's error out), and the server
    # then reset the client's next request on that connection.
    url, served, role = _served_as_a_role(pg_cluster)
    with Ledger.open(served) as ledger:
        token, _ = ledger.issue_token("agent-1", ["agent"], by="admin")
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"REVOKE SELECT ON tokens FROM {role}")
        app = create_app(Settings(home=home, mcp=False, background=False), ledger=ledger)
        with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as client:
            auth = {"Authorization": f"Bearer {token}"}
            for _ in range(3):
                r = client.post("/v1/query", json={"subject": "svc.a"}, headers=auth)
                assert r.status_code == 503, r.text
                assert "permission denied for table tokens" in r.json()["detail"]
                assert client.get("/health").status_code in (200, 503)  # answered
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f"REVOKE SELECT ON gardener FROM {role}")
            health = client.get("/health")
            assert health.status_code == 503
            # it said "unavailable: InsufficientPrivilege", the class's name alone
            assert "permission denied for table gardener" in health.json()["store"]
    assert "Traceback" not in caplog.text
    assert "Exception in ASGI application" not in caplog.text


def test_a_read_only_database_answers_the_reads_that_record_nothing(
    pg_url: str, home: Path
) -> None:
    # docs/deploy.md said "reads go on answering": the audited ones are writes, and
    # /health answers 503 meanwhile, so a load balancer takes such a server out.
    with Ledger.init(pg_url) as ledger:
        ledger.assert_one(subject="svc.a", value=1, agent="bot", lifecycle="approved")
        token, _ = ledger.issue_token("oncall", ["admin"], by="admin")
    name = conninfo_to_dict(pg_url)["dbname"]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        with Ledger.open(pg_url) as ledger:
            app = create_app(Settings(home=home, mcp=False, background=False), ledger=ledger)
            auth = {"Authorization": f"Bearer {token}"}
            with TestClient(app, raise_server_exceptions=False) as client:
                assert client.get("/health").status_code == 200
                for path in ("/v1/decisions", "/v1/verify", "/v1/blame/svc.a", "/v1/audit"):
                    assert client.get(path, headers=auth).status_code == 200, path
                diff = client.get("/v1/diff?since=2000-01-01T00:00:00Z", headers=auth)
                assert diff.status_code == 200
                for path, body in (
                    ("/v1/query", {"subject": "svc.a"}),
                    ("/v1/constraints/check", {"plan": "restart svc.a"}),
                ):
                    refused = client.post(path, headers=auth, json=body)
                    assert refused.status_code == 503, path
                    assert "read-only transaction" in refused.json()["detail"]
                health = client.get("/health")
                assert health.status_code == 503
                assert health.json()["store"].startswith("writes failing: PostgreSQL at ")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SET default_transaction_read_only = off")
            admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')


def test_health_counts_no_events_while_the_store_cannot_be_read(pg_url: str, home: Path) -> None:
    # It said "journal_events": 0 while the database was away, as if the journal were empty.
    with Ledger.init(pg_url) as ledger, psycopg.connect(pg_url) as operator:
        ledger.assert_one(subject="svc.a", value=1, agent="bot")
        app = create_app(Settings(home=home, mcp=False, background=False), ledger=ledger)
        with TestClient(app) as client:
            assert client.get("/health").json()["journal_events"] == 1
            operator.execute("LOCK TABLE journal IN ACCESS EXCLUSIVE MODE")
            away = client.get("/health")
            operator.rollback()
            assert away.status_code == 503
            assert away.json()["store"].startswith("unavailable: ")
            assert away.json()["journal_events"] is None
            assert client.get("/health").json()["journal_events"] == 1


def test_a_scrape_and_health_answer_in_time_while_a_table_they_read_is_locked(
    pg_url: str, home: Path
) -> None:
    # The lag and the deliveries were read after the bounded probe, without a bound: a
    # lock on the job queue or the gardener's row held the scrape past Prometheus's 10 s,
    # and every series was lost with it.
    with Ledger.init(pg_url) as ledger, psycopg.connect(pg_url) as operator:
        token, _ = ledger.issue_token("prometheus", ["agent"], by="admin")
        app = create_app(Settings(home=home, mcp=False, background=False), ledger=ledger)
        with TestClient(app) as client:
            for table, health_reads_it in (("jobs", False), ("gardener", True)):
                operator.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                got: list[tuple[str, str]] = []

                def scrape(got: list[tuple[str, str]] = got) -> None:
                    auth = {"Authorization": f"Bearer {token}"}
                    got.append((client.get("/metrics", headers=auth).text,
                                client.get("/health").text))  # fmt: skip

                asking = threading.Thread(target=scrape)
                asking.start()
                asking.join(12)
                answered = not asking.is_alive()
                operator.rollback()  # the lock goes: a scrape still waiting ends
                asking.join(30)
                assert answered, f"held by the lock on {table}"
                text, health = got[0]
                assert _sample(text, "episteme_store_up") == 0
                assert "episteme_gardener_lag_events" not in text
                assert ('"status":"degraded"' in health) is health_reads_it


def test_denials_and_notifications_page_back_with_until(api: Api, clock: ManualClock) -> None:
    # docs/api.md says every list pages back with `until`; these two refused it (400).
    ledger = api.ledger
    for n in range(3):
        clock.advance(TimeDelta(minutes=1))
        ledger.deny(f"bot-{n}", None, "assert", "POST /v1/assertions", "no")
        wrong = ledger.assert_one(subject=f"svc.s{n}", value=n, agent="bot", lifecycle="approved")
        ledger.correct(wrong.id, by="oncall", reason="wrong", value=n + 1)
    Gardener(ledger).run_until_caught_up()
    for path in ("/v1/denials", "/v1/notifications"):
        newest = api.call("GET", path, role="supervisor", params={"limit": 2})
        assert newest.status_code == 200, newest.text
        page = newest.json()
        assert len(page) == 2
        oldest = page[-1]["at"]
        back = api.call("GET", path, role="supervisor", params={"until": oldest, "limit": 100})
        assert back.status_code == 200, back.text
        older = back.json()
        assert all(item["at"] <= oldest for item in older)
        assert page[-1] in older  # inclusive: drop what you have
        assert page[0] not in older
        assert len({str(i) for i in page} | {str(i) for i in older}) == len(
            api.call("GET", path, role="supervisor").json()
        )
        wrong_way = api.call(
            "GET",
            path,
            role="supervisor",
            params={"since": oldest, "until": "2000-01-01T00:00:00Z"},
        )
        assert wrong_way.status_code == 400


def test_a_prefix_may_end_in_a_dot_or_dot_star_at_every_read(api: Api) -> None:
    # docs/ledger.md accepts `auth.jwt.*` and `auth.`; query, diff and blame took them,
    # served and audit refused them (422 over the API, an error in the library).
    api.ledger.assert_one(subject="auth.jwt.alg", value="RS256", agent="a", lifecycle="approved")
    plain = api.call("POST", "/v1/query", json={"subject": "auth.jwt"}).json()["items"]
    for written in ("auth.jwt.*", "auth.jwt."):
        q = api.call("POST", "/v1/query", json={"subject": written})
        assert q.status_code == 200, q.text
        assert q.json()["items"] == plain
        for path, params in (
            ("/v1/served", {"subject": written}),
            ("/v1/audit", {"subject": written}),
            ("/v1/diff", {"prefix": written, "since": "2026-11-01T00:00:00Z"}),
        ):
            r = api.call("GET", path, params=params)
            assert r.status_code == 200, (path, r.text)
        assert api.ledger.served(written)
        assert api.ledger.audit(subject=written)
    refused = api.call("POST", "/v1/query", json={"subject": "auth.*.jwt"})
    assert refused.status_code == 422


def test_the_api_reference_declares_the_link_of_every_list_that_pages(api: Api) -> None:
    # The `Link` header of a full page was sent and documented in api.md, but the
    # OpenAPI document, from which clients are generated, did not declare it.
    document = api.client.get("/openapi.json").json()
    declared = {
        path
        for path, item in document["paths"].items()
        if "Link" in item.get("get", {}).get("responses", {}).get("200", {}).get("headers", {})
    }
    assert declared == {
        "/v1/audit",
        "/v1/served",
        "/v1/decisions",
        "/v1/checks",
        "/v1/denials",
        "/v1/notifications",
        "/v1/webhooks/deliveries",
        "/v1/diagnosis/sessions",
        "/sessions",
        "/v1/diagnosis/incidents",
        "/incidents",
        "/v1/diff",  # one answer, not a list, with a next page when it left some out
    }
    # an approval is accepted (202) and the specialists run after it: declared as sent
    approve = document["paths"]["/v1/diagnosis/approve/{id}"]["post"]["responses"]
    assert "202" in approve
    diff = document["paths"]["/v1/diff"]["get"]["responses"]["200"]
    assert diff["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Diff"}
    page = document["paths"]["/v1/audit"]["get"]["responses"]["200"]
    assert page["content"]["application/json"]["schema"]["type"] == "array"  # still there
    assert 'rel="next"' in page["headers"]["Link"]["description"]


def test_every_list_pages_on_by_position_past_a_shared_time(api: Api) -> None:
    # `until` cannot get past more than `limit` items at one time; `before` (a seq) and,
    # for notifications, `after` (a key) can. The clock stands still here.
    fill(api.ledger)
    lists = {
        "/v1/audit": ({}, "before", "seq"),
        "/v1/served": ({"subject": "svc"}, "before", "seq"),
        "/v1/decisions": ({}, "before", "seq"),
        "/v1/checks": ({}, "before", "seq"),
        "/v1/denials": ({}, "before", "seq"),
        "/v1/notifications": ({}, "after", "key"),
    }
    for path, (params, cursor, field) in lists.items():
        every = api.call("GET", path, role="supervisor", params=params | {"limit": 1000}).json()
        assert len(every) >= 7, path
        assert len({item["at"] for item in every}) == 1, path
        walked: list[dict[str, Any]] = []
        at: dict[str, Any] = {}
        while True:
            got = api.call("GET", path, role="supervisor", params=params | at | {"limit": 3})
            assert got.status_code == 200, got.text
            if not got.json():
                break
            walked += got.json()
            at = {cursor: walked[-1][field]}
            # a full page links to the next, the same query with the cursor; a short one not
            if len(got.json()) == 3:
                link = got.headers["link"]
                assert link.startswith("<?"), link  # relative to the page's own address
                assert link.endswith('>; rel="next"'), link
                assert f"{cursor}={quote(str(at[cursor]), safe='')}" in link, link
                assert "limit=3" in link
                following = api.call("GET", path + link[1:].split(">")[0], role="supervisor")
                assert (
                    following.json()
                    == api.call(
                        "GET", path, role="supervisor", params=params | at | {"limit": 3}
                    ).json()
                )
            else:
                assert "link" not in got.headers
        assert walked == every, path
    for path, bad, status, says in [
        ("/v1/audit", {"before": 0}, 422, "before: Input should be greater than or equal to 1"),
        ("/v1/decisions", {"before": "seq-4"}, 422, "before: Input should be a valid integer"),
        ("/v1/checks", {"before": 2**63}, 422, "before: Input should be less than or equal"),
        ("/v1/notifications", {"after": "no-such-key"}, 400, "no notification has the key"),
    ]:
        refused = api.call("GET", path, role="supervisor", params=bad)
        assert refused.status_code == status, (path, refused.text)
        assert says in refused.json()["detail"], refused.text
