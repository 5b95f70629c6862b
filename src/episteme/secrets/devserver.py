"""The dev vault: the subset of the 1Password Connect REST API that the official SDK uses.

`episteme dev-vault` serves it, so diagnosis, demos and tests run against a real HTTP
server and the real clients (ours and ``onepasswordconnectsdk``) instead of a mock:

    GET /v1/vaults[?filter=name eq "X"]           vaults the token can read
    GET /v1/vaults/{id}                           one vault
    GET /v1/vaults/{id}/items[?filter=title eq "X"]  item summaries (no fields)
    GET /v1/vaults/{id}/items/{id}                the full item: sections and fields
    GET /health, GET /heartbeat                   no token needed

Every ``/v1`` route needs ``Authorization: Bearer <token>``. Errors have Connect's shape,
``{"status": 401, "message": "…"}``, which the SDK reads. Filters are Connect's exact,
case-sensitive ``eq`` on ``name`` (vaults), ``title`` or ``tag`` (items), joined by
``and``/``or``. Ids are 26 lowercase letters and digits, like Connect's, derived from
the names so they stay the same from one start to the next.

What it serves is an items file or the development defaults (`episteme.secrets.devitems`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, Response
from whenever import Instant

from episteme import __version__
from episteme.errors import InvalidInput
from episteme.secrets.devitems import ItemsFile, check, default_items, describe_error, make_id

Json = dict[str, Any]


def _field(vid: str, iid: str, label: str, value: str, section: str | None) -> Json:
    folded = label.casefold()
    concealed = any(w in folded for w in ("password", "secret", "token", "key"))
    purpose = {"username": "USERNAME", "password": "PASSWORD"}.get(folded, "")
    row: Json = {
        "id": make_id("field", vid, iid, section or "", label),
        "type": "CONCEALED" if concealed else "STRING",
        "label": label,
        "value": value,
    }
    if purpose:
        row["purpose"] = purpose
    if section is not None:
        row["section"] = {"id": section}
    return row


class Catalog:
    """The vaults and items served, as Connect's JSON, built once at start."""

    def __init__(self, spec: ItemsFile, now: Instant) -> None:
        check(spec)
        at = now.round("second").format_iso()
        editor = make_id("user", "episteme-dev-vault")
        self.vaults: list[Json] = []
        self.items: dict[str, list[Json]] = {}
        for v in spec.vaults:
            vid = v.id or make_id("vault", v.name)
            full_items: list[Json] = []
            for it in v.items:
                iid = it.id or make_id("item", vid, it.title)
                sections: list[Json] = []
                fields = [_field(vid, iid, k, val, None) for k, val in it.fields.items()]
                for label, section_fields in it.sections.items():
                    sid = make_id("section", vid, iid, label)
                    sections.append({"id": sid, "label": label})
                    fields += [_field(vid, iid, k, val, sid) for k, val in section_fields.items()]
                full_items.append(
                    {
                        "id": iid, "title": it.title, "vault": {"id": vid},
                        "category": it.category.upper(), "tags": list(it.tags),
                        "favorite": False, "trashed": False, "version": 1,
                        "createdAt": at, "updatedAt": at, "lastEditedBy": editor,
                        "sections": sections, "fields": fields,
                    }
                )  # fmt: skip
            self.items[vid] = full_items
            self.vaults.append(
                {
                    "id": vid, "name": v.name, "description": v.description,
                    "attributeVersion": 1, "contentVersion": len(full_items) + 1,
                    "items": len(full_items), "type": "USER_CREATED",
                    "createdAt": at, "updatedAt": at,
                }
            )  # fmt: skip

    def vault(self, vid: str) -> Json:
        for v in self.vaults:
            if v["id"] == vid:
                return v
        raise _Problem(404, f"vault {vid} not found")

    def item(self, vid: str, iid: str) -> Json:
        self.vault(vid)
        for it in self.items[vid]:
            if it["id"] == iid:
                return it
        raise _Problem(404, f"item {iid} not found in vault {vid}")


def _summary(item: Json) -> Json:
    return {k: v for k, v in item.items() if k not in ("fields", "sections")}


class _Problem(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _connect_error(status: int, message: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"status": status, "message": message}, status, headers=headers)


_TERM = re.compile(r'\s*(\w+)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*')
_JOIN = re.compile(r"(and|or)\b", re.IGNORECASE)


