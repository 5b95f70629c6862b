"""verify, rebuild, export and import through the CLI, on real SQLite files."""

from __future__ import annotations

import fcntl
import json
import sqlite3
from contextlib import closing
from pathlib import Path

from tests.cli.support import Scenario, done, head, journal, ok, sql
from tests.conftest import Cli

EVENT_KINDS = {
    "assertions.added",
    "assertion.moved",
    "assertion.corrected",
    "epoch.superseded",
    "query.served",
    "decision.recorded",
    "lens.defined",
    "constraint.added",
}


def _busy(cli: Cli, s: Scenario) -> None:
    """Every kind of write the CLI offers, on top of the scenario."""
    done(cli("approve", s.es256[:8], "--by", "alice"))
    done(cli("deprecate", s.issuer[:8], "--by", "alice"))
    done(cli("correct", s.es256[:8], "--by", "oncall", "--reason", "r", "--value", "RS256"))
    done(cli("epoch", "supersede", "platform-baseline", "--by", "oncall", "--reason", "redo"))
    done(cli("lens", "define", "strict", "--by", "alice", "--min-confidence", "0.95"))


# -- verify ----------------------------------------------------------------------------


def test_verify_reports_the_chain(cli: Cli, scenario: Scenario) -> None:
    lines = journal(cli)
    report = head(cli)
    assert report == {
        "ok": True,
        "events": len(lines),
        "head": json.loads(lines[-1])["hash"],
        "first_bad_seq": None,
        "problem": None,
    }
    assert report["events"] == 7  # 3 assertions, 2 queries, 2 decisions
    out = done(cli("verify"))
    assert out.strip() == f"chain ok: 7 events, head {report['head']}"


# -- rebuild ---------------------------------------------------------------------------


def test_rebuild_matches_the_journal(cli: Cli, scenario: Scenario) -> None:
    _busy(cli, scenario)
    events = head(cli)["events"]
    assert ok(cli("rebuild", "--json")) == {
        "ok": True,
        "events": events,
        "differences": {},
        "repaired": False,
    }
    out = done(cli("rebuild"))
    assert out.strip() == f"projections match the journal ({events} events)"


def test_rebuild_finds_and_repairs_a_tampered_projection(
    cli: Cli, home: Path, scenario: Scenario
) -> None:
    before = journal(cli)
    sql(
        home / "ledger.db",
        "UPDATE versions SET lifecycle = 'approved'"
        " WHERE arow = (SELECT rowid FROM assertions WHERE id = ?)",
        scenario.es256,
    )
    tampered = ok(cli("query", "auth.jwt.algorithm", "--agent", "a", "--lens", "all", "--json"))
    assert {i["assertion"]["lifecycle"] for i in tampered["items"]} == {"approved"}

    r = cli("rebuild")
    assert r.code == 1
    assert r.out == ""
    assert r.err.strip() == (
        "error: projections differ from the journal: versions: 2 rows;"
        " run `episteme rebuild --repair`"
    )
    r = cli("rebuild", "--json")
    assert r.code == 1
    assert r.json() == {
        "ok": False,
        "events": len(before) + 1,
        "differences": {"versions": 2},
        "repaired": False,
    }

    repaired = ok(cli("rebuild", "--repair", "--json"))
    assert repaired == {
        "ok": False,
        "events": len(before) + 1,
        "differences": {"versions": 2},
        "repaired": True,
    }
    assert ok(cli("rebuild", "--json"))["ok"] is True
    fixed = ok(cli("query", "auth.jwt.algorithm", "--agent", "a", "--lens", "all", "--json"))
    states = {i["assertion"]["id"]: i["assertion"]["lifecycle"] for i in fixed["items"]}
    assert states == {scenario.rs256: "approved", scenario.es256: "proposed"}
    # The journal was never touched: repairs replay it, they do not rewrite it.
    assert journal(cli)[: len(before)] == before
    assert head(cli)["ok"] is True


def test_rebuild_repair_human_output(cli: Cli, home: Path, scenario: Scenario) -> None:
    sql(home / "ledger.db", "DELETE FROM decisions")
    r = cli("rebuild", "--repair")
    assert r.code == 0, r.err
    assert r.out.strip() == "projections differ from the journal: decisions: 2 rows (repaired)"
    assert ok(cli("trace", scenario.d_deploy, "--json"))["root"] == scenario.d_deploy


# -- export and import -----------------------------------------------------------------


def test_export_writes_one_event_per_line(cli: Cli, scenario: Scenario, tmp_path: Path) -> None:
    _busy(cli, scenario)
    lines = journal(cli)
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for e in events:
        assert set(e) == {"seq", "at", "actor", "kind", "payload", "hash"}
        assert e["kind"] in EVENT_KINDS
        assert isinstance(e["at"], int)
        assert isinstance(e["payload"], dict)
        assert len(bytes.fromhex(e["hash"])) == 32
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert events[0]["kind"] == "assertions.added"
    assert events[0]["payload"]["assertions"][0]["id"] == scenario.rs256
    kinds = {e["kind"] for e in events}
    assert kinds >= EVENT_KINDS - {"constraint.added"}
    assert events[-1]["hash"] == head(cli)["head"]

    out = tmp_path / "journal.jsonl"
    r = cli("export", "-o", str(out))
    assert (r.code, r.out, r.err) == (0, "", "")
    assert out.read_text().splitlines() == lines


