"""Prometheus metrics for `/metrics`.

Each app owns its registry (tests build many apps). With several worker processes,
prometheus-client's multiprocess mode shares the counters through files in a
directory that `episteme serve` creates and names in ``PROMETHEUS_MULTIPROC_DIR``
before any worker starts; a scrape of any worker then reports them all.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from episteme.errors import EpistemeError
from episteme.ledger.core import Ledger
from episteme.ledger.gardener import Gardener, GardenerStatus
from episteme.ledger.model import Answer
from episteme.ledger.store import StoreReader
from episteme.ledger.webhooks import QUEUE
from episteme.timeutil import to_us

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Up to a minute: a wait for a body (408 after 30 s) or for a database that went away
# (503 after 10 s) must show in a quantile, not vanish into +Inf.
BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
)  # fmt: skip
GONE = "499"
"""The status filed for a client that went away before it was answered (as nginx does)."""


class _Journal(Collector):
    """Whether the store answers, the journal's length, how far the gardener is behind it
    and the webhook deliveries waiting, read from the store at scrape time (true across
    workers and servers). While the store is away, only the first is given."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.away_until = 0.0
        """Until when (monotonic seconds) the store is known away: a scrape's token check
        has just found it so (`Metrics.store_away`), and need not be waited for twice."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        got: _Read | None = None
        if time.monotonic() >= self.away_until:
            with contextlib.suppress(EpistemeError):  # all of it within 2 s, or nothing
                got = self._ledger.store.probe_reading(self._read)
        up = "Whether the store answered this scrape (1) or not within 2 s (0)"
        yield GaugeMetricFamily("episteme_store_up", up, value=0 if got is None else 1)
        if got is None:
            return
        garden, (waiting, oldest_due), now = got
        yield GaugeMetricFamily(
            "episteme_journal_events", "Events in the journal", value=garden.head
        )
        yield GaugeMetricFamily(
            "episteme_gardener_lag_events",
            "Journal events the gardener has not applied yet (trust, notifications)",
            value=garden.lag_events,
        )
        yield GaugeMetricFamily(
            "episteme_gardener_lag_seconds",
            "Age of the oldest event the gardener has not applied (0 when caught up)",
            value=garden.lag_seconds,
        )
        yield GaugeMetricFamily(
            "episteme_webhook_deliveries_waiting",
            "Webhook deliveries queued and not yet done (due, or retried later)",
            value=waiting,
        )
        yield GaugeMetricFamily(
            "episteme_webhook_oldest_due_seconds",
            "How long the longest-due webhook delivery has been due (0 when none is)",
            value=0.0 if oldest_due is None else max(0, now - oldest_due) / 1_000_000,
        )

    def _read(self, r: StoreReader) -> _Read:
        now = to_us(self._ledger.clock.now())
        return Gardener(self._ledger).status(r), r.waiting_jobs(QUEUE, now), now


_Read = tuple[GardenerStatus, tuple[int, int | None], int]


class Metrics:
    """The server's metrics and the registry a scrape reads."""

    def __init__(self, ledger: Ledger) -> None:
        self.registry = CollectorRegistry()
        multi = bool(os.environ.get(MULTIPROC_ENV))
        own = None if multi else self.registry
        self.requests = Histogram(
            "episteme_http_request_duration_seconds",
            "HTTP request latency by route template, method and status",
            ["route", "method", "status"],
            buckets=BUCKETS,
            registry=own,
        )
        self.queries = Counter("episteme_queries", "Audited reads by lens", ["lens"], registry=own)
        self.hiding = Counter(
            "episteme_answers_hiding",
            "Audited reads whose lens hid at least one assertion",
            ["lens"],
            registry=own,
        )
        self.corrections = Counter("episteme_corrections", "Corrections recorded", registry=own)
        self.denied = Counter(
            "episteme_auth_refusals",
            "Refused calls: 401 (bad or no token) and 403 (role does not allow it)",
            ["status"],
            registry=own,
        )
        self.background_errors = Counter(
            "episteme_background_errors",
            "Failed rounds of background work (the gardener, webhook deliveries): the"
            " database away, a bug; each is logged and retried",
            ["work"],
            registry=own,
        )
        self.deliveries = Counter(
            "episteme_webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered, retrying, failed (for good)",
            ["outcome"],
            registry=own,
        )
        for work in ("gardener", "webhooks"):  # at 0 from the start: alerts see a series
            self.background_errors.labels(work)
        for outcome in ("delivered", "retrying", "failed"):
            self.deliveries.labels(outcome)
        if multi:
            multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self._journal = _Journal(ledger)
        self.registry.register(self._journal)
        # every refusal the ledger records, whichever door it came through (the API, the
        # console, MCP, a library call); an unknown token, recorded nowhere, is counted
        # where it is met
        ledger.refusal_listeners.append(self._recorded)

    def store_away(self) -> None:
        """The store was just found away: the scrape now answering reports it so, without
        asking it again (another 2 s)."""
        self._journal.away_until = time.monotonic() + 1.0

    def _recorded(self, operation: str) -> None:
        self.denied.labels("401" if operation == "authenticate" else "403").inc()

    def background_failed(self, work: str) -> None:
        self.background_errors.labels(work).inc()

    def delivered(self, outcome: str) -> None:
        self.deliveries.labels(outcome).inc()

    def answered(self, ans: Answer) -> None:
        self.queries.labels(ans.lens).inc()
        if ans.hidden.count:
            self.hiding.labels(ans.lens).inc()

    def expose(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class TimingMiddleware:
    """Observes every request's latency under its route template (never the raw path).

    A request the router never saw (refused before it: a body over the limit, a stalled
    body) is filed under the template its path matches; one that matches none, under
    `unmatched`. A client that went away before its answer is filed as 499."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None  # None: no answer has begun
        gone = False

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def receiving() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and status is None:
                gone = True
            return message

        try:
            await self.app(scope, receiving, sending)
        finally:
            code = GONE if gone else str(500 if status is None else status)
            self.metrics.requests.labels(self._template(scope), scope["method"], code).observe(
                time.perf_counter() - start
            )

    def _template(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if path:
            return str(path)
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return str(getattr(route, "path", "unmatched"))
        return "unmatched"
