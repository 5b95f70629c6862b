"""Canonical JSON and BLAKE3 hashing: the basis of content ids and the journal chain.

Canonical JSON is UTF-8, keys sorted, no insignificant whitespace, no NaN or
infinity, integers within 64 bits (orjson's output). The same content always gives the
same bytes, so the same id.
"""

from __future__ import annotations

import math
from typing import Any

import blake3
import orjson

_NOT_FINITE = "numbers must be finite: JSON has no NaN or Infinity"

GENESIS = bytes(32)
"""The previous hash of the first journal event."""


def canonical(obj: Any) -> str:
    """Serialise `obj` as canonical JSON text.

    Values are checked by `check_json` where they enter the ledger: orjson would write
    NaN and infinity as null, and refuses integers beyond 64 bits.
    """
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def check_json(value: Any) -> str | None:
    """Why `value` cannot be stored as canonical JSON, or None when it can."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, float):
        return (
            None if math.isfinite(value) else "numbers must be finite: JSON has no NaN or Infinity"
        )
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**64 else "integers must fit in 64 bits"
    if isinstance(value, list | tuple):
        return next((r for r in map(check_json, value) if r), None)
    if isinstance(value, dict):
        return next((r for r in map(check_json, value.values()) if r), None)
    return f"{type(value).__name__} is not a JSON value"


def digest(data: str | bytes) -> str:
    """BLAKE3 of text (as UTF-8) or bytes, as 64 hex characters."""
    raw = data.encode() if isinstance(data, str) else data
    return blake3.blake3(raw).hexdigest()


def content_id(obj: Any) -> str:
    """The content address of a JSON-able object: BLAKE3 of its canonical JSON."""
    return digest(canonical(obj))


def chain_hash(prev_hash: bytes, event_text: str) -> bytes:
    """``BLAKE3(prev_hash || canonical(event))``, the link of the journal chain."""
    h = blake3.blake3(prev_hash)
    h.update(event_text.encode())
    return h.digest()
