"""The SQLite store: the embedded default (DESIGN §3).

WAL mode: an acknowledged write is on disk. One writer per store, serialised by a
lock and ``BEGIN IMMEDIATE`` (which also serialises other processes on the same file);
each read thread has its own connection. Every write appends events to the journal and
projects them in the same transaction.

The writer commits with ``synchronous=NORMAL`` (the WAL is written, not synced) and
releases its locks; the WAL file is then synced with ``fdatasync`` before the write is
acknowledged (`SQLStore` shares one sync among the writes waiting for it). That is the
durability of ``synchronous=FULL`` without holding the lock through the sync, so other
threads and processes write meanwhile. ``defer_flush=False`` keeps SQLite's own
``synchronous=FULL`` commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import ClassVar, TypeVar
from urllib.parse import quote

from episteme.errors import Conflict, StoreUnavailable
from episteme.ledger.journal import Draft
from episteme.ledger.records import RebuildReport
from episteme.ledger.sql import projector
from episteme.ledger.sql.base import WRITE_WAIT_S, Durability, SQLStore
from episteme.ledger.store import StoreReader

APPLICATION_ID = 0x45505354  # "EPST": marks the file as an Episteme ledger
MIGRATIONS = (
    "0001_init.sql",
    "0002_access.sql",
    "0003_jobs.sql",
    "0004_gardener.sql",
    "0005_diagnosis.sql",
    "0006_search_text.sql",
    "0007_list_order.sql",
    "0008_constraint_tags.sql",
)
SCHEMA_VERSION = len(MIGRATIONS)
WAL_RESTART_FRAMES = 65_536
"""Pages (of 4 KiB) the WAL may hold before a checkpoint round starts it over."""

_T = TypeVar("_T")


def _connect(path: Path | str) -> sqlite3.Connection:
    """A connection to the file at `path`, or to a ``file:`` URI."""
    uri = isinstance(path, str) and path.startswith("file:")
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=30.0, uri=uri
    )
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA cache_size = -65536")
    except BaseException:
        conn.close()  # e.g. a file that is not a database
        raise
    return conn


def _connect_read_only(path: Path) -> tuple[sqlite3.Connection, str, bool]:
    """A connection that cannot write to the ledger at `path`, the URI that opened it
    (its readers open the same), and whether that is as immutable.

    SQLite reads a WAL-mode file through its shared-memory file (``-shm``), which it
    creates when absent. Where this user may not create it (read-only media, a home
    another user owns), a file that no process has open (no ``-shm``) and whose log is
    empty is opened as immutable: as it is on disk, which `SQLiteStore` then checks no
    writer changes. One whose ``-shm`` exists (a process has it open, or had) or whose
    log holds commits is refused: it would be read without them.
    """
    base = f"file:{quote(str(path))}?mode=ro"
    try:
        conn = _connect(base)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn, base, False
    except sqlite3.OperationalError as exc:
        # read-only media answer CANTOPEN; a directory this user may not write, READONLY
        if _code(exc) not in ("SQLITE_CANTOPEN", "SQLITE_READONLY"):
            raise
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    logged = wal.exists() and wal.stat().st_size > 0
    if logged or shm.exists():
        why = f"its write-ahead log {wal.name} holds commits" if logged else "a process has it open"
        raise StoreUnavailable(
            f"cannot read the ledger at {path}: {why}, and SQLite reads it then only "
            f"through {shm.name}, which this user cannot open or create there: give this "
            f"user read access to the home's files ({wal.name} and {shm.name} too), or "
            "copy the home's files to a directory you may write, and read the copy"
        )
    uri = f"{base}&immutable=1"
    return _connect(uri), uri, True


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """A file's identity, size and modification time; None when there is none."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _schema_sql(name: str) -> str:
    return resources.files("episteme.ledger.sqlite").joinpath(name).read_text()


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables of a fresh ledger file."""
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn, mark=True)


def migrate(conn: sqlite3.Connection, *, mark: bool = False) -> None:
    """Apply the migrations this file lacks, in one transaction.

    The version is read inside the transaction: when several processes open an old
    file at once, the first upgrades it and the others find nothing left to do.
    `mark` also stamps the file as a ledger (a fresh file), in the same transaction.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if mark:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for name in MIGRATIONS[version:]:
            for statement in _split(_schema_sql(name)):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        _roll_back(conn)
        raise


