"""What the ledger learns, from the command line: constraints and checks, the gardener,
trust after a correction, conflicts, notifications and webhooks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from whenever import TimeDelta

from episteme.ledger import Ledger
from episteme.ledger.gardener import Gardener
from episteme.timeutil import ManualClock
from tests.cli.support import assert_error, done, ok
from tests.conftest import Cli
from tests.receiver import Receiver

SUBJECT = "auth.jwt.algorithm"
VIOLATION = 3


def _axios(cli: Cli) -> str:
    ok(cli("init", "--json"))
    made = ok(
        cli(
            "constraint",
            "add",
            "--scope",
            "code.http_client",
            "--forbid",
            "node-fetch",
            "--prefer",
            "axios",
            "--reason",
            "node-fetch v2 leaks sockets behind our proxy",
            "--by",
            "oncall",
            "--json",
        )
    )
    assert made["strength"] == 1.0
    assert made["state"] == "active"
    assert made["constraint"]["origin"] == "direct:oncall"
    cid: str = made["constraint"]["id"]
    return cid


def _correct(cli: Cli, aid: str) -> dict[str, Any]:
    """Oncall corrects `aid` with RS256 and a constraint; the correction's JSON."""
    fix = ("--value", "RS256", "--forbid", "--json")
    fixed: dict[str, Any] = ok(
        cli("correct", aid[:12], "--by", "oncall", "--reason", "prod expects RS256", *fix)
    )
    assert fixed["constraint"]["forbid"] == ["ES256"]
    return fixed


def _corrected(cli: Cli) -> str:
    """ES256 asserted by research-agent, corrected by oncall with RS256 and a constraint."""
    ok(cli("init", "--json"))
    [es] = ok(cli("assert", SUBJECT, "ES256", "--agent", "research-agent", "--json"))
    _correct(cli, es["id"])
    eid: str = es["id"]
    return eid


# -- constraints and pre-flight checks ----------------------------------------------------


def test_a_constraint_stops_a_plan_and_checks_are_audited(cli: Cli) -> None:
    cid = _axios(cli)
    r = cli(
        "check",
        "--plan",
        "use node-fetch",
        "--scope",
        "code.http_client",
        "--item",
        "node-fetch",
        "--agent",
        "deploy-agent",
    )
    assert r.code == VIOLATION, r.err
    assert "'node-fetch' is forbidden on code.http_client" in r.out
    assert "use 'axios' instead" in r.out
    assert "from direct:oncall" in r.out

    r = cli("check", "--plan", "use axios", "--json")
    assert r.code == 0, r.err
    passed = r.json()
    assert passed["violations"] == []
    assert passed["checked"] == 1

    audited = ok(cli("checks", "--json"))
    assert [c["plan"] for c in audited] == ["use axios", "use node-fetch"]
    assert audited[0]["id"] == passed["check_id"]
    assert audited[1]["agent"] == "deploy-agent"
    assert audited[1]["violations"][0]["constraint_id"] == cid
    assert [c["plan"] for c in ok(cli("checks", "--agent", "deploy-agent", "--json"))] == [
        "use node-fetch"
    ]

    [listed] = ok(cli("constraint", "list", "--json"))
    assert listed["constraint"]["id"] == cid
    assert listed["strength"] == 1.0
    assert listed["constraint"]["hits"] == 1
    shown = done(cli("constraint", "show", cid[:8]))
    assert "node-fetch v2 leaks sockets behind our proxy" in shown
    assert "origin: direct:oncall" in shown
    assert "hits: 1" in shown
    assert ok(cli("constraint", "show", cid[:8], "--json"))["constraint"]["id"] == cid
    alone = cli("check", "--scope", "code.http_client", "--item", "node-fetch", "--json")
    assert alone.code == VIOLATION, alone.err  # the identifiers alone, no words
    assert alone.json()["violations"][0]["constraint"]["id"] == cid


