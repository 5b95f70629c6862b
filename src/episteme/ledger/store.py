"""The `Store` protocol: what the ledger needs from a database, and how to open one.

A store keeps the journal and its projections. The ledger never writes a table:
it hands the store a `build` function that reads through a `StoreReader` inside
the write transaction and returns event drafts; the store appends them to the chain
and projects them atomically. SQLite is the embedded default; a PostgreSQL store
implements the same protocol.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from episteme.errors import Conflict, InvalidInput, StoreUnavailable
from episteme.ledger.access import Denial, TokenRecord
from episteme.ledger.background import Job, JobRecord, Leadership
from episteme.ledger.journal import Draft, Event, VerifyReport
from episteme.ledger.lenses import LensSpec
from episteme.ledger.model import Assertion, Candidates
from episteme.ledger.records import (
    Change,
    ChangeCursor,
    CheckRecord,
    ConstraintRecord,
    CorrectionRecord,
    DecisionRecord,
    EpochRecord,
    NotificationRecord,
    QueryRecord,
    RebuildReport,
    Version,
)
from episteme.ledger.sql.learning import Cursor, Evidence, Note, Weighed

DB_FILE = "ledger.db"


_T = TypeVar("_T")


class StoreReader(Protocol):
    """Reads over the projections (also available inside a write)."""

    def assertion(self, assertion_id: str) -> Assertion | None: ...
    def assertions(self, ids: Sequence[str]) -> list[Assertion]: ...
    def candidates(
        self,
        subject: str | None,
        as_of: int | None = None,
        text: str | None = None,
        lifecycles: Collection[str] | None = None,
        listed: Collection[str] = (),
    ) -> Candidates: ...
    def current_on_subject(self, subject: str) -> list[Assertion]: ...
    def existing_ids(self, ids: Sequence[str], recorded_at: int | None = None) -> set[str]:
        """Which of these assertion ids are recorded (`recorded_at`: the time they would
        carry, which lets a writer skip the lookup when that is past every event)."""
        ...

    def resolve(self, ref: str, want: str | None = None) -> tuple[str, str]: ...
    def derived(self, parent_ids: Sequence[str]) -> list[Assertion]: ...
    def versions(self, assertion_id: str, *, superseded: bool = False) -> list[Version]:
        """An assertion's versions in order; with `superseded`, each approving version
        names the values it superseded (one more statement)."""
        ...

    def changes(
        self,
        subject: str | None,
        since: int,
        until: int,
        limit: int | None = None,
        before: ChangeCursor | None = None,
    ) -> list[Change]:
        """Changes in [since, until] in journal order, those below `before` when given;
        the newest `limit` of them when given."""
        ...

    def change_counts(self, subject: str | None, since: int, until: int) -> dict[str, int]:
        """How many changes of each kind (`Change.change`) in [since, until]."""
        ...

    def epoch(self, name: str) -> EpochRecord | None: ...
    def epoch_members(self, name: str) -> list[Assertion]: ...
    def lens(self, name: str) -> LensSpec | None: ...
    def lenses(self) -> dict[str, LensSpec]: ...
    def constraint(self, constraint_id: str) -> ConstraintRecord | None: ...
    def constraints(
        self, scope: str | None = None, *, retired: bool = False
    ) -> list[ConstraintRecord]:
        """Those on `scope` (above and below it), or all; the retired too with `retired`."""
        ...

    def constraints_tagged(
        self, tags: Sequence[str] | None, *, retired: bool = False
    ) -> list[ConstraintRecord]:
        """The constraints of any of `tags` (None: of any tag at all)."""
        ...

    def corrections_of(self, assertion_id: str) -> list[CorrectionRecord]: ...
    def correction(self, correction_id: str) -> CorrectionRecord | None: ...
    def query_record(self, query_id: str) -> QueryRecord | None: ...
    def query_records(self, query_ids: Sequence[str]) -> list[QueryRecord]: ...
    def queries(
        self,
        agent: str | None = None,
        subject: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int = 100,
        *,
        before: int | None = None,
    ) -> list[QueryRecord]: ...
    def serving(self, assertion_id: str, limit: int) -> tuple[int, dict[str, int], list[str]]: ...
    def decision(self, decision_id: str) -> DecisionRecord | None: ...
    def decisions(
        self,
        agent: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int = 100,
        *,
        before: int | None = None,
    ) -> list[DecisionRecord]: ...
    def decisions_citing_assertion(self, assertion_id: str) -> list[DecisionRecord]: ...
    def token(
        self, *, token_id: str | None = None, hash: str | None = None
    ) -> TokenRecord | None: ...
    def tokens(self, principal: str | None = None) -> list[TokenRecord]: ...
    def denials(
        self,
        principal: str | None = None,
        since: int | None = None,
        limit: int = 100,
        until: int | None = None,
        *,
        before: int | None = None,
    ) -> list[Denial]: ...
    def head(self) -> tuple[int, int, bytes | None]: ...
    def event_at(self, after_seq: int) -> int | None: ...
    def waiting_jobs(self, queue: str, now_us: int) -> tuple[int, int | None]:
        """How many jobs of `queue` wait to run (due, or retried later), and since when
        the longest-due of them has been due (µs; None when none is due)."""
        ...

    def events(self, after_seq: int = 0, until_at: int | None = None) -> Iterator[Event]: ...
    def checks(
        self,
        agent: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int = 100,
        *,
        before: int | None = None,
    ) -> list[CheckRecord]: ...
    def webhook_specs(self) -> dict[str, tuple[dict[str, Any], int, str]]: ...
    def trust_evidence(
        self, agent: str | None, prefix: str | None, until: int | None
    ) -> list[Evidence]: ...
    def notifications(
        self,
        type: str | None = None,
        since: int | None = None,
        limit: int = 100,
        until: int | None = None,
        *,
        after: str | None = None,
    ) -> list[NotificationRecord]: ...
    def trust_weights(self, agents: Sequence[str], topic: str, until: int) -> list[Weighed]: ...
    def trust_totals(
        self, pairs: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[float, float, int]]: ...
    def garden_cursor(self, name: str) -> Cursor: ...
    def expired(self, after: int, until: int) -> list[Assertion]: ...
    def diagnosis_session(self, session_id: str) -> dict[str, Any] | None: ...
    def diagnosis_sessions(
        self, limit: int = 100, after: str | None = None
    ) -> list[dict[str, Any]]: ...
    def diagnosis_events(self, session_id: str, after: int = 0) -> list[tuple[int, str]]: ...
    def diagnosis_timed_events(
        self, session_id: str, after: int = 0
    ) -> list[tuple[int, int, str]]: ...


BuildFn = Callable[[StoreReader, int, int], Sequence[Draft]]
"""build(reader, at, first_seq) -> the drafts to append, inside the write transaction."""


class Store(StoreReader, Protocol):
    """A ledger database: reads, atomic appends, and integrity tools."""

    url: str
    created: bool
    """True when opening this store created the ledger."""
    where: str
    """The database for messages: a file path, or a URL without its password."""
    schema_version: int
    """The ledger's schema version: this episteme's, except in an older ledger opened
    with `read_only` (which is not migrated)."""
    read_only: bool
    """Opened to read only: nothing is written, migrations included (`open_store`)."""
    SCHEMA_VERSION: ClassVar[int]
    """The schema version this episteme writes."""
    remote: bool
    """Reads cross a network (and may wait seconds when it fails): code on an event loop
    must run them on a worker thread. False for SQLite, whose reads are local."""
    migrated_from: int | None
    """The schema version this open upgraded from (None: it was current)."""
    write_failure: tuple[float, str] | None
    """When (monotonic seconds) and why the last writes failed as the world failing
    (a full disk, the database away); None once writes commit again."""

    def holds(self, part: str) -> bool:
        """Whether the ledger's schema has `part` ("gardener": the gardener's state;
        "diagnosis": diagnosis sessions), which an older ledger opened with `read_only`
        may lack."""
        ...

    def check_current(self, why: str = "") -> None:
        """Raise StoreUnavailable, saying what can still be read (and `why` it was not
        migrated), when the ledger is of an older schema: opened with `read_only`, it is
        not migrated, and its projections cannot be read (`reading` refuses them)."""
        ...

    def write(self, build: BuildFn, now_us: int) -> list[Event]: ...
    def probe_reading(self, read: Callable[[StoreReader], _T], timeout: float = 2.0) -> _T:
        """`read`, its connection and its statements bounded by `timeout` together, as
        `probe` is: what `/health` and `/metrics` read besides the journal's length."""
        ...

    def reading(self, read: Callable[[StoreReader], _T], *, snapshot: bool = True) -> _T:
        """`read`, given a reader for a run of statements: one connection for them all,
        where a store would otherwise take one per statement, and one snapshot, so that a
        write committed meanwhile is seen by all of them or none (`snapshot=False` for reads
        that agree without one, or may mix). Readings do not nest: on PostgreSQL an inner
        one would borrow a second connection, with a snapshot of its own."""
        ...

    def backfill(self, timed: Iterable[tuple[int, Draft]], chunk: int = 20_000) -> int: ...
    def import_events(
        self,
        events: Iterable[Event],
        *,
        raised_until: int | None = None,
        scanned_at: int | None = None,
    ) -> int: ...
    def verify(self) -> VerifyReport: ...
    def rebuild(self, repair: bool = False) -> RebuildReport: ...
    def workers(self) -> dict[str, str]: ...
    def probe(self, timeout: float = 2.0) -> int:
        """The journal's length, answered within about `timeout` seconds or StoreUnavailable."""
        ...

    def close(self) -> None: ...
    def garden_commit(
        self,
        name: str,
        expected: int,
        cursor: int,
        evidence: Sequence[Evidence],
        notes: Sequence[Note],
        now_us: int,
        scanned_at: int | None = None,
        half_life_us: float | None = None,
    ) -> bool: ...
    def garden_reset(self, name: str, now_us: int) -> None: ...
    def raise_notes(self, notes: Sequence[Note], now_us: int) -> None: ...
    def save_diagnosis_session(self, row: dict[str, Any]) -> None: ...
    def move_diagnosis_session(
        self,
        session_id: str,
        from_status: Sequence[str],
        changes: dict[str, Any],
        event: tuple[int, str] | None = None,
    ) -> bool: ...
    def add_diagnosis_event(self, session_id: str, at_us: int, event: str) -> int: ...
    def delete_diagnosis_session(self, session_id: str) -> bool: ...
    def open_incident(
        self, key: str, group_key: str, labels: str, now_us: int, reopen: bool = True
    ) -> tuple[bool, dict[str, Any] | None]: ...
    def resolve_incident(self, key: str, now_us: int) -> bool: ...
    def incidents(
        self, limit: int = 100, after: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]: ...
    def link_incident(self, key: str, session_id: str, now_us: int) -> None: ...
    def leadership(self, name: str) -> Leadership: ...
    def enqueue_job(
        self, queue: str, payload: object, now_us: int, run_after_us: int | None = None
    ) -> int: ...
    def lease_job(self, queue: str, worker: str, now_us: int, lease_us: int) -> Job | None: ...
    def complete_job(self, job_id: int, worker: str, now_us: int) -> None: ...
    def fail_job(
        self, job_id: int, worker: str, now_us: int, error: str, retry_in_us: int | None
    ) -> None: ...
    def jobs(self, queue: str, limit: int = 100, before: int | None = None) -> list[JobRecord]:
        """The newest `limit` jobs of `queue`, newest first, whatever their state; with
        `before`, those queued before the job of that id."""
        ...


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


