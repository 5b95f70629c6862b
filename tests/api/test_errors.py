"""Bad input gets a 4xx problem that names what to fix, and nothing is written."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from starlette.testclient import TestClient
from whenever import TimeDelta

from episteme.api import Settings, create_app
from episteme.ledger import Ledger
from episteme.timeutil import ManualClock
from tests.api.conftest import Api


def _problem(r: Any, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert set(body) == {"type", "title", "status", "detail", "field"}
    assert body["status"] == status
    assert body["type"].startswith("urn:episteme:problem:")
    for word in words:
        assert word in body["detail"], body
    return body


def _head(api: Api) -> int:
    return api.ledger.store.head()[0]


DROP = object()  # leave the field out
BAD_ASSERTIONS = [
    # body, status, words in the detail, field
    ({"agent": "someone-else"}, 422, ["unknown field 'agent'", "bearer token"], "agent"),
    ({"colour": "red"}, 422, ["unknown field 'colour'"], "colour"),
    ({"value": DROP}, 422, ["value", "Field required"], "value"),
    ({"subject": 5}, 422, ["subject", "valid string"], "subject"),
    ({"confidence": 2}, 422, ["confidence", "less than or equal to 1"], "confidence"),
    ({"subject": "a b"}, 422, ["dotted segments"], "subject"),
    ({"valid_from": "yesterday"}, 422, ["valid_from"], "valid_from"),
    ({"derived_from": ["nope"]}, 404, ["nope"], "derived_from"),
]


@pytest.mark.parametrize(("change", "status", "words", "field"), BAD_ASSERTIONS)
def test_bad_assertions_are_refused_and_nothing_is_written(
    api: Api, change: dict[str, Any], status: int, words: list[str], field: str
) -> None:
    body = {k: v for k, v in ({"subject": "a.b", "value": 1} | change).items() if v is not DROP}
    before = _head(api)
    problem = _problem(api.call("POST", "/v1/assertions", json=body), status, *words)
    assert problem["field"] == field
    assert _head(api) == before


def test_malformed_json_is_a_400(api: Api) -> None:
    r = api.call(
        "POST", "/v1/query", content=b'{"subject": ', headers={"content-type": "application/json"}
    )
    _problem(r, 400, "not valid JSON")


def test_a_batch_is_all_or_nothing(api: Api) -> None:
    before = _head(api)
    good = {"subject": "svc.a", "value": 1}
    r = api.call(
        "POST",
        "/v1/assertions/batch",
        json={"assertions": [good, {"subject": "bad subject", "value": 2}]},
    )
    problem = _problem(r, 422, "dotted segments")
    assert problem["field"] == "assertions.1.subject"
    assert _head(api) == before
    assert api.ledger.audit() == []


def test_oversized_bodies_are_refused_before_reading(api: Api, ledger: Ledger, home: Any) -> None:
    big = {"subject": "a.b", "value": "x" * (1024 * 1024)}
    _problem(
        api.call("POST", "/v1/assertions", json=big),
        413,
        "over 1,048,576 bytes",
        "EPISTEME_MAX_BODY",
    )
    # a chunked body without Content-Length is counted as it arrives
    chunks = (b"x" * 65536 for _ in range(20))
    r = api.call(
        "POST", "/v1/assertions", content=chunks, headers={"content-type": "application/json"}
    )
    _problem(r, 413, "over 1,048,576 bytes")
    assert ledger.store.head()[0] == 4  # the four role tokens, nothing else


def test_the_limit_is_configurable(ledger: Ledger, home: Any) -> None:
    from starlette.testclient import TestClient

    secret, _ = ledger.issue_token("a", ["agent"], by="admin")
    app = create_app(Settings(home=home, mcp=False, max_body=2048), ledger=ledger)
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {secret}"}
        r = client.post(
            "/v1/assertions", json={"subject": "a.b", "value": "x" * 3000}, headers=auth
        )
        assert r.status_code == 413
        assert "2,048 bytes" in r.json()["detail"]
        r = client.post(
            "/v1/assertions", json={"subject": "a.b", "value": "x" * 1000}, headers=auth
        )
        assert r.status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "role", "status", "words"),
    [
        ("GET", "/v1/assertions/ffff", "agent", 404, ["ffff"]),
        ("GET", "/v1/trace/d_nope", "agent", 404, ["d_nope"]),
        ("GET", "/v1/epochs/never", "agent", 404, ["never"]),
        ("POST", "/v1/epochs/never/supersede", "supervisor", 404, ["never"]),
        ("GET", "/v1/nowhere", "agent", 404, ["/v1/nowhere", "/docs"]),
        ("DELETE", "/v1/query", "agent", 405, ["DELETE"]),
        ("GET", "/v1/diff", "agent", 422, ["since", "Field required"]),
        ("GET", "/v1/audit?limit=0", "agent", 422, ["limit"]),
        ("GET", "/v1/diff?since=2026-11-21T00:00:00Z&limit=0", "agent", 422, ["limit"]),
        ("GET", "/v1/diff?since=2026-11-21T00:00:00Z&limit=100001", "agent", 422, ["limit"]),
        ("GET", "/v1/diff?since=2026-11-21T00:00:00Z&before=48213", "agent", 400, ["before"]),
        (
            "GET",
            f"/v1/diff?since=2026-11-21T00:00:00Z&before={'9' * 5000}",
            "agent",
            400,
            ["not a place"],
        ),
        ("GET", "/v1/audit?since=9pm", "agent", 422, ["since"]),
    ],
)
def test_unknown_things_and_bad_parameters(
    api: Api, method: str, path: str, role: str, status: int, words: list[str]
) -> None:
    json = {"reason": "x"} if method == "POST" else None
    _problem(api.call(method, path, role=role, json=json), status, *words)


def test_conflicts_say_what_to_do(api: Api) -> None:
    a = api.call("POST", "/v1/assertions", json={"subject": "auth.alg", "value": "RS256"}).json()
    assert (
        api.call(
            "POST", f"/v1/assertions/{a['id']}/approve", role="supervisor", json={}
        ).status_code
        == 200
    )
    r = api.call("POST", f"/v1/assertions/{a['id']}/reject", role="supervisor", json={})
    _problem(r, 409, "correct")


def test_unknown_revoked_and_expired_tokens(api: Api, clock: ManualClock) -> None:
    r = api.client.get("/v1/whoami", headers={"Authorization": "Bearer ep_not-a-token"})
    _problem(r, 401, "unknown token")
    r = api.client.get("/v1/whoami", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    _problem(r, 401, "no bearer token")

    secret, rec = api.ledger.issue_token(
        "ci-bot", ["agent"], by="admin", expires=clock.now().add(hours=1)
    )
    auth = {"Authorization": f"Bearer {secret}"}
    assert api.client.get("/v1/whoami", headers=auth).json()["name"] == "ci-bot"
    clock.advance(TimeDelta(hours=2))
    _problem(api.client.get("/v1/whoami", headers=auth), 401, f"token {rec.id} of ci-bot expired")

    secret, rec = api.ledger.issue_token("deploy-agent", ["agent"], by="admin")
    api.ledger.revoke_token("deploy-agent", by="admin", reason="leaked in a log")
    r = api.call(
        "POST",
        "/v1/query",
        role=None,
        json={"subject": "auth"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    _problem(r, 401, f"token {rec.id} of deploy-agent revoked")
    # the attempts with known tokens are recorded; the unknown one cannot be attributed
    denied = {(d.principal, d.operation) for d in api.ledger.denials()}
    assert denied == {("ci-bot", "authenticate"), ("deploy-agent", "authenticate")}
    assert api.ledger.audit(agent="deploy-agent") == []


@pytest.mark.parametrize(
    ("content", "bad"),
    [(b'{"subject": ', 400), (b'{"subject": 7, "value": 1}', 422), (b"[]", 422)],
    ids=["malformed", "wrong type", "not an object"],
)
def test_the_token_is_judged_before_the_body(api: Api, content: bytes, bad: int) -> None:
    """A bad body from a caller the route refuses is refused as that caller (and the
    refusal recorded): a stranger learns nothing of the route's schema."""
    revoked, _ = api.ledger.issue_token("old-bot", ["agent"], by="admin")
    api.ledger.revoke_token("old-bot", by="admin", reason="rotated")
    json_type = {"content-type": "application/json"}

    def send(path: str, token: str | None) -> Any:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        return api.client.post(path, content=content, headers=auth | json_type)

    before = len(api.ledger.denials())
    _problem(send("/v1/assertions", None), 401, "no bearer token")
    _problem(send("/v1/assertions", revoked), 401, "revoked")
    _problem(send("/v1/query", revoked), 401, "revoked")
    # an approver may not assert
    _problem(send("/v1/assertions", api.tokens["approver"]), 403)
    _problem(send("/v1/assertions", api.tokens["agent"]), bad)
    refused = sorted((d.principal, d.operation) for d in api.ledger.denials())
    assert len(refused) == before + 3
    assert refused == sorted(
        [("old-bot", "authenticate"), ("old-bot", "authenticate"), ("approver-1", "assert")]
    )


