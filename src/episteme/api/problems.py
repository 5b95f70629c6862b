"""One error shape for the whole API: RFC 9457 ``application/problem+json``.

Every error becomes ``{type, title, status, detail, field}``. Library errors carry
their status and a message that says what to fix (`episteme.errors`); request
validation and unknown routes are mapped here, once. An unexpected failure is a
500 whose detail names no internals: the traceback goes to the log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from episteme.errors import (
    BodyStalled,
    EpistemeError,
    Unauthenticated,
    database_failed,
    from_database,
    hide_secrets,
)
from episteme.ledger.canonical import MAX_DEPTH
from episteme.ledger.model import plain_message
from episteme.text import quoted

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("episteme.api")


class Problem(BaseModel):
    """An error, as every route reports it."""

    type: str = Field(examples=["urn:episteme:problem:not-found"])
    title: str = Field(examples=["Not found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["no assertion with id '7f3e9a'"])
    field: str | None = Field(None, examples=["id"])


def _slug(title: str) -> str:
    return "urn:episteme:problem:" + title.lower().replace(" ", "-")


def problem(
    status: int, title: str, detail: str, field: str | None = None, **headers: str
) -> Response:
    body = _body(status, title, detail, field)
    return Response(orjson.dumps(body), status, headers=headers or None, media_type=MEDIA_TYPE)


def _body(status: int, title: str, detail: str, field: str | None) -> dict[str, Any]:
    # a problem made here, not from a library error, quotes input too (a query
    # parameter's name, a value the validation refused): masked as a library error is
    return {
        "type": _slug(title),
        "title": title,
        "status": status,
        "detail": hide_secrets(detail),
        "field": None if field is None else hide_secrets(field),
    }


def problem_of(exc: EpistemeError) -> Response:
    """A library error as its problem (and, for a missing or bad token, the challenge)."""
    return problem(exc.status, exc.title, exc.message, exc.field, **headers_of(exc))


def headers_of(exc: EpistemeError) -> dict[str, str]:
    """The headers a refusal carries: the challenge for a missing or bad token, and for a
    body that stopped arriving the end of the connection (RFC 9110 §15.5.9). The rest of
    that body may still come, so the connection can carry no other request; without the
    header the server held it open for its keep-alive wait (5 s) after the 408."""
    if isinstance(exc, Unauthenticated):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, BodyStalled):
        return {"Connection": "close"}
    return {}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route can answer with."""
    # The schema inline, not `model=`: FastAPI would file a model under application/json.
    schema = Problem.model_json_schema()
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "content": {
                MEDIA_TYPE: {"schema": schema, "example": _body(status, *_EXAMPLES[status])}
            },
        }
        for status in statuses
    }


_EXAMPLES: dict[int, tuple[str, str, str | None]] = {
    400: (
        "Invalid input",
        "unknown query parameter 'agnt': this route takes agent, before, limit, since, subject,"
        " until",
        "agnt",
    ),
    401: (
        "Unauthenticated",
        "no bearer token: send `Authorization: Bearer <token>` (an admin creates one with"
        " `episteme token create`)",
        None,
    ),
    403: (
        "Forbidden",
        "tokens needs the admin role; deploy-agent has agent: ask an admin for a token with"
        " the admin role",
        None,
    ),
    404: ("Not found", "no assertion with id '7f3e9a'", "id"),
    405: ("Method not allowed", "DELETE is not allowed on /v1/query: use POST", None),
    409: (
        "Conflict",
        "assertion 7f3e9a01b2c4 is proposed: it cannot become deprecated; a proposed assertion"
        " can be approved or rejected",
        None,
    ),
    413: (
        "Request too large",
        "the request body is over 1,048,576 bytes: send less, or raise EPISTEME_MAX_BODY on"
        " the server",
        "body",
    ),
    415: (
        "Unsupported media type",
        "send the body as JSON, with the header Content-Type: application/json",
        None,
    ),
    422: ("Unknown field", "unknown field 'subjct'", "subjct"),
    503: (
        "Service unavailable",
        "PostgreSQL at postgresql://episteme@db.internal:5432/episteme is unavailable: no"
        " connection could be had within 10 s (all 10 of this process's connections were"
        " busy: look for slow statements)",
        None,
    ),
}


_DESCRIPTIONS = {
    400: "Invalid input: the detail says what to fix",
    401: "Missing, unknown, expired or revoked bearer token",
    403: "The token's roles do not allow this (the refusal is recorded)",
    404: "Unknown id, subject, lens or epoch",
    409: "The current state forbids this change",
    405: "The route does not take this method",
    413: "The request body is over the size limit",
    415: "The request body is not sent as JSON (Content-Type: application/json)",
    422: "The request does not match the schema: wrong type, missing or unknown field",
    503: "The store is unavailable",
}


