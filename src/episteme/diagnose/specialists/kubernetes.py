"""The kubernetes specialist: one namespace seen through the official Kubernetes client.

It lists the namespace's pods, its recent warning events and its deployments with the
bearer token the session's approval granted, all three at once in worker threads, and
reads from them what is crash-looping, killed for memory, failing its probes or short of
replicas. Each finding names the API path it came from and the reference of the token.

Settings::

    api_server                   the API server's URL, e.g. https://10.0.0.1:6443
    namespace ("default")        the namespace to look at
    verify_ssl (true), ca_cert   TLS verification, and a CA bundle file for it
    label_selector               restricts the pods listed, e.g. app=checkout
    restart_threshold (5)        a container restarted this often is reported
    events_window_minutes (60)   how recent a warning event must be

Credential role: ``token``, sent as ``Authorization: Bearer``. Without it the requests
are anonymous and findings carry no reference.

Findings:

    k8s.crashloop                a container waiting in CrashLoopBackOff (critical): pod,
                                 container, image, restarts, waiting_message,
                                 last_termination (reason, exit_code, signal, finished_at)
    k8s.oomkilled                a container whose last run ended OOMKilled (critical):
                                 pod, container, memory_limit, memory_request, restarts,
                                 exit_code, finished_at
    k8s.restarts                 a pod with containers restarted restart_threshold times
                                 or more (warning): pod, phase, node, containers
                                 ({name: restarts}), total
    k8s.probe_failing            a pod whose running containers are not ready although a
                                 probe is set, or with recent Unhealthy events (warning):
                                 pod, not_ready ([{container, probes}]), unhealthy_events,
                                 messages
    k8s.deployment_unavailable   a deployment short of available replicas (critical when
                                 none is available): deployment, replicas, available,
                                 ready, updated, unavailable, conditions
    k8s.events                   recent warning events by reason (warning): namespace,
                                 window_minutes, warnings, top_reasons ([{reason, count,
                                 objects, message}])
    k8s.check_failed             one list was answered with an error such as 403; the
                                 others still ran (info): path, error

A 401 (a token the server does not accept), an API server that cannot be reached or
does not answer in time, and a missing api_server raise `SpecialistError`; its message
names the API server and the token's reference, never the token.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import JsonValue

from episteme.diagnose.findings import (
    Finding,
    Redactor,
    Severity,
    SpecialistContext,
    SpecialistError,
)
from episteme.text import shorten

if TYPE_CHECKING:
    from kubernetes.client import (
        ApiClient,
        AppsV1Api,
        CoreV1Api,
        CoreV1Event,
        CoreV1EventList,
        V1Container,
        V1ContainerStatus,
        V1DeploymentList,
        V1Pod,
        V1PodList,
        V1Probe,
    )
    from kubernetes.client.exceptions import ApiException

__all__ = ["NAME", "run"]

NAME = "kubernetes"
TOOL = "kubernetes"
TOP_REASONS = 5
OBJECTS_PER_REASON = 5
MESSAGE_CHARS = 300

T = TypeVar("T")


@dataclass(frozen=True)
class _Cluster:
    """Where the API server is, how to reach it, and what to look at."""

    api_server: str
    namespace: str
    token: str | None = field(repr=False)
    ref: str | None
    verify_ssl: bool
    ca_cert: str | None
    label_selector: str | None
    restart_threshold: int
    window_minutes: float

    @property
    def where(self) -> str:
        return f"the Kubernetes API server at {_display(self.api_server)}"

    @property
    def signed_with(self) -> str:
        return f"the token {self.ref}" if self.ref else "anonymous requests"

    def scrub(self, text: str) -> str:
        """`text` without the token, in any form (scrub, then cut)."""
        return Redactor([self.token] if self.token else [])(text)


def _cluster(ctx: SpecialistContext) -> _Cluster:
    settings = ctx.settings
    api_server = settings.get("api_server")
    if not isinstance(api_server, str) or not api_server.strip():
        raise SpecialistError(
            f"the kubernetes specialist has no API server: set settings.api_server for "
            f"{ctx.environment}"
        )
    ref = ctx.credentials.get("token")
    namespace = settings.get("namespace") or "default"
    if not isinstance(namespace, str):
        raise SpecialistError("settings.namespace must be a string")
    threshold = _number(settings, "restart_threshold", 5)
    selector = settings.get("label_selector")
    ca_cert = settings.get("ca_cert")
    return _Cluster(
        api_server=api_server.strip().rstrip("/"),
        namespace=namespace,
        token=ctx.secret(ref) if ref else None,
        ref=ref,
        verify_ssl=_flag(settings.get("verify_ssl", True), "verify_ssl"),
        ca_cert=str(ca_cert) if ca_cert else None,
        label_selector=str(selector) if selector else None,
        restart_threshold=max(1, math.ceil(threshold)),
        window_minutes=_number(settings, "events_window_minutes", 60),
    )


# -- reading the API --------------------------------------------------------------------


class _ListFailed(Exception):
    """The API server answered one list with an error that is not a 401."""

    def __init__(self, path: str, error: str) -> None:
        super().__init__(error)
        self.path = path
        self.error = error


@dataclass
class _Lists:
    pods: V1PodList | _ListFailed
    events: CoreV1EventList | _ListFailed
    deployments: V1DeploymentList | _ListFailed


def _paths(cluster: _Cluster) -> dict[str, str]:
    ns = cluster.namespace
    pods = f"GET /api/v1/namespaces/{ns}/pods"
    if cluster.label_selector:
        pods += f"?labelSelector={cluster.label_selector}"
    return {
        "pods": pods,
        "events": f"GET /api/v1/namespaces/{ns}/events?fieldSelector=type=Warning",
        "deployments": f"GET /apis/apps/v1/namespaces/{ns}/deployments",
    }


@dataclass
class _Api:
    """The client, built in a worker thread (importing it takes a while)."""

    client: ApiClient
    core: CoreV1Api
    apps: AppsV1Api
    api_exception: type[ApiException]
    http_error: type[Exception]

    def close(self) -> None:
        # the connection pool; the client's thread pool exists only for async_req calls
        self.client.rest_client.close()


def _connect(cluster: _Cluster) -> _Api:
    try:
        from kubernetes.client import ApiClient, AppsV1Api, Configuration, CoreV1Api
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError
    except ImportError:
        raise SpecialistError(
            "the kubernetes specialist needs the kubernetes client: "
            "pip install 'episteme[kubernetes]'"
        ) from None
    config = Configuration(
        host=cluster.api_server,
        api_key={"BearerToken": cluster.token} if cluster.token else None,
        api_key_prefix={"BearerToken": "Bearer"} if cluster.token else None,
        verify_ssl=cluster.verify_ssl,
        ssl_ca_cert=cluster.ca_cert,
        retries=1,
    )
    client = ApiClient(config)
    return _Api(client, CoreV1Api(client), AppsV1Api(client), ApiException, HTTPError)


async def _read(cluster: _Cluster, timeout_s: float) -> _Lists:
    """The three lists, read at once within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    api = await asyncio.to_thread(_connect, cluster)
    request_timeout = (max(1.0, min(5.0, timeout_s / 4)), max(2.0, timeout_s / 2))
    paths = _paths(cluster)
    ns = cluster.namespace

    def call(path: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except api.api_exception as exc:
            if exc.status == 401:
                raise SpecialistError(
                    f"{cluster.where} refused {cluster.signed_with} (401 Unauthorized) for {path}"
                ) from None
            if not exc.status:  # TLS and other failures before any answer
                reason = shorten(cluster.scrub(str(exc.reason)))
                raise SpecialistError(f"cannot reach {cluster.where}: {reason}") from None
            raise _ListFailed(path, _api_error(exc, cluster)) from None
        except api.http_error as exc:
            reason = shorten(cluster.scrub(str(exc)))
            raise SpecialistError(f"cannot reach {cluster.where}: {reason}") from None
        except ValueError as exc:  # an answer that is not the list it should be
            error = f"unexpected answer: {shorten(cluster.scrub(str(exc)))}"
            raise _ListFailed(path, error) from None

    def pods() -> V1PodList:
        return api.core.list_namespaced_pod(
            ns, label_selector=cluster.label_selector, _request_timeout=request_timeout
        )

    def events() -> CoreV1EventList:
        return api.core.list_namespaced_event(
            ns, field_selector="type=Warning", _request_timeout=request_timeout
        )

    def deployments() -> V1DeploymentList:
        return api.apps.list_namespaced_deployment(ns, _request_timeout=request_timeout)

    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                asyncio.to_thread(call, paths["pods"], pods),
                asyncio.to_thread(call, paths["events"], events),
                asyncio.to_thread(call, paths["deployments"], deployments),
                return_exceptions=True,
            ),
            max(0.1, deadline - time.monotonic()),
        )
    except TimeoutError:
        raise SpecialistError(f"{cluster.where} did not answer within {timeout_s:g} s") from None
    finally:
        await asyncio.to_thread(api.close)
    refused = [r for r in results if isinstance(r, SpecialistError)]
    if refused:
        raise SpecialistError("; ".join(dict.fromkeys(r.message for r in refused)))
    pod_list, event_list, deployment_list = results
    return _Lists(_kept(pod_list), _kept(event_list), _kept(deployment_list))