def test_a_constraint_fades_and_a_hit_renews_it(cli: Cli, clock: ManualClock) -> None:
    cid = _axios(cli)
    clock.advance(TimeDelta(hours=24 * 30))
    assert ok(cli("constraint", "show", cid, "--json"))["strength"] == pytest.approx(0.5)
    r = cli("check", "--plan", "add node-fetch", "--json")
    assert r.code == VIOLATION
    assert r.json()["violations"][0]["strength"] == pytest.approx(0.5)
    assert ok(cli("constraint", "show", cid, "--json"))["strength"] == 1.0
    # left alone for 120 days it is dormant: it warns, and the check passes
    clock.advance(TimeDelta(hours=24 * 120))
    [dormant] = ok(cli("constraint", "list", "--json"))
    assert dormant["state"] == "dormant"
    r = cli("check", "--plan", "add node-fetch")
    assert r.code == 0, r.err
    assert "warning" in r.out
    assert "dormant constraint" in r.out


def test_a_constraint_of_tags_stops_a_plan_of_that_kind(cli: Cli) -> None:
    ok(cli("init", "--json"))
    made = ok(
        cli(
            "constraint", "add", "--tag", "deploy", "--tag", "Rollout", "--pattern", "--force",
            "--reason", "a forced deploy skips the canary", "--prefer", "the canary", "--json",
        )
    )  # fmt: skip
    assert (made["constraint"]["scope"], made["constraint"]["tags"]) == (
        None,
        ["deploy", "rollout"],
    )
    cid = made["constraint"]["id"]
    plan = "kubectl apply --force -f checkout.yaml"
    r = cli("check", "--plan", plan, "-t", "deploy", "--agent", "deploy-agent")
    assert r.code == VIOLATION, r.err
    assert "'--force' is forbidden in deploy or rollout plans" in r.out
    assert "use 'the canary' instead" in r.out
    other = cli("check", "--plan", plan, "--tag", "terraform", "--json")
    assert other.code == 0, other.err
    assert other.json()["checked"] == 0
    assert [c["tags"] for c in ok(cli("checks", "--json"))] == [["terraform"], ["deploy"]]
    assert "#terraform" in done(cli("checks"))
    listed = done(cli("constraint", "list", "--tag", "rollout"))
    assert "#deploy, #rollout" in listed
    assert cid[:8] in listed
    assert done(cli("constraint", "list", "--tag", "npm")) == (
        "no constraint meets that subject or tag\n"
    )
    assert_error(
        cli("constraint", "add", "--tag", "two words", "--forbid", "x", "--reason", "r"),
        2,
        "invalid tag 'two words'",
    )
    assert_error(cli("check", "--plan", "p", "--tag", "-x"), 2, "invalid tag '-x'")
    long = assert_error(cli("check", "--plan", "p", "--tag", "t" * 300), 2, "(300 characters)")
    assert "t" * 100 not in long  # measured, not repeated
    assert "(1 constraint in scope)" in done(cli("check", "--plan", "p", "--tag", "deploy"))
    assert_error(cli("constraint", "add", "--forbid", "x", "--reason", "r"), 2, "needs a scope")


def test_a_constraint_is_retired_and_listed_with_retired(cli: Cli) -> None:
    cid = _axios(cli)
    assert cli("check", "--plan", "use node-fetch").code == VIOLATION
    done(cli("constraint", "retire", cid[:10], "--reason", "axios everywhere", "--by", "lead"))
    assert cli("check", "--plan", "use node-fetch").code == 0
    assert done(cli("constraint", "list")) == (
        "no constraint in force (--retired lists the retired ones)\n"
    )
    [retired] = ok(cli("constraint", "list", "--retired", "--json"))
    assert (retired["state"], retired["constraint"]["retired_by"]) == ("retired", "lead")
    assert "retired" in done(cli("constraint", "list", "--retired"))
    shown = done(cli("constraint", "show", cid))
    assert "by lead: axios everywhere" in shown
    assert_error(cli("constraint", "retire", cid, "--reason", "again"), 2, "retired already")
    assert_error(cli("constraint", "retire", cid, "--reason", " "), 2, "needs a reason")


