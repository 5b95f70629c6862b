"""Secrets for diagnosis: credential references, secret stores, leases, the dev vault.

A reference (``op://Infrastructure/prod-db/password``) names a secret; a backend per
scheme fetches it (1Password Connect, HashiCorp Vault KV v2, environment variables,
files); the `Broker` turns approved references into a `Lease` that holds the values in
memory only until it is wiped or expires. `episteme dev-vault` serves development items
over the 1Password Connect API (`episteme.secrets.devserver`). See docs/secrets.md.
"""

from __future__ import annotations

from episteme.secrets.broker import Broker, Lease, LeaseClosed, NotLeased
from episteme.secrets.refs import SecretRef, parse_ref, scheme_of
from episteme.secrets.store import (
    FunctionBackend,
    Registry,
    SecretBackend,
    SecretStoreError,
    SecretStoreRefused,
    SecretStoreUnavailable,
)

__all__ = [
    "Broker",
    "FunctionBackend",
    "Lease",
    "LeaseClosed",
    "NotLeased",
    "Registry",
    "SecretBackend",
    "SecretRef",
    "SecretStoreError",
    "SecretStoreRefused",
    "SecretStoreUnavailable",
    "parse_ref",
    "scheme_of",
]