def _kept(result: T | BaseException) -> T | _ListFailed:
    """A list, or the error answer to it; any other failure goes on up."""
    if isinstance(result, _ListFailed) or not isinstance(result, BaseException):
        return result
    raise result


def _api_error(exc: ApiException, cluster: _Cluster) -> str:
    """The status and the message of a Kubernetes Status answer."""
    import json

    message = ""
    try:
        body = json.loads(exc.body) if exc.body else {}
        if isinstance(body, dict):
            message = str(body.get("message") or "")
    except ValueError:
        message = str(exc.body or "")
    text = f"{exc.status} {exc.reason or ''}".strip()
    return shorten(cluster.scrub(f"{text}: {message}" if message else text))


# -- the look ---------------------------------------------------------------------------


async def run(ctx: SpecialistContext) -> list[Finding]:
    """Look at one namespace: its pods, recent warning events and deployments.

    Raises:
        SpecialistError: the client is not installed, api_server is not set, the token
            was refused (401), or the API server cannot be reached in time.
    """
    cluster = _cluster(ctx)
    lists = await _read(cluster, ctx.timeout_s)
    paths = _paths(cluster)
    findings: list[Finding] = []
    failed: list[Finding] = []
    events: list[CoreV1Event] = []
    if isinstance(lists.events, _ListFailed):
        failed.append(_check_failed(cluster, lists.events))
    else:
        events = _recent(lists.events.items, cluster.window_minutes)
    if isinstance(lists.pods, _ListFailed):
        failed.append(_check_failed(cluster, lists.pods))
        pods: list[V1Pod] = []
    else:
        pods = list(lists.pods.items)
    unhealthy = _unhealthy_by_pod(events)
    for pod in pods:
        findings += _pod_findings(cluster, paths["pods"], pod, unhealthy.pop(_name(pod), []))
    for name, pod_events in unhealthy.items():  # pods gone, or not listed
        found = _probe_finding(cluster, paths["events"], name, [], pod_events)
        if found:
            findings.append(found)
    if isinstance(lists.deployments, _ListFailed):
        failed.append(_check_failed(cluster, lists.deployments))
    else:
        findings += _deployment_findings(cluster, paths["deployments"], lists.deployments)
    if events:
        findings.append(_events_finding(cluster, paths["events"], events))
    return findings + failed


