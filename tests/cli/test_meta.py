"""Help for every command, every command in the docs, and the demo."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup

from episteme.cli.common import app
from tests.cli.support import head
from tests.conftest import Cli

ROOT = Path(__file__).resolve().parents[2]


def _walk(group: TyperGroup, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], bool]]:
    for name, command in sorted(group.commands.items()):
        is_group = isinstance(command, TyperGroup)
        yield (*path, name), is_group
        if isinstance(command, TyperGroup):
            yield from _walk(command, (*path, name))


def _commands() -> list[tuple[tuple[str, ...], bool]]:
    import episteme.cli  # noqa: F401  (registers every command on the app)

    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    return list(_walk(root))


COMMANDS = [path for path, _ in _commands()]  # groups and commands, e.g. ("epoch", "show")
GROUPS = {path for path, is_group in _commands() if is_group}
LEAVES = [path for path in COMMANDS if path not in GROUPS]
EXPECTED = {
    ("init",),
    ("assert",),
    ("approve",),
    ("deprecate",),
    ("reject",),
    ("query",),
    ("served",),
    ("audit",),
    ("diff",),
    ("blame",),
    ("trace",),
    ("impact",),
    ("decide",),
    ("correct",),
    ("epoch", "supersede"),
    ("epoch", "show"),
    ("lens", "define"),
    ("lens", "list"),
    ("verify",),
    ("rebuild",),
    ("export",),
    ("import",),
    ("demo",),
    ("serve",),
    ("token", "create"),
    ("token", "list"),
    ("token", "revoke"),
    ("denials",),
    ("check",),
    ("checks",),
    ("decisions",),
    ("constraint", "add"),
    ("constraint", "list"),
    ("constraint", "show"),
    ("trust",),
    ("conflicts",),
    ("notifications",),
    ("gardener", "status"),
    ("gardener", "replay"),
    ("webhook", "add"),
    ("webhook", "list"),
    ("webhook", "remove"),
    ("webhook", "deliveries"),
}


def test_the_app_has_every_ledger_command() -> None:
    assert set(LEAVES) >= EXPECTED
    assert {("epoch",), ("lens",), ("token",)} <= GROUPS


def test_top_level_help(cli: Cli) -> None:
    r = cli("--help", home_arg=False)
    assert r.code == 0, r.err
    assert "what your agents believed" in r.out
    for name, *_rest in COMMANDS:
        assert name in r.out
    bare = cli(home_arg=False)
    assert "Usage: episteme" in bare.out + bare.err


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help(cli: Cli, path: tuple[str, ...]) -> None:
    r = cli(*path, "--help", home_arg=False)
    assert r.code == 0, r.err
    assert r.err == ""
    assert f"Usage: episteme {' '.join(path)}" in r.out
    lines = [ln.strip() for ln in r.out.splitlines()]
    usage_at = next(i for i, ln in enumerate(lines) if ln.startswith("Usage:"))
    description = next(ln for ln in lines[usage_at + 1 :] if ln)
    assert len(description) > 10, r.out
    assert not description.startswith(("Options", "Arguments", "╭")), r.out
    assert "--help" in r.out


@pytest.mark.parametrize("path", sorted(EXPECTED), ids=" ".join)
def test_every_ledger_command_takes_json_and_home(path: tuple[str, ...]) -> None:
    command = typer.main.get_command(app)
    for name in path:
        assert isinstance(command, TyperGroup)
        command = command.commands[name]
    options = {opt for p in command.params for opt in p.opts}
    assert "--home" in options
    # export writes JSON lines; demo tells a story; serve runs a server
    if path not in {("export",), ("demo",), ("serve",)}:
        assert "--json" in options


def test_every_command_is_documented() -> None:
    """Each command appears as `episteme NAME` or `NAME` in the docs or README.md."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n".join(p.read_text() for p in docs if p.exists())
    missing = [
        " ".join(path)
        for path in LEAVES
        if not re.search(r"`(?:episteme )?" + re.escape(" ".join(path)) + r"\b", text)
    ]
    assert missing == [], f"not in docs/*.md or README.md: {missing}"


def test_demo_tells_the_story_and_leaves_a_ledger_that_verifies(cli: Cli, tmp_path: Path) -> None:
    home = tmp_path / "demo"
    r = cli("demo", "--home", str(home), home_arg=False)
    assert r.code == 0, r.err
    assert "Traceback" not in r.out + r.err
    out = r.out
    for command in (
        "$ episteme init",
        "$ episteme assert auth.jwt.algorithm RS256",
        "$ episteme query auth.jwt --agent orchestrator --lens latest",
        "$ episteme decide",
        "$ episteme served auth.jwt.algorithm --at 'yesterday 21:00'",
        "$ episteme audit --agent deploy-agent",
        "$ episteme diff auth --from 'yesterday 14:00'",
        "$ episteme blame",
        "$ episteme trace d_",
        "$ episteme impact",
        "$ episteme correct",
        "$ episteme query auth.jwt.algorithm --agent deploy-agent",
        "$ episteme verify",
    ):
        assert command in out, command
    # The last read: RS256 through the default lens, saying what it hid.
    tail = out[out.rindex("$ episteme query") :]
    assert "RS256" in tail
    assert "ES256" not in tail
    assert "1 proposed assertion hidden" in tail
    assert "chain ok: " in tail
    assert f"export EPISTEME_HOME={home}" in out
    report = head(cli, str(home))
    assert report["ok"] is True
    assert report["events"] >= 10


HEAVY = ("httpx", "episteme.client", "episteme.api", "fastapi", "uvicorn", "mcp")
"""What a ledger command does not need: httpx alone (with its own command line's
modules) and the client took about a sixth of a second from every command's start."""


@pytest.mark.parametrize("command", [["init"], ["blame", "auth"], ["audit", "--json"]])
def test_a_ledger_command_starts_without_the_http_stack(tmp_path: Path, command: list[str]) -> None:
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: print(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
        "from episteme.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    home = ["--home", str(tmp_path / "home")]
    if command != ["init"]:
        subprocess.run([sys.executable, "-m", "episteme", "init", *home], check=True)
    out = subprocess.run(
        [sys.executable, "-c", code, *command, *home], capture_output=True, text=True, check=False
    )
    assert out.returncode in (0, 2), out.stderr  # 2: blame of a subject with no assertion
    assert out.stdout.splitlines()[-1] == "[]"
