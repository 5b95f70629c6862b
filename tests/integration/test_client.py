"""The Python client against a real server: the library's models back, its errors back.

One uvicorn server per test (in a thread, on a free port) over a fresh ledger; the
sync and async clients talk to it over TCP. The error mapping for statuses a healthy
server does not produce is checked with httpx's mock transport, a plain function.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from whenever import Instant, OffsetDateTime, TimeDelta

from episteme.api import Settings, create_app
from episteme.client import AsyncClient, Client, EpochView
from episteme.errors import (
    BodyStalled,
    Conflict,
    EpistemeError,
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotFound,
    StoreUnavailable,
    TooLarge,
    Unauthenticated,
    Unsupported,
)
from episteme.ledger import Ledger, LensSpec, Lifecycle
from episteme.ledger.gardener import Gardener
from episteme.ledger.webhooks import WebhookSpec
from episteme.timeutil import ManualClock
from tests.integration.server import live_server
from tests.ledger.test_paging import fill

SUBJECT = "auth.jwt.algorithm"
PLAN = "set auth.jwt.algorithm to ES256 in the gateway config"


@dataclass
class Server:
    url: str
    ledger: Ledger
    tokens: dict[str, str]

    def client(self, who: str) -> Client:
        return Client(self.url, self.tokens[who])

    def aclient(self, who: str) -> AsyncClient:
        return AsyncClient(self.url, self.tokens[who])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server(ledger: Ledger, home: Path) -> Iterator[Server]:
    app = create_app(Settings(home=home, mcp=False, max_body=16 * 1024), ledger=ledger)
    tokens = {
        who: ledger.issue_token(who, [role], by="root")[0]
        for who, role in [("deploy-bot", "agent"), ("alice", "supervisor"), ("root", "admin")]
    }
    with live_server(app) as url:
        yield Server(url, ledger, tokens)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- the ES256 story -------------------------------------------------------------------


def test_es256_story_sync(server: Server, clock: ManualClock) -> None:
    with server.client("deploy-bot") as agent, server.client("alice") as alice:
        assert agent.whoami().name == "deploy-bot"
        wrong = agent.add_assertion(
            SUBJECT, "ES256", confidence=0.9, source="runbook://auth/jwt", epoch="auth-docs"
        )
        assert wrong.lifecycle is Lifecycle.PROPOSED
        assert wrong.agent == "deploy-bot"  # from the token, not the request
        (other,) = agent.add_assertions([{"subject": SUBJECT, "value": "RS256"}])

        assert alice.approve(wrong.id, reason="looks right").lifecycle is Lifecycle.APPROVED
        answer = agent.query(SUBJECT, context={"task": "deploy"})
        assert [i.assertion.value for i in answer.items] == ["ES256"]
        assert answer.hidden.count == 1
        assert answer.hidden.by_lifecycle == {"proposed": 1}
        assert answer.hidden.ids == [other.id]
        assert answer.summary == "1 proposed assertion hidden"
        assert answer.query_id is not None

        decision = agent.decide("deployed auth config v42", [answer.query_id])
        trace = agent.trace(decision.id)
        assert trace.decision == decision
        assert [q.id for q in trace.queries] == [answer.query_id]
        assert [a.id for a in trace.assertions] == [wrong.id]
        assert trace.agents == ["deploy-bot"]
        assert trace.epochs == ["auth-docs"]

        clock.advance(TimeDelta(minutes=5))
        fixed = alice.correct(
            wrong.id, reason="production verifies RS256", value="RS256", forbid=True
        )
        assert fixed.corrected.lifecycle is Lifecycle.REJECTED
        assert fixed.replacement is not None
        assert fixed.replacement.value == "RS256"
        assert fixed.constraint is not None
        assert fixed.constraint.forbid == ["ES256"]

        result = agent.check(PLAN, [SUBJECT])
        assert len(result.violations) == 1
        assert result.violations[0].constraint.id == fixed.constraint.id
        assert agent.check("rotate the signing key", [SUBJECT]).violations == []
        after = agent.query(SUBJECT)
        assert [i.assertion.value for i in after.items] == ["RS256"]

        # the gardener turns the correction into lower trust; a constraint stops the next agent
        Gardener(server.ledger).run_until_caught_up()
        [bot] = alice.trust(agent="deploy-bot", topic="auth")
        assert bot.score < 0.5
        assert {m.role for m in bot.moves} >= {"asserted", "relied"}
        made = alice.add_constraint(
            "code.http_client", forbid=["node-fetch"], prefer="axios", reason="leaks sockets"
        )
        assert made.constraint.created_by == "alice"
        assert made.state == "active"
        stopped = agent.check("use fetch", ["code.http_client"], items=["node-fetch"])
        assert stopped.agent == "deploy-bot"
        assert [v.constraint.prefer for v in stopped.violations] == ["axios"]
        assert [c.id for c in agent.checks(agent="deploy-bot", limit=1)] == [stopped.check_id]
        assert len(agent.constraints()) == 2
        forced = alice.add_constraint(tags=["deploy"], patterns=["--force"], reason="no canary")
        assert forced.constraint.scope is None
        deploy = agent.check("kubectl apply --force", tags=["deploy"])
        # the deploy constraint, and those on subjects: the check named none
        assert (deploy.tags, deploy.checked, deploy.ok) == (["deploy"], 3, False)
        assert [c.constraint.id for c in agent.constraints(tags=["deploy"])] == [
            forced.constraint.id
        ]
        assert agent.constraints("code", ["deploy"])[0].constraint.prefer == "axios"
        with pytest.raises(Forbidden):  # an agent may not retire one
            agent.retire_constraint(forced.constraint.id, reason="in my way")
        retired = alice.retire_constraint(forced.constraint.id[:10], reason="canary in CI")
        assert (retired.state, retired.constraint.retired_by) == ("retired", "alice")
        assert agent.check("kubectl apply --force", tags=["deploy"]).checked == 2
        assert [s.state for s in agent.constraints(tags=["deploy"], retired=True)] == ["retired"]
        with pytest.raises(InvalidInput, match="tags is a list"):
            agent.check("plan", tags="deploy")
        assert agent.conflicts() == []

        impact = alice.impact(wrong.id)
        assert [d.id for d in impact.decisions] == [decision.id]
        assert impact.agents == {"deploy-bot": 1}
        assert [b.assertion.id for b in alice.blame(wrong.id)] == [wrong.id]


@pytest.mark.anyio
async def test_es256_story_async(server: Server) -> None:
    async with server.aclient("deploy-bot") as agent, server.aclient("alice") as alice:
        wrong = await agent.add_assertion(SUBJECT, "ES256", confidence=0.9)
        await agent.add_assertion(SUBJECT, "RS256")
        await alice.approve(wrong.id)
        answer = await agent.query(SUBJECT)
        assert [i.assertion.id for i in answer.items] == [wrong.id]
        assert answer.hidden.by_lifecycle == {"proposed": 1}
        assert answer.query_id is not None
        decision = await agent.decide("deployed auth config v42", [answer.query_id])
        trace = await agent.trace(decision.id)
        assert [q.id for q in trace.queries] == [answer.query_id]
        assert [a.id for a in trace.assertions] == [wrong.id]

        fixed = await alice.correct(wrong.id, reason="prod is RS256", value="RS256", forbid=True)
        assert fixed.replacement is not None
        assert fixed.replacement.lifecycle is Lifecycle.APPROVED
        assert (await agent.check(PLAN)).violations
        served = await alice.served(SUBJECT)
        assert [r.id for r in served] == [answer.query_id]


# -- investigation and administration --------------------------------------------------


def test_investigation_and_admin_surface(server: Server, clock: ManualClock) -> None:
    start = clock.now()
    with server.client("alice") as alice, server.client("root") as root:
        a = alice.add_assertion("db.pool.size", 20, lifecycle="approved", epoch="db-docs")
        b = alice.add_assertion("db.pool.timeout", "30s", epoch="db-docs")
        assert alice.get(a.id[:10]) == a
        answer = alice.query("db", lens="consensus", at=clock.now())
        assert {i.assertion.id for i in answer.items} == {a.id, b.id}
        by_text = alice.query(text="pool")
        assert by_text.items

        clock.advance(TimeDelta(minutes=1))
        assert alice.deprecate(a.id).lifecycle is Lifecycle.DEPRECATED
        assert alice.reject(b.id, reason="unsure").lifecycle is Lifecycle.REJECTED
        diff = alice.diff("db", since=start.subtract(minutes=1))
        assert diff.counts == {"added": 2, "deprecated": 1, "rejected": 1}
        top = alice.diff("db", since=start.subtract(minutes=1), limit=3)
        assert top.changes == diff.changes[1:]
        assert top.next is not None
        rest = alice.diff("db", since=top.since, until=top.until, limit=3, before=top.next)
        assert (rest.changes, rest.next, rest.total) == (diff.changes[:1], None, 4)
        audited = alice.audit(agent="alice", since=start)
        newest_first = [by_text.query_id, answer.query_id]
        assert [r.id for r in audited] == newest_first
        assert [r.id for r in alice.served("db.pool.size", at=clock.now())] == newest_first
        assert len(alice.served("db.pool.size", limit=1)) == 1

        view = alice.epoch("db-docs")
        assert isinstance(view, EpochView)
        assert {x.id for x in view.assertions} == {a.id, b.id}
        assert alice.supersede_epoch("db-docs", reason="withdrawn") == [a.id]

        spec = LensSpec(lifecycles=frozenset({Lifecycle.PROPOSED}), description="drafts")
        assert alice.define_lens("drafts", spec) == spec
        assert alice.lenses()["drafts"] == spec
        assert set(alice.lenses()) >= {"approved", "latest", "consensus", "all", "drafts"}

        secret, record = root.create_token("ci-bot", ["agent"], expires=clock.now().add(hours=1))
        assert record.principal == "ci-bot"
        assert record.expires_at == clock.now().add(hours=1)
        with Client(server.url, secret) as ci:
            assert ci.whoami().token_id == record.id
        assert [t.id for t in root.tokens("ci-bot")] == [record.id]
        (revoked,) = root.revoke_token(record.id, reason="rotated")
        assert revoked.revoked_by == "root"

        assert root.verify().ok
        assert root.rebuild().ok
        events = list(root.export())
        assert len(events) == root.verify().events
        assert events[0]["seq"] == 1
        assert {"kind", "payload", "hash"} <= set(events[-1])
        assert "episteme" in root.metrics()
    with Client(server.url, None) as anonymous:
        assert anonymous.health()["status"] == "ok"


@pytest.mark.anyio
async def test_async_export_and_denials(server: Server) -> None:
    async with server.aclient("root") as root, server.aclient("deploy-bot") as agent:
        with pytest.raises(Forbidden):
            await agent.verify()
        (denial,) = await root.denials(principal="deploy-bot")
        assert denial.operation == "integrity"
        events = [event async for event in root.export()]
        assert events
        assert events == [event async for event in root.export()]
        assert (await root.health())["status"] == "ok"


@pytest.mark.anyio
async def test_streams_split_lines_at_newlines_alone(server: Server) -> None:
    # JSON leaves U+2028, U+2029 and U+0085 unescaped in strings; splitting at them as
    # str.splitlines does broke every export once one value held one.
    odd = "line\u2028sep\u2029para\x85next"
    with server.client("root") as root:
        root.add_assertion("text.odd", odd)
        opened = root.diagnose(f"database connection failures in prod{odd}")
        root.deny_session(opened.id, reason=odd)
        exported = list(root.export())
        assert odd in orjson.dumps(exported).decode()
        events = list(root.session_events(opened.id))
        assert odd in orjson.dumps(events).decode()
    async with server.aclient("root") as root_async:
        assert [e async for e in root_async.export()] == exported
        assert [e async for e in root_async.session_events(opened.id)] == events


# -- errors ----------------------------------------------------------------------------


def test_errors_map_to_the_exception_tree(server: Server) -> None:
    with server.client("deploy-bot") as agent, server.client("alice") as alice:
        with pytest.raises(NotFound) as not_found:
            agent.get("a_0000000000")
        assert not_found.value.field == "id"
        assert "a_0000000000" in not_found.value.message

        fact = agent.add_assertion(SUBJECT, "RS256")
        with pytest.raises(Forbidden, match="supervisor"):
            agent.approve(fact.id)
        alice.approve(fact.id)
        with pytest.raises(Conflict, match="approved"):
            alice.approve(fact.id)

        with pytest.raises(InvalidInput) as schema:
            agent.add_assertion(SUBJECT, "x", confidence=2.0)
        assert schema.value.field == "confidence"
        with pytest.raises(InvalidInput, match="dotted segments") as pattern:
            agent.query("-bad subject")
        assert pattern.value.field == "subject"
        with pytest.raises(InvalidInput, match="give a subject") as library:  # a 400
            agent.query()
        assert type(library.value) is InvalidInput
        with pytest.raises(InvalidInput, match="JSON"):
            agent.add_assertion(SUBJECT, float("nan"))
        with pytest.raises(TooLarge) as too_large:
            agent.add_assertion(SUBJECT, "x", evidence="e" * 20_000)
        assert too_large.value.field == "body"
        with pytest.raises(InvalidInput, match="empty"):
            agent.get("")


def test_revoked_token_is_unauthenticated(server: Server) -> None:
    with server.client("deploy-bot") as agent, server.client("root") as root:
        agent.whoami()
        root.revoke_token("deploy-bot", reason="leaked in a log")
        with pytest.raises(Unauthenticated, match="revoked"):
            agent.whoami()


@pytest.mark.anyio
async def test_async_errors(server: Server) -> None:
    async with server.aclient("deploy-bot") as agent:
        with pytest.raises(NotFound):
            await agent.trace("d_missing")
        with pytest.raises(Forbidden):
            await agent.create_token("x", ["admin"])
    async with AsyncClient(server.url, "ep_not-a-token") as stranger:
        with pytest.raises(Unauthenticated, match="unknown token"):
            await stranger.whoami()
    async with AsyncClient(closed_port_url(), "ep_x") as gone:
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await gone.whoami()


def test_unreachable_server_names_the_url() -> None:
    url = closed_port_url()
    with Client(url, "ep_x") as client, pytest.raises(StoreUnavailable) as exc:
        client.whoami()
    assert url in exc.value.message
    assert "unreachable" in exc.value.message
    with Client(url, "ep_x") as client, pytest.raises(StoreUnavailable, match="unreachable"):
        next(client.export())


def test_a_slow_answer_is_not_called_unreachable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with Client("http://episteme.test", "ep_x", transport=httpx.MockTransport(slow)) as client:
        with pytest.raises(StoreUnavailable, match="did not answer POST /v1/rebuild in") as exc:
            client.rebuild(repair=True)
        assert "the write may have been applied: look, then retry" in exc.value.message
        with pytest.raises(StoreUnavailable) as read:
            client.verify()
    assert "did not answer GET /v1/verify in time (timed out): retry" in read.value.message
    assert "write" not in read.value.message


def fake(status: int, body: bytes, content_type: str = "application/problem+json") -> Client:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"Content-Type": content_type})

    return Client("http://episteme.test", "ep_x", transport=httpx.MockTransport(answer))


@pytest.mark.parametrize(
    ("status", "title", "error"),
    [
        (500, "Integrity failure", IntegrityError),
        (500, "Internal error", StoreUnavailable),
        (503, "Service unavailable", StoreUnavailable),
        (405, "Method not allowed", InvalidInput),
        (408, "Request timeout", BodyStalled),
        (415, "Unsupported media type", Unsupported),
    ],
)
def test_other_statuses_map_by_status_and_title(
    status: int, title: str, error: type[EpistemeError]
) -> None:
    body = f'{{"title": "{title}", "status": {status}, "detail": "what to do", "field": null}}'
    with pytest.raises(error, match=r"^what to do$") as exc:
        fake(status, body.encode()).verify()
    assert type(exc.value) is error


def test_answers_that_are_not_problems_still_raise() -> None:
    with pytest.raises(StoreUnavailable, match="502 Bad Gateway to GET /v1/whoami"):
        fake(502, b"<html>bad gateway</html>", "text/html").whoami()
    with pytest.raises(StoreUnavailable, match="same version"):
        fake(200, b'{"name": "x"}', "application/json").whoami()
    degraded = b'{"status": "degraded", "store": "unavailable", "journal_events": null}'
    assert fake(503, degraded, "application/json").health()["status"] == "degraded"


# -- the token never leaks --------------------------------------------------------------


def test_the_token_never_appears_in_reprs_or_errors(server: Server) -> None:
    canary = "ep_CANARY-do-not-print-0123456789"
    seen: list[BaseException] = []
    for url in (server.url, closed_port_url()):
        client = Client(url, canary)
        assert canary not in repr(client)
        assert canary not in str(vars(client))
        for call in (client.whoami, lambda c=client: next(c.export())):
            with pytest.raises(EpistemeError) as exc:
                call()
            seen.append(exc.value)
        client.close()
    with pytest.raises(InvalidInput) as bad:
        Client(server.url, canary + "\n")
    seen.append(bad.value)
    for exc in seen:
        text = "".join(traceback.format_exception(exc))
        assert canary not in text
        assert canary not in repr(exc)


# -- one surface for both clients ------------------------------------------------------


def test_sync_and_async_clients_have_the_same_methods() -> None:
    def surface(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(getattr(cls, name))
            for name in dir(cls)
            if not name.startswith("_") and name != "aclose" and callable(getattr(cls, name))
        }

    sync, asynchronous = surface(Client), surface(AsyncClient)
    assert sync.keys() == asynchronous.keys()
    for name, sig in sync.items():
        if name == "close":  # the async one also under the name asyncio gives it
            assert inspect.iscoroutinefunction(AsyncClient.close)
            continue
        if name in ("export", "session_events"):  # an Iterator and an AsyncIterator
            assert sig.parameters == asynchronous[name].parameters, name
            assert "AsyncIterator" in str(asynchronous[name].return_annotation), name
            continue
        assert str(sig) == str(asynchronous[name]), name
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
    assert str(sync["get"]) == "(self, /, ref: 'str') -> 'Assertion'"
    assert Client.get.__doc__
    assert "export" in sync


def test_times_go_out_as_rfc3339() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    at = Instant.parse_iso("2026-11-21T21:00:00.5+01:00")
    with Client("http://episteme.test/prefix", "ep_x", transport=httpx.MockTransport(answer)) as c:
        c.audit(since=at, subject=SUBJECT)
        # whenever's other times and an aware datetime, in a query and in a body
        offset = OffsetDateTime.parse_iso("2026-11-21T21:00:00.5+01:00")
        zoned = offset.to_tz("Europe/Paris")
        aware = datetime(2026, 11, 21, 21, 0, 0, 500000, tzinfo=timezone(timedelta(hours=1)))
        for given in (offset, zoned, aware):
            c.audit(since=given)  # type: ignore[arg-type]
            with contextlib.suppress(EpistemeError):  # the fake's answer is not an assertion
                c.add_assertion(SUBJECT, 1, valid_from=given)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="names no moment"):
            c.add_assertion(SUBJECT, 1, valid_from=datetime(2026, 11, 21))  # type: ignore[arg-type]
    request, *others = seen
    assert request.url.path == "/prefix/v1/audit"
    assert request.url.params["since"] == "2026-11-21T20:00:00.5Z"
    assert "until" not in request.url.params
    assert request.headers["authorization"] == "Bearer ep_x"
    for query, body in zip(others[::2], others[1::2], strict=True):
        assert query.url.params["since"] == "2026-11-21T20:00:00.5Z"
        assert orjson.loads(body.content)["valid_from"] == "2026-11-21T20:00:00.5Z"


# -- every route has a method ------------------------------------------------------------

SESSION = "s_" + "0" * 24
ROUTES: dict[str, tuple[str, tuple[object, ...], dict[str, object]]] = {
    "POST /v1/assertions": ("add_assertion", (SUBJECT, "RS256"), {}),
    "POST /v1/assertions/batch": ("add_assertions", ([{"subject": SUBJECT, "value": 1}],), {}),
    "GET /v1/assertions/{ref}": ("get", ("a_1",), {}),
    "POST /v1/assertions/{ref}/approve": ("approve", ("a_1",), {}),
    "POST /v1/assertions/{ref}/correct": ("correct", ("a_1",), {"reason": "r"}),
    "POST /v1/assertions/{ref}/deprecate": ("deprecate", ("a_1",), {}),
    "POST /v1/assertions/{ref}/reject": ("reject", ("a_1",), {}),
    "GET /v1/audit": ("audit", (), {}),
    "GET /v1/blame/{ref}": ("blame", ("a_1",), {}),
    "GET /v1/checks": ("checks", (), {}),
    "GET /v1/conflicts": ("conflicts", (), {}),
    "GET /v1/constraints": ("constraints", (), {}),
    "POST /v1/constraints": ("add_constraint", ("auth",), {"reason": "r", "forbid": ["x"]}),
    "POST /v1/constraints/check": ("check", ("plan", ["auth"]), {}),
    "GET /v1/constraints/{ref}": ("constraint", ("c_1",), {}),
    "POST /v1/constraints/{ref}/retire": ("retire_constraint", ("c_1",), {"reason": "r"}),
    "GET /v1/decisions": ("decisions", (), {}),
    "POST /v1/decisions": ("decide", ("act", ["q_1"]), {}),
    "GET /v1/denials": ("denials", (), {}),
    "POST /v1/diagnosis/alerts": ("send_alerts", ({"version": "4", "alerts": []},), {}),
    "POST /v1/diagnosis/approve/{id}": ("approve_session", (SESSION,), {"reason": "r"}),
    "POST /v1/diagnosis/deny/{id}": ("deny_session", (SESSION,), {"reason": "r"}),
    "POST /v1/diagnosis/diagnose": ("diagnose", ("db down",), {}),
    "GET /v1/diagnosis/sessions": ("sessions", (), {}),
    "GET /v1/diagnosis/incidents": ("incidents", (), {}),
    "DELETE /v1/diagnosis/sessions/{id}": ("delete_session", (SESSION,), {}),
    "GET /v1/diagnosis/status/{id}": ("session", (SESSION,), {}),
    "GET /v1/diff": ("diff", ("auth",), {"since": Instant.from_utc(2026, 11, 21)}),
    "GET /v1/epochs/{name}": ("epoch", ("e1",), {}),
    "POST /v1/epochs/{name}/supersede": ("supersede_epoch", ("e1",), {"reason": "r"}),
    "GET /v1/export": ("export", (), {}),
    "GET /v1/gardener": ("gardener", (), {}),
    "GET /v1/impact/{ref}": ("impact", ("a_1",), {}),
    "GET /v1/lenses": ("lenses", (), {}),
    "PUT /v1/lenses/{name}": ("define_lens", ("mine", {"description": "d"}), {}),
    "GET /v1/notifications": ("notifications", (), {}),
    "POST /v1/query": ("query", (SUBJECT,), {}),
    "POST /v1/rebuild": ("rebuild", (), {}),
    "GET /v1/served": ("served", (SUBJECT,), {}),
    "GET /v1/tokens": ("tokens", (), {}),
    "POST /v1/tokens": ("create_token", ("bot", ["agent"]), {}),
    "POST /v1/tokens/revoke": ("revoke_token", ("bot",), {"reason": "r"}),
    "GET /v1/trace/{ref}": ("trace", ("d_1",), {}),
    "GET /v1/trust": ("trust", (), {}),
    "GET /v1/verify": ("verify", (), {}),
    "GET /v1/webhooks": ("webhooks", (), {}),
    "GET /v1/webhooks/deliveries": ("deliveries", (), {}),
    "PUT /v1/webhooks/{name}": ("set_webhook", ("ops", "env:HOOK_URL"), {}),
    "DELETE /v1/webhooks/{name}": ("remove_webhook", ("ops",), {}),
    "GET /v1/whoami": ("whoami", (), {}),
    "GET /health": ("health", (), {}),
    "GET /metrics": ("metrics", (), {}),
}
ALIASES = {
    "POST /v1/check",  # the older spelling of /v1/constraints/check
    "POST /v1/tokens/{ref}/revoke",  # the same as /v1/tokens/revoke, the ref in the path
}


def test_every_route_has_a_client_method_that_calls_it(ledger: Ledger, home: Path) -> None:
    app = create_app(Settings(home=home, mcp=False), ledger=ledger)
    served = {
        f"{method.upper()} {path}"
        for path, item in app.openapi()["paths"].items()
        if path.startswith(("/v1/", "/health", "/metrics"))
        for method in item
    }
    assert served - ALIASES == set(ROUTES)
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(418, json={"detail": "recorded", "status": 418})

    for route, (name, args, kwargs) in ROUTES.items():
        seen.clear()
        with Client("http://episteme.test", "ep_x", transport=httpx.MockTransport(answer)) as c:
            made = getattr(c, name)
            with pytest.raises(InvalidInput, match="recorded"):
                _drain(made(*args, **kwargs))
        (request,) = seen
        method, template = route.split(" ")
        pattern = "^" + re.sub(r"\\{[a-z]+\\}", "[^/]+", re.escape(template)) + "$"
        assert request.method == method, route
        assert re.match(pattern, request.url.path), (route, request.url.path)


def _drain(made: object) -> None:
    """Run a stream's request too (a generator asks only when iterated)."""
    if inspect.isgenerator(made):
        next(made)


