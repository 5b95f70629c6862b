"""``op://`` references against 1Password Connect, over its REST API with httpx.

The official SDK resolves neither ``op://`` references nor names case-insensitively, so
this backend does it the way ``op read`` does: list the vaults (``GET /v1/vaults``) and
pick one by name or id, list its items (``GET /v1/vaults/{id}/items``) and pick one by
title or id, read the full item (``GET /v1/vaults/{id}/items/{id}``) and pick the field
by label or id — within the named section, when the reference names one. Every match
ignores case; an exact-case match wins over others, and a name two things share is an
error that asks for the id.

Listings (names and ids, never values) are kept for a few seconds, so a lease of
several fields of one item lists once. Full items, which hold values, are never kept.
Settings: ``EPISTEME_OP_CONNECT_HOST`` and ``EPISTEME_OP_CONNECT_TOKEN``, or the SDK's
``OP_CONNECT_HOST`` and ``OP_CONNECT_TOKEN``; ``EPISTEME_OP_CONNECT_TIMEOUT`` (seconds,
default 10).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from episteme.errors import InvalidInput, NotFound
from episteme.secrets.refs import SecretRef, parse_ref
from episteme.secrets.store import (
    SecretBackend,
    SecretStoreError,
    SecretStoreRefused,
    SecretStoreUnavailable,
    Unconfigured,
    first,
)

HOST_VARS = ("EPISTEME_OP_CONNECT_HOST", "OP_CONNECT_HOST")
TOKEN_VARS = ("EPISTEME_OP_CONNECT_TOKEN", "OP_CONNECT_TOKEN")
LISTING_TTL_S = 10.0
_EXAMPLE = "http://localhost:8080"
_SHOWN = 12
"""Names listed at most in a not-found message."""

Row = dict[str, Any]


def from_env(environ: Mapping[str, str]) -> SecretBackend:
    """`OnePasswordConnect` from the environment, or a backend that says what to set."""
    host, token = first(environ, *HOST_VARS), first(environ, *TOKEN_VARS)
    if host is None or token is None:
        missing = " and ".join(
            v[0] for v, got in ((HOST_VARS, host), (TOKEN_VARS, token)) if not got
        )
        return Unconfigured(
            "1Password Connect",
            f"set {missing} (or OP_CONNECT_HOST and OP_CONNECT_TOKEN); "
            "`episteme dev-vault` serves a development one",
        )
    if not host.startswith(("http://", "https://")):
        return Unconfigured(
            "1Password Connect", f"EPISTEME_OP_CONNECT_HOST must be a URL such as {_EXAMPLE}"
        )
    timeout = first(environ, "EPISTEME_OP_CONNECT_TIMEOUT")
    try:
        timeout_s = float(timeout) if timeout else 10.0
    except ValueError:
        return Unconfigured(
            "1Password Connect", "EPISTEME_OP_CONNECT_TIMEOUT must be a number of seconds"
        )
    return OnePasswordConnect(host, token, timeout_s=timeout_s)


class OnePasswordConnect:
    """Reads ``op://vault/item/[section/]field`` from a 1Password Connect server."""

    def __init__(
        self,
        host: str,
        token: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self.__token = token
        self.timeout_s = timeout_s
        self._transport = transport
        self._listings: dict[str, tuple[float, list[Row]]] = {}

    def __repr__(self) -> str:
        return f"OnePasswordConnect({self.host!r})"

    async def fetch(self, ref: str) -> str:
        """The value of ``op://…`` `ref` (see the module docstring for how names match)."""
        parsed = parse_ref(ref)
        shown = ref.strip()
        async with httpx.AsyncClient(
            base_url=self.host,
            headers={"Authorization": f"Bearer {self.__token}"},
            timeout=self.timeout_s,
            transport=self._transport,
        ) as client:
            call = _Call(client, self.host, shown)
            vaults = await self._listing(call, "/v1/vaults")
            vault = _pick(shown, "vault", parsed.vault, vaults, "name", "", _names(vaults, "name"))
            vid = str(vault["id"])
            items = [
                i
                for i in await self._listing(call, f"/v1/vaults/{vid}/items")
                if not i.get("trashed")
            ]
            where = f" in vault {vault.get('name')!r}"
            item = _pick(shown, "item", parsed.item, items, "title", where, _names(items, "title"))
            full = await call.get(f"/v1/vaults/{vid}/items/{item['id']}")
        if not isinstance(full, dict):
            raise SecretStoreError(f"{shown}: 1Password Connect at {self.host} sent no item")
        return _value(shown, parsed, full)

    async def _listing(self, call: _Call, path: str) -> list[Row]:
        kept = self._listings.get(path)
        now = time.monotonic()
        if kept is not None and now - kept[0] < LISTING_TTL_S:
            return kept[1]
        rows = await call.get(path)
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "id" in r for r in rows):
            raise SecretStoreError(
                f"{call.ref}: 1Password Connect at {self.host} answered {path} with "
                "something that is not a list of vaults or items"
            )
        # keep only what matching needs: names and ids, never anything else
        slim = [{k: r.get(k) for k in ("id", "name", "title", "trashed")} for r in rows]
        self._listings[path] = (now, slim)
        return slim