def test_head_answers_as_get_without_the_body(api: Api) -> None:
    """A load balancer may check `HEAD /health`; every GET route takes HEAD."""
    for path, role in (("/health", None), ("/v1/whoami", "agent")):
        got, head = api.call("GET", path, role=role), api.call("HEAD", path, role=role)
        assert (head.status_code, head.content) == (got.status_code, b"")
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == str(len(got.content))
    assert api.call("HEAD", "/v1/whoami", role=None).status_code == 401
    refused = api.call("HEAD", "/v1/query")
    assert (refused.status_code, refused.headers["allow"], refused.content) == (405, "POST", b"")


def test_secrets_never_come_back(api: Api) -> None:
    """A token secret is in the create answer once, and nowhere else: not in lists or errors."""
    r = api.call(
        "POST", "/v1/tokens", role="admin", json={"name": "canary-agent", "roles": ["agent"]}
    )
    assert r.status_code == 201
    canary = r.json()["token"]
    assert canary.startswith("ep_")
    seen = [
        api.call("GET", "/v1/tokens", role="admin").text,
        api.call("GET", "/v1/export", role="admin").text,
        api.call("GET", "/v1/denials", role="supervisor").text,
        api.client.get("/v1/whoami", headers={"Authorization": f"Bearer {canary}x"}).text,
        api.call(
            "POST", "/v1/tokens/canary-agent/revoke", role="admin", json={"reason": "test"}
        ).text,
        api.client.get("/v1/whoami", headers={"Authorization": f"Bearer {canary}"}).text,
    ]
    for text in seen:
        assert canary not in text
    rows = api.ledger.store.conn.execute("SELECT * FROM journal").fetchall()
    assert not any(canary in str(row) for row in rows)


