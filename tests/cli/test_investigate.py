"""The on-call questions through the CLI: served, audit, diff, blame, trace, impact."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from whenever import TimeDelta

from episteme.ledger import Ledger
from episteme.timeutil import ManualClock
from tests.cli.support import (
    AFTERNOON,
    DEPLOY,
    EVENING,
    MORNING,
    ONCALL,
    Scenario,
    done,
    ok,
)
from tests.conftest import Cli
from tests.ledger.test_paging import fill

# -- served ----------------------------------------------------------------------------


def test_served_lists_what_agents_were_given(cli: Cli, scenario: Scenario) -> None:
    rows = ok(cli("served", "auth.jwt.algorithm", "--json"))
    assert [q["id"] for q in rows] == [scenario.q_orch]
    [q] = rows
    assert (q["agent"], q["lens"], q["subject"]) == ("orchestrator", "latest", "auth.jwt")
    assert q["at"] == EVENING.format_iso()
    # Only the items about the subject asked for: the issuer served alongside is left out.
    assert q["returned"] == [
        {
            "assertion_id": scenario.es256,
            "subject": "auth.jwt.algorithm",
            "lifecycle": "proposed",
            "confidence": 0.87,
            "value": "ES256",
        }
    ]
    assert q["hidden"]["by_lifecycle"] == {"approved": 1}


def test_served_at_a_time(cli: Cli, scenario: Scenario) -> None:
    both = ok(cli("served", "auth.jwt.issuer", "--json"))
    assert [q["id"] for q in both] == [scenario.q_deploy, scenario.q_orch]  # newest first
    assert [q["returned"][0]["value"] for q in both] == ["https://auth.internal"] * 2
    at_2050 = ok(cli("served", "auth.jwt.issuer", "--at", "yesterday 20:50", "--json"))
    assert [q["id"] for q in at_2050] == [scenario.q_orch]
    assert ok(cli("served", "auth.jwt.issuer", "--at", "20:00", "--json")) == []
    newest = ok(cli("served", "auth.jwt.issuer", "--limit", "1", "--json"))
    assert [q["id"] for q in newest] == [scenario.q_deploy]


def test_served_human_output(cli: Cli, scenario: Scenario) -> None:
    out = done(cli("served", "auth.jwt.algorithm", "--at", DEPLOY.format_iso()))
    assert "served about auth.jwt.algorithm up to 2026-11-21T21:00:00Z" in out
    assert scenario.q_orch in out
    assert "auth.jwt.algorithm=ES256 (proposed 0.87)" in out
    none = done(cli("served", "db.primary"))
    assert none.strip() == "served about db.primary: none"


# -- audit -----------------------------------------------------------------------------


def test_audit_by_agent_subject_and_window(cli: Cli, scenario: Scenario) -> None:
    everything = ok(cli("audit", "--json"))
    assert [q["id"] for q in everything] == [scenario.q_deploy, scenario.q_orch]
    [deploy] = ok(cli("audit", "--agent", "deploy-agent", "--json"))
    assert deploy["id"] == scenario.q_deploy
    assert deploy["at"] == DEPLOY.subtract(minutes=2).format_iso()
    assert deploy["subject"] == "auth.jwt.issuer"
    assert [i["assertion_id"] for i in deploy["returned"]] == [scenario.issuer]
    by_subject = ok(cli("audit", "--subject", "auth.jwt.algorithm", "--json"))
    assert [q["id"] for q in by_subject] == [scenario.q_orch]
    window = ok(
        cli("audit", "--since", "yesterday 20:50", "--until", DEPLOY.format_iso(), "--json")
    )
    assert [q["id"] for q in window] == [scenario.q_deploy]
    until = ok(cli("audit", "-a", "orchestrator", "--until", "20:45", "--json"))
    assert [q["id"] for q in until] == [scenario.q_orch]
    assert ok(cli("audit", "--agent", "nobody", "--json")) == []
    assert [q["id"] for q in ok(cli("audit", "--limit", "1", "--json"))] == [scenario.q_deploy]


def test_audit_sees_the_oncall_reads_too(cli: Cli, scenario: Scenario) -> None:
    ans = ok(cli("query", "auth", "--agent", "oncall", "--lens", "all", "--at", "21:00", "--json"))
    [q] = ok(cli("audit", "--agent", "oncall", "--since", "5m", "--json"))
    assert q["id"] == ans["query_id"]
    assert q["as_of"] == DEPLOY.format_iso()
    assert q["at"] == ONCALL.format_iso()
    assert q["lens"] == "all"


def test_audit_human_output(cli: Cli, scenario: Scenario) -> None:
    out = done(cli("audit", "--agent", "deploy-agent"))
    assert "queries by deploy-agent" in out
    assert scenario.q_deploy in out
    assert scenario.q_orch not in out


# -- diff ------------------------------------------------------------------------------


def test_diff_between_two_times(cli: Cli, scenario: Scenario) -> None:
    d = ok(cli("diff", "auth", "--from", "yesterday 14:00", "--to", "yesterday 21:00", "--json"))
    assert d["prefix"] == "auth"
    assert d["since"] == "2026-11-21T14:00:00Z"
    assert d["until"] == "2026-11-21T21:00:00Z"
    [change] = d["changes"]
    assert change["change"] == "added"
    assert change["assertion_id"] == scenario.es256
    assert (change["subject"], change["value"]) == ("auth.jwt.algorithm", "ES256")
    assert (change["lifecycle"], change["prev_lifecycle"]) == ("proposed", None)
    assert (change["agent"], change["actor"]) == ("research-agent", "research-agent")
    assert change["at"] == AFTERNOON.format_iso()
    assert d["counts"] == {"added": 1}


def test_diff_to_defaults_to_now_and_sees_corrections(cli: Cli, scenario: Scenario) -> None:
    done(cli("correct", scenario.es256[:8], "--by", "oncall", "--reason", "wrong"))
    d = ok(cli("diff", "--from", MORNING.subtract(minutes=1).format_iso(), "--json"))
    assert d["prefix"] is None
    assert d["until"] == ONCALL.format_iso()
    assert d["counts"] == {"added": 3, "corrected": 1}
    last = d["changes"][-1]
    assert (last["change"], last["assertion_id"]) == ("corrected", scenario.es256)
    assert (last["prev_lifecycle"], last["lifecycle"]) == ("proposed", "rejected")
    assert (last["actor"], last["reason"]) == ("oncall", "wrong")
    # A narrower prefix, and a window with nothing in it.
    issuer = ok(cli("diff", "auth.jwt.issuer", "--from", "2026-11-21", "--json"))
    assert [c["assertion_id"] for c in issuer["changes"]] == [scenario.issuer]
    quiet = ok(cli("diff", "auth", "--from", "yesterday 15:00", "--to", "23:00", "--json"))
    assert quiet["changes"] == []
    assert quiet["counts"] == {}


def test_diff_human_output(cli: Cli, scenario: Scenario) -> None:
    out = done(cli("diff", "auth", "--from", "yesterday 14:00"))
    assert "changes to auth from 2026-11-21T14:00:00Z to 2026-11-22T03:00:00Z" in out
    assert "added (proposed)" in out
    assert scenario.es256[:12] in out
    assert "1 added" in out


def test_diff_shows_the_newest_and_says_how_many_more(
    cli: Cli, scenario: Scenario, clock: ManualClock
) -> None:
    since = MORNING.subtract(minutes=1).format_iso()
    everything = ok(cli("diff", "--from", since, "--json"))
    d = ok(cli("diff", "--from", since, "--limit", "1", "--json"))
    assert d["changes"] == everything["changes"][-1:]
    assert (d["counts"], d["total"]) == (everything["counts"], everything["total"])
    assert everything["total"] == len(everything["changes"]) > 1
    total = everything["total"]
    assert "for older ones" not in done(cli("diff", "--from", since, "--limit", str(total)))
    # page by the words each page ends with, from a relative start, while time passes:
    # "19h" read again 12 hours later would start after the morning's changes
    assert MORNING.subtract(minutes=1) > ONCALL.subtract(hours=19)
    args, pages = ["diff", "--from", "19h", "--limit", "1"], []
    for _ in range(total + 1):
        out = done(cli(*args))
        pages.append(ok(cli(*args, "--json"))["changes"])
        if "for older ones" not in out:
            assert f"the oldest 1 of {total} changes" in out
            break
        shown, rest = out.rsplit("for older ones, run it again with ", 1)
        hint = rest.split("\n", 1)[0]
        assert shown.endswith(f"1 of {total} changes shown; ")
        assert hint.startswith(f"--from {ONCALL.subtract(hours=19).format_iso()} --to ")
        args = [*args, *shlex.split(hint)]
        clock.advance(TimeDelta(hours=12))
    assert [c for p in reversed(pages) for c in p] == everything["changes"]
    assert len(pages) == total
    wrong = cli("diff", "--from", since, "--before", "48213")
    assert wrong.code != 0
    assert wrong.err == (
        "error: before '48213' is not a place in a diff: give the place the page before ended"
        " at, as it gave it (its `next`, the --before of the CLI's line under the page, or the"
        " console's link to older changes)\n"
    )
    # well formed, but of no assertion here; and far too long
    made_up = cli("diff", "--from", since, "--before", f"{d['next'][:-67]}.{'0' * 64}.0")
    assert made_up.code != 0
    assert made_up.err.startswith(f"error: before '{d['next'][:-67]}.{'0' * 64}.0' names no change")
    huge = cli("diff", "--from", since, "--before", f"{'9' * 5000}.1.{'0' * 64}.0")
    assert huge.code != 0
    assert huge.err.startswith(f"error: before '{'9' * 120}'… is not a place in a diff")
    assert "Traceback" not in huge.err
    bad = cli("diff", "--from", since, "--limit", "0")
    assert bad.code != 0
    assert bad.err == "error: limit must be between 1 and 1,000,000\n"


# -- blame -----------------------------------------------------------------------------


def test_blame_a_subject(cli: Cli, scenario: Scenario) -> None:
    rows = ok(cli("blame", "auth.jwt.algorithm", "--json"))
    assert [b["assertion"]["id"] for b in rows] == [scenario.rs256, scenario.es256]
    rs, es = rows
    assert rs["epoch"]["name"] == "platform-baseline"
    assert rs["epoch"]["created_by"] == "platform-team"
    assert es["assertion"]["source"] == "https://www.rfc-editor.org/rfc/rfc7518"
    assert es["assertion"]["evidence"] == "ES256 gives shorter tokens"
    assert es["epoch"]["name"] == "rfc-research-1"
    assert es["corrections"] == []
    assert es["derived_from"] == []
    [v] = es["history"]
    assert (v["lifecycle"], v["prev_lifecycle"], v["actor"]) == ("proposed", None, "research-agent")
    assert (v["tx_from"], v["tx_to"]) == (AFTERNOON.format_iso(), None)


def test_blame_an_id_prefix_after_a_correction(cli: Cli, scenario: Scenario) -> None:
    c = ok(cli("correct", scenario.es256, "--by", "oncall", "--reason", "wrong", "--json"))
    [b] = ok(cli("blame", scenario.es256[:8], "--json"))
    assert b["assertion"]["id"] == scenario.es256
    assert b["assertion"]["lifecycle"] == "rejected"
    assert [v["lifecycle"] for v in b["history"]] == ["proposed", "rejected"]
    assert b["history"][0]["tx_to"] == ONCALL.format_iso()
    assert [x["id"] for x in b["corrections"]] == [c["correction"]["id"]]


def test_blame_human_output(cli: Cli, scenario: Scenario) -> None:
    out = done(cli("blame", scenario.es256[:8]))
    assert f"auth.jwt.algorithm = ES256  proposed  {scenario.es256}" in out
    assert "introduced by research-agent at 2026-11-21T14:30:00Z" in out
    assert "epoch rfc-research-1 (1 assertion)" in out


# -- trace -----------------------------------------------------------------------------


def test_trace_a_decision(cli: Cli, scenario: Scenario) -> None:
    tr = ok(cli("trace", scenario.d_deploy[:10], "--json"))
    assert (tr["root"], tr["root_kind"]) == (scenario.d_deploy, "decision")
    assert tr["decision"]["action"] == "deployed auth-service config (JWT ES256)"
    assert {q["id"] for q in tr["queries"]} == {scenario.q_orch, scenario.q_deploy}
    assert {a["id"] for a in tr["assertions"]} == {scenario.es256, scenario.issuer}
    # The decision's agent first, then who read, then who asserted what they were served.
    assert tr["agents"][:2] == ["deploy-agent", "orchestrator"]
    assert set(tr["agents"][2:]) == {"research-agent", "platform-team"}
    assert len(tr["agents"]) == 4
    assert sorted(tr["sources"]) == ["https://www.rfc-editor.org/rfc/rfc7518", "runbook://auth/jwt"]
    assert tr["epochs"] == ["rfc-research-1"]


def test_trace_a_query(cli: Cli, scenario: Scenario) -> None:
    tr = ok(cli("trace", scenario.q_orch, "--json"))
    assert (tr["root"], tr["root_kind"], tr["decision"]) == (scenario.q_orch, "query", None)
    [q] = tr["queries"]
    assert q["id"] == scenario.q_orch
    assert tr["agents"][0] == "orchestrator"
    out = done(cli("trace", scenario.q_orch))
    assert out.count(scenario.q_orch) == 1  # the query is the root, not also its own child
    assert out.startswith(f"query {scenario.q_orch} by orchestrator lens 'latest'")
    assert "auth.jwt.algorithm = ES256  served as proposed 0.87" in out


def test_trace_human_output_shows_what_it_is_now(cli: Cli, scenario: Scenario) -> None:
    done(cli("correct", scenario.es256[:8], "--by", "oncall", "--reason", "wrong"))
    out = done(cli("trace", scenario.d_deploy))
    assert f"decision {scenario.d_deploy}: deployed auth-service config (JWT ES256)" in out
    assert "auth.jwt.algorithm = ES256  served as proposed 0.87" in out
    assert "(now rejected)" in out
    assert "epochs: rfc-research-1" in out
    assert "no pre-flight check by deploy-agent in the hour before it" in out
    # once it checks before it acts, the trace says so, and what the check found
    done(cli("constraint", "add", "--scope", "auth", "--forbid", "ES256", "--reason", "RS256"))
    stopped = cli("check", "--plan", "deploy ES256 again", "-s", "auth", "--agent", "deploy-agent")
    assert stopped.code == 3
    d = ok(cli("decide", "deployed RS256", "--agent", "deploy-agent", "--json"))
    after = done(cli("trace", d["id"]))
    assert "pre-flight checks by deploy-agent in the hour before it:" in after
    assert "violated (ES256)  deploy ES256 again  k_" in after
    assert ok(cli("trace", d["id"], "--json"))["checks"][0]["plan"] == "deploy ES256 again"
    assert ok(cli("trace", scenario.q_orch, "--json"))["checks"] is None  # a query's: unsaid
    for n in range(20):  # a busy agent: the newest 20, and the command for the rest
        done(cli("check", "--plan", f"restart {n}", "--agent", "deploy-agent"))
    d = ok(cli("decide", "restarted", "--agent", "deploy-agent", "--json"))
    busy = done(cli("trace", d["id"]))
    assert "the newest 20 pre-flight checks by deploy-agent in the hour before it:" in busy
    hint = re.search(r"older ones: (episteme checks --agent deploy-agent .*)", busy)
    assert hint is not None
    older = ok(cli(*hint.group(1).split()[1:], "--json"))
    assert [c["plan"] for c in older] == ["deploy ES256 again"]


# -- impact ----------------------------------------------------------------------------


def test_impact_of_an_assertion(cli: Cli, clock: ManualClock, scenario: Scenario) -> None:
    [child] = ok(
        cli(
            "assert",
            "auth.jwt.key_size",
            "256",
            "--agent",
            "research-agent",
            "--derived-from",
            scenario.es256[:8],
            "--json",
        )
    )
    im = ok(cli("impact", scenario.es256[:8], "--json"))
    assert im["assertion"]["id"] == scenario.es256
    assert im["queries"] == 1
    assert [q["id"] for q in im["recent_queries"]] == [scenario.q_orch]
    assert im["agents"] == {"orchestrator": 1}
    assert {d["id"] for d in im["decisions"]} == {scenario.d_orch, scenario.d_deploy}
    assert [d["id"] for d in im["derived"]] == [child["id"]]
    rs = ok(cli("impact", scenario.rs256, "--json"))
    assert (rs["queries"], rs["agents"], rs["decisions"], rs["derived"]) == (0, {}, [], [])


def test_impact_human_output(cli: Cli, scenario: Scenario) -> None:
    out = done(cli("impact", scenario.issuer[:8]))
    assert "served in 2 audited queries, to " in out
    assert "orchestrator ×1" in out
    assert "deploy-agent ×1" in out
    assert "2 decisions cited those queries" in out
    assert "0 assertions derived from it" in out
    # the reads that served it, newest first, and how many more there are
    assert f"{scenario.q_deploy} at " in out
    assert out.index(scenario.q_deploy) < out.index(scenario.q_orch)
    assert "older" not in out
    one = done(cli("impact", scenario.issuer[:8], "--recent", "1"))
    assert f"{scenario.q_deploy} at " in one
    assert scenario.q_orch not in one
    assert "and 1 older (--recent lists up to the newest 1,000)" in one
    none = done(cli("impact", scenario.issuer[:8], "--recent", "0"))
    assert "q_" not in none
    assert "served in 2 audited queries" in none


def test_blame_shows_when_an_assertion_holds_in_the_world(cli: Cli) -> None:
    done(cli("init"))
    done(
        cli(
            "assert", "db.primary", "db-1", "--agent", "a",
            "--valid-from", "2026-11-01T00:00:00Z", "--valid-to", "2026-12-01T00:00:00Z",
        )
    )  # fmt: skip
    done(cli("assert", "db.replica", "db-2", "--agent", "a"))
    out = done(cli("blame", "db.primary"))
    assert "valid from 2026-11-01T00:00:00Z to 2026-12-01T00:00:00Z" in out
    assert "valid from" not in done(cli("blame", "db.replica"))


# -- pages -----------------------------------------------------------------------------


def test_a_full_page_says_how_to_ask_for_the_next(cli: Cli, home: Path, clock: ManualClock) -> None:
    with Ledger.init(home, clock=clock) as ledger:
        fill(ledger)  # seven of each, all at one time
    every = ok(cli("decisions", "--json", "--limit", "1000"))
    first = done(cli("decisions", "--limit", "4"))
    hint = f"4 shown; for older ones add --before {every[3]['seq']}"
    assert hint in first
    rest = done(cli("decisions", "--limit", "4", "--before", str(every[3]["seq"])))
    assert [d["id"] for d in every[4:]] == [line.split()[0] for line in rest.splitlines()]
    assert "shown; for older" not in rest  # three: not a full page
    for command in ("audit", "checks", "denials", "served svc"):
        rows = ok(cli(*command.split(), "--json", "--limit", "1000"))
        assert f"--before {rows[1]['seq']}" in done(cli(*command.split(), "--limit", "2"))
        older = ok(cli(*command.split(), "--json", "--before", str(rows[1]["seq"])))
        assert older == rows[2:], command
    notes = ok(cli("notifications", "--json", "--type", "correction"))
    shown = done(cli("notifications", "--type", "correction", "--limit", "3"))
    assert f"for older ones add --after {notes[2]['key']}" in shown
    after = ok(cli("notifications", "--json", "--type", "correction", "--after", notes[2]["key"]))
    assert after == notes[3:]
    # from a relative start, the line pins it: "--since 1h" read again two hours later
    # would start after every item (and list nothing), where the page below is meant
    since = clock.now().subtract(hours=1).format_iso()
    for command, cursor in (
        ("decisions", "before"), ("audit", "before"), ("checks", "before"),
        ("denials", "before"), ("notifications --type correction", "after"),
    ):  # fmt: skip
        args = [*command.split(), "--since", "1h", "--limit", "2"]
        rows = ok(cli(*command.split(), "--json", "--limit", "1000"))
        page = done(cli(*args))
        line = page.rsplit("for older ones, run it again with ", 1)[1].split("\n")[0]
        field = "seq" if cursor == "before" else "key"
        assert line.split() == ["--since", since, f"--{cursor}", str(rows[1][field])]
        clock.advance(TimeDelta(hours=2))
        older = ok(cli(*args, *line.split(), "--json", "--limit", "1000"))
        assert older == rows[2:], command
        clock.set(clock.now().subtract(hours=2))
    refused = cli("audit", "--before", "0")
    assert refused.code == 2  # bad input, as for every command
    assert refused.err.strip() == (
        "error: before must be a journal position (an item's seq), 1 or more"
    )
    unknown = cli("notifications", "--after", "nope")
    assert unknown.code == 2
    assert "no notification has the key 'nope'" in unknown.err
