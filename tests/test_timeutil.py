"""Times as people type them and read them back, in the zones and hours that trip them:
clocks going forward and back, zones far from UTC, a TZ this machine does not know."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import whenever
from whenever import Instant

from episteme.errors import InvalidInput
from episteme.timeutil import parse_time, show


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        with contextlib.suppress(ValueError):  # an unknown zone: every use of it raises
            whenever.reset_system_tz()

    yield set_zone
    set_zone("UTC")


def at(text: str) -> Instant:
    return Instant.parse_iso(text)


def test_shown_times_are_exact_and_say_the_local_clock(zone: Callable[[str], None]) -> None:
    zone("Europe/Berlin")
    event = at("2026-12-06T14:44:09.371726Z")
    shown = show(event)
    assert shown == "2026-12-06T14:44:09.371726Z (15:44 CET, UTC+01:00)"
    assert parse_time(shown.split(" ")[0], event) == event  # pasted back, the same instant
    assert show(at("2026-07-01T12:00:00Z")) == "2026-07-01T12:00:00Z (14:00 CEST, UTC+02:00)"
    zone("Australia/Lord_Howe")  # a half-hour offset, and another local date
    assert show(at("2026-06-30T20:00:00Z")) == "2026-06-30T20:00:00Z (2026-07-01 06:30 UTC+10:30)"
    zone("UTC")
    assert show(event) == "2026-12-06T14:44:09.371726Z"


@pytest.mark.parametrize("name", ["Nowhere/Bogus", "Europe/Berln"])
def test_an_unknown_zone_is_one_clear_error(tmp_path: Path, name: str) -> None:
    # in a process of its own: the zone is read when a process first needs it
    home = str(tmp_path / "home")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TZ": name}
        argv = [sys.executable, "-m", "episteme", *args, "--home", home]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    made = run("init")
    assert made.returncode == 0, made.stderr
    assert run("assert", "auth.jwt.algorithm", "RS256", "--agent", "ops").returncode == 0
    shown = run("blame", "auth.jwt.algorithm")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"at \d{4}-\d\d-\d\dT[\d:.]+Z$", shown.stdout, re.MULTILINE), shown.stdout
    for when in ("21:00", "2026-11-21 21:00", "yesterday 9pm"):
        refused = run("query", "auth", "--agent", "oncall", "--at", when)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr == (
            f"error: --at: the time zone TZ='{name}' is not one this machine knows: set TZ to a"
            " name such as Europe/Berlin, or give times in RFC 3339 or as 6h ago\n"
        )
    assert run("query", "auth", "--agent", "oncall", "--at", "1m ago").returncode == 0


def test_the_ends_of_the_range_are_shown_in_utc(zone: Callable[[str], None]) -> None:
    zone("Europe/Berlin")  # local time there is already in the year 10000
    assert show(at("9999-12-31T23:59:59Z")) == "9999-12-31T23:59:59Z"
    zone("America/New_York")  # and here still in the year 0
    assert show(at("0001-01-01T00:00:00Z")) == "0001-01-01T00:00:00Z"


def test_a_local_time_the_clocks_skipped_is_refused(zone: Callable[[str], None]) -> None:
    zone("Europe/Berlin")  # 2026-03-29: 02:00 CET became 03:00 CEST
    now = at("2026-03-29T01:10:00Z")  # 03:10 CEST
    with pytest.raises(InvalidInput, match="2026-03-29 02:30 does not exist in Europe/Berlin"):
        parse_time("2026-03-29 02:30", now)
    # a bare clock time means its most recent occurrence: today's never was
    assert parse_time("02:30", now) == at("2026-03-28T01:30:00Z")
    assert parse_time("03:05", now) == at("2026-03-29T01:05:00Z")


def test_a_local_time_the_clocks_went_through_twice(zone: Callable[[str], None]) -> None:
    zone("Europe/Berlin")  # 2026-10-25: 03:00 CEST became 02:00 CET
    with pytest.raises(InvalidInput, match="happened twice") as twice:
        parse_time("2026-10-25 02:30", at("2026-10-26T00:00:00Z"))
    assert "2026-10-25T00:30:00Z or 2026-10-25T01:30:00Z" in twice.value.message
    # a bare clock time: the most recent of the two that is not in the future
    assert parse_time("02:30", at("2026-10-25T01:45:00Z")) == at("2026-10-25T01:30:00Z")
    assert parse_time("02:30", at("2026-10-25T00:50:00Z")) == at("2026-10-25T00:30:00Z")


def test_forms_people_type(zone: Callable[[str], None]) -> None:
    zone("Europe/Berlin")
    now = at("2026-12-06T14:00:00Z")
    assert parse_time("2026-11-21T21:00", now) == at("2026-11-21T20:00:00Z")  # ISO, local
    assert parse_time("2026-11-21t21:00:30", now) == at("2026-11-21T20:00:30Z")
    assert parse_time("today 9am", now) == at("2026-12-06T08:00:00Z")
    for word in ("yesterday", "today"):
        with pytest.raises(InvalidInput, match=f"'{word}' needs a clock time: {word} 00:00"):
            parse_time(word, now)


def test_a_time_read_but_out_of_range_says_so() -> None:
    # RFC 3339 that reads, whose instant falls before year 1 or past 9999 in UTC, was
    # "cannot read time", as if its form were wrong.
    now = at("2026-12-06T14:00:00Z")
    for text in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        with pytest.raises(InvalidInput, match="is out of range: times run from year 1 to 9999"):
            parse_time(text, now)
    with pytest.raises(InvalidInput, match="cannot read time"):
        parse_time("2026-13-01T00:00:00Z", now)