def test_a_refusal_about_an_id_names_the_field_that_holds_it(api: Api) -> None:
    # the lookup knew only that it read an id: "field": "id" for a body's query_ids
    one = {"subject": "a.b", "value": 1}
    cases = [
        (api.call("POST", "/v1/decisions", json={"action": "x", "query_ids": ["q_ffff"]}),
         404, "query_ids"),
        (api.call("POST", "/v1/assertions", json={**one, "derived_from": ["ffff0000"]}),
         404, "derived_from"),
        (api.call("POST", "/v1/assertions/batch", json={"assertions": [one, one]}),
         400, "assertions"),
        (api.call("DELETE", "/v1/webhooks/nope", role="admin"), 404, "name"),
    ]  # fmt: skip
    for r, status, field in cases:
        assert _problem(r, status)["field"] == field, r.text


def test_a_token_pasted_in_the_wrong_place_is_not_quoted_back(api: Api) -> None:
    # a 404 quoted the subject it could not find, and a refused query parameter its name:
    # a secret pasted into either came back whole in the problem
    canary = api.call(
        "POST", "/v1/tokens", role="admin", json={"name": "pasted", "roles": ["agent"]}
    ).json()["token"]
    refusals = [
        api.call("GET", f"/v1/blame/{canary}"),
        api.call("GET", f"/v1/audit?{canary}=1"),
        api.call("GET", f"/v1/trace/{canary}"),
        api.call("POST", "/v1/query", json={"subject": canary}),
        api.call("POST", "/v1/decisions", json={"action": "x", "query_ids": [canary]}),
        api.call("POST", "/v1/assertions", json={"subject": "a.b", "value": 1, canary: 1}),
    ]
    # nor recorded: a query's subject, an assertion's value or a decision's action is
    # journalled, and a token pasted there would stay in the record for good
    recorded = [
        api.call("POST", "/v1/assertions", json={"subject": "a.b", "value": f"key {canary}"}),
        api.call("POST", "/v1/decisions", json={"action": f"used {canary}", "query_ids": []}),
        api.call("POST", "/v1/constraints/check", json={"plan": f"export T={canary}"}),
    ]
    for r in refusals + recorded:
        assert 400 <= r.status_code < 500, r.text
        assert canary[:12] not in r.text, r.request.url
        assert "ep_…" in r.text, r.text
    assert "a bearer token (ep_…): a secret is never recorded" in recorded[0].text
    # a word that holds ep_ (keep_, step_) is no token: recorded, and quoted whole
    step = "ci.step_" + "build_and_push_container_images_to_registry"
    assert len(step.split("ep_")[1]) == 43
    assert api.call("POST", "/v1/assertions", json={"subject": step, "value": 1}).status_code == 201
    assert "svc.keep_alive_timeout" in api.call("GET", "/v1/blame/svc.keep_alive_timeout").text
    rows = api.ledger.store.conn.execute("SELECT * FROM journal").fetchall()
    assert not any(canary[3:15] in str(row) for row in rows)