def test_the_new_reads_and_webhooks_against_a_server(server: Server, clock: ManualClock) -> None:
    with server.client("alice") as alice, server.client("root") as root:
        fact = alice.add_assertion(SUBJECT, "ES256")
        answer = alice.query(SUBJECT, lens="all")
        decision = alice.decide("deploy v42", [answer.query_id])
        assert [d.id for d in alice.decisions(agent="alice")] == [decision.id]
        assert alice.decisions(agent="nobody") == []
        alice.correct(fact.id, reason="production verifies RS256", value="RS256", forbid=True)
        (constraint,) = alice.constraints(SUBJECT)
        assert alice.constraint(constraint.constraint.id[:10]) == constraint
        Gardener(server.ledger).run_until_caught_up()
        assert [n.type for n in alice.notifications(type="correction")] == ["correction"]
        assert alice.gardener().lag_events == 0

        hook = root.set_webhook("ops", "env:HOOK_URL", events=["correction"], max_attempts=3)
        assert hook.events == frozenset({"correction"})
        assert [w.name for w in root.webhooks()] == ["ops"]
        assert root.deliveries() == []
        root.remove_webhook("ops")
        assert root.webhooks() == []
        # one recorded before the rule on signed URLs lists as recorded, over HTTP too
        old = WebhookSpec.model_construct(name="old", url="https://hooks.example/x?token=abc")
        server.ledger.set_webhook(old, by="admin")
        assert [w.url for w in root.webhooks()] == ["https://hooks.example/x?token=abc"]
        root.remove_webhook("old")
        with pytest.raises(NotFound):
            root.remove_webhook("ops")
        with pytest.raises(Forbidden):
            alice.webhooks()


