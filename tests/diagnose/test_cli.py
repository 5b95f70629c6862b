"""`episteme diagnose`, `approve s_…`, `deny` and `sessions` against a live server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from episteme.api import Settings, create_app
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
    r = cli("sessions", "--server", "http://127.0.0.1:9", "--token", dev, home_arg=False)
    assert r.code == 1
    assert "unreachable" in r.err
    r = cli("sessions", home_arg=False)
    assert r.code == 2
    assert "--server" in r.err
