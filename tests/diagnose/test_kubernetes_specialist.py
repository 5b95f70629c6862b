"""The kubernetes specialist, its official client talking HTTP to a local API server of
ours that answers with recorded Kubernetes JSON (k8s/: a PodList, an EventList and a
DeploymentList of one namespace, in the API's own shape) and checks the bearer token as
the real one does."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from episteme.diagnose.findings import Finding, SpecialistContext, SpecialistError
from episteme.diagnose.specialists import kubernetes
from tests.integration.processes import free_port
from tests.integration.server import live_server

RECORDED = Path(__file__).parent / "k8s"
RECORDED_AT = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
"""When the recordings were made: event times move by (now - this) when served."""
NAMESPACE = "shop"
TOKEN_REF = "op://Infrastructure/k8s-prod/token"
TOKEN = "k8s-token-canary-3e7a9d"
VIEWER_REF = "op://Infrastructure/k8s-viewer/token"
VIEWER = "k8s-viewer-canary-51bc"
"""A token allowed to list pods and deployments, but not events (403)."""
SECRETS = {TOKEN_REF: TOKEN, VIEWER_REF: VIEWER}
_TIME_KEYS = {"firstTimestamp", "lastTimestamp", "eventTime", "lastObservedTime"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDED / f"{name}.json").read_text())
    return data


def _moved(value: Any, by: Any) -> Any:
    """The recording with its event times moved by `by`, so that they are recent."""
    if isinstance(value, dict):
        return {
            k: (
                (datetime.fromisoformat(v) + by).isoformat().replace("+00:00", "Z")
                if k in _TIME_KEYS and isinstance(v, str)
                else _moved(v, by)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_moved(v, by) for v in value]
    return value


def _status(code: int, reason: str, message: str) -> JSONResponse:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return JSONResponse(body, status_code=code)


@dataclass
class ApiServer:
    url: str
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    """(path, query string, Authorization header) of each request."""


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    seen: list[tuple[str, str, str]] = []

    def empty(kind: str, api_version: str) -> dict[str, Any]:
        return {"kind": kind, "apiVersion": api_version, "metadata": {}, "items": []}

    def authorized(request: Request, resource: str) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        seen.append((request.url.path, request.url.query, auth))
        if auth == f"Bearer {TOKEN}":
            return None
        if auth == f"Bearer {VIEWER}" and resource != "events":
            return None
        if auth == f"Bearer {VIEWER}":
            return _status(
                403,
                "Forbidden",
                f'events is forbidden: User "system:serviceaccount:ops:viewer" cannot list '
                f'resource "events" in API group "" in the namespace "{NAMESPACE}"',
            )
        return _status(401, "Unauthorized", "Unauthorized")

    async def pods(request: Request) -> JSONResponse:
        if denied := authorized(request, "pods"):
            return denied
        ns = request.path_params["ns"]
        return JSONResponse(_recorded("pods") if ns == NAMESPACE else empty("PodList", "v1"))

    async def events(request: Request) -> JSONResponse:
        if denied := authorized(request, "events"):
            return denied
        if request.path_params["ns"] != NAMESPACE:
            return JSONResponse(empty("EventList", "v1"))
        recording = _moved(_recorded("events"), datetime.now(UTC) - RECORDED_AT)
        if request.query_params.get("fieldSelector") == "type=Warning":
            recording["items"] = [e for e in recording["items"] if e["type"] == "Warning"]
        return JSONResponse(recording)

    async def deployments(request: Request) -> JSONResponse:
        if denied := authorized(request, "deployments"):
            return denied
        ns = request.path_params["ns"]
        return JSONResponse(
            _recorded("deployments") if ns == NAMESPACE else empty("DeploymentList", "apps/v1")
        )

    app = Starlette(
        routes=[
            Route("/api/v1/namespaces/{ns}/pods", pods),
            Route("/api/v1/namespaces/{ns}/events", events),
            Route("/apis/apps/v1/namespaces/{ns}/deployments", deployments),
        ]
    )
    with live_server(app) as url:
        yield ApiServer(url, seen)


def context(
    url: str, credentials: dict[str, str] | None = None, **settings: Any
) -> SpecialistContext:
    return SpecialistContext(
        problem="checkout pods crashloop after the deploy",
        environment="prod",
        settings={"api_server": url, "namespace": NAMESPACE, "verify_ssl": False, **settings},
        secret=SECRETS.__getitem__,
        credentials={"token": TOKEN_REF} if credentials is None else credentials,
        timeout_s=10,
    )


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


# -- the whole look ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_namespace_in_trouble(api_server: ApiServer) -> None:
    found = await kubernetes.run(context(api_server.url))

    assert codes(found) == [
        "k8s.crashloop",
        "k8s.restarts",
        "k8s.oomkilled",
        "k8s.probe_failing",
        "k8s.probe_failing",
        "k8s.deployment_unavailable",
        "k8s.deployment_unavailable",
        "k8s.events",
    ]
    assert all(f.specialist == "kubernetes" and f.tool == "kubernetes" for f in found)
    assert all(f.credential_ref == TOKEN_REF for f in found)
    assert TOKEN not in repr(found)
    # each list was asked for once, with the token and the field selector for warnings
    paths = sorted((path, query) for path, query, _ in api_server.requests)
    assert paths == [
        (f"/api/v1/namespaces/{NAMESPACE}/events", "fieldSelector=type%3DWarning"),
        (f"/api/v1/namespaces/{NAMESPACE}/pods", ""),
        (f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", ""),
    ]
    assert {auth for *_, auth in api_server.requests} == {f"Bearer {TOKEN}"}


@pytest.mark.anyio
async def test_crashloop_with_the_last_exit(api_server: ApiServer) -> None:
    found = await kubernetes.run(context(api_server.url))

    [crash] = only(found, "k8s.crashloop")
    assert crash.severity == "critical"
    assert crash.query == f"GET /api/v1/namespaces/{NAMESPACE}/pods"
    assert crash.evidence == {
        "pod": "checkout-7d9f8b6c5d-x2k4p",
        "container": "checkout",
        "image": "registry.example.com/shop/checkout:2.14.0",
        "restarts": 14,
        "waiting_message": "back-off 5m0s restarting failed container=checkout "
        "pod=checkout-7d9f8b6c5d-x2k4p_shop(0b7c4f8e-2d1a-4b61-9f3e-5a8d7c6b4e21)",
        "last_termination": {
            "reason": "Error",
            "exit_code": 1,
            "signal": None,
            "finished_at": "2026-11-21T08:53:04Z",
            "message": None,
        },
    }
    assert "after 14 restarts" in crash.claim
    assert "exited with code 1 (Error)" in crash.claim


@pytest.mark.anyio
async def test_restarts_above_the_threshold(api_server: ApiServer) -> None:
    found = await kubernetes.run(context(api_server.url))

    [restarts] = only(found, "k8s.restarts")
    assert restarts.severity == "warning"
    assert restarts.evidence == {
        "pod": "checkout-7d9f8b6c5d-x2k4p",
        "phase": "Running",
        "node": "ip-10-0-3-17.ec2.internal",
        "containers": {"checkout": 14},
        "total": 14,
    }
    # the billing worker's 3 restarts count once the threshold is lower
    lower = await kubernetes.run(context(api_server.url, restart_threshold=3))
    assert [f.evidence["pod"] for f in only(lower, "k8s.restarts")] == [
        "checkout-7d9f8b6c5d-x2k4p",
        "billing-worker-5c6b7d8f9-q8r7t",
    ]


@pytest.mark.anyio
async def test_oomkilled_with_the_memory_limit(api_server: ApiServer) -> None:
    found = await kubernetes.run(context(api_server.url))

    [oom] = only(found, "k8s.oomkilled")
    assert oom.severity == "critical"
    assert oom.evidence == {
        "pod": "billing-worker-5c6b7d8f9-q8r7t",
        "container": "worker",
        "memory_limit": "256Mi",
        "memory_request": "128Mi",
        "restarts": 3,
        "exit_code": 137,
        "finished_at": "2026-11-21T08:47:27Z",
    }
    assert "at its limit of 256Mi" in oom.claim


@pytest.mark.anyio
async def test_failing_probes_from_readiness_and_unhealthy_events(api_server: ApiServer) -> None:
    found = await kubernetes.run(context(api_server.url))

    search, frontend = only(found, "k8s.probe_failing")
    assert search.evidence == {
        "pod": "search-6f5d4c3b2a-m9n8b",
        "not_ready": [
            {
                "container": "search",
                "probes": {"readiness": "HTTP GET :http/_cluster/health", "liveness": "TCP :9200"},
            }
        ],
        "unhealthy_events": 42,
        "messages": ["Readiness probe failed: HTTP probe failed with statuscode: 503"],
    }
    assert "running but not ready" in search.claim
    # ready, but its liveness probe timed out three times
    assert frontend.evidence["pod"] == "frontend-84c5b6d7f8-t5w6z"
    assert frontend.evidence["not_ready"] == []
    assert frontend.evidence["unhealthy_events"] == 3
    messages = frontend.evidence["messages"]
    assert isinstance(messages, list)
    assert str(messages[0]).startswith("Liveness probe failed")
    # the crash-looping container is not ready too, but that is the crashloop finding
    assert "checkout-7d9f8b6c5d-x2k4p" not in {f.evidence["pod"] for f in (search, frontend)}


@pytest.mark.anyio
async def test_deployments_short_of_replicas(api_server: ApiServer) -> None:
    found = await kubernetes.run(context(api_server.url))

    checkout, search = only(found, "k8s.deployment_unavailable")
    assert checkout.severity == "warning"
    assert checkout.query == f"GET /apis/apps/v1/namespaces/{NAMESPACE}/deployments"
    assert checkout.evidence == {
        "deployment": "checkout",
        "replicas": 3,
        "available": 2,
        "ready": 2,
        "updated": 3,
        "unavailable": 1,
        "conditions": [],
    }
    assert search.severity == "critical"  # none available
    assert search.evidence["available"] == 0
    assert search.evidence["unavailable"] == 2
    assert search.evidence["conditions"] == [
        {
            "type": "Available",
            "status": "False",
            "reason": "MinimumReplicasUnavailable",
            "message": "Deployment does not have minimum availability.",
        },
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "search-6f5d4c3b2a" has timed out progressing.',
        },
    ]
    assert "ProgressDeadlineExceeded" in search.claim


@pytest.mark.anyio
async def test_recent_warning_events_by_reason(api_server: ApiServer) -> None:
    found = await kubernetes.run(context(api_server.url))

    [events] = only(found, "k8s.events")
    assert events.severity == "warning"
    assert events.query == (f"GET /api/v1/namespaces/{NAMESPACE}/events?fieldSelector=type=Warning")
    # the normal Pulled event is not a warning; the FailedMount of 06:43 is too old
    assert events.evidence["warnings"] == 57 + 42 + 3 + 6
    assert events.evidence["window_minutes"] == 60.0
    top = events.evidence["top_reasons"]
    assert isinstance(top, list)
    assert [(r["reason"], r["count"]) for r in top if isinstance(r, dict)] == [
        ("BackOff", 57),
        ("Unhealthy", 45),
        ("FailedScheduling", 6),  # counted from its series, as the new scheduler reports
    ]
    assert top[1] == {
        "reason": "Unhealthy",
        "count": 45,
        "objects": ["Pod/search-6f5d4c3b2a-m9n8b", "Pod/frontend-84c5b6d7f8-t5w6z"],
        "message": "Readiness probe failed: HTTP probe failed with statuscode: 503",
    }
    assert isinstance(top[2], dict)
    assert str(top[2]["message"]).startswith("0/3 nodes are available: 3 Insufficient memory")

    wider = await kubernetes.run(context(api_server.url, events_window_minutes=180))
    [all_events] = only(wider, "k8s.events")
    reasons = all_events.evidence["top_reasons"]
    assert isinstance(reasons, list)
    assert "FailedMount" in {r["reason"] for r in reasons if isinstance(r, dict)}


@pytest.mark.anyio
async def test_an_empty_namespace_has_nothing_to_say(api_server: ApiServer) -> None:
    assert await kubernetes.run(context(api_server.url, namespace="quiet")) == []


# -- failures ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_refused_token_names_the_server_never_the_token(api_server: ApiServer) -> None:
    secrets = {TOKEN_REF: "not-the-token-canary-0d4f"}
    ctx = context(api_server.url)
    ctx.secret = secrets.__getitem__

    with pytest.raises(SpecialistError) as caught:
        await kubernetes.run(ctx)

    message = caught.value.message
    assert api_server.url in message
    assert "401 Unauthorized" in message
    assert TOKEN_REF in message
    assert "not-the-token-canary-0d4f" not in message
    assert TOKEN not in message


@pytest.mark.anyio
async def test_without_a_token_the_requests_are_anonymous(api_server: ApiServer) -> None:
    with pytest.raises(SpecialistError, match="refused anonymous requests"):
        await kubernetes.run(context(api_server.url, credentials={}))

    assert {auth for *_, auth in api_server.requests} == {""}


@pytest.mark.anyio
async def test_a_forbidden_list_is_reported_and_the_rest_still_read(api_server: ApiServer) -> None:
    found = await kubernetes.run(context(api_server.url, credentials={"token": VIEWER_REF}))

    assert "k8s.events" not in codes(found)
    assert "k8s.crashloop" in codes(found)
    assert "k8s.deployment_unavailable" in codes(found)
    [failed] = only(found, "k8s.check_failed")
    assert failed.severity == "info"
    assert failed.credential_ref == VIEWER_REF
    assert failed.evidence["path"] == (
        f"GET /api/v1/namespaces/{NAMESPACE}/events?fieldSelector=type=Warning"
    )
    assert str(failed.evidence["error"]).startswith("403 Forbidden: events is forbidden")
    assert VIEWER not in repr(found)
    # without events, the search pod's probe is still seen from its readiness
    [probe] = only(found, "k8s.probe_failing")
    assert probe.evidence["pod"] == "search-6f5d4c3b2a-m9n8b"
    assert probe.evidence["unhealthy_events"] == 0


@pytest.mark.anyio
async def test_an_unreachable_api_server_fails_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()

    with pytest.raises(SpecialistError) as caught:
        await kubernetes.run(context(url))

    assert time.monotonic() - start < 5
    assert f"cannot reach the Kubernetes API server at {url}" in caught.value.message
    assert TOKEN not in caught.value.message


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"api_server": ""}, "no API server"),
        ({"restart_threshold": "many"}, "restart_threshold"),
        ({"events_window_minutes": 0}, "events_window_minutes"),
        ({"verify_ssl": "maybe"}, "verify_ssl"),
    ],
)
async def test_malformed_settings_are_named(settings: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecialistError, match=expected):
        await kubernetes.run(context("http://127.0.0.1:9", **settings))