def test_a_secret_sent_to_revoke_is_never_recorded(api: Api) -> None:
    # A supervisor who found a leaked token and tried to revoke it by its secret (in the
    # path, as the client sent it) was refused, and the refusal recorded the path: the
    # live secret, in the journal for good, in every supervisor's `denials`.
    r = api.call("POST", "/v1/tokens", role="admin", json={"name": "leaky", "roles": ["agent"]})
    canary = r.json()["token"]
    for path, body in (
        (f"/v1/tokens/{canary}/revoke", {"reason": "found in a CI log"}),
        (f"/v1/tokens/{canary[:12]}/revoke", {"reason": "found in a CI log"}),
        ("/v1/tokens/revoke", {"ref": canary, "reason": "found in a CI log"}),
    ):
        refused = api.call("POST", path, role="supervisor", json=body)
        assert refused.status_code == 403, refused.text
        assert canary[:12] not in refused.text
    denials = api.call("GET", "/v1/denials", role="supervisor").json()
    targets = [d["target"] for d in denials[:3]]
    assert targets == [
        "POST /v1/tokens/revoke",
        "POST /v1/tokens/ep_…/revoke",
        "POST /v1/tokens/ep_…/revoke",
    ]
    journal = api.call("GET", "/v1/export", role="admin").text
    assert canary[:12] not in journal
    # an admin is told to send it in a body, which no proxy or log keeps, and does
    in_path = api.call(
        "POST", f"/v1/tokens/{canary}/revoke", role="admin", json={"reason": "leaked"}
    )
    assert in_path.status_code == 400
    assert "send it as `ref` in the body of POST /v1/tokens/revoke" in in_path.json()["detail"]
    assert canary[:12] not in in_path.text
    # with no body too: the missing body was named first, and a caller who added one sent
    # the secret in a URL again
    bare = api.call("POST", f"/v1/tokens/{canary}/revoke", role="admin")
    assert (bare.status_code, bare.json()["detail"]) == (400, in_path.json()["detail"])
    done = api.call(
        "POST", "/v1/tokens/revoke", role="admin", json={"ref": canary, "reason": "leaked"}
    )
    assert done.status_code == 200, done.text
    assert [t["principal"] for t in done.json()] == ["leaky"]
    assert canary not in done.text
    again = api.client.get("/v1/whoami", headers={"Authorization": f"Bearer {canary}"})
    assert again.status_code == 401


def test_an_error_quotes_a_long_value_by_its_start_and_length(api: Api) -> None:
    # The whole value came back in the error (500,127 characters to a model over MCP).
    for value, words in (
        ("x" * 3_900 + "\u0000", "(3,901 characters): text may not contain the NUL"),
        (10**3000, "(a number of 3,001 digits)"),
    ):
        raw = (
            b'{"subject": "svc.a", "value": '
            + (orjson.dumps(value) if isinstance(value, str) else str(value).encode())
            + b"}"
        )
        r = api.call(
            "POST", "/v1/assertions", content=raw, headers={"Content-Type": "application/json"}
        )
        assert r.status_code in (400, 422), r.text
        detail = r.json()["detail"]
        assert words in detail
        assert len(detail) < 300


