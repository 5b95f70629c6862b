"""Helpers for the CLI tests: a small on-call scenario and checks on errors and the journal."""

from __future__ import annotations

import io
import sqlite3
from contextlib import closing, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whenever import Instant

from episteme.cli import main
from episteme.cli.common import CliState, ShownConsole
from episteme.timeutil import ManualClock
from tests.conftest import Cli, Result

# The story happens on 2026-11-21 (UTC, the tests' zone); the investigation the next night.
MORNING = Instant.parse_iso("2026-11-21T09:00:00Z")
AFTERNOON = Instant.parse_iso("2026-11-21T14:30:00Z")
EVENING = Instant.parse_iso("2026-11-21T20:40:00Z")
DEPLOY = Instant.parse_iso("2026-11-21T21:00:00Z")
ONCALL = Instant.parse_iso("2026-11-22T03:00:00Z")


@dataclass
class Scenario:
    """Ids of the ES256 outage, recorded through the CLI."""

    rs256: str  # approved RS256, epoch platform-baseline
    issuer: str  # approved issuer, no epoch
    es256: str  # proposed ES256, epoch rfc-research-1
    q_orch: str  # orchestrator's read with lens latest (served ES256)
    d_orch: str  # the orchestrator's decision citing it
    q_deploy: str  # the deploy agent's read of the issuer
    d_deploy: str  # the deploy decision citing both reads


def ok(r: Result) -> Any:
    """The JSON of a successful command (fails the test with stderr otherwise)."""
    assert r.code == 0, f"exit {r.code}\nout: {r.out}\nerr: {r.err}"
    assert "Traceback" not in r.out + r.err
    return r.json()


def done(r: Result) -> str:
    """The output of a successful command without --json."""
    assert r.code == 0, f"exit {r.code}\nout: {r.out}\nerr: {r.err}"
    assert "Traceback" not in r.out + r.err
    return r.out


def build_scenario(cli: Cli, clock: ManualClock) -> Scenario:
    clock.set(MORNING)
    ok(cli("init", "--json"))
    rs = ok(
        cli(
            "assert",
            "auth.jwt.algorithm",
            "RS256",
            "--agent",
            "platform-team",
            "--lifecycle",
            "approved",
            "--confidence",
            "0.92",
            "--source",
            "runbook://auth/jwt",
            "--epoch",
            "platform-baseline",
            "--json",
        )
    )[0]
    clock.set(MORNING.add(minutes=5))
    issuer = ok(
        cli(
            "assert",
            "auth.jwt.issuer",
            "https://auth.internal",
            "--agent",
            "platform-team",
            "--lifecycle",
            "approved",
            "--source",
            "runbook://auth/jwt",
            "--json",
        )
    )[0]
    clock.set(AFTERNOON)
    es = ok(
        cli(
            "assert",
            "auth.jwt.algorithm",
            "ES256",
            "--agent",
            "research-agent",
            "--confidence",
            "0.87",
            "--source",
            "https://www.rfc-editor.org/rfc/rfc7518",
            "--evidence",
            "ES256 gives shorter tokens",
            "--epoch",
            "rfc-research-1",
            "--json",
        )
    )[0]
    clock.set(EVENING)
    q_orch = ok(cli("query", "auth.jwt", "--agent", "orchestrator", "--lens", "latest", "--json"))
    d_orch = ok(
        cli(
            "decide",
            "use ES256 for auth-service tokens",
            "--agent",
            "orchestrator",
            "--query",
            q_orch["query_id"],
            "--json",
        )
    )
    clock.set(DEPLOY.subtract(minutes=2))
    q_deploy = ok(
        cli("query", "auth.jwt.issuer", "--agent", "deploy-agent", "--lens", "latest", "--json")
    )
    clock.set(DEPLOY)
    d_deploy = ok(
        cli(
            "decide",
            "deployed auth-service config (JWT ES256)",
            "--agent",
            "deploy-agent",
            "--query",
            q_orch["query_id"],
            "-q",
            q_deploy["query_id"][:10],
            "--json",
        )
    )
    clock.set(ONCALL)
    return Scenario(
        rs256=rs["id"],
        issuer=issuer["id"],
        es256=es["id"],
        q_orch=q_orch["query_id"],
        d_orch=d_orch["id"],
        q_deploy=q_deploy["query_id"],
        d_deploy=d_deploy["id"],
    )


def runner(home: Path, clock: ManualClock) -> Cli:
    """The `cli` fixture's runner outside a test (for the session's scenario template)."""

    def run(*args: str, home_arg: bool = True, stdin: str | None = None) -> Result:
        assert stdin is None
        argv = [*args, "--home", str(home)] if home_arg else list(args)
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with redirect_stdout(out), redirect_stderr(err):
            state = CliState(clock=clock, console=ShownConsole(highlight=False, width=200))
            try:
                main(argv, cli_state=state)
            except SystemExit as exc:
                code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
        return Result(code, out.getvalue(), err.getvalue())

    return run


def assert_error(r: Result, code: int, *needles: str) -> str:
    """A refused command: exit `code`, one `error:` line on stderr naming `needles`."""
    assert r.code == code, f"exit {r.code}\nout: {r.out}\nerr: {r.err}"
    assert "Traceback" not in r.out + r.err
    assert r.out == ""
    lines = r.err.splitlines()
    assert len(lines) == 1, r.err
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def assert_usage_error(r: Result, *needles: str) -> None:
    """Typer's own usage error (exit 2) for an option or argument it cannot parse."""
    assert r.code == 2, f"exit {r.code}\nout: {r.out}\nerr: {r.err}"
    assert "Traceback" not in r.out + r.err
    assert r.out == ""
    assert "Usage: episteme" in r.err
    for needle in needles:
        assert needle in r.err, f"{needle!r} not in {r.err!r}"


def journal(cli: Cli, *home: str) -> list[str]:
    """The exported journal, one JSON line per event (exporting writes nothing)."""
    args = ("export", "--home", *home) if home else ("export",)
    r = cli(*args, home_arg=not home)
    assert r.code == 0, r.err
    return r.out.splitlines()


def head(cli: Cli, *home: str) -> dict[str, Any]:
    args = ("verify", "--json", "--home", *home) if home else ("verify", "--json")
    report: dict[str, Any] = ok(cli(*args, home_arg=not home))
    return report


def sql(db: Path, statement: str, *params: Any) -> None:
    """Change a ledger file behind Episteme's back, as a person with sqlite3 would."""
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(statement, params)
