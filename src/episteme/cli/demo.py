"""`episteme demo`: the ES256 outage, told with the real commands on a fresh home.

The story happens yesterday (local time) on a clock the demo controls; the
investigation happens now. Every step prints the command it runs, so a reader can
repeat the reads against the demo's home afterwards.
"""

from __future__ import annotations

import shlex
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.rule import Rule
from whenever import Instant

from episteme.cli.common import CliState, app, state
from episteme.errors import InvalidInput
from episteme.timeutil import ManualClock, parse_time

_STORY_HOME_MARK = "episteme-demo-"


class _Demo:
    def __init__(self, home: Path, console: Console) -> None:
        self.home = home
        self.console = console
        self.clock = ManualClock()
        self.real_now = self.clock.now()

    def at(self, local: str) -> None:
        """Move the story clock to a local time yesterday (``"yesterday 14:30"``)."""
        self.clock.set(parse_time(local, self.real_now))

    def now(self) -> None:
        """Back to the real clock for the investigation."""
        self.clock.set(Instant.now())

    def say(self, text: str) -> None:
        self.console.print(f"\n[bold cyan]{text}[/]")

    def run(self, *args: str, quiet: bool = False) -> str:
        """Run one `episteme` command in-process on the story clock; return its output."""
        shown = "episteme " + " ".join(shlex.quote(a) for a in args)
        self.console.print(f"[green]$ {shown}[/]", soft_wrap=True)
        obj = CliState(clock=self.clock, console=self.console)
        with self.console.capture() as cap:
            app(args=[*args, "--home", str(self.home)], obj=obj, standalone_mode=False)
        out = cap.get()
        if not quiet:
            self.console.print(out, end="", markup=False, highlight=False, soft_wrap=True)
        return out

    def run_json(self, *args: str) -> str:
        """Run with --json, print nothing but the command, return the id field."""
        import json

        out = self.run(*args, "--json", quiet=True)
        data = json.loads(out)
        item = data[0] if isinstance(data, list) else data
        for key in ("query_id", "id"):
            if key in item:
                value = str(item[key])
                self.console.print(f"  → {key} {value}", highlight=False)
                return value
        raise AssertionError(f"no id in {out!r}")


def tell(home: Path, console: Console) -> float:
    """Tell the story in `home`; return the seconds it took."""
    started = time.perf_counter()
    d = _Demo(home, console)
    d.at("yesterday 09:00")
    d.run("init", quiet=True)

    d.say("09:00 yesterday: the platform team records the JWT algorithm production uses.")
    d.run(
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
    )
    d.run(
        "assert",
        "auth.jwt.issuer",
        "https://auth.internal",
        "--agent",
        "platform-team",
        "--lifecycle",
        "approved",
        "--source",
        "runbook://auth/jwt",
    )

    d.say("14:30: a research agent reads RFC 7518 and stores ES256 as a *proposal*.")
    d.at("yesterday 14:30")
    es256 = d.run_json(
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
    )

    d.say("20:40: the orchestrator reads with lens 'latest' and gets the proposal.")
    d.at("yesterday 20:40")
    q_orch = d.run_json("query", "auth.jwt", "--agent", "orchestrator", "--lens", "latest")
    d.run(
        "decide", "use ES256 for auth-service tokens", "--agent", "orchestrator", "--query", q_orch
    )

    d.say("21:00: the deploy agent ships the config, citing that read. 401 for every request.")
    d.at("yesterday 20:58")
    q_deploy = d.run_json("query", "auth.jwt.issuer", "--agent", "deploy-agent", "--lens", "latest")
    d.at("yesterday 21:00")
    deploy = d.run_json(
        "decide",
        "deployed auth-service config (JWT ES256)",
        "--agent",
        "deploy-agent",
        "--query",
        q_orch,
        "--query",
        q_deploy,
    )
    d.at("yesterday 21:01")
    d.run(
        "assert",
        "auth.service.status",
        "401 for every request",
        "--agent",
        "monitor",
        "--kind",
        "observation",
        "--lifecycle",
        "approved",
        "--source",
        "alertmanager",
    )

    d.now()
    d.say("03:00: on call. 1. What did agents believe at 21:00, and what were they served?")
    d.run(
        "query",
        "auth.jwt.algorithm",
        "--agent",
        "oncall",
        "--lens",
        "all",
        "--at",
        "yesterday 21:00",
    )
    d.run("served", "auth.jwt.algorithm", "--at", "yesterday 21:00")
    d.say("2. Which queries did the deploy agent make?")
    d.run("audit", "--agent", "deploy-agent", "--since", "yesterday 00:00")
    d.say("3. What changed about auth since 14:00?")
    d.run("diff", "auth", "--from", "yesterday 14:00")
    d.say("4. Who introduced ES256, and when?")
    d.run("blame", es256[:12])
    d.say("   And how did the deploy decision come to rely on it?")
    d.run("trace", deploy)
    d.say("5. What else might be affected?")
    d.run("impact", es256[:12])
    d.say("6. Mark it incorrect, record the right value and a constraint for the next agent.")
    d.run(
        "correct",
        es256[:12],
        "--by",
        "oncall",
        "--reason",
        "production verifies RS256; ES256 was an unreviewed proposal",
        "--value",
        "RS256",
        "--forbid",
    )

    d.say("The gardener turns the correction into lower trust for who spread ES256.")
    d.run("gardener", "--once")
    d.run("trust", "--topic", "auth")
    d.say("A fresh agent checks its plan before acting, and is stopped.")
    d.run(
        "check",
        "--agent",
        "deploy-agent",
        "--scope",
        "auth.jwt.algorithm",
        "--plan",
        "set auth.jwt.algorithm to ES256 and roll the signing keys",
    )

    d.say("The correct path: lens 'approved' (the default) shows RS256 and says what it hid,")
    d.say("both now and as it would have at 20:40 yesterday.")
    d.run("query", "auth.jwt.algorithm", "--agent", "deploy-agent")
    d.run("query", "auth.jwt.algorithm", "--agent", "deploy-agent", "--at", "yesterday 20:40")
    d.run("verify")
    return time.perf_counter() - started


@app.command()
def demo(
    ctx: typer.Context,
    home: Annotated[
        Path | None, typer.Option("--home", help="Empty directory for the demo ledger.")
    ] = None,
) -> None:
    """Tell the ES256 outage story on a fresh ledger, with the commands it runs."""
    if home is None:
        home = Path(tempfile.mkdtemp(prefix=_STORY_HOME_MARK))
    elif home.exists() and not home.is_dir():
        raise InvalidInput(f"--home {home} is a file: give an empty directory for the demo")
    elif home.exists() and any(home.iterdir()):
        raise InvalidInput(f"--home {home} is not empty: the demo needs a fresh directory")
    console = state(ctx).console
    seconds = tell(home, console)
    console.print(Rule())
    console.print(f"demo told in {seconds:.2f} s. Repeat any read against its ledger:")
    console.print(f"  export EPISTEME_HOME={home}", highlight=False)
    console.print("  episteme query auth --agent you --lens all", highlight=False)
