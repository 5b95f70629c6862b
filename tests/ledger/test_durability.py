"""Durability: an acknowledged write survives kill -9, and a failed batch writes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from episteme.errors import Conflict, EpistemeError, InvalidInput, NotFound
from episteme.ledger import AssertionInput, Ledger

WRITER = """
import sys
from episteme.ledger import AssertionInput, Ledger

ledger = Ledger.open(sys.argv[1])
n = 0
while True:
    n += 1
    if n % 4:
        lifecycle = "approved" if n % 3 == 0 else "proposed"
        ids = [ledger.assert_one(subject=f"load.k{n % 7}", value=n, agent="writer",
                                 lifecycle=lifecycle).id]
    else:
        batch = [AssertionInput(subject=f"load.batch.b{i}", value=[n, i], agent="writer")
                 for i in range(3)]
        ids = [a.id for a in ledger.add(batch)]
    # only after the call returned: each printed id is an acknowledged write
    sys.stdout.write("".join(i + "\\n" for i in ids))
    sys.stdout.flush()
"""


@pytest.mark.slow
def test_acknowledged_writes_survive_kill_9(home: Path) -> None:
    Ledger.init(home).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acked: list[str] = []
    try:
        while len(acked) < 200:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(line.rstrip("\n"))
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the writer never stops on its own
        rest, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(acked) >= 200, err
    assert proc.returncode == -signal.SIGKILL
    acked += [ln for ln in rest.splitlines(keepends=True) if ln.endswith("\n")]
    acked = [a.strip() for a in acked]

    with Ledger.open(home) as ledger:
        for aid in acked:
            assert ledger.get(aid).id == aid
        report = ledger.verify()
        assert report.ok, report.problem
        assert len(ledger.answer("load", lens="all").items) >= len(set(acked))
        rebuilt = ledger.rebuild()
        assert rebuilt.ok, rebuilt.differences


def _inp(subject: str, value: object, **extra: object) -> AssertionInput:
    return AssertionInput.model_validate(
        {"subject": subject, "value": value, "agent": "a", **extra}
    )


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (_inp("svc.bad", 1, derived_from=("0123456789abcdef",)), NotFound),
        (_inp("svc.ok", 1), InvalidInput),  # repeats the first assertion of the batch
        (_inp("svc.bad", 1, epoch="retired"), Conflict),  # an epoch that was superseded
    ],
    ids=["unknown-derived-from", "duplicate-in-batch", "superseded-epoch"],
)
def test_failed_batch_writes_nothing(
    ledger: Ledger, bad: AssertionInput, error: type[EpistemeError]
) -> None:
    ledger.assert_one(subject="svc.old", value=0, agent="a", epoch="retired")
    ledger.supersede_epoch("retired", by="oncall", reason="bad ingest")
    head = ledger.store.head()
    count = sum(1 for _ in ledger.export())

    with pytest.raises(error):
        ledger.add([_inp("svc.ok", 1), bad, _inp("svc.ok2", 2, lifecycle="approved")])

    assert ledger.store.head() == head
    assert sum(1 for _ in ledger.export()) == count
    assert ledger.answer("svc", lens="all").items == ledger.answer("svc.old", lens="all").items
    assert ledger.rebuild().ok


def test_asserting_the_same_content_twice_in_one_microsecond_is_refused(ledger: Ledger) -> None:
    first = ledger.assert_one(subject="svc.a", value=1, agent="a")
    head = ledger.store.head()
    with pytest.raises(Conflict, match=first.id[:12]):
        ledger.add([_inp("svc.b", 2), _inp("svc.a", 1)])
    assert ledger.store.head() == head


CLOSER = """
import sys, threading, time
from episteme.errors import StoreUnavailable
from episteme.ledger import Ledger

for round in range(4):
    ledger = Ledger.open(sys.argv[1])
    ended = []

    def read() -> None:
        try:
            while True:
                ledger.answer("close", lens="approved")
        except StoreUnavailable:
            ended.append("read")

    def write() -> None:
        try:
            while True:
                ledger.query("close", agent="closer", lens="approved")
        except StoreUnavailable:
            ended.append("write")

    threads = [threading.Thread(target=read) for _ in range(3)]
    threads.append(threading.Thread(target=write))
    for t in threads:
        t.start()
    time.sleep(0.2)
    ledger.close()  # under three readers and a writer
    for t in threads:
        t.join(10)
    print(sorted(ended))
"""


def test_closing_a_ledger_under_reads_and_writes_ends_them_with_a_clear_error(
    location: str | Path,
) -> None:
    # Closing a SQLite connection that another thread is using can crash the process
    # (it did: a server stopping under its gardener). Closed mid-load, four times, the
    # process lives, and every thread ends with StoreUnavailable, nothing else.
    with Ledger.init(location) as ledger:
        ledger.add([_inp(f"close.k{i}", i, lifecycle="approved") for i in range(200)])
    proc = subprocess.run(
        [sys.executable, "-c", CLOSER, str(location)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rounds = proc.stdout.splitlines()
    assert rounds == ["['read', 'read', 'read', 'write']"] * 4, proc.stderr[-2000:]
    with Ledger.open(location) as ledger:
        report = ledger.verify()
        assert report.ok, report.problem