_SUBJECT_HINT = (
    "use dotted segments of letters, digits, '_' or '-', not starting with '-' "
    "(e.g. auth.jwt.algorithm)"
)
_NAME_HINT = "start with a letter or digit; then letters, digits or _ . @ : -"
_PATTERN_HINTS = {
    "subject": _SUBJECT_HINT,
    "subjects": _SUBJECT_HINT,
    "prefix": _SUBJECT_HINT,
    "scope": _SUBJECT_HINT,
    "topic": _SUBJECT_HINT,
    "epoch": _NAME_HINT,
    "agent": _NAME_HINT,
    "principal": _NAME_HINT,
    "lens": _NAME_HINT,
    "name": _NAME_HINT,
    "tags": "a tag is a word of letters, digits, '.', '_', ':', '/' or '-', starting with a"
    " letter or digit (e.g. deploy, npm, db-migration)",
}
_PATTERN_HINTS["tag"] = _PATTERN_HINTS["tags"]


def invalid_detail(errors: Sequence[Any]) -> tuple[int, str, str, str | None]:
    """(status, title, detail, field) for pydantic's errors about a request (the first
    one), in words that say what to fix: also what the MCP tools answer."""
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or None
    kind = err.get("type", "")
    if kind == "json_invalid":
        where = err.get("ctx", {}).get("error", "")
        return 400, "Malformed JSON", f"the request body is not valid JSON: {where}", None
    if kind == "extra_forbidden":
        name = loc[-1] if loc else "?"
        hint = ""
        if name in ("agent", "by", "actor", "principal"):
            hint = ": who is acting comes from the bearer token, never from the body"
        return 422, "Unknown field", f"unknown field {name!r}{hint}", field
    given = err.get("input")
    if not loc and isinstance(given, bytes):  # FastAPI reads JSON only when declared as such
        return 415, "Unsupported media type", _NOT_JSON, None
    if kind == "missing" and not loc and tuple(err.get("loc", ())) == ("body",):
        detail = (
            "the request body is missing: send a JSON object of this route's fields (see /docs)"
        )
        return 422, "Invalid request", detail, "body"
    if kind == "recursion_depth_exceeded":  # pydantic's own limit, past the ledger's
        # The path runs through every level ('value.list.0.list.0...'): name the field.
        field = ".".join(loc[: next((i for i, p in enumerate(loc) if p in _JSON_TAGS), 1)])
        return 422, "Invalid request", f"{field}: values may nest at most {MAX_DEPTH} levels", field
    msg = plain_message(err.get("msg", "invalid value"))
    if kind == "string_pattern_mismatch":
        name = next((p for p in reversed(loc) if not p.isdigit()), "")
        msg = _PATTERN_HINTS.get(name, msg)
    shown = f" (got {quoted(given)})" if isinstance(given, str | int | float | bool) else ""
    if kind == "missing" or set(loc) & _NOT_ECHOED or (shown and repr(given) in msg):
        shown = ""
    elif kind == "string_too_long" and isinstance(given, str):
        shown = f" (got {len(given):,} characters)"
    prefix = f"{field}: " if field else ""
    return 422, "Invalid request", f"{prefix}{msg}{shown}"[:500], field


# The tags pydantic puts in the path of a value typed `JsonValue` (one per level).
_JSON_TAGS = frozenset({"list", "dict", "str", "int", "float", "bool"})
# Fields whose value may be a secret (a signing secret, a URL with credentials): an
# error about them never shows what was sent.
_NOT_ECHOED = frozenset({"secret", "url", "token", "password"})
_FASTAPI_UNPARSED = "There was an error parsing the body"
_NOT_JSON = "send the body as JSON, with the header Content-Type: application/json"


def _unreadable(cause: BaseException | None) -> str:
    """What to fix in a body FastAPI could not parse as JSON (it says only that it failed)."""
    if isinstance(cause, RecursionError):
        return f"the request body nests too deeply to read: values may nest {MAX_DEPTH} levels"
    if isinstance(cause, UnicodeDecodeError):
        return "the request body is not UTF-8: send JSON encoded as UTF-8"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return (
            "a number in the request body has too many digits to read: "
            "numbers must fit in 64 bits (send longer ones as strings)"
        )
    why = f" ({type(cause).__name__})" if cause is not None else ""
    return f"the request body is not valid JSON{why}"


