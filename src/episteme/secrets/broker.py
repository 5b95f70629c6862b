"""The broker: credential references in, a lease of their values out.

The diagnosis engine asks for a lease once a person has approved the references a
session needs (DESIGN §1, §4)::

    broker = Broker.from_env()
    lease = await broker.lease(["op://Infrastructure/prod-db/password"], ttl_s=900)
    try:
        password = lease.get("op://Infrastructure/prod-db/password")
    finally:
        lease.wipe()

Each reference goes to the backend registered for its scheme (`episteme.secrets.store`).
They are fetched one after another; if any fails, what was fetched is dropped and the
one error raised names the failing reference. A lease keeps its values only in this
process's memory, in buffers that `wipe()` overwrites; it ends when wiped, when its time
is up (`expires_at`, read from the broker's clock), or when it is garbage collected.
Nothing here puts a value into a message, a ``repr`` or a log record. A ``str`` that
`Lease.get` hands out belongs to the caller: Python cannot erase it, so callers keep
such strings local and short-lived.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import NoReturn

from whenever import Instant, TimeDelta

from episteme.errors import Conflict, EpistemeError, Forbidden, InvalidInput
from episteme.secrets.refs import FORMS, scheme_of
from episteme.secrets.store import Backends, Registry, SecretBackend, SecretStoreError
from episteme.timeutil import Clock, SystemClock, rfc3339

log = logging.getLogger(__name__)


class LeaseClosed(Conflict):
    """The lease was wiped or its time is up: its values are gone."""


class NotLeased(Forbidden):
    """The reference is not part of the lease: it was not approved."""


class Lease:
    """Secret values for a set of references, in memory only, until wiped or expired."""

    __slots__ = ("__weakref__", "_clock", "_closed", "_expires_at", "_refs", "_timer", "_values")

    def __init__(self, values: Mapping[str, str], expires_at: Instant, clock: Clock) -> None:
        self._values: dict[str, bytearray] | None = {
            ref: bytearray(value.encode()) for ref, value in values.items()
        }
        self._refs = tuple(values)
        self._expires_at = expires_at
        self._clock = clock
        self._closed: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def refs(self) -> tuple[str, ...]:
        """The references this lease holds values for (never the values)."""
        return self._refs

    @property
    def expires_at(self) -> Instant:
        return self._expires_at

    @property
    def wiped(self) -> bool:
        """True once the values are gone (wiped by hand, or expired and then asked for)."""
        return self._values is None

    @property
    def live(self) -> bool:
        """True while `get` would answer: not wiped, and its time not up."""
        return self._values is not None and self._clock.now() < self._expires_at

    def get(self, ref: str) -> str:
        """The value of `ref`.

        Raises:
            LeaseClosed: the lease was wiped, or its time is up (it is wiped then).
            NotLeased: `ref` is not one of `refs`.
        """
        if self._values is not None and self._clock.now() >= self._expires_at:
            self._close(f"it expired at {rfc3339(self._expires_at)}")
        if self._values is None:
            raise LeaseClosed(
                f"the lease of {_count(self._refs)} is closed ({self._closed}): "
                "its values are gone; approve the references again for a new lease"
            )
        value = self._values.get(ref)
        if value is None:
            raise NotLeased(
                f"{_shown(ref)} is not in this lease, which holds {', '.join(self._refs) or '-'}"
            )
        return value.decode()

    def wipe(self) -> None:
        """Overwrite the values and drop them. Safe to call more than once."""
        self._close("it was wiped")

    def _close(self, why: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        values, self._values = self._values, None
        if values is None:
            return
        for buffer in values.values():
            buffer[:] = bytes(len(buffer))
        values.clear()
        self._closed = why
        log.debug("lease of %s closed: %s", _count(self._refs), why)

    def _expire_later(self, ttl_s: float) -> None:
        """Wipe after `ttl_s` real seconds, whether or not anyone asks again."""
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(ttl_s, self._close, "its time was up")

    def __contains__(self, ref: object) -> bool:
        return ref in self._refs

    def __len__(self) -> int:
        return len(self._refs)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.wipe()

    def __del__(self) -> None:
        values = getattr(self, "_values", None)
        if values:
            for buffer in values.values():
                buffer[:] = bytes(len(buffer))

    def __repr__(self) -> str:
        state = f"closed: {self._closed}" if self._values is None else "live"
        refs = ", ".join(self._refs)
        return f"<Lease [{refs}] expires {rfc3339(self._expires_at)}, {state}>"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("a lease cannot be pickled or copied: its values stay in this process")


class Broker:
    """Resolves references with the backend of each one's scheme, into leases."""

    def __init__(self, backends: Mapping[str, SecretBackend], *, clock: Clock | None = None):
        self.backends = backends
        self.clock: Clock = clock or SystemClock()

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Clock | None = None,
        registry: Registry | None = None,
    ) -> Broker:
        """A broker over every registered backend, each set up from `environ` when first used.

        1Password Connect reads ``EPISTEME_OP_CONNECT_HOST`` and ``EPISTEME_OP_CONNECT_TOKEN``
        (or the SDK's ``OP_CONNECT_HOST`` and ``OP_CONNECT_TOKEN``); Vault reads
        ``EPISTEME_VAULT_ADDR``/``VAULT_ADDR`` and ``EPISTEME_VAULT_TOKEN``/``VAULT_TOKEN``.
        """
        env = os.environ if environ is None else environ
        return cls(Backends(registry or Registry.default(), env), clock=clock)

    def backend_for(self, ref: str) -> SecretBackend:
        """The backend that handles `ref`'s scheme.

        Raises:
            InvalidInput: `ref` is not a reference, or no backend handles its scheme.
        """
        scheme = scheme_of(ref)
        if scheme not in self.backends:
            known = ", ".join(f"{s}://" for s in sorted(self.backends)) or "none"
            raise InvalidInput(
                f"{ref.strip()}: no secret store handles {scheme}:// references "
                f"(configured: {known}); a reference looks like {FORMS}",
                field="reference",
            )
        return self.backends[scheme]

    async def lease(self, refs: Sequence[str], ttl_s: float) -> Lease:
        """Fetch every reference in `refs` into a lease that lasts `ttl_s` seconds.

        All or nothing: the first reference that fails drops whatever was fetched, and
        its error (naming that reference) is raised.

        Raises:
            InvalidInput: a malformed reference, an unknown scheme, or a bad `ttl_s`.
            NotFound: the store has no such secret.
            SecretStoreError: a store is not set up, unreachable, or refused the token.
        """
        if not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s) and ttl_s > 0):
            raise InvalidInput(f"a lease needs a positive ttl_s in seconds, not {ttl_s!r}")
        wanted = list(dict.fromkeys(refs))
        plan = [(ref, self.backend_for(ref)) for ref in wanted]  # every scheme, before any fetch
        values: dict[str, str] = {}
        try:
            for ref, backend in plan:
                values[ref] = await _fetch(backend, ref)
                log.debug("fetched %s", ref)
            lease = Lease(values, self.clock.now().add(TimeDelta(seconds=ttl_s)), self.clock)
        finally:
            values.clear()
        lease._expire_later(ttl_s)
        log.debug("leased %s for %g s", _count(wanted), ttl_s)
        return lease

    def __repr__(self) -> str:
        return f"Broker({', '.join(sorted(self.backends))})"


async def _fetch(backend: SecretBackend, ref: str) -> str:
    try:
        value = await backend.fetch(ref)
    except EpistemeError as exc:
        if ref.strip() not in exc.message:
            exc.message = f"{ref.strip()}: {exc.message}"
            exc.args = (exc.message,)
        raise
    except Exception as exc:  # a plugin's own failure: named, never its message (may hold data)
        raise SecretStoreError(
            f"{ref.strip()}: the secret store failed ({type(exc).__name__})"
        ) from exc
    if not isinstance(value, str):
        raise SecretStoreError(
            f"{ref.strip()}: the secret store answered {type(value).__name__}, not text"
        )
    return value


def _count(refs: Sequence[str]) -> str:
    return f"{len(refs)} reference{'' if len(refs) == 1 else 's'}"


def _shown(ref: str) -> str:
    """`ref` if it looks like a reference; otherwise a placeholder (it may be a value)."""
    try:
        scheme_of(ref)
    except InvalidInput:
        return "(a text that is not a reference, not shown)"
    return ref
