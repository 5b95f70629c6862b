"""Prometheus metrics for `/metrics`.

Each app owns its registry (tests build many apps). With several worker processes,
prometheus-client's multiprocess mode shares the counters through files in a
directory that `episteme serve` creates and names in ``PROMETHEUS_MULTIPROC_DIR``
before any worker starts; a scrape of any worker then reports them all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from episteme.ledger.core import Ledger
from episteme.ledger.model import Answer

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Journal(Collector):
    """The journal's length, read from the store at scrape time (true across workers)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[GaugeMetricFamily]:
        seq = self._ledger.store.head()[0]
        yield GaugeMetricFamily("episteme_journal_events", "Events in the journal", value=seq)


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
        if multi:
            multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self.registry.register(_Journal(ledger))

    def answered(self, ans: Answer) -> None:
        self.queries.labels(ans.lens).inc()
        if ans.hidden.count:
            self.hiding.labels(ans.lens).inc()

    def expose(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class TimingMiddleware:
    """Observes every request's latency under its route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or _prefix(scope["path"])
            self.metrics.requests.labels(template, scope["method"], str(status[0])).observe(
                time.perf_counter() - start
            )


def _prefix(path: str) -> str:
    return "/mcp" if path.startswith("/mcp") else "unmatched"
