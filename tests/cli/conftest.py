"""Fixtures for the CLI tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from episteme.timeutil import ManualClock
from tests.cli.support import MORNING, ONCALL, Scenario, build_scenario, runner


@pytest.fixture(scope="session")
def scenario_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Scenario]:
    """The ES256 outage recorded once per session through the CLI, on its own clock."""
    home = tmp_path_factory.mktemp("scenario") / "home"
    clock = ManualClock(MORNING)
    return home, build_scenario(runner(home, clock), clock)


@pytest.fixture
def scenario(scenario_template: tuple[Path, Scenario], home: Path, clock: ManualClock) -> Scenario:
    """A copy of the scenario's ledger in this test's home; the clock at 03:00 the next night."""
    template, ids = scenario_template
    shutil.copytree(template, home)
    clock.set(ONCALL)
    return ids
