"""The SQLite store when the world fails under it: a full disk, a file it cannot open,
create or read. Each is one clear error, and nothing is half-written.

A full disk is SQLite's own: `PRAGMA max_page_count` caps the database, and a write past
the cap fails with SQLITE_FULL ("database or disk is full"), as on a full filesystem,
where the transaction is rolled back by SQLite itself before the store sees the error.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from episteme.api import Settings, create_app
from episteme.errors import StoreUnavailable
from episteme.ledger import AssertionInput, Ledger
from episteme.ledger.sqlite import store as sqlite_store
from episteme.timeutil import ManualClock
from tests.backends import as_nobody

FULL = "database or disk is full (free space on its disk, then retry)"
BIG = "x" * 20_000


def _fill_to(led: Ledger, spare_pages: int) -> sqlite3.Connection:
    """Cap the ledger's database a few pages above its size now (its disk "fills")."""
    conn: sqlite3.Connection = led.store._wconn  # type: ignore[attr-defined]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + spare_pages}")
    return conn


def _input(subject: str) -> AssertionInput:
    return AssertionInput(subject=subject, value=BIG, agent="a")


def _ids(led: Ledger) -> set[str]:
    return {i.assertion.id for i in led.answer("disk", lens="all").items}


def test_a_full_disk_fails_a_write_whole_and_clearly(home: Path, clock: ManualClock) -> None:
    with Ledger.init(home, clock=clock) as led:
        conn = _fill_to(led, 64)
        written: list[str] = []
        refused: StoreUnavailable | None = None
        for i in range(100):
            try:
                written.append(led.assert_one(subject=f"disk.s{i}", value=BIG, agent="a").id)
            except StoreUnavailable as exc:
                refused = exc
                break
        assert refused is not None
        assert FULL in refused.message
        assert "nothing of this write was recorded" in refused.message
        assert written  # some fitted before the disk filled
        assert _ids(led) == set(written)
        batch = [_input(f"disk.b{i}") for i in range(5)]
        with pytest.raises(StoreUnavailable, match="database or disk is full"):
            led.add(batch)
        assert _ids(led) == set(written)  # the batch: none of it
        assert led.verify().ok
        assert led.rebuild().ok

        conn.execute("PRAGMA max_page_count = 1073741823")  # space again: no restart
        again = led.assert_one(subject="disk.after", value=BIG, agent="a")
        assert _ids(led) == {*written, again.id}
        assert led.verify().ok


def test_writers_sharing_a_commit_all_get_the_full_disk(home: Path, clock: ManualClock) -> None:
    # Writes queued together commit as one group; SQLite rolls the whole transaction
    # back, savepoints and all, so none of them may be reported written, and each is
    # told why (not "cannot rollback", not "no such savepoint").
    with Ledger.init(home, clock=clock) as led:
        _fill_to(led, 200)
        outcomes: list[Any] = []
        lock = threading.Lock()

        def write(n: int) -> None:
            for i in range(40):
                try:
                    found: Any = led.assert_one(subject=f"disk.w{n}.s{i}", value=BIG, agent="a")
                except Exception as exc:
                    found = exc
                with lock:
                    outcomes.append(found)
                if not hasattr(found, "id"):
                    return

        threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        failed = [o for o in outcomes if not hasattr(o, "id")]
        assert len(failed) == 6
        assert all(isinstance(e, StoreUnavailable) and FULL in e.message for e in failed), failed
        assert _ids(led) == {o.id for o in outcomes if hasattr(o, "id")}
        assert led.verify().ok


def test_the_api_answers_a_full_disk_with_503(home: Path, clock: ManualClock) -> None:
    with Ledger.init(home, clock=clock) as led:
        token, _ = led.issue_token("bot", ["agent"], by="root")
        app = create_app(Settings(home=home, mcp=False, background=False), ledger=led)
        with TestClient(app, raise_server_exceptions=False) as client:
            auth = {"Authorization": f"Bearer {token}"}
            body = {"subject": "disk.one", "value": BIG}
            assert client.post("/v1/assertions", json=body, headers=auth).status_code == 201
            _fill_to(led, 0)
            more = {"subject": "disk.two", "value": BIG}
            for path, sent in (("/v1/assertions", more), ("/v1/query", {"subject": "disk"})):
                r = client.post(path, json=sent, headers=auth)
                assert r.status_code == 503, (path, r.text)
                assert r.headers["content-type"] == "application/problem+json"
                assert FULL in r.json()["detail"], path
            health = client.get("/health")  # reads answer; no write does
            assert health.status_code == 503
            assert health.json()["status"] == "degraded"
            assert health.json()["store"].startswith("writes failing: cannot write to")
            assert FULL in health.json()["store"]
            _fill_to(led, 1_000_000)  # space again
            assert client.post("/v1/assertions", json=more, headers=auth).status_code == 201
            assert client.get("/health").json()["status"] == "ok"


# -- files it cannot open or create ----------------------------------------------------


def test_a_damaged_file_is_called_damaged(home: Path) -> None:
    Ledger.init(home).close()
    db = home / "ledger.db"
    data = bytearray(db.read_bytes())
    data[100:160] = b"\xff" * 60  # the schema's page, after the file header: unreadable
    db.write_bytes(bytes(data))
    with pytest.raises(StoreUnavailable) as damaged:
        Ledger.open(home)
    assert damaged.value.message == (
        f"{db} is damaged (database disk image is malformed): restore the ledger from a backup"
    )