def test_unknown_and_repeated_query_parameters_are_refused(api: Api) -> None:
    """A typo must not widen an answer: `agnet=` would otherwise list every agent's reads."""
    _problem(
        api.call("GET", "/v1/audit", params={"agnet": "deploy-agent"}), 400, "'agnet'", "agent"
    )
    r = api.call("GET", "/v1/audit?agent=a&agent=b")
    _problem(r, 400, "'agent' once")
    # a stranger is told to authenticate first, not what the route takes
    _problem(api.call("GET", "/v1/audit", role=None, params={"agnet": "x"}), 401)


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/v1/assertions", {"subject": "a.b", "value": "\ud800"}, ["valid Unicode"]),
        ("/v1/assertions", {"subject": "a.b", "value": 1, "evidence": "\ud800"}, ["unicode"]),
        ("/v1/query", {"subject": "a.b", "context": {"k": "\udfff"}}, ["context", "Unicode"]),
        ("/v1/decisions", {"action": "x", "context": {"\ud800": 1}}, ["context", "Unicode"]),
    ],
)
def test_text_that_is_not_unicode_is_a_400(
    api: Api, path: str, body: dict[str, Any], words: list[str]
) -> None:
    import json as stdjson

    before = _head(api)
    raw = stdjson.dumps(body).encode()  # \\ud800 escapes: valid JSON, not valid Unicode
    r = api.call("POST", path, content=raw, headers={"content-type": "application/json"})
    _problem(r, 422 if "evidence" in body else 400, *words)
    assert _head(api) == before


def test_deep_values_are_refused(api: Api) -> None:
    value: Any = 1
    for _ in range(100):
        value = [value]
    r = api.call("POST", "/v1/assertions", json={"subject": "a.b", "value": value})
    assert r.status_code in (400, 422)
    assert "64 levels" in r.json()["detail"]


@pytest.mark.parametrize("depth", [300, 900])
@pytest.mark.parametrize(
    ("path", "field", "named"),
    [("/v1/assertions", "value", "value"), ("/v1/query", "context", "context.k")],
)
def test_values_past_the_validators_depth_say_the_limit(
    api: Api, depth: int, path: str, field: str, named: str
) -> None:
    """Deeper than pydantic validates (255 levels), shallower than JSON parsing stops at."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    body = {"subject": "a.b", field: value if field == "value" else {"k": value}}
    before = _head(api)
    got = _problem(api.call("POST", path, json=body), 422, f"{named}: values may nest at most")
    assert got["field"] == named
    assert _head(api) == before


def test_an_error_about_a_secret_field_does_not_show_it(api: Api) -> None:
    """A webhook's signing secret or credentialed URL is refused without being echoed."""
    canary = "s3cr3t-canary-" + "x" * 300
    url = "http://user:PW-canary@hooks.example/" + "p" * 2100
    signed = [  # a credential in the query, as services sign their hook addresses
        "https://hooks.example/x?token=canary-1",
        "https://hooks.example/x?a=1&Sig=canary-2",
        "https://fn.example/api/hook?code=canary-3",
        "https://hooks.example/x?api_key=canary-4&api_key=canary-5",
        "https://hooks.example/x#token=canary-6",  # a fragment is never sent
        "https://hooks.slack.com/services/T0/B0/canary-7",  # the path is the secret
        "https://discord.com/api/webhooks/1/canary-8",
    ]
    for body in (
        {"url": "http://127.0.0.1:1/x", "secret": canary},
        {"url": url},
        *({"url": u} for u in signed),
    ):
        r = api.call("PUT", "/v1/webhooks/wx", role="admin", json=body)
        assert r.status_code in (400, 422), r.text  # the schema's refusal, or the spec's
        assert "canary" not in r.text
    r = api.call("PUT", "/v1/webhooks/wx", role="admin", json={"url": signed[3]})
    assert "carries a credential (api_key) is refused" in r.json()["detail"]
    for url, words in [
        ("http://exa mple.com/in", "give an http:// or https:// URL"),  # could never connect
        ("http://127.0.0.1:99999/in", "port 99999 is not one (1 to 65535)"),
        ("https://hooks.slack.com/services/T0/B0/x", "its path is the secret"),
        ("https://hooks.example/x#ops", "fragment (#…) is never sent"),
    ]:
        r = api.call("PUT", "/v1/webhooks/wx", role="admin", json={"url": url})
        assert words in _problem(r, 400, words)["detail"]
    assert api.call("GET", "/v1/webhooks", role="admin").json() == []
    # a query of plain words is no secret, even where a credential's word is inside one
    plain = {"url": "https://hooks.example/x?channel=oncall&encoding=json&design=1&author=a"}
    assert api.call("PUT", "/v1/webhooks/wx", role="admin", json=plain).status_code == 200
    # a long value elsewhere is measured, not echoed
    r = api.call("POST", "/v1/query", json={"subject": "a.b", "lens": "canary" * 50})
    assert "canary" not in _problem(r, 422, "lens", "(got 300 characters)")["detail"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"subject": "a.b", "value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", ["nests"]),
        (b'{"subject": "a.b", "value": "caf\xe9"}', ["not UTF-8"]),
        (b'{"subject": "a.b", "value": 1' + b"0" * 5000 + b"}", ["too many digits"]),
    ],
)
def test_a_body_json_cannot_read_says_why(api: Api, content: bytes, words: list[str]) -> None:
    before = _head(api)
    r = api.call(
        "POST", "/v1/assertions", content=content, headers={"content-type": "application/json"}
    )
    assert _problem(r, 400, *words)["title"] == "Malformed JSON"
    assert _head(api) == before