# -- pods -------------------------------------------------------------------------------


def _name(pod: V1Pod) -> str:
    return (pod.metadata.name if pod.metadata else None) or "(unnamed)"


def _pod_findings(
    cluster: _Cluster, path: str, pod: V1Pod, unhealthy: list[CoreV1Event]
) -> list[Finding]:
    name = _name(pod)
    status = pod.status
    statuses = (
        [*(status.init_container_statuses or []), *(status.container_statuses or [])]
        if status
        else []
    )
    specs = {c.name: c for c in (pod.spec.containers if pod.spec else [])}
    if pod.spec and pod.spec.init_containers:
        specs |= {c.name: c for c in pod.spec.init_containers}
    findings: list[Finding] = []
    for cs in statuses:
        crash = _crashloop(cluster, path, name, cs)
        if crash:
            findings.append(crash)
        oom = _oomkilled(cluster, path, name, cs, specs.get(cs.name))
        if oom:
            findings.append(oom)
    restarted = {cs.name: cs.restart_count for cs in statuses}
    over = {k: v for k, v in restarted.items() if v >= cluster.restart_threshold}
    if over:
        total = sum(restarted.values())
        listed = ", ".join(f"{k}: {v}" for k, v in over.items())
        claim = (
            f"Pod {name} has restarted containers {total} time(s) ({listed}), at or above "
            f"the threshold of {cluster.restart_threshold}."
        )
        evidence: dict[str, JsonValue] = {
            "pod": name,
            "phase": (status.phase if status else None) or "Unknown",
            "node": (pod.spec.node_name if pod.spec else None) or None,
            "containers": dict(over),
            "total": total,
        }
        findings.append(_finding(cluster, "k8s.restarts", "warning", claim, evidence, path))
    not_ready = [
        (cs, specs[cs.name])
        for cs in ((status.container_statuses if status else None) or [])
        if _running_unready(cs) and cs.name in specs and _probes(specs[cs.name])
    ]
    probe = _probe_finding(cluster, path, name, not_ready, unhealthy)
    if probe:
        findings.append(probe)
    return findings


