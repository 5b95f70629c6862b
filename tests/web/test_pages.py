"""Console pages over the ES256 story, driven in-process: what each page says, who may act."""

from __future__ import annotations

import functools
import re

import httpx
import orjson
from whenever import Instant

from episteme.ledger import AssertionInput
from episteme.ledger.gardener import Gardener
from episteme.web.graph import LABEL_CHARS, Spec, layered, line_chart
from episteme.web.render import when
from tests.integration.server import live_server
from tests.web.conftest import CSRF, Console, Story


def text(r: httpx.Response) -> str:
    """The page's words, without tags."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r.text))


def test_the_subject_at_21_00_shows_what_each_lens_gave_and_what_was_served(
    console: Console,
) -> None:
    console.sign_in("oncall")
    r = console.get("/subjects/auth.jwt.algorithm?at=21:00")
    assert r.status_code == 200
    words = text(r)
    assert "as of 2026-11-21 21:00:00Z" in words
    latest = r.text.split('id="lens-latest"')[1].split("</section>")[0]
    assert "ES256" in latest
    assert "1 approved assertion hidden" in latest
    approved = r.text.split('id="lens-approved"')[1].split("</section>")[0]
    assert "RS256" in approved
    assert "1 proposed assertion hidden" in approved
    served = r.text.split('id="served"')[1].split("</section>")[0]
    assert "orchestrator" in served
    assert "ES256" in served
    assert f"/trace/{console.story.query}" in served


def test_a_time_the_console_cannot_read_is_said_next_to_the_field(console: Console) -> None:
    console.sign_in("oncall")
    r = console.get("/subjects/auth.jwt.algorithm?at=teatime")
    assert r.status_code == 400
    assert "cannot read time" in r.text
    assert 'id="lens-approved"' in r.text  # the page still answers, as of now


def test_the_overview_lists_what_hid_and_what_waits(console: Console) -> None:
    console.sign_in("oncall")
    words = text(console.get("/"))
    assert "orchestrator asked auth.jwt with lens latest : 1 approved assertion hidden" in words
    assert "No diagnosis waits" in words
    assert "2 added" in words
    assert "No pre-flight check was stopped." in words


def test_the_overview_lists_the_plans_a_constraint_stopped(console: Console) -> None:
    # An agent trying what a correction forbade is a signal for the on-call person.
    console.sign_in("oncall")
    led = console.story.ledger
    fix = led.correct(console.story.es256, by="oncall", reason="RS256", value="RS256", forbid=True)
    assert fix.constraint is not None
    stopped = led.check("roll out ES256 keys", ["auth"], agent="deploy-bot")
    led.check("rotate the RS256 key", ["auth"], agent="deploy-bot")  # passes: not listed
    page = console.get("/")
    words = text(page)
    assert "Plans a constraint stopped 1 " in words
    assert (
        f"deploy-bot checked “roll out ES256 keys”: ES256 is forbidden ( {fix.constraint.id[:14]} )"
    ) in words
    assert f"{stopped.check_id}" in words
    assert f'href="/constraints?retired=1#{fix.constraint.id}"' in page.text


def test_the_agent_page_lists_the_newest_trust_moves_of_every_topic(console: Console) -> None:
    # five of each topic, one after the other, with no topic named and no word of the rest
    ledger = console.story.ledger
    for topic, n in [("auth", 7), ("db", 6)]:
        for i in range(n):
            a = ledger.assert_one(subject=f"{topic}.k{i}", value=i, agent="multi")
            ledger.approve(a.id, by="alice")
    Gardener(ledger).run_until_caught_up()
    console.sign_in("oncall")
    page = console.get("/agents/multi").text
    moves = re.findall(
        r'<li>.*?<code>(\w+)</code> <span class="up">', page.split('class="moves"')[1]
    )
    assert moves == ["db"] * 6 + ["auth"] * 4  # the newest ten, newest first
    assert "and 3 older moves" in text(console.get("/agents/multi"))
    assert "This agent recorded no decision in this window." in text(console.get("/agents/multi"))


def test_a_bad_window_keeps_what_was_typed_and_a_lone_end_takes_the_day_before_it(
    console: Console,
) -> None:
    # a bare error page lost the form; "To" alone ended a window that started 24 hours
    # before now, not before it
    console.sign_in("oncall")
    for url, words in (
        ("/diff?since=garbage&prefix=auth", ["Shown instead: the last 24 hours.", "under auth"]),
        ("/diff?since=garbage", ["Shown instead: the last 24 hours, every subject"]),
        ("/diff?prefix=a..b", ["invalid", "Shown instead"]),
        ("/agents/deploy-agent?since=garbage", ["Shown instead: the last 7 days"]),
        ("/agents/deploy-agent?since=1h&until=2d", ["Shown instead: the last 7 days"]),
    ):
        r = console.get(url)
        assert r.status_code == 400, url
        assert '<form class="when"' in r.text, url
        for word in words:
            assert word in text(r), url
    typed = console.get("/diff?since=garbage&prefix=auth").text
    assert 'value="garbage"' in typed
    assert 'value="auth"' in typed
    lone = text(console.get("/diff?until=2026-11-21T21:00:00Z"))
    assert "Diff 2026-11-20 21:00:00Z → 2026-11-21 21:00:00Z" in lone
    week = text(console.get("/agents/deploy-agent?until=2026-11-21T21:00:00Z"))
    assert "2026-11-14 21:00:00Z → 2026-11-21 21:00:00Z" in week


def test_the_overview_says_when_a_card_shows_part_of_the_day(console: Console) -> None:
    # the cards counted what they listed: 50 reads that hid, 20 corrections, however many
    ledger = console.story.ledger
    ledger.add_constraint(scope="deploy", reason="no", by="oncall", forbid=["ES256"])
    for n in range(26):
        a = ledger.assert_one(subject=f"svc.s{n}", value=n, agent="bot")
        ledger.correct(a.id, by="oncall", reason="wrong")
    for n in range(60):
        ledger.query("auth.jwt.algorithm", agent=f"a{n}", lens="approved")  # hides ES256
        ledger.check("use ES256", ["deploy"], agent=f"a{n}")
    console.sign_in("oncall")
    page = console.get("/").text
    cards = {
        card: re.search(r'<span class="count">([^<]*)</span>', page.split(f'id="{card}"')[1])
        for card in ("corrections", "hiding", "stopped")
    }
    assert {k: v.group(1) for k, v in cards.items() if v} == {
        "corrections": "26", "hiding": "50+", "stopped": "50+",
    }  # fmt: skip
    words = text(console.get("/"))
    assert "Among the newest 200 reads, the newest 50 that hid something" in words
    assert "Among the newest 200 checks, the newest 50 that were stopped" in words
    # a correction not yet a note (the gardener has not run) is listed with the notes
    Gardener(ledger).run_until_caught_up()
    late = ledger.assert_one(subject="svc.late", value=1, agent="bot")
    ledger.correct(late.id, by="oncall", reason="late one")
    assert "oncall corrected svc.late" in text(console.get("/"))


def test_a_busy_day_lists_the_newest_changes_and_counts_them_all(console: Console) -> None:
    console.story.ledger.add(
        [AssertionInput(subject=f"svc.s{i:03d}", value=i, agent="bulk") for i in range(600)]
    )
    console.sign_in("oncall")
    r = console.get("/diff?since=24h")
    words = text(r)
    assert "602 changes" in words
    assert "The newest 500 of 602" in words
    assert r.text.count('class="change-added"') == 500
    assert "svc.s599" in words  # the newest are the ones listed
    assert "svc.s099" not in words
    overview = text(console.get("/"))
    assert "602 added" in overview
    assert "The newest 50 of 602" in overview
    # the 600 came in one event, at one time: the older page starts inside it
    link = re.search(r'href="(/diff\?[^"]*)">Older changes', r.text)
    assert link is not None
    assert "since=2026-11-" in link.group(1)
    assert "24h" not in link.group(1)
    older = console.get(link.group(1).replace("&amp;", "&"))
    assert older.status_code == 200
    rest = text(older)
    assert "Older changes, 102 of 602" in rest
    assert older.text.count('class="change-added"') == 102
    assert "svc.s099" in rest
    assert "svc.s100" not in rest
    assert "svc.s000" in rest
    assert "Older changes →" not in rest
    newest = re.search(r'href="(/diff\?[^"]*)">the newest</a>', older.text)
    assert newest is not None
    assert "before" not in newest.group(1)
    again = console.get(newest.group(1).replace("&amp;", "&"))
    assert again.text.count('class="change-added"') == 500
    assert "svc.s599" in text(again)
    bad = console.get("/diff?before=48213")
    assert bad.status_code == 400
    assert "is not a place in a diff" in text(bad)


def test_trace_draws_decision_queries_assertions_agents_and_sources(console: Console) -> None:
    console.sign_in("oncall")
    r = console.get(f"/trace/{console.story.decision}")
    assert r.status_code == 200
    svg = r.text.split("<svg")[1].split("</svg>")[0]
    for label in ("use ES256 for auth-service", "orchestrator asked auth.jwt",
                  "auth.jwt.algorithm = ES256", "research-agent", "rfc-research-1"):  # fmt: skip
        assert label in svg, label
    assert svg.count('class="edge"') == 5  # d→q, q→a, a→agent, agent→source, agent→epoch
    assert "No pre-flight check by this agent in the hour before this decision." in text(r)


def test_a_decisions_trace_page_lists_the_checks_before_it(console: Console) -> None:
    console.sign_in("oncall")
    led = console.story.ledger
    led.add_constraint(scope="auth", forbid=["ES256"], reason="RS256", by="oncall")
    stopped = led.check("deploy ES256", ["auth"], agent="deploy-bot")
    d = led.decide("deployed RS256", agent="deploy-bot", query_ids=[])
    page = console.get(f"/trace/{d.id}")
    words = text(page)
    assert "Pre-flight checks by deploy-bot in the hour before it 1 " in words
    assert "violated “deploy ES256” ES256 (" in words
    assert str(stopped.check_id) in words
    assert "Older checks of that hour" not in words
    # an agent that checks often: the newest 20, and a link to the rest of that hour
    made = [led.check(f"plan {n}", agent="busy-bot").check_id for n in range(25)]
    busy = led.decide("deployed", agent="busy-bot", query_ids=[])
    page = console.get(f"/trace/{busy.id}")
    assert "in the hour before it 20+ " in text(page)
    link = re.search(
        r'href="(/agents/busy-bot\?[^"#]*)#checks">Older checks of that hour', page.text
    )
    assert link is not None
    rest = text(console.get(link.group(1).replace("&amp;", "&")))
    assert all(k in rest for k in made[:5])
    assert made[5] not in rest


def test_impact_and_blame(console: Console) -> None:
    console.sign_in("oncall")
    words = text(console.get(f"/impact/{console.story.es256}"))
    assert "was served 1 time to 1 agent; 1 decision relied on it" in words
    blame = text(console.get(f"/blame/{console.story.es256[:8]}"))
    assert "research-agent" in blame
    assert "https://www.rfc-editor.org/rfc/rfc7518" in blame
    # an approval names the value it superseded, linked
    console.story.ledger.approve(console.story.es256, by="alice")
    page = console.get(f"/blame/{console.story.es256}").text
    rs = console.story.rs256
    assert f'superseding <a class="id" href="/blame/{rs}" title="{rs}">' in page


def test_correcting_shows_the_impact_first_then_corrects(console: Console) -> None:
    console.sign_in("oncall")
    es = console.story.es256
    form = console.get(f"/assertions/{es}/correct")
    assert "Review the impact" in form.text
    csrf = console.csrf()
    review = {"csrf": csrf, "step": "review", "reason": "prod verifies RS256",
              "value": "RS256", "forbid": "on"}  # fmt: skip
    confirm = console.post(f"/assertions/{es}/correct", review)
    assert confirm.status_code == 200
    words = text(confirm)
    assert "Record RS256 as the approved value" in words
    assert "use ES256 for auth-service tokens" in words  # the decision it touched
    assert console.story.ledger.get(es).lifecycle == "proposed"  # nothing written yet
    done = console.post(f"/assertions/{es}/correct", {**review, "step": "apply"})
    assert done.status_code == 303
    assert done.headers["location"].startswith(f"/blame/{es}?corrected=x_")
    assert console.story.ledger.get(es).lifecycle == "rejected"
    correction = console.story.ledger.blame(es)[0].corrections[0]
    assert (correction.by, correction.constraint_id is not None) == ("oncall", True)
    note = f"Correction {correction.id} recorded by oncall."
    assert note in text(console.get(done.headers["location"]))
    # a link cannot make the page announce a correction the ledger does not hold
    for made_up in ("x_FAKE by nobody", correction.id[:-1]):
        shown = text(console.get(f"/blame/{es}", params={"corrected": made_up}))
        assert "recorded by" not in shown
        assert "The gardener lowers" not in shown
        assert "nobody" not in shown
    # a subject in the heading in full, an id cut short
    assert "Blame auth.jwt.algorithm " in text(console.get("/blame/auth.jwt.algorithm"))
    assert f"Blame {es[:12]} " in text(console.get(f"/blame/{es}"))
    again = console.post(f"/assertions/{es}/correct", {**review, "step": "apply"})
    assert "This assertion was marked incorrect already, by oncall" in text(again)
    assert len(console.story.ledger.blame(es)[0].corrections) == 1
    assert "ES256 is wrong (prod verifies RS256)" in text(console.get("/"))  # on the overview
    assert "Correct</a>" not in console.get(f"/blame/{es}").text


def test_a_proposal_rejected_in_review_is_corrected_from_its_blame_page(
    console: Console,
) -> None:
    # Rejected in review after an agent was served it: the console offered no correction
    # ("already rejected: there is nothing left to correct"), where the CLI and API take it.
    console.sign_in("oncall")
    es = console.story.es256
    console.story.ledger.reject(es, by="reviewer")
    assert f'href="/assertions/{es}/correct">Correct</a>' in console.get(f"/blame/{es}").text
    form = text(console.get(f"/assertions/{es}/correct"))
    assert "It is rejected (in review, or with its epoch), but nobody marked it incorrect" in form
    review = {"csrf": console.csrf(), "step": "review", "reason": "prod verifies RS256"}
    assert "Mark ES256 on" in text(console.post(f"/assertions/{es}/correct", review))
    done = console.post(f"/assertions/{es}/correct", {**review, "step": "apply"})
    assert done.status_code == 303
    [correction] = console.story.ledger.corrections(es)
    assert (correction.by, correction.reason) == ("oncall", "prod verifies RS256")
    assert "Correct</a>" not in console.get(f"/blame/{es}").text


def test_a_correction_needs_a_reason_and_readable_json(console: Console) -> None:
    console.sign_in("oncall")
    path = f"/assertions/{console.story.es256}/correct"
    csrf = console.csrf()
    r = console.post(path, {"csrf": csrf, "reason": " ", "value": "RS256"})
    assert (r.status_code, "needs a reason" in r.text) == (400, True)
    r = console.post(path, {"csrf": csrf, "reason": "bad", "value": "{oops"})
    assert (r.status_code, "malformed JSON value" in r.text) == (400, True)
    # read as the CLI reads it: an integer past 64 bits is refused, not made a float
    r = console.post(path, {"csrf": csrf, "reason": "bad", "value": "18446744073709551616"})
    assert (r.status_code, "integers must fit in 64 bits" in r.text) == (400, True), r.text
    assert console.story.ledger.get(console.story.es256).lifecycle == "proposed"


def test_who_may_not_correct_sees_no_button_and_gets_403(console: Console) -> None:
    console.sign_in("agent-1")
    page = console.get("/subjects/auth.jwt.algorithm")
    assert page.status_code == 200
    assert "/correct" not in page.text
    es = console.story.es256
    assert console.get(f"/assertions/{es}/correct").status_code == 403
    r = console.post(f"/assertions/{es}/correct",
                     {"csrf": console.csrf(), "reason": "x", "step": "apply"})  # fmt: skip
    assert r.status_code == 403
    assert "correct needs the supervisor role" in r.text
    assert console.story.ledger.get(es).lifecycle == "proposed"
    denial = console.story.ledger.denials(principal="agent-1")[0]
    assert denial.operation == "correct"
    # counted with the API's refusals, as the ledger records them
    registry = console.client.app.state.metrics.registry  # type: ignore[attr-defined]
    counted = registry.get_sample_value("episteme_auth_refusals_total", {"status": "403"})
    assert counted == len(console.story.ledger.denials(principal="agent-1")) == 2


def test_the_agent_page_shows_trust_falling_after_the_gardener(console: Console) -> None:
    console.sign_in("oncall")
    before = text(console.get("/agents/research-agent"))
    assert "every topic stands at the prior, 0.50" in before
    console.story.ledger.correct(console.story.es256, by="oncall", reason="prod RS256")
    Gardener(console.story.ledger).run_until_caught_up()
    after = console.get("/agents/research-agent")
    words = text(after)
    assert "auth 0.33" in words
    assert '<polyline class="line s0"' in after.text
    orchestrator = text(console.get("/agents/orchestrator"))
    assert "use ES256 for auth-service tokens" in orchestrator  # its decision
    assert "auth 0.43" in orchestrator


def test_the_agent_page_shows_what_its_pre_flight_checks_found(console: Console) -> None:
    # Whether the deploy agent checked its plan, and what the check said, was in the
    # ledger (`episteme checks`) but not on the agent's page.
    console.sign_in("oncall")
    led = console.story.ledger
    fix = led.correct(console.story.es256, by="oncall", reason="RS256", value="RS256", forbid=True)
    led.add_constraint(tags=["deploy"], patterns=["--force"], reason="no canary", by="oncall")
    stopped = led.check("roll out ES256 keys", ["auth.jwt.algorithm"], agent="deploy-bot")
    fine = led.check("", agent="deploy-bot", items=["helm"], tags=["deploy"])
    page = console.get("/agents/deploy-bot")
    assert page.status_code == 200
    words = text(page)
    assert fix.constraint is not None
    assert "Pre-flight checks 2 " in words
    assert (
        (  # newest first
            f"passed items helm on #deploy and any subject · 2 checked {fine.check_id} "
            "2026-11-22 03:00:00Z violated “roll out ES256 keys” on auth.jwt.algorithm and any tag"
            f" · 2 checked ES256 (violation, constraint {fix.constraint.id[:14]} )"
            f" {stopped.check_id}"
        )
        in words
    )
    assert "No pre-flight check in this window." in text(console.get("/agents/research-agent"))


def test_the_constraints_page_lists_them_on_a_subject_or_of_a_tag(console: Console) -> None:
    # Constraints could be seen with the CLI and the API only.
    console.sign_in("oncall")
    led = console.story.ledger
    assert "No constraint recorded" in text(console.get("/constraints"))
    fix = led.correct(console.story.es256, by="oncall", reason="RS256", value="RS256", forbid=True)
    forced = led.add_constraint(
        tags=["deploy"], patterns=["--force"], reason="no canary", prefer="a canary", by="oncall"
    )
    assert fix.constraint is not None
    led.check("roll out ES256", ["auth"], agent="deploy-bot")
    page = console.get("/constraints")
    assert 'href="/constraints" aria-current="page"' in page.text
    words = text(page)
    assert "2 constraints." in words
    newest = words.index(forced.constraint.id[:14])
    assert newest < words.index(fix.constraint.id[:14])
    assert "#deploy /--force/ a canary no canary 1.00 active 0" in words
    assert "auth.jwt.algorithm ES256 RS256 RS256 1.00 active 1" in words
    assert f'id="{forced.constraint.id}"' in page.text
    tagged = text(console.get("/constraints?tag=Deploy"))
    assert "1 constraint of #deploy ." in tagged
    assert text(console.get("/constraints", params={"tag": "#deploy"})) == tagged  # as shown
    assert fix.constraint.id[:14] not in tagged
    on_auth = text(console.get("/constraints?scope=auth"))
    assert "1 constraint on auth (above and below it)." in on_auth
    assert forced.constraint.id[:14] not in on_auth
    assert "on that subject or of that tag" in text(console.get("/constraints?tag=npm"))
    bad = console.get("/constraints?scope=a..b")
    assert bad.status_code == 400
    assert "invalid subject" in bad.text
    agent = console.get("/agents/deploy-bot")
    assert f'href="/constraints?retired=1#{fix.constraint.id}"' in agent.text


def test_a_supervisor_records_a_constraint_from_the_console(console: Console) -> None:
    console.sign_in("oncall")
    assert 'href="/constraints/new"' in console.get("/constraints").text
    form = console.get("/constraints/new")
    assert form.status_code == 200
    head = console.story.ledger.store.head()
    fields = {"csrf": console.csrf("/constraints/new"), "scope": "", "tags": "Deploy, rollout,",
              "forbid": "", "patterns": "--force\\b\r\n\r\n", "items": "", "prefer": "a canary",
              "reason": "a forced deploy skips the canary", "half_life": "14"}  # fmt: skip
    for bad, why in (
        ({"tags": ""}, "needs a scope: the subject it covers, or tags"),
        ({"tags": "two words!"}, "invalid tag"),
        ({"patterns": "("}, "invalid regular expression"),
        ({"half_life": "soon"}, "the half-life is a number of days, not &#39;soon&#39;"),
        ({"half_life": "0"}, "more than 0"),
        ({"half_life": "nan"}, "more than 0"),
        ({"half_life": "x" * 300}, "(300 characters)"),
        ({"reason": "r" * 5000}, "the reason has 5,000 characters: give at most 4,096"),
    ):
        refused = console.post("/constraints/new", fields | bad)
        assert refused.status_code == 400, bad
        assert why in refused.text, bad
        assert "--force\\b" in refused.text  # what was typed is kept
    assert console.story.ledger.store.head() == head  # nothing written
    made = console.post("/constraints/new", fields)
    assert made.status_code == 303
    [state] = console.story.ledger.constraints(tags=["deploy"])
    c = state.constraint
    assert made.headers["location"] == f"/constraints#{c.id}"
    assert (c.scope, c.tags, c.patterns, c.prefer) == (None, ["deploy", "rollout"],
                                                       ["--force\\b"], "a canary")  # fmt: skip
    assert (c.created_by, c.origin, c.half_life_days) == ("oncall", "direct:oncall", 14.0)
    # no CSRF token: refused, nothing written
    head = console.story.ledger.store.head()
    assert console.post("/constraints/new", fields | {"csrf": ""}).status_code == 403
    assert console.story.ledger.store.head() == head


def test_a_supervisor_retires_a_constraint_from_the_console(console: Console) -> None:
    console.sign_in("oncall")
    led = console.story.ledger
    made = led.add_constraint(tags=["deploy"], patterns=["--force"], reason="r", by="oncall")
    cid = made.constraint.id
    page = console.get("/constraints")
    assert f'action="/constraints/{cid}/retire"' in page.text
    blank = console.post(f"/constraints/{cid}/retire", {"csrf": console.csrf(), "reason": " "})
    assert blank.status_code == 400
    assert "retiring a constraint needs a reason" in blank.text
    done = console.post(f"/constraints/{cid}/retire",
                        {"csrf": console.csrf(), "reason": "canary in CI"})  # fmt: skip
    assert done.status_code == 303
    assert done.headers["location"] == f"/constraints?retired=1#{cid}"
    assert led.constraint(cid).state == "retired"
    assert cid[:14] not in text(console.get("/constraints"))
    assert cid[:14] not in text(console.get("/constraints?retired=0"))
    shown = text(console.get("/constraints?retired=1"))
    assert "retired 2026-11-22 03:00:00Z by oncall: canary in CI" in shown
    again = console.post(f"/constraints/{cid}/retire", {"csrf": console.csrf(), "reason": "x"})
    assert again.status_code == 409
    assert led.check("apply --force", agent="a", tags=["deploy"]).ok


def test_an_agent_may_not_record_a_constraint_from_the_console(console: Console) -> None:
    console.sign_in("agent-1")
    assert 'href="/constraints/new"' not in console.get("/constraints").text
    cid = console.story.ledger.add_constraint(scope="a", forbid=["x"], reason="r", by="o")
    assert "/retire" not in console.get("/constraints").text
    r = console.post(f"/constraints/{cid.constraint.id}/retire",
                     {"csrf": console.csrf(), "reason": "in my way"})  # fmt: skip
    assert r.status_code == 403
    assert console.story.ledger.constraint(cid.constraint.id).state == "active"
    assert console.get("/constraints/new").status_code == 403
    r = console.post("/constraints/new", {"csrf": console.csrf(), "reason": "r", "tags": "x",
                                          "forbid": "y"})  # fmt: skip
    assert r.status_code == 403
    assert len(console.story.ledger.constraints()) == 1  # the one made above, alone
    denied = console.story.ledger.denials(principal="agent-1")
    assert [(d.operation, d.target) for d in denied[:3]] == [
        ("constrain", "POST /constraints/new"),
        ("constrain", "GET /constraints/new"),
        ("constrain", f"POST /constraints/{cid.constraint.id}/retire"),
    ]


def test_the_agent_page_links_to_older_checks_when_it_lists_a_full_page(
    console: Console,
) -> None:
    console.sign_in("oncall")
    made = [
        console.story.ledger.check(f"restart {n}", agent="busy-agent").check_id for n in range(130)
    ]
    both = _newest_and_older(console, "checks", "Older checks")
    assert re.findall(r"<code>(k_[0-9a-f]+)</code>", both) == list(reversed(made))
    assert console.get("/agents/busy-agent?checks_before=0").status_code == 400


def _newest_and_older(console: Console, section: str, label: str) -> str:
    """The busy agent's page and the page its full `section` links to (`label`), as one
    text: the first lists 100 and counts "100+", the second the 30 left and no link."""
    first = console.get("/agents/busy-agent")
    assert '<span class="count">100+</span>' in first.text
    link = re.search(rf'href="(/agents/busy-agent\?[^"#]*)#{section}">{label}', first.text)
    assert link is not None
    # the window as it was resolved: "7d" read again at the click would move its start
    assert "since=2026-11-" in link.group(1)
    assert "7d" not in link.group(1)
    older = console.get(link.group(1).replace("&amp;", "&"))
    assert older.status_code == 200
    assert '<span class="count">30</span> <small>older ones</small>' in older.text
    assert label not in older.text
    return first.text + older.text


def test_the_agent_page_links_to_older_reads_when_it_lists_a_full_page(
    console: Console,
) -> None:
    # It listed the newest 100 reads and counted "100", however many there were.
    console.sign_in("oncall")
    asked = [console.story.ledger.query("auth", agent="busy-agent") for _ in range(130)]
    both = _newest_and_older(console, "queries", "Older reads")
    assert re.findall(r'href="/trace/(q_[0-9a-f]+)"', both) == [a.query_id for a in reversed(asked)]
    refused = console.get("/agents/busy-agent?before=0")
    assert refused.status_code == 400
    assert "before must be a journal position" in refused.text


def test_the_agent_page_links_to_older_decisions_when_it_lists_a_full_page(
    console: Console,
) -> None:
    # It listed the newest 100 decisions, marked "100+", with no way to see the others.
    console.sign_in("oncall")
    read = console.story.ledger.query("auth", agent="busy-agent")
    made = [
        console.story.ledger.decide(f"restart {n}", agent="busy-agent", query_ids=[read.query_id])
        for n in range(130)
    ]
    both = _newest_and_older(console, "decisions", "Older decisions")
    assert "Older reads" not in both  # one read: its list is whole
    assert re.findall(r'href="/trace/(d_[0-9a-f]+)"', both) == [d.id for d in reversed(made)]
    refused = console.get("/agents/busy-agent?decisions_before=0")
    assert refused.status_code == 400


def test_find_goes_to_the_right_page(console: Console) -> None:
    console.sign_in("oncall")
    story = console.story
    cases = {story.decision: "/trace/", story.es256[:10]: "/blame/", "auth.jwt": "/subjects/",
             "s_0123456789abcdef01234567": "/diagnosis/"}  # fmt: skip
    for q, where in cases.items():
        assert console.get(f"/find?q={q}").headers["location"] == where + q
    # what only starts as a session's id is a subject's name (it was a pydantic error)
    assert console.get("/find?q=s_nope").headers["location"] == "/subjects/s_nope"
    # neither: said on a console page, not the API's 404 of a path the / broke
    for q in ("a/b", "auth jwt", "-x"):
        r = console.get("/find", params={"q": q})
        assert r.status_code == 400, q
        assert "is neither a subject" in text(r)
        assert r.headers["content-type"].startswith("text/html")


def test_the_desk_approves_for_approvers_only(console: Console) -> None:
    engine = console.client.app.state.diagnosis  # type: ignore[attr-defined]
    start = functools.partial(engine.start, "database connection failures", "prod",
                              requester="agent-1")  # fmt: skip
    session = console.client.portal.call(start)  # type: ignore[union-attr]
    console.sign_in("lead")  # a supervisor, not an approver
    page = console.get(f"/diagnosis/{session.id}")
    assert "op://Infrastructure/prod-db/password" in page.text
    assert 'action="/diagnosis/' not in page.text.split('id="credentials"')[1]
    r = console.post(f"/diagnosis/{session.id}/approve",
                     {"csrf": console.csrf(), "reason": "go", "scope": "all"})  # fmt: skip
    assert r.status_code == 403
    console.client.cookies.clear()
    console.sign_in("oncall")
    csrf = console.csrf()
    r = console.post(f"/diagnosis/{session.id}/approve",
                     {"csrf": csrf, "reason": "go", "scope": "selected"})  # fmt: skip
    assert (r.status_code, "tick the references" in r.text) == (400, True)
    r = console.post(f"/diagnosis/{session.id}/deny", {"csrf": csrf, "reason": "freeze"})
    assert r.status_code == 303
    assert "denied by oncall: freeze" in console.get(f"/diagnosis/{session.id}").text
    assert console.get("/diagnosis/s_nope").status_code == 400


def test_a_finished_session_says_its_conclusion_once(console: Console) -> None:
    # without a model the narrative is the conclusion: the page said it twice
    engine = console.client.app.state.diagnosis  # type: ignore[attr-defined]
    portal = console.client.portal  # type: ignore[union-attr]
    start = functools.partial(engine.start, "database connection failures", "prod",
                              requester="agent-1")  # fmt: skip
    session = portal.call(start)
    portal.call(functools.partial(engine.approve, session.id, approver="oncall", refs=None,
                                  reason="go"))  # fmt: skip
    done = portal.call(engine.wait, session.id)
    assert done.result is not None
    console.sign_in("oncall")
    page = text(console.get(f"/diagnosis/{session.id}"))
    card = page.split("Root cause", 1)[1].split("Findings", 1)[0]  # the event log says it too
    assert card.count(done.result.conclusion) == 1


def test_a_specialist_that_needs_no_credential_is_on_the_session_page(console: Console) -> None:
    engine = console.client.app.state.diagnosis  # type: ignore[attr-defined]
    start = functools.partial(engine.start, "database connection failures and latency",
                              "prod", requester="agent-1")  # fmt: skip
    session = console.client.portal.call(start)  # type: ignore[union-attr]
    assert "observability" in session.specialists
    assert not session.credentials.get("observability")
    console.sign_in("oncall")
    table = text(console.get(f"/diagnosis/{session.id}")).split("Credentials requested")[1]
    assert "observability" in table
    assert "needs no credential" in table


def test_a_time_is_shown_to_the_second_it_had_reached() -> None:
    # rounded, the session's request read 12:34:35Z above an event log saying 12:34:34Z
    assert when(Instant.parse_iso("2026-11-21T12:34:34.6Z")) == "2026-11-21 12:34:34Z"
    assert when(None) == "—"


def test_the_layered_layout_orders_nodes_and_draws_forward_edges_only() -> None:
    graph = layered(
        [("a", [Spec("d", "decision")]), ("b", [Spec("q2", "two"), Spec("q1", "one")]),
         ("c", [Spec("x", "x" * 80), Spec("q1", "again")])],
        [("d", "q1"), ("d", "q2"), ("q1", "x"), ("x", "d"), ("q1", "nowhere")],
    )  # fmt: skip
    assert [n.spec.key for n in graph.nodes] == ["d", "q2", "q1", "x"]  # q1 drawn once
    assert len(graph.edges) == 3
    assert graph.nodes[-1].label.endswith("…")
    assert len(graph.nodes[-1].label) == LABEL_CHARS


def test_the_line_chart_puts_values_on_the_plot() -> None:
    chart = line_chart({"auth": [0.5, 0.5, 1 / 3]}, ["11-20", "11-21", "11-22"])
    assert chart.series[0].points.count(",") == 3
    assert [label for _, label in chart.x_ticks] == ["11-20", "11-21", "11-22"]
    assert chart.series[0].last_y > chart.top + chart.plot_h / 2  # below the 0.5 line


def test_a_subject_page_names_what_is_under_it_and_pages_its_reads(console: Console) -> None:
    ledger = console.story.ledger
    ledger.add(
        [AssertionInput(subject=f"auth.bulk.s{i:03d}", value=i, agent="bulk") for i in range(210)]
    )
    asked = [ledger.query("auth.jwt.algorithm", agent=f"reader-{n}").query_id for n in range(60)]
    console.sign_in("oncall")
    r = console.get("/subjects/auth")
    # the history of a prefix names each move's subject; 200 of them, saying so
    history = r.text.split('id="timeline"')[1]
    assert '<a href="/subjects/auth.bulk.s209"><code>auth.bulk.s209</code></a>' in history
    moves = sum(len(b.history) for b in ledger.blame("auth"))
    assert f"The newest 200 of {moves} moves" in text(r)
    assert history.count('<li class="') == 200
    own = console.get("/subjects/auth.jwt.algorithm").text.split('id="timeline"')[1]
    assert "<code>auth.jwt.algorithm</code>" not in own  # its own moves name no subject
    # the reads: 50 and a link to the rest, the window as typed
    page = console.get("/subjects/auth.jwt.algorithm")
    assert '<span class="count">50+</span>' in page.text
    link = re.search(r'href="(/subjects/auth.jwt.algorithm\?[^"#]*)#served">Older reads', page.text)
    assert link is not None
    older = console.get(link.group(1).replace("&amp;", "&"))
    assert "Older reads" not in older.text
    listed = re.findall(r'href="/trace/(q_[0-9a-f]+)"', page.text + older.text)
    assert [q for q in listed if q in asked] == list(reversed(asked))


def test_a_position_past_any_journal_is_refused_before_the_stream_starts(
    console: Console,
) -> None:
    # SQLite cannot hold it: the stream began 200 and ended cut off, the error in the log
    console.sign_in("oncall")
    sid = "s_0123456789abcdef01234567"
    r = console.get(f"/diagnosis/{sid}/events?after=99999999999999999999")
    assert r.status_code == 400
    assert "after" in text(r)


def test_revoking_a_token_ends_the_streams_it_follows(story: Story) -> None:
    # A followed stream checked its token once, at the start: a revoked supervisor kept
    # receiving a session's events (its findings too, once run) until the session ended.
    approver, _ = story.ledger.issue_token("second", ["approver"], by="admin")
    with live_server(story.app()) as url, httpx.Client(base_url=url, timeout=30) as browser:
        started = httpx.post(
            f"{url}/v1/diagnosis/diagnose",
            json={"problem": "database connection failures", "environment": "prod"},
            headers={"Authorization": f"Bearer {story.tokens['agent-1']}"},
        )
        sid = started.json()["id"]
        form = browser.get("/login").text
        csrf = CSRF.search(form)
        assert csrf is not None
        data = {"csrf": csrf.group(1), "token": story.tokens["oncall"], "next": "/"}
        assert browser.post("/login", data=data).status_code == 303
        oncall = {"Authorization": f"Bearer {story.tokens['oncall']}"}
        with (
            httpx.stream(
                "GET", f"{url}/v1/diagnosis/status/{sid}?stream=true", headers=oncall, timeout=30
            ) as api,
            browser.stream("GET", f"/diagnosis/{sid}/events") as console,
        ):
            followed = [api.iter_lines(), console.iter_lines()]
            for lines in followed:  # what was there when each stream began
                assert "approval_required" in next(line for line in lines if "approval" in line)
            story.ledger.revoke_token("oncall", by="admin", reason="left the team")
            denied = httpx.post(
                f"{url}/v1/diagnosis/deny/{sid}",
                json={"reason": "not now"},
                headers={"Authorization": f"Bearer {approver}"},
            )
            assert denied.json()["status"] == "denied"
            for lines in followed:  # ended, saying why, the denial unsent
                (last,) = [orjson.loads(line) for line in lines if line]
                assert (last["type"], last["code"]) == ("error", "unauthenticated")
                assert "revoked while it was being answered" in last["message"]
                assert "n" not in last
    refused = [(d.principal, d.operation) for d in story.ledger.denials()]
    assert refused == [("oncall", "authenticate")] * 2