def test_an_export_removes_what_killed_exports_left_and_spares_a_running_one(
    cli: Cli, scenario: Scenario, tmp_path: Path
) -> None:
    # kill -9 during `export -o FILE` left a hidden part file (up to the journal's size),
    # and every rerun left it there
    out = tmp_path / "journal.jsonl"
    stale = tmp_path / ".journal.jsonl.k1ll3d.part"
    stale.write_text('{"seq": 1}\n')
    running = tmp_path / ".journal.jsonl.w0rk1n.part"
    running.write_text("")
    other = tmp_path / ".other.jsonl.k1ll3d.part"
    other.write_text("")
    with running.open() as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # an export under way holds its own
        r = cli("export", "-o", str(out))
    assert r.code == 0, r.err
    assert not stale.exists()
    assert running.exists()
    assert other.exists()  # another target's
    assert out.read_text().splitlines() == journal(cli)


def test_export_import_round_trip(cli: Cli, scenario: Scenario, tmp_path: Path) -> None:
    _busy(cli, scenario)
    dump = tmp_path / "journal.jsonl"
    done(cli("export", "--output", str(dump)))
    original = head(cli)

    other = tmp_path / "restored"
    imported = ok(cli("import", str(dump), "--home", str(other), "--json", home_arg=False))
    assert imported == {"imported": original["events"]}
    assert head(cli, str(other)) == original
    assert journal(cli, str(other)) == journal(cli)
    assert ok(cli("rebuild", "--home", str(other), "--json", home_arg=False))["ok"] is True

    # The restored ledger answers like the original (the reads below are audited in each).
    def read(*home: str) -> object:
        args = ("blame", "auth.jwt.algorithm", "--json")
        return ok(cli(*args, "--home", *home, home_arg=False) if home else cli(*args))

    assert read(str(other)) == read()
    lenses = ok(cli("lens", "list", "--home", str(other), "--json", home_arg=False))
    assert "strict" in lenses


def test_import_from_stdin_into_an_existing_empty_home(
    cli: Cli, scenario: Scenario, tmp_path: Path
) -> None:
    text = "\n".join(journal(cli)) + "\n\n"
    other = tmp_path / "fresh"
    done(cli("init", "--home", str(other), home_arg=False))
    r = cli("import", "-", "--home", str(other), home_arg=False, stdin=text)
    assert r.code == 0, r.err
    assert r.out.strip() == "imported 7 events; chain verified"
    assert head(cli, str(other)) == head(cli)


def test_import_of_an_empty_file_creates_an_empty_ledger(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    other = tmp_path / "other"
    assert ok(cli("import", str(empty), "--home", str(other), "--json", home_arg=False)) == {
        "imported": 0
    }
    assert head(cli, str(other))["events"] == 0


def test_rebuild_refuses_a_journal_whose_chain_is_broken(
    cli: Cli, home: Path, scenario: Scenario
) -> None:
    # An event changed on disk: a repair would copy the change into what agents are
    # served, so rebuild refuses, with or without --repair, and changes nothing.
    with closing(sqlite3.connect(home / "ledger.db")) as conn:
        (seq,) = conn.execute(
            "SELECT seq FROM journal WHERE kind = 'assertions.added' AND payload LIKE '%ES256%'"
        ).fetchone()
    sql(home / "ledger.db", "UPDATE journal SET payload = replace(payload, 'ES256', 'HS256')")
    before = ok(cli("query", "auth.jwt.algorithm", "--agent", "a", "--lens", "all", "--json"))
    for args in (("rebuild",), ("rebuild", "--repair")):
        r = cli(*args)
        assert r.code == 1, args
        assert r.out == ""
        assert r.err.startswith(f"error: the journal's chain is broken at event {seq} ("), r.err
        assert "restore the ledger from a backup" in r.err
        assert "--repair" not in r.err
    after = ok(cli("query", "auth.jwt.algorithm", "--agent", "a", "--lens", "all", "--json"))
    assert [i["assertion"] for i in after["items"]] == [i["assertion"] for i in before["items"]]


def test_export_of_a_damaged_event_is_one_line_naming_it(
    cli: Cli, home: Path, scenario: Scenario
) -> None:
    sql(home / "ledger.db", "UPDATE journal SET payload = '{\"subject\": ' WHERE seq = 3")
    r = cli("export")
    assert r.code == 1
    assert r.err.strip().startswith("error: event 3 cannot be read back, its payload is damaged")
    assert "Traceback" not in r.err
    verified = cli("verify")
    assert verified.code == 1
    assert "event 3" in verified.err
