"""Canonical JSON and BLAKE3 hashing: the basis of content ids and the journal chain.

Canonical JSON is UTF-8, keys sorted, no insignificant whitespace, no NaN or
infinity, integers within 64 bits (orjson's output). The same content always gives the
same bytes, so the same id.
"""

from __future__ import annotations

import json
import math
from typing import Any

import blake3
import orjson

from episteme.errors import InvalidInput
from episteme.text import quoted

_NOT_FINITE = "numbers must be finite: JSON has no NaN or Infinity"

GENESIS = bytes(32)
"""The previous hash of the first journal event."""


MAX_DEPTH = 64
"""How deeply JSON values may nest (orjson refuses beyond 255; we stop well before)."""


def canonical(obj: Any) -> str:
    """Serialise `obj` as canonical JSON text.

    Values are checked by `check_json` where they enter the ledger: orjson would write
    NaN and infinity as null, and refuses integers beyond 64 bits.
    """
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError as exc:
        check_texts(obj)  # names the field, where a text or a number is the cause
        raise InvalidInput(f"not storable as JSON: {exc}") from None


def check_json(value: Any) -> str | None:
    """Why `value` cannot be stored as canonical JSON, or None when it can."""
    found = _problem(value, (), 0)
    return None if found is None else found[1]


_Where = tuple[str | int, ...]


def _problem(value: Any, path: _Where, depth: int) -> tuple[_Where, str] | None:
    """Where in `value` the first thing no backend can store is (the keys and indexes
    leading to it), and why."""
    if isinstance(value, str):
        problem = check_text_value(value)
    elif isinstance(value, bool) or value is None:
        problem = None
    elif isinstance(value, float):
        problem = None if math.isfinite(value) else _NOT_FINITE
    elif isinstance(value, int):
        problem = None if -(2**63) <= value < 2**64 else "integers must fit in 64 bits"
    elif depth >= MAX_DEPTH:
        problem = f"values may nest at most {MAX_DEPTH} levels deep"
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if (found := _problem(v, (*path, i), depth + 1)) is not None:
                return found
        return None
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return path, "object keys must be strings"
            if (problem := check_text_value(k)) is not None:
                shown = k.encode(errors="backslashreplace").decode().replace("\x00", "\\u0000")
                return (*path, shown), problem
            if (found := _problem(v, (*path, k), depth + 1)) is not None:
                return found
        return None
    else:
        problem = f"{type(value).__name__} is not a JSON value"
    return None if problem is None else (path, problem)


_NUL = "text may not contain the NUL character (\\u0000): remove it"


def check_text_value(text: str) -> str | None:
    """Why `text` cannot be stored on every backend, or None when it can."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return "text must be valid Unicode (a lone surrogate such as \\ud800 is not)"
    return _NUL if "\x00" in text else None


def check_no_nul(payload: Any, text: str) -> None:
    """Refuse an event whose payload holds a NUL character in any string, naming where.

    `text` is the payload's canonical JSON, which writes NUL as ``\\u0000``: the cheap
    test runs on it and the walk only when it may be there. PostgreSQL can store no NUL
    in text or jsonb, so neither backend records one: every ledger can be copied to the
    other.
    """
    if "\\u0000" in text:
        check_texts(payload)


def check_texts(value: Any) -> None:
    """Refuse the first string or key in `value` (or anything else) that not every
    backend can store, naming where it is (``alerts[0].labels.team``)."""
    found = _problem(value, (), 0)
    if found is not None:
        where, problem = found
        field = next((p for p in reversed(where) if isinstance(p, str)), None)
        named = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where)
        raise InvalidInput(f"{named.lstrip('.') or 'the input'}: {problem}", field=field)


def without_nul(value: Any) -> Any:
    """`value` with every NUL character replaced by U+FFFD, for text the system itself
    produced (a command's output, an error) and records as it is; input is refused."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_nul(v) for v in value]
    return value


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


def read_value(text: str) -> Any:
    """A value typed by a person (a command's VALUE, a form's field): JSON when it looks
    like JSON, else a plain string.

    Read with Python's json module, which keeps every integer exact, so that one past
    64 bits is refused here rather than turned into a float (orjson reads those as
    floats); a value JSON cannot carry is refused as the ledger would refuse it.
    """
    stripped = text.strip()
    looks_json = stripped[:1] in ("{", "[", '"') or stripped in ("true", "false", "null")
    try:
        if looks_json:
            value = loads_exact(stripped)
        elif stripped and stripped[:1] in "-0123456789":
            try:
                value = loads_exact(stripped)
            except json.JSONDecodeError:
                return text  # not a number after all (1.2.3): a plain string
        else:
            return text
    except json.JSONDecodeError as exc:
        what = exc.msg.removesuffix(" at")  # "Invalid control character at"
        raise InvalidInput(
            f"malformed JSON value {quoted(text)}: {what} at column {exc.colno}; "
            'quote plain strings that start with {, [ or "',
            field="value",
        ) from None
    except InvalidInput as exc:
        raise InvalidInput(f"invalid value {quoted(text)}: {exc.message}", field="value") from None
    problem = check_json(value)
    if problem:
        raise InvalidInput(f"invalid value {quoted(text)}: {problem}", field="value")
    return value


def loads_exact(text: str) -> Any:
    """JSON read with every integer exact (Python's reader: orjson reads a number past 64
    bits as a float). Malformed text raises `json.JSONDecodeError`, the caller's to word;
    what Python's reader cannot hold raises `InvalidInput` saying what the ledger allows:
    nesting past its stack, an integer of more than 4,300 digits, NaN or Infinity."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        problem = f"values may nest at most {MAX_DEPTH} levels deep"
    except json.JSONDecodeError:
        raise
    except ValueError:
        problem = "integers must fit in 64 bits"
    raise InvalidInput(problem)


def _no_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not a JSON value: use a finite number or a string")