@pytest.mark.parametrize("media", ["application/x-www-form-urlencoded", "text/plain", None])
@pytest.mark.parametrize("path", ["/v1/assertions", "/v1/query"])
def test_a_body_not_sent_as_json_is_a_415(api: Api, path: str, media: str | None) -> None:
    # what curl -d sends without -H 'Content-Type: application/json'
    before = _head(api)
    headers = {"content-type": media} if media else {}
    # a body the route would take as JSON (the query's has no value: the fast path's case)
    body = b'{"subject": "a.b"}' if path == "/v1/query" else b'{"subject": "a.b", "value": 1}'
    r = api.call("POST", path, content=body, headers=headers)
    _problem(r, 415, "Content-Type: application/json")
    assert _head(api) == before


@pytest.mark.parametrize(
    ("method", "path", "body", "breaks"),
    [("GET", "/v1/lenses", None, "lenses"), ("POST", "/v1/query", {"subject": "a.b"}, "query")],
)
def test_an_unexpected_error_is_a_500_logged_once(
    api: Api,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    breaks: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On a real server: one traceback in the log, nothing of it in the answer."""
    from tests.integration.server import live_server

    def bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("canary-bug")

    monkeypatch.setattr(api.ledger, breaks, bug)
    server_log = logging.getLogger("uvicorn.error")  # it does not reach the root logger
    with caplog.at_level(logging.WARNING), live_server(api.app) as url:
        server_log.addHandler(caplog.handler)  # after the server set up its logging
        try:
            headers = {"Authorization": f"Bearer {api.tokens['agent']}"}
            r = httpx.request(method, url + path, json=body, headers=headers, timeout=10)
        finally:
            server_log.removeHandler(caplog.handler)
    _problem(r, 500, "unexpected server error: it was logged")
    assert "canary" not in r.text
    logged = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert [rec.getMessage() for rec in logged] == [f"unexpected error on {method} {path}"]
    assert logged[0].exc_info is not None


@pytest.mark.parametrize("path", ["/v1/assertions", "/v1/query"])
def test_a_body_that_stops_arriving_is_a_408(
    api: Api, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Content-Length that promises more than is sent must not hold the connection for
    ever (on a real server: the in-process client cannot send a short body)."""
    from episteme.api import deps
    from tests.integration.server import live_server

    monkeypatch.setattr(deps, "BODY_WAIT_S", 0.3)
    before = _head(api)
    body = b'{"subject": "a.b"'
    with live_server(api.app) as url:
        where = urlsplit(url)
        conn = socket.create_connection((where.hostname, where.port), timeout=10)
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {api.tokens['agent']}\r\n"
            f"Content-Length: {len(body) + 50}\r\n\r\n".encode()
        )
        time.sleep(0.1)  # the wait is counted from the last part that came
        conn.sendall(body)
        sent = time.monotonic()
        answer = b""
        while chunk := conn.recv(65536):  # to the end of the connection
            answer += chunk
        ended = time.monotonic() - sent
        conn.close()
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"application/problem+json" in head
    assert b"stopped arriving" in content
    # closed with the answer: it was held for the server's keep-alive wait (5 s) more
    assert b"\r\nconnection: close" in head.lower()
    # not before the wait (less a little: the server's clock starts when the body came,
    # which can be a moment before this side's clock read after sending it)
    assert 0.25 <= ended < 2.0, ended
    assert _head(api) == before


