"""Canonical JSON and BLAKE3 hashing: the basis of content ids and the journal chain.

Canonical JSON is UTF-8, keys sorted, no insignificant whitespace, no NaN or
infinity. The same content always gives the same bytes, so the same id.
"""

from __future__ import annotations

import json
from typing import Any

import blake3

GENESIS = bytes(32)
"""The previous hash of the first journal event."""


def canonical(obj: Any) -> str:
    """Serialise `obj` as canonical JSON text."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


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
