"""`POST /v1/query`, the call agents make most, answered without the framework.

Measured in-process on the 100 k benchmark ledger, the framework (routing, dependency
solving, body validation) cost about as much CPU per audited query as the query itself;
see docs/benchmarks.md, "Over HTTP". This middleware answers the plain case of that one
route directly: a JSON object body that validates as `QueryBody`, a bearer token whose
principal may query, no query parameters. Everything else (a body that does not parse or
validate, no token, a refused one, a role that does not allow it, query parameters, a
body over the limit) goes on to the app unchanged, with the body already read handed on,
so that errors keep one shape and every refusal is recorded in one place. The query
itself, its metrics and its encoding are `ledger_routes.run_query`, which the route
calls too. Where the store is remote, reading the token and making the query share one
trip to a worker thread.
"""

from __future__ import annotations

import re
from typing import Any

import anyio.to_thread
import orjson
from pydantic import ValidationError
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from episteme.errors import BodyStalled, EpistemeError, UserError, WorldError
from episteme.ledger.access import Op, Principal
from episteme.ledger.core import Ledger

from .deps import next_part
from .ledger_routes import run_query
from .metrics import Metrics
from .problems import problem_of, unexpected
from .schemas import QueryBody

PATH = "/v1/query"


class QueryFastPath:
    def __init__(
        self, app: ASGIApp, ledger: Ledger, metrics: Metrics, limit: int, route: BaseRoute
    ) -> None:
        self.app = app
        self.ledger = ledger
        self.metrics = metrics
        self.limit = limit
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or scope.get("query_string")
        ):
            await self.app(scope, receive, send)
            return
        secret, declared = _headers(scope)
        if secret is None or declared > self.limit:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message = await next_part(receive)
            except BodyStalled as exc:
                await problem_of(exc)(scope, receive, send)
                return
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay(chunks, message, receive), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                break
        if size > self.limit:  # stopped reading there: the app's limit answers 413
            await self.app(scope, _replay(chunks, None, receive, more), send)
            return
        body = b"".join(chunks)
        parsed = _parse(body)
        scope["route"] = self.route  # latency metrics file it under the route's template
        answered = None if parsed is None else await self._answer(secret, parsed)
        if answered is None:  # (the router files it under whatever route it matches)
            await self.app(scope, _replay([body], None, receive), send)
            return
        principal, response = answered
        if principal is not None:
            scope.setdefault("state", {})["principal"] = principal
        await response(scope, receive, send)

    async def _answer(
        self, secret: str, body: QueryBody
    ) -> tuple[Principal | None, Response] | None:
        """The caller's principal and the answer; None when the token does not let it query
        (the app then refuses it, and records the refusal). A store that cannot say who
        the token is answers 503 here: the route would wait for it as long again."""
        if self.ledger.store.remote:  # the token's read and the query: one worker thread
            return await anyio.to_thread.run_sync(self._answer_here, secret, body)
        who = self._principal(secret)  # a local read: it answers at once
        if not isinstance(who, Principal):
            return None if who is None else (None, who)
        return who, await anyio.to_thread.run_sync(self._respond, body, who)

    def _answer_here(
        self, secret: str, body: QueryBody
    ) -> tuple[Principal | None, Response] | None:
        who = self._principal(secret)
        if not isinstance(who, Principal):
            return None if who is None else (None, who)
        return who, self._respond(body, who)

    def _principal(self, secret: str) -> Principal | Response | None:
        """Who may query with `secret`; None for the route to refuse; the 503 when the
        store cannot say."""
        try:
            who = self.ledger.authenticate(secret)
        except UserError:
            return None
        except WorldError as exc:
            return problem_of(exc)
        except Exception as exc:  # a database's own error (a privilege revoked): a 503
            return unexpected("POST", PATH, exc)
        return who if who.allows(Op.QUERY) else None

    def _respond(self, body: QueryBody, principal: Principal) -> Response:
        try:
            return run_query(self.ledger, self.metrics, body, principal)
        except EpistemeError as exc:
            return problem_of(exc)
        except Exception as exc:  # as the route's would be answered
            return unexpected("POST", PATH, exc)


def _headers(scope: Scope) -> tuple[str | None, int]:
    """The bearer token (None: absent, or not a JSON request) and the declared length."""
    secret: str | None = None
    declared = 0
    json: bool | None = None  # None: no Content-Type, which the route refuses (415)
    seen_auth = False
    for name, value in scope["headers"]:
        if name == b"authorization" and not seen_auth:
            seen_auth = True
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials:
                secret = credentials
        elif name == b"content-type" and json is None:  # the first, as the route reads it
            json = value.split(b";", 1)[0].strip().lower() == b"application/json"
        elif name == b"content-length":
            declared = int(value) if value.isdigit() else 0
        elif name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            json = False  # compressed: the app refuses it (415)
    return (secret if json else None), declared


_LONG_NUMBER = re.compile(rb"\d{19}")
"""Digits enough for an integer past 64 bits, which orjson reads as a float where the
route's parser keeps it exact (and the ledger refuses it): such a body goes to the route.
Shorter integers always fit, and orjson reads them exactly."""


def _parse(body: bytes) -> QueryBody | None:
    """The body as the route would validate it (a JSON object), or None."""
    if _LONG_NUMBER.search(body):
        return None
    try:
        data: Any = orjson.loads(body)
        if not isinstance(data, dict):
            return None
        return QueryBody.model_validate(data)
    except (orjson.JSONDecodeError, ValidationError):
        return None


def _replay(
    chunks: list[bytes], last: Message | None, receive: Receive, more: bool = False
) -> Receive:
    """`receive`, giving back first what was read from it already."""
    pending: list[Message] = [
        {"type": "http.request", "body": b"".join(chunks), "more_body": more or last is not None}
    ]
    if last is not None:
        pending.append(last)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