def test_an_empty_file_is_not_replaced_by_a_new_ledger(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `serve` opens a home with ensure=True: a ledger.db emptied by accident must not
    # become a fresh ledger (and a fresh admin token) without a word
    monkeypatch.setattr("episteme.ledger.store.ENSURE_WAIT_S", 0.5)  # for it to be made
    home.mkdir(parents=True, exist_ok=True)
    (home / "ledger.db").write_bytes(b"")
    with pytest.raises(StoreUnavailable, match=r"is empty \(0 bytes\), not a ledger"):
        Ledger.open(home, ensure=True)
    assert (home / "ledger.db").stat().st_size == 0
    Ledger.init(home).close()  # `episteme init` may still start one there


def test_a_creation_that_died_leaves_a_home_init_can_start_again(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `init` killed after SQLite wrote its first page (WAL mode) and before the schema
    # left a 4 KiB file: `init` said "already holds a ledger", `serve` "not an Episteme
    # ledger", and only removing the file by hand helped.
    home.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(home / "ledger.db")) as blank:
        blank.execute("PRAGMA journal_mode = WAL")
    assert (home / "ledger.db").stat().st_size > 0
    monkeypatch.setattr("episteme.ledger.store.ENSURE_WAIT_S", 0.5)  # for it to be made
    with pytest.raises(StoreUnavailable, match=r"holds no ledger yet .* run `episteme init`"):
        Ledger.open(home, ensure=True)  # never made anew without a word, as an empty file
    with Ledger.init(home) as led:
        led.assert_one(subject="svc.a", value=1, agent="a")
    with Ledger.open(home) as led:
        assert led.verify().events == 1


_OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from episteme.ledger import Ledger
start = float(sys.argv[2])
while time.time() < start:  # all at the same moment, as far as a clock can tell
    pass
with Ledger.open(Path(sys.argv[1]), ensure=True) as led:
    led.assert_one(subject="svc.a", value=sys.argv[3], agent="a")
"""


def test_processes_opening_a_fresh_home_at_once_all_open_one_ledger(tmp_path: Path) -> None:
    # `serve` started four times on a fresh home: most lost, "is empty (0 bytes)" or
    # "not an Episteme ledger", as they found another's file before its schema.
    for trial in range(4):
        home = tmp_path / f"home-{trial}"
        start = time.time() + 1.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AT_ONCE, str(home), str(start), str(n)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(4)
        ]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors
        with Ledger.open(home) as led:
            assert led.verify().events == 4


def test_a_home_that_cannot_be_created_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="cannot create the home"):
        Ledger.init(tmp_path / "file" / "home")


def test_a_ledger_that_could_not_be_made_leaves_nothing_behind(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sqlite_store, "create_schema", full)
    with pytest.raises(StoreUnavailable, match="cannot create the ledger at"):
        Ledger.init(home)
    assert not (home / "ledger.db").exists()  # so that `init` may try again
    monkeypatch.undo()
    Ledger.init(home).close()


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_home_this_user_may_not_enter_is_one_line(tmp_path: Path, below: str) -> None:
    closed = tmp_path / "closed"
    closed.mkdir()
    closed.chmod(0)
    tmp_path.chmod(0o755)
    home = closed / below if below else closed

    def open_it() -> str:
        try:
            Ledger.open(home, ensure=True)
        except StoreUnavailable as exc:
            return f"StoreUnavailable: {exc}"
        return "opened"

    try:
        said = as_nobody(open_it)
    finally:
        closed.chmod(0o700)
    assert said.startswith(f"StoreUnavailable: cannot open the ledger at {home}"), said
    assert "permission denied" in said


@pytest.mark.parametrize("gone", ["ledger.db-wal", "ledger.db-shm", "ledger.db"])
def test_a_file_removed_or_replaced_under_a_writer_stops_its_writes(
    tmp_path: Path, clock: ManualClock, gone: str
) -> None:
    # With its WAL deleted, a server went on answering 201 for writes that went into
    # the deleted file (lost when it stopped); with the shared-memory file deleted, a
    # second process wrote beside it on an older state; with the database replaced, the
    # writes went nowhere. Each write now checks that the files are still the ones it
    # wrote to, and refuses.
    home = tmp_path / "home"
    with Ledger.init(home, clock=clock) as led:
        kept = led.assert_one(subject="disk.before", value=1, agent="a").id
        target = home / gone
        if gone == "ledger.db":
            with Ledger.init(tmp_path / "other", clock=clock):
                pass
            (tmp_path / "other" / "ledger.db").replace(target)
        else:
            target.unlink()
        with pytest.raises(StoreUnavailable, match="removed or replaced under this process"):
            led.assert_one(subject="disk.after", value=1, agent="a")
        with pytest.raises(StoreUnavailable, match=gone.replace(".", r"\.")):
            led.store.probe()
        app = create_app(Settings(home=home, mcp=False, background=False), ledger=led)
        with TestClient(app) as client:
            health = client.get("/health")
        assert health.status_code == 503
        assert "removed or replaced under this process" in health.json()["store"]
    if gone != "ledger.db":  # the ledger as it was, once the process has stopped
        with Ledger.open(home) as again:
            assert again.verify().ok
            assert again.get(kept).id == kept
