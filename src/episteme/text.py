"""Text shown to people (and models): one line, of a bounded length."""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")


def shorten(text: str | None, limit: int = 300) -> str:
    """`text` on one line (runs of white space as one space), cut to `limit` characters
    with an ellipsis when longer."""
    flat = _SPACE.sub(" ", text or "").strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def quoted(value: str | int | float | bool, limit: int = 60) -> str:
    """What was sent, quoted in an error: whole when short; when long, its start and its
    length, so that an error never carries back a megabyte (nor a 3,000-digit number)."""
    if isinstance(value, int) and value.bit_length() > 14_000:
        # past what repr writes (4,300 digits); about 0.30103 decimal digits a bit
        return f"(a number of about {int(value.bit_length() * 0.30103) + 1:,} digits)"
    shown = repr(value)
    if len(shown) <= limit:
        return shown
    if isinstance(value, str):
        return f"{shorten(value, limit)!r} ({len(value):,} characters)"
    return f"(a number of {len(shown.lstrip('-')):,} digits)"


# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and
# isolates (which reorder what follows them on screen): each shown as its escape.
_INVISIBLE = {
    c: f"\\u{c:04x}"  # as JSON writes them, so that --json output stays JSON
    for c in (
        *(c for c in range(0x20) if c not in (0x09, 0x0A)),
        *range(0x7F, 0xA0),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    )
}


def visible(text: str) -> str:
    """`text` as a terminal should show it: control characters (an escape sequence could
    erase a line, recolour it or move the cursor, so that a value written by an agent
    reads as another) and bidirectional overrides written as their escapes, `\\u001b`."""
    return text.translate(_INVISIBLE)


def plural(n: int, noun: str) -> str:
    """`n` and `noun`, with an s unless one: "1 assertion", "3 assertions"."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