def test_a_request_without_a_body_is_not_refused_for_its_content_encoding(api: Api) -> None:
    # `Content-Encoding: gzip` on a GET (a client that sets it on every request) was a 415
    # "the request body is compressed", for a body that did not exist.
    for path in ("/health", "/v1/whoami"):
        r = api.call("GET", path, headers={"content-encoding": "gzip"})
        assert r.status_code == 200, r.text


def test_an_allow_header_lists_head_wherever_get_is(api: Api) -> None:
    r = api.call("DELETE", "/v1/whoami")
    _problem(r, 405, "use GET, HEAD")
    assert r.headers["allow"] == "GET, HEAD"
    assert api.call("HEAD", "/v1/whoami").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "kw"),
    [
        ("GET", "/v1/audit", {"params": {"since": "9999-12-31T23:59:59-01:00"}}),
        ("POST", "/v1/query", {"json": {"subject": "a", "at": "0001-01-01T00:00:00+01:00"}}),
    ],
)
def test_a_time_out_of_range_says_what_the_range_is(
    api: Api, method: str, path: str, kw: dict[str, Any]
) -> None:
    # whenever's "value or calculation out of range", where the CLI and MCP said the range
    r = api.call(method, path, **kw)
    _problem(r, 422, "out of range: times run from year 1 to 9999, in UTC")


def test_a_name_that_imitates_a_reserved_one_in_other_letters_is_refused(api: Api) -> None:
    r = api.call(
        "POST", "/v1/tokens", role="admin", json={"name": "LOCAL:root", "roles": ["agent"]}
    )
    _problem(r, 400, "local:… names the operating-system users")
    spec = {"description": "approved only", "lifecycles": ["proposed", "approved"]}
    r = api.call("PUT", "/v1/lenses/Approved", role="supervisor", json=spec)
    _problem(r, 409, "'Approved' is a built-in lens's name")


@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("path", ["/v1/assertions", "/v1/query"])
def test_a_compressed_body_is_a_415_saying_so(api: Api, path: str, compressed: bool) -> None:
    # (a body labelled compressed that is plain JSON is refused too: the query's
    # shortcut, which reads the body itself, used to answer it)
    import gzip

    before = _head(api)
    body = b'{"subject": "a.b"}' if path == "/v1/query" else b'{"subject": "a.b", "value": 1}'
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    r = api.call("POST", path, content=gzip.compress(body) if compressed else body, headers=headers)
    _problem(r, 415, "compressed (gzip): send it uncompressed")
    assert _head(api) == before


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"lifecycle": "rejected"}, "lifecycle", "Input should be 'proposed' or 'approved'"),
        (
            {"valid_from": "2026-01-02T00:00:00Z", "valid_to": "2026-01-01T00:00:00Z"},
            "valid_to",
            "valid_to must be after valid_from",
        ),
    ],
)
def test_a_refused_assertion_names_its_field_plainly(
    api: Api, body: dict[str, Any], field: str, words: str
) -> None:
    r = api.call("POST", "/v1/assertions", json={"subject": "a.b", "value": 1} | body)
    problem = _problem(r, r.status_code, words)
    assert 400 <= r.status_code < 500
    assert problem["field"] == field
    assert "<" not in problem["detail"]


