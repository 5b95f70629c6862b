"""Commands that only read open the ledger read-only: a ledger on read-only media, or one
this user may not write, is verified, exported, copied and investigated, and reading
changes nothing in it (an older ledger's schema included)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from episteme.errors import StoreUnavailable
from episteme.ledger import Ledger
from episteme.ledger.sqlite import store as sqlite_store
from episteme.timeutil import ManualClock
from tests.backends import as_nobody, old_sqlite_ledger
from tests.cli.support import ONCALL, Scenario, assert_error, ok, runner
from tests.cli.test_migrate import _role
from tests.conftest import Cli, Result


def _asks(s: Scenario) -> list[tuple[str, ...]]:
    """Every command that only reads, as the on-call person would run it."""
    return [
        ("verify",),
        ("blame", "auth.jwt.algorithm"),
        ("trace", s.d_deploy),
        ("impact", s.es256),
        ("diff", "auth", "--from", "yesterday 14:00"),
        ("audit",),
        ("served", "auth.jwt.algorithm"),
        ("decisions",),
        ("epoch", "show", "rfc-research-1"),
        ("lens", "list"),
        ("trust",),
        ("conflicts",),
        ("notifications",),
        ("constraint", "list"),
        ("checks",),
        ("gardener", "status"),
        ("webhook", "list"),
        ("webhook", "deliveries"),
        ("token", "list"),
        ("denials",),
    ]


def _answers(home: Path, asks: list[tuple[str, ...]]) -> str:
    """Each ask's exit code and JSON (or its error), and the export, as one JSON text."""
    run = runner(home, ManualClock(ONCALL))
    said = []
    for ask in asks:
        r = run(*ask, "--json")
        said.append([list(ask), r.code, r.out if r.code == 0 else r.err])
    exported = run("export")
    said.append([["export"], exported.code, exported.out or exported.err])
    return json.dumps(said)


def _as_nobody(home: Path, *asks: tuple[str, ...]) -> list[Result]:
    """Each ask run on the ledger at `home` by a user without rights (see `as_nobody`)."""

    def run() -> str:
        cli = runner(home, ManualClock(ONCALL))
        return json.dumps([dataclasses.astuple(cli(*ask)) for ask in asks])

    return [Result(*said) for said in json.loads(as_nobody(run))]


def _live(home: Path) -> Ledger:
    """A new ledger at `home`, open, holding one assertion in its write-ahead log."""
    live = Ledger.init(home)
    live.assert_one(subject="auth.jwt.algorithm", value="RS256", agent="ops")
    assert (home / "ledger.db-wal").stat().st_size > 0
    return live