def _running_unready(cs: V1ContainerStatus) -> bool:
    """Running, yet not ready: what a failing probe looks like (a crashing container is
    not ready either, and is reported as such)."""
    return not cs.ready and cs.state is not None and cs.state.running is not None


def _crashloop(cluster: _Cluster, path: str, pod: str, cs: V1ContainerStatus) -> Finding | None:
    waiting = cs.state.waiting if cs.state else None
    if not waiting or waiting.reason != "CrashLoopBackOff":
        return None
    last = cs.last_state.terminated if cs.last_state else None
    termination: dict[str, JsonValue] | None = None
    claim = (
        f"Container {cs.name} of pod {pod} is in CrashLoopBackOff after {cs.restart_count} restarts"
    )
    if last:
        termination = {
            "reason": last.reason,
            "exit_code": last.exit_code,
            "signal": last.signal,
            "finished_at": _time(last.finished_at),
            "message": shorten(last.message, MESSAGE_CHARS) if last.message else None,
        }
        claim += f"; it last exited with code {last.exit_code} ({last.reason or 'no reason'})"
    evidence: dict[str, JsonValue] = {
        "pod": pod,
        "container": cs.name,
        "image": cs.image,
        "restarts": cs.restart_count,
        "waiting_message": shorten(waiting.message, MESSAGE_CHARS) if waiting.message else None,
        "last_termination": termination,
    }
    return _finding(cluster, "k8s.crashloop", "critical", claim + ".", evidence, path)


def _oomkilled(
    cluster: _Cluster, path: str, pod: str, cs: V1ContainerStatus, spec: V1Container | None
) -> Finding | None:
    candidates = [
        state.terminated
        for state in (cs.state, cs.last_state)
        if state is not None and state.terminated is not None
    ]
    killed = next((t for t in candidates if t.reason == "OOMKilled"), None)
    if killed is None:
        return None
    resources = spec.resources if spec else None
    limit = (resources.limits or {}).get("memory") if resources else None
    request = (resources.requests or {}).get("memory") if resources else None
    claim = f"Container {cs.name} of pod {pod} was killed for memory (OOMKilled)"
    claim += (
        f" at its limit of {limit}." if limit else " with no memory limit set (the node ran out)."
    )
    evidence: dict[str, JsonValue] = {
        "pod": pod,
        "container": cs.name,
        "memory_limit": limit,
        "memory_request": request,
        "restarts": cs.restart_count,
        "exit_code": killed.exit_code,
        "finished_at": _time(killed.finished_at),
    }
    return _finding(cluster, "k8s.oomkilled", "critical", claim, evidence, path)


