"""Console sign-in, sessions and CSRF, driven in-process (no browser)."""

from __future__ import annotations

import pytest
from whenever import TimeDelta

from episteme.web.render import SESSION_COOKIE
from episteme.web.session import seal, unseal
from tests.web.conftest import Console

PAGES = [
    "/",
    "/subjects/auth.jwt.algorithm",
    "/diff",
    "/agents/orchestrator",
    "/diagnosis",
    "/find?q=auth",
]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_sends_a_stranger_to_sign_in(console: Console, path: str) -> None:
    r = console.get(path)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login")
    if path != "/":
        assert "next=" in r.headers["location"]
    assert "set-cookie" not in r.headers  # none came: none to forget (it deleted one)


def test_sign_in_keeps_the_token_id_in_a_signed_lax_cookie(console: Console) -> None:
    r = console.sign_in("oncall", next="/subjects/auth.jwt.algorithm")
    assert r.status_code == 303
    assert r.headers["location"] == "/subjects/auth.jwt.algorithm"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie  # a link from a pager opens the page signed in
    assert "Max-Age=28800" in cookie
    value = console.client.cookies[SESSION_COOKIE]
    assert console.story.tokens["oncall"] not in value  # the token's id, never the token
    page = console.get("/")
    assert page.status_code == 200
    assert "oncall" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


@pytest.mark.parametrize("token", ["", "ep_not-a-token"])
def test_a_bad_token_is_refused_with_401(console: Console, token: str) -> None:
    r = console.sign_in(token)
    assert r.status_code == 401
    assert "paste a token" in r.text or "unknown token" in r.text
    assert SESSION_COOKIE not in console.client.cookies


def test_a_revoked_token_is_refused_and_the_attempt_recorded(console: Console) -> None:
    ledger = console.story.ledger
    ledger.revoke_token("lead", by="admin", reason="left the rota")
    r = console.sign_in("lead")
    assert r.status_code == 401
    assert "revoked" in r.text
    assert SESSION_COOKIE not in console.client.cookies
    denial = ledger.denials(principal="lead")[0]
    assert (denial.operation, denial.target) == ("authenticate", "POST /login")


def test_revoking_the_token_ends_its_console_session(console: Console) -> None:
    console.sign_in("lead")
    assert console.get("/").status_code == 200
    console.story.ledger.revoke_token("lead", by="admin", reason="rotated")
    r = console.get("/diff")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?next=%2Fdiff&why=revoked")
    assert SESSION_COOKIE not in console.client.cookies
    assert "no longer active" in console.get(r.headers["location"]).text


def test_a_session_lasts_8_hours(console: Console) -> None:
    console.sign_in("oncall")
    console.story.clock.advance(TimeDelta(hours=7, minutes=59))
    assert console.get("/").status_code == 200
    console.story.clock.advance(TimeDelta(minutes=2))
    r = console.get("/")
    assert r.status_code == 303
    assert "why=expired" in r.headers["location"]


def test_a_forged_or_tampered_cookie_is_not_a_session(console: Console) -> None:
    console.sign_in("agent-1")
    value = console.client.cookies[SESSION_COOKIE]
    data = unseal(console.client.app.state.console_key, value)  # type: ignore[attr-defined]
    assert data is not None
    data["p"][2] = ["admin"]  # promote oneself
    forged = seal(b"another key", data)
    body, _, mac = value.partition(".")
    tampered = seal(b"x", data).partition(".")[0] + "." + mac
    for bad in (forged, tampered, "garbage", body):
        console.client.cookies.clear()
        console.client.cookies.set(SESSION_COOKIE, bad)
        assert console.get("/").status_code == 303


def test_sign_in_needs_the_form_from_this_server(console: Console) -> None:
    r = console.post("/login", {"token": console.story.tokens["oncall"], "csrf": "guess"})
    assert r.status_code == 403
    assert "reload /login" in r.text
    assert SESSION_COOKIE not in console.client.cookies


def test_every_post_needs_the_session_csrf_token(console: Console) -> None:
    console.sign_in("oncall")
    es = console.story.es256
    posts = [
        f"/assertions/{es}/correct",
        "/logout",
        "/diagnosis/s_0123456789abcdef01234567/approve",
        "/diagnosis/s_0123456789abcdef01234567/deny",
    ]
    for path in posts:
        for data in ({"reason": "x"}, {"reason": "x", "csrf": "wrong"}):
            r = console.post(path, {**data, "step": "apply"})
            assert r.status_code == 403, path
            assert "CSRF" in r.text
    assert console.story.ledger.get(es).lifecycle == "proposed"  # nothing was corrected
    assert console.get("/").status_code == 200  # still signed in


def test_a_form_not_urlencoded_is_refused(console: Console) -> None:
    console.sign_in("oncall")
    csrf = console.csrf()
    r = console.client.post("/logout", json={"csrf": csrf})
    assert r.status_code == 400


def test_sign_in_goes_back_only_to_this_server(console: Console) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/\t/evil"):
        console.client.cookies.clear()
        r = console.sign_in("oncall", next=target)
        assert r.headers["location"] == "/"


def test_signing_out_forgets_the_session(console: Console) -> None:
    console.sign_in("oncall")
    r = console.post("/logout", {"csrf": console.csrf()})
    assert r.status_code == 303
    assert r.headers["location"] == "/login?why=out"
    assert SESSION_COOKIE not in console.client.cookies
    assert console.get("/").status_code == 303
    assert "You are signed out" in console.get("/login?why=out").text


def test_the_sign_in_page_sends_a_signed_in_person_on(console: Console) -> None:
    console.sign_in("oncall")
    r = console.get("/login?next=/diff")
    assert (r.status_code, r.headers["location"]) == (303, "/diff")
