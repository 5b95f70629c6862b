"""Every write and read command through the CLI, with `--json` checked field by field.

Investigation commands are in test_investigate.py, integrity and moving a ledger in
test_integrity.py, refusals in test_errors.py, help, docs and the demo in test_meta.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from whenever import Instant, TimeDelta

from episteme.timeutil import ManualClock
from tests.cli.support import (
    AFTERNOON,
    EVENING,
    MORNING,
    ONCALL,
    Scenario,
    done,
    journal,
    ok,
)
from tests.conftest import Cli

HEX = set("0123456789abcdef")


def _events(cli: Cli) -> list[dict[str, object]]:
    return [json.loads(line) for line in journal(cli)]


# -- init ------------------------------------------------------------------------------


def test_init_creates_an_empty_ledger(cli: Cli, home: Path) -> None:
    data = ok(cli("init", "--json"))
    assert data == {"home": str(home), "db": f"sqlite:///{home / 'ledger.db'}"}
    assert (home / "ledger.db").is_file()
    assert ok(cli("verify", "--json")) == {
        "ok": True,
        "events": 0,
        "head": None,
        "first_bad_seq": None,
        "problem": None,
    }
    assert journal(cli) == []


def test_init_human_output_names_the_file(cli: Cli, home: Path) -> None:
    r = cli("init")
    assert r.code == 0, r.err
    assert r.out.strip() == f"created an empty ledger in {home / 'ledger.db'}"
    assert r.err == ""


def test_home_can_come_from_the_environment(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_home = tmp_path / "from-env"
    monkeypatch.setenv("EPISTEME_HOME", str(env_home))
    assert ok(cli("init", "--json", home_arg=False))["home"] == str(env_home)
    assert (env_home / "ledger.db").is_file()


# -- assert ----------------------------------------------------------------------------


def test_assert_one_returns_the_recorded_assertion(cli: Cli, clock: ManualClock) -> None:
    clock.set(MORNING)
    done(cli("init"))
    clock.advance(TimeDelta(minutes=7))
    [a] = ok(
        cli(
            "assert",
            "auth.jwt.algorithm",
            "RS256",
            "--agent",
            "platform-team",
            "--lifecycle",
            "approved",
            "--confidence",
            "0.92",
            "--source",
            "runbook://auth/jwt",
            "--evidence",
            "prod config",
            "--epoch",
            "platform-baseline",
            "--json",
        )
    )
    assert len(a["id"]) == 64
    assert set(a["id"]) <= HEX
    assert a == {
        "id": a["id"],
        "subject": "auth.jwt.algorithm",
        "value": "RS256",
        "kind": "fact",
        "agent": "platform-team",
        "source": "runbook://auth/jwt",
        "evidence": "prod config",
        "epoch": "platform-baseline",
        "derived_from": [],
        "valid_from": None,
        "valid_to": None,
        "recorded_at": "2026-11-21T09:07:00Z",
        "lifecycle": "approved",
        "confidence": 0.92,
    }
    [event] = _events(cli)
    assert event["kind"] == "assertions.added"
    assert event["actor"] == "platform-team"


def test_assert_defaults_and_human_output(cli: Cli) -> None:
    done(cli("init"))
    r = cli("assert", "auth.jwt.algorithm", "ES256", "--agent", "research-agent")
    assert r.code == 0, r.err
    [a] = ok(cli("query", "auth", "--agent", "x", "--lens", "all", "--json"))["items"]
    a = a["assertion"]
    assert (a["lifecycle"], a["kind"], a["confidence"]) == ("proposed", "fact", 1.0)
    assert r.out.strip() == f"{a['id']}  auth.jwt.algorithm = ES256 (proposed)"


def test_assert_reads_json_values_and_keeps_plain_strings(cli: Cli, home: Path) -> None:
    done(cli("init"))
    cases = {
        "svc.replicas": ("3", 3),
        "svc.tls": ("true", True),
        "svc.owner": ("null", None),
        "svc.ports": ("[80, 443]", [80, 443]),
        "svc.limits": ('{"cpu": "2", "mem": [1, 2]}', {"cpu": "2", "mem": [1, 2]}),
        "svc.code": ("007", "007"),
        "svc.quoted": ('"42"', "42"),
        "svc.name": ("auth service", "auth service"),
        "svc.emoji": ("x :smile: [bold]y[/bold]", "x :smile: [bold]y[/bold]"),
    }
    for subject, (text, expected) in cases.items():
        [a] = ok(cli("assert", subject, text, "--agent", "ops", "--json"))
        assert a["value"] == expected, subject
    # A value that starts with '-' goes after `--`, as for any command line.
    opts = ("assert", "--agent", "ops", "--json", "--home", str(home), "--")
    [neg] = ok(cli(*opts, "svc.ratio", "-0.5", home_arg=False))
    assert neg["value"] == -0.5
    [dash] = ok(cli(*opts, "svc.flag", "-x", home_arg=False))
    assert dash["value"] == "-x"
    cases |= {"svc.ratio": ("-0.5", -0.5), "svc.flag": ("-x", "-x")}
    items = ok(cli("query", "svc", "--agent", "ops", "--lens", "all", "--json"))["items"]
    assert {i["assertion"]["subject"]: i["assertion"]["value"] for i in items} == {
        s: v for s, (_, v) in cases.items()
    }


def test_assert_kind_derivation_and_validity(cli: Cli, clock: ManualClock) -> None:
    clock.set(MORNING)
    done(cli("init"))
    [parent] = ok(cli("assert", "net.vpc.cidr", "10.0.0.0/16", "--agent", "a", "--json"))
    [child] = ok(
        cli(
            "assert",
            "net.vpc.subnets",
            "[1, 2]",
            "--agent",
            "planner",
            "--kind",
            "observation",
            "--derived-from",
            parent["id"][:8],
            "--valid-from",
            "2026-11-20T00:00:00Z",
            "--valid-to",
            "2h",
            "--json",
        )
    )
    assert child["kind"] == "observation"
    assert child["derived_from"] == [parent["id"]]
    assert child["valid_from"] == "2026-11-20T00:00:00Z"
    assert child["valid_to"] == "2026-11-21T07:00:00Z"


def test_assert_batch_from_a_file_is_one_event(cli: Cli, tmp_path: Path) -> None:
    done(cli("init"))
    [old] = ok(
        cli("assert", "db.primary", "db-1", "--agent", "ops", "--lifecycle", "approved", "--json")
    )
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        '{"subject": "db.primary", "value": "db-2", "lifecycle": "approved"}\n'
        "\n"
        '{"subject": "db.replicas", "value": 2, "confidence": 0.5, "epoch": "import-1"}\n'
        '{"subject": "db.engine", "value": {"name": "postgres"}, "agent": "scanner"}\n'
    )
    added = ok(cli("assert", "--batch", str(batch), "--agent", "importer", "--json"))
    assert [(a["subject"], a["value"], a["agent"]) for a in added] == [
        ("db.primary", "db-2", "importer"),
        ("db.replicas", 2, "importer"),
        ("db.engine", {"name": "postgres"}, "scanner"),
    ]
    assert [a["lifecycle"] for a in added] == ["approved", "proposed", "proposed"]
    assert added[1]["confidence"] == 0.5
    assert added[1]["epoch"] == "import-1"
    events = _events(cli)
    assert len(events) == 2
    assert events[1]["actor"] == "importer"
    # Approving db-2 in the batch superseded db-1.
    everything = ok(cli("query", "db.primary", "--agent", "x", "--lens", "all", "--json"))
    states = {i["assertion"]["id"]: i["assertion"]["lifecycle"] for i in everything["items"]}
    assert states == {old["id"]: "superseded", added[0]["id"]: "approved"}


def test_assert_batch_from_stdin(cli: Cli) -> None:
    done(cli("init"))
    lines = "\n".join(
        json.dumps({"subject": f"feature.flag{n}", "value": n % 2 == 0}) for n in range(5)
    )
    r = cli("assert", "--batch", "-", "--agent", "flags-bot", stdin=lines + "\n")
    assert r.code == 0, r.err
    assert r.out.strip() == "recorded 5 assertions in one transaction"
    items = ok(cli("query", "feature", "--agent", "x", "--lens", "all", "--json"))["items"]
    assert sorted((i["assertion"]["subject"], i["assertion"]["value"]) for i in items) == [
        (f"feature.flag{n}", n % 2 == 0) for n in range(5)
    ]
    assert len(journal(cli)) == 2  # one batch, one query


def test_a_batch_takes_the_command_lines_options_for_what_its_lines_leave_out(
    cli: Cli, tmp_path: Path
) -> None:
    # --epoch and the rest were dropped for a batch: `epoch show` then found no epoch
    done(cli("init"))
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        '{"subject": "db.a", "value": 1}\n'
        '{"subject": "db.b", "value": 2, "epoch": "other", "confidence": 0.9}\n'
    )
    added = ok(
        cli(
            "assert", "--batch", str(batch), "--agent", "loader", "--epoch", "bulk-1",
            "--confidence", "0.6", "--source", "runbook.md", "--kind", "observation",
            "--lifecycle", "approved", "--evidence", "read it", "--valid-from", "2026-11-01",
            "--json",
        )
    )  # fmt: skip
    a, b = added
    assert (a["epoch"], a["confidence"], b["epoch"], b["confidence"]) == (
        "bulk-1",
        0.6,
        "other",
        0.9,
    )
    for x in added:
        assert (x["source"], x["kind"], x["lifecycle"]) == ("runbook.md", "observation", "approved")
        assert (x["evidence"], x["valid_from"]) == ("read it", "2026-11-01T00:00:00Z")
    shown = ok(cli("epoch", "show", "bulk-1", "--json"))
    assert [x["id"] for x in shown["assertions"]] == [a["id"]]
    assert "the options given here fill in what a line leaves out" in " ".join(
        done(cli("assert", "--help")).split()
    )


# -- approve, deprecate, reject --------------------------------------------------------


def _lifecycles(cli: Cli, subject: str) -> dict[str, str]:
    data = ok(cli("query", subject, "--agent", "checker", "--lens", "all", "--json"))
    return {i["assertion"]["id"]: i["assertion"]["lifecycle"] for i in data["items"]}


def test_approve_supersedes_the_previous_value(cli: Cli, scenario: Scenario) -> None:
    a = ok(cli("approve", scenario.es256[:10], "--by", "alice", "--reason", "rotated", "--json"))
    assert a["id"] == scenario.es256
    assert a["lifecycle"] == "approved"
    assert a["value"] == "ES256"
    assert a["agent"] == "research-agent"  # who asserted it, not who approved it
    assert _lifecycles(cli, "auth.jwt.algorithm") == {
        scenario.rs256: "superseded",
        scenario.es256: "approved",
    }
    last = json.loads(journal(cli)[-2])  # the query above is the last event
    assert last["kind"] == "assertion.moved"
    assert last["actor"] == "alice"
    assert last["payload"]["reason"] == "rotated"
    assert last["payload"]["superseded"] == [scenario.rs256]


def test_approve_human_output(cli: Cli, scenario: Scenario) -> None:
    r = cli("approve", scenario.es256[:10], "--by", "alice")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [  # and the value it displaced, said
        f"{scenario.es256}  auth.jwt.algorithm = ES256 is now approved",
        f"{scenario.rs256}  auth.jwt.algorithm = RS256 is now superseded by it",
    ]
    blamed = done(cli("blame", scenario.es256))
    assert f"superseding {scenario.rs256}" in blamed
    r = cli("approve", scenario.issuer[:10], "--by", "alice")  # approved already: refused
    assert r.code == 2
    [proposed] = ok(cli("assert", "auth.jwt.ttl", "300", "--agent", "a", "--json"))
    r = cli("approve", proposed["id"], "--by", "alice")  # nothing before it: one line
    assert r.out.splitlines() == [f"{proposed['id']}  auth.jwt.ttl = 300 is now approved"]


def test_deprecate_an_approved_assertion(cli: Cli, scenario: Scenario) -> None:
    a = ok(cli("deprecate", scenario.issuer, "--by", "alice", "--json"))
    assert (a["id"], a["lifecycle"]) == (scenario.issuer, "deprecated")
    assert _lifecycles(cli, "auth.jwt.issuer") == {scenario.issuer: "deprecated"}
    answer = ok(cli("query", "auth.jwt.issuer", "--agent", "deploy-agent", "--json"))
    assert answer["items"] == []
    assert answer["hidden"]["by_lifecycle"] == {"deprecated": 1}


def test_reject_a_proposal(cli: Cli, scenario: Scenario) -> None:
    a = ok(cli("reject", scenario.es256[:6], "--by", "alice", "--reason", "unreviewed", "--json"))
    assert (a["id"], a["lifecycle"]) == (scenario.es256, "rejected")
    assert _lifecycles(cli, "auth.jwt.algorithm") == {
        scenario.rs256: "approved",
        scenario.es256: "rejected",
    }
    [blame] = ok(cli("blame", scenario.es256, "--json"))
    last = blame["history"][-1]
    assert (last["prev_lifecycle"], last["lifecycle"]) == ("proposed", "rejected")
    assert (last["actor"], last["reason"]) == ("alice", "unreviewed")


# -- query -----------------------------------------------------------------------------


def test_query_default_lens_shows_approved_and_says_what_it_hid(
    cli: Cli, scenario: Scenario
) -> None:
    ans = ok(cli("query", "auth.jwt", "--agent", "deploy-agent", "--json"))
    assert ans["query_id"].startswith("q_")
    assert len(ans["query_id"]) == 26
    assert (ans["agent"], ans["lens"], ans["subject"]) == ("deploy-agent", "approved", "auth.jwt")
    assert ans["as_of"] is None
    assert ans["text"] is None
    assert ans["asked_at"] == "2026-11-22T03:00:00Z"
    shown = {i["assertion"]["subject"]: i["assertion"]["value"] for i in ans["items"]}
    assert shown == {"auth.jwt.algorithm": "RS256", "auth.jwt.issuer": "https://auth.internal"}
    assert all(i["score"] is None for i in ans["items"])
    assert ans["hidden"] == {
        "count": 1,
        "by_lifecycle": {"proposed": 1},
        "by_reason": {"lifecycle": 1},
        "ids": [scenario.es256],
    }
    assert ans["summary"] == "1 proposed assertion hidden"
    assert isinstance(ans["latency_us"], int)
    # The read is audited under its receipt.
    [audited] = ok(cli("audit", "--agent", "deploy-agent", "--since", "1m", "--json"))
    assert audited["id"] == ans["query_id"]


def test_query_lenses(cli: Cli, scenario: Scenario) -> None:
    def values(lens: str) -> list[tuple[str, object]]:
        ans = ok(cli("query", "auth.jwt.algorithm", "--agent", "a", "--lens", lens, "--json"))
        assert ans["lens"] == lens
        return [(i["assertion"]["value"], i["score"]) for i in ans["items"]]

    assert values("latest") == [("ES256", None)]
    assert values("all") == [("RS256", None), ("ES256", None)]
    # consensus ranks by confidence x trust (prior trust 0.5).
    assert values("consensus") == [("RS256", 0.46), ("ES256", 0.435)]


def test_query_at_a_past_time(cli: Cli, scenario: Scenario) -> None:
    before = ok(
        cli(
            "query",
            "auth.jwt.algorithm",
            "--agent",
            "oncall",
            "--lens",
            "latest",
            "--at",
            "14:00",
            "--json",
        )
    )
    assert before["as_of"] == "2026-11-21T14:00:00Z"
    assert [i["assertion"]["value"] for i in before["items"]] == ["RS256"]
    after = ok(
        cli(
            "query",
            "auth.jwt.algorithm",
            "--agent",
            "oncall",
            "--lens",
            "latest",
            "--at",
            EVENING.format_iso(),
            "--json",
        )
    )
    assert after["as_of"] == "2026-11-21T20:40:00Z"
    assert [i["assertion"]["value"] for i in after["items"]] == ["ES256"]
    # Before anything was recorded, nothing is shown.
    empty = ok(cli("query", "auth", "--agent", "oncall", "--at", "2026-11-20", "--json"))
    assert empty["items"] == []
    assert empty["summary"] == "nothing hidden"


def test_query_text_search(cli: Cli, scenario: Scenario) -> None:
    ans = ok(cli("query", "--text", "rfc7518", "--agent", "oncall", "--lens", "all", "--json"))
    assert ans["subject"] is None
    assert ans["text"] == "rfc7518"
    assert [i["assertion"]["id"] for i in ans["items"]] == [scenario.es256]
    within = ok(cli("query", "auth", "--text", "RS256", "--agent", "oncall", "--json"))
    assert [i["assertion"]["id"] for i in within["items"]] == [scenario.rs256]
    # both filters in the title: "auth" alone read as if auth held nothing
    none = done(cli("query", "auth", "--text", "zzz [b]", "--agent", "oncall"))
    assert none.startswith("auth with text 'zzz [b]': no assertion shown by lens 'approved'\n")
    assert "auth with text 'RS256' through lens" in done(
        cli("query", "auth", "--text", "RS256", "--agent", "oncall")
    )


def test_query_human_output(cli: Cli, scenario: Scenario) -> None:
    r = cli("query", "auth.jwt.algorithm", "--agent", "deploy-agent")
    assert r.code == 0, r.err
    assert "auth.jwt.algorithm through lens 'approved'" in r.out
    assert "RS256" in r.out
    assert "ES256" not in r.out
    assert "1 proposed assertion hidden" in r.out
    [q] = ok(cli("audit", "--agent", "deploy-agent", "--since", "1m", "--json"))
    assert f"query_id {q['id']}" in r.out


def test_query_a_prefix_does_not_cover_a_sibling(cli: Cli) -> None:
    done(cli("init"))
    done(cli("assert", "auth.mode", "sso", "--agent", "a", "--lifecycle", "approved"))
    done(cli("assert", "authz.mode", "rbac", "--agent", "a", "--lifecycle", "approved"))
    for prefix in ("auth", "auth.", "auth.*"):
        ans = ok(cli("query", prefix, "--agent", "a", "--json"))
        assert [i["assertion"]["subject"] for i in ans["items"]] == ["auth.mode"], prefix
        assert ans["subject"] == "auth"


# -- decide ----------------------------------------------------------------------------


def test_decide_cites_full_query_ids(cli: Cli, scenario: Scenario) -> None:
    [q] = ok(cli("audit", "--agent", "deploy-agent", "--json"))
    d = ok(
        cli(
            "decide",
            "rolled back auth-service",
            "--agent",
            "oncall",
            "--query",
            q["id"][:8],
            "--query",
            scenario.q_orch,
            "-q",
            scenario.q_orch,
            "--json",
        )
    )
    assert d["id"].startswith("d_")
    assert (d["agent"], d["action"]) == ("oncall", "rolled back auth-service")
    assert d["query_ids"] == sorted({scenario.q_orch, scenario.q_deploy})
    assert d["at"] == "2026-11-22T03:00:00Z"
    assert d["context"] == {}
    assert d["seq"] == len(journal(cli))


def test_decide_without_queries_and_human_output(cli: Cli, scenario: Scenario) -> None:
    r = cli("decide", "paged the platform team", "--agent", "oncall")
    assert r.code == 0, r.err
    [line] = r.out.splitlines()
    assert line.startswith("d_")
    assert line.endswith("paged the platform team  (cites nothing)")


def test_scenario_decisions_cite_their_reads(cli: Cli, scenario: Scenario) -> None:
    tr = ok(cli("trace", scenario.d_deploy, "--json"))
    assert tr["decision"]["query_ids"] == sorted([scenario.q_orch, scenario.q_deploy])
    assert tr["decision"]["at"] == "2026-11-21T21:00:00Z"


# -- correct ---------------------------------------------------------------------------


def test_correct_confirms_the_approved_value_and_adds_a_constraint(
    cli: Cli, scenario: Scenario
) -> None:
    c = ok(
        cli(
            "correct",
            scenario.es256[:12],
            "--by",
            "oncall",
            "--reason",
            "production verifies RS256",
            "--value",
            "RS256",
            "--forbid",
            "--json",
        )
    )
    assert c["corrected"]["id"] == scenario.es256
    assert c["corrected"]["lifecycle"] == "rejected"
    assert c["replacement"]["id"] == scenario.rs256  # the approved RS256 is confirmed
    assert c["replacement"]["lifecycle"] == "approved"
    record = c["correction"]
    assert record["id"].startswith("x_")
    assert (record["assertion_id"], record["by"]) == (scenario.es256, "oncall")
    assert record["reason"] == "production verifies RS256"
    assert record["replacement_id"] == scenario.rs256
    assert record["constraint_id"] == c["constraint"]["id"]
    k = c["constraint"]
    assert k["id"].startswith("c_")
    assert (k["scope"], k["forbid"], k["prefer"]) == ("auth.jwt.algorithm", ["ES256"], "RS256")
    assert k["origin"] == f"correction:{record['id']}"
    assert c["superseded"] == []
    ans = ok(cli("query", "auth.jwt.algorithm", "--agent", "deploy-agent", "--json"))
    assert [i["assertion"]["value"] for i in ans["items"]] == ["RS256"]
    assert ans["summary"] == "1 rejected assertion hidden"
    latest = ok(cli("query", "auth.jwt.algorithm", "--agent", "a", "--lens", "latest", "--json"))
    assert [i["assertion"]["value"] for i in latest["items"]] == ["RS256"]


def test_correct_with_a_new_value_records_and_supersedes(cli: Cli, scenario: Scenario) -> None:
    c = ok(
        cli(
            "correct",
            scenario.issuer[:8],
            "--by",
            "oncall",
            "--reason",
            "moved to the new IdP",
            "--value",
            '{"url": "https://idp.internal", "port": 443}',
            "--json",
        )
    )
    new = c["replacement"]
    assert new["id"] not in (scenario.issuer, scenario.rs256)
    assert new["value"] == {"url": "https://idp.internal", "port": 443}
    assert (new["agent"], new["lifecycle"]) == ("oncall", "approved")
    assert new["derived_from"] == [scenario.issuer]
    assert new["source"] == f"correction:{c['correction']['id']}"
    assert new["evidence"] == "moved to the new IdP"
    assert c["constraint"] is None
    assert _lifecycles(cli, "auth.jwt.issuer") == {
        scenario.issuer: "rejected",
        new["id"]: "approved",
    }
    impact = ok(cli("impact", scenario.issuer, "--json"))
    assert [d["id"] for d in impact["derived"]] == [new["id"]]


def test_correct_without_a_value_and_human_output(cli: Cli, scenario: Scenario) -> None:
    r = cli("correct", scenario.es256[:12], "--by", "oncall", "--reason", "wrong", "--forbid")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].startswith(f"rejected {scenario.es256}  auth.jwt.algorithm = ES256  (x_")
    assert lines[1].startswith("constraint c_")
    assert lines[1].endswith("on auth.jwt.algorithm: forbid ES256")
    assert len(lines) == 2


# -- epochs ----------------------------------------------------------------------------


def test_epoch_show(cli: Cli, scenario: Scenario) -> None:
    data = ok(cli("epoch", "show", "rfc-research-1", "--json"))
    assert data["epoch"] == {
        "name": "rfc-research-1",
        "created_at": AFTERNOON.format_iso(),
        "created_by": "research-agent",
        "assertions": 1,
        "superseded_at": None,
        "superseded_by": None,
        "reason": None,
    }
    assert [a["id"] for a in data["assertions"]] == [scenario.es256]
    r = cli("epoch", "show", "platform-baseline")
    assert r.code == 0, r.err
    assert "epoch platform-baseline" in r.out
    assert scenario.rs256[:12] in r.out


def test_epoch_supersede_retracts_what_it_brought(cli: Cli, scenario: Scenario) -> None:
    data = ok(
        cli(
            "epoch",
            "supersede",
            "rfc-research-1",
            "--by",
            "oncall",
            "--reason",
            "bad research run",
            "--json",
        )
    )
    assert data == {"epoch": "rfc-research-1", "retracted": [scenario.es256]}
    assert _lifecycles(cli, "auth.jwt.algorithm") == {
        scenario.rs256: "approved",
        scenario.es256: "rejected",
    }
    shown = ok(cli("epoch", "show", "rfc-research-1", "--json"))
    assert shown["epoch"]["superseded_at"] == ONCALL.format_iso()
    assert shown["epoch"]["superseded_by"] == "oncall"
    assert shown["epoch"]["reason"] == "bad research run"
    assert [a["lifecycle"] for a in shown["assertions"]] == ["rejected"]
    # the table says so too, where only the JSON did
    out = done(cli("epoch", "show", "rfc-research-1"))
    assert f"made by research-agent at {AFTERNOON.format_iso()}; 1 assertion" in out
    assert f"superseded by oncall at {ONCALL.format_iso()}: bad research run" in out
    assert "superseded by" not in done(cli("epoch", "show", "platform-baseline"))


def test_epoch_supersede_human_output(cli: Cli, scenario: Scenario) -> None:
    r = cli("epoch", "supersede", "platform-baseline", "--by", "oncall", "--reason", "redo")
    assert r.code == 0, r.err
    assert r.out.strip() == "epoch platform-baseline superseded: 1 assertions retracted"


# -- lenses ----------------------------------------------------------------------------


def test_lens_define_list_and_query_through_it(cli: Cli, scenario: Scenario) -> None:
    data = ok(
        cli(
            "lens",
            "define",
            "sre-reviewed",
            "--by",
            "alice",
            "--lifecycle",
            "approved",
            "--lifecycle",
            "proposed",
            "--min-confidence",
            "0.9",
            "--source",
            "runbook://",
            "--source",
            "https://",
            "--pick",
            "newest",
            "--description",
            "reviewed by SRE",
            "--json",
        )
    )
    assert data["name"] == "sre-reviewed"
    spec = data["spec"]
    assert spec["lifecycles"] == ["approved", "proposed"]
    assert spec["min_confidence"] == 0.9
    assert spec["sources"] == ["runbook://", "https://"]
    assert (spec["pick"], spec["description"], spec["agents"]) == (
        "newest",
        "reviewed by SRE",
        None,
    )
    lenses = ok(cli("lens", "list", "--json"))
    assert list(lenses) == ["approved", "latest", "consensus", "all", "sre-reviewed"]
    assert lenses["sre-reviewed"] == spec
    assert lenses["approved"]["lifecycles"] == ["approved"]
    ans = ok(
        cli("query", "auth.jwt", "--agent", "deploy-agent", "--lens", "sre-reviewed", "--json")
    )
    assert ans["lens"] == "sre-reviewed"
    assert {i["assertion"]["id"] for i in ans["items"]} == {scenario.rs256, scenario.issuer}
    assert ans["hidden"]["by_reason"] == {"confidence": 1}  # ES256 at 0.87
    # the summary says why, as it says expiry: a proposal the lens shows was hidden
    assert ans["summary"] == "1 proposed assertion hidden (1 below the lens's confidence)"
    assert ans["hidden"]["ids"] == [scenario.es256]


def test_lens_define_by_agent_and_human_list(cli: Cli, scenario: Scenario) -> None:
    r = cli(
        "lens",
        "define",
        "research",
        "--by",
        "alice",
        "--agent",
        "research-agent",
        "--lifecycle",
        "proposed",
    )
    assert r.code == 0, r.err
    assert r.out.strip() == "lens research defined"
    ans = ok(cli("query", "auth", "--agent", "x", "--lens", "research", "--json"))
    assert [i["assertion"]["id"] for i in ans["items"]] == [scenario.es256]
    listing = cli("lens", "list")
    assert listing.code == 0, listing.err
    names = [line.split()[0] for line in listing.out.splitlines()]
    assert names == ["approved", "latest", "consensus", "all", "research"]
    # what a lens filters on is in the table, not only in the JSON
    done(
        cli(
            "lens", "define", "strict", "--by", "alice", "--min-confidence", "0.8",
            "--min-trust", "0.6", "--agent", "platform", "--source", "runbook://",
            "--description", "reviewed",
        )
    )  # fmt: skip
    strict = done(cli("lens", "list")).splitlines()[-1]
    assert strict.split("  ") == [
        "strict", "approved", "pick=all", "confidence ≥ 0.8", "trust ≥ 0.6",
        "agents platform", "sources runbook://", "reviewed",
    ]  # fmt: skip
    # defined again: said when it replaces filters (it said "defined", and they were gone)
    again = done(cli("lens", "define", "strict", "--by", "bob", "--min-confidence", "0.8"))
    assert again.startswith("lens strict replaced; it was {")
    assert '"min_trust":0.6' in again
    same = done(cli("lens", "define", "strict", "--by", "bob", "--min-confidence", "0.8"))
    assert same == "lens strict defined again, as it was\n"


def test_instant_helpers_agree_with_the_cli(cli: Cli, clock: ManualClock) -> None:
    """`recorded_at` is the clock's instant in RFC 3339, so tests can compare strings."""
    clock.set(Instant.parse_iso("2026-11-21T09:00:00.250Z"))
    done(cli("init"))
    [a] = ok(cli("assert", "x.y", "1", "--agent", "a", "--json"))
    assert a["recorded_at"] == "2026-11-21T09:00:00.25Z"


