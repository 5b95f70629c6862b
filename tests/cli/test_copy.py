"""`episteme copy`: a ledger moved between SQLite and PostgreSQL answers the same."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from episteme.ledger import Ledger
from episteme.ledger.copy import copy_ledger
from episteme.ledger.sql import base
from episteme.ledger.sqlite.store import SQLiteStore
from tests.cli.support import Scenario, assert_error, done, head, journal, ok, sql
from tests.conftest import Cli


def _busy(cli: Cli, s: Scenario) -> None:
    """More kinds of events on top of the scenario: moves, a correction, a lens, a token."""
    done(cli("approve", s.es256[:8], "--by", "alice"))
    done(cli("correct", s.es256[:8], "--by", "oncall", "--reason", "r", "--value", "RS256"))
    done(cli("lens", "define", "strict", "--by", "alice", "--min-confidence", "0.95"))
    done(cli("token", "create", "--name", "deploy-agent", "--role", "agent"))


def _reads(cli: Cli, where: str, s: Scenario) -> list[object]:
    """What an on-call person would ask, answered by the ledger at `where`."""
    asks = [
        ("audit",),
        ("blame", "auth.jwt.algorithm"),
        ("diff", "auth", "--from", "yesterday 14:00"),
        ("trace", s.d_deploy),
        ("impact", s.es256),
        ("lens", "list"),
    ]
    return [ok(cli(*ask, "--json", "--db", where, home_arg=False)) for ask in asks]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_sqlite_to_postgresql_and_back(
    cli: Cli, scenario: Scenario, home: Path, tmp_path: Path, pg_url: str
) -> None:
    _busy(cli, scenario)
    original = journal(cli)
    report = ok(cli("copy", "--from", str(home), "--to", pg_url, "--json", home_arg=False))
    password = urlsplit(pg_url).password
    assert password
    assert password not in json.dumps(report)
    assert report == {
        "events": len(original),
        "source": str(home / "ledger.db"),
        "destination": report["destination"],
        "head_seq": len(original),
        "head_hash": json.loads(original[-1])["hash"],
        "verified": True,
        "sessions": 0,
        "resumed": False,
    }
    assert report["destination"].startswith("postgresql://")
    assert journal(cli, pg_url) == original
    assert head(cli, pg_url) == head(cli)

    back = tmp_path / "back"
    out = done(cli("copy", "--from", pg_url, "--to", str(back), home_arg=False))
    assert out.strip() == (
        f"copied {len(original)} events from {report['destination']} to {back / 'ledger.db'}; "
        f"chain verified (head {report['head_hash'][:12]}…)"
    )
    assert journal(cli, str(back)) == original
    assert _reads(cli, str(back), scenario) == _reads(cli, pg_url, scenario)
    assert _reads(cli, pg_url, scenario) == _reads(cli, str(home), scenario)
    assert ok(cli("rebuild", "--json", "--db", pg_url, home_arg=False))["ok"] is True


def test_sqlite_to_sqlite_through_a_url(cli: Cli, scenario: Scenario, tmp_path: Path) -> None:
    dest = tmp_path / "other" / "copy.db"
    done(cli("copy", "--from", str(tmp_path / "home"), "--to", f"sqlite:///{dest}", home_arg=False))
    assert journal(cli, f"sqlite:///{dest}") == journal(cli)
    # a home directory in the URL stands for the ledger file in it
    home_url = f"sqlite:///{tmp_path / 'home'}"
    assert home_url.startswith("sqlite:////")  # absolute: the fourth slash is the root
    done(cli("copy", "--from", home_url, "--to", str(tmp_path / "third"), home_arg=False))
    assert journal(cli, str(tmp_path / "third")) == journal(cli)


def test_an_empty_ledger_copies_as_empty(cli: Cli, tmp_path: Path, pg_url: str) -> None:
    done(cli("init"))
    out = done(cli("copy", "--from", str(tmp_path / "home"), "--to", pg_url, home_arg=False))
    assert out.startswith("copied 0 events from ")
    assert out.strip().endswith("chain verified (empty journal)")
    assert head(cli, pg_url)["events"] == 0


def test_a_destination_that_holds_events_is_refused_and_left_alone(
    cli: Cli, scenario: Scenario, tmp_path: Path, pg_url: str
) -> None:
    done(cli("copy", "--from", str(tmp_path / "home"), "--to", pg_url, home_arg=False))
    other = tmp_path / "other"
    done(cli("init", "--db", str(other), home_arg=False))
    done(cli("assert", "db.primary", "db-1", "--agent", "x", "--db", str(other), home_arg=False))
    done(cli("init", "--db", str(tmp_path / "empty"), home_arg=False))
    before_pg, before_other = journal(cli, pg_url), journal(cli, str(other))

    r = cli("copy", "--from", str(other), "--to", pg_url, home_arg=False)
    assert_error(r, 2, "already holds 7 events", "give an empty database or a fresh home")
    r = cli("copy", "--from", pg_url, "--to", str(other), home_arg=False)
    assert_error(r, 2, str(other / "ledger.db"), "already holds 1 event:")
    assert journal(cli, pg_url) == before_pg
    assert journal(cli, str(other)) == before_other
    # an initialised but empty ledger is a fine destination
    done(cli("copy", "--from", str(other), "--to", str(tmp_path / "empty"), home_arg=False))
    assert journal(cli, str(tmp_path / "empty")) == before_other


def test_an_unreachable_postgresql_is_one_line(cli: Cli, scenario: Scenario, home: Path) -> None:
    url = f"postgresql://episteme:s3cret@127.0.0.1:{_closed_port()}/ledger"
    for args in (("--from", str(home), "--to", url), ("--from", url, "--to", str(home))):
        r = cli("copy", *args, home_arg=False)
        line = assert_error(r, 1, "is unavailable", "Connection refused")
        assert "s3cret" not in line


def test_a_postgresql_destination_that_does_not_exist_says_how_to_make_it(
    cli: Cli, scenario: Scenario, home: Path, pg_url: str
) -> None:
    # The help said "created when absent", and the error ended at libpq's FATAL.
    absent = pg_url.rsplit("/", 1)[0] + "/absent_ledger"
    r = cli("copy", "--from", str(home), "--to", absent, home_arg=False)
    line = assert_error(r, 1, "destination: ", 'database "absent_ledger" does not exist')
    assert line.endswith(
        ": create it first, as a role that may create databases: createdb --owner=postgres"
        " --encoding=UTF8 --template=template0 absent_ledger"
    ), line
    shown = done(cli("copy", "--help", home_arg=False))
    assert "a PostgreSQL database must exist" in " ".join(shown.split())
    # reading it (a source, a query) is no occasion to create it
    r = cli("copy", "--from", absent, "--to", str(home / "copy"), home_arg=False)
    assert "createdb" not in assert_error(r, 1, "source: ", "does not exist")


def test_a_missing_source_is_one_line(cli: Cli, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    r = cli("copy", "--from", str(tmp_path / "nothing"), "--to", str(dest), home_arg=False)
    assert_error(r, 1, "source: no ledger at", str(tmp_path / "nothing"))
    assert not dest.exists(), "a refused copy created its destination"


def test_the_same_ledger_is_refused(cli: Cli, scenario: Scenario, home: Path, pg_url: str) -> None:
    before = journal(cli)
    for to in (str(home), f"sqlite:///{home / 'ledger.db'}", f"{home}/../home"):
        r = cli("copy", "--from", str(home), "--to", to, home_arg=False)
        assert_error(r, 2, "the same ledger", "give another destination")
    assert journal(cli) == before
    done(cli("copy", "--from", str(home), "--to", pg_url, home_arg=False))
    r = cli("copy", "--from", pg_url, "--to", pg_url, home_arg=False)
    assert_error(r, 2, "the same ledger")


def test_a_broken_source_copies_nothing(
    cli: Cli, scenario: Scenario, home: Path, pg_url: str
) -> None:
    sql(home / "ledger.db", "UPDATE journal SET actor = 'mallory' WHERE seq = 3")
    r = cli("copy", "--from", str(home), "--to", pg_url, home_arg=False)
    assert_error(r, 1, "chain is broken at event 3", "nothing was copied")
    assert head(cli, pg_url)["events"] == 0
    done(cli("copy", "--from", pg_url, "--to", str(home.parent / "empty-copy"), home_arg=False))


def test_the_library_returns_the_report(scenario: Scenario, home: Path, tmp_path: Path) -> None:
    report = copy_ledger(home, tmp_path / "lib")
    assert report.verified
    assert report.events == report.head_seq == 7
    assert report.destination == str(tmp_path / "lib" / "ledger.db")


def test_a_nul_character_recorded_before_it_was_refused_stops_a_copy_to_postgresql(
    cli: Cli, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Earlier versions let SQLite record NUL characters, which PostgreSQL cannot store.
    home = tmp_path / "old"
    with monkeypatch.context() as m:
        m.setattr(base, "check_no_nul", lambda payload, text: None)  # as they did
        with Ledger.init(home) as led:
            led.assert_one(subject="svc.a", value="fine", agent="ops")
            led.assert_one(subject="svc.b", value=1, agent="ops", source="pasted\x00log")
            seq = led.store.head()[0]
    r = cli("copy", "--from", str(home), "--to", pg_url, home_arg=False)
    assert_error(r, 2, f"event {seq} (assertions.added)", "NUL", "nothing was stored")
    assert head(cli, pg_url)["events"] == 0
    exported = tmp_path / "old.jsonl"
    exported.write_text("".join(line + "\n" for line in journal(cli, str(home))))
    r = cli("import", str(exported), "--db", pg_url, home_arg=False)
    assert_error(r, 2, f"event {seq} (assertions.added)", "NUL", "nothing was stored")
    assert head(cli, pg_url)["events"] == 0
    # SQLite holds it, and takes a copy of the ledger as it is
    done(cli("copy", "--from", str(home), "--to", str(tmp_path / "copy"), home_arg=False))
    assert journal(cli, str(tmp_path / "copy")) == journal(cli, str(home))


def test_diagnosis_sessions_come_along(
    cli: Cli, scenario: Scenario, tmp_path: Path, pg_url: str
) -> None:
    # They are kept beside the journal, not projected from it: a copy left them behind,
    # and a session waiting for approval vanished.
    source = tmp_path / "home"
    with Ledger.open(source) as ledger:
        session = {
            "id": "s_" + "1" * 24, "status": "waiting_for_approval",
            "problem": "db connections failing", "environment": "prod", "context": "{}",
            "requester": "oncall", "plan": '{"steps": []}', "approved": None,
            "decided_by": None, "reason": None, "result": None, "error": None,
            "incident": None, "created_at": 1_795_000_000_000_000,
            "updated_at": 1_795_000_000_500_000, "expires_at": 1_795_003_600_000_000,
        }  # fmt: skip
        ledger.store.save_diagnosis_session(session)
        for n in range(2):
            ledger.store.add_diagnosis_event(
                session["id"], 1_795_000_000_000_000 + n, f'{{"n": {n}}}'
            )
        events = ledger.store.diagnosis_timed_events(session["id"])
    out = done(cli("copy", "--from", str(source), "--to", pg_url, home_arg=False))
    assert "events and 1 diagnosis session from" in out
    with Ledger.open(pg_url) as copied:
        assert copied.store.diagnosis_session(session["id"]) == session
        assert copied.store.diagnosis_timed_events(session["id"]) == events


def test_a_copy_stopped_among_the_sessions_is_finished_by_copying_again(
    cli: Cli, scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sessions are copied after the journal's transaction, a few rows at a time: a copy
    # stopped there (SIGTERM after 100 of 1,500) left a destination with the whole journal
    # and some sessions, one cut short, and copying again was refused ("already holds").
    source, dest = tmp_path / "home", tmp_path / "dest"
    with Ledger.open(source) as ledger:
        for s in range(3):
            row = {
                "id": f"s_{s:024d}", "status": "done", "problem": f"problem {s}",
                "environment": "prod", "context": "{}", "requester": "oncall",
                "plan": '{"steps": []}', "approved": True, "decided_by": "oncall",
                "reason": None, "result": "{}", "error": None, "incident": None,
                "created_at": 1_795_000_000_000_000 + s, "updated_at": 1_795_000_000_500_000,
                "expires_at": 1_795_003_600_000_000,
            }  # fmt: skip
            ledger.store.save_diagnosis_session(row)
            for n in range(4):
                ledger.store.add_diagnosis_event(row["id"], 1_795_000_000_000_000 + n, f"{n}")
        sessions = {
            r["id"]: (r, ledger.store.diagnosis_timed_events(r["id"]))
            for r in ledger.store.diagnosis_sessions(limit=10)
        }
    appended = []
    add = SQLiteStore.add_diagnosis_event

    def stops(self: SQLiteStore, session_id: str, at_us: int, event: str) -> int:
        if len(appended) == 6:  # in the second session
            raise KeyboardInterrupt
        appended.append(event)
        return add(self, session_id, at_us, event)

    monkeypatch.setattr(SQLiteStore, "add_diagnosis_event", stops)
    with pytest.raises(KeyboardInterrupt):
        copy_ledger(source, dest)
    monkeypatch.setattr(SQLiteStore, "add_diagnosis_event", add)
    out = done(cli("copy", "--from", str(source), "--to", str(dest), home_arg=False))
    assert "found the journal copied already; finished the copy (copied 0 events and 3" in out
    assert journal(cli, str(dest)) == journal(cli, str(source))
    with Ledger.open(dest) as copied:
        for sid, (row, events) in sessions.items():
            assert copied.store.diagnosis_session(sid) == row
            assert copied.store.diagnosis_timed_events(sid) == events


def test_copying_again_never_takes_back_what_a_finished_copy_went_on_to_do(
    cli: Cli, scenario: Scenario, tmp_path: Path
) -> None:
    # Copying again onto a finished copy (its head still the source's) wrote the source's
    # session rows over the destination's: a session approved there went back to waiting.
    source, dest = tmp_path / "home", tmp_path / "dest"
    row = {
        "id": "s_" + "2" * 24, "status": "waiting_for_approval", "problem": "p",
        "environment": "prod", "context": "{}", "requester": "oncall", "plan": "{}",
        "approved": None, "decided_by": None, "reason": None, "result": None, "error": None,
        "incident": None, "created_at": 1_795_000_000_000_000,
        "updated_at": 1_795_000_000_000_000, "expires_at": 1_795_003_600_000_000,
    }  # fmt: skip
    with Ledger.open(source) as ledger:
        ledger.store.save_diagnosis_session(row)
        ledger.store.add_diagnosis_event(row["id"], 1_795_000_000_000_000, "asked")
    done(cli("copy", "--from", str(source), "--to", str(dest), home_arg=False))
    went_on = row | {"status": "done", "decided_by": "oncall"}
    with Ledger.open(dest) as copied:
        copied.store.save_diagnosis_session(went_on)
        copied.store.add_diagnosis_event(row["id"], 1_795_000_000_000_001, "approved here")
    done(cli("copy", "--from", str(source), "--to", str(dest), home_arg=False))
    with Ledger.open(dest) as copied:
        assert copied.store.diagnosis_session(row["id"]) == went_on
        assert [e for _, _, e in copied.store.diagnosis_timed_events(row["id"])] == [
            "asked",
            "approved here",
        ]
    # and a source that recorded more since an earlier copy is named as such
    with Ledger.open(source) as ledger:
        ledger.assert_one(subject="svc.b", value=1, agent="a")
    r = cli("copy", "--from", str(source), "--to", str(dest), home_arg=False)
    assert_error(r, 2, "holds this ledger's journal to event 7 (an earlier copy)", "1 more")


def test_copying_again_after_a_failed_copy_vacuums_what_it_left(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy stopped part way left the tables empty but full of dead rows, planned as
    # none: copying again took 18 times as long, or never ended, until a VACUUM ANALYZE.
    home = tmp_path / "old"
    with monkeypatch.context() as m:
        m.setattr(base, "check_no_nul", lambda payload, text: None)
        with Ledger.init(home) as led:
            for n in range(300):
                led.assert_one(subject=f"svc.s{n}", value=n, agent="ops")
            led.assert_one(subject="svc.b", value=1, agent="ops", source="pasted\x00log")
    with pytest.raises(Exception, match="NUL"):
        copy_ledger(home, pg_url)  # fails at its last event: 300 rows rolled back
    good = tmp_path / "good"
    with Ledger.init(good) as led:
        led.assert_one(subject="svc.a", value="fine", agent="ops")
    with psycopg.connect(pg_url, autocommit=True) as admin:
        before = admin.execute(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'assertions'"
        ).fetchone()
    assert copy_ledger(good, pg_url).events == 1
    with psycopg.connect(pg_url, autocommit=True) as admin:
        after = admin.execute(
            "SELECT vacuum_count, analyze_count FROM pg_stat_user_tables"
            " WHERE relname = 'assertions'"
        ).fetchone()
    assert before is not None
    assert after is not None
    assert after[0] > before[0]  # vacuumed before the import filled it
    assert after[1] >= 1
    # a ledger with events is refused as it was, and not vacuumed first
    with Ledger.open(pg_url) as led, pytest.raises(Exception, match="is not empty"):
        led.store.import_events([])
    with psycopg.connect(pg_url, autocommit=True) as admin:
        again = admin.execute(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'assertions'"
        ).fetchone()
    assert again == (after[0],)
