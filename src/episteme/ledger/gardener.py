"""The gardener: follows the journal and acts on what it says (DESIGN §2).

From a persisted cursor it reads the events after the last one it applied and turns
them into trust evidence and notifications; each batch is written with the cursor
move in one transaction, so a gardener killed mid-batch applies that batch again,
whole, and applying an event twice changes nothing (rows are keyed by the event).
Everything it derives from an event depends only on the journal up to that event,
so a replay from the start (`episteme gardener replay`) gives the same rows.

It also notices approved assertions whose valid time ran out. Notifications go to the
webhooks that take their type, through the job queue (`episteme.ledger.webhooks`
delivers them). In `episteme serve` the gardener runs in the process that holds the
``background`` leadership; `episteme gardener` runs it alone.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel
from whenever import Instant

from episteme.ledger.conflicts import conflicts
from episteme.ledger.core import Ledger
from episteme.ledger.journal import Event, EventKind
from episteme.ledger.model import Assertion, Lifecycle
from episteme.ledger.sql.learning import GARDENER, RAISED_ELSEWHERE, Evidence, Note
from episteme.ledger.store import StoreReader
from episteme.ledger.trust import topic_of, weigh
from episteme.ledger.webhooks import Notification, job_payload
from episteme.timeutil import from_us, to_us

log = logging.getLogger(__name__)

NAME = GARDENER
BATCH = 500
FIRST_SCAN_US = 86_400_000_000
"""How far back the first expiry scan of a ledger looks (one day)."""


class GardenerStatus(BaseModel):
    """Where the gardener is in the journal."""

    cursor: int
    head: int
    lag_events: int
    lag_seconds: float
    """Age of the oldest event not applied yet (0 when caught up)."""
    updated_at: Instant | None
    scanned_at: Instant | None


class Gardener:
    """Applies journal events to trust evidence and notifications, in batches."""

    def __init__(self, ledger: Ledger, *, batch: int = BATCH, name: str = NAME) -> None:
        self.ledger, self.batch, self.name = ledger, batch, name
        self.store = ledger.store
        self.policy = ledger.policy

    # -- following the journal -------------------------------------------------------

    def step(self, stopping: Callable[[], bool] | None = None) -> int:
        """Apply the next batch of events; how many were applied (0: caught up).

        `stopping` is asked between events: once it says so, the batch is dropped
        unrecorded (the cursor stays, so the next step applies those events again)."""
        cursor = self.store.garden_cursor(self.name).seq
        events = list(_take(self.store.events(after_seq=cursor), self.batch))
        if not events:
            return 0
        evidence: list[Evidence] = []
        notes: list[Note] = []
        webhooks = self.ledger.webhooks()
        for ev in events:
            if stopping is not None and stopping():
                return 0
            new_evidence, new_notes = self._apply(ev, evidence)
            evidence += new_evidence
            notes += new_notes
        raised = self.store.garden_cursor(RAISED_ELSEWHERE).seq  # copied or imported
        deliveries = [
            addressed(n, {} if n.seq is not None and n.seq <= raised else webhooks) for n in notes
        ]
        now = to_us(self.ledger.clock.now())
        half_life = self.policy.half_life_days * 86_400_000_000
        self.store.garden_commit(
            self.name, cursor, events[-1].seq, evidence, deliveries, now, half_life_us=half_life
        )
        return len(events)

    def run_until_caught_up(self) -> int:
        """Apply batches until the journal's end; how many events were applied."""
        total = 0
        while n := self.step():
            total += n
        return total

    def scan(self) -> int:
        """Notify approved assertions whose valid time ended since the last scan."""
        cursor = self.store.garden_cursor(self.name)
        now = to_us(self.ledger.clock.now())
        after = cursor.scanned_at if cursor.scanned_at is not None else now - FIRST_SCAN_US
        gone = self.store.expired(after, now)
        webhooks = self.ledger.webhooks()
        notes = [addressed(_expired(a), webhooks) for a in gone]
        self.store.garden_commit(self.name, cursor.seq, cursor.seq, [], notes, now, now)
        return len(gone)

    def status(self, reader: StoreReader | None = None) -> GardenerStatus:
        """Where the gardener is, read from the store (or from `reader`: one bounded
        read for `/health` and `/metrics`)."""
        r = reader or self.store
        cursor = r.garden_cursor(self.name)
        head = r.head()[0]
        lag_seconds = 0.0
        if head > cursor.seq:
            oldest = r.event_at(cursor.seq)
            if oldest is not None:
                now = to_us(self.ledger.clock.now())
                lag_seconds = max(0, now - oldest) / 1_000_000
        return GardenerStatus(
            cursor=cursor.seq,
            head=head,
            lag_events=max(0, head - cursor.seq),
            lag_seconds=round(lag_seconds, 3),
            updated_at=None if cursor.updated_at is None else from_us(cursor.updated_at),
            scanned_at=None if cursor.scanned_at is None else from_us(cursor.scanned_at),
        )

    def replay(self) -> int:
        """Forget the trust evidence and apply the whole journal again (a new policy)."""
        self.store.garden_reset(self.name, to_us(self.ledger.clock.now()))
        return self.run_until_caught_up()

    # -- what one event means --------------------------------------------------------

    def _apply(self, ev: Event, pending: list[Evidence]) -> tuple[list[Evidence], list[Note]]:
        if ev.kind == EventKind.ASSERTION_CORRECTED:
            return self._corrected(ev, ev.data(), pending)
        if ev.kind == EventKind.ASSERTION_MOVED:
            data = ev.data()
            if data["to"] == Lifecycle.APPROVED:
                return self._approved(ev, [data["id"]])
        if ev.kind == EventKind.ASSERTIONS_ADDED:
            approved = [a["id"] for a in ev.data()["assertions"] if a["lifecycle"] == "approved"]
            if approved:
                return self._approved(ev, approved)
        return [], []

    def _deciders(self, assertion_id: str, before_seq: int) -> list[tuple[str, str]]:
        """(agent, decision id) of decisions recorded before `before_seq` that relied on
        a query which served `assertion_id`: one per agent, the first decision."""
        seen: dict[str, str] = {}
        for d in self.store.decisions_citing_assertion(assertion_id):
            if d.seq < before_seq:
                seen.setdefault(d.agent, d.id)
        return sorted(seen.items())

    def _approved(self, ev: Event, ids: list[str]) -> tuple[list[Evidence], list[Note]]:
        p = self.policy
        evidence = []
        notes = []
        subjects = set()
        for a in self.store.assertions(ids):
            subjects.add(a.subject)
            why = f"{a.id[:12]} on {a.subject} approved by {ev.actor}"
            if p.approved_success:
                evidence.append(_row(ev, a, a.agent, "asserted", p.approved_success, 0.0, why))
            if p.confirmed_success:
                for agent, did in self._deciders(a.id, ev.seq):
                    reason = f"decision {did} relied on {a.id[:12]}, since approved"
                    evidence.append(_row(ev, a, agent, "relied", p.confirmed_success, 0.0, reason))
        for subject in sorted(subjects):
            notes += self._conflicts(ev, subject)
        return evidence, notes

    def _conflicts(self, ev: Event, subject: str) -> list[Note]:
        """Conflicts on `subject` right after `ev` (as of its time: same on replay)."""
        rows = self.store.candidates(subject, ev.at, None, ["approved"]).rows
        current = [c.assertion() for c in rows if c.subject == subject]
        return [
            Note(
                key=c.key,
                type="conflict",
                seq=ev.seq,
                at=ev.at,
                summary=c.summary(),
                data=c.model_dump(mode="json"),
            )
            for c in conflicts(current)
        ]

    def _corrected(
        self, ev: Event, data: dict[str, Any], pending: list[Evidence]
    ) -> tuple[list[Evidence], list[Note]]:
        p = self.policy
        bad = self.store.assertion(data["id"])
        if bad is None:  # a journal whose projections lag: nothing to weigh
            return [], []
        by, reason = ev.actor, data["reason"]
        cid = data["correction_id"]
        evidence = [
            _row(ev, bad, bad.agent, "asserted", 0.0, p.asserted_failure,
                 f"asserted {bad.id[:12]} on {bad.subject}, corrected by {by} ({cid}): {reason}")
        ]  # fmt: skip
        approver = next(
            (
                v.actor
                for v in self.store.versions(bad.id)
                if v.lifecycle is Lifecycle.APPROVED and v.seq < ev.seq
            ),
            None,
        )
        if approver is not None and p.approver_failure:
            evidence.append(
                _row(ev, bad, approver, "approved", 0.0, p.approver_failure,
                     f"approved {bad.id[:12]} on {bad.subject}, corrected by {by} ({cid})")
            )  # fmt: skip
        if p.cited_failure:
            for agent, did in self._deciders(bad.id, ev.seq):
                evidence.append(
                    _row(ev, bad, agent, "relied", 0.0, p.cited_failure,
                         f"decision {did} relied on {bad.id[:12]}, corrected by {by} ({cid})")
                )  # fmt: skip
        value = None
        if data.get("replacement"):
            value = data["replacement"]["value"]
        elif data.get("confirmed") and (kept := self.store.assertion(data["confirmed"])):
            value = kept.value
        summary = f"{by} corrected {bad.subject}: {bad.id[:12]} is wrong ({reason})"
        notes = [
            Note(
                key=f"correction:{cid}",
                type="correction",
                seq=ev.seq,
                at=ev.at,
                summary=summary,
                data={
                    "correction_id": cid,
                    "assertion_id": bad.id,
                    "subject": bad.subject,
                    "wrong_value": bad.value,
                    "right_value": value,
                    "by": by,
                    "reason": reason,
                    "constraint_id": (data.get("constraint") or {}).get("id"),
                },
            )
        ]
        notes += self._drops(ev, evidence, pending)
        return evidence, notes

    def _drops(self, ev: Event, new: list[Evidence], pending: list[Evidence]) -> list[Note]:
        """Trust drops below the alert line that this event's failures caused."""
        out = []
        threshold = self.policy.alert_below
        for agent, topic in sorted({(e.agent, topic_of(e.subject)) for e in new}):
            stored = self.store.trust_evidence(agent, topic, ev.at)

            def mine(e: Evidence, agent: str = agent, topic: str = topic) -> bool:
                return e.agent == agent and topic_of(e.subject) == topic

            before = [e for e in stored if e.seq < ev.seq] + [
                e for e in pending if e.seq < ev.seq and mine(e)
            ]
            after = before + [e for e in new if mine(e)]
            was = weigh(before, ev.at, self.policy)[0]
            now = weigh(after, ev.at, self.policy)[0]
            if was >= threshold > now:
                out.append(
                    Note(
                        key=f"trust_drop:{agent}:{topic}:{ev.seq}",
                        type="trust_drop",
                        seq=ev.seq,
                        at=ev.at,
                        summary=f"trust of {agent} on {topic} fell to {now:.2f} "
                        f"(from {was:.2f}, alert below {threshold:.2f})",
                        data={"agent": agent, "topic": topic, "before": was, "after": now},
                    )
                )
        return out