def test_bad_constraints_and_checks_are_one_line_errors(cli: Cli) -> None:
    ok(cli("init", "--json"))
    assert_error(
        cli("constraint", "add", "--scope", "code", "--pattern", "(", "--reason", "r"),
        2,
        "invalid regular expression '('",
    )
    assert_error(
        cli("constraint", "add", "--scope", "", "--forbid", "x", "--reason", "r"),
        2,
        "needs a scope",
    )
    assert_error(
        cli("constraint", "add", "--scope", "code", "--reason", "r"), 2, "must forbid something"
    )
    assert_error(cli("check", "--plan", " "), 2, "give the plan")
    assert_error(cli("constraint", "show", "c_nope"), 2, "c_nope")
    assert ok(cli("constraint", "list", "--json")) == []
    assert ok(cli("checks", "--json")) == []


# -- the gardener, trust and notifications --------------------------------------------------


def test_trust_says_how_many_older_moves_it_left_out(
    cli: Cli, home: Path, clock: ManualClock
) -> None:
    with Ledger.init(home, clock=clock) as ledger:
        for n in range(7):
            a = ledger.assert_one(subject=f"svc.s{n}", value=n, agent="bot")
            ledger.approve(a.id, by="alice")
        Gardener(ledger).run_until_caught_up()
    out = done(cli("trust", "--agent", "bot"))
    assert out.count("approved by alice") == 5
    assert "and 2 older moves (--json lists the newest 20)" in out
    [score] = ok(cli("trust", "--agent", "bot", "--json"))
    assert len(score["moves"]) == score["evidence"] == 7