@pytest.mark.parametrize("path", ["/v1/assertions", "/v1/query"])
def test_the_first_content_type_is_the_one_read(api: Api, path: str) -> None:
    before = _head(api)
    body = b'{"subject": "a.b"}' if path == "/v1/query" else b'{"subject": "a.b", "value": 1}'
    headers = [("content-type", "text/plain"), ("content-type", "application/json")]
    r = api.client.request(
        "POST", path, content=body, headers=[*api.auth("agent").items(), *headers]
    )
    _problem(r, 415, "Content-Type: application/json")
    assert _head(api) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/assertions", {"subject": "a.b", "value": "a\u0000"}, "value"),
        ("/v1/assertions", {"subject": "a.b", "value": 1, "source": "\u0000"}, "source"),
        ("/v1/query", {"subject": "a.b", "context": {"k": "\u0000"}}, "context"),
        ("/v1/decisions", {"action": "ship\u0000", "query_ids": []}, "action"),
    ],
)
def test_a_nul_character_is_a_400_naming_the_field(
    api: Api, path: str, body: dict[str, Any], field: str
) -> None:
    before = _head(api)
    problem = _problem(api.call("POST", path, json=body), 400, "NUL character")
    assert problem["field"] == field
    assert _head(api) == before


@pytest.mark.parametrize(
    ("method", "path", "role", "body", "status", "words", "field"),
    [
        (
            "GET",
            "/v1/diff?since=2026-11-22T00:00:00Z&until=2026-11-21T00:00:00Z",
            "agent",
            None,
            400,
            ["the end of the window is before its start"],
            "until",
        ),
        ("POST", "/v1/query", "agent", {"lens": "latest"}, 400, ["words to search for"], "subject"),
        ("POST", "/v1/query", "agent", {"text": "!?"}, 400, ["no words to search for"], "text"),
        ("POST", "/v1/assertions/{id}/correct", "supervisor", {"reason": " "}, 400, [], "reason"),
        (
            "POST",
            "/v1/constraints",
            "supervisor",
            {"scope": "code", "reason": "r"},
            400,
            [],
            "forbid",
        ),
        (
            "POST",
            "/v1/constraints",
            "supervisor",
            {"scope": "code", "reason": "r", "items": [" "]},
            400,
            ["an empty value among the identifiers to forbid"],
            "items",
        ),
        ("POST", "/v1/assertions/{id}/approve", "agent", {}, 403, ["the supervisor role"], None),
    ],
)
def test_a_refusal_speaks_the_apis_words_not_the_commands(
    api: Api,
    method: str,
    path: str,
    role: str,
    body: dict[str, Any] | None,
    status: int,
    words: list[str],
    field: str | None,
) -> None:
    """A message the library raises reaches API callers, who have fields, not flags."""
    added = api.call("POST", "/v1/assertions", json={"subject": "svc.a", "value": 1}).json()
    before = _head(api)
    r = api.call(method, path.format(id=added["id"]), role=role, json=body)
    problem = _problem(r, status, *words)
    assert "--" not in problem["detail"], problem
    assert problem["field"] == field
    assert _head(api) == before + (1 if status == 403 else 0)  # a refusal is recorded


def test_a_post_without_a_body_is_told_so(api: Api) -> None:
    # It said "Field required" and named no field; a body whose fields are all optional
    # (rebuild's) may be left out.
    a = api.ledger.assert_one(subject="svc.a", value=1, agent="bot")
    for path, role in [
        ("/v1/query", "agent"),
        (f"/v1/assertions/{a.id}/correct", "supervisor"),
        ("/v1/tokens/t_abcdef/revoke", "admin"),
    ]:
        r = api.call("POST", path, role=role)
        _problem(r, 422, "the request body is missing: send a JSON object")
        assert r.json()["field"] == "body"
    rebuilt = api.call("POST", "/v1/rebuild", role="admin")
    assert rebuilt.status_code == 200, rebuilt.text
    assert rebuilt.json()["repaired"] is False


def test_two_authorization_headers_are_refused_at_every_door(
    api: Api, ledger: Ledger, home: Path
) -> None:
    # The API and the query shortcut read the first, /mcp the last: one request acted
    # as two principals, depending on the door.
    app = create_app(Settings(home=home), ledger=ledger)  # with /mcp
    two = [
        ("Authorization", "Bearer ep_bogus"),
        ("Authorization", f"Bearer {api.tokens['agent']}"),
    ]
    with TestClient(app) as client:
        for method, path, body in (
            ("GET", "/v1/whoami", None),
            ("POST", "/v1/query", {"subject": "auth"}),
            ("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        ):
            headers = [*two, ("Accept", "application/json, text/event-stream")]
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == 400, (path, r.text)
            assert "2 Authorization headers: send one" in r.text