@pytest.mark.anyio
async def test_both_clients_page_on_by_position(server: Server) -> None:
    fill(server.ledger)  # seven of each, all at one time (the server runs in a thread)
    with server.client("alice") as alice:
        every = alice.audit(limit=1000)
        pages = [alice.audit(limit=5)]
        pages.append(alice.audit(limit=5, before=pages[-1][-1].seq))
        pages.append(alice.audit(limit=5, before=pages[-1][-1].seq))
        assert [q.id for page in pages for q in page] == [q.id for q in every]
        assert len(pages[-1]) == len(every) - 10
        notes = alice.notifications(type="correction", limit=4)
        notes += alice.notifications(type="correction", limit=4, after=notes[-1].key)
        assert notes == alice.notifications(type="correction")
        assert len(notes) == 7
        with pytest.raises(InvalidInput, match="no notification has the key 'gone'"):
            alice.notifications(after="gone")
    async with server.aclient("alice") as asynchronous:
        first = await asynchronous.decisions(limit=4)
        rest = await asynchronous.decisions(limit=4, before=first[-1].seq)
        assert first + rest == await asynchronous.decisions()
        assert len(rest) == 3
        served = await asynchronous.served("svc", limit=6)
        served += await asynchronous.served("svc", limit=6, before=served[-1].seq)
        assert [q.id for q in served] == [q.id for q in await asynchronous.served("svc")]
        checks = await asynchronous.checks(limit=6)
        rest_checks = await asynchronous.checks(before=checks[-1].seq)
        assert checks + rest_checks == await asynchronous.checks()
        assert len(rest_checks) == 1
        denials = await asynchronous.denials(limit=6)
        rest_denials = await asynchronous.denials(before=denials[-1].seq)
        assert denials + rest_denials == await asynchronous.denials()


