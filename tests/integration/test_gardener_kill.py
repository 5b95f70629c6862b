"""A gardener killed mid-batch (SIGKILL) and started again ends where an unkilled one does:
the same trust evidence, each notification raised once, each webhook job queued once."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from whenever import Instant, TimeDelta

from episteme.ledger import AssertionInput, Ledger
from episteme.ledger.gardener import Gardener
from episteme.ledger.webhooks import WebhookSpec
from episteme.timeutil import ManualClock

SUBJECTS = 80


def _story(ledger: Ledger, clock: ManualClock) -> None:
    for n in range(SUBJECTS):
        clock.advance(TimeDelta(seconds=1))
        subject = f"svc{n % 7}.setting{n}"
        _, bad = ledger.add(
            [
                AssertionInput(subject=subject, value="good", agent="docs", lifecycle="approved"),
                AssertionInput(subject=subject, value="bad", agent=f"research{n % 3}"),
            ]
        )
        read = ledger.query(subject, agent=f"deployer{n % 4}", lens="latest")
        ledger.decide("rolled out", agent=f"deployer{n % 4}", query_ids=[read.query_id])
        ledger.correct(bad.id, by="oncall", reason="wrong", forbid=n % 2 == 0)


def _gardener(where: str | Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "episteme", "gardener", "--once", "--batch", "4"]
    return subprocess.Popen(
        [*argv, "--home", str(where)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_gardener_killed_mid_batch_ends_where_an_unkilled_one_does(
    location: str | Path,
) -> None:
    clock = ManualClock(Instant.parse_iso("2026-11-21T09:00:00Z"))
    with Ledger.open(location, clock=clock, ensure=True) as ledger:
        ledger.set_webhook(WebhookSpec(name="hook", url="http://127.0.0.1:9/x"), by="admin")
        _story(ledger, clock)
        head = ledger.store.head()[0]
    rng = random.Random(7)
    kills_mid_run = 0
    with Ledger.open(location) as watcher:
        for _ in range(60):
            proc = _gardener(location)
            target = watcher.store.garden_cursor("gardener").seq + rng.randint(1, 40)
            # wait until this run has committed a few batches, then kill it a moment
            # later: mostly inside the next batch's transaction
            while proc.poll() is None and watcher.store.garden_cursor("gardener").seq < target:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.01))
            if proc.poll() is not None:
                err = proc.communicate()[1]
                assert proc.returncode == 0, err
                break
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills_mid_run += watcher.store.garden_cursor("gardener").seq < head
        else:
            raise AssertionError("the gardener never finished")
    assert kills_mid_run >= 3, "too few kills landed while the gardener was working"
    with Ledger.open(location, clock=clock) as ledger:
        assert Gardener(ledger).status().lag_events == 0
        evidence = ledger.store.trust_evidence(None, None, None)
        notes = ledger.notifications(limit=10_000)
        jobs = ledger.store.jobs("webhook", limit=10_000)
        assert len([n for n in notes if n.type == "correction"]) == SUBJECTS
        assert len({n.key for n in notes}) == len(notes)
        assert sorted(j.payload["notification"]["key"] for j in jobs) == sorted(
            n.key for n in notes
        )
        Gardener(ledger).replay()  # an unkilled gardener from the start
        assert ledger.store.trust_evidence(None, None, None) == evidence
        assert len(ledger.notifications(limit=10_000)) == len(notes)
        assert len(ledger.store.jobs("webhook", limit=10_000)) == len(jobs)
