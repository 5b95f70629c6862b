"""A real Prometheus (the Debian package) scrapes `/metrics` with a bearer token."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from episteme.api import Settings, create_app
from episteme.ledger import Ledger
from tests.integration.processes import free_port
from tests.integration.server import live_server


def _prometheus() -> str:
    found = shutil.which("prometheus")
    # scripts/test installs it; a missing binary is a failure, never a skip
    assert found, "prometheus is not installed: run ./scripts/test (it installs the package)"
    return found


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def _ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, f"prometheus exited: {log.read_text()}"
        try:
            if httpx.get(f"{base}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "prometheus did not become ready"
        time.sleep(0.05)


def _wait_for(base: str, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        result = _query(base, promql)
        if result:
            return result
        assert time.monotonic() < deadline, f"no result for {promql} after {timeout} s"
        time.sleep(0.25)


def test_prometheus_scrapes_metrics_with_a_bearer_token(
    ledger: Ledger, home: Path, tmp_path: Path
) -> None:
    scraper, _ = ledger.issue_token("prometheus", ["agent"], by="admin")
    agent, _ = ledger.issue_token("deploy-agent", ["agent"], by="admin")
    app = create_app(Settings(home=home, mcp=False), ledger=ledger)
    with live_server(app) as url:
        auth = {"Authorization": f"Bearer {agent}"}
        httpx.post(
            f"{url}/v1/assertions", json={"subject": "auth.alg", "value": "ES256"}, headers=auth
        )
        for lens in ("approved", "approved", "latest"):
            httpx.post(f"{url}/v1/query", json={"subject": "auth", "lens": lens}, headers=auth)
        target = url.removeprefix("http://")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: episteme\n"
            f"    authorization: {{type: Bearer, credentials: {json.dumps(scraper)}}}\n"
            f"    static_configs: [{{targets: [{json.dumps(target)}]}}]\n"
            "  - job_name: no-token\n"
            f"    static_configs: [{{targets: [{json.dumps(target)}]}}]\n"
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with (tmp_path / "prometheus.log").open("wb") as log:
            proc = subprocess.Popen(
                [_prometheus(), f"--config.file={config}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                _ready(base, proc, tmp_path / "prometheus.log")
                # Prometheus hands new targets to its scraper every 5 s: the first scrape
                # lands 5-6 s after start
                up = _wait_for(base, 'up{job="episteme"} == 1')
                assert up[0]["metric"]["instance"] == target
                refused = _wait_for(base, 'up{job="no-token"}')
                assert refused[0]["value"][1] == "0"  # without a token: 401, target down
                queries = _wait_for(base, "episteme_queries_total")
                by_lens = {r["metric"]["lens"]: r["value"][1] for r in queries}
                assert by_lens == {"approved": "2", "latest": "1"}
                hiding = _query(base, "episteme_answers_hiding_total")
                assert {r["metric"]["lens"]: r["value"][1] for r in hiding} == {"approved": "2"}
                journal = _query(base, "episteme_journal_events")
                assert int(journal[0]["value"][1]) == ledger.store.head()[0]
                latency = _query(
                    base, 'episteme_http_request_duration_seconds_count{route="/v1/query"}'
                )
                assert latency[0]["value"][1] == "3"
            finally:
                proc.terminate()
                proc.wait(timeout=15)
