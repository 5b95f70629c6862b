"""The MCP server through the official client: over stdio and over streamable HTTP.

Who acts is always the token's principal: the stdio server authenticates
EPISTEME_TOKEN at startup and on each call, the HTTP endpoint each request's token.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent, TextResourceContents
from starlette.applications import Starlette
from whenever import TimeDelta

from episteme.api.app import create_app
from episteme.api.settings import Settings
from episteme.ledger import Ledger
from episteme.ledger.gardener import Gardener
from episteme.mcp import NOT_JSONRPC, NOT_JSONRPC_LINE, mount
from episteme.timeutil import ManualClock
from tests.integration import processes
from tests.integration.server import live_server

pytestmark = pytest.mark.anyio

TOOLS = {
    "add_assertion",
    "query_knowledge",
    "record_decision",
    "get_history",
    "trace_decision",
    "check_constraints",
}
EPISTEME = [sys.executable, "-m", "episteme"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def token(ledger: Ledger, name: str, *roles: str) -> str:
    secret, _ = ledger.issue_token(name, list(roles or ["agent"]), by="admin")
    return secret


def ok(result: CallToolResult) -> Any:
    """The structured result of a tool call that must have succeeded."""
    assert not result.is_error, result.content
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text


async def assert_query_decide_trace(client: Client, agent: str) -> str:
    """The ES256 story's agent side: propose, read, act; the trace names `agent`.

    Returns the decision id.
    """
    added = ok(
        await client.call_tool(
            "add_assertion",
            {"subject": "auth.jwt.algorithm", "value": "ES256", "confidence": 0.6},
        )
    )
    assert added["agent"] == agent
    assert added["lifecycle"] == "proposed"

    approved = ok(await client.call_tool("query_knowledge", {"subject": "auth.jwt"}))
    assert approved["items"] == []
    assert approved["summary"] == "1 proposed assertion hidden"
    assert approved["hidden"]["ids"] == [added["id"]]

    latest = ok(await client.call_tool("query_knowledge", {"subject": "auth", "lens": "latest"}))
    assert [(i["value"], i["lifecycle"]) for i in latest["items"]] == [("ES256", "proposed")]
    assert latest["query_id"].startswith("q_")

    decision = ok(
        await client.call_tool(
            "record_decision",
            {"action": "deployed auth config v42", "query_ids": [latest["query_id"]]},
        )
    )
    assert decision["agent"] == agent

    trace = ok(await client.call_tool("trace_decision", {"ref": decision["id"]}))
    assert trace["decision"]["agent"] == agent
    assert [q["id"] for q in trace["queries"]] == [latest["query_id"]]
    assert {q["agent"] for q in trace["queries"]} == {agent}
    assert [a["id"] for a in trace["assertions"]] == [added["id"]]
    assert trace["agents"] == [agent]
    assert trace["checks"] == []  # it did not check its plan before acting

    history = ok(await client.call_tool("get_history", {"ref": added["id"][:12]}))
    (entry,) = history["history"]
    assert entry["assertion"]["agent"] == agent
    assert entry["history"][0]["lifecycle"] == "proposed"
    decision_id: str = decision["id"]
    return decision_id


# -- stdio -----------------------------------------------------------------------------


def stdio(home: str | Path, secret: str, **env: str) -> Client:
    params = StdioServerParameters(
        command=EPISTEME[0],
        args=[*EPISTEME[1:], "mcp", "--home", str(home)],
        env={"EPISTEME_TOKEN": secret, **env},
    )
    return Client(params)


def test_stdio_stops_at_once_on_sigterm(ledger: Ledger, location: str | Path) -> None:
    # A handler that ends commands through their clean-ups made it wait, on SIGTERM, for
    # its stdin reader: until the client closed the pipe, or a supervisor's SIGKILL.
    env = {**os.environ, "EPISTEME_TOKEN": token(ledger, "deploy-agent")}
    proc = subprocess.Popen(
        [*EPISTEME, "mcp", "--home", str(location)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    hello = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}},
    }  # fmt: skip
    proc.stdin.write(json.dumps(hello).encode() + b"\n")
    proc.stdin.flush()
    assert b'"result"' in proc.stdout.readline()  # serving
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGTERM


async def test_the_apis_size_limit_holds_over_stdio_and_is_told_over_http(
    ledger: Ledger, location: str | Path, home: Path
) -> None:
    # Over stdio there was no limit (a 20 MB value was stored, and read back to the
    # model whole); over HTTP the 413 reached the model as "Server returned an error
    # response", its problem details dropped by the SDK.
    secret = token(ledger, "deploy-agent")
    async with stdio(location, secret, EPISTEME_MAX_BODY="4096") as client:
        refused = await client.call_tool("add_assertion", {"subject": "a.b", "value": "x" * 5000})
        assert "the arguments are 5,0" in error_text(refused)
        assert "over 4,096: send less, or raise EPISTEME_MAX_BODY" in error_text(refused)
        ok(await client.call_tool("add_assertion", {"subject": "a.b", "value": "x" * 1000}))
        big = await client.call_tool("add_assertion", {"subject": "a.d", "value": 10**30})
        assert "value 1000000000000000000000000000000: integers must fit in 64 bits" in (
            error_text(big)  # measuring the arguments must not answer for the tool
        )
    app = create_app(Settings(home=home, max_body=4096), ledger=ledger)
    with live_server(app) as url:
        async with Served(url, ledger).client(secret) as client:
            with pytest.raises(MCPError, match="the request body is over 4,096 bytes"):
                await client.call_tool("add_assertion", {"subject": "a.c", "value": "x" * 5000})
    assert [a.value for a in ledger.store.current_on_subject("a.b")] == ["x" * 1000]
    assert ledger.store.current_on_subject("a.c") == []


async def test_stdio_lists_the_tools_and_acts_as_the_tokens_principal_until_revoked(
    ledger: Ledger, location: str | Path
) -> None:
    secret = token(ledger, "deploy-agent")
    async with stdio(location, secret) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.description is not None
            assert len(tool.description) > 40, tool.name
            for name, prop in tool.input_schema["properties"].items():
                assert prop.get("description"), f"{tool.name}.{name}"
        assert "agent" not in tools["add_assertion"].input_schema["properties"]
        assert client.server_info is not None
        assert client.server_info.name == "episteme"
        decision_id = await assert_query_decide_trace(client, "deploy-agent")
        assert (await client.read_resource("episteme://lenses")).contents
        # Revoking the token stops the running server at its next call, resources too.
        ledger.revoke_token("deploy-agent", by="admin", reason="rotated")
        refused = await client.call_tool("query_knowledge", {"subject": "auth"})
        assert "revoked" in error_text(refused)
        with pytest.raises(Exception, match="revoked"):
            await client.read_resource("episteme://lenses")
    # The ledger on disk says the same, read by another process.
    assert ledger.trace(decision_id).agents == ["deploy-agent"]
    denials = [(d.principal, d.operation, d.target) for d in ledger.denials()]
    assert sorted(denials) == [
        ("deploy-agent", "authenticate", "mcp:episteme://lenses"),
        ("deploy-agent", "authenticate", "mcp:query_knowledge"),
    ]


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("", "error: EPISTEME_TOKEN is not set"),
        ("ep_unknown", "error: EPISTEME_TOKEN: unknown token"),
    ],
)
def test_stdio_refuses_to_start_without_a_valid_token(
    ledger: Ledger, location: str | Path, secret: str, expected: str
) -> None:
    done = subprocess.run(
        [*EPISTEME, "mcp", "--home", str(location)],
        env=os.environ | {"EPISTEME_TOKEN": secret},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(expected)
    assert len(done.stderr.splitlines()) == 1


def test_stdio_refuses_a_revoked_token_and_records_it(ledger: Ledger, location: str | Path) -> None:
    secret = token(ledger, "deploy-agent")
    ledger.revoke_token("deploy-agent", by="admin", reason="rotated")
    done = subprocess.run(
        [*EPISTEME, "mcp", "--home", str(location)],
        env=os.environ | {"EPISTEME_TOKEN": secret},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "revoked" in done.stderr
    (denial,) = ledger.denials()
    assert (denial.principal, denial.operation, denial.target) == (
        "deploy-agent",
        "authenticate",
        "mcp:stdio",
    )


# -- streamable HTTP -------------------------------------------------------------------


@dataclass
class Served:
    url: str
    ledger: Ledger

    @asynccontextmanager
    async def client(self, secret: str, mode: str = "auto") -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {secret}"}
        # httpx's 5 s read timeout failed a call on a machine loaded by other work
        async with httpx2.AsyncClient(headers=headers, timeout=30.0) as http:
            transport = streamable_http_client(f"{self.url}/mcp", http_client=http)
            async with Client(transport, mode=mode) as client:
                yield client


@pytest.fixture
def served(ledger: Ledger, home: Path) -> Iterator[Served]:
    """The whole API app on a real uvicorn server, on 127.0.0.1 and a free port."""
    app = create_app(Settings(home=home), ledger=ledger)
    with live_server(app) as url:
        yield Served(url, ledger)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_flow_acts_as_the_tokens_principal(served: Served, mode: str) -> None:
    secret = token(served.ledger, "deploy-agent")
    async with served.client(secret, mode) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        await assert_query_decide_trace(client, "deploy-agent")
        view = await client.read_resource("episteme://subjects/auth.jwt")
        (content,) = view.contents
        assert isinstance(content, TextResourceContents)
        assert '"1 proposed assertion hidden"' in content.text
        lenses = await client.read_resource("episteme://lenses")
        assert isinstance(lenses.contents[0], TextResourceContents)
        assert '"consensus"' in lenses.contents[0].text
        with pytest.raises(MCPError) as bad:  # the caller's mistake, not an internal error
            await client.read_resource("episteme://subjects/" + "a" * 300)
        assert bad.value.error.code == -32602
        assert "at most 255 characters" in bad.value.error.message
        with pytest.raises(MCPError) as unknown:  # the SDK's said the URI whole, twice
            await client.read_resource("episteme://nothing/" + "x" * 5_000)
        assert unknown.value.error.code == -32602
        assert unknown.value.error.message.startswith("no resource 'episteme://nothing/xxx")
        assert len(repr(unknown.value.error)) < 1_000
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"}) as http:
        scrape = (await http.get(f"{served.url}/metrics")).text
    assert 'episteme_queries_total{lens="latest"} 1.0' in scrape
    assert 'episteme_answers_hiding_total{lens="approved"} 1.0' in scrape


async def test_http_without_a_token_is_401_with_an_error_mcp_clients_read(
    served: Served,
) -> None:
    async with httpx2.AsyncClient() as http:
        r = await http.post(
            f"{served.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        )
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/json"
    assert r.headers["www-authenticate"] == "Bearer"
    body = r.json()
    assert body["error"]["code"] == -32600
    assert body["error"]["message"].startswith("no bearer token")


async def test_http_takes_only_post(served: Served) -> None:
    """Stateless JSON mode has no event stream: a GET is answered at once, never held open."""
    secret, _ = served.ledger.issue_token("probe", ["agent"], by="admin")
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"}) as http:
        for method in ("GET", "DELETE"):
            r = await http.request(method, f"{served.url}/mcp", timeout=5)
            assert r.status_code == 405
            assert r.headers["allow"] == "POST"


async def test_an_oversized_streamed_body_is_a_quiet_413(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """A chunked body over the limit is the client's mistake: 413, and no error logged."""
    secret = token(served.ledger, "deploy-agent")
    headers = {
        "Authorization": f"Bearer {secret}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: Transfer-Encoding
        yield b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"x": "'
        for _ in range(20):
            yield b"x" * 100_000
        yield b'"}}'

    with caplog.at_level(logging.WARNING):
        async with httpx2.AsyncClient(headers=headers) as http:
            r = await http.post(f"{served.url}/mcp", content=chunks())
    assert r.status_code == 413
    assert "over 1,048,576 bytes" in r.json()["error"]["message"]  # JSON-RPC, for MCP
    assert [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING] == []


async def test_http_refuses_a_revoked_token_and_records_it(served: Served) -> None:
    secret = token(served.ledger, "deploy-agent")
    served.ledger.revoke_token("deploy-agent", by="admin", reason="leaked in a log")
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"}) as http:
        r = await http.post(
            f"{served.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        )
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]["message"]
    (denial,) = served.ledger.denials()
    assert (denial.principal, denial.operation, denial.target) == (
        "deploy-agent",
        "authenticate",
        "POST /mcp",
    )
    # The SDK's client passes the message on (problem details it replaced with "Server
    # returned an error response": the model never learnt that its token was revoked).
    with pytest.raises(BaseExceptionGroup) as refused:  # raised through anyio's task group
        async with served.client(secret) as client:
            await client.list_tools()
    assert refused.group_contains(MCPError, match="revoked at", depth=None)


async def test_each_token_acts_as_its_own_principal(served: Served) -> None:
    ids = {}
    for agent in ("deploy-agent", "orchestrator"):
        async with served.client(token(served.ledger, agent)) as client:
            # A name in the arguments is refused, not obeyed: the principal is the token's.
            posing = {"subject": f"svc.{agent}.owner", "value": "sre", "agent": "someone-else"}
            refused = await client.call_tool("add_assertion", posing)
            assert "unknown argument 'agent'" in error_text(refused)
            del posing["agent"]
            added = ok(await client.call_tool("add_assertion", posing))
            assert added["agent"] == agent
            read = ok(await client.call_tool("query_knowledge", {"subject": "svc", "lens": "all"}))
            done = ok(
                await client.call_tool(
                    "record_decision", {"action": "paged sre", "query_ids": [read["query_id"]]}
                )
            )
            ids[agent] = done["id"]
    for agent, decision_id in ids.items():
        trace = served.ledger.trace(decision_id)
        assert trace.decision is not None
        assert trace.decision.agent == agent
        assert {q.agent for q in trace.queries} == {agent}


async def test_an_argument_a_tool_does_not_take_is_refused(served: Served) -> None:
    # The SDK dropped it: `item` for `items` checked the plan against nothing and said
    # ok, and a misspelt window stored an assertion valid for ever.
    served.ledger.add_constraint(
        scope="probe.deps", reason="CVE", by="oncall", items=["node-fetch"], prefer="undici"
    )
    async with served.client(token(served.ledger, "deploy-agent")) as client:
        tools = {t.name: t.input_schema for t in (await client.list_tools()).tools}
        assert all(schema["additionalProperties"] is False for schema in tools.values())
        plan = {"plan": "add a package", "subjects": ["probe.deps"]}
        caught = await client.call_tool("check_constraints", {**plan, "items": ["node-fetch"]})
        assert ok(caught)["ok"] is False
        for wrong in ({**plan, "item": ["node-fetch"]}, {**plan, "scope": ["probe.deps"]}):
            refused = await client.call_tool("check_constraints", wrong)
            text = error_text(refused)
            assert f"unknown argument {next(iter(set(wrong) - set(plan)))!r}" in text
            assert "check_constraints takes plan, subjects, items" in text
        window = {"subject": "probe.w", "value": 1, "valid_form": "2030-01-01T00:00:00Z"}
        assert "unknown argument 'valid_form'" in error_text(
            await client.call_tool("add_assertion", window)
        )
        assert "unknown argument 'lense'" in error_text(
            await client.call_tool("query_knowledge", {"subject": "probe", "lense": "latest"})
        )
        # a prefix written with .* reads as the API and the CLI read it
        starred = ok(await client.call_tool("query_knowledge", {"subject": "probe.*"}))
        assert starred["lens"] == "approved"
    assert served.ledger.store.current_on_subject("probe.w") == []
    assert len(served.ledger.checks()) == 1  # the refused calls recorded nothing


async def test_a_huge_name_or_time_is_not_sent_back_whole(served: Served) -> None:
    async with served.client(token(served.ledger, "deploy-agent")) as client:
        for arguments in ({"x" * 300_000: 1}, {"subject": "a.b", "at": "y" * 300_000}):
            text = error_text(await client.call_tool("query_knowledge", arguments))
            assert len(text) < 1_000, text[:200]


async def test_an_agent_records_and_reads_valid_times_conflicts_and_its_checks_context(
    served: Served, clock: ManualClock
) -> None:
    # the API took them and the tools did not: an agent could not record a window (a
    # maintenance, a certificate's life), see a conflict but in words, or say its ticket
    ledger = served.ledger
    ledger.assert_one(subject="probe.alg", value="RS256", agent="ops", lifecycle="approved")
    ledger.assert_one(
        subject="probe.alg", value="ES256", agent="ops", lifecycle="approved",
        valid_from=clock.now().add(hours=1),
    )  # fmt: skip
    Gardener(ledger).run_until_caught_up()
    clock.advance(TimeDelta(hours=2))
    async with served.client(token(ledger, "deploy-agent")) as client:
        window = {"subject": "probe.maint", "value": "read-only", "valid_to": "in 2h"}
        added = ok(await client.call_tool("add_assertion", window))
        assert added["valid_to"] == clock.now().add(hours=2).format_iso()
        bad = await client.call_tool("add_assertion", window | {"valid_to": "soonish"})
        assert "add_assertion: valid_to: cannot read time 'soonish'" in error_text(bad)
        read = ok(await client.call_tool("query_knowledge", {"subject": "probe", "lens": "all"}))
        [maint] = [i for i in read["items"] if i["subject"] == "probe.maint"]
        assert (maint["valid_from"], maint["valid_to"]) == (None, added["valid_to"])
        [conflict] = read["conflicts"]
        assert (conflict["subject"], sorted(conflict["values"])) == (
            "probe.alg",
            ["ES256", "RS256"],
        )
        checked = ok(
            await client.call_tool("check_constraints", {"plan": "x", "context": {"ticket": "T-1"}})
        )
    assert ledger.checks()[0].id == checked["check_id"]
    assert ledger.checks()[0].context == {"ticket": "T-1"}


async def test_a_refusal_is_recorded_before_the_arguments_are_read(served: Served) -> None:
    # The SDK checked the arguments first: a call the role does not allow, with a bad
    # argument, was answered with the schema's complaint and never recorded.
    async with served.client(token(served.ledger, "carol", "approver")) as client:
        for arguments in ({"subject": "a.b", "value": 1, "confidence": "bad"}, {"x": 1}):
            refused = await client.call_tool("add_assertion", arguments)
            assert error_text(refused).startswith(
                "Error executing tool add_assertion: assert needs the agent role"
            )
    assert [d.operation for d in served.ledger.denials()] == ["assert", "assert"]


async def test_a_role_that_does_not_allow_the_tool_is_refused_and_recorded(
    served: Served,
) -> None:
    async with served.client(token(served.ledger, "carol", "approver")) as client:
        refused = await client.call_tool("add_assertion", {"subject": "a.b", "value": 1})
        assert error_text(refused).startswith(
            "Error executing tool add_assertion: assert needs the agent role"
        )
    (denial,) = served.ledger.denials()
    assert (denial.principal, denial.operation, denial.target) == (
        "carol",
        "assert",
        "mcp:add_assertion",
    )
    assert served.ledger.audit() == []


@pytest.mark.parametrize(
    ("tool", "arguments", "words"),
    [
        ("record_decision", {"action": "x"}, "query_ids: Field required"),
        ("add_assertion", {"subject": "a.b", "value": 1, "confidence": True}, "confidence:"),
        ("query_knowledge", {"subject": "Auth JWT"}, "subject: use dotted segments"),
        ("check_constraints", {"plan": "deploy", "subjects": ["x"] * 101}, "subjects:"),
        ("check_constraints", {"plan": "deploy", "items": ["x" * 513]}, "items.0:"),
    ],
)
async def test_arguments_off_the_schema_are_answered_in_one_line(
    served: Served, tool: str, arguments: dict[str, Any], words: str
) -> None:
    """What the model sent wrong, as the API words it: no validation report, no link,
    nothing recorded."""
    led = served.ledger
    secret = token(led, "deploy-agent")
    before = led.store.head()
    async with served.client(secret) as client:
        text = error_text(await client.call_tool(tool, arguments))
    assert text.startswith(f"Error executing tool {tool}: ")
    assert words in text
    for word in ("\n", "pydantic", "input_value"):
        assert word not in text
    assert led.store.head() == before


async def test_tool_descriptions_match_what_the_tools_take(served: Served) -> None:
    async with served.client(token(served.ledger, "deploy-agent")) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    for tool in tools.values():
        assert tool.description is not None
        assert not any(line.startswith(" ") for line in tool.description.splitlines())
    query = tools["query_knowledge"].input_schema["properties"]
    assert 257 in [o.get("maxLength") for o in query["subject"]["anyOf"]]  # 255 and ".*"
    assert query["lens"]["maxLength"] == 128
    check = tools["check_constraints"].input_schema["properties"]
    assert 100 in [o.get("maxItems") for o in check["subjects"]["anyOf"]]
    # no tool takes a check id: the description does not ask to cite one
    assert "cite its check_id" not in (tools["check_constraints"].description or "")


async def test_check_constraints_after_a_correction(served: Served) -> None:
    led = served.ledger
    async with served.client(token(led, "deploy-agent")) as client:
        plan = {
            "plan": "switch auth-service JWT signing to ES256",
            "subjects": ["auth.jwt.algorithm"],
        }
        before = ok(await client.call_tool("check_constraints", plan))
        assert before["ok"] is True
        assert before["summary"].startswith("no constraint applies")

        bad = led.assert_one(subject="auth.jwt.algorithm", value="ES256", agent="orchestrator")
        why = "ES256 broke token validation"
        led.correct(bad.id, by="oncall", reason=why, value="RS256", forbid=True)

        after = ok(await client.call_tool("check_constraints", plan))
        assert after["ok"] is False
        (violation,) = after["violations"]
        assert violation["matched"] == "ES256"
        assert violation["prefer"] == "RS256"
        assert "RS256" in after["summary"]

        fine = ok(await client.call_tool("check_constraints", {"plan": "rotate the RS256 key"}))
        assert fine["ok"] is True
        assert fine["summary"].startswith("no constraint violated")

        # a constraint on a kind of action, met by the checks that name it
        forced = led.add_constraint(tags=["deploy"], patterns=["--force"], reason="r", by="o")
        deploy = {"plan": "kubectl apply --force", "tags": ["deploy"]}
        stopped = ok(await client.call_tool("check_constraints", deploy))
        assert stopped["ok"] is False
        assert [v["constraint_id"] for v in stopped["violations"]] == [forced.constraint.id]
        assert stopped["violations"][0]["tags"] == ["deploy"]
        assert stopped["tags"] == ["deploy"]
        assert "forbidden in deploy plans" in stopped["summary"]
        other = ok(await client.call_tool("check_constraints", deploy | {"tags": ["npm"]}))
        assert other["ok"] is True  # npm's constraints (none), and those on subjects
        assert other["summary"].startswith("no constraint violated: 1 in scope")
        bad_tag = error_text(
            await client.call_tool("check_constraints", deploy | {"tags": ["a b"]})
        )
        assert "e.g. deploy" in bad_tag

        bad_input = await client.call_tool("query_knowledge", {"subject": "-auth"})
        assert "subject: use dotted segments" in error_text(bad_input)
        assert "(got '-auth')" in error_text(bad_input)
        # the library's refusals speak of fields, not of the command line's flags
        nothing = error_text(await client.call_tool("query_knowledge", {"lens": "latest"}))
        assert "give a subject, a prefix or words to search for" in nothing
        assert "--" not in nothing


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}