def _allowed_methods(app: FastAPI, path: str) -> str:
    """Every method documented for `path` (one route per method: Starlette sees only one),
    or for a console page (not in the API's document) those of its routes; with HEAD
    wherever GET is, as every GET route answers it (RFC 9110 lists it in `Allow`)."""
    paths = app.openapi()["paths"]
    methods: set[str] = set()
    if path in paths:  # a literal path wins over a template that also matches it
        methods = {m.upper() for m in paths[path]}
    else:
        for template, item in paths.items():
            pattern = re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template))
            if re.fullmatch(pattern, path):
                methods |= {m.upper() for m in item}
    if not methods:  # the console's: the methods a route of the app takes here
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            scope = {"type": "http", "path": path, "method": method, "root_path": ""}
            if any(r.matches(scope)[0] == Match.FULL for r in app.router.routes):
                methods.add(method)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def database_problem(method: str, path: str, exc: Exception) -> Response:
    """A database error the store did not expect (a damaged file, a privilege revoked):
    the world failing, 503 with the database's words, logged without a traceback."""
    failed = database_failed(exc)
    log.warning("on %s %s: %s", method, hide_secrets(path), failed.message)
    return problem_of(failed)


async def _refused(request: Request) -> Response | None:
    """The answer to a caller the route would refuse, before what is wrong with its body."""
    from .deps import refused_first  # deps answers with this module's problems

    return await refused_first(request)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem."""

    @app.exception_handler(EpistemeError)
    async def _episteme(request: Request, exc: EpistemeError) -> Response:
        return problem_of(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        malformed = exc.errors()[0].get("type") == "json_invalid"  # found before the token
        if malformed and (refused := await _refused(request)) is not None:
            return refused
        status, title, detail, field = invalid_detail(exc.errors())
        return problem(status, title, detail, field)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            if wants_page(request.scope):
                return console_page(request.scope, 404, "Not found", NO_PAGE)
            detail = f"no route {request.url.path}: see /docs for the API"
            return problem(404, "Not found", detail)
        if exc.status_code == 405:
            allowed = _allowed_methods(app, request.url.path)
            if wants_page(request.scope):
                said = FORM_ONLY if request.method == "GET" else f"this page answers {allowed}"
                page = console_page(request.scope, 405, "Method not allowed", said)
                page.headers["Allow"] = allowed
                return page
            detail = f"{request.method} is not allowed on {request.url.path}: use {allowed}"
            return problem(405, "Method not allowed", detail, Allow=allowed)
        if exc.status_code == 400 and exc.detail == _FASTAPI_UNPARSED:
            if (refused := await _refused(request)) is not None:
                return refused
            return problem(400, "Malformed JSON", _unreadable(exc.__cause__))
        return problem(exc.status_code, "HTTP error", str(exc.detail), **(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # raised outside `LastResort` (in a middleware around it); Starlette then raises
        # it again, for the server to log
        return unexpected(request.method, request.url.path, exc)


_NOT_PAGES = ("/v1/", "/mcp", "/health", "/metrics", "/docs", "/redoc", "/openapi.json")
NO_PAGE = "there is no page at this address: start again from the overview"
FORM_ONLY = (
    "this address takes a form, not a visit: go back to the page the form was on, "
    "reload it and send the form again"
)


def wants_page(scope: Scope) -> bool:
    """Whether a refusal made outside a route is a browser's, at the console: an HTML
    page then, where problem details would show a person raw JSON."""
    path: str = scope.get("path", "")
    if path == "/v1" or path.startswith(_NOT_PAGES):
        return False
    accept = next((v for k, v in scope.get("headers", ()) if k == b"accept"), b"")
    return b"text/html" in accept


def console_page(scope: Scope, status: int, title: str, detail: str) -> Response:
    """The console's error page for a refusal made outside its routes."""
    from episteme.web.render import error_page  # the console renders with this module's

    return error_page(Request(scope), status, title, detail)


def unexpected(method: str, path: str, exc: Exception) -> Response:
    """The answer to an exception no handler took: a database's failure is 503 with its
    words; anything else is logged with its traceback and answered 500, naming nothing."""
    if isinstance(exc, EpistemeError):  # one raised where no handler was around it
        return problem_of(exc)
    if from_database(exc):
        return database_problem(method, path, exc)
    log.error("unexpected error on %s %s", method, hide_secrets(path), exc_info=exc)
    detail = "unexpected server error: it was logged; retry, and report it if it persists"
    return problem(500, "Internal error", detail)


class LastResort:
    """Answers what the routes raised and no handler took (`unexpected`), and logs it
    once. Starlette's handler of last resort answers too, then raises the exception again
    for the server, which logs its traceback a second time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watching(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching)
        except Exception as exc:
            if started:  # too late to answer: the server closes the connection
                raise
            await unexpected(scope["method"], scope["path"], exc)(scope, receive, send)
