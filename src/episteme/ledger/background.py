"""Background work shared by many processes: leadership and a job queue.

Several `episteme serve` processes may share one ledger. Work that must run once
(the gardener following the journal) runs in the process that holds the
*leadership* of its name: a PostgreSQL advisory lock on a session of its own, or
a file lock beside a SQLite ledger. Both die with their process, so when a leader
is killed the next process to look takes over (`Leader` looks every second).

Work that may run anywhere but only once per item goes through the job queue: a
worker leases a job for a while (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so
workers never wait for one another), completes or fails it, and a lease that runs
out makes the job available again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Literal, Protocol

from pydantic import BaseModel
from whenever import Instant

log = logging.getLogger(__name__)


class Leadership(Protocol):
    """The right to run the work named `name`, held by at most one process."""

    name: str

    def acquire(self) -> bool:
        """Take the leadership if it is free, or check it is still ours; True if held."""
        ...

    def release(self) -> None: ...


class Job(BaseModel):
    """A leased job: run it, then `complete_job` or `fail_job` with the same worker."""

    id: int
    queue: str
    payload: Any
    attempts: int


JobState = Literal["ready", "leased", "done", "failed"]


class JobRecord(BaseModel):
    """A job as stored, whatever its state (for listings such as webhook deliveries)."""

    id: int
    queue: str
    payload: Any
    state: JobState
    attempts: int
    """Leases taken so far (each lease is an attempt)."""
    run_after: Instant
    created_at: Instant
    done_at: Instant | None
    error: str | None
    """The last failure recorded, if any (kept after a later success)."""


class Leader:
    """A thread that keeps trying to lead `leadership`, and says whether it does.

    `on_change(leading)` runs on the thread whenever that changes (start or stop the
    work there). Errors while checking (the database away) count as not leading.
    """

    def __init__(
        self,
        leadership: Leadership,
        *,
        interval: float = 1.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._leadership = leadership
        self._interval = interval
        self._on_change = on_change
        self.leading = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"episteme-leader-{leadership.name}", daemon=True
        )

    def start(self) -> Leader:
        self._thread.start()
        return self

    def state(self) -> str:
        if not self._thread.is_alive():
            return "stopped"
        return "leading" if self.leading else "standby"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = self._leadership.acquire()
            except Exception as exc:  # the store is away: not leading until it returns
                log.warning("leadership %s: %s", self._leadership.name, exc)
                now = False
            if self._stop.is_set():  # stopped while it waited (a database that hung)
                break
            if now != self.leading:
                self.leading = now
                if self._on_change is not None:
                    self._on_change(now)
            self._stop.wait(self._interval)

    def stop(self, wait: float = 1.0) -> None:
        """Stop trying, stop the work if leading, and give the leadership up.

        The thread wakes at once unless it is waiting on the store (a database that
        stopped answering): it is given `wait` seconds, and after them it will see the
        stop and end without calling `on_change`, so the work stops here meanwhile.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=wait)
        if self.leading and self._on_change is not None:
            self._on_change(False)
        self.leading = False
        self._leadership.release()