def test_one_string_where_a_list_belongs_is_refused_before_sending() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    with Client("http://episteme.test", "ep_x", transport=httpx.MockTransport(answer)) as c:
        calls = {
            "scope": lambda: c.check("set the algorithm to RS256", "auth"),
            "items": lambda: c.check("plan", ["auth"], items="RS256"),
            "forbid": lambda: c.add_constraint("auth", reason="r", forbid="node-fetch"),
            "query_ids": lambda: c.decide("deploy", "q_0123456789ab"),
            "roles": lambda: c.create_token("bot", "agent"),
            "derived_from": lambda: c.add_assertion(SUBJECT, 1, derived_from="a_1"),
            "references": lambda: c.approve_session(SESSION, reason="r", references="op://x"),
            "events": lambda: c.set_webhook("ops", "env:URL", events="correction"),  # type: ignore[arg-type]
        }
        one = {"subject": SUBJECT, "value": 1}
        calls["assertions"] = lambda: c.add_assertions(one)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="assertion 1: give a dict") as item:
            c.add_assertions([one, "x"])  # type: ignore[list-item]
        assert item.value.field == "assertions"
        for field, call in calls.items():
            with pytest.raises(InvalidInput, match="is a list") as exc:
                call()
            assert exc.value.field == field
        for ref in (".", ".."):
            with pytest.raises(InvalidInput, match="not an id or a name"):
                c.get(ref)
        with pytest.raises(InvalidInput, match="not a lens") as lens:
            c.define_lens("mine", {"min_confidence": "high"})
        assert lens.value.field == "spec"
    assert seen == []
    with pytest.raises(InvalidInput) as url:
        Client("http://[::1", "ep_x")
    assert url.value.field == "base_url"


