"""Logging that never writes a bearer token.

A library's own message can quote what a caller sent (an unknown MCP prompt's name, a
body it could not parse), and a logged traceback repeats it. Every handler Episteme
installs, or that uvicorn installs for `episteme serve`, passes records through
`HideSecrets` first, which masks them as `hide_secrets` masks an error's message.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from episteme.errors import hide_secrets

PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""A line of the log: when, how bad, from where, what."""


class HideSecrets(logging.Filter):
    """Masks anything shaped like a bearer token in a record before any handler formats
    it: its message and each of its arguments (kept as arguments, so that a formatter
    that reads them, as uvicorn's access log does, still finds them), its traceback and
    stack. The record is changed in place, so that every handler after this one writes
    the masked text too; a record this cannot read is let through as it is, for the
    logging module to report as it reports any malformed record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if isinstance(record.msg, str):
                record.msg = hide_secrets(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(_masked(a) for a in record.args)
            elif isinstance(record.args, Mapping):
                record.args = {k: _masked(v) for k, v in record.args.items()}
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = hide_secrets(record.exc_text)
            if record.stack_info:
                record.stack_info = hide_secrets(record.stack_info)
        except Exception:  # never the caller's failure: a log line is not worth a request
            pass
        return True


class QuietDisconnects(logging.Filter):
    """Drops a record whose exception is a client hanging up before its request's body
    arrived (the MCP SDK logs each as an error, with its traceback): the client's doing,
    routine, and a caller could fill the log with them."""

    def filter(self, record: logging.LogRecord) -> bool:
        failed = record.exc_info[1] if record.exc_info else None
        return type(failed).__name__ != "ClientDisconnect"


def _masked(value: object) -> object:
    """An argument of a log record, masked as it will be written: a string as it is, a
    number as it is (for `%d`), anything else as its text and its repr (`%s`, `%r`)."""
    if isinstance(value, str):
        return hide_secrets(value)
    if value is None or isinstance(value, int | float):
        return value
    return _Shown(hide_secrets(str(value)), hide_secrets(repr(value)))


class _Shown:
    """An argument written as it was, masked: `%s` gives its text and `%r` its repr."""

    __slots__ = ("_repr", "_text")

    def __init__(self, text: str, shown: str) -> None:
        self._text, self._repr = text, shown

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return self._repr


def install(fmt: str | None = None) -> None:
    """Give the root logger a handler on stderr if it has none (warnings and worse, in
    `fmt` or as the last-resort handler writes them: the message alone), and make every
    handler it has hide secrets and leave out clients that hung up."""
    root = logging.getLogger()
    if not root.handlers:
        stderr = logging.StreamHandler()
        stderr.setLevel(logging.WARNING)
        stderr.setFormatter(logging.Formatter(fmt))
        root.addHandler(stderr)
    for handler in root.handlers:
        for kind in (QuietDisconnects, HideSecrets):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())


def uvicorn_config() -> dict[str, Any]:
    """uvicorn's logging configuration with every handler hiding secrets, and a handler
    for the application's own loggers (which otherwise reach only Python's last-resort
    handler, which filters nothing)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {
        "secrets": {"()": f"{__name__}.HideSecrets"},
        "disconnects": {"()": f"{__name__}.QuietDisconnects"},
    }
    config["formatters"]["episteme"] = {"format": PLAIN}
    config["handlers"]["episteme"] = {
        "class": "logging.StreamHandler",
        "formatter": "episteme",
        "stream": "ext://sys.stderr",
        "level": "WARNING",
    }
    for handler in config["handlers"].values():
        handler["filters"] = ["disconnects", "secrets"]
    config["root"] = {"handlers": ["episteme"], "level": "WARNING"}
    return config
