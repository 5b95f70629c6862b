"""The observability specialist against a real Prometheus (the Debian package) scraping a
tiny exporter and two ports where nothing listens, a local server answering as Loki does
(with responses in its format), and log files."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from episteme.diagnose.findings import Finding, Redactor, SpecialistContext
from episteme.diagnose.specialists import observability
from episteme.diagnose.specialists.database import SpecialistError
from tests.integration.processes import free_port

LOKI_TOKEN_REF = "op://Infrastructure/loki/token"
LOKI_TOKEN = "loki-token-61d0"

TIMEOUT = 'level=error msg="payment gateway timeout"'
# an answer in the shape of /loki/api/v1/query_range (direction=backward: newest first)
LOKI_STREAMS = {
    "status": "success",
    "data": {
        "resultType": "streams",
        "result": [
            {
                "stream": {"app": "checkout", "level": "error", "namespace": "shop"},
                "values": [
                    ["1732179598412345678", f"{TIMEOUT} order=4713 took=30.002s"],
                    ["1732179571002345678", f"{TIMEOUT} order=4712 took=30.001s"],
                    ["1732179540912345678", f"{TIMEOUT} order=4711 took=30.004s"],
                    ["1732179502112345678", 'level=error msg="cart not found" cart=0x7f3a9c'],
                ],
            },
            {
                "stream": {"app": "billing", "level": "error", "namespace": "shop"},
                "values": [
                    ["1732179590000000000", 'level=error msg="invoice 981: deadlock detected"'],
                ],
            },
        ],
        "stats": {
            "summary": {
                "bytesProcessedPerSecond": 1738421,
                "linesProcessedPerSecond": 12034,
                "totalBytesProcessed": 88211,
                "totalLinesProcessed": 611,
                "execTime": 0.050742,
            }
        },
    },
}
LOKI_MATRIX = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [
            {"metric": {"app": "checkout"}, "values": [[1732179540, "4"], [1732179600, "7"]]},
            {"metric": {"app": "billing"}, "values": [[1732179600, "2"]]},
        ],
        "stats": {},
    },
}
LOKI_PARSE_ERROR = "parse error at line 1, col 9: syntax error: unexpected IDENTIFIER\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def context(**settings: Any) -> SpecialistContext:
    secrets = {LOKI_TOKEN_REF: LOKI_TOKEN}
    return SpecialistContext(
        problem="checkout error rate is up",
        environment="prod",
        settings=settings,
        secret=secrets.__getitem__,
        credentials={"loki-token": LOKI_TOKEN_REF},
        timeout_s=10,
    )


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


# -- Prometheus -------------------------------------------------------------------------


@pytest.fixture
def exporter() -> Iterator[str]:
    """A tiny scrape target with a queue depth per queue and a worker count."""
    registry = CollectorRegistry()
    depth = Gauge("shop_queue_depth", "Jobs waiting", ["queue"], registry=registry)
    depth.labels("orders").set(42)
    depth.labels("emails").set(3)
    Gauge("shop_workers", "Workers running", registry=registry).set(1)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def prometheus(exporter: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real Prometheus scraping the exporter (job shop, with one dead port beside it)
    and a job whose only target is dead; yields its URL and the dead targets by job."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run ./scripts/test (it installs the package)"
    dead = {"shop": f"127.0.0.1:{free_port()}", "payments": f"127.0.0.1:{free_port()}"}
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: shop\n"
        f"    static_configs: [{{targets: {json.dumps([exporter, dead['shop']])}}}]\n"
        "  - job_name: payments\n"
        f"    static_configs: [{{targets: {json.dumps([dead['payments']])}}}]\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            # new targets reach the scraper every 5 s: the first samples land 5-6 s in
            deadline = time.monotonic() + 30
            while len(_instant(url, "up")) < 3:
                assert proc.poll() is None, f"prometheus exited: {log_path.read_text()}"
                assert time.monotonic() < deadline, "prometheus scraped nothing in 30 s"
                time.sleep(0.2)
            yield url, dead
        finally:
            proc.terminate()
            proc.wait(timeout=15)


def _instant(url: str, promql: str) -> list[dict[str, Any]]:
    try:
        r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=2)
    except httpx.TransportError:
        return []
    if r.status_code != 200:
        return []
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


@pytest.mark.slow
@pytest.mark.anyio
async def test_targets_down_and_promql_checks_from_a_real_prometheus(
    prometheus: tuple[str, dict[str, str]],
) -> None:
    url, dead = prometheus
    checks = [
        {"name": "order backlog", "query": "shop_queue_depth", "above": 10, "severity": "critical"},
        {"name": "workers", "query": "shop_workers", "below": 2},
        {"name": "calm", "query": "shop_queue_depth", "above": 100},
        {"name": "typo", "query": "shop_queue_dept", "above": 1},
        {"name": "broken", "query": "sum(shop_queue_depth", "above": 1},
    ]

    found = await observability.run(context(prometheus_url=url, promql=checks))

    assert all(f.specialist == "observability" and f.tool == "prometheus" for f in found)
    assert codes(found) == [
        "metrics.target_down",
        "metrics.target_down",
        "metrics.threshold",
        "metrics.threshold",
        "metrics.no_data",
        "metrics.unavailable",
    ]
    payments, shop = found[0], found[1]
    assert payments.severity == "critical"  # the job's only target
    assert payments.evidence["down"] == [dead["payments"]]
    assert payments.query == "up == 0"
    assert shop.severity == "warning"  # one of two
    assert shop.evidence == {
        "prometheus": url,
        "job": "shop",
        "down": [dead["shop"]],
        "targets": 2,
    }
    assert dead["shop"] in shop.claim

    backlog = found[2]
    assert backlog.severity == "critical"
    assert backlog.query == "shop_queue_depth"
    assert backlog.evidence["above"] == 10
    series = backlog.evidence["series"]
    assert isinstance(series, list)
    [series] = series
    assert isinstance(series, dict)
    assert series["value"] == 42
    assert 'queue="orders"' in str(series["labels"])
    assert "42" in backlog.claim

    workers = found[3]
    assert workers.severity == "warning"
    assert workers.evidence["below"] == 2
    assert workers.query == "shop_workers"

    assert found[4].query == "shop_queue_dept"
    broken = found[5]
    assert broken.severity == "warning"
    assert broken.query == "sum(shop_queue_depth"
    assert "bad_data" in str(broken.evidence["error"])


@pytest.mark.anyio
async def test_a_prometheus_that_cannot_be_reached_raises_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()

    with pytest.raises(SpecialistError, match=f"cannot reach Prometheus at {url}"):
        await observability.run(context(prometheus_url=url))

    assert time.monotonic() - started < 3


@pytest.mark.anyio
async def test_a_source_that_cannot_be_reached_beside_one_that_could_is_a_finding(
    tmp_path: Path,
) -> None:
    # The log file's findings were thrown away with the error of the unreachable
    # Prometheus: the whole specialist was one error.
    app = tmp_path / "app.log"
    write_log(app)
    url = f"http://127.0.0.1:{free_port()}"
    found = await observability.run(context(prometheus_url=url, log_files=[str(app)]))
    assert codes(found) == ["logs.errors", "metrics.unavailable"]
    down = found[1]
    assert (down.severity, down.tool) == ("warning", "prometheus")
    assert down.claim.startswith(f"Could not read prometheus: cannot reach Prometheus at {url}")


@pytest.mark.anyio
async def test_a_source_that_answered_with_nothing_still_counts_as_read(loki: FakeLoki) -> None:
    # A Prometheus with every target up and no check finds nothing; beside it an
    # unreachable Loki made the whole specialist an error.
    loki.answer({"status": "success", "data": {"resultType": "vector", "result": []}})
    down = f"http://127.0.0.1:{free_port()}"
    found = await observability.run(context(prometheus_url=loki.url, loki_url=down, logql="x"))
    assert codes(found) == ["logs.unavailable"]
    assert found[0].claim.startswith(f"Could not read loki: cannot reach Loki at {down}")


@pytest.mark.anyio
async def test_log_lines_are_scrubbed_before_they_are_grouped(tmp_path: Path) -> None:
    # Grouping turns digits into '#': a password in a log line was no longer the value
    # the engine scrubs afterwards, and went on as CANARY-#f#a#c.
    app = tmp_path / "app.log"
    app.write_text("ERROR login failed: password=CANARY-7f3a9c\n" * 3)
    ctx = context(log_files=[str(app)])
    ctx.redact = Redactor(["CANARY-7f3a9c"])
    [found] = await observability.run(ctx)
    assert found.evidence["top_messages"] == [
        {
            "message": "ERROR login failed: password=[redacted]",
            "count": 3,
            "example": "ERROR login failed: password=[redacted]",
        }
    ]
    assert "CANARY" not in found.model_dump_json()


@pytest.mark.anyio
async def test_a_prometheus_url_with_a_password_is_shown_without_it() -> None:
    port = free_port()

    with pytest.raises(SpecialistError) as caught:
        await observability.run(context(prometheus_url=f"http://scraper:hunter2@127.0.0.1:{port}"))

    assert "hunter2" not in str(caught.value)
    assert f"127.0.0.1:{port}" in str(caught.value)


# -- Loki -------------------------------------------------------------------------------


@dataclass
class FakeLoki:
    """A local HTTP server that answers every request with one response in Loki's format."""

    url: str
    requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"

    def answer(self, payload: object, status: int = 200) -> None:
        if isinstance(payload, str):
            self.body, self.content_type = payload.encode(), "text/plain; charset=utf-8"
        else:
            self.body, self.content_type = json.dumps(payload).encode(), "application/json"
        self.status = status


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    fake = FakeLoki(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            fake.requests.append((parts.path, parse_qs(parts.query), dict(self.headers)))
            self.send_response(fake.status)
            self.send_header("Content-Type", fake.content_type)
            self.send_header("Content-Length", str(len(fake.body)))
            self.end_headers()
            self.wfile.write(fake.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


LOGQL = '{namespace="shop"} |= "level=error"'


@pytest.mark.anyio
async def test_loki_error_lines_are_counted_by_stream_and_message(loki: FakeLoki) -> None:
    loki.answer(LOKI_STREAMS)
    before = time.time_ns()

    [found] = await observability.run(
        context(loki_url=loki.url, logql=LOGQL, loki_window_s=600, loki_tenant="shop")
    )

    assert found.code == "logs.errors"
    assert found.severity == "warning"
    assert found.tool == "loki"
    assert found.query == LOGQL
    assert found.credential_ref == LOKI_TOKEN_REF
    assert found.evidence["error_lines"] == 5
    assert found.evidence["limit_reached"] is False
    assert found.evidence["by_stream"] == {
        '{app="checkout", level="error", namespace="shop"}': 4,
        '{app="billing", level="error", namespace="shop"}': 1,
    }
    top = found.evidence["top_messages"]
    assert isinstance(top, list)
    assert top[0] == {
        "message": 'level=error msg="payment gateway timeout" order=# took=#.#s',
        "count": 3,
        "example": 'level=error msg="payment gateway timeout" order=4713 took=30.002s',
    }
    assert "payment gateway timeout" in found.claim

    [(path, params, headers)] = loki.requests
    assert path == "/loki/api/v1/query_range"
    assert params["query"] == [LOGQL]
    assert params["direction"] == ["backward"]
    assert params["limit"] == ["1000"]
    start, end = int(params["start"][0]), int(params["end"][0])
    assert end - start == 600 * 10**9
    assert before <= end <= time.time_ns()
    assert headers["X-Scope-OrgID"] == "shop"
    assert headers["Authorization"] == f"Bearer {LOKI_TOKEN}"


@pytest.mark.anyio
async def test_a_loki_metric_query_counts_the_newest_sample_of_each_series(
    loki: FakeLoki,
) -> None:
    loki.answer(LOKI_MATRIX)
    logql = 'sum by (app) (count_over_time({namespace="shop"} |= "level=error" [5m]))'

    [found] = await observability.run(context(loki_url=loki.url, logql=logql))

    assert found.code == "logs.errors"
    assert found.evidence["error_lines"] == 9
    assert found.evidence["by_stream"] == {'{app="checkout"}': 7, '{app="billing"}': 2}


@pytest.mark.anyio
async def test_loki_answering_an_error_is_a_finding(loki: FakeLoki) -> None:
    loki.answer(LOKI_PARSE_ERROR, status=400)

    [found] = await observability.run(context(loki_url=loki.url, logql="{namespace=shop}"))

    assert found.code == "logs.unavailable"
    assert found.severity == "warning"
    assert found.evidence["error"] == f"HTTP 400: {LOKI_PARSE_ERROR.strip()}"
    assert found.query == "{namespace=shop}"


@pytest.mark.anyio
async def test_loki_without_a_query_or_a_server_raises() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(SpecialistError, match="logql"):
        await observability.run(context(loki_url=url))
    with pytest.raises(SpecialistError, match=f"cannot reach Loki at {url}"):
        await observability.run(context(loki_url=url, logql=LOGQL))


# -- log files --------------------------------------------------------------------------


def write_log(path: Path) -> None:
    old = [f"2026-11-21T08:00:{i % 60:02d}Z FATAL old crash {i}" for i in range(50)]
    filler = [f"2026-11-21T09:00:{i % 60:02d}Z INFO request {i} ok" for i in range(3000)]
    recent: list[str] = []
    for i in range(30):
        recent.append(
            f"2026-11-21T09:10:{i:02d}Z ERROR db: connection to 10.0.0.5:5432 refused (attempt {i})"
        )
        recent.append(f"2026-11-21T09:10:{i:02d}Z INFO retrying")
    recent += ["panic: runtime error: index out of range [3] with length 3"] * 5
    recent += ["Traceback (most recent call last):", '  File "app.py", line 3']
    path.write_text("\n".join([*old, *filler, *recent]) + "\n")


@pytest.mark.anyio
async def test_log_files_report_error_lines_in_their_tail(tmp_path: Path) -> None:
    app, clean, gone = tmp_path / "app.log", tmp_path / "clean.log", tmp_path / "gone.log"
    write_log(app)  # the FATAL lines lie before the last 1000 lines
    clean.write_text("INFO all good\n" * 10)

    found = await observability.run(
        context(log_files=[str(app), str(clean), str(gone)], log_tail_lines=1000)
    )

    assert codes(found) == ["logs.errors", "logs.unavailable", "logs.no_errors"]
    assert all(f.tool == "logfile" and f.query == "ERROR|FATAL|panic|Traceback" for f in found)
    errors = found[0]
    assert errors.severity == "warning"
    assert errors.evidence["path"] == str(app)
    assert errors.evidence["lines_read"] == 1000
    assert errors.evidence["error_lines"] == 36
    assert errors.evidence["top_messages"] == [
        {
            "message": "ERROR db: connection to #.#.#.#:# refused (attempt #)",
            "count": 30,
            "example": "ERROR db: connection to 10.0.0.5:5432 refused (attempt 0)",
        },
        {
            "message": "panic: runtime error: index out of range [#] with length #",
            "count": 5,
            "example": "panic: runtime error: index out of range [3] with length 3",
        },
        {
            "message": "Traceback (most recent call last):",
            "count": 1,
            "example": "Traceback (most recent call last):",
        },
    ]
    assert "30×" in errors.claim
    assert found[1].severity == "warning"
    assert found[1].evidence["path"] == str(gone)
    assert found[1].evidence["error"] == "No such file or directory"
    assert found[2].severity == "info"
    assert found[2].evidence["paths"] == [str(clean)]


@pytest.mark.anyio
async def test_log_patterns_are_configurable(tmp_path: Path) -> None:
    app = tmp_path / "app.log"
    write_log(app)

    [found] = await observability.run(
        context(log_files=[str(app)], log_patterns=["old crash", "refused"])
    )

    assert found.query == "old crash|refused"
    assert found.evidence["error_lines"] == 80
    assert found.evidence["lines_read"] == 50 + 3000 + 60 + 7


@pytest.mark.anyio
async def test_nothing_to_look_at_raises() -> None:
    with pytest.raises(SpecialistError, match="nothing to look at"):
        await observability.run(context())
