"""What a secret store is to Episteme: one small protocol, its errors, and the registry.

A backend is anything with ``async fetch(ref) -> str``: it is given a reference of its
scheme (``op://…``, ``vault://…``), parses it, and returns the value or raises an
`EpistemeError` whose message names the reference, never the value. `FunctionBackend`
wraps a plain function, the way httpx's mock transport does, for tests and demos.

The built-in backends are entries of the same registry that plugins join: a scheme maps
to ``"module:factory"``, loaded only when a reference of that scheme is first fetched
(so ``hvac`` is imported only for ``vault://``). A third-party package adds a scheme
with an entry point in the group ``episteme.secret_backends``; the factory takes the
environment (a mapping) and returns a backend::

    [project.entry-points."episteme.secret_backends"]
    aws-sm = "mypackage.secrets:from_env"

Errors, under `WorldError` (the world failed: HTTP 503, exit 1)::

    SecretStoreError              a secret store is not set up, or failed
    ├── SecretStoreUnavailable    it cannot be reached, or answered 5xx
    └── SecretStoreRefused        it refused Episteme's own token (401/403)

A reference that is malformed is `InvalidInput`; one whose vault, item, section, field
or path the store does not have is `NotFound`, naming the part that is missing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Protocol, cast, runtime_checkable

from episteme.errors import InvalidInput, WorldError

ENTRY_POINT_GROUP = "episteme.secret_backends"
BUILTIN: dict[str, str] = {
    "op": "episteme.secrets.onepassword:from_env",
    "vault": "episteme.secrets.vault:from_env",
    "env": "episteme.secrets.env:env_from_env",
    "file": "episteme.secrets.env:file_from_env",
}
"""Scheme → ``module:factory`` of the backends that ship with Episteme."""


class SecretStoreError(WorldError):
    """A secret store is not configured, or failed; the message names the reference."""

    title = "Secret store unavailable"


class SecretStoreUnavailable(SecretStoreError):
    """The secret store cannot be reached, timed out, or answered with a server error."""


class SecretStoreRefused(SecretStoreError):
    """The secret store refused the token Episteme signs in with (401 or 403)."""

    title = "Secret store refused the token"


@runtime_checkable
class SecretBackend(Protocol):
    """A secret store: turns a reference of its scheme into the secret's value."""

    async def fetch(self, ref: str) -> str:
        """The value `ref` names.

        Raises:
            InvalidInput: the reference is malformed.
            NotFound: the store has no such secret (the message names the missing part).
            SecretStoreError: the store is not set up, unreachable, or refused the token.
        """
        ...


BackendFactory = Callable[[Mapping[str, str]], SecretBackend]
"""Builds a backend from the environment (``os.environ`` or a mapping in tests)."""


class FunctionBackend:
    """A backend made of a plain function ``ref -> value`` (sync or async): a fake for tests."""

    def __init__(self, fn: Callable[[str], str | Awaitable[str]]) -> None:
        self._fn = fn

    async def fetch(self, ref: str) -> str:
        got = self._fn(ref)
        if inspect.isawaitable(got):
            return await got
        return got

    def __repr__(self) -> str:
        return f"FunctionBackend({getattr(self._fn, '__name__', 'function')})"


class Unconfigured:
    """The backend of a scheme whose store has no settings: every fetch says what to set."""

    def __init__(self, store: str, hint: str) -> None:
        self.store, self.hint = store, hint

    async def fetch(self, ref: str) -> str:
        raise SecretStoreError(f"{ref}: no {self.store} is configured: {self.hint}")

    def __repr__(self) -> str:
        return f"Unconfigured({self.store!r})"


def first(environ: Mapping[str, str], *names: str) -> str | None:
    """The first of `names` set (non-empty) in `environ`, stripped."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


class Registry:
    """Scheme → backend factory: the built-ins, then entry points, then what tests add."""

    def __init__(self, entries: Mapping[str, str | BackendFactory] | None = None) -> None:
        self._entries: dict[str, str | BackendFactory] = dict(entries or {})

    @classmethod
    def default(cls) -> Registry:
        """The built-in backends and those installed packages declare as entry points."""
        entries: dict[str, str | BackendFactory] = dict(BUILTIN)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            entries.setdefault(ep.name.lower(), ep.value)
        return cls(entries)

    def add(self, scheme: str, factory: str | BackendFactory) -> None:
        """Register `factory` (or ``"module:attr"``) for ``scheme://`` references."""
        self._entries[scheme.lower()] = factory

    @property
    def schemes(self) -> list[str]:
        return sorted(self._entries)

    def factory(self, scheme: str) -> BackendFactory:
        """The factory for `scheme`, imported now if it was registered by name."""
        entry = self._entries.get(scheme)
        if entry is None:
            known = ", ".join(f"{s}://" for s in self.schemes)
            raise InvalidInput(
                f"no secret store handles {scheme}:// references: use one of {known}",
                field="reference",
            )
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = cast(BackendFactory, getattr(importlib.import_module(module), attr))
            self._entries[scheme] = entry
        return entry


class Backends(Mapping[str, SecretBackend]):
    """The registry's backends for one environment, each built when first asked for."""

    def __init__(self, registry: Registry, environ: Mapping[str, str]) -> None:
        self._registry, self._environ = registry, environ
        self._built: dict[str, SecretBackend] = {}

    def __getitem__(self, scheme: str) -> SecretBackend:
        if scheme not in self:
            raise KeyError(scheme)
        if scheme not in self._built:
            self._built[scheme] = self._registry.factory(scheme)(self._environ)
        return self._built[scheme]

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry.schemes)

    def __len__(self) -> int:
        return len(self._registry.schemes)

    def __contains__(self, scheme: object) -> bool:
        return isinstance(scheme, str) and scheme in self._registry.schemes

    def __repr__(self) -> str:
        return f"Backends({', '.join(self._registry.schemes)})"
