"""Development backends: ``env://VAR_NAME`` and ``file:///path/to/file``.

``env://DB_PASSWORD`` is the value of the environment variable ``DB_PASSWORD`` of the
server process. ``file:///run/secrets/db-password`` is the content of that file as
UTF-8 text, less one trailing newline (the way Docker and Kubernetes mount secrets);
percent-escapes in the path are decoded, and ``file://localhost/…`` is accepted too.
Neither needs settings; both are meant for development and for secrets that the
platform already puts in the environment or on disk.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from episteme.errors import InvalidInput, NotFound
from episteme.secrets.refs import scheme_of
from episteme.secrets.store import SecretBackend, SecretStoreError

MAX_FILE_BYTES = 1 << 20
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def env_from_env(environ: Mapping[str, str]) -> SecretBackend:
    """`EnvBackend` over `environ` (the registry's factory for ``env://``)."""
    return EnvBackend(environ)


def file_from_env(environ: Mapping[str, str]) -> SecretBackend:
    """`FileBackend` (the registry's factory for ``file://``; it needs no settings)."""
    return FileBackend()


def _bad(raw: str, why: str, form: str) -> InvalidInput:
    return InvalidInput(
        f"cannot read reference {raw!r}: {why}; it looks like {form}", field="reference"
    )


def parse_env_ref(text: str) -> str:
    """The variable name of ``env://VAR_NAME``.

    Raises:
        InvalidInput: not ``env://`` followed by a variable name.
    """
    raw = text.strip()
    if scheme_of(raw) != "env":
        raise _bad(raw, "it is not an env:// reference", "env://VAR_NAME")
    name = raw[len("env://") :]
    if not _NAME.fullmatch(name):
        raise _bad(raw, "the name is not letters, digits and '_'", "env://VAR_NAME")
    return name


def parse_file_ref(text: str) -> Path:
    """The absolute path of ``file:///path/to/file``.

    Raises:
        InvalidInput: not ``file://`` followed by an absolute path.
    """
    raw = text.strip()
    if scheme_of(raw) != "file":
        raise _bad(raw, "it is not a file:// reference", "file:///path/to/file")
    rest = raw[len("file://") :]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    if not rest.startswith("/") or rest == "/":
        raise _bad(raw, "it needs an absolute path (three slashes)", "file:///path/to/file")
    return Path(unquote(rest))


class EnvBackend:
    """``env://VAR_NAME``: a variable of `environ` (``os.environ`` by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def __repr__(self) -> str:
        return "EnvBackend()"

    async def fetch(self, ref: str) -> str:
        name = parse_env_ref(ref)
        value = self._environ.get(name)
        if value is None:
            raise NotFound(
                f"{ref.strip()}: the environment variable {name} is not set", field="reference"
            )
        return value


class FileBackend:
    """``file:///path``: a file's text, less one trailing newline."""

    def __repr__(self) -> str:
        return "FileBackend()"

    async def fetch(self, ref: str) -> str:
        path = parse_file_ref(ref)
        return await asyncio.to_thread(_read, ref.strip(), path)


def _read(ref: str, path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise NotFound(f"{ref}: there is no file {path}", field="reference") from None
    except OSError as exc:
        raise SecretStoreError(f"{ref}: cannot read {path} ({exc.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput(f"{ref}: {path} is over 1 MiB: not a secret", field="reference")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InvalidInput(f"{ref}: {path} is not UTF-8 text", field="reference") from None
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")