def _split(script: str) -> list[str]:
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class _Checkpointer:
    """Copies the WAL back into the database on its own thread and connection.

    SQLite's automatic checkpoint runs inside the commit that crosses its threshold,
    so one audited read in a few hundred would pay for copying and syncing megabytes.
    Here commits only count; a thread checkpoints (PASSIVE: it never blocks writers)
    every `every` commits or `interval` seconds. Should it fall behind by `limit`
    commits (a thread stuck or stopped), the writer checkpoints itself.

    Once the WAL holds `WAL_RESTART_FRAMES` pages and a round copied all it found,
    `rest` copies what was committed during the round, with writers held off. SQLite
    starts the WAL over only at a write that finds it copied whole up to its last
    commit; under a steady stream of writes that moment never comes by itself, and the
    file would grow by every commit's pages for as long as the stream lasts. SQLite
    also syncs the database file only after a checkpoint that copied everything, which
    under such a stream is `rest`: the thread syncs the file first, unlocked, so that
    writers wait for the pages `rest` copies and not for the whole round's. The bound
    is high because that sync costs throughput (docs/ledger.md).
    """

    def __init__(
        self,
        path: Path,
        rest: Callable[[sqlite3.Connection], None],
        every: int = 200,
        interval: float = 1.0,
        limit: int = 20_000,
    ) -> None:
        self._conn = _connect(path)
        try:
            self._db = os.open(path, os.O_RDONLY)
        except BaseException:
            self._conn.close()
            raise
        self._rest = rest
        self._every, self._interval, self._limit = every, interval, limit
        self._pending = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="episteme-checkpoint", daemon=True)
        try:
            self._thread.start()
        except BaseException:
            self._release()
            raise

    def committed(self) -> bool:
        """Count a commit; True when the writer must checkpoint inline."""
        self._pending += 1
        if self._pending >= self._every:
            self._wake.set()
        if self._pending >= self._limit:
            self._pending = 0
            return True
        return False

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._wake.wait(self._interval)
                self._wake.clear()
                if self._pending and not self._stopping:
                    self._pending = 0
                    self._round()
        finally:
            self._release()  # the thread owns its connection: it closes it as it ends

    def _round(self) -> None:
        # busy or locked: the next round (or the writer's bound) catches up
        with contextlib.suppress(sqlite3.OperationalError, StoreUnavailable, OSError):
            busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            whole = not busy and frames == copied
            if whole and frames >= WAL_RESTART_FRAMES:
                os.fdatasync(self._db)
                if not self._stopping:  # the store may be closing its locks
                    self._rest(self._conn)

    def _release(self) -> None:
        try:
            self._conn.close()
        finally:
            os.close(self._db)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the thread, waiting at most 10 s for the round it is in to end; it closes
        its connection and descriptor itself, so a round still running keeps them."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)


class _Reader:
    """A thread's read connection, kept in the thread's locals: it closes as the thread
    ends (a connection alone would wait for the garbage collector: it is in a cycle with
    its statement cache), or when the store closes, whichever comes first."""

    __slots__ = ("__weakref__", "conn", "owner")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.owner = threading.current_thread()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def _code(exc: sqlite3.Error) -> str:
    """SQLite's primary result code of an error (``SQLITE_FULL``; extended codes such as
    ``SQLITE_IOERR_WRITE`` read as their primary), or "" when unknown."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    parts = name.split("_")
    return "_".join(parts[:2]) if len(parts) > 2 else name


_WHY_NOT = {
    "SQLITE_FULL": " (free space on its disk, then retry)",
    "SQLITE_READONLY": " (the file or its directory is read-only here)",
    "SQLITE_IOERR": " (the disk failed or the file was changed under the ledger)",
    "SQLITE_CANTOPEN": " (check that it and its directory are writable by this user)",
    "SQLITE_BUSY": " (another process held it for 30 s: retry when it is done)",
}


def _why_not(path: Path, exc: sqlite3.DatabaseError, default: str = "") -> str:
    """What to do about SQLite's `exc` on `path`. A full disk is often said as an I/O
    error (SQLite cannot make the shared-memory file it opens a WAL database with), so
    the disk's free space is looked at before that is believed."""
    code = _code(exc)
    if code in ("SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_FULL") and _full(path):
        return " (its disk is full: free space on it, then retry)"
    return _WHY_NOT.get(code, default)