def _parse_filter(
    text: str, attrs: Mapping[str, Callable[[Json], list[str]]]
) -> Callable[[Json], bool]:
    """Connect's filter: ``attr eq "value"`` terms joined by ``and``/``or`` (``and`` first).

    Raises:
        _Problem: 400 for anything else.
    """
    groups: list[list[tuple[str, str]]] = [[]]
    pos = 0
    while True:
        m = _TERM.match(text, pos)
        if m is None or m.group(1) not in attrs:
            allowed = " or ".join(f'{a} eq "…"' for a in attrs)
            raise _Problem(400, f"invalid filter query: use {allowed}, joined by and/or")
        groups[-1].append((m.group(1), re.sub(r"\\(.)", r"\1", m.group(2))))
        pos = m.end()
        if pos == len(text):
            break
        j = _JOIN.match(text, pos)
        if j is None:
            raise _Problem(400, "invalid filter query: join terms with and/or")
        if j.group(1).lower() == "or":
            groups.append([])
        pos = j.end()

    def keep(row: Json) -> bool:
        return any(all(value in attrs[a](row) for a, value in g) for g in groups)

    return keep


_VAULT_ATTRS: dict[str, Callable[[Json], list[str]]] = {"name": lambda r: [r["name"]]}
_ITEM_ATTRS: dict[str, Callable[[Json], list[str]]] = {
    "title": lambda r: [r["title"]],
    "tag": lambda r: list(r.get("tags") or []),
}


def _catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


def _authorized(request: Request) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise _Problem(401, "missing bearer token: send Authorization: Bearer <token>")
    if not secrets.compare_digest(given.strip().encode(), request.app.state.token.encode()):
        raise _Problem(401, "invalid bearer token")


CatalogDep = Annotated[Catalog, Depends(_catalog)]
FilterQ = Annotated[str | None, Query(alias="filter")]


def _router() -> APIRouter:
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_authorized)])

    @v1.get("/vaults")
    def vaults(catalog: CatalogDep, filter_: FilterQ = None) -> list[Json]:
        keep = _parse_filter(filter_, _VAULT_ATTRS) if filter_ else None
        return [v for v in catalog.vaults if keep is None or keep(v)]

    @v1.get("/vaults/{vault_id}")
    def vault(vault_id: str, catalog: CatalogDep) -> Json:
        return catalog.vault(vault_id)

    @v1.get("/vaults/{vault_id}/items")
    def items(vault_id: str, catalog: CatalogDep, filter_: FilterQ = None) -> list[Json]:
        catalog.vault(vault_id)
        keep = _parse_filter(filter_, _ITEM_ATTRS) if filter_ else None
        return [_summary(i) for i in catalog.items[vault_id] if keep is None or keep(i)]

    @v1.get("/vaults/{vault_id}/items/{item_id}")
    def item(vault_id: str, item_id: str, catalog: CatalogDep) -> Json:
        return catalog.item(vault_id, item_id)

    return v1


def create_devserver_app(items: ItemsFile | Mapping[str, Any] | None, token: str) -> FastAPI:
    """The dev vault as an ASGI app: `items` (the defaults when None), behind `token`.

    Raises:
        InvalidInput: `items` is not a valid items file, or `token` is empty.
    """
    if not token.strip():
        raise InvalidInput("the dev vault needs a non-empty token", field="token")
    if items is None:
        spec = default_items()
    elif isinstance(items, ItemsFile):
        spec = items
    else:
        try:
            spec = ItemsFile.model_validate(items)
        except ValidationError as exc:
            raise InvalidInput(f"items: {describe_error(exc)}", field="items") from None
    app = FastAPI(title="Episteme dev vault", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.catalog = Catalog(spec, Instant.now())
    app.state.token = token.strip()

    @app.exception_handler(_Problem)
    async def problem(request: Request, exc: _Problem) -> Response:
        return _connect_error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _connect_error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return _connect_error(400, "invalid request")

    @app.get("/heartbeat", response_class=PlainTextResponse)
    def heartbeat() -> str:
        return "."

    @app.get("/health")
    def health() -> Json:
        return {
            "name": "Episteme dev vault (1Password Connect API subset)",
            "version": __version__,
            "dependencies": [{"service": "memory", "status": "ACTIVE", "message": "dev items"}],
        }

    app.include_router(_router())
    return app


def new_token() -> str:
    """A random token for a dev vault started without one."""
    return "dev-vault-" + secrets.token_urlsafe(24)