def test_lens_json_is_the_same_in_every_process(tmp_path: Path) -> None:
    """Sets in a lens are written sorted: the journal hashes them, whatever the hash seed."""
    script = (
        "import sys\n"
        "from episteme.cli import main\n"
        "home = sys.argv[1]\n"
        "for argv in (['init', '--home', home], ['lens', 'define', 'wide', '--by', 'a',"
        " '--lifecycle', 'rejected', '--lifecycle', 'approved', '--lifecycle', 'proposed',"
        " '--lifecycle', 'deprecated', '--agent', 'c', '--agent', 'a', '--agent', 'b',"
        " '--agent', 'd', '--home', home, '--json'], ['export', '--home', home]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
    )
    outputs = []
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "TZ": "UTC"}
        env.pop("EPISTEME_HOME", None)
        run = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / f"seed{seed}")],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        # init's line, lens define's JSON, then the one exported event.
        created, *defined, exported = run.stdout.splitlines()
        assert created.startswith("created an empty ledger")
        spec = json.loads("\n".join(defined))["spec"]
        assert spec["lifecycles"] == ["approved", "deprecated", "proposed", "rejected"]
        assert spec["agents"] == ["a", "b", "c", "d"]
        payload = json.loads(exported)["payload"]
        outputs.append(json.dumps(payload, sort_keys=True))
    assert len(set(outputs)) == 1