@pytest.mark.parametrize("cls", [Client, AsyncClient])
@pytest.mark.parametrize(
    ("base_url", "timeout", "field", "words"),
    [
        ("127.0.0.1:8765", 10.0, "base_url", "give http:// or https://"),
        ("ftp://episteme.test", 10.0, "base_url", "give http:// or https://"),
        ("deploy:hunter2@episteme.test", 10.0, "base_url", "give http:// or https://"),
        ("http://episteme.test?x=1", 10.0, "base_url", "leave out the query"),
        ("http://episteme.test/?token=hunter2", 10.0, "base_url", "leave out the query"),
        ("http://episteme.test", -1, "timeout", "finite number above 0"),
        ("http://episteme.test", 0, "timeout", "finite number above 0"),
        ("http://episteme.test", True, "timeout", "finite number above 0"),
        ("http://episteme.test", math.inf, "timeout", "a finite number above 0"),
        ("http://episteme.test", math.nan, "timeout", "a finite number above 0"),
        ("http://127.0.0.1:99999", 10.0, "base_url", "port 99999 is not one"),
        ("http://127.0.0.1:0", 10.0, "base_url", "port 0 is not one"),
        ("http://127.0.0.1:8000/v1/", 10.0, "base_url", "leave /v1 out of it"),
    ],
)
def test_an_unusable_address_or_timeout_is_refused_at_once(
    cls: type[Client] | type[AsyncClient], base_url: str, timeout: Any, field: str, words: str
) -> None:
    """Refused when the client is made, before anything is sent, and never repeating a
    password: not found out at the first call as "unreachable" or "may have been applied"."""
    with pytest.raises(InvalidInput, match=words) as refused:
        cls(base_url, "ep_x", timeout=timeout)
    assert refused.value.field == field
    assert "hunter2" not in str(refused.value)