@pytest.mark.parametrize(
    ("bind", "host", "status"),
    [
        ("127.0.0.1", "127.0.0.1:8765", 200),
        ("127.0.0.1", "localhost", 200),
        ("127.0.0.1", "attacker.example:8765", 421),
        ("0.0.0.0", "episteme.example.com", 200),
    ],
)
async def test_dns_rebinding_checks_follow_the_bind_address(
    ledger: Ledger, bind: str, host: str, status: int
) -> None:
    endpoint = mount(ledger, None, host=bind)
    app = Starlette(routes=[endpoint.route])
    headers = {
        "Authorization": f"Bearer {token(ledger, 'deploy-agent')}",
        "Accept": "application/json, text/event-stream",
        "Host": host,
    }
    transport = httpx2.ASGITransport(app=app)
    async with endpoint.run(), httpx2.AsyncClient(transport=transport) as http:
        r = await http.post("http://127.0.0.1/mcp", json=INITIALIZE, headers=headers)
    assert r.status_code == status, r.text


@pytest.mark.parametrize(
    ("headers", "status", "words"),
    [
        ({"Host": "attacker.example:8765"}, 421, "answers requests to 127.0.0.1, localhost"),
        ({"Origin": "http://attacker.example"}, 403, "a page of another origin may not call"),
    ],
)
async def test_a_refused_host_or_origin_is_an_error_and_a_403_is_recorded(
    ledger: Ledger, headers: dict[str, str], status: int, words: str
) -> None:
    # The SDK answers them in plain text; the 403 was neither recorded nor counted.
    endpoint = mount(ledger, None, host="127.0.0.1")
    app = Starlette(routes=[endpoint.route])
    sent = {
        "Authorization": f"Bearer {token(ledger, 'deploy-agent')}",
        "Accept": "application/json, text/event-stream",
        **headers,
    }
    transport = httpx2.ASGITransport(app=app)
    async with endpoint.run(), httpx2.AsyncClient(transport=transport) as http:
        r = await http.post("http://127.0.0.1/mcp", json=INITIALIZE, headers=sent)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"]["message"]
    denials = ledger.denials(principal="deploy-agent")
    assert [d.operation for d in denials] == (["mcp"] if status == 403 else [])


