"""Dependencies: the ledger, the metrics and the authenticated principal.

State comes from `app.state` (set by `create_app`), never from module globals. The
principal comes from the bearer token only; a route names the operation it performs
and `allow` refuses, and records, a call whose roles do not cover it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from types import UnionType
from typing import Annotated, Union, get_args, get_origin

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from episteme.errors import (
    BodyStalled,
    EpistemeError,
    Forbidden,
    InvalidInput,
    StoreUnavailable,
    TooLarge,
    Unauthenticated,
    Unsupported,
)
from episteme.ledger.access import Op, Principal, TokenRefused
from episteme.ledger.core import Ledger

from .metrics import Metrics
from .problems import console_page, headers_of, problem_of, wants_page

_bearer = HTTPBearer(auto_error=False, description="A token from `episteme token create`")


# async: a plain function would cost a thread-pool hop per request for a dict lookup
async def get_ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def authorize(
    ledger: Ledger, metrics: Metrics, secret: str | None, op: Op, target: str
) -> Principal:
    """The token's principal if its roles allow `op`; otherwise raise (and record the refusal).

    Authentication is one indexed read: on a local store (SQLite) cheap enough to run on
    the event loop; on a remote one it goes to a worker thread, so that a database that
    went away stalls this request, not the server. Recording a refusal is a write, so it
    always goes to a worker thread.
    """
    try:
        if ledger.store.remote:
            principal = await anyio.to_thread.run_sync(ledger.authenticate, secret)
        else:
            principal = ledger.authenticate(secret)
    except TokenRefused as exc:  # recorded, and so counted (`Metrics`)
        await anyio.to_thread.run_sync(
            ledger.deny, exc.principal, exc.token_id, "authenticate", target, exc.message
        )
        raise
    except Unauthenticated:  # no one to record it against: counted here
        metrics.denied.labels("401").inc()
        raise
    if not principal.allows(op):
        try:
            principal.require(op)
        except Forbidden as exc:
            await anyio.to_thread.run_sync(
                ledger.deny, principal.name, principal.token_id, str(op), target, exc.message
            )
            raise
    return principal


def allow(op: Op) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and checks that it may perform `op`."""

    async def caller(
        request: Request, ledger: LedgerDep, metrics: MetricsDep, creds: Credentials
    ) -> Principal:
        target = f"{request.method} {request.url.path}"
        principal = await authorize(
            ledger, metrics, creds.credentials if creds else None, op, target
        )
        known_query(request)  # after authentication: a stranger learns nothing of the route
        request.state.principal = principal
        return principal

    caller.op = op  # type: ignore[attr-defined]  # read by `refused_first`
    return caller


SCRAPER_MEMORY_S = 600.0
"""How long a worker remembers a token that read `/metrics`, for when the store is away."""
_SCRAPERS = 64


def scraper() -> Callable[..., Awaitable[None]]:
    """The dependency of `/metrics`: any valid token, as `allow(Op.READ)` asks, except
    while the store is away. Then no token can be looked up, and a scrape would fail for
    the whole outage, hiding its own 503s; a token that scraped this worker within
    `SCRAPER_MEMORY_S` is answered instead (a digest of it is kept, never the token)."""
    seen: dict[bytes, float] = {}

    async def caller(
        request: Request, ledger: LedgerDep, metrics: MetricsDep, creds: Credentials
    ) -> None:
        secret = creds.credentials if creds else None
        key = None if secret is None else hashlib.blake2b(secret.encode(), digest_size=16).digest()
        now = time.monotonic()
        if key is not None and seen.get(key, 0.0) > now:
            try:
                await anyio.to_thread.run_sync(ledger.store.probe)  # within 2 s
            except StoreUnavailable:
                metrics.store_away()
                return
        target = f"{request.method} {request.url.path}"
        await authorize(ledger, metrics, secret, Op.READ, target)
        known_query(request)
        if key is not None:
            if len(seen) >= _SCRAPERS:
                for old in [k for k, until in seen.items() if until <= now] or [next(iter(seen))]:
                    del seen[old]
            seen[key] = now + SCRAPER_MEMORY_S

    return caller


