"""Shared fixtures: a fresh ledger on each backend (a real SQLite file, a real PostgreSQL
database), a clock we control, the CLI."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from whenever import Instant

from episteme.cli import main
from episteme.cli.common import CliState, ShownConsole
from episteme.ledger import Ledger
from episteme.timeutil import ManualClock
from tests.backends import BACKENDS
from tests.postgres import Cluster, running_cluster
from tests.receiver import Receiver, running_receiver

T0 = Instant.parse_iso("2026-11-21T09:00:00Z")


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests read times in UTC unless they set another zone themselves."""
    import whenever

    monkeypatch.setenv("TZ", "UTC")
    whenever.reset_system_tz()
    yield
    whenever.reset_system_tz()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture(scope="session")
def fresh_location(pg_cluster: Cluster) -> Callable[[str], AbstractContextManager[str | Path]]:
    """Make a fresh ledger location on demand (for Hypothesis examples, one each)."""

    @contextmanager
    def make(backend: str) -> Iterator[str | Path]:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                yield Path(tmp) / "home"
            return
        url = pg_cluster.create_database()
        try:
            yield url
        finally:
            pg_cluster.drop_database(unquote(urlsplit(url).path.removeprefix("/")))

    return make


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, home: Path) -> str | Path:
    """Where a test's ledger lives: a SQLite home, or a fresh PostgreSQL database.

    Every test that takes `ledger` (or `location`) runs once on each backend.
    """
    if request.param == "sqlite":
        return home
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def ledger(location: str | Path, clock: ManualClock) -> Iterator[Ledger]:
    with Ledger.init(location, clock=clock) as led:
        yield led


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Result]


@pytest.fixture
def cli(home: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run `episteme ARGS --home HOME` in-process on the test clock."""

    def run(*args: str, home_arg: bool = True, stdin: str | None = None) -> Result:
        import io
        import sys

        argv = [*args, "--home", str(home)] if home_arg else list(args)
        state = CliState(clock=clock, console=ShownConsole(highlight=False, width=200))
        old_stdin = sys.stdin
        if stdin is not None:  # as a process's: text over bytes
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8")
        code = 0
        try:
            main(argv, cli_state=state)
        except SystemExit as exc:
            code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
        finally:
            sys.stdin = old_stdin
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A running PostgreSQL cluster for the whole session (one per xdist worker)."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(unquote(urlsplit(url).path.removeprefix("/")))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local HTTP server that records the webhook deliveries it is sent."""
    with running_receiver() as rec:
        yield rec