def _answering(response: httpx.Response) -> Client:
    return Client("http://episteme.test", "ep_x", transport=httpx.MockTransport(lambda r: response))


def test_answers_that_are_not_episteme_problems_say_what_they_are() -> None:
    moved = httpx.Response(301, headers={"Location": "https://episteme.example/v1/whoami"})
    with pytest.raises(InvalidInput, match=r"pointing to https://episteme\.example") as exc:
        _answering(moved).whoami()
    assert (exc.value.status, exc.value.field) == (301, "base_url")
    slow_down = httpx.Response(429, headers={"Retry-After": "30"}, text="too many")
    with pytest.raises(StoreUnavailable, match="retry after 30 s") as limited:
        _answering(slow_down).query(SUBJECT)
    assert limited.value.status == 429
    with pytest.raises(NotFound, match="check the client's base URL") as foreign:
        _answering(httpx.Response(404, text="<html>nginx</html>")).get("a_1")
    assert foreign.value.status == 404
    with pytest.raises(InvalidInput) as not_allowed:
        _answering(httpx.Response(405, text="")).verify()
    assert not_allowed.value.status == 405
    with pytest.raises(StoreUnavailable, match="503 Service Unavailable to GET /health"):
        _answering(httpx.Response(503, text="<html>maintenance</html>")).health()
    sign_in = httpx.Response(200, text="<html>sign in to the proxy</html>")
    with pytest.raises(StoreUnavailable, match="is not what this client reads"):
        _answering(sign_in).remove_webhook("ops")  # it was taken as done
    with pytest.raises(StoreUnavailable, match="GET /metrics is not what this client reads"):
        _answering(sign_in).metrics()  # it was returned as the metrics
    assert _answering(httpx.Response(204)).remove_webhook("ops") is None

    def garbled(request: httpx.Request) -> httpx.Response:  # decoded only as it is read
        gzip = {"Content-Encoding": "gzip"}
        return httpx.Response(200, headers=gzip, stream=httpx.ByteStream(b"not gzip"))

    client = Client("http://episteme.test", "ep_x", transport=httpx.MockTransport(garbled))
    with client, pytest.raises(StoreUnavailable, match="could not be decoded"):
        client.whoami()


