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
    shown = repr(value)
    if len(shown) <= limit:
        return shown
    if isinstance(value, str):
        return f"{shorten(value, limit)!r} ({len(value):,} characters)"
    return f"(a number of {len(shown.lstrip('-')):,} digits)"