_CONNINFO = re.compile(r"(?:^|\s)(?:host|hostaddr|dbname|user|password|port|sslmode)\s*=")


def open_store(
    location: str | Path,
    *,
    create: bool = False,
    ensure: bool = False,
    defer_flush: bool = True,
    read_only: bool = False,
) -> Store:
    """Open (or create) the store at a home directory or a database URL.

    `create`: a new ledger, refused where one exists. `ensure`: open the ledger there,
    creating it when there is none (what `episteme serve` does on a fresh home).
    `defer_flush=False`: commits wait for the disk while holding the writer lock, as
    before the flush moved after it (for benchmarks that compare the two).
    `read_only`: open an existing ledger without writing to it at all: no migration (an
    older ledger's journal can be read; its projections cannot), no lock file, and any
    write refused. It reads a ledger on read-only media, or one this user may not write.
    """
    assert not (read_only and (create or ensure))
    from episteme.ledger.sqlite.store import SQLiteStore

    text = str(location)
    if _CONNINFO.search(text) and not text.startswith(POSTGRES_SCHEMES):
        raise InvalidInput(  # not repeated: it may hold a password
            "that looks like a key=value connection string: give the database as a "
            "postgresql:// URL (a password in it percent-encoded)",
            field="db",
        )
    if text.startswith(POSTGRES_SCHEMES):
        try:
            from episteme.ledger.postgres.store import PostgresStore
        except ImportError:
            raise InvalidInput(
                "PostgreSQL support is not installed: pip install 'episteme[postgres]'",
                field="db",
            ) from None
        return PostgresStore(
            text, create=create, ensure=ensure, defer_flush=defer_flush, read_only=read_only
        )
    try:
        path, create = _sqlite_file(text, create=create, ensure=ensure)
    except PermissionError as exc:  # a directory on the way that this user may not enter
        raise StoreUnavailable(
            f"cannot open the ledger at {text}: permission denied on {exc.filename or text}: "
            f"run as a user who may {'read' if read_only else 'read and write'} it, or give"
            " another home"
        ) from None
    try:
        return SQLiteStore(path, create=create, defer_flush=defer_flush, read_only=read_only)
    except Conflict:
        if not ensure:
            raise
        # another process made it between the look and the creation: open theirs
        return SQLiteStore(path, defer_flush=defer_flush)


