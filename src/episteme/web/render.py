"""Rendering console pages: the Jinja2 environment, its filters, and errors as pages.

Every console route uses `PageRoute`, which turns the library's errors into an HTML page
with the error's status (the API's routes answer `application/problem+json` for the
same errors) and a missing or stale sign-in into a redirect to `/login`. Pages carry a
strict Content-Security-Policy: the stylesheet and the script come from the package's
static folder, nothing inline, nothing from elsewhere.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import jinja2
import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import HTMLResponse, RedirectResponse, Response
from whenever import Instant

from episteme.errors import EpistemeError
from episteme.text import plural

STATIC_PATH = "/static"
SESSION_COOKIE = "episteme_session"
LOGIN_COOKIE = "episteme_login"
SAME_SITE: dict[str, Literal["lax", "strict"]] = {SESSION_COOKIE: "lax", LOGIN_COOKIE: "strict"}
"""Each cookie's SameSite. The session's is Lax: a link to a page from a pager, a chat or
an alert's mail opens it signed in (Strict left it out of every navigation from another
site). A POST from another site still comes without it, GET pages change nothing, and
every form carries its CSRF token. The sign-in form's is only ever posted from here."""

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SignIn(Exception):
    """No valid console session: the browser goes to the sign-in page."""

    def __init__(self, why: str | None = None) -> None:
        super().__init__(why or "sign in")
        self.why = why


def when(instant: Instant | None) -> str:
    """``2026-11-21 21:00:00Z``: UTC to the second, for people; cut, not rounded, as
    the event log's times are (rounded, 12:34:34.6 read as a second it had not reached)."""
    if instant is None:
        return "—"
    return instant.round("second", mode="floor").format_iso().replace("T", " ")


def iso(instant: Instant | None) -> str:
    return "" if instant is None else instant.format_iso()


def short(ref: str | None) -> str:
    """An id cut to what a person compares: 12 hex digits, or a prefixed id's first 14."""
    if not ref:
        return ""
    return ref[:14] if ref[1:2] == "_" else ref[:12]


def shown(value: Any) -> str:
    """A JSON value as the CLI prints it: strings bare, anything else as JSON."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("episteme.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, iso=iso, short=short, shown=shown, plural=plural)
    env.globals["static"] = STATIC_PATH
    return env


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render `template` with the signed-in console (if any) and `context`."""
    console = getattr(request.state, "console", None)
    html = (
        environment()
        .get_template(template)
        .render(console=console, path=request.url.path, **context)
    )
    return HTMLResponse(html, status, headers=HEADERS)


def redirect(url: str) -> RedirectResponse:
    """After a POST, or to a canonical address: 303, so the browser GETs `url`."""
    return RedirectResponse(url, 303, headers=HEADERS)


_LOCAL = re.compile(r"/(?![/\\])[^\s\\\x00-\x1f\x7f]*")


def local(target: str | None) -> str:
    """`target` if it is a path on this server, else ``/`` (no open redirect).

    Browsers drop tabs and newlines inside a URL and read a backslash as a slash, so
    ``/\t/evil.example`` would leave the site: such paths are refused too.
    """
    return target if target and _LOCAL.fullmatch(target) else "/"


def forget(response: Response, name: str) -> None:
    """Delete a console cookie (with the attributes it was set with)."""
    response.delete_cookie(name, path="/", httponly=True, samesite=SAME_SITE[name])


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return page(request, "error.html", status, title=title, detail=detail, code=status)


def to_sign_in(request: Request, why: str | None) -> Response:
    query: dict[str, str] = {}
    if request.method == "GET":
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if here != "/":
            query["next"] = here
    if why:
        query["why"] = why
    response = redirect("/login" + (f"?{urlencode(query)}" if query else ""))
    if SESSION_COOKIE in request.cookies:  # one that came and failed; none: nothing to forget
        forget(response, SESSION_COOKIE)
    return response


@dataclass(frozen=True)
class _Problem:
    status: int
    title: str
    detail: str


def _validation(exc: RequestValidationError) -> _Problem:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("path", "query"))
    return _Problem(400, "Invalid request", f"{where}: {err.get('msg', 'invalid value')}")


class PageRoute(APIRoute):
    """A console route: errors become HTML pages, a missing session a sign-in redirect."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except SignIn as exc:
                return to_sign_in(request, exc.why)
            except EpistemeError as exc:
                return error_page(request, exc.status, exc.title, exc.message)
            except RequestValidationError as exc:
                p = _validation(exc)
                return error_page(request, p.status, p.title, p.detail)

        return run