@pytest.mark.parametrize(
    "body", [b'{"seq":1}\n{"seq":2', b"<html>ok</html>", b'{"seq":1}\n[1,2]\n']
)
def test_an_export_line_that_is_not_an_event_is_a_typed_error(body: bytes) -> None:
    with pytest.raises(StoreUnavailable, match="is not a JSON object"):
        list(_answering(httpx.Response(200, content=body)).export())


def test_a_diagnosis_session_followed_denied_and_deleted(server: Server) -> None:
    with server.client("root") as root:
        opened = root.diagnose("database connection failures in prod")
        assert opened.status == "waiting_for_approval"
        root.deny_session(opened.id, reason="not during the freeze")
        events = list(root.session_events(opened.id))  # ends: the session is over
        kinds = [e["type"] for e in events]
        assert kinds[0] == "session_start"
        assert "approval_required" in kinds
        assert [e["n"] for e in events] == list(range(1, len(events) + 1))
        root.delete_session(opened.id)
        with pytest.raises(NotFound):
            root.session(opened.id)
        with pytest.raises(NotFound):
            list(root.session_events(opened.id))
        alert = {"status": "resolved", "labels": {"alertname": "PostgresTooManyConnections"}}
        payload = {"version": "4", "groupKey": "g", "status": "resolved", "alerts": [alert]}
        assert root.send_alerts(payload) is None  # 202: taken, worked on in the background
        with pytest.raises(InvalidInput) as refused:
            root.send_alerts({"version": "4", "alerts": []})
        assert refused.value.field == "groupKey"