def _full(path: Path) -> bool:
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


def _unopenable(
    path: Path, exc: sqlite3.DatabaseError, *, creating: bool, reading: bool = False
) -> StoreUnavailable:
    """Why a ledger file could not be opened, by what SQLite said."""
    code = _code(exc)
    if code == "SQLITE_NOTADB":
        return StoreUnavailable(
            f"{path} is not an Episteme ledger ({exc}): point --home at a ledger home "
            "or run `episteme init` in an empty directory"
        )
    if code == "SQLITE_CORRUPT":
        return StoreUnavailable(f"{path} is damaged ({exc}): restore the ledger from a backup")
    if reading and not _full(path):
        hint = " (check that this user may read it and its directory)"
    else:
        hint = _why_not(path, exc, " (check that its directory is writable and has space)")
    verb = "create" if creating else "open"
    return StoreUnavailable(f"cannot {verb} the ledger at {path}: {exc}{hint}")


def _while_busy(work: Callable[[], None], limit: float = 30.0) -> None:
    """`work`, again while another process holds the file. SQLite answers some of what
    creating a ledger does (switching it to WAL while another process creates it too)
    with SQLITE_BUSY at once, without waiting out its busy timeout."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return work()
        except sqlite3.OperationalError as exc:
            if _code(exc) != "SQLITE_BUSY" or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def is_blank(path: Path) -> bool:
    """Whether `path` is a SQLite file that holds nothing yet: empty, or as a creation
    left it before its first transaction (one that died, or one under way now, which the
    creation's own lock then waits for)."""
    try:
        if path.stat().st_size == 0:
            return True
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30.0)
    except (OSError, sqlite3.Error):
        return False  # opening it says what is wrong
    try:
        return _blank(conn)
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def _marked(path: Path) -> bool:
    """Whether `path` is a SQLite file that says it is an Episteme ledger."""
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30.0)
    except (OSError, sqlite3.Error):
        return False
    try:
        return bool(conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID)
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def _blank(conn: sqlite3.Connection) -> bool:
    marks = conn.execute("SELECT * FROM pragma_application_id, pragma_user_version").fetchone()
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    return bool(marks == (0, 0) and tables == 0)


