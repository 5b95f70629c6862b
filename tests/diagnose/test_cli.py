"""`episteme diagnose`, `approve s_…`, `deny` and `sessions` against a live server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from episteme.api import Settings, create_app
from episteme.client import Client
from episteme.diagnose.config import DiagnosisConfig
from episteme.diagnose.engine import DiagnosisEngine
from episteme.ledger import Ledger
from tests.conftest import Cli
from tests.diagnose.test_engine import CANARY, Vault, database
from tests.integration.server import live_server


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A server over its own ledger: (url, an agent's token, an approver's token)."""
    with Ledger.init(tmp_path / "server") as ledger:
        engine = DiagnosisEngine(ledger, Vault(), specialists={"database": database})
        settings = Settings(home=tmp_path / "server", mcp=False, background=False)
        app = create_app(settings, ledger=ledger, diagnosis=engine)
        dev, _ = ledger.issue_token("dev", ["agent"], by="admin")
        lead, _ = ledger.issue_token("lead", ["approver"], by="admin")
        with live_server(app) as url:
            yield url, dev, lead


def test_diagnose_then_approve_from_another_terminal(
    cli: Cli, served: tuple[str, str, str]
) -> None:
    url, dev, lead = served
    r = cli("diagnose", "database connection failures", "--env", "prod", "--server", url,
            "--token", dev, home_arg=False)  # fmt: skip
    assert r.code == 0, r.err
    assert "approval required" in r.out
    assert "op://Infrastructure/prod-db/password" in r.out
    sid = r.out.split("episteme approve ", 1)[1].split()[0]
    assert sid.startswith("s_")
    r = cli("approve", sid, "--reason", "incident 4711", "--server", url, "--token", lead,
            home_arg=False)  # fmt: skip
    assert r.code == 0, r.err
    assert "Most likely root cause: Database connection exhaustion" in r.out
    assert "Terminate the sessions idle in transaction" in r.out
    assert CANARY not in r.out
    listed = cli("sessions", "--json", "--server", url, "--token", dev, home_arg=False).json()
    assert [(s["id"], s["status"]) for s in listed] == [(sid, "completed")]


def test_a_session_is_shown_followed_and_deleted(cli: Cli, served: tuple[str, str, str]) -> None:
    # A session an alert opened, or one approved in the console, could be read only
    # through the console or curl: no command showed one session or removed it.
    url, dev, lead = served

    def run(*args: str, token: str = dev) -> Any:
        return cli(*args, "--server", url, "--token", token, home_arg=False)

    made = run("diagnose", "database connection failures", "--json")
    sid = made.out.split('"session_id":"', 1)[1].split('"', 1)[0]
    waiting = run("session", "show", sid)
    assert waiting.code == 0, waiting.err
    assert f"session {sid} (prod): waiting_for_approval" in waiting.out
    assert "asks for op://Infrastructure/prod-db/password" in waiting.out
    assert f"an approver runs: episteme approve {sid}" in waiting.out
    assert run("approve", sid, "--reason", "incident 4711", token=lead).code == 0
    shown = run("session", "show", sid)
    assert "completed" in shown.out
    assert "decided by lead: incident 4711" in shown.out
    assert "Most likely root cause: Database connection exhaustion" in shown.out
    assert CANARY not in shown.out
    assert run("session", "show", sid, "--json").json()["status"] == "completed"
    followed = run("session", "show", sid, "--follow", "--json")
    kinds = [json.loads(line)["type"] for line in followed.out.splitlines()]  # one a line
    assert kinds[0] == "session_start"
    assert kinds[-1] == "diagnosis_complete"
    refused = run("session", "delete", sid)
    assert refused.code == 2
    assert refused.err.startswith("error: delete_session needs the approver role")  # not
    # approve_credentials: the refusal is recorded as what was tried
    assert run("session", "delete", sid, token=lead).out == f"deleted {sid}\n"
    gone = run("session", "show", sid)
    assert gone.code == 2
    assert gone.err.startswith("error: ")
    assert gone.err.count("\n") == 1