def _digest(home: Path) -> dict[str, str]:
    """The ledger's files, by name, with the digest of their bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.iterdir())}


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every user may enter (pytest's own are the owner's alone)."""
    where = Path(tempfile.mkdtemp(prefix="episteme-shared-"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        for inside, _, _ in os.walk(where):
            Path(inside).chmod(0o755)
        shutil.rmtree(where)


def _readable_only(home: Path) -> None:
    """The ledger's directory and files readable by all and writable by none (but root,
    whom `as_nobody` turns into a user without rights)."""
    for f in home.iterdir():
        f.chmod(0o444)
    home.chmod(0o555)


def test_every_reading_command_reads_a_ledger_this_user_may_not_write(
    scenario: Scenario, home: Path, shared: Path
) -> None:
    # It said "cannot open the ledger at …: unable to open database file (check that it
    # and its directory are writable by this user)" for every command, verify included:
    # a backup on read-only media, or the service's ledger read by the on-call person.
    theirs = shared / "home"
    shutil.copytree(home, theirs)
    for leftover in ("ledger.db-wal", "ledger.db-shm"):
        (theirs / leftover).unlink(missing_ok=True)  # as a stopped server leaves it
    _readable_only(theirs)
    asks = _asks(scenario)
    before = _digest(theirs)
    answers = json.loads(as_nobody(lambda: _answers(theirs, asks)))
    assert _digest(theirs) == before  # not a byte changed, and no file added
    for ask, code, out in answers:
        assert code == 0, f"{ask}: {out}"
    # the same answers as the owner gets from a ledger they may write
    assert json.loads(_answers(home, asks)) == answers
    blame = json.loads(answers[1][2])
    assert [v["assertion"]["value"] for v in blame] == ["RS256", "ES256"]
    assert answers[0][2].count('"ok": true') == 1
    assert len(answers[-1][2].splitlines()) == json.loads(answers[0][2])["events"]


def test_a_write_to_a_ledger_this_user_may_not_write_is_one_line(
    scenario: Scenario, home: Path, shared: Path
) -> None:
    theirs = shared / "home"
    shutil.copytree(home, theirs)
    _readable_only(theirs)
    before = _digest(theirs)

    [r] = _as_nobody(theirs, ("assert", "a.b", "1", "--agent", "x"))
    code, out, err = r.code, r.out, r.err
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert err.startswith("error: cannot ")
    assert str(theirs) in err
    assert _digest(theirs) == before


def test_a_live_ledger_is_read_with_its_latest_commits_through_its_shared_memory(
    shared: Path,
) -> None:
    # A server writing it: its newest commits are in the write-ahead log, which SQLite
    # reads through the -shm file the server keeps; the reader may write neither.
    theirs = shared / "home"
    with _live(theirs):
        _readable_only(theirs)
        [r] = _as_nobody(theirs, ("blame", "auth", "--json"))
        assert r.code == 0, r.err
        assert [v["assertion"]["value"] for v in r.json()] == ["RS256"]


def test_a_live_ledger_whose_shared_memory_this_user_cannot_open_is_refused(
    shared: Path,
) -> None:
    # Its -wal and -shm are the server's own (0600): the reader fell back to reading the
    # file as immutable, and answered from it without the server's newer commits.
    theirs = shared / "home"
    with _live(theirs):
        theirs.chmod(0o555)
        (theirs / "ledger.db").chmod(0o444)
        [r] = _as_nobody(theirs, ("blame", "auth", "--json"))
    assert (r.code, r.out) == (1, "")
    assert r.err.startswith(f"error: cannot read the ledger at {theirs / 'ledger.db'}: its")
    assert "give this user read access to the home's files (ledger.db-wal and" in r.err


def test_a_ledger_written_while_it_is_read_as_immutable_fails_the_read(shared: Path) -> None:
    # Read as it is on disk (no -shm, which the reader may not create), SQLite takes no
    # lock and sees no commit: a writer starting meanwhile changes pages under the read.
    theirs = shared / "home"
    with _live(theirs):
        pass  # closed: no -wal, no -shm, as a stopped server leaves it
    _readable_only(theirs)
    opened_r, opened_w = os.pipe()
    written_r, written_w = os.pipe()

    def write_meanwhile() -> None:
        os.read(opened_r, 1)
        for inside in (theirs, *theirs.iterdir()):
            inside.chmod(0o755 if inside.is_dir() else 0o644)
        with Ledger.open(theirs) as writer:
            writer.assert_one(subject="auth.jwt.issuer", value="https://a", agent="ops")
        os.write(written_w, b"1")

    def read() -> str:
        with Ledger.open(theirs, read_only=True) as ledger:
            first = ledger.verify().events
            os.write(opened_w, b"1")
            os.read(written_r, 1)
            try:
                ledger.verify()
            except StoreUnavailable as exc:
                return f"{first} then {exc.message}"
            return f"{first} then read"

    writer = threading.Thread(target=write_meanwhile)
    writer.start()
    said = as_nobody(read)
    writer.join()
    assert said.startswith("1 then the ledger at "), said
    assert "was written while it was read as it was on disk" in said


def test_a_log_of_commits_without_its_shared_memory_file_is_refused_not_misread(
    shared: Path,
) -> None:
    # A copy of a live ledger's files without its -shm, where the reader may create none:
    # SQLite would open the database as immutable and leave the log's commits out.
    theirs = shared / "home"
    with _live(theirs):
        copy = shared / "copy"
        copy.mkdir()
        for name in ("ledger.db", "ledger.db-wal"):
            shutil.copyfile(theirs / name, copy / name)
    assert (copy / "ledger.db-wal").stat().st_size > 0
    _readable_only(copy)

    [r] = _as_nobody(copy, ("verify",))
    code, out, err = r.code, r.out, r.err
    assert (code, out) == (1, "")
    assert err.startswith(f"error: cannot read the ledger at {copy / 'ledger.db'}: its")
    assert "ledger.db-wal holds commits" in err
    assert "copy the home's files" in err
    assert err.count("\n") == 1


def _old_ledger_with_a_journal(scenario_home: Path, home: Path) -> Path:
    """A ledger file of schema version 1 whose journal holds the scenario's events (its
    projections empty: nothing here reads them)."""
    path = old_sqlite_ledger(home)
    with closing(sqlite3.connect(scenario_home / "ledger.db")) as src:
        rows = src.execute("SELECT seq, at, actor, kind, payload, hash FROM journal").fetchall()
    with closing(sqlite3.connect(path)) as dst, dst:
        dst.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?)", rows)
    return path


def test_an_older_ledger_is_verified_exported_and_copied_without_being_migrated(
    cli: Cli, scenario: Scenario, home: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    path = _old_ledger_with_a_journal(home, old)
    before = _digest(old)
    verified = ok(cli("verify", "--json", "--home", str(old), home_arg=False))
    assert verified["ok"]
    assert verified["events"] > 5
    exported = cli("export", "--home", str(old), home_arg=False)
    assert exported.code == 0
    assert len(exported.out.splitlines()) == verified["events"]
    assert exported.out == cli("export").out  # the scenario's journal, as it is
    copied = ok(
        cli("copy", "--from", str(old), "--to", str(tmp_path / "new"), "--json", home_arg=False)
    )
    assert copied["events"] == verified["events"]
    assert copied["sessions"] == 0
    itself = cli("copy", "--from", str(old), "--to", str(old), home_arg=False)
    assert_error(itself, 2, "the same ledger")  # refused before it was opened to write
    for name, digest in _digest(old).items():  # SQLite's -wal and -shm may have appeared
        assert before.get(name, digest) == digest, name
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    # the copy answers as the scenario's own ledger does, its gardener starting over
    blame = ok(
        cli(
            "blame", "auth.jwt.algorithm", "--json", "--home", str(tmp_path / "new"), home_arg=False
        )
    )
    assert blame == ok(cli("blame", "auth.jwt.algorithm", "--json"))
    # a command that reads knowledge migrates the older ledger first, as every start does
    # (its projections are empty here: only its journal was written)
    found = cli("blame", "auth.jwt.algorithm", "--home", str(old), home_arg=False)
    assert_error(found, 2, "no assertion with id or subject")
    with closing(sqlite3.connect(path)) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    assert version == sqlite_store.SCHEMA_VERSION


def test_an_older_ledger_that_cannot_be_migrated_says_what_can_be_read(
    scenario: Scenario, home: Path, shared: Path
) -> None:
    # Only the reads made through a snapshot met the schema check; the others (decisions,
    # checks, tokens, …) ended with "the ledger's database failed: no such table: …".
    old = shared / "old"
    _old_ledger_with_a_journal(home, old)
    _readable_only(old)
    asks = _asks(scenario)
    said = _as_nobody(old, *asks, ("export",))
    for ask, r in zip([*asks, ("export",)], said, strict=True):
        if ask in (("verify",), ("export",)):
            assert r.code == 0, f"{ask}: {r.err}"
            continue
        assert (r.code, r.out) == (1, ""), ask
        assert r.err.count("\n") == 1, f"{ask}: {r.err}"
        assert "holds a ledger of schema version 1, and this episteme reads version" in r.err
        assert "was not migrated (migrating it failed: cannot open the ledger at" in r.err
        assert "`episteme migrate` where it can be written" in r.err


def test_a_ledger_opened_to_read_only_refuses_every_write(location: str | Path) -> None:
    with Ledger.init(location) as ledger:
        ledger.assert_one(subject="auth.jwt.algorithm", value="RS256", agent="ops")
    with Ledger.open(location, read_only=True) as ledger:
        assert ledger.store.read_only
        writes = [
            lambda: ledger.assert_one(subject="a.b", value=1, agent="x"),
            lambda: ledger.query("auth.jwt.algorithm", agent="deploy"),  # audited: a write
            lambda: ledger.store.enqueue_job("q", {}, 1),
            lambda: ledger.store.leadership("background"),
            lambda: ledger.rebuild(),
        ]
        for write in writes:
            with pytest.raises(StoreUnavailable, match="was opened to read only"):
                write()
        assert ledger.verify().events == 1
        assert ledger.answer("auth.jwt.algorithm", lens="all").items[0].assertion.value == "RS256"


def test_postgresql_read_by_a_role_that_may_only_select(
    cli: Cli, scenario: Scenario, home: Path, pg_url: str
) -> None:
    ok(cli("copy", "--from", str(home), "--to", pg_url, "--json", home_arg=False))
    reader = _role(pg_url, "oncall_reader", "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    asks = [a for a in _asks(scenario) if a != ("gardener", "status")]  # its lag moves
    for ask in asks:
        mine = cli(*ask, "--json", "--db", pg_url, home_arg=False)
        theirs = cli(*ask, "--json", "--db", reader, home_arg=False)
        assert (theirs.code, theirs.out) == (0, mine.out), f"{ask}: {theirs.err}"
    # the owner's own connections, opened to read only: the server refuses a write too
    with (
        Ledger.open(pg_url, read_only=True) as ledger,
        ledger.store.pool.connection() as c,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        c.execute("DELETE FROM tokens")
    # an older ledger: its journal is read as it is, by the reader and by the owner, who
    # may migrate it and does not
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    for who in (reader, pg_url):
        assert ok(cli("verify", "--json", "--db", who, home_arg=False))["ok"]
        exported = cli("export", "--db", who, home_arg=False)
        assert exported.code == 0
        assert exported.out == cli("export").out
    blame = cli("blame", "auth.jwt.algorithm", "--db", reader, home_arg=False)
    assert_error(blame, 1, "schema version 4, and this episteme needs", "as a role that may create")
    with psycopg.connect(pg_url, autocommit=True) as admin:
        assert admin.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "4",
        )
