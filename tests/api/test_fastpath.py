"""`POST /v1/query` without the framework answers as the route does, and leaves to it
everything but the plain case (both stores).

The same requests go to two apps over one ledger: one with the fast path (the default)
and one with `fast_query=False`. A counter on `deps.known_query`, which every route's
authorization runs, tells which of the two answered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from episteme.api import Settings, create_app, deps
from episteme.benchmark.asgi import post
from episteme.ledger import Ledger
from episteme.ledger.gardener import Gardener
from tests.api.conftest import Api

VOLATILE = {"query_id", "asked_at", "latency_us"}


@pytest.fixture
def framework(ledger: Ledger, home: Any) -> Iterator[TestClient]:
    app = create_app(
        Settings(home=home, mcp=False, background=False, fast_query=False), ledger=ledger
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def framework_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = deps.known_query

    def counted(request: Any) -> None:
        calls.append(request.url.path)
        real(request)

    monkeypatch.setattr(deps, "known_query", counted)
    return calls


def _seed(ledger: Ledger) -> None:
    ledger.assert_one(
        subject="auth.jwt.algorithm", value="RS256", agent="seed", lifecycle="approved"
    )
    ledger.assert_one(subject="auth.jwt.algorithm", value="ES256", agent="deploy-agent")
    ledger.assert_one(
        subject="auth.jwt.ttl_s", value=900, agent="seed", lifecycle="approved", confidence=0.3
    )


def _stable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in VOLATILE}


PLAIN: list[dict[str, Any]] = [
    {"subject": "auth.jwt.algorithm"},
    {"subject": "auth", "lens": "approved", "context": {"task": "deploy", "n": [1, 2]}},
    {"subject": "auth", "lens": "latest"},
    {"subject": "auth.jwt", "lens": "consensus"},
    {"subject": "auth", "lens": "all", "at": "2020-01-01T00:00:00Z"},
    {"text": "RS256", "lens": "approved"},
    {"subject": "nothing.here"},
]


@pytest.mark.parametrize("body", PLAIN, ids=lambda b: ",".join(sorted(b)))
def test_plain_queries_answer_as_the_route_does(
    api: Api, framework: TestClient, framework_calls: list[str], body: dict[str, Any]
) -> None:
    _seed(api.ledger)
    # the app's gardener turns the approvals into trust in the background: caught up
    # first, so that both reads rank with the same trust (the consensus case)
    Gardener(api.ledger).run_until_caught_up()
    fast = api.call("POST", "/v1/query", json=body)
    assert framework_calls == []  # answered before the framework
    slow = framework.post("/v1/query", json=body, headers=api.auth("agent"))
    assert framework_calls == ["/v1/query"]
    assert (fast.status_code, fast.headers["content-type"]) == (200, "application/json")
    assert (slow.status_code, slow.headers["content-type"]) == (200, "application/json")
    assert _stable(fast.json()) == _stable(slow.json())
    # both audited, as the token's principal, with the caller's context
    reads = api.ledger.audit(agent="agent-1")
    assert [r.id for r in reads] == [slow.json()["query_id"], fast.json()["query_id"]]
    assert reads[0].context == reads[1].context == body.get("context", {})


BAD: list[tuple[str, dict[str, Any]]] = [
    ("malformed json", {"content": b'{"subject": "auth"', "role": "agent"}),
    ("not an object", {"content": b'["auth"]', "role": "agent"}),
    ("unknown field", {"json": {"subject": "auth", "lenz": "all"}, "role": "agent"}),
    ("wrong type", {"json": {"subject": 7}, "role": "agent"}),
    ("bad subject", {"json": {"subject": "Auth JWT"}, "role": "agent"}),
    ("unknown lens", {"json": {"subject": "auth", "lens": "nope"}, "role": "agent"}),
    ("empty body", {"content": b"", "role": "agent"}),
    ("no token", {"json": {"subject": "auth"}, "role": None}),
    ("not bearer", {"json": {"subject": "auth"}, "role": None, "auth": "Basic dXNlcjpw"}),
    ("unknown token", {"json": {"subject": "auth"}, "role": None, "auth": "Bearer ep_x"}),
    ("query parameter", {"json": {"subject": "auth"}, "role": "agent", "params": {"a": "1"}}),
    ("text body", {"content": b'{"subject": "auth"}', "role": "agent", "type": "text/plain"}),
    # orjson would read it as a float, and the route's parser keeps it exact
    (
        "integer past 64 bits",
        {"json": {"subject": "auth", "context": {"n": 2**64}}, "role": "agent"},
    ),
]


@pytest.mark.parametrize(("case", "request_"), BAD, ids=[c for c, _ in BAD])
def test_what_it_does_not_take_is_answered_as_the_route_does(
    api: Api, framework: TestClient, case: str, request_: dict[str, Any]
) -> None:
    _seed(api.ledger)
    kw = dict(request_)
    headers = api.auth(kw.pop("role"))
    if "auth" in kw:
        headers["Authorization"] = kw.pop("auth")
    if "type" in kw:
        headers["content-type"] = kw.pop("type")
    elif "content" in kw:
        headers["content-type"] = "application/json"
    before = api.ledger.store.head()[0]
    fast = api.client.post("/v1/query", headers=headers, **kw)
    slow = framework.post("/v1/query", headers=headers, **kw)
    assert 400 <= fast.status_code < 500, fast.text
    assert (fast.status_code, fast.headers["content-type"]) == (
        slow.status_code,
        slow.headers["content-type"],
    )
    assert fast.json() == slow.json()
    assert api.ledger.audit(agent="agent-1") == []  # nothing served
    assert api.ledger.store.head()[0] == before  # and nothing else written


def test_a_refused_token_is_recorded_once(api: Api, framework_calls: list[str]) -> None:
    """The fast path does not record refusals: it hands them to the route, which does."""
    secret, _ = api.ledger.issue_token("deploy-agent", ["agent"], by="admin")
    api.ledger.revoke_token("deploy-agent", by="admin", reason="leaked in a log")
    r = api.client.post(
        "/v1/query", json={"subject": "auth"}, headers={"Authorization": f"Bearer {secret}"}
    )
    assert r.status_code == 401
    assert framework_calls == []  # refused in authentication, before the query check
    assert [(d.principal, d.operation) for d in api.ledger.denials()] == [
        ("deploy-agent", "authenticate")
    ]


def test_a_body_in_pieces_and_one_over_the_limit(ledger: Ledger, home: Any) -> None:
    """A body read in several messages is whole before it is parsed; one that grows past
    the limit without declaring its length is refused with 413, and nothing is served."""
    _seed(ledger)
    app = create_app(Settings(home=home, mcp=False, background=False, max_body=2048), ledger=ledger)
    secret, _ = ledger.issue_token("deploy-agent", ["agent"], by="admin")
    headers = [
        (b"host", b"testserver"),
        (b"authorization", f"Bearer {secret}".encode()),
        (b"content-type", b"application/json"),
    ]

    def send(pieces: list[bytes]) -> tuple[int, bytes]:
        return asyncio.run(post(app, "/v1/query", headers, pieces))

    whole = orjson.dumps({"subject": "auth.jwt", "context": {"ticket": "OPS-1"}})
    status, body = send([whole[:5], whole[5:9], whole[9:]])
    assert status == 200, body
    assert orjson.loads(body)["subject"] == "auth.jwt"
    big = orjson.dumps({"subject": "auth", "context": {"pad": "x" * 3000}})
    status, body = send([big[:1000], big[1000:2000], big[2000:]])
    assert status == 413, body
    assert "EPISTEME_MAX_BODY" in orjson.loads(body)["detail"]
    assert [r.context for r in ledger.audit(agent="deploy-agent")] == [{"ticket": "OPS-1"}]


def test_its_latency_is_filed_under_the_route(api: Api) -> None:
    _seed(api.ledger)
    for _ in range(3):
        assert api.call("POST", "/v1/query", json={"subject": "auth"}).status_code == 200
    text = api.call("GET", "/metrics").text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith("episteme_http_request_duration_seconds_count")
        and 'route="/v1/query"' in x
        and 'status="200"' in x
    )
    assert float(line.rsplit(" ", 1)[1]) == 3
    assert 'episteme_queries_total{lens="approved"} 3.0' in text


_ODD = st.sampled_from(
    [
        "auth",
        "auth.jwt.algorithm",
        "auth.*",
        "auth.",
        "",
        " ",
        "RS256",
        "!!",
        "a\x00b",
        "approved",
        "latest",
        "consensus",
        "nope",
        "2020-01-01T00:00:00Z",
        "6h",
        "9999-12-31T23:59:59Z",
        "x" * 600,
    ]
)
_JSON = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | _ODD
_VALUES = _JSON | st.lists(_JSON, max_size=2) | st.dictionaries(_ODD, _JSON, max_size=2)
# bodies of the right shape, with an odd value now and then (one in four), two draws in
# three; any keys and values, the third


def _mostly(*good: str) -> st.SearchStrategy[Any]:
    return st.integers(0, 3).flatmap(lambda n: _ODD if n == 0 else st.sampled_from(good))


_PLAUSIBLE = st.fixed_dictionaries(
    {},
    optional={
        "subject": _mostly("auth", "auth.jwt", "auth.*", "nothing.here"),
        "text": _mostly("RS256", "jwt algorithm"),
        "lens": _mostly("approved", "latest", "consensus", "all"),
        "at": _mostly("2026-11-21T21:00:00Z", "2026-11-22T02:00:00+01:00"),
        "context": st.integers(0, 3).flatmap(
            lambda n: (
                st.dictionaries(_ODD, _JSON, max_size=2)
                if n == 0
                else st.fixed_dictionaries({"task": st.sampled_from(["deploy", "é"])})
            )
        ),
    },
)
_BODIES = (
    _PLAUSIBLE
    | _PLAUSIBLE
    | st.dictionaries(
        st.sampled_from(["subject", "text", "lens", "at", "context", "lenz"]), _VALUES, max_size=4
    )
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_BODIES)
def test_any_body_is_answered_as_the_route_does(
    api: Api, framework: TestClient, body: dict[str, Any]
) -> None:
    if not api.ledger.answer("auth", lens="all").items:  # once per ledger
        _seed(api.ledger)
        # trust caught up first, as in the plain cases: the app's own gardener would
        # otherwise change a consensus answer between the two reads
        Gardener(api.ledger).run_until_caught_up()
    # as Python writes it: integers past 64 bits, and NaN and Infinity (not JSON) too
    content = json.dumps(body).encode()
    headers = api.auth("agent") | {"content-type": "application/json"}
    fast = api.client.post("/v1/query", headers=headers, content=content)
    slow = framework.post("/v1/query", headers=headers, content=content)
    assert fast.status_code < 500, fast.text
    assert (fast.status_code, fast.headers["content-type"]) == (
        slow.status_code,
        slow.headers["content-type"],
    ), (fast.text, slow.text)
    if fast.status_code == 200:
        assert _stable(fast.json()) == _stable(slow.json())
    else:
        assert fast.json() == slow.json()