def _probes(container: V1Container) -> dict[str, str]:
    """The probes a container has, described: {"readiness": "HTTP GET :8080/ready"}."""
    probes = {
        "readiness": container.readiness_probe,
        "liveness": container.liveness_probe,
        "startup": container.startup_probe,
    }
    return {kind: _describe_probe(p) for kind, p in probes.items() if p is not None}


def _describe_probe(probe: V1Probe) -> str:
    if probe.http_get:
        get = probe.http_get
        return f"{get.scheme or 'HTTP'} GET :{get.port}{get.path or '/'}"
    if probe.tcp_socket:
        return f"TCP :{probe.tcp_socket.port}"
    if probe.grpc:
        return f"gRPC :{probe.grpc.port}"
    if probe.var_exec:
        return "exec " + " ".join(probe.var_exec.command or [])
    return "probe"


def _probe_finding(
    cluster: _Cluster,
    path: str,
    pod: str,
    not_ready: list[tuple[V1ContainerStatus, V1Container]],
    unhealthy: list[CoreV1Event],
) -> Finding | None:
    if not not_ready and not unhealthy:
        return None
    count = sum(_count(e) for e in unhealthy)
    messages = list(dict.fromkeys(shorten(e.message or "", MESSAGE_CHARS) for e in unhealthy))
    parts = []
    if not_ready:
        names = ", ".join(cs.name for cs, _ in not_ready)
        parts.append(f"container(s) {names} running but not ready")
    if unhealthy:
        parts.append(f"{count} Unhealthy event(s): {messages[0]}")
    claim = f"Pod {pod} fails its probes: " + "; ".join(parts) + "."
    evidence: dict[str, JsonValue] = {
        "pod": pod,
        "not_ready": [
            {"container": cs.name, "probes": dict(_probes(spec))} for cs, spec in not_ready
        ],
        "unhealthy_events": count,
        "messages": list(messages[:5]),
    }
    return _finding(cluster, "k8s.probe_failing", "warning", claim, evidence, path)


# -- events -----------------------------------------------------------------------------


def _when(event: CoreV1Event) -> datetime | None:
    series = event.series.last_observed_time if event.series else None
    created = event.metadata.creation_timestamp if event.metadata else None
    return event.last_timestamp or series or event.event_time or event.first_timestamp or created


def _count(event: CoreV1Event) -> int:
    if event.series and event.series.count:
        return event.series.count
    return event.count or 1


def _recent(events: Iterable[CoreV1Event], minutes: float) -> list[CoreV1Event]:
    """The warning events seen within the last `minutes`."""
    since = datetime.now(UTC) - timedelta(minutes=minutes)
    out = []
    for event in events:
        if event.type != "Warning":
            continue
        when = _when(event)
        if when is None or when.astimezone(UTC) >= since:
            out.append(event)
    return out


def _unhealthy_by_pod(events: Iterable[CoreV1Event]) -> dict[str, list[CoreV1Event]]:
    by_pod: dict[str, list[CoreV1Event]] = defaultdict(list)
    for event in events:
        obj = event.involved_object
        if event.reason == "Unhealthy" and obj.kind == "Pod" and obj.name:
            by_pod[obj.name].append(event)
    return by_pod