def _roll_back(conn: sqlite3.Connection) -> None:
    """Roll back what is left of a failed write. SQLite may already have rolled it
    back (a full disk, an I/O error), and its failure must not hide the first one."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class SQLiteStore(SQLStore):
    """A ledger in one SQLite file."""

    FATAL = (sqlite3.OperationalError,)
    """A full disk, an I/O error, a read-only file: the whole group fails (SQLite may have
    rolled back the transaction, savepoints and all), never one write inside it."""
    SCHEMA_VERSION = SCHEMA_VERSION
    SINCE: ClassVar[dict[str, int]] = {
        "gardener": MIGRATIONS.index("0004_gardener.sql") + 1,
        "diagnosis": MIGRATIONS.index("0005_diagnosis.sql") + 1,
    }

    def __init__(
        self, path: Path, *, create: bool = False, defer_flush: bool = True, read_only: bool = False
    ) -> None:
        super().__init__()
        assert not (create and read_only)
        self.path = path
        self.url = f"sqlite:///{path}"
        self.where = str(path)
        self.created = create
        self.schema_version = SCHEMA_VERSION
        self.remote = False
        self.migrated_from: int | None = None
        self.read_only = read_only
        self._uri: str | Path = path  # what each reader connects to
        self._still: tuple[object, ...] | None = None
        """Read as immutable: the stamps of its files, which no writer may change."""
        made = False  # whether this created the file (removed again if creating fails)
        try:
            is_dir = path.is_dir()
        except OSError as exc:  # a home whose directory this user may not search
            raise StoreUnavailable(
                f"cannot reach {path}: {(exc.strerror or str(exc)).lower()}; check that "
                "this user may open its directory"
            ) from None
        if is_dir:
            raise StoreUnavailable(
                f"{path} is a directory, not a ledger file: move it away, or use another home"
            )
        if create:
            if path.exists() and not is_blank(path):
                if _marked(path):
                    raise Conflict(f"{path} already exists: it already holds a ledger")
                raise Conflict(
                    f"{path} already exists and is not an Episteme ledger: init leaves it "
                    "as it is; move it away, or give another home"
                )
            made = not path.exists()
            try:
                # the home and the ledger are the owner's alone: they hold every value,
                # source and refusal agents recorded (SQLite gives the WAL the same mode)
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if made:
                    try:
                        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                    except FileExistsError:  # another process creating it too: theirs
                        made = False
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot create the home {path.parent}: {exc.strerror or exc}"
                ) from None
        elif not path.exists():
            raise StoreUnavailable(f"no ledger at {path}: run `episteme init` first")
        elif path.stat().st_size == 0:
            raise StoreUnavailable(
                f"{path} is empty (0 bytes), not a ledger: run `episteme init` to start a "
                "new one there, or restore it from a backup"
            )
        self._local = threading.local()
        self._closed = False
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()  # held by their threads
        self._readers_lock = threading.Lock()
        self._leaderships: list[_FileLeadership] = []
        self._checkpointer: _Checkpointer | None = None
        self._wal = -1
        self._wal_lock = threading.Lock()
        self._flock = -1
        self._files: dict[str, tuple[int, int]] | None = None
        """The identity (device, inode) of the database file, its WAL and its
        shared-memory file, as this process's writes found them first: see `_intact`."""
        if read_only:
            self._open_read_only()
            return
        try:
            self._wconn = _connect(path)
            try:
                if create:
                    _while_busy(lambda: create_schema(self._wconn))
                version = self._check(self._wconn)
                if version < SCHEMA_VERSION:
                    _while_busy(lambda: migrate(self._wconn))
                    self.migrated_from = version
                self._wconn.execute("PRAGMA journal_mode = WAL")
                # checkpoints run on their own thread, not inside a commit: see _Checkpointer
                self._wconn.execute("PRAGMA wal_autocheckpoint = 0")
                if defer_flush:  # the WAL is synced after the lock is released: _sync_wal
                    self._wconn.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                self._wconn.close()  # a refused file must not keep a connection open
                raise
        except sqlite3.DatabaseError as exc:
            # a half-made ledger (a full disk) would block the next `init`; but another
            # process may have made it since, and be writing to it
            if made and is_blank(path):
                for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    leftover.unlink(missing_ok=True)
            raise _unopenable(path, exc, creating=create) from None
        try:
            self._flock = os.open(f"{path}-lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self._wconn.close()
            raise StoreUnavailable(f"cannot create the lock file beside {path}: {exc}") from None
        if defer_flush:
            self.durability = Durability(self._sync_wal)

    def _open_read_only(self) -> None:
        """Open without writing to the ledger: no migration, no lock file, and every
        connection read-only. An older schema is kept as found (`schema_version`): its
        journal can be read and verified; its projections cannot (`reading` says so)."""
        stamps = self._stamps()  # before the look for a -shm: a writer since is seen
        try:
            self._wconn, self._uri, immutable = _connect_read_only(self.path)
        except sqlite3.DatabaseError as exc:
            raise _unopenable(self.path, exc, creating=False, reading=True) from None
        try:
            self._wconn.execute("PRAGMA query_only = 1")
            self.schema_version = self._check(self._wconn)
            if immutable:
                self._still = stamps
                self._unchanged()
        except BaseException:
            self._wconn.close()
            raise

    def _stamps(self) -> tuple[object, ...]:
        return tuple(_stamp(Path(f"{self.path}{end}")) for end in ("", "-wal", "-shm"))

    def _unchanged(self) -> None:
        """Read as immutable, SQLite takes no lock and sees no commit: a process that
        wrote the ledger meanwhile (it cannot have been writing when it was opened) makes
        what was read unreliable, and the read fails rather than answer from it."""
        if self._still is not None and self._stamps() != self._still:
            raise StoreUnavailable(
                f"the ledger at {self.path} was written while it was read as it was on disk"
                " (this user may not open the files through which SQLite follows a writer):"
                " read it again once nothing writes it, or as a user who may"
            )

    def _sync_wal(self) -> None:
        """Make every commit in the WAL durable: ``fdatasync`` of the WAL file.

        The descriptor is reopened when the file was replaced (SQLite deletes the WAL
        when the last connection closes; ours keep it open, but another program may
        have). SQLite fsyncs the WAL before a checkpoint copies it and the database
        after, so a commit already checkpointed is durable in the database file.
        """
        wal = f"{self.path}-wal"
        with self._wal_lock:  # close() closes the descriptor under it, never mid-sync
            try:
                current = os.stat(wal).st_ino
            except FileNotFoundError:
                return  # no WAL: all committed was checkpointed (and synced) into the file
            if self._closed:  # a commit that made it in as the store closed: sync it too
                fd = os.open(wal, os.O_RDONLY)
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
                return
            if self._wal < 0 or os.fstat(self._wal).st_ino != current:
                if self._wal >= 0:
                    os.close(self._wal)
                self._wal = os.open(wal, os.O_RDONLY)
            os.fdatasync(self._wal)

    def _check(self, conn: sqlite3.Connection) -> int:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app != APPLICATION_ID and _blank(conn):
            raise StoreUnavailable(
                f"{self.path} holds no ledger yet (its creation did not finish): run "
                "`episteme init` to start one there"
            )
        if app != APPLICATION_ID:
            raise StoreUnavailable(
                f"{self.path} is a SQLite file but not an Episteme ledger: "
                "point --home at a ledger home or run `episteme init` in an empty directory"
            )
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"{self.path} has schema version {version}, newer than this episteme "
                f"({SCHEMA_VERSION}): upgrade episteme"
            )
        return int(version)

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's reader (opened on its first read; it closes when the thread ends)."""
        if self._still is not None:  # read as immutable: the statement before read reliably
            self._unchanged()
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None or self._closed:
            return self._new_reader(reader)
        return reader.conn

    def _new_reader(self, reader: _Reader | None) -> sqlite3.Connection:
        if self._closed:
            if reader is not None:  # this thread's own, which close() left to this thread
                self._local.reader = None
                reader.conn.close()
            self._check_open()
        conn = _connect(self._uri)
        conn.execute("PRAGMA query_only = 1")
        self._local.reader = reader = _Reader(conn)
        with self._readers_lock:
            self._readers.add(reader)
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"the ledger at {self.path} was closed")

    def reading(self, read: Callable[[StoreReader], _T], *, snapshot: bool = True) -> _T:
        """`read` in one snapshot: its statements run in one read transaction on this
        thread's reader, so a write committed meanwhile is seen by all of them or none."""
        self.check_current()
        conn = self.conn
        if not snapshot or conn.in_transaction:  # a read inside a read is in its snapshot
            done = read(self)
            self._unchanged()
            return done
        conn.execute("BEGIN")
        try:
            done = read(self)
        finally:
            conn.execute("COMMIT")  # it wrote nothing: this only ends the snapshot
        self._unchanged()
        return done

    def close(self) -> None:
        """Close the store without closing a connection that another thread may be
        using (that can crash the process): the writer connection closes under the writer
        lock, after a write under way; a reader closes now if it is this thread's or its
        thread has ended, else at its thread's next read (which raises StoreUnavailable)
        or as that thread ends."""
        with self._lock:  # a write under way ends first, and none starts a checkpointer
            self._closed = True
            checkpointer, self._checkpointer = self._checkpointer, None
        for lead in self._leaderships:
            lead.release()
        if checkpointer is not None:
            checkpointer.close()
        me = threading.current_thread()
        with self._readers_lock:
            readers = list(self._readers)
        for reader in readers:
            if reader.owner is me or not reader.owner.is_alive():
                reader.conn.close()
        self._local.reader = None
        with self._lock:
            self._wconn.close()
        if self._flock >= 0:
            os.close(self._flock)
            self._flock = -1
        with self._wal_lock:
            if self._wal >= 0:
                os.close(self._wal)
                self._wal = -1

    def probe(self, timeout: float = 2.0) -> int:
        return self.probe_reading(lambda r: r.head()[0])

    def _intact(self) -> None:
        """Refuse to write when the ledger's files were removed or replaced under this
        process. While its connections are open, SQLite keeps the WAL and the
        shared-memory file where they are: one gone (deleted by hand, a clean-up job) or
        another in its place means this process writes where no other process reads,
        into a WAL that is not the file's, and what it acknowledged would be lost when
        it stops. The first write records them; each write checks them (three `stat`s)."""
        files = {}
        for suffix in ("", "-wal", "-shm"):
            try:
                st = os.stat(f"{self.path}{suffix}")
                files[suffix] = (st.st_dev, st.st_ino)
            except FileNotFoundError:
                files[suffix] = (-1, -1)
        if self._files is None:
            if (-1, -1) not in files.values():  # else recorded once SQLite has made them
                self._files = files
            return
        changed = [
            f"{self.path.name}{s}" for s, ident in self._files.items() if files.get(s) != ident
        ]
        if changed:
            raise StoreUnavailable(
                f"the ledger's files were removed or replaced under this process"
                f" ({', '.join(changed)}): nothing of this write was recorded; stop this"
                " process and start it again (what it wrote since the change may be lost,"
                " then run `episteme verify`)"
            )

    def probe_reading(self, read: Callable[[StoreReader], _T], timeout: float = 2.0) -> _T:
        if self._files is not None:  # this process writes: are its files still the ledger's?
            self._intact()
        return read(self)  # local reads: they answer or fail at once

    def workers(self) -> dict[str, str]:
        """The store's background threads and their state (for `/health`)."""
        cp = self._checkpointer
        if cp is None:
            return {"checkpointer": "idle: starts with the first write"}
        return {"checkpointer": "running" if cp.alive() else "stopped"}

    # -- writing ---------------------------------------------------------------------

    @contextmanager
    def _transaction_locked(self) -> Iterator[sqlite3.Connection]:
        self._check_open()
        self._writable()
        conn = self._wconn
        # Processes on one file (API workers) queue on a file lock polled in steps of
        # at most 2 ms: SQLite's own busy handler sleeps in steps growing to 100 ms and
        # wakes late, so two writers would spend most of their time asleep. BEGIN
        # IMMEDIATE still guards against writers that skip this lock (the sqlite3 shell).
        with self._file_locked(self._lock_wait()):
            self._intact()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"cannot write to {self.path}: {exc}") from None
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # disk full, I/O error, a lost lock
                _roll_back(conn)
                raise StoreUnavailable(
                    f"cannot write to {self.path}: {exc}{_why_not(self.path, exc)}; "
                    "nothing of this write was recorded"
                ) from None
            except BaseException:
                _roll_back(conn)
                raise
        # Committed: nothing below may turn the write into a reported failure.
        with contextlib.suppress(sqlite3.Error, OSError, RuntimeError):
            if self._checkpointer is None:  # under the writer lock, so not after close()
                self._checkpointer = _Checkpointer(self.path, self._checkpoint_rest)
            if self._checkpointer.committed():
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # it fell behind: catch up here

    def _checkpoint_rest(self, conn: sqlite3.Connection) -> None:
        """A checkpoint on `conn` with this process's writers and other processes' held
        off (see `_Checkpointer`): afterwards the WAL holds nothing the database lacks,
        and the next write starts it from its beginning."""
        with self._lock, self._file_locked(timeout=5.0):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    @contextmanager
    def _file_locked(self, timeout: float) -> Iterator[None]:
        """Hold the file lock, waiting at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while True:
            try:
                fcntl.flock(self._flock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(
                        f"{self.path} stayed locked by another writer: check for a stuck "
                        f"import, backfill or stopped process (a write waits {WRITE_WAIT_S:.0f}"
                        " s at most to start)"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.002)
        try:
            yield
        finally:
            fcntl.flock(self._flock, fcntl.LOCK_UN)

    def backfill(self, timed: Iterable[tuple[int, Draft]], chunk: int = 20_000) -> int:
        # a bulk load touches index pages all over: give it a bigger page cache (set under
        # the writer lock: the connection is the writers')
        with self._lock:
            self._check_open()
            self._writable()
            self._wconn.execute("PRAGMA cache_size = -524288")
        try:
            return super().backfill(timed, chunk)
        finally:
            with self._lock, contextlib.suppress(sqlite3.ProgrammingError):  # closed since
                self._wconn.execute("PRAGMA cache_size = -65536")

    def leadership(self, name: str) -> _FileLeadership:
        """Leadership of `name` among the processes on this file: a lock file beside it."""
        self._writable()
        lead = _FileLeadership(name, Path(f"{self.path}-lead-{name}"))
        self._leaderships.append(lead)
        return lead

    # -- integrity -------------------------------------------------------------------

    def rebuild(self, repair: bool = False) -> RebuildReport:
        """Replay the journal into fresh projections; compare; optionally replace.

        One rebuild of a file runs at a time (a lock file beside it): two used to share
        the scratch file, each deleting the other's, and one could replace every
        projection with empty tables. The replay catches up under the writer lock (this
        process's and the file lock other processes' writers take) before comparing, so
        writes that land meanwhile are neither reported as differences nor, repaired,
        lost.
        """
        self._writable()
        fresh_path = self.path.with_name(self.path.name + ".rebuild")
        scratch = [Path(f"{fresh_path}{suffix}") for suffix in ("", "-wal", "-shm")]
        lock = _FileLeadership("rebuild", Path(f"{self.path}-rebuild.lock"))
        if not lock.acquire():
            raise StoreUnavailable(
                f"another rebuild of {self.path} is running: wait for it to finish"
            )
        try:
            for left in scratch:  # what a rebuild killed part way left: this one holds the lock
                left.unlink(missing_ok=True)
            return self._rebuild_into(fresh_path, repair)
        finally:
            for left in scratch:
                left.unlink(missing_ok=True)
            lock.release()

    def _rebuild_into(self, fresh_path: Path, repair: bool) -> RebuildReport:
        fresh = _connect(fresh_path)
        try:
            fresh.execute("PRAGMA synchronous = OFF")
            create_schema(fresh)
            fresh.execute("BEGIN")
            count, seen = self.replay_to(fresh, self.events())
            fresh.execute("COMMIT")
            with self._lock, self._file_locked(self._lock_wait()):
                # no writer of this file commits now: the events since the replay
                fresh.execute("BEGIN")
                count += self.replay_to(fresh, self.events(after_seq=seen))[0]
                fresh.execute("COMMIT")
                fresh.close()
                conn = self._wconn
                conn.execute("ATTACH DATABASE ? AS fresh", (str(fresh_path),))
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        diffs = {t: _difference(conn, t) for t in projector.PROJECTIONS}
                        diffs = {t: n for t, n in diffs.items() if n}
                        if repair and diffs:
                            _replace_projections(conn)
                        conn.execute("COMMIT")
                    except BaseException:
                        _roll_back(conn)
                        raise
                finally:
                    conn.execute("DETACH DATABASE fresh")
                mark = self.durability.commit()
            self._durable(mark)
            return RebuildReport(
                ok=not diffs, events=count, differences=diffs, repaired=bool(repair and diffs)
            )
        finally:
            fresh.close()


class _FileLeadership:
    """An exclusive `flock` on a file of its own, held until released or the process ends."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self._path = name, path
        self._fd = -1

    def acquire(self) -> bool:
        if self._fd >= 0:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = -1


def _replace_projections(conn: sqlite3.Connection) -> None:
    for t in projector.PROJECTIONS:
        conn.execute(f"DELETE FROM main.{t}")
        conn.execute(f"INSERT INTO main.{t} SELECT * FROM fresh.{t}")
    conn.execute("INSERT INTO assertions_fts(assertions_fts) VALUES('rebuild')")


def _difference(conn: sqlite3.Connection, table: str) -> int:
    one = conn.execute(
        f"SELECT count(*) FROM (SELECT * FROM main.{table} EXCEPT SELECT * FROM fresh.{table})"
    ).fetchone()[0]
    two = conn.execute(
        f"SELECT count(*) FROM (SELECT * FROM fresh.{table} EXCEPT SELECT * FROM main.{table})"
    ).fetchone()[0]
    return int(one) + int(two)
