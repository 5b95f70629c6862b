"""A rebuild while others write, and two rebuilds at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from episteme.errors import StoreUnavailable
from episteme.ledger import Ledger
from episteme.ledger.journal import Event
from episteme.ledger.model import AssertionInput


def _one(ledger: Ledger, subject: str) -> str:
    [added] = ledger.add([AssertionInput(subject=subject, value=1, agent="writer")])
    return added.id


def test_a_repair_keeps_the_writes_made_while_it_replayed(
    ledger: Ledger, location: str | Path
) -> None:
    # The SQLite replay ran with no lock and compared under this process's alone: a write
    # another process made meanwhile was missing from the replay, reported as drift, and
    # a repair replaced the projections without it (acknowledged writes lost; `verify`,
    # which reads the journal, still passed).
    for n in range(30):
        _one(ledger, f"svc.s{n}.owner")
    written: list[str] = []
    with Ledger.open(location) as other:  # another writer, as another process is
        replay = ledger.store.events

        def events(after_seq: int = 0, until_at: int | None = None) -> Iterator[Event]:
            yield from replay(after_seq, until_at)
            if after_seq == 0:  # the replay has read the last event: writes land now
                written.extend(_one(other, f"late.w{n}") for n in range(2))

        ledger.store.events = events  # type: ignore[method-assign]
        try:
            report = ledger.rebuild(repair=True)
        finally:
            del ledger.store.events
    assert len(written) == 2
    assert report.ok, report.differences  # no drift that is not there
    assert not report.repaired
    for aid in written:
        assert ledger.get(aid).id == aid
    assert ledger.rebuild().ok


def test_one_rebuild_of_a_file_runs_at_a_time(home: Path) -> None:
    # Both used the same scratch file, each deleting the other's: one replaced every
    # projection with empty tables and said it had repaired them.
    with Ledger.init(home) as ledger:
        for n in range(10):
            _one(ledger, f"svc.s{n}.owner")
        started, release = threading.Event(), threading.Event()
        replay = ledger.store.events

        def slow(after_seq: int = 0, until_at: int | None = None) -> Iterator[Event]:
            for ev in replay(after_seq, until_at):
                started.set()
                release.wait(30)
                yield ev

        ledger.store.events = slow  # type: ignore[method-assign]
        outcome: list[object] = []
        first = threading.Thread(target=lambda: outcome.append(ledger.rebuild(repair=True)))
        first.start()
        try:
            assert started.wait(30)
            with Ledger.open(home) as second, pytest.raises(StoreUnavailable) as refused:
                second.rebuild(repair=True)
            assert "another rebuild of" in str(refused.value)
        finally:
            release.set()
            first.join(30)
            del ledger.store.events
        [report] = outcome
        assert report.ok  # type: ignore[attr-defined]
        assert ledger.query("svc", agent="a", lens="all").items  # nothing emptied