# -- a token pasted in the wrong place -------------------------------------------------


def _pasted(secret: str) -> list[dict[str, Any]]:
    """Messages that quote `secret` back in the SDK's words or ours, unless masked."""
    call = "tools/call"
    return [
        {"jsonrpc": "2.0", "id": 2, "method": secret, "params": {}},
        {"jsonrpc": "2.0", "id": 3, "method": call, "params": {"name": secret, "arguments": {}}},
        {"jsonrpc": "2.0", "id": 4, "method": call,
         "params": {"name": "query_knowledge", "arguments": {secret: 1}}},
        {"jsonrpc": "2.0", "id": 5, "method": "prompts/get", "params": {"name": secret}},
    ]  # fmt: skip


def _hello() -> list[dict[str, Any]]:
    return [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]  # fmt: skip


def _said(replies: dict[int, Any]) -> None:
    """What each of `_pasted`'s messages got back, with the token masked."""
    assert replies[2]["error"] == {"code": -32601, "message": "Method not found", "data": "ep_…"}
    assert replies[3]["result"]["content"][0]["text"].startswith(
        "Error executing tool 'ep_…': no such tool; this server has add_assertion,"
    )
    assert "unknown argument 'ep_…'" in replies[4]["result"]["content"][0]["text"]
    assert replies[5]["error"]["code"] == -32602  # the SDK said 0, and logged a traceback
    assert replies[5]["error"]["message"].startswith(
        "no prompt named 'ep_…': this server has no prompts"
    )


