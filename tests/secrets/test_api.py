"""The public API of `episteme.secrets` is pinned: a change to it is a decision."""

from __future__ import annotations

import episteme.secrets
from episteme.errors import Conflict, Forbidden, WorldError
from episteme.secrets import (
    Lease,
    LeaseClosed,
    NotLeased,
    SecretStoreError,
    SecretStoreRefused,
    SecretStoreUnavailable,
)


def test_names() -> None:
    assert episteme.secrets.__all__ == [
        "Broker", "FunctionBackend", "Lease", "LeaseClosed", "NotLeased", "Registry",
        "SecretBackend", "SecretRef", "SecretStoreError", "SecretStoreRefused",
        "SecretStoreUnavailable", "parse_ref", "scheme_of",
    ]  # fmt: skip


def test_lease_surface() -> None:
    public = sorted(n for n in dir(Lease) if not n.startswith("_"))
    assert public == ["expires_at", "get", "live", "refs", "wipe", "wiped"]


def test_errors_join_the_tree() -> None:
    for world in (SecretStoreError, SecretStoreUnavailable, SecretStoreRefused):
        assert issubclass(world, WorldError)
        assert (world.status, world.exit_code) == (503, 1)
    assert issubclass(LeaseClosed, Conflict)
    assert issubclass(NotLeased, Forbidden)
