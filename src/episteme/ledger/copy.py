"""Copying a ledger from one store to another: SQLite to PostgreSQL, back, or alike.

The journal is the ledger; the tables are its projections. A copy therefore streams the
source's journal into an empty destination in one transaction (the destination
projects each event as it lands), checking the chain link by link on the way, so a
broken source leaves nothing behind. The copy stops at the source's head as it was
when the copy began: writes that land meanwhile are not half-copied, and the report
names the head that was copied. Afterwards the destination's chain is recomputed from
its own rows and its head hash must equal the source's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from episteme.errors import Conflict, EpistemeError, IntegrityError, InvalidInput
from episteme.ledger.canonical import GENESIS
from episteme.ledger.journal import Event, link
from episteme.ledger.sql.learning import GARDENER, Cursor
from episteme.ledger.store import POSTGRES_SCHEMES, Store, open_store


class CopyReport(BaseModel):
    """What `copy_ledger` copied, and the head both ledgers now share."""

    events: int
    source: str
    destination: str
    head_seq: int
    head_hash: str | None
    """The hex hash of the last copied event; None when the source was empty."""
    verified: bool
    sessions: int = 0
    """Diagnosis sessions copied, with their events (they live beside the journal)."""
    resumed: bool = False
    """The destination held this journal already (to its head): a copy that stopped while
    copying the sessions, which this one finished."""


def copy_ledger(source: str | Path, dest: str | Path) -> CopyReport:
    """Copy the ledger at `source` into the empty store at `dest`, and verify the copy.

    A destination that holds the source's journal already, to the same head, is the
    destination of a copy that stopped while copying the diagnosis sessions: this copy
    finishes it.

    Both are what `open_store` takes: a home directory, ``sqlite:///PATH`` or a
    ``postgresql://`` URL. A home or SQLite file is created when absent; a PostgreSQL
    database must exist (the ledger's tables are made in it when it is empty).

    Raises:
        InvalidInput: `source` and `dest` are the same ledger.
        Conflict: the destination already holds events (other than the source's journal).
        StoreUnavailable: either store cannot be opened or used (the source must exist).
        IntegrityError: the source's chain is broken (nothing is copied), or the copy
            does not verify to the source's head.
    """
    src = _open(source, "source", read_only=True)
    try:
        head_seq, _, head = src.head()
        _not_the_source(src, dest)
        dst = _open(dest, "destination", ensure=True)
        try:
            if _identity(src) == _identity(dst):
                raise _the_same(src)
            held, _, held_head = dst.head()
            resumed = bool(held) and (held, held_head) == (head_seq, head)
            if held and not resumed:
                if held < head_seq and _hash_at(src, held) == held_head:
                    raise Conflict(
                        f"{dst.where} holds this ledger's journal to event {held} (an earlier"
                        f" copy), and the source has recorded {head_seq - held} more since:"
                        " give an empty database or a fresh home as the destination",
                        field="dest",
                    )
                raise Conflict(
                    f"{dst.where} already holds {_events(held)}: give an empty database "
                    "or a fresh home as the destination",
                    field="dest",
                )
            count = 0
            if not resumed:  # else this journal is there: a copy stopped in its sessions
                # what the source raised and sent (an older source, not migrated, may not
                # have had a gardener: its new home's gardener then starts from the first)
                gardened = (
                    src.garden_cursor(GARDENER)
                    if src.holds("gardener")
                    else Cursor(GARDENER, 0, None, None)
                )
                count = dst.import_events(
                    _chained(src, head_seq),
                    raised_until=gardened.seq,
                    scanned_at=gardened.scanned_at,
                )
            report = dst.verify()
            copied = dst.head()[2]
            if not report.ok or copied != head:
                why = report.problem if not report.ok else "its head differs from the source's"
                raise IntegrityError(
                    f"the copy in {dst.where} does not match the source: {why}; "
                    "discard it and copy again"
                )
            sessions = _copy_sessions(src, dst)
            return CopyReport(
                events=count,
                resumed=resumed,
                sessions=sessions,
                source=src.where,
                destination=dst.where,
                head_seq=head_seq,
                head_hash=head.hex() if head is not None else None,
                verified=True,
            )
        finally:
            dst.close()
    finally:
        src.close()


def _open(
    location: str | Path, role: str, *, ensure: bool = False, read_only: bool = False
) -> Store:
    """Open one end, saying in any error which end it was."""
    try:
        return open_store(location, ensure=ensure, read_only=read_only)
    except EpistemeError as exc:
        raise type(exc)(f"{role}: {exc.message}", field=exc.field) from None


def _the_same(src: Store) -> InvalidInput:
    return InvalidInput(
        f"the source and the destination are the same ledger ({src.where}): "
        "give another destination",
        field="dest",
    )


def _not_the_source(src: Store, dest: str | Path) -> None:
    """Refuse a SQLite destination that is the source before opening it to write, which
    would migrate an older source (a PostgreSQL one is known by its URL once open)."""
    if str(dest).startswith(POSTGRES_SCHEMES):
        return
    try:
        there = open_store(dest, read_only=True)
    except EpistemeError:
        return  # no ledger there yet: it cannot be the source
    try:
        same = _identity(there) == _identity(src)
    finally:
        there.close()
    if same:
        raise _the_same(src)


def _identity(store: Store) -> str:
    """The database a store is, whatever spelling of its location opened it."""
    prefix = "sqlite:///"
    if store.url.startswith(prefix):
        return prefix + str(Path(store.url.removeprefix(prefix)).resolve())
    return store.url


def _chained(src: Store, head_seq: int) -> Iterator[Event]:
    """The source's events up to `head_seq`, each checked against the chain.

    Raising here (inside the destination's import transaction) rolls the import back.
    """
    prev, expected = GENESIS, 1
    for ev in src.events():
        if ev.seq > head_seq:
            break  # written after the copy began
        if ev.seq != expected or ev.hash != link(
            prev, ev.seq, ev.at, ev.actor, ev.kind, ev.payload
        ):
            raise IntegrityError(
                f"the source's chain is broken at event {expected}: run `episteme verify` "
                f"on {src.where}; nothing was copied"
            )
        yield ev
        prev, expected = ev.hash, expected + 1
    if expected - 1 != head_seq:
        raise IntegrityError(
            f"the source's journal ended at event {expected - 1}, before its head "
            f"{head_seq}: run `episteme verify` on {src.where}; nothing was copied"
        )


def _copy_sessions(src: Store, dst: Store) -> int:
    """The source's diagnosis sessions and their events, as they are: they are kept beside
    the journal, not projected from it (a session waiting for approval stays waiting).
    Each is copied in short transactions of its own; a copy that stopped among them is
    finished by copying again: a session the destination lacks is copied, and one whose
    events are the first of the source's gets the rest. A session the destination holds
    otherwise (one that went on there after a finished copy) is left as it is."""
    if not src.holds("diagnosis"):
        return 0  # an older source, not migrated: it kept no sessions
    rows = src.diagnosis_sessions(limit=2**62)
    for row in rows:
        if dst.diagnosis_session(row["id"]) is None:
            dst.save_diagnosis_session(row)
        held = dst.diagnosis_timed_events(row["id"])
        events = src.diagnosis_timed_events(row["id"])
        if held != events[: len(held)]:
            continue  # a session that went on at the destination: its own since
        for _, at, event in events[len(held) :]:
            dst.add_diagnosis_event(row["id"], at, event)
    return len(rows)


def _hash_at(store: Store, seq: int) -> bytes | None:
    """The hash of a store's event `seq`, or None when it has none."""
    found = store.events(after_seq=seq - 1)
    try:
        first = next(found, None)
    finally:
        close = getattr(found, "close", None)
        if close is not None:  # a generator reading a cursor: free it now
            close()
    return first.hash if first is not None and first.seq == seq else None


def _events(n: int) -> str:
    return f"{n} event" if n == 1 else f"{n} events"