class _Call:
    """One fetch's requests, with Connect's failures turned into Episteme errors."""

    def __init__(self, client: httpx.AsyncClient, host: str, ref: str) -> None:
        self.client, self.host, self.ref = client, host, ref

    async def get(self, path: str) -> Any:
        where = f"1Password Connect at {self.host}"
        try:
            response = await self.client.get(path)
        except httpx.TimeoutException:
            raise SecretStoreUnavailable(
                f"{self.ref}: {where} did not answer in time; check that it is running"
            ) from None
        except httpx.TransportError as exc:
            raise SecretStoreUnavailable(
                f"{self.ref}: {where} cannot be reached ({type(exc).__name__}); check "
                "EPISTEME_OP_CONNECT_HOST and that Connect is running"
            ) from None
        status = response.status_code
        if status in (401, 403):
            raise SecretStoreRefused(
                f"{self.ref}: {where} refused the Connect token ({status}); check "
                "EPISTEME_OP_CONNECT_TOKEN and that the token may read this vault"
            )
        if status == 404:
            raise NotFound(f"{self.ref}: {where} has no {path} (it may have just been removed)")
        if status >= 500:
            raise SecretStoreUnavailable(
                f"{self.ref}: {where} failed with HTTP {status}; try again, or check its logs"
            )
        if status >= 400:
            raise SecretStoreError(f"{self.ref}: {where} answered {path} with HTTP {status}")
        try:
            return response.json()
        except ValueError:
            raise SecretStoreError(
                f"{self.ref}: {where} answered {path} with something that is not JSON"
            ) from None


def _names(rows: Sequence[Row], key: str) -> str:
    names = sorted({str(r.get(key)) for r in rows if r.get(key)}, key=str.casefold)
    more = f", … ({len(names)} in all)" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more if names else "none"


def _pick(
    ref: str, kind: str, wanted: str, rows: Sequence[Row], key: str, where: str, known: str
) -> Row:
    """The row whose id, else whose `key`, equals `wanted`, ignoring case."""
    folded = wanted.casefold()
    by_id = [r for r in rows if str(r.get("id") or "").casefold() == folded]
    if by_id:
        return by_id[0]
    named = [r for r in rows if str(r.get(key) or "").casefold() == folded]
    if len(named) > 1:
        exact = [r for r in named if r.get(key) == wanted]
        if len(exact) == 1:
            return exact[0]
        ids = ", ".join(str(r.get("id")) for r in named)
        raise InvalidInput(
            f"{ref}: {len(named)} {kind}s{where} are named {wanted!r}: use the id of one ({ids})",
            field="reference",
        )
    if not named:
        plural = {"vault": "vaults the token can read", "item": "items"}.get(kind, f"{kind}s")
        raise NotFound(f"{ref}: no {kind} {wanted!r}{where} ({plural}: {known})", field="reference")
    return named[0]


def _value(ref: str, parsed: SecretRef, item: Row) -> str:
    title = item.get("title") or item.get("id")
    fields: list[Row] = [f for f in item.get("fields") or [] if isinstance(f, dict)]
    where = f" in item {title!r}"
    if parsed.section is not None:
        sections: list[Row] = [s for s in item.get("sections") or [] if isinstance(s, dict)]
        section = _pick(
            ref, "section", parsed.section, sections, "label", where, _names(sections, "label")
        )
        fields = [f for f in fields if (f.get("section") or {}).get("id") == section.get("id")]
        where = f" in section {section.get('label') or section.get('id')!r} of item {title!r}"
    else:
        # no section named: a field outside every section wins over those inside one
        top = [f for f in fields if not (f.get("section") or {}).get("id")]
        wanted = parsed.field.casefold()
        if any(
            wanted in (str(f.get("id")).casefold(), str(f.get("label")).casefold()) for f in top
        ):
            fields = top
    field = _pick(ref, "field", parsed.field, fields, "label", where, _names(fields, "label"))
    value = field.get("value")
    if not isinstance(value, str) or value == "":
        label = field.get("label") or field.get("id")
        raise NotFound(f"{ref}: the field {label!r}{where} has no value", field="reference")
    return value
