"""Console sign-in: a bearer token exchanged for a signed, HttpOnly session cookie.

The person pastes a token on `/login`; the server authenticates it with
`Ledger.authenticate`, exactly as the API does, and sets a cookie (HttpOnly,
SameSite=Lax, Secure over HTTPS) that holds the token's *id* and the principal,
never the token itself, signed with HMAC-SHA256 under a key of this app and valid for
8 hours. The key is random per app, so a restart signs everyone out; `episteme serve`
gives its workers one of its making, and several servers must share one, set with
``EPISTEME_CONSOLE_KEY``. On every request the
signature, the expiry and the token's record in the ledger are checked again, so
revoking a token ends its console sessions at once.

Each session carries a random CSRF token; every POST form sends it in a hidden field
and a POST without the right one is refused with 403. The sign-in form itself is
guarded the same way by a short-lived cookie of its own. Roles are checked per route
with `Principal.allows`; a refusal is recorded in the journal like the API's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qs

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

from episteme.diagnose.engine import DiagnosisEngine
from episteme.errors import Forbidden, InvalidInput, Unauthenticated
from episteme.ledger.access import Op, Principal, Role, TokenRecord, TokenRefused
from episteme.ledger.core import Ledger

from .render import (
    LOGIN_COOKIE,
    SAME_SITE,
    SESSION_COOKIE,
    PageRoute,
    SignIn,
    forget,
    local,
    page,
    redirect,
)

LIFETIME_S = 8 * 3600
"""How long a console session lasts after sign-in."""
LOGIN_LIFETIME_S = 3600
KEY_ENV = "EPISTEME_CONSOLE_KEY"
MAX_FIELDS = 200

SIGN_IN_NOTES = {
    "expired": "Your console session ended after 8 hours: sign in again.",
    "revoked": "The token behind your session is no longer active: sign in with another.",
    "out": "You are signed out.",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(key: bytes, data: Mapping[str, Any]) -> str:
    """`data` as a cookie value: base64url(JSON) ``.`` base64url(HMAC-SHA256)."""
    body = _b64(orjson.dumps(dict(data)))
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def unseal(key: bytes, text: str) -> dict[str, Any] | None:
    """The data of a value `seal` made with `key`; None for anything else."""
    body, _, mac = text.partition(".")
    if not body or not mac or not text.isascii():
        return None
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        data = orjson.loads(_unb64(body))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def console_key(app: FastAPI) -> bytes:
    """The app's signing key: from ``EPISTEME_CONSOLE_KEY``, else random, made once."""
    key: bytes | None = getattr(app.state, "console_key", None)
    if key is None:
        shared = os.environ.get(KEY_ENV)
        key = hashlib.sha256(shared.encode()).digest() if shared else secrets.token_bytes(32)
        app.state.console_key = key
    return key


@dataclass(frozen=True)
class Cookie:
    """What a console cookie holds: its purpose, its CSRF token, expiry, the principal."""

    purpose: str
    csrf: str
    expires: int
    principal: Principal | None = None

    def sealed(self, key: bytes) -> str:
        who = self.principal
        data: dict[str, Any] = {"u": self.purpose, "c": self.csrf, "e": self.expires}
        if who is not None:
            data["p"] = [who.name, who.kind, sorted(who.roles), who.token_id]
        return seal(key, data)

    @classmethod
    def read(cls, key: bytes, text: str | None, purpose: str, now: int) -> Cookie | None:
        data = unseal(key, text) if text else None
        if data is None or data.get("u") != purpose or not isinstance(data.get("e"), int):
            return None
        if data["e"] <= now:
            return None
        principal = None
        if "p" in data:
            name, kind, roles, token_id = data["p"]
            principal = Principal(
                name=name, kind=kind, roles=frozenset(Role(r) for r in roles), token_id=token_id
            )
        return cls(purpose, str(data["c"]), data["e"], principal)


def _now(ledger: Ledger) -> int:
    return int(ledger.clock.now().timestamp())


def _set(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite=SAME_SITE[name],
        secure=request.url.scheme == "https",
    )


async def read_form(request: Request) -> dict[str, list[str]]:
    """A urlencoded form body, every field as the list of its values."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidInput("send the form as application/x-www-form-urlencoded")
    try:
        text = (await request.body()).decode()
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput(f"the form is not UTF-8, or has over {MAX_FIELDS} fields") from None


async def _blocking(ledger: Ledger, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a store call where it belongs: inline on a local store, else on a thread."""
    if ledger.store.remote:
        return await anyio.to_thread.run_sync(fn, *args)
    return fn(*args)


@dataclass
class Console:
    """The signed-in person for one request: who, their CSRF token, the form they sent."""

    request: Request
    principal: Principal
    csrf: str
    form: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ledger(self) -> Ledger:
        ledger: Ledger = self.request.app.state.ledger
        return ledger

    @property
    def engine(self) -> DiagnosisEngine:
        engine: DiagnosisEngine = self.request.app.state.diagnosis
        return engine

    @property
    def can(self) -> dict[str, bool]:
        """What the pages may offer: buttons appear only for what the roles allow."""
        allows = self.principal.allows
        return {
            "correct": allows(Op.CORRECT),
            "approve": allows(Op.APPROVE_CREDENTIALS),
            "constrain": allows(Op.CONSTRAIN),
        }

    def field(self, name: str) -> str:
        """The first value of a form field ('' when absent), its line ends as `\n`
        (a browser sends a text area's as CRLF, which `blame` then showed as `\r`)."""
        return (self.form.get(name) or [""])[0].replace("\r\n", "\n")

    def fields(self, name: str) -> list[str]:
        return self.form.get(name, [])


