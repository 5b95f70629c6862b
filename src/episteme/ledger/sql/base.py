"""The write path every SQL store shares: group commit, chained appends, loads.

A store subclass provides the transaction (`_transaction_locked`, which holds the
store's writer lock across processes) and names the database errors that fail a
whole group (`FATAL`) or mean "run the group again" (`RETRY`, PostgreSQL's
serialization failures). Everything else here is the same for SQLite and PostgreSQL.

**The writer lock is not held through the flush.** A store may commit under the lock
without waiting for the disk (SQLite's ``synchronous=NORMAL``) and give its
`Durability` a flush that makes every commit so far durable. `write` and `_transaction`
wait for it after the lock is released and return only once their commit is covered, so
an acknowledged write is as durable as before; meanwhile the next writer (thread or
process) already holds the lock, and one flush serves every commit made while the
previous flush ran. (PostgreSQL flushes inside its own transaction's round trip, after
COMMIT has released the lock: see its store.) Logs are appended in
order, so a crash keeps a prefix of the commits: the chain stays whole. The one thing a
crash can now lose is a commit that another connection read before its writer was
acknowledged.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import ClassVar

import orjson

from episteme.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    SchemaBehind,
    StoreUnavailable,
    refuse_tokens,
)
from episteme.ledger.background import Job, JobRecord
from episteme.ledger.canonical import GENESIS, canonical, check_no_nul
from episteme.ledger.journal import Draft, Event, EventKind, VerifyReport, link, verify_rows
from episteme.ledger.sql import projector
from episteme.ledger.sql.diagnosis import DiagnosisWrites
from episteme.ledger.sql.learning import GARDENER, RAISED_ELSEWHERE, LearningWrites
from episteme.ledger.sql.projector import Conn, Us
from episteme.ledger.sql.reads import Reader
from episteme.ledger.store import BuildFn
from episteme.text import shorten
from episteme.timeutil import from_us

WRITE_WAIT_S = 30.0
"""The longest a write waits to start, for the writer lock in this process and across
processes together; then it fails (503) with nothing recorded."""


class _Pending:
    """One queued write and, once its group has committed, its outcome."""

    __slots__ = ("build", "deadline", "done", "error", "events", "mark", "now_us")

    def __init__(self, build: BuildFn, now_us: int) -> None:
        self.build, self.now_us = build, now_us
        self.deadline = time.monotonic() + WRITE_WAIT_S
        self.done = False
        self.mark = 0
        self.error: Exception | None = None
        self.events: list[Event] = []


_Head = tuple[int, int, bytes | None]
"""The journal's last (seq, time, hash); (0, 0, None) when it is empty."""


class _RolledBack(Exception):
    """Leaves a write transaction (rolling it back) once its write's error is recorded."""


class Durability:
    """Counts commits and makes them durable after the writer lock is released.

    `commit` runs under the writer lock once a transaction has committed (its data is
    in the log, perhaps not yet on disk) and gives that commit's mark; `wait(mark)`
    returns once a flush begun after that commit has finished. Threads that wait
    together share one flush: whoever takes the flush lock flushes every commit counted
    so far, and the others find their mark covered.
    """

    def __init__(self, flush: Callable[[], None] | None) -> None:
        self._flush = flush
        self._flush_lock = threading.Lock()
        self.committed = 0
        self.durable = 0
        self.flushes = 0
        """Flushes run since opening (fewer than commits when they were shared)."""

    @property
    def deferred(self) -> bool:
        """Whether commits wait for the disk outside the lock (else inside, as usual)."""
        return self._flush is not None

    def commit(self) -> int:
        self.committed += 1
        return self.committed

    def wait(self, mark: int) -> None:
        if self._flush is None or self.durable >= mark:
            return
        with self._flush_lock:
            if self.durable >= mark:
                return
            target = self.committed  # every commit counted so far has reached the log
            self._flush()
            self.flushes += 1
            self.durable = max(self.durable, target)


