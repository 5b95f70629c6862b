"""The console in a real browser (Chromium through Playwright) against a live server.

The on-call person signs in, looks at the subject as it stood at 21:00 and sees that the
orchestrator was served the ES256 proposal, follows the trace, corrects ES256 after
reading its impact, sees the research agent's trust fall once the gardener has run, and
approves a diagnosis on the desk while the page follows it to its root cause. An agent
token sees no correct button and is refused the route.

Set ``EPISTEME_SCREENSHOTS=docs/screenshots`` to refresh the screenshots in the docs;
otherwise they go to the test's temporary directory. The browser is the system
Chromium: ``EPISTEME_CHROMIUM``, else ``chromium`` on the PATH.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from episteme.ledger.gardener import Gardener
from tests.integration.server import live_server
from tests.web.conftest import Story

TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # No skip: a machine without Chromium fails here, and says how to fix it.
    chromium_path = os.environ.get("EPISTEME_CHROMIUM") or shutil.which("chromium")
    if chromium_path is None:
        pytest.fail(
            "no Chromium: apt-get install chromium (./scripts/test does), or set EPISTEME_CHROMIUM"
        )
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("EPISTEME_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def sign_in(page: Page, base: str, token: str) -> None:
    page.goto(base + "/")
    assert page.url.startswith(base + "/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def test_the_oncall_story_in_a_browser(browser: Browser, story: Story, shots: Path) -> None:
    with live_server(story.app()) as base:
        opened = httpx.post(
            base + "/diagnose",
            json={"problem": "database connection failures in prod", "environment": "prod"},
            headers={"Authorization": f"Bearer {story.tokens['agent-1']}"},
        )
        assert opened.status_code == 201
        sid = opened.json()["id"]
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        try:
            sign_in(page, base, story.tokens["oncall"])
            expect(page.locator("#waiting")).to_contain_text("database connection failures")
            expect(page.locator("#hiding")).to_contain_text("1 approved assertion hidden")
            page.screenshot(path=shots / "overview.png", full_page=True)

            # What did agents believe, and what were they served, at 21:00?
            page.fill(".find input", "auth.jwt.algorithm")
            page.press(".find input", "Enter")
            page.wait_for_url(base + "/subjects/auth.jwt.algorithm")
            page.fill("#at", "21:00")
            page.click("form.when button")
            page.wait_for_url("**/subjects/auth.jwt.algorithm?at=21%3A00")
            expect(page.locator("h1")).to_contain_text("as of 2026-11-21 21:00:00Z")
            served = page.locator("#served tbody tr")
            expect(served).to_have_count(1)
            expect(served).to_contain_text("orchestrator")
            expect(served).to_contain_text("ES256")
            expect(page.locator("#lens-latest")).to_contain_text("ES256")
            page.screenshot(path=shots / "subject-at-21.png", full_page=True)

            # How did the decision come to rely on it?
            served.get_by_role("link", name="trace").click()
            expect(page.locator("svg.graph")).to_contain_text("research-agent")
            expect(page.locator("svg.graph .node")).to_have_count(5)  # from the query
            page.goto(f"{base}/trace/{story.decision}")
            expect(page.locator("svg.graph .decision")).to_contain_text("use ES256")
            page.screenshot(path=shots / "trace.png", full_page=True)

            # Correct it: the impact first, then the correction.
            page.goto(base + "/agents/research-agent")
            expect(page.locator("#trust")).to_contain_text("0.50")
            page.goto(base + "/subjects/auth.jwt.algorithm")
            row = page.locator("#lens-latest tbody tr", has_text="ES256")
            row.get_by_role("link", name="Correct").click()
            page.fill("#reason", "production verifies RS256; ES256 was an unreviewed proposal")
            page.fill("#value", "RS256")
            page.check("input[name=forbid]")
            page.click("text=Review the impact")
            expect(page.locator("#impact-decisions")).to_contain_text("use ES256")
            expect(page.locator("#impact-agents")).to_contain_text("orchestrator")
            page.screenshot(path=shots / "correct-confirm.png", full_page=True)
            page.click("text=Correct it")
            page.wait_for_url(f"**/blame/{story.es256}?corrected=*")
            expect(page.locator("h2").first).to_contain_text("rejected")
            assert story.ledger.get(story.es256).lifecycle == "rejected"

            # The gardener turns the correction into lower trust.
            Gardener(story.ledger).run_until_caught_up()
            page.goto(base + "/agents/research-agent")
            expect(page.locator("#trust .score")).to_have_text("0.33")
            expect(page.locator("#trust-history svg.chart polyline")).to_have_count(1)
            page.screenshot(path=shots / "agent.png", full_page=True)

            # The diagnosis desk: approve, and watch it complete.
            page.goto(f"{base}/diagnosis/{sid}")
            boxes = page.locator("input[name=ref]")
            expect(boxes).to_have_count(3)
            page.fill("#approve-reason", "incident 4711")
            page.click("text=Approve the ticked references")
            expect(page.locator("#result")).to_contain_text(
                "Database connection exhaustion", timeout=2 * TIMEOUT_MS
            )
            expect(page.locator("#status")).to_have_text("completed")
            expect(page.locator("#findings")).to_contain_text("97 of 100 connections in use")
            page.screenshot(path=shots / "diagnosis-session.png", full_page=True)

            # Readable on a phone.
            phone = browser.new_context(viewport={"width": 390, "height": 844})
            small = phone.new_page()
            sign_in(small, base, story.tokens["oncall"])
            small.goto(base + "/subjects/auth.jwt.algorithm?at=21:00")
            width = small.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width} px wide on a phone"
            small.screenshot(path=shots / "subject-phone.png", full_page=False)
            phone.close()
        finally:
            context.close()


@contextmanager
def signed_in(browser: Browser, story: Story, who: str) -> Iterator[tuple[str, Page]]:
    """A live server over the story, and a page of a new browser context signed in
    there as `who`: (the server's URL, the page)."""
    with live_server(story.app()) as base:
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.new_page()
            sign_in(page, base, story.tokens[who])
            yield base, page
        finally:
            context.close()


def test_a_revoked_reader_stops_the_live_page_and_leaves_the_sessions_state(
    browser: Browser, story: Story
) -> None:
    # The page set its state badge from every event: the reader's own `unauthenticated`
    # error (it has no number) turned "waiting for approval" into "error".
    app = story.app()
    engine = app.state.diagnosis
    engine.config = engine.config.model_copy(update={"keepalive_s": 0.5})  # noticed in 0.5 s
    with live_server(app) as base:
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.new_page()
            sign_in(page, base, story.tokens["oncall"])
            started = httpx.post(
                f"{base}/v1/diagnosis/diagnose",
                json={"problem": "database connection failures", "environment": "prod"},
                headers={"Authorization": f"Bearer {story.tokens['agent-1']}"},
            )
            page.goto(f"{base}/diagnosis/{started.json()['id']}")
            before = page.locator("#status").inner_text()
            page.wait_for_timeout(500)  # the page follows the session's events now
            story.ledger.revoke_token("oncall", by="admin", reason="left the team")
            expect(page.locator("#live-status")).to_contain_text("Live updates stopped")
            expect(page.locator("#status")).to_have_text(before)
            assert "error" not in before
        finally:
            context.close()


def test_an_agent_sees_no_correct_button_and_is_refused_the_route(
    browser: Browser, story: Story
) -> None:
    with signed_in(browser, story, "agent-1") as (base, page):
        page.goto(base + "/subjects/auth.jwt.algorithm")
        expect(page.locator("#lens-latest")).to_contain_text("ES256")
        expect(page.get_by_role("link", name="Correct")).to_have_count(0)
        refused = page.request.get(f"{base}/assertions/{story.es256}/correct")
        assert refused.status == 403
        csrf = page.locator("input[name=csrf]").first.get_attribute("value")
        assert csrf
        posted = page.request.post(
            f"{base}/assertions/{story.es256}/correct",
            form={"csrf": csrf, "reason": "no", "step": "apply"},
        )
        assert posted.status == 403
        assert story.ledger.get(story.es256).lifecycle == "proposed"


def test_a_link_from_another_site_opens_the_page_signed_in(browser: Browser, story: Story) -> None:
    # A link from a pager, a chat or an alert's mail: the Strict cookie stayed behind, the
    # console answered with its sign-in page, and that answer deleted the session.
    elsewhere = "http://pager.example"
    target = "/subjects/auth.jwt.algorithm"
    with signed_in(browser, story, "oncall") as (base, page):
        html = (
            f'<a id="go" href="{base}{target}">the page</a>'
            f'<form id="out" method="post" action="{base}/logout"><button>x</button></form>'
        )
        page.route(
            f"{elsewhere}/**", lambda route: route.fulfill(body=html, content_type="text/html")
        )
        page.goto(f"{elsewhere}/incident")
        page.click("#go")
        page.wait_for_url(base + target)
        expect(page.locator("#lens-latest")).to_contain_text("ES256")
        # a form posted from there comes without the cookie: refused, signed in still
        page.goto(f"{elsewhere}/incident")
        with page.expect_navigation():
            page.click("#out button")
        assert page.url.startswith(base)
        page.goto(base + target)
        expect(page.locator("#lens-latest")).to_contain_text("ES256")
        assert page.url == base + target


def test_a_form_address_visited_and_a_missing_page_are_pages(
    browser: Browser, story: Story
) -> None:
    # Both answered the API's JSON to a browser, the first with "use " and an empty Allow.
    with signed_in(browser, story, "oncall") as (base, page):
        for address, status, words in [
            ("/logout", 405, "this address takes a form, not a visit"),
            ("/subject/auth", 404, "there is no page at this address"),
            ("/subjects/a%2Fb", 404, "there is no page at this address"),
            ("/subjects?subject=a/b", 400, "invalid subject"),
        ]:
            answer = page.goto(base + address)
            assert answer is not None
            assert answer.status == status, address
            assert answer.headers["content-type"].startswith("text/html")
            expect(page.locator("p.error")).to_contain_text(words)
        answer = page.goto(base + "/logout")
        assert answer is not None
        assert answer.headers["allow"] == "POST"