def _events_finding(cluster: _Cluster, path: str, events: list[CoreV1Event]) -> Finding:
    counts: Counter[str] = Counter()
    objects: dict[str, list[str]] = defaultdict(list)
    latest: dict[str, tuple[datetime, str]] = {}
    floor = datetime.min.replace(tzinfo=UTC)
    for event in events:
        reason = event.reason or "(none)"
        counts[reason] += _count(event)
        obj = event.involved_object
        label = f"{obj.kind or '?'}/{obj.name or '?'}"
        if label not in objects[reason]:
            objects[reason].append(label)
        when = _when(event) or floor
        if reason not in latest or when >= latest[reason][0]:
            latest[reason] = (when, shorten(event.message or "", MESSAGE_CHARS))
    total = sum(counts.values())
    top: list[JsonValue] = [
        {
            "reason": reason,
            "count": n,
            "objects": list(objects[reason][:OBJECTS_PER_REASON]),
            "message": latest[reason][1],
        }
        for reason, n in counts.most_common(TOP_REASONS)
    ]
    listed = ", ".join(f"{n} {reason}" for reason, n in counts.most_common(TOP_REASONS))
    claim = (
        f"{total} warning event(s) in namespace {cluster.namespace} in the last "
        f"{cluster.window_minutes:g} min: {listed}."
    )
    evidence: dict[str, JsonValue] = {
        "namespace": cluster.namespace,
        "window_minutes": cluster.window_minutes,
        "warnings": total,
        "top_reasons": top,
    }
    return _finding(cluster, "k8s.events", "warning", claim, evidence, path)


# -- deployments ------------------------------------------------------------------------


def _deployment_findings(
    cluster: _Cluster, path: str, deployments: V1DeploymentList
) -> list[Finding]:
    findings = []
    for deployment in deployments.items:
        name = (deployment.metadata.name if deployment.metadata else None) or "(unnamed)"
        desired = deployment.spec.replicas if deployment.spec else None
        desired = 1 if desired is None else desired
        status = deployment.status
        available = (status.available_replicas if status else None) or 0
        unavailable = (status.unavailable_replicas if status else None) or 0
        unavailable = max(unavailable, desired - available)
        if unavailable <= 0:
            continue
        conditions: list[JsonValue] = [
            {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
            for c in ((status.conditions if status else None) or [])
            if c.status != "True" or c.type == "ReplicaFailure"
        ]
        severity: Severity = "critical" if available == 0 and desired > 0 else "warning"
        claim = (
            f"Deployment {name} has {available} of {desired} replica(s) available "
            f"({unavailable} unavailable)"
        )
        reasons = [f"{c['reason']}" for c in conditions if isinstance(c, dict) and c["reason"]]
        claim += f": {', '.join(reasons)}." if reasons else "."
        evidence: dict[str, JsonValue] = {
            "deployment": name,
            "replicas": desired,
            "available": available,
            "ready": (status.ready_replicas if status else None) or 0,
            "updated": (status.updated_replicas if status else None) or 0,
            "unavailable": unavailable,
            "conditions": conditions,
        }
        findings.append(
            _finding(cluster, "k8s.deployment_unavailable", severity, claim, evidence, path)
        )
    return findings


# -- helpers ----------------------------------------------------------------------------


def _finding(
    cluster: _Cluster,
    code: str,
    severity: Severity,
    claim: str,
    evidence: dict[str, JsonValue],
    path: str,
) -> Finding:
    return Finding(
        specialist=NAME,
        code=code,
        severity=severity,
        claim=claim,
        evidence=evidence,
        tool=TOOL,
        query=path,
        credential_ref=cluster.ref,
    )


def _check_failed(cluster: _Cluster, failure: _ListFailed) -> Finding:
    return _finding(
        cluster,
        "k8s.check_failed",
        "info",
        f"{cluster.where} answered {failure.path} with {failure.error}",
        {"path": failure.path, "error": failure.error},
        failure.path,
    )


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _number(settings: Mapping[str, Any], key: str, default: float) -> float:
    value = settings.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise SpecialistError(f"settings.{key} must be a number > 0, not {value!r}")
    return number


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise SpecialistError(f"settings.{key} must be true or false, not {value!r}")


def _display(url: str) -> str:
    """A URL without the user and password it may carry."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