class SQLStore(Reader, LearningWrites, DiagnosisWrites):
    """Reads, group-committed writes and the journal's integrity, over SQL."""

    FATAL: tuple[type[BaseException], ...] = ()
    """Errors inside one write that fail its whole group (a lost connection)."""
    RETRY: tuple[type[BaseException], ...] = ()
    """Errors after which the whole group runs again (serialization failures)."""
    RECONNECT: tuple[type[BaseException], ...] = ()
    """Errors after which the whole group runs once more, on a fresh connection: the
    connection was found dead before COMMIT was sent, so nothing was written."""
    ATTEMPTS = 8
    PIPELINED = False
    """Whether statement errors surface only when results are read (PostgreSQL's
    pipeline): a group then runs in one pipeline first (`_run_together`)."""

    where: str
    """The database, for messages (never with a password)."""
    SCHEMA_VERSION: ClassVar[int] = 0
    """The schema version this episteme writes (each store's)."""
    SINCE: ClassVar[dict[str, int]] = {}
    """The schema version that added each part kept beside the journal (`holds`)."""
    schema_version: int
    read_only = False

    def holds(self, part: str) -> bool:
        return self.schema_version >= self.SINCE[part]

    def _writable(self) -> None:
        """Refuse a write to a store opened to read only."""
        if self.read_only:
            raise StoreUnavailable(
                f"the ledger at {self.where} was opened to read only: nothing can be written "
                "to it this way"
            )

    def check_current(self, why: str = "") -> None:
        if self.schema_version < self.SCHEMA_VERSION:
            raise SchemaBehind(
                f"{self.where} holds a ledger of schema version {self.schema_version}, and "
                f"this episteme reads version {self.SCHEMA_VERSION}; opened to read only, it "
                f"was not migrated{f' ({why})' if why else ''}: its journal can be verified,"
                " exported and copied, and reading its knowledge needs `episteme migrate`"
                " where it can be written (on the primary, as a role that may create tables,"
                " or on a copy where this one must stay as it is)"
            )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._deadline: float | None = None
        """While a group runs: when its oldest write stops waiting to start."""
        self.retries = 0
        """Groups run again after a serialization failure or deadlock, since opening."""
        self.regrouped = 0
        """Groups run again write by write after one of their writes failed in the
        pipeline (`_run_together`), since opening."""
        self.durability = Durability(None)
        """Commits wait for the disk inside the lock until a store sets a flush."""
        self.write_failure: tuple[float, str] | None = None
        """When (monotonic seconds) and why the last group of writes failed as the world
        failing (a full disk, the database away); None once a group commits again."""

    def _transaction_locked(self) -> AbstractContextManager[Conn]:
        """A write transaction holding the store's writer lock (across processes too)."""
        raise NotImplementedError

    def _lock_wait(self) -> float:
        """How long the transaction starting now may wait for the writer lock across
        processes: what is left of its group's `WRITE_WAIT_S`, or all of it."""
        if self._deadline is None:
            return WRITE_WAIT_S
        return max(0.0, self._deadline - time.monotonic())

    SKIP_LOCKED = ""
    """How a job lease skips rows other workers hold (PostgreSQL: FOR UPDATE SKIP LOCKED)."""

    def _jobs_transaction(self) -> AbstractContextManager[Conn]:
        """A transaction for the job queue (it need not wait for the journal's writer)."""
        return self._transaction()

    def _reader(self, conn: Conn) -> Reader:
        return Reader(conn)

    @contextmanager
    def _pipelined(self, conn: Conn) -> Iterator[Callable[[], object]]:
        """Around a group: statements whose results are not read may be sent without
        waiting (PostgreSQL's pipeline); the function it gives waits for them all."""
        yield lambda: None

    @contextmanager
    def _transaction(self) -> Iterator[Conn]:
        with self._lock:
            with self._transaction_locked() as conn:
                yield conn
            mark = self.durability.commit()
        self._durable(mark)

    def _durable(self, mark: int) -> None:
        """Return once commit `mark` is on disk (the writer lock is not held here)."""
        try:
            self.durability.wait(mark)
        except Exception as exc:
            raise StoreUnavailable(
                f"{self.where}: a write committed but could not be confirmed on disk "
                f"({exc}): check the database before trusting it"
            ) from None

    def write(self, build: BuildFn, now_us: int) -> list[Event]:
        """Append the events `build` returns, and project them, in one transaction.

        `build` gets a reader on the write transaction, the time the events will carry
        (never earlier than the last event's: the journal's time only moves on) and the
        sequence number the first of them will get.
        Anything it raises leaves the ledger unchanged.

        Writes from concurrent threads commit in groups: the thread that takes the
        writer lock runs every write queued so far, each in its own savepoint (on
        PostgreSQL, first all in one pipeline: `_run_together`), and commits them
        together, so one durable commit serves the whole group.
        `build` may run more than once (a group run again after a serialization
        failure, or write by write after one of its writes failed): it must report
        what it built by replacing, not appending, so that its last run is what counts.
        """
        mine = _Pending(build, now_us)
        with self._queue_lock:
            self._queue.append(mine)
        if not self._lock.acquire(timeout=WRITE_WAIT_S):
            with self._queue_lock:
                queued = any(p is mine for p in self._queue)
                self._queue = [p for p in self._queue if p is not mine]
            if queued:
                raise StoreUnavailable(
                    f"{self.where}: this write waited {WRITE_WAIT_S:.0f} s for the writes "
                    "ahead of it (a long one, or a stuck process holding the writer lock); "
                    "nothing of it was recorded: try again"
                )
            self._lock.acquire()  # a group with this write in it runs: wait for its end
        try:
            if not mine.done:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._deadline = min(p.deadline for p in group)
                try:
                    self._commit_group(group)
                finally:
                    self._deadline = None
        finally:
            self._lock.release()
        if mine.error is not None:
            raise mine.error
        self._durable(mine.mark)
        return mine.events

    def _conflicted(self, attempt: int, what: str) -> None:
        """After attempt `attempt` of `what` failed to serialize: wait to run it again
        (2 ms doubling up to 0.2 s, jittered so the conflicting processes do not meet
        again), or give up with a clear error after the last attempt."""
        if attempt >= self.ATTEMPTS - 1:
            raise StoreUnavailable(
                f"{self.where}: {what} kept conflicting after {self.ATTEMPTS} attempts "
                "(serialization failures): try again"
            ) from None
        time.sleep(min(0.2, 0.002 * 2**attempt) * (0.5 + random.random()))

    def _reconnect(self) -> None:
        """Drop the connections a lost one may have company in (PostgreSQL's pool)."""

    def _commit_group(self, group: list[_Pending]) -> None:
        reconnected = False
        try:
            for attempt in range(self.ATTEMPTS):
                try:
                    self._run_group(group)
                    mark = self.durability.commit()
                    for item in group:
                        item.mark = mark
                    self.write_failure = None
                    return
                except self.RETRY:
                    self._conflicted(attempt, "writes")
                    self.retries += 1
                except self.RECONNECT:
                    if reconnected:
                        raise
                    reconnected = True  # once: a server that keeps ending them is away
                    self._reconnect()
                for item in group:
                    item.error, item.events = None, []
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else StoreUnavailable("write interrupted")
            if isinstance(failure, StoreUnavailable):
                self.write_failure = (time.monotonic(), failure.message)
            for item in group:
                if item.error is None:
                    item.error, item.events = failure, []
            if failure is not exc:
                raise
        finally:
            for item in group:
                item.done = True

    def _run_group(self, group: list[_Pending]) -> None:
        if len(group) == 1:
            self._run_one(group[0])
            return
        if self.PIPELINED and self._run_together(group):
            return
        with self._transaction_locked() as conn, self._pipelined(conn) as sync:
            reader = self._reader(conn)
            head = reader.head()
            for item in group:
                conn.execute("SAVEPOINT w")
                try:
                    after = self._apply(conn, reader, item, head)
                    conn.execute("RELEASE w")
                    sync()  # this write's errors surface here, while its savepoint stands
                    head = after
                except Exception as exc:  # this write fails alone; the group goes on
                    if self._fails_group(exc):
                        raise
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    item.error, item.events = self._item_error(exc), []

    def _run_together(self, group: list[_Pending]) -> bool:
        """The group's writes one after another in one pipeline, with no savepoint and
        no wait between them: a round trip is spent only where a write reads, and once at
        COMMIT. Where any write fails, nothing of the group is kept and this returns False:
        the group then runs again write by write (each in its savepoint, its errors read
        before the next begins), so that the failing write fails alone. A write's `build`
        may so run twice; only the last run's events are kept."""
        try:
            with self._transaction_locked() as conn:
                reader = self._reader(conn)
                head = reader.head()
                for item in group:
                    head = self._apply(conn, reader, item, head)
        except Exception as exc:
            if self._fails_group(exc) or isinstance(exc, StoreUnavailable):
                raise
            for item in group:
                item.events = []
            self.regrouped += 1
            return False
        return True

    def _run_one(self, item: _Pending) -> None:
        """A group of one write: no savepoint, as the transaction is the write's own and
        anything that fails rolls all of it back. Its error is reported as in a group:
        what the write raised, not how the transaction ended (PostgreSQL reports a
        statement's error at COMMIT, in the one round trip that ends the transaction)."""
        try:
            with self._transaction_locked() as conn:
                try:
                    reader = self._reader(conn)
                    self._apply(conn, reader, item, reader.head())
                except Exception as exc:
                    if self._fails_group(exc):
                        raise
                    item.error, item.events = self._item_error(exc), []
                    raise _RolledBack from None
        except _RolledBack:
            pass
        except Exception as exc:
            if self._fails_group(exc) or isinstance(exc, StoreUnavailable):
                raise  # the transaction failed, not the write: as for a group
            item.error, item.events = self._item_error(exc), []

    def _apply(self, conn: Conn, reader: Reader, item: _Pending, head: _Head) -> _Head:
        """Build one write's events on the journal's `head` and append them; the head
        after them. (Inside one transaction the head moves only by our own appends.)"""
        seq, last_at, prev = head
        reader.head_at = last_at  # we hold the writer lock: nothing is recorded later
        at = max(item.now_us, last_at)
        drafts = item.build(reader, at, seq + 1)
        item.events = self._append(conn, drafts, seq, at, prev or GENESIS)
        if not item.events:
            return head
        last = item.events[-1]
        return last.seq, last.at, last.hash

    def _before_import(self) -> None:
        """Make the empty tables ready for a whole journal (`import_events`)."""

    def _bulk(self, conn: Conn) -> None:
        """Set up a transaction that loads a whole journal (`import_events`)."""

    def _fails_group(self, exc: BaseException) -> bool:
        """Whether `exc`, raised by one write, fails its whole group (`FATAL`) or runs
        the group again (`RETRY`), rather than failing that write alone."""
        return isinstance(exc, self.FATAL + self.RETRY)

    def _item_error(self, exc: Exception) -> Exception:
        """The error one failed write reports (a store may translate database errors)."""
        return exc

    def _append(
        self, conn: Conn, drafts: Sequence[Draft], seq: int, at: int, prev: bytes
    ) -> list[Event]:
        events = []
        for d in drafts:
            seq += 1
            payload = canonical(d.payload)
            check_no_nul(d.payload, payload)
            refuse_tokens(payload)  # pasted where a subject or value goes: kept out
            h = link(prev, seq, at, d.actor, d.kind, payload)
            ev = Event(seq, at, d.actor, d.kind, payload, h)
            conn.execute(
                "INSERT INTO journal (seq, at, actor, kind, payload, hash) VALUES (?,?,?,?,?,?)",
                (seq, Us(at), d.actor, d.kind, payload, h),
            )
            projector.apply(conn, ev, d.payload)
            events.append(ev)
            prev = h
        return events

    def backfill(self, timed: Iterable[tuple[int, Draft]], chunk: int = 20_000) -> int:
        """Append drafts at given times (never earlier than the head), `chunk` per commit.

        For generated histories (benchmarks, simulations): the events are chained and
        projected exactly like live ones, but the caller chooses their times.
        """
        it = iter(timed)
        total = 0
        while True:
            batch = list(itertools.islice(it, chunk))
            if not batch:
                return total
            with self._transaction() as conn:
                seq, last_at, prev = self._reader(conn).head()
                prev = prev or GENESIS
                for at, d in batch:
                    if at < last_at:
                        raise InvalidInput(f"backfill time {at} is before the journal head")
                    last_at = at
                    prev = self._append(conn, [d], seq, at, prev)[0].hash
                    seq += 1
            total += len(batch)

    def import_events(
        self,
        events: Iterable[Event],
        *,
        raised_until: int | None = None,
        scanned_at: int | None = None,
    ) -> int:
        """Load a verified journal into this empty store, projecting every event.

        Notifications from the events up to `raised_until` (all of them when None) were
        raised where the journal comes from, so they are not delivered from here again;
        the gardener looks for expiries after `scanned_at` (the last event's time when
        None) rather than over the day before it starts.
        """
        self._before_import()
        try:
            return self._import(events, raised_until, scanned_at)
        except (Conflict, IntegrityError, InvalidInput):
            raise
        except Exception as exc:  # found at COMMIT (PostgreSQL's pipeline): no event named
            refused = self._item_error(exc)
            if not isinstance(refused, InvalidInput):
                raise
            raise InvalidInput(
                f"the journal cannot be stored in {self.where}: {refused.message}; "
                "nothing was stored"
            ) from None

    def _import(
        self, events: Iterable[Event], raised_until: int | None, scanned_at: int | None
    ) -> int:
        with self._transaction() as conn:
            if self._reader(conn).head()[0] != 0:
                raise Conflict(f"{self.where} is not empty: import into a fresh ledger")
            self._bulk(conn)
            count = 0
            last: Event | None = None
            for ev in events:
                if ev.kind not in EventKind.ALL:
                    raise IntegrityError(f"event {ev.seq} has unknown kind {ev.kind!r}")
                if last is not None and ev.at < last.at:
                    # every store records an event at its predecessor's time or later,
                    # and lists rely on it (time order is journal order)
                    raise IntegrityError(
                        f"event {ev.seq} is recorded before event {last.seq}, the one ahead"
                        " of it: no ledger writes a journal whose time goes back; nothing"
                        " was stored"
                    )
                try:
                    conn.execute(
                        "INSERT INTO journal (seq, at, actor, kind, payload, hash)"
                        " VALUES (?,?,?,?,?,?)",
                        (ev.seq, Us(ev.at), ev.actor, ev.kind, ev.payload, ev.hash),
                    )
                    projector.apply(conn, ev, ev.data())
                except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
                    # a chain that verifies, around a payload this version cannot read
                    # (edited and chained again, or written by a newer version)
                    why = shorten(f"{type(exc).__name__}: {exc}", 160)
                    raise InvalidInput(
                        f"event {ev.seq} ({ev.kind}) is not one this version can read"
                        f" ({why}); nothing was stored"
                    ) from None
                except Exception as exc:
                    refused = self._item_error(exc)
                    if not isinstance(refused, InvalidInput):
                        raise
                    raise InvalidInput(
                        f"event {ev.seq} ({ev.kind}) cannot be stored in {self.where}: "
                        f"{refused.message}; nothing was stored"
                    ) from None
                count += 1
                last = ev
            if last is not None:
                raised = last.seq if raised_until is None else min(raised_until, last.seq)
                scanned = last.at if scanned_at is None else scanned_at
                conn.executemany(
                    "INSERT INTO gardener (name, cursor, updated_at, scanned_at)"
                    " VALUES (?, ?, ?, ?)",
                    [
                        (RAISED_ELSEWHERE, raised, Us(last.at), None),
                        (GARDENER, 0, Us(last.at), Us(scanned)),
                    ],
                )
            return count

    def verify(self) -> VerifyReport:
        # Every row, whatever its seq: `events()` reads seq > 0, so a row whose seq was
        # changed to 0 or below would otherwise escape the check.
        return verify_rows(self._journal_rows())

    def _journal_rows(self) -> Iterator[tuple[int, int, str, str, str, bytes]]:
        last = -(2**63)
        while True:
            rows = self.conn.execute(
                "SELECT seq, at, actor, kind, payload, hash FROM journal WHERE seq > ?"
                " ORDER BY seq LIMIT 2000",
                (last,),
            ).fetchall()
            if not rows:
                return
            yield from rows
            last = rows[-1][0]

    @staticmethod
    def replay(conn: Conn, events: Iterable[Event]) -> int:
        """Project `events` into the (fresh) tables `conn` writes to; how many."""
        return SQLStore.replay_to(conn, events)[0]

    @staticmethod
    def replay_to(conn: Conn, events: Iterable[Event]) -> tuple[int, int]:
        """`replay`: how many, and the seq of the last (0: none), where a replay that
        catches up with later writes goes on from."""
        count = last = 0
        for ev in events:
            if ev.kind not in EventKind.ALL:
                raise IntegrityError(f"event {ev.seq} has unknown kind {ev.kind!r}")
            projector.apply(conn, ev, ev.data())
            count, last = count + 1, ev.seq
        return count, last

    # -- the job queue ---------------------------------------------------------------

    def enqueue_job(
        self, queue: str, payload: object, now_us: int, run_after_us: int | None = None
    ) -> int:
        """Add a job to `queue`, ready at `run_after_us` (default: now); its id."""
        with self._jobs_transaction() as conn:
            row = conn.execute(
                "INSERT INTO jobs (queue, payload, state, attempts, run_after, created_at)"
                " VALUES (?, ?, 'ready', 0, ?, ?) RETURNING id",
                (queue, canonical(payload), Us(run_after_us or now_us), Us(now_us)),
            ).fetchone()
        return int(row[0])

    def lease_job(self, queue: str, worker: str, now_us: int, lease_us: int) -> Job | None:
        """Lease the next ready job of `queue` (or one whose lease ran out) to `worker`."""
        with self._jobs_transaction() as conn:
            row = conn.execute(
                "UPDATE jobs SET state = 'leased', leased_by = ?, lease_until = ?,"
                " attempts = attempts + 1 WHERE id = (SELECT id FROM jobs WHERE queue = ?"
                " AND ((state = 'ready' AND run_after <= ?) OR (state = 'leased'"
                f" AND lease_until < ?)) ORDER BY run_after, id LIMIT 1{self.SKIP_LOCKED})"
                " RETURNING id, queue, payload, attempts",
                (worker, Us(now_us + lease_us), queue, Us(now_us), Us(now_us)),
            ).fetchone()
        if row is None:
            return None
        return Job(id=row[0], queue=row[1], payload=orjson.loads(row[2]), attempts=row[3])

    def complete_job(self, job_id: int, worker: str, now_us: int) -> None:
        self._settle(job_id, worker, "state = 'done', done_at = ?", [Us(now_us)])

    def fail_job(
        self, job_id: int, worker: str, now_us: int, error: str, retry_in_us: int | None
    ) -> None:
        """Record a failure: ready again after `retry_in_us`, or failed for good if None."""
        if retry_in_us is None:
            self._settle(job_id, worker, "state = 'failed', done_at = ?, error = ?",
                         [Us(now_us), error])  # fmt: skip
        else:
            self._settle(job_id, worker, "state = 'ready', run_after = ?, error = ?",
                         [Us(now_us + retry_in_us), error])  # fmt: skip

    def _settle(self, job_id: int, worker: str, assignments: str, args: list[object]) -> None:
        with self._jobs_transaction() as conn:
            row = conn.execute(
                f"UPDATE jobs SET {assignments}, leased_by = NULL, lease_until = NULL"
                " WHERE id = ? AND state = 'leased' AND leased_by = ? RETURNING id",
                (*args, job_id, worker),
            ).fetchone()
        if row is None:
            raise NotFound(
                f"job {job_id} is not leased to {worker}: its lease ran out or it is done"
            )

    def jobs(self, queue: str, limit: int = 100, before: int | None = None) -> list[JobRecord]:
        """The newest `limit` jobs of `queue`, newest first, whatever their state; with
        `before`, those queued before the job of that id."""
        below, args = ("", [queue]) if before is None else (" AND id < ?", [queue, before])
        rows = self.conn.execute(
            "SELECT id, queue, payload, state, attempts, run_after, created_at, done_at, error"
            f" FROM jobs WHERE queue = ?{below} ORDER BY id DESC LIMIT ?",
            [*args, limit],
        ).fetchall()
        return [
            JobRecord.model_construct(
                id=r[0],
                queue=r[1],
                payload=orjson.loads(r[2]),
                state=r[3],
                attempts=r[4],
                run_after=from_us(r[5]),
                created_at=from_us(r[6]),
                done_at=None if r[7] is None else from_us(r[7]),
                error=r[8],
            )
            for r in rows
        ]
