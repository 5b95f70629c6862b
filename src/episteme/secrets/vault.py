"""``vault://mount/path#field`` references against HashiCorp Vault's KV version 2 engine.

``vault://secret/prod/db#password`` reads the latest version of the secret ``prod/db``
in the KV v2 engine mounted at ``secret`` and returns its key ``password`` (a key that
is not text comes back as JSON). It uses ``hvac``, an optional extra
(``pip install 'episteme[vault]'``) imported only when a ``vault://`` reference is first
fetched, and runs its blocking calls on a worker thread.

Settings: ``EPISTEME_VAULT_ADDR`` or ``VAULT_ADDR``; ``EPISTEME_VAULT_TOKEN`` or
``VAULT_TOKEN``; optionally ``EPISTEME_VAULT_NAMESPACE`` or ``VAULT_NAMESPACE``
(Vault Enterprise) and ``EPISTEME_VAULT_TIMEOUT`` (seconds, default 10).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from episteme.errors import InvalidInput, NotFound
from episteme.secrets.refs import scheme_of
from episteme.secrets.store import (
    SecretBackend,
    SecretStoreError,
    SecretStoreRefused,
    SecretStoreUnavailable,
    Unconfigured,
    first,
)

FORM = "vault://mount/path/to/secret#field"
INSTALL = "pip install 'episteme[vault]'"


@dataclass(frozen=True, slots=True)
class VaultRef:
    """A parsed ``vault://mount/path#field`` reference."""

    mount: str
    path: str
    field: str

    def __str__(self) -> str:
        return f"vault://{self.mount}/{self.path}#{self.field}"


def parse_vault_ref(text: str) -> VaultRef:
    """Parse ``vault://mount/path/to/secret#field``.

    Raises:
        InvalidInput: a one-line message that says what a Vault reference looks like.
    """
    raw = text.strip()
    scheme = scheme_of(raw)
    if scheme != "vault":
        raise _bad(raw, f"{scheme}:// is not a Vault reference")
    body, hash_, field = raw[len("vault://") :].partition("#")
    if not hash_ or not field.strip():
        raise _bad(raw, "it names no field after '#'")
    mount, _, path = body.partition("/")
    segments = path.split("/")
    if not mount.strip() or not path or any(not s.strip() for s in segments):
        raise _bad(raw, "it needs a mount and a path of non-empty segments")
    return VaultRef(mount, path, field)


def _bad(raw: str, why: str) -> InvalidInput:
    return InvalidInput(
        f"cannot read reference {raw!r}: {why}; a Vault reference looks like {FORM}",
        field="reference",
    )


def from_env(environ: Mapping[str, str]) -> SecretBackend:
    """`VaultKV2` from the environment, or a backend that says what to set."""
    addr = first(environ, "EPISTEME_VAULT_ADDR", "VAULT_ADDR")
    token = first(environ, "EPISTEME_VAULT_TOKEN", "VAULT_TOKEN")
    if addr is None or token is None:
        return Unconfigured(
            "HashiCorp Vault",
            "set EPISTEME_VAULT_ADDR and EPISTEME_VAULT_TOKEN (or VAULT_ADDR and VAULT_TOKEN)",
        )
    timeout = first(environ, "EPISTEME_VAULT_TIMEOUT")
    try:
        timeout_s = float(timeout) if timeout else 10.0
    except ValueError:
        return Unconfigured("HashiCorp Vault", "EPISTEME_VAULT_TIMEOUT must be a number of seconds")
    namespace = first(environ, "EPISTEME_VAULT_NAMESPACE", "VAULT_NAMESPACE")
    return VaultKV2(addr, token, namespace=namespace, timeout_s=timeout_s)


class VaultKV2:
    """Reads ``vault://mount/path#field`` from a Vault server's KV v2 engine with hvac."""

    def __init__(
        self, url: str, token: str, *, namespace: str | None = None, timeout_s: float = 10.0
    ) -> None:
        self.url = url.rstrip("/")
        self.__token = token
        self.namespace = namespace
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"VaultKV2({self.url!r})"

    async def fetch(self, ref: str) -> str:
        parsed = parse_vault_ref(ref)
        hvac = _import_hvac()
        return await asyncio.to_thread(self._read, hvac, parsed, ref.strip())

    def _read(self, hvac: Any, ref: VaultRef, shown: str) -> str:
        import requests

        where = f"Vault at {self.url}"
        errors = hvac.exceptions
        client = hvac.Client(
            url=self.url, token=self.__token, namespace=self.namespace, timeout=self.timeout_s
        )
        try:
            answer = client.secrets.kv.v2.read_secret_version(
                path=ref.path, mount_point=ref.mount, raise_on_deleted_version=True
            )
        except errors.InvalidPath:
            raise NotFound(
                f"{shown}: {where} has no secret {ref.path!r} in the KV v2 engine at "
                f"{ref.mount!r} (or its latest version is deleted)",
                field="reference",
            ) from None
        except (errors.Unauthorized, errors.Forbidden) as exc:
            raise SecretStoreRefused(
                f"{shown}: {where} refused the token ({type(exc).__name__}); check "
                "EPISTEME_VAULT_TOKEN and that its policy may read this path"
            ) from None
        except (errors.VaultDown, errors.InternalServerError, errors.BadGateway) as exc:
            raise SecretStoreUnavailable(
                f"{shown}: {where} is unavailable ({type(exc).__name__}); try again"
            ) from None
        except requests.RequestException as exc:
            raise SecretStoreUnavailable(
                f"{shown}: {where} cannot be reached ({type(exc).__name__}); check "
                "EPISTEME_VAULT_ADDR and that Vault is running"
            ) from None
        except errors.VaultError as exc:
            raise SecretStoreError(f"{shown}: {where} failed ({type(exc).__name__})") from None
        finally:
            client.adapter.close()
        data = ((answer or {}).get("data") or {}).get("data")
        if not isinstance(data, dict):
            raise SecretStoreError(f"{shown}: {where} sent no KV v2 data for {ref.path!r}")
        return _field(shown, ref, data)


def _field(shown: str, ref: VaultRef, data: dict[str, Any]) -> str:
    if ref.field in data:
        key = ref.field
    else:
        folded = [k for k in data if k.casefold() == ref.field.casefold()]
        if len(folded) != 1:
            keys = ", ".join(sorted(data, key=str.casefold)) or "none"
            raise NotFound(
                f"{shown}: no field {ref.field!r} in secret {ref.path!r} (fields: {keys})",
                field="reference",
            )
        key = folded[0]
    value = data[key]
    return value if isinstance(value, str) else json.dumps(value)


def _import_hvac() -> Any:
    try:
        import hvac  # type: ignore[import-untyped]
    except ImportError:
        raise InvalidInput(
            f"vault:// references need the hvac package, which is not installed: {INSTALL}",
            field="reference",
        ) from None
    return hvac