def test_incidents_list_what_alerts_opened(cli: Cli, served: tuple[str, str, str]) -> None:
    url, dev, _ = served
    alert = {
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "status": "firing",
        "commonLabels": {"alertname": "DiskFull"},
        "alerts": [{"status": "firing", "labels": {"instance": "db-1"}, "fingerprint": "d1"}],
    }

    def run(*args: str) -> Any:
        return cli(*args, "--server", url, "--token", dev, home_arg=False)

    with Client(url, dev) as client:
        client.send_alerts(alert)
    for _ in range(100):  # the route answers at once; the incident opens just after
        listed = run("incidents", "--json").json()
        if listed and listed[0]["session_id"]:
            break
        time.sleep(0.05)
    [incident] = listed
    table = run("incidents").out
    assert incident["key"] in table
    assert "DiskFull" in table
    assert incident["session_id"] in table
    assert run("incidents", "--status", "resolved").out == "no incident\n"
    refused = run("incidents", "--status", "closed")
    assert refused.code == 2
    assert refused.err.count("\n") == 1


def test_deny_and_the_errors_a_user_meets(cli: Cli, served: tuple[str, str, str]) -> None:
    url, dev, lead = served
    made = cli("diagnose", "db timeouts", "--json", "--server", url, "--token", dev,
               home_arg=False)  # fmt: skip
    assert made.code == 0, made.err
    sid = made.out.split('"session_id":"', 1)[1].split('"', 1)[0]
    r = cli("approve", sid, "--reason", "mine", "--server", url, "--token", dev, home_arg=False)
    assert r.code == 2
    assert r.err.startswith("error: ")
    assert "needs the approver role" in r.err
    assert "Traceback" not in r.err
    r = cli("deny", sid, "--reason", "not now", "--server", url, "--token", lead, home_arg=False)
    assert r.code == 0, r.err
    r = cli("approve", sid, "--reason", "go", "--server", url, "--token", lead, home_arg=False)
    assert r.code == 2
    assert "is denied" in r.err
    # a second session: a page of one names the option that asks for the next
    again = cli("diagnose", "db timeouts", "--json", "--server", url, "--token", dev,
                home_arg=False)  # fmt: skip
    assert again.code == 0, again.err
    both = cli("sessions", "--json", "--server", url, "--token", dev, home_arg=False).json()
    first = cli("sessions", "--limit", "1", "--server", url, "--token", dev, home_arg=False)
    assert f"1 shown; for older ones add --after {both[0]['id']}" in first.out
    rest = cli("sessions", "--json", "--after", both[0]["id"], "--server", url, "--token", dev,
               home_arg=False)  # fmt: skip
    assert rest.json() == both[1:]
    r = cli("sessions", "--server", "http://127.0.0.1:9", "--token", dev, home_arg=False)
    assert r.code == 1
    assert "unreachable" in r.err
    r = cli("sessions", home_arg=False)
    assert r.code == 2
    assert "--server" in r.err


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A server whose policy lets a requester approve their own session: (url, token)."""
    with Ledger.init(tmp_path / "solo") as ledger:
        engine = DiagnosisEngine(
            ledger,
            Vault(),
            config=DiagnosisConfig(self_approval=True),
            specialists={"database": database},
        )
        settings = Settings(home=tmp_path / "solo", mcp=False, background=False)
        app = create_app(settings, ledger=ledger, diagnosis=engine)
        token, _ = ledger.issue_token("oncall", ["agent", "approver"], by="admin")
        with live_server(app) as url:
            yield url, token


def test_the_approval_is_asked_inline_for_a_subset(cli: Cli, solo: tuple[str, str]) -> None:
    url, token = solo
    r = cli(
        "diagnose", "database connection failures", "--env", "prod", "--ask",
        "--server", url, "--token", token, home_arg=False,
        stdin="s\n1,3\nincident 4711\n",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "approve [a]ll, a [s]ubset, or [d]eny?" in r.out
    assert "approved by oncall: incident 4711" in r.out
    assert "Most likely root cause" in r.out or "Inconclusive" in r.out
    listed = cli("sessions", "--json", "--server", url, "--token", token, home_arg=False).json()
    assert len(listed[0]["approved"]) == 2
    assert listed[0]["status"] == "completed"


@pytest.mark.parametrize("picked", ["0", "-1", "1,x", ",", "9", "²"])
def test_a_subset_picked_out_of_range_approves_nothing(
    cli: Cli, solo: tuple[str, str], picked: str
) -> None:
    # 0 approved the last reference listed and -1 the one before it (Python's indexing).
    url, token = solo
    r = cli(
        "diagnose", "database connection failures", "--env", "prod", "--ask",
        "--server", url, "--token", token, home_arg=False, stdin=f"s\n{picked}\n",
    )  # fmt: skip
    assert r.code == 2, r.out
    assert r.err.startswith("error: pick numbers between 1 and 3, such as 1,3"), r.err
    listed = cli("sessions", "--json", "--server", url, "--token", token, home_arg=False).json()
    assert listed[0]["status"] == "waiting_for_approval"


def test_asking_here_and_printing_json_are_not_given_together(cli: Cli) -> None:
    # --json silently won: the session waited for an approver no one was asked to be
    r = cli(
        "diagnose", "db timeouts", "--ask", "--json", "--server", "http://127.0.0.1:9",
        home_arg=False,
    )  # fmt: skip
    assert r.code == 2
    assert r.err == (
        "error: --ask asks a person on this terminal and --json prints events for a program:"
        " give one of them\n"
    )


def test_the_approval_is_not_asked_of_someone_who_cannot_give_it(
    cli: Cli, served: tuple[str, str, str], tmp_path: Path
) -> None:
    # It asked, took the answer, and then failed on the role or on the policy.
    url, dev, _lead = served
    with Ledger.open(tmp_path / "server") as ledger:
        both, _ = ledger.issue_token("ops", ["agent", "approver"], by="admin")
    for token, needs in (
        (dev, "the approver role"),
        (both, "someone else: this server does not let a requester approve their own session"),
    ):
        r = cli("diagnose", "db timeouts", "--ask", "--server", url, "--token", token,
                home_arg=False, stdin="a\nmine\n")  # fmt: skip
        assert r.code == 0, r.err
        assert "approve [a]ll" not in r.out
        line = r.out.strip().splitlines()[-1]
        assert line.startswith("an approver runs: episteme approve s_")
        assert line.endswith(f"(approving it needs {needs})")


def test_an_admin_is_asked_as_an_approver_is(
    cli: Cli, solo: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = solo
    with Ledger.open(tmp_path / "solo") as ledger:
        admin, _ = ledger.issue_token("root", ["admin"], by="admin")
    r = cli("diagnose", "db timeouts", "--ask", "--server", url, "--token", admin,
            home_arg=False, stdin="d\nnot now\n")  # fmt: skip
    assert r.code == 0, r.err
    assert "approve [a]ll, a [s]ubset, or [d]eny?" in r.out
    assert "denied s_" in r.out


def test_an_answer_that_never_comes_is_one_line(cli: Cli, solo: tuple[str, str]) -> None:
    url, token = solo
    r = cli("diagnose", "db timeouts", "--ask", "--server", url, "--token", token,
            home_arg=False, stdin="")  # fmt: skip
    assert r.code == 2
    assert r.err.startswith("error: no answer was given: the session waits;")
    assert "Aborted" not in r.out + r.err


def test_a_session_that_ends_in_error_exits_1_and_the_conclusion_is_said_once(
    cli: Cli, tmp_path: Path
) -> None:
    with Ledger.init(tmp_path / "down") as ledger:
        down = DiagnosisEngine(ledger, Vault(fail=True), specialists={"database": database},
                               config=DiagnosisConfig(self_approval=True))  # fmt: skip
        app = create_app(Settings(home=tmp_path / "down", mcp=False, background=False),
                         ledger=ledger, diagnosis=down)  # fmt: skip
        token, _ = ledger.issue_token("oncall", ["agent", "approver"], by="admin")
        with live_server(app) as url:
            where = ("--server", url, "--token", token)
            r = cli("diagnose", "db timeouts", "--ask", *where, home_arg=False,
                    stdin="a\ngo\n")  # fmt: skip
            assert r.code == 1, r.out + r.err
            assert "failed: ConnectionError: the secret store" in r.out
            sid = r.out.split("session ", 1)[1].split()[0]
            shown = cli("session", "show", sid, "--follow", *where, home_arg=False)
            assert shown.code == 1
    with Ledger.init(tmp_path / "up") as ledger:
        up = DiagnosisEngine(ledger, Vault(), specialists={"database": database},
                             config=DiagnosisConfig(self_approval=True))  # fmt: skip
        app = create_app(Settings(home=tmp_path / "up", mcp=False, background=False),
                         ledger=ledger, diagnosis=up)  # fmt: skip
        token, _ = ledger.issue_token("oncall", ["agent", "approver"], by="admin")
        with live_server(app) as url:
            r = cli("diagnose", "database connection failures", "--ask", "--server", url,
                    "--token", token, home_arg=False, stdin="a\ngo\n")  # fmt: skip
    assert r.code == 0, r.err
    assert r.out.count("Most likely root cause: Database connection exhaustion") == 1


def test_a_session_is_denied_inline(cli: Cli, solo: tuple[str, str]) -> None:
    url, token = solo
    r = cli(
        "diagnose", "db timeouts", "--ask", "--server", url, "--token", token, home_arg=False,
        stdin="d\nnot during the freeze\n",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "denied s_" in r.out
    listed = cli("sessions", "--json", "--server", url, "--token", token, home_arg=False).json()
    assert listed[0]["status"] == "denied"
    assert listed[0]["reason"] == "not during the freeze"


def test_a_wrong_server_is_one_line_that_keeps_its_password(
    cli: Cli, served: tuple[str, str, str]
) -> None:
    # These commands had an HTTP client of their own: a malformed address or a server
    # that is not Episteme gave a traceback or a whole HTML page, and an address with
    # credentials had them sent as Basic auth (so the token was not) and echoed back.
    url, dev, _ = served
    host = url.removeprefix("http://")
    foreign = Starlette(routes=[
        Route("/v1/diagnosis/sessions", lambda r: PlainTextResponse("<html>hi</html>")),
        Route("/v1/diagnosis/deny/{id}", lambda r: HTMLResponse("<h1>Not here</h1>\n" * 15, 404),
              methods=["POST"]),
    ])  # fmt: skip
    with live_server(foreign) as other:
        cases = [
            (("sessions", "--server", "http://h:abc"), 2, "not a server address"),
            (("sessions", "--server", "notaurl"), 2, "give http:// or https://"),
            (("sessions", "--server", other), 1, "not what this client reads"),
            (("deny", "s_x", "--reason", "r", "--server", other), 2, "answered 404 Not Found"),
            (("sessions", "--server", "http://u:Canary9@127.0.0.1:9"), 1, "unreachable"),
        ]
        for args, code, words in cases:
            r = cli(*args, "--token", dev, home_arg=False)
            assert r.code == code, r.err
            assert words in r.err
            assert len(r.err.splitlines()) == 1, r.err
            assert "Canary9" not in r.err
    # the token is sent, whatever credentials the address carries
    with_credentials = f"http://u:Canary9@{host}"
    listed = cli("sessions", "--json", "--server", with_credentials, "--token", dev,
                 home_arg=False)  # fmt: skip
    assert listed.code == 0, listed.err


def test_the_token_goes_to_the_server_not_to_a_proxy(
    cli: Cli, served: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With an environment's proxy, the token went to it (over plain http, to read).
    url, dev, _ = served
    seen: list[str] = []

    async def proxy(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(dict(scope["headers"]).get(b"authorization", b"").decode())
            await PlainTextResponse("proxied", 502)(scope, receive, send)

    with live_server(proxy) as proxy_url:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        r = cli("sessions", "--json", "--server", url, "--token", dev, home_arg=False)
    assert r.code == 0, r.err
    assert seen == []
