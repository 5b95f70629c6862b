"""Time for Episteme: clocks, parsing what people type, and showing instants.

Every instant is a `whenever.Instant` in UTC. On the wire and in JSON, RFC 3339.
In storage, integer microseconds since the Unix epoch. People may type:

- RFC 3339 (``2026-11-21T21:00:00Z``, ``2026-11-21T22:00:00+01:00``) or a plain
  local date-time (``2026-11-21 21:00``, local zone);
- relative durations (``6h``, ``30m ago``, ``1h30m``, ``2d``): that long before now;
- a local clock time (``21:00``, ``9pm``, ``9:30pm``), optionally with ``today`` or
  ``yesterday``. A bare clock time means its most recent occurrence: at 03:00,
  ``21:00`` is last night, which is what someone on call means;
- ``now``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Protocol

from whenever import (
    SYSTEM_TZ,
    Date,
    Instant,
    RepeatedTime,
    SkippedTime,
    Time,
    TimeDelta,
    TimeZoneNotFoundError,
)

from episteme.errors import InvalidInput

_UNITS_US = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_UNIT_ALIASES = {
    "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "m": "m", "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "d": "d", "day": "d", "days": "d", "w": "w", "week": "w", "weeks": "w",
}  # fmt: skip
_RELATIVE = re.compile(r"^(?:in\s+)?(?:(\d+)\s*([a-z]+)\s*)+(?:ago)?$")
_PART = re.compile(r"(\d+)\s*([a-z]+)")
_CLOCK = re.compile(r"^(?:(today|yesterday)\s+)?(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?\s*(am|pm)?$")
_PLAIN = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[ t](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?))?$")

HELP = (
    "RFC 3339, a relative time (6h, 30m ago; in 30d for the future) or a local clock time "
    "(21:00, 9pm, yesterday 21:00)"
)


class Clock(Protocol):
    """Where 'now' comes from. Inject a fake in tests and demos."""

    def now(self) -> Instant: ...


class SystemClock:
    """The real clock, in the ledger's resolution (microseconds): an instant it gives is
    one the store keeps and the wire says exactly."""

    def now(self) -> Instant:
        return from_us(to_us(Instant.now()))


@dataclass
class ManualClock:
    """A clock that only moves when told to: for tests, demos and replays."""

    current: Instant = field(default_factory=Instant.now)

    def now(self) -> Instant:
        return self.current

    def set(self, instant: Instant) -> None:
        self.current = instant

    def advance(self, delta: TimeDelta) -> None:
        self.current = self.current.add(delta)


def to_us(instant: Instant) -> int:
    """Microseconds since the Unix epoch (the storage form)."""
    return instant.timestamp(unit="microsecond")


def from_us(us: int) -> Instant:
    """The inverse of `to_us`."""
    return Instant.from_timestamp(us, unit="microsecond")


def rfc3339(instant: Instant) -> str:
    """RFC 3339 in UTC with microsecond precision at most (the wire form)."""
    return from_us(to_us(instant)).format_iso()


def show(instant: Instant) -> str:
    """UTC exactly (paste it back as a time and it names the same instant) and the local
    clock, for people: ``2026-11-21T21:00:00Z (22:00 CET, UTC+01:00)``, with the local
    date when it is not UTC's. UTC alone where the zone is UTC, unknown, or cannot say
    the instant (the years at the ends of the range)."""
    utc = rfc3339(instant)
    try:
        local = instant.to_tz(SYSTEM_TZ)
    except ValueError:  # an unknown TZ, or out of its range
        return utc
    if local.offset == TimeDelta() and local.tz_id in (None, "UTC", "Etc/UTC"):
        return utc
    minutes = int(local.offset.total("minutes"))
    sign, minutes = ("-" if minutes < 0 else "+"), abs(minutes)
    offset = f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    day = "" if local.date() == instant.to_tz("UTC").date() else f"{local.date()} "
    name = local.tz_abbrev() or local.tz_id or ""
    label = f"{name}, {offset}" if name and not name.startswith(("+", "-")) else offset
    return f"{utc} ({day}{local.format('HH:mm')} {label})"


def parse_time(text: str, now: Instant) -> Instant:
    """Parse what a person typed into an Instant, relative to `now`.

    Raises:
        InvalidInput: with the accepted forms, when the text is none of them.
    """
    raw = text.strip().lower()
    if not raw:
        raise InvalidInput(f"empty time: use {HELP}")
    if raw == "now":
        return now
    if raw in ("today", "yesterday"):
        raise InvalidInput(f"{raw!r} needs a clock time: {raw} 00:00, {raw} 21:00")
    try:
        return Instant.parse_iso(text.strip().upper().replace(" ", "T", 1))
    except ValueError as exc:
        if "out of range" in str(exc):  # read, but before year 1 or past 9999 in UTC
            raise InvalidInput(
                f"time {text!r} is out of range: times run from year 1 to 9999, in UTC"
            ) from None
    for parse in (_parse_clock, _parse_relative, _parse_plain):
        found = parse(raw, now)
        if found is not None:
            return found
    raise InvalidInput(f"cannot read time {text!r}: use {HELP}")


def _parse_relative(raw: str, now: Instant) -> Instant | None:
    if not _RELATIVE.fullmatch(raw):
        return None
    future = raw.startswith("in ")
    if future and raw.endswith("ago"):
        raise InvalidInput(f"{raw!r} is both ahead and ago: use in 30d or 30d ago")
    total = 0
    for amount, unit in _PART.findall(raw.removeprefix("in ")):
        name = _UNIT_ALIASES.get(unit)
        if name is None:
            raise InvalidInput(f"unknown time unit {unit!r}: use s, m, h, d or w")
        total += int(amount) * (7 * _UNITS_US["d"] if name == "w" else _UNITS_US[name])
    try:
        return from_us(to_us(now) + total if future else to_us(now) - total)
    except (ValueError, OverflowError):
        raise InvalidInput(f"time {raw!r} is out of range: times run from year 1 to 9999") from None


def _parse_clock(raw: str, now: Instant) -> Instant | None:
    m = _CLOCK.fullmatch(raw)
    if m is None:
        return None
    day_word, hh, mm, ss, ampm = m.groups()
    hour, minute, second = int(hh), int(mm or 0), int(ss or 0)
    if ampm is None and mm is None:
        return None  # a bare number is not a clock time
    if ampm is not None:
        if not 1 <= hour <= 12:
            raise InvalidInput(f"cannot read time {raw!r}: hour must be 1-12 with am/pm")
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    try:
        clock = Time(hour, minute, second)
    except ValueError as exc:
        raise InvalidInput(f"cannot read time {raw!r}: {exc}") from None
    try:
        today = now.to_tz(SYSTEM_TZ).date()
    except ValueError as exc:
        raise _zone_error(exc) from None
    if day_word == "yesterday":
        return _local(today.subtract(days=1), clock, latest_before=now)
    if day_word == "today":
        return _local(today, clock, latest_before=now)
    try:
        candidate = _local(today, clock, latest_before=now)
    except InvalidInput:  # skipped today: yesterday's is the most recent occurrence
        candidate = now.add(hours=1)
    if candidate > now:
        candidate = _local(today.subtract(days=1), clock, latest_before=now)
    return candidate


def _parse_plain(raw: str, now: Instant) -> Instant | None:
    m = _PLAIN.fullmatch(raw)
    if m is None:
        return None
    day, clock = m.groups()
    try:
        return _local(Date.parse_iso(day), Time.parse_iso(clock) if clock else Time(0))
    except ValueError as exc:
        raise InvalidInput(f"cannot read time {raw!r}: {exc}") from None


def _zone_name() -> str:
    return os.environ.get("TZ") or "the local time zone"


def _local(day: Date, clock: Time, *, latest_before: Instant | None = None) -> Instant:
    """`clock` on `day` in the local zone. A time the clocks skipped is refused; one they
    went through twice is refused too, unless `latest_before` picks the later of the two
    that is not after it (a bare clock time: its most recent occurrence)."""
    plain = day.at(clock)
    said = f"{day} {clock.format_iso()[:5]}"
    try:
        return plain.assume_tz(SYSTEM_TZ, disambiguation="raise").to_instant()
    except SkippedTime:
        raise InvalidInput(
            f"{said} does not exist in {_zone_name()}: the clocks went forward over it; "
            "give a time outside the skipped hour, or one with an offset (RFC 3339)"
        ) from None
    except RepeatedTime:
        later = plain.assume_tz(SYSTEM_TZ, disambiguation="later").to_instant()
        if latest_before is not None and later <= latest_before:
            return later
        earlier = plain.assume_tz(SYSTEM_TZ, disambiguation="earlier").to_instant()
        if latest_before is not None:
            return earlier
        raise InvalidInput(
            f"{said} happened twice in {_zone_name()}, as the clocks went back: give an "
            f"offset to say which ({rfc3339(earlier)} or {rfc3339(later)})"
        ) from None
    except ValueError as exc:  # an unknown TZ, or out of range
        raise _zone_error(exc) from None


def _zone_error(exc: ValueError) -> InvalidInput:
    if isinstance(exc, TimeZoneNotFoundError):
        return InvalidInput(
            f"the time zone TZ={os.environ.get('TZ', '')!r} is not one this machine knows: "
            "set TZ to a name such as Europe/Berlin, or give times in RFC 3339 or as 6h ago"
        )
    return InvalidInput(f"time out of range ({exc}): times run from year 1 to 9999")