def addressed(note: Note, webhooks: dict[str, Any]) -> Note:
    """`note`, with a delivery to each of `webhooks` that takes its type."""
    notification = Notification.model_validate(
        {
            "key": note.key,
            "type": note.type,
            "at": from_us(note.at),
            "summary": note.summary,
            "data": note.data,
        }
    )
    targets = tuple(
        (name, job_payload(name, notification))
        for name, spec in sorted(webhooks.items())
        if note.type in spec.events
    )
    return Note(note.key, note.type, note.seq, note.at, note.summary, note.data, targets)


def _row(
    ev: Event, a: Assertion, agent: str, role: str, success: float, failure: float, reason: str
) -> Evidence:
    return Evidence(ev.seq, agent, role, a.id, a.subject, ev.at, success, failure, reason)


def _expired(a: Assertion) -> Note:
    assert a.valid_to is not None
    at = to_us(a.valid_to)
    return Note(
        key=f"expired:{a.id}",
        type="expired",
        seq=None,
        at=at,
        summary=f"{a.subject}: approved value {a.id[:12]} stopped being valid at "
        f"{a.valid_to.format_iso()}",
        data={"assertion_id": a.id, "subject": a.subject, "value": a.value},
    )


def worker_name() -> str:
    """This process, as a job queue worker: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _take(events: Iterator[Event], n: int) -> Iterator[Event]:
    for i, ev in enumerate(events):
        if i >= n:
            break
        yield ev


class GardenerLoop:
    """Threads that keep the gardener caught up and deliver notifications.

    The gardener and the deliveries run on threads of their own, so a slow webhook
    receiver never holds the journal's follower back. Errors (the database away, a
    bug on one event) are logged and retried with backoff: the loops never stop
    while they run.
    """

    def __init__(
        self,
        gardener: Gardener,
        *,
        deliver: Callable[[Callable[[], bool]], int] | None = None,
        idle: float = 0.5,
        scan_every: float = 10.0,
    ) -> None:
        self.gardener, self.deliver = gardener, deliver
        self.idle, self.scan_every = idle, scan_every
        self.errors = 0
        self.last_error: str | None = None
        self.error_listeners: list[Callable[[str], None]] = []
        """Told the name of the work ("gardener", "webhooks") at each failure."""
        self._last_scan = 0.0
        self._stop = threading.Event()  # the current start's; each start has its own
        self._threads: list[threading.Thread] = []
        self._stopping: list[threading.Thread] = []
        """Threads of earlier starts that were asked to stop and had not yet (a slow
        webhook receiver): they end after the work in hand, whatever starts later."""

    def start(self) -> None:
        if self.running:
            return
        self._stopping = [t for t in self._stopping if t.is_alive()]
        stop = self._stop = threading.Event()
        # (name, work, how many done in one call mean that more are waiting)
        work: list[tuple[str, Callable[[], int], int]] = [
            ("gardener", functools.partial(self._garden, stop), self.gardener.batch)
        ]
        if self.deliver is not None:  # told when to stop, between two deliveries
            work.append(("webhooks", functools.partial(self.deliver, stop.is_set), 1))
        self._threads = [
            threading.Thread(target=self._run, args=(name, fn, full, stop), name=name, daemon=True)
            for name, fn, full in work
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the threads to stop and wait up to `timeout` seconds for them (and for any
        left from earlier starts). Stopping a stopped loop returns at once: the threads
        still running were given their time (a database that stopped answering)."""
        if not self._threads and self._stop.is_set():
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        threads = [*self._stopping, *self._threads]
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._stopping = [t for t in threads if t.is_alive()]
        self._threads = []

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True once the loop was asked to stop."""
        return self._stop.wait(timeout)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _run(self, name: str, work: Callable[[], int], full: int, stop: threading.Event) -> None:
        """Call `work` again at once while it finds `full` loads (a backlog), else after
        `idle` seconds. Under a stream of audited queries a gardener step finds a few
        events every time: stepping at once would commit its cursor hundreds of times a
        second, competing with the writes it follows for the lock and the CPU."""
        backoff = self.idle
        while not stop.is_set():
            done = self._guard(name, work)
            if done is None:
                backoff = min(backoff * 2, 30.0)
            else:
                backoff = self.idle
                if done >= full:
                    continue
            stop.wait(backoff)

    def _garden(self, stop: threading.Event) -> int:
        applied = self.gardener.step(stop.is_set)
        if stop.is_set():
            return applied
        if time.monotonic() - self._last_scan >= self.scan_every:
            self.gardener.scan()
            self._last_scan = time.monotonic()
        return applied

    def _guard(self, name: str, work: Callable[[], int]) -> int | None:
        """Run `work`; on any error, count and log it and return None (the loop goes on)."""
        try:
            return work()
        except Exception as exc:  # the loop must outlive any one failure
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("%s: %s", name, self.last_error)
            for listener in self.error_listeners:
                listener(name)
            return None