def test_the_gardeners_options_before_its_command_are_that_commands(
    cli: Cli, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `gardener --home H status` read the home of the environment (or ~/.episteme)
    done(cli("init"))
    done(cli("assert", "svc.a", "1", "--agent", "a"))
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("EPISTEME_HOME", str(elsewhere))
    for command in ("status", "replay"):
        r = cli("gardener", "--home", str(home), "--json", command, home_arg=False)
        assert r.code == 0, r.err
        assert json.loads(r.out)["cursor" if command == "replay" else "head"] == 1
    assert not elsewhere.exists()
    # typed after the command too, the command's own wins
    assert ok(cli("gardener", "--home", str(elsewhere), "status", "--json"))["head"] == 1
    for wrong in (["--once"], ["--batch", "10"]):
        r = cli("gardener", *wrong, "status")
        assert (r.code, r.err) == (
            2,
            "error: --once and --batch run the gardener: drop them for `gardener status`\n",
        )
    r = cli("gardener", "--json")
    assert r.code == 2
    assert r.err == "error: --json prints what --once did: a running gardener prints no result\n"


def test_a_correction_through_the_gardener_lowers_trust(cli: Cli) -> None:
    es = _corrected(cli)
    behind = ok(cli("gardener", "status", "--json"))
    assert behind["lag_events"] == behind["head"] > 0

    caught = ok(cli("gardener", "--once", "--json"))
    assert caught == {"applied": behind["head"], "cursor": behind["head"], "deliveries": {}}
    status = ok(cli("gardener", "status", "--json"))
    assert status["lag_events"] == 0
    assert status["cursor"] == status["head"]

    scores = ok(cli("trust", "--topic", "auth", "--json"))
    [research] = [s for s in scores if s["agent"] == "research-agent"]
    assert research["score"] < 0.5
    assert research["score"] == pytest.approx(1 / 3)
    assert research["moves"][0]["assertion_id"] == es
    assert "corrected by oncall" in research["moves"][0]["reason"]
    assert "research-agent on auth: 0.33" in done(cli("trust", "--topic", "auth"))
    later = done(cli("trust", "--topic", "auth", "--at", "in 90d"))  # a half-life on
    assert re.search(r"-1 \(now 0\.50\) .* corrected by oncall", later), later
    # one without evidence: said of that agent, not of every agent
    assert done(cli("trust", "--agent", "nobody")) == (
        "no trust evidence yet for nobody: it stands at 0.50 on every topic\n"
    )
    assert done(cli("trust", "--topic", "billing")) == (
        "no trust evidence yet on billing: every agent stands at 0.50\n"
    )
    assert_error(cli("trust", "--topic", "Bad Topic"), 2, "invalid topic 'Bad Topic'")

    notes = ok(cli("notifications", "--json"))
    [note] = [n for n in notes if n["type"] == "correction"]
    assert note["data"]["assertion_id"] == es
    assert note["data"]["right_value"] == "RS256"
    assert "oncall corrected auth.jwt.algorithm" in done(cli("notifications"))

    # a replay from the start gives the same scores and raises nothing twice
    replayed = ok(cli("gardener", "replay", "--json"))
    assert replayed == {"applied": status["head"], "cursor": status["head"]}
    assert ok(cli("trust", "--topic", "auth", "--json")) == scores
    assert ok(cli("notifications", "--json")) == notes
    assert ok(cli("gardener", "status", "--json"))["lag_events"] == 0


def test_a_proposal_rejected_in_review_after_an_agent_acted_on_it_is_corrected(
    cli: Cli,
) -> None:
    # The deploy agent read ES256 through `latest` while it was proposed, and acted; a
    # reviewer then rejected it. `correct` was refused ("a rejected assertion cannot move
    # again"): no trust moved, and no constraint protected the next agent.
    ok(cli("init", "--json"))
    [es] = ok(cli("assert", SUBJECT, "ES256", "--agent", "research-agent", "--json"))
    read = ok(cli("query", SUBJECT, "--agent", "deploy-agent", "--lens", "latest", "--json"))
    done(cli("decide", "ship ES256", "--agent", "deploy-agent", "--query", read["query_id"]))
    done(cli("reject", es["id"][:12], "--by", "reviewer"))
    fixed = _correct(cli, es["id"])
    assert fixed["correction"]["assertion_id"] == es["id"]
    [blame] = ok(cli("blame", es["id"], "--json"))
    moves = [(v["prev_lifecycle"], v["lifecycle"], v["cause"]) for v in blame["history"]]
    assert moves[-1] == ("rejected", "rejected", "corrected")
    assert blame["corrections"][0]["reason"] == "prod expects RS256"
    r = cli("check", "--plan", "sign with ES256", "--scope", SUBJECT, "--item", "ES256")
    assert r.code == VIOLATION, r.err
    ok(cli("gardener", "--once", "--json"))
    scores = {s["agent"]: s["score"] for s in ok(cli("trust", "--topic", "auth", "--json"))}
    assert scores["research-agent"] < 0.5
    assert scores["deploy-agent"] < 0.5  # it relied on the value


def test_two_approved_values_at_once_are_listed_as_a_conflict(cli: Cli) -> None:
    ok(cli("init", "--json"))
    [rs] = ok(
        cli("assert", SUBJECT, "RS256", "--agent", "platform", "--lifecycle", "approved", "--json")
    )
    [es] = ok(
        cli(
            "assert",
            SUBJECT,
            "ES256",
            "--agent",
            "research-agent",
            "--lifecycle",
            "approved",
            "--valid-from",
            "in 1d",
            "--json",
        )
    )
    assert ok(cli("conflicts", "--json")) == []  # nothing raised before the gardener runs
    ok(cli("gardener", "--once", "--json"))

    [conflict] = ok(cli("conflicts", "--json"))
    assert conflict["subject"] == SUBJECT
    assert conflict["assertion_ids"] == sorted([rs["id"], es["id"]])
    assert conflict["open"] is True
    assert set(conflict["values"]) == {"RS256", "ES256"}
    listed = done(cli("conflicts"))
    assert f"open {SUBJECT}" in listed
    assert f"{es['id'][:12]} ES256 [approved]" in listed  # it was taken for a style
    both = done(cli("query", SUBJECT, "--at", "in 2d", "--lens", "all", "--agent", "oncall"))
    assert f"conflict on {SUBJECT}: 2 approved values" in both  # as the JSON says
    [note] = ok(cli("notifications", "--type", "conflict", "--json"))
    assert note["key"] == conflict["key"]

    # deprecating one side resolves it: gone from the open list, kept with --all
    ok(cli("deprecate", es["id"], "--by", "oncall", "--json"))
    assert ok(cli("conflicts", "--json")) == []
    [resolved] = ok(cli("conflicts", "--all", "--json"))
    assert resolved["open"] is False


def test_an_unknown_notification_type_is_refused(cli: Cli) -> None:
    ok(cli("init", "--json"))
    assert_error(cli("notifications", "--type", "corection"), 2, "corection")


# -- webhooks ---------------------------------------------------------------------------


def test_webhooks_add_list_deliveries_remove(cli: Cli) -> None:
    ok(cli("init", "--json"))
    spec = ok(
        cli(
            "webhook",
            "add",
            "hook",
            "--url",
            "env:HOOK_URL",
            "--secret",
            "env:HOOK_SECRET",
            "--format",
            "slack",
            "--event",
            "correction",
            "--json",
        )
    )
    assert spec["url"] == "env:HOOK_URL"
    assert spec["secret"] == "env:HOOK_SECRET"
    assert spec["format"] == "slack"
    assert spec["events"] == ["correction"]
    assert ok(cli("webhook", "list", "--json")) == [spec]
    listed = done(cli("webhook", "list"))
    assert listed.startswith("hook: slack to env:HOOK_URL (correction; signed with env:HOOK_SECRET")
    again = cli("webhook", "add", "hook", "--url", "env:HOOK_URL", "--format", "slack")
    assert again.out.startswith("webhook hook: slack to env:HOOK_URL")  # its name once
    assert ok(cli("webhook", "deliveries", "--json")) == []

    assert ok(cli("webhook", "remove", "hook", "--json")) == {"removed": "hook"}
    assert ok(cli("webhook", "list", "--json")) == []
    assert_error(cli("webhook", "remove", "hook"), 2, "no webhook named 'hook'")


def test_a_correction_is_sent_to_the_webhooks_that_take_it(cli: Cli, receiver: Receiver) -> None:
    # `gardener --once` (cron, without a server) queued deliveries and never sent them.
    ok(cli("init", "--json"))
    for name, event in (("pager", "correction"), ("chat", "conflict")):
        ok(cli("webhook", "add", name, "--url", f"{receiver.url}/{name}",
               "--event", event, "--json"))  # fmt: skip
    [es] = ok(cli("assert", SUBJECT, "ES256", "--agent", "research-agent", "--json"))
    ok(cli("correct", es["id"], "--by", "oncall", "--reason", "prod expects RS256", "--json"))
    receiver.fail_next = 1
    once = ok(cli("gardener", "--once", "--json"))
    assert once["deliveries"] == {"retrying": 1}
    [queued] = ok(cli("webhook", "deliveries", "--json"))
    assert queued["webhook"] == "pager"
    assert queued["type"] == "correction"
    assert queued["state"] == "retrying"  # tried once; the next run tries it when due
    assert queued["attempts"] == 1
    assert [r.path for r in receiver.requests] == ["/pager"]
    # a second correction: two deliveries, a page of one says how to ask for the next
    [rs] = ok(cli("assert", SUBJECT, "RS512", "--agent", "research-agent", "--json"))
    ok(cli("correct", rs["id"], "--by", "oncall", "--reason", "not that either", "--json"))
    said = done(cli("gardener", "--once"))
    assert "webhook deliveries due: 1 delivered" in said
    newest, oldest = ok(cli("webhook", "deliveries", "--json"))
    assert newest["state"] == "delivered"
    assert oldest == queued  # not due yet
    assert [r.path for r in receiver.requests] == ["/pager", "/pager"]
    page = done(cli("webhook", "deliveries", "--limit", "1"))
    assert f"1 shown; for older ones add --before {newest['job_id']}" in page
    older = ok(cli("webhook", "deliveries", "--before", str(newest["job_id"]), "--json"))
    assert older == [queued]


def test_a_literal_webhook_secret_is_refused_without_echoing_it(cli: Cli) -> None:
    ok(cli("init", "--json"))
    line = assert_error(
        cli("webhook", "add", "bad", "--url", "http://x", "--secret", "literal-value"),
        2,
        "literal secret",
        "env:VARNAME",
    )
    assert "literal-value" not in line
    assert_error(cli("webhook", "add", "bad", "--url", "ftp://x"), 2, "http://")
    assert ok(cli("webhook", "list", "--json")) == []