def test_the_default_timeout_outlasts_the_servers_own_waits() -> None:
    # At 10 s, a write waiting for the writer lock (up to 30 s) or a database connection
    # (10 s) timed out here first: "may have been applied", where the server would have
    # answered 503 with the cause, and nothing written.
    from episteme.ledger.sql.base import WRITE_WAIT_S

    for cls in (Client, AsyncClient):
        waits = cls("http://episteme.test", "ep_x")._timeout
        assert waits.read is not None
        assert waits.read > WRITE_WAIT_S + 10


@pytest.mark.anyio
async def test_a_closed_client_says_so_as_its_other_errors_do(server: Server) -> None:
    # httpx's bare RuntimeError reached the caller, past every `except EpistemeError`.
    sync = server.client("deploy-bot")
    sync.close()
    for call in (sync.whoami, lambda: list(sync.export())):
        with pytest.raises(InvalidInput, match="this client is closed") as closed:
            call()
        assert closed.value.field == "client"
    agent = AsyncClient(server.url, server.tokens["deploy-bot"])
    async with agent:
        assert (await agent.whoami()).name == "deploy-bot"
    await agent.close()  # twice, and under Client's name: nothing to do
    with pytest.raises(InvalidInput, match="this client is closed"):
        await agent.whoami()
    with pytest.raises(InvalidInput, match="this client is closed"):
        [event async for event in agent.export()]


def test_what_is_no_id_is_refused_before_sending() -> None:
    """A slash reached another route (the server decodes %2F before routing): `a/approve`
    was "GET is not allowed: use POST", and a number failed inside urllib."""
    sent: list[httpx.Request] = []
    ep = Client("http://episteme.test", "ep_x", transport=httpx.MockTransport(sent.append))
    calls: list[tuple[str, Callable[[Any], object]]] = [
        ("ref", ep.get),
        ("ref", ep.blame),
        ("ref", lambda ref: ep.approve(ref)),
        ("ref", ep.constraint),
        ("name", ep.remove_webhook),
        ("ref", ep.epoch),
        ("id", ep.session),
        ("id", lambda sid: ep.approve_session(sid, reason="ok")),
        ("id", lambda sid: list(ep.session_events(sid))),
    ]
    for field, call in calls:
        for bad in ("abcd/approve", "x\\y", "..", 123, None):
            with pytest.raises(InvalidInput) as refused:
                call(bad)
            assert refused.value.field == field, (call, bad)
    assert sent == []
    with pytest.raises(InvalidInput, match="printable ASCII") as token:
        Client("http://episteme.test", 123)  # type: ignore[arg-type]
    assert token.value.field == "token"
    with pytest.raises(InvalidInput, match="a JSON object") as payload:
        ep.send_alerts("x")  # type: ignore[arg-type]
    assert payload.value.field == "payload"


def test_a_followed_session_ends_in_the_error_of_its_reader(server: Server) -> None:
    """A token revoked while it follows was the end of the events, as if the session had
    ended; every other call raises Unauthenticated."""
    token, record = server.ledger.issue_token("watcher", ["agent"], by="root")
    with server.client("root") as root:
        opened = root.diagnose("database connection failures in prod")
    seen: list[dict[str, Any]] = []
    raised: list[Exception] = []

    def follow() -> None:
        with Client(server.url, token) as watcher:
            try:
                seen.extend(watcher.session_events(opened.id))
            except EpistemeError as exc:
                raised.append(exc)

    follower = threading.Thread(target=follow)
    follower.start()
    deadline = time.monotonic() + 10
    while not any(e["type"] == "approval_required" for e in seen):
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
    server.ledger.revoke_token(record.id, by="root", reason="leaked")
    with server.client("root") as root:  # a new event, for which the token is checked
        root.deny_session(opened.id, reason="revoked")
    follower.join(10)
    assert [type(e) for e in raised] == [Unauthenticated]
    assert seen[-1]["type"] == "approval_required"