def _sqlite_file(text: str, *, create: bool, ensure: bool) -> tuple[Path, bool]:
    """The SQLite file `text` names, and whether to create it."""
    from episteme.ledger.sqlite.store import is_blank

    if text.startswith("sqlite:///"):
        # the database file: relative to the working directory, or absolute with a fourth
        # slash (sqlite:////srv/ledger.db); a home directory is taken for its ledger file
        path = Path(text.removeprefix("sqlite:///"))
        if path.is_dir():
            path = path / DB_FILE
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise InvalidInput(
            f"unsupported database URL scheme {scheme!r}: use a home directory, "
            "sqlite:///PATH or postgresql://USER@HOST/DATABASE",
            field="db",
        )
    else:
        home = Path(text)
        if home.exists() and not home.is_dir():
            raise InvalidInput(f"home {home} is a file: give a directory", field="home")
        path = home / DB_FILE
    if ensure and not path.exists():
        create = True
    elif ensure and not create:
        # a blank file may be another process's ledger in the making (`serve` started
        # twice on a fresh home): give it the time to be made; one that stays blank (an
        # emptied file, a creation that died) is refused when opened, never made anew
        deadline = time.monotonic() + ENSURE_WAIT_S
        while is_blank(path) and time.monotonic() < deadline:
            time.sleep(0.05)
    return path, create


ENSURE_WAIT_S = 10.0
"""How long opening a ledger that may be created waits for a blank file to become one."""