def signed_in(op: Op = Op.READ, *, form: bool = False) -> Callable[[Request], Awaitable[Console]]:
    """A dependency: the signed-in console, allowed `op`; with `form`, a CSRF-checked POST."""

    async def dependency(request: Request) -> Console:
        ledger: Ledger = request.app.state.ledger
        now = _now(ledger)
        raw = request.cookies.get(SESSION_COOKIE)
        cookie = Cookie.read(console_key(request.app), raw, "session", now)
        if cookie is None or cookie.principal is None:
            expired = raw is not None and unseal(console_key(request.app), raw) is not None
            raise SignIn("expired" if expired else None)
        who = cookie.principal
        record: TokenRecord | None = await _blocking(
            ledger, lambda: ledger.store.token(token_id=who.token_id)
        )
        if record is None or record.principal != who.name:
            raise SignIn("revoked")
        if record.state_at(ledger.clock.now()) != "active":
            raise SignIn("revoked")
        console = Console(request, who, cookie.csrf)
        request.state.console = console  # error pages show who is signed in
        if form:
            console.form = await read_form(request)
            if not hmac.compare_digest(console.field("csrf").encode(), cookie.csrf.encode()):
                raise Forbidden(
                    "this form is missing its CSRF token, or it is stale: reload the page "
                    "and send it again"
                )
        if not who.allows(op):
            try:
                who.require(op)
            except Forbidden as exc:
                target = f"{request.method} {request.url.path}"
                await anyio.to_thread.run_sync(
                    ledger.deny, who.name, who.token_id, str(op), target, exc.message
                )
                raise
        return console

    return dependency


def Allowed(op: Op = Op.READ, *, form: bool = False) -> Any:  # a capital: reads as a type
    return Depends(signed_in(op, form=form))


Reader = Annotated[Console, Depends(signed_in())]
Poster = Annotated[Console, Depends(signed_in(form=True))]

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _login_cookie(request: Request, now: int) -> Cookie:
    key = console_key(request.app)
    found = Cookie.read(key, request.cookies.get(LOGIN_COOKIE), "login", now)
    return found or Cookie("login", secrets.token_urlsafe(32), now + LOGIN_LIFETIME_S)


def _login_page(
    request: Request, cookie: Cookie, next: str, *, error: str | None = None, note: str = ""
) -> Response:
    status = 401 if error else 200
    response = page(
        request, "login.html", status, csrf=cookie.csrf, next=next, error=error, note=note
    )
    value = cookie.sealed(console_key(request.app))
    _set(response, request, LOGIN_COOKIE, value, LOGIN_LIFETIME_S)
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "/", why: str = "") -> Response:
    ledger: Ledger = request.app.state.ledger
    now = _now(ledger)
    key = console_key(request.app)
    session = Cookie.read(key, request.cookies.get(SESSION_COOKIE), "session", now)
    if session is not None and session.principal is not None:
        return redirect(local(next))
    return _login_page(
        request, _login_cookie(request, now), local(next), note=SIGN_IN_NOTES.get(why, "")
    )


@router.post("/login")
async def login(request: Request) -> Response:
    ledger: Ledger = request.app.state.ledger
    now = _now(ledger)
    key = console_key(request.app)
    cookie = Cookie.read(key, request.cookies.get(LOGIN_COOKIE), "login", now)
    fields = await read_form(request)
    sent = (fields.get("csrf") or [""])[0]
    if cookie is None or not hmac.compare_digest(sent.encode(), cookie.csrf.encode()):
        raise Forbidden(
            "the sign-in form is stale or this browser refused its cookie: reload /login "
            "and sign in again (cookies must be enabled)"
        )
    next = local((fields.get("next") or ["/"])[0])
    token = (fields.get("token") or [""])[0].strip()
    try:
        principal: Principal = await _blocking(ledger, ledger.authenticate, token)
    except TokenRefused as exc:
        await anyio.to_thread.run_sync(
            ledger.deny, exc.principal, exc.token_id, "authenticate", "POST /login", exc.message
        )
        return _login_page(request, cookie, next, error=exc.message)
    except Unauthenticated as exc:
        request.app.state.metrics.denied.labels("401").inc()
        message = "paste a token" if not token else exc.message
        return _login_page(request, cookie, next, error=message)
    session = Cookie("session", secrets.token_urlsafe(32), now + LIFETIME_S, principal)
    response = redirect(next)
    _set(response, request, SESSION_COOKIE, session.sealed(key), LIFETIME_S)
    forget(response, LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(who: Poster) -> Response:
    response = redirect("/login?why=out")
    forget(response, SESSION_COOKIE)
    return response