async def refused_first(request: Request) -> Response | None:
    """The refusal the route's caller would have met, if any (recorded as every refusal).

    FastAPI parses a JSON body before it runs a route's dependencies (it validates the
    body after them), so a malformed one would be answered 400 before the token is
    looked at, and a revoked token's attempt would go unrecorded."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    ops = [getattr(d.call, "op", None) for d in getattr(dependant, "dependencies", ())]
    op = next((o for o in ops if isinstance(o, Op)), None)
    if op is None:
        return None
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    secret = credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
    state = request.app.state
    target = f"{request.method} {request.url.path}"
    try:
        await authorize(state.ledger, state.metrics, secret, op, target)
    except EpistemeError as exc:
        return problem_of(exc)
    return None


def known_query(request: Request) -> None:
    """Refuse unknown or repeated query parameters: a typo must not widen an answer.

    ``/v1/audit?agnet=deploy-agent`` would otherwise list every agent's reads.
    """
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = {p.alias: p for p in dependant.query_params}
    for name in request.query_params:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise InvalidInput(
                f"unknown query parameter {name!r}: this route takes {known}", field=name
            )
        if len(request.query_params.getlist(name)) > 1 and not _listed(
            allowed[name].field_info.annotation
        ):
            raise InvalidInput(f"give the query parameter {name!r} once", field=name)


def _listed(annotation: object) -> bool:
    """Whether a query parameter takes a list (`?tag=a&tag=b`), optional or not."""
    kinds = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    return any(get_origin(k) is list for k in (annotation, *kinds))


BODY_WAIT_S = 30.0
"""How long a request body may pause before the request is refused (408)."""


async def next_part(receive: Receive) -> Message:
    """The next part of a request body, or `BodyStalled` when none comes in `BODY_WAIT_S`:
    a client whose Content-Length promises more than it sends would otherwise hold its
    connection, and a worker's task, for ever. asyncio's timeout (the server's loop is
    asyncio's): an anyio cancel scope here measured slower, in `bench/api_cpu.py`."""
    try:
        async with asyncio.timeout(BODY_WAIT_S):
            return await receive()
    except TimeoutError:
        pass
    raise BodyStalled(
        f"the request body stopped arriving: nothing came for {BODY_WAIT_S:.0f} s; send it "
        "whole (and check that Content-Length is the body's length)",
        field="body",
    )


class HeadAsGet:
    """Answers HEAD as the route answers GET, without the body (RFC 9110 §9.3.2): a load
    balancer's health check may ask `HEAD /health`. FastAPI routes take only the
    methods they declare, and declaring HEAD would double the API reference.

    The response ends with its headers. The server then tells the route the client has
    gone, so a streamed answer (an export, a followed diagnosis) stops where it is
    rather than running to its end for nobody, holding the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b""})
            elif message["type"] != "http.response.body":
                await send(message)

        await self.app(dict(scope, method="GET"), receive, headers_only)


MCP_PATH = "/mcp"


def jsonrpc_refusal(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A refusal at `/mcp`: a JSON-RPC error (Invalid Request, to no id) as
    `application/json`, which MCP clients read in an answer of any status and pass on;
    problem details they replace with "Server returned an error response"."""
    error = {"code": -32600, "message": message}
    return JSONResponse({"jsonrpc": "2.0", "id": None, "error": error}, status, headers=headers)


def refusal(scope: Scope, exc: EpistemeError) -> Response:
    """A refusal made before a route: problem details, or at `/mcp` a JSON-RPC error
    (its clients read one in a non-2xx answer; problem details they replace with
    "Server returned an error response", and the model never learns what to fix)."""
    if scope.get("path") == MCP_PATH:
        return jsonrpc_refusal(exc.status, exc.message, headers_of(exc))
    if wants_page(scope):  # a console form over the size limit
        page = console_page(scope, exc.status, exc.title, exc.message)
        page.headers.update(headers_of(exc))
        return page
    return problem_of(exc)


class OneCredential:
    """Refuses a request with more than one Authorization header (400). Each door read
    its own: the API and the query shortcut the first, `/mcp` the last, so behind a
    proxy that adds one the same request acted as two principals."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = sum(1 for name, _ in scope["headers"] if name == b"authorization")
            if given > 1:
                exc = InvalidInput(
                    f"{given} Authorization headers: send one (is a proxy adding its own?)",
                    field="authorization",
                )
                await refusal(scope, exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, before a route reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        # a body comes with a length above 0 or in chunks; a GET that names an encoding
        # for the body it does not have is not refused for it
        has_body = any(
            (name == b"content-length" and value.strip() not in (b"0", b""))
            or name == b"transfer-encoding"
            for name, value in headers
        )
        for name, value in headers:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await refusal(scope, TooLarge(self._message(), field="body"))(scope, receive, send)
                return
            if (
                has_body
                and name == b"content-encoding"
                and value.strip().lower() not in (b"", b"identity")
            ):
                coding = value.decode("latin-1").strip()
                detail = f"the request body is compressed ({coding}): send it uncompressed"
                await refusal(scope, Unsupported(detail, field="body"))(scope, receive, send)
                return
        seen = 0
        whole = False  # the body has all come: what follows is a wait for a disconnect
        refused: EpistemeError | None = None
        replaced = False

        async def counting() -> Message:
            nonlocal seen, whole, refused
            if whole:
                return await receive()
            try:
                message = await next_part(receive)
            except BodyStalled as exc:
                refused = exc  # the route fails to read its body; its answer is replaced
                raise
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                whole = not message.get("more_body", False)
                if seen > self.limit:
                    refused = TooLarge(self._message(), field="body")
                    raise refused
            return message

        async def sending(message: Message) -> None:
            nonlocal replaced
            if refused is not None and message["type"] == "http.response.start":
                replaced = True
                await refusal(scope, refused)(scope, receive, send)
            elif not replaced:
                await send(message)

        try:
            await self.app(scope, counting, sending)
        except Exception:
            # What the app raised on failing to read the body (the MCP transport answers,
            # then raises again): the 413 or 408 is the whole answer, not a server error.
            if refused is None:
                raise
            if not replaced:
                await refusal(scope, refused)(scope, receive, send)

    def _message(self) -> str:
        return (
            f"the request body is over {self.limit:,} bytes: send less, or raise "
            "EPISTEME_MAX_BODY on the server"
        )