def test_a_line_that_is_no_message_is_answered_over_stdio(
    ledger: Ledger, location: str | Path
) -> None:
    # The SDK dropped it without a word: a client waiting for the answer waited for ever.
    proc = subprocess.Popen(
        [*EPISTEME, "mcp", "--home", str(location)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "EPISTEME_TOKEN": token(ledger, "deploy-agent")},
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    lines = [json.dumps(m) for m in _hello()] + [
        '{"id": 7, "method": "ping"}',  # no "jsonrpc"
        '{"jsonrpc": "2.0", "id": 8, "method": "ping"',  # cut short
        "[]",
        '{"jsonrpc": "2.0", "id": 9, "method": "ping"}',
    ]
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.flush()
    try:
        replies = [json.loads(proc.stdout.readline()) for _ in range(5)]
    finally:
        proc.communicate(timeout=60)
    assert [(r["id"], r.get("error", {}).get("code")) for r in replies[1:]] == [
        (7, -32600),
        (None, -32700),
        (None, -32600),
        (9, None),
    ]
    assert replies[1]["error"]["message"] == NOT_JSONRPC_LINE


def test_a_line_the_sdk_cannot_read_is_answered_to_its_id_over_stdio(
    ledger: Ledger, location: str | Path
) -> None:
    # JSON that pydantic's reader refuses (nested past its 200 levels, an integer of
    # 5,000 digits, a lone surrogate's escape) was answered "not JSON" with id null,
    # which no client matches to its request: it waited for ever. An id that is neither
    # a string nor an integer made a notification of the request: no answer at all.
    # Bytes that are not UTF-8 were read as U+FFFD, and the altered value recorded.
    proc = subprocess.Popen(
        [*EPISTEME, "mcp", "--home", str(location)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "EPISTEME_TOKEN": token(ledger, "deploy-agent")},
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    before = ledger.store.head()[0]

    def call(ident: object, value: str) -> bytes:
        """A call of add_assertion whose value is `value`, as it is written."""
        arguments = {"subject": "utf8.probe", "value": "VALUE"}
        params = {"name": "add_assertion", "arguments": arguments}
        message = {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": params}
        return json.dumps(message).replace('"VALUE"', value).encode()

    lines = [json.dumps(m).encode() for m in _hello()] + [
        call(11, "[" * 300 + "]" * 300),
        call("twelve", "1" * 5000),
        call(13, '"\\ud800"'),
        call(14, '"cafe"').replace(b"cafe", b"caf\xe9"),  # Latin-1, not UTF-8
        b'{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}',
        b'{"jsonrpc": "2.0", "id": null, "method": "ping"}',
        b'{"jsonrpc": "2.0", "id": true, "method": "ping"}',
        b'{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}',
        b'{"jsonrpc": "2.0", "id": %s, "method": "ping", "x": 1.5}' % (b"7" * 5000),
        call(16, "[" * 5000 + "]" * 5000),
        b'{"jsonrpc": "2.0", "id": 15, "method": "ping"}',
    ]
    proc.stdin.write(b"\n".join(lines) + b"\n")
    proc.stdin.flush()
    try:
        replies = [json.loads(proc.stdout.readline()) for _ in range(11)]
    finally:
        _, err = proc.communicate(timeout=60)
    assert [(r["id"], r.get("error", {}).get("code")) for r in replies[1:]] == [
        (11, -32600),
        ("twelve", -32600),
        (13, -32600),
        (14, -32700),
        (None, -32600),
        (None, -32600),
        (None, -32600),
        (None, -32600),  # an id of 5,000 digits: to none (it was answered to id 0)
        (None, -32600),  # JSON nested too deep even for Python's reader: not "not JSON"
        (15, None),  # the notification had no answer, as it should not
    ]
    said = [r.get("error", {}).get("message", "") for r in replies[1:]]
    assert "recursion limit exceeded" in said[0], said[0]
    at = lines[len(_hello()) + 3].index(b"\xe9") + 1
    assert said[3] == f"Parse error: the line is not UTF-8 (byte {at}): JSON is", said[3]
    assert said[4].startswith("the id 1.5 is neither a string nor an integer"), said[4]
    assert said[5].startswith("the id null is"), said[5]
    assert b"Traceback" not in err
    with Ledger.open(location) as after:
        assert after.store.head()[0] == before  # nothing recorded, altered or not


def test_a_token_sent_as_a_name_never_comes_back_over_stdio(
    ledger: Ledger, location: str | Path
) -> None:
    canary = token(ledger, "deploy-agent")
    proc = subprocess.Popen(
        [*EPISTEME, "mcp", "--home", str(location)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "EPISTEME_TOKEN": canary},
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    sent = [*_hello(), {"note": canary}, *_pasted(canary)]
    proc.stdin.write("".join(json.dumps(m) + "\n" for m in sent))
    proc.stdin.flush()
    try:  # every request answered before stdin closes (closing it ends the server)
        # the five requests and the note's line, answered as no message (id null)
        replies = {r["id"]: r for r in (json.loads(proc.stdout.readline()) for _ in range(6))}
    finally:
        out, err = proc.communicate(timeout=60)
    _said(replies)
    assert replies[None]["error"]["code"] == -32600
    assert canary[3:] not in json.dumps(replies) + out + err
    assert "Traceback" not in err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_token_sent_as_a_name_never_comes_back_over_http_nor_reaches_the_log(
    tmp_path: Path, workers: str
) -> None:
    with Ledger.init(tmp_path / "home") as led:
        canary = token(led, "deploy-agent")
    headers = {"Authorization": f"Bearer {canary}", "Accept": "application/json"}
    with processes.served(tmp_path / "home", "--workers", workers) as (url, proc):
        with httpx2.Client(headers=headers, timeout=30) as http:
            posted = [http.post(f"{url}/mcp", json=m) for m in [*_hello()[:1], *_pasted(canary)]]
            wrong = http.post(f"{url}/mcp", json={"note": canary})
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.stdout is not None
        log = proc.stdout.read()
    for r in [*posted, wrong]:
        assert canary[3:] not in r.text
        assert int(r.headers["content-length"]) == len(r.content)
    _said({r.json()["id"]: r.json() for r in posted})
    assert wrong.status_code == 400
    assert wrong.json()["error"] == {"code": -32600, "message": NOT_JSONRPC}  # not -32602
    assert canary[3:] not in log
    assert "Traceback" not in log


async def test_over_http_an_id_that_is_no_id_is_refused_and_a_long_name_cut(
    served: Served,
) -> None:
    # The SDK read a request whose id is 1.5, null or true as a notification: 202 and no
    # body, and its caller waited for the answer. An unknown method's name of 100,000
    # characters came back whole in the error.
    headers = {
        "Authorization": f"Bearer {token(served.ledger, 'deploy-agent')}",
        "Accept": "application/json, text/event-stream",
    }
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        for ident, shown in [
            (1.5, "the id 1.5"),
            (None, "the id null"),
            (True, "the id true"),
            ({}, "an object"),
        ]:
            message = {"jsonrpc": "2.0", "id": ident, "method": "tools/list"}
            r = await http.post(f"{served.url}/mcp", json=message)
            assert r.status_code == 400, r.text
            assert r.json()["id"] is None
            assert r.json()["error"]["code"] == -32600
            said = r.json()["error"]["message"]
            assert said.startswith(f"{shown} is neither a string nor an integer"), said
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await http.post(f"{served.url}/mcp", json=note)).status_code == 202
        long = {"jsonrpc": "2.0", "id": 7, "method": "m" * 100_000}
        r = await http.post(f"{served.url}/mcp", json=long)
        # a token inside what is cut: masked before the cut, which would have left 40 of
        # its 43 characters, no longer whole
        secret = headers["Authorization"].removeprefix("Bearer ")
        hidden = {"jsonrpc": "2.0", "id": 8, "method": "m" * 76 + secret + "z" * 2000}
        masked = await http.post(f"{served.url}/mcp", json=hidden)
    assert r.json()["error"]["code"] == -32601
    assert r.json()["error"]["data"].endswith("(100,000 characters)")
    assert len(r.content) < 1_000
    assert int(r.headers["content-length"]) == len(r.content)
    assert masked.json()["error"]["data"].startswith("'" + "m" * 76 + "ep_…")
    assert secret[3:13] not in masked.text
