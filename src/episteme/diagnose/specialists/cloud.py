"""The cloud specialist: AWS instances and metrics seen through boto3.

It asks EC2 for the status checks, states and scheduled events of the instances
(``DescribeInstanceStatus`` with ``IncludeAllInstances``), then CloudWatch for the CPU of
the running ones and for the metrics the settings list (``GetMetricData`` over a recent
window). Both calls run in worker threads within the session's time budget. Each finding
names the API call it came from and the reference of the access key it was signed with.

Settings::

    region ("us-east-1"), endpoint_url        where the APIs are (an endpoint for a
                                              private link, a proxy or moto)
    instance_ids                              the instances to look at (default: all of
                                              the region); a named instance that is not
                                              running is a warning
    cpu_threshold (90)                        CPUUtilization percent that is too high
    window_minutes (15), period_s (60)        how far back CloudWatch is read, and at
                                              what resolution
    metrics                                   [{"namespace", "metric", "dimensions"
                                              ({name: value}), "stat" ("Average"),
                                              "threshold", "comparison" ("above" |
                                              "below"), "window_minutes", "period_s",
                                              "name", "severity" ("warning")}]

Credential roles: ``ec2-access-key`` and ``ec2-secret-key`` sign the EC2 calls,
``cloudwatch-access-key`` and ``cloudwatch-secret-key`` the CloudWatch ones; each pair
falls back to ``access-key`` and ``secret-key`` (and ``ec2-session-token``,
``cloudwatch-session-token`` to ``session-token``). With none of them, boto3's default
chain (environment, instance profile) is used and findings carry no reference.

Findings:

    cloud.instance_impaired      an instance's system or instance status check failed
                                 (critical): instance, availability_zone, state,
                                 system_status, instance_status, failed_checks
    cloud.instance_stopped       an instance named in instance_ids is not running
                                 (warning: instance, state); other stopped instances of
                                 the region in one info finding (instances)
    cloud.scheduled_event        a pending maintenance event (warning): instance, event,
                                 description, not_before, not_after
    cloud.cpu_high               CPUUtilization above cpu_threshold: instance, max, avg,
                                 latest, datapoints, threshold, window_minutes (critical
                                 when the average is above it, warning for peaks)
    cloud.metric_threshold       a configured metric crossed its threshold: name,
                                 namespace, metric, dimensions, stat, comparison,
                                 threshold, worst, avg, datapoints, window_minutes
    cloud.check_failed           one call was answered with an error, such as a
                                 permission the key lacks (403); the others still ran
                                 (info): call, error

Credentials AWS does not accept (an unknown or expired key, a wrong secret), an endpoint
that cannot be reached or does not answer in time, and missing credentials raise
`SpecialistError`; its message names the service, region and endpoint and the reference
of the access key, never a key's value.
"""

from __future__ import annotations

import asyncio
import math
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
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

__all__ = ["NAME", "SpecialistError", "run"]

NAME = "cloud"
DEFAULT_REGION = "us-east-1"
MAX_QUERIES = 500
"""GetMetricData's limit of queries per request."""
CPU_INSTANCES = 500
"""Running instances whose CPU is read, at most."""
_SEVERITIES = ("info", "warning", "critical")
_NOT_RUNNING = ("stopping", "stopped", "shutting-down", "terminated")
_REFUSED = (
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "InvalidAccessKeyId",
)
"""Error codes of credentials AWS does not accept (as opposed to a permission missing)."""
_FORBIDDEN = ("UnauthorizedOperation", "AccessDenied")
DESCRIBE_IDS = 100
"""DescribeInstanceStatus's limit of instance ids per request."""

T = TypeVar("T")


# -- settings and credentials -----------------------------------------------------------


@dataclass(frozen=True)
class _Metric:
    """A CloudWatch metric to check, from settings.metrics."""

    name: str
    namespace: str
    metric: str
    dimensions: dict[str, str]
    stat: str
    threshold: float
    comparison: str
    window_minutes: float
    period_s: int
    severity: Severity

    def describe(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dimensions.items())
        return f"{self.namespace} {self.metric}{' {' + dims + '}' if dims else ''} {self.stat}"


@dataclass(frozen=True)
class _Settings:
    region: str
    endpoint_url: str | None
    instance_ids: tuple[str, ...]
    cpu_threshold: float
    window_minutes: float
    period_s: int
    metrics: tuple[_Metric, ...]

    @property
    def where(self) -> str:
        where = f"region {self.region}"
        return f"{where}, endpoint {_display(self.endpoint_url)}" if self.endpoint_url else where


@dataclass(frozen=True)
class _Service:
    """One AWS API and the keys its calls are signed with."""

    name: str
    label: str
    settings: _Settings
    access_key: str | None = field(repr=False)
    secret_key: str | None = field(repr=False)
    session_token: str | None = field(repr=False)
    ref: str | None

    @property
    def tool(self) -> str:
        return f"boto3:{self.name}"

    @property
    def where(self) -> str:
        return f"AWS {self.label} ({self.settings.where})"

    @property
    def signed_with(self) -> str:
        return f"the access key {self.ref}" if self.ref else "the default credential chain"

    def scrub(self, text: str) -> str:
        """`text` without the values of this service's keys, in any form (scrub, then
        cut: a key cut short is no longer recognised whole)."""
        keys = (self.secret_key, self.session_token, self.access_key)
        return Redactor(k for k in keys if k)(text)


def _settings(raw: Mapping[str, Any]) -> _Settings:
    window = _positive(raw, "window_minutes", 15)
    period = _period(raw.get("period_s", 60), "settings.period_s")
    ids = raw.get("instance_ids") or []
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, Sequence) or not all(isinstance(i, str) for i in ids):
        raise SpecialistError("settings.instance_ids must be a list of instance ids")
    metrics = raw.get("metrics") or []
    if isinstance(metrics, str | Mapping) or not isinstance(metrics, Sequence):
        raise SpecialistError("settings.metrics must be a list")
    endpoint = raw.get("endpoint_url")
    return _Settings(
        region=str(raw.get("region") or DEFAULT_REGION),
        endpoint_url=str(endpoint) if endpoint else None,
        instance_ids=tuple(ids),
        cpu_threshold=_positive(raw, "cpu_threshold", 90),
        window_minutes=window,
        period_s=period,
        metrics=tuple(_metric(m, i, window, period) for i, m in enumerate(metrics)),
    )


def _metric(raw: Any, index: int, window: float, period: int) -> _Metric:
    where = f"settings.metrics[{index}]"
    if not isinstance(raw, Mapping):
        raise SpecialistError(f"{where} must be an object")
    for key in ("namespace", "metric"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise SpecialistError(f"{where} needs {key} (a string)")
    dims = raw.get("dimensions") or {}
    if isinstance(dims, Sequence) and not isinstance(dims, str):
        # the API's own shape: [{"Name": …, "Value": …}]
        try:
            dims = {str(d["Name"]): str(d["Value"]) for d in dims}
        except (KeyError, TypeError):
            raise SpecialistError(f"{where}.dimensions must map names to values") from None
    if not isinstance(dims, Mapping):
        raise SpecialistError(f"{where}.dimensions must map names to values")
    try:
        threshold = float(raw["threshold"])
    except (KeyError, TypeError, ValueError):
        raise SpecialistError(f"{where} needs threshold (a number)") from None
    comparison = raw.get("comparison", "above")
    if comparison not in ("above", "below"):
        raise SpecialistError(f"{where}.comparison must be above or below")
    severity = raw.get("severity", "warning")
    if severity not in _SEVERITIES:
        raise SpecialistError(f"{where}.severity must be one of {', '.join(_SEVERITIES)}")
    metric_window = _positive(raw, "window_minutes", window, where)
    stat = str(raw.get("stat") or "Average")
    return _Metric(
        name=str(raw.get("name") or f"{raw['namespace']} {raw['metric']}"),
        namespace=raw["namespace"],
        metric=raw["metric"],
        dimensions={str(k): str(v) for k, v in dims.items()},
        stat=stat,
        threshold=threshold,
        comparison=comparison,
        window_minutes=metric_window,
        period_s=_period(raw.get("period_s", period), f"{where}.period_s"),
        severity=severity,
    )


def _service(ctx: SpecialistContext, name: str, label: str, settings: _Settings) -> _Service:
    """The keys for one API: its own roles first, then the plain ones."""
    granted = ctx.credentials

    def role(kind: str) -> str | None:
        return granted.get(f"{name}-{kind}") or granted.get(kind)

    access_ref, secret_ref, token_ref = (
        role("access-key"),
        role("secret-key"),
        role("session-token"),
    )
    if bool(access_ref) != bool(secret_ref):
        missing = "secret-key" if access_ref else "access-key"
        raise SpecialistError(
            f"the cloud specialist has half a key pair for AWS {label}: grant "
            f"'{name}-{missing}' (or '{missing}') as well"
        )
    return _Service(
        name=name,
        label=label,
        settings=settings,
        access_key=ctx.secret(access_ref) if access_ref else None,
        secret_key=ctx.secret(secret_ref) if secret_ref else None,
        session_token=ctx.secret(token_ref) if token_ref else None,
        ref=access_ref,
    )


# -- calling AWS ------------------------------------------------------------------------


class _CallFailed(Exception):
    """AWS answered one call with an error that is not about the credentials."""

    def __init__(self, call: str, error: str) -> None:
        super().__init__(error)
        self.call = call
        self.error = error


@dataclass
class _Aws:
    """boto3, imported, and the time the whole look must end by."""

    boto3: Any
    errors: Any
    config: Any
    deadline: float

    async def call(self, service: _Service, call: str, fn: Callable[[Any], T]) -> T:
        """`fn(client)` in a worker thread, within the time left.

        Raises:
            SpecialistError: the credentials were refused, or the endpoint cannot be
                reached or did not answer in time.
            _CallFailed: AWS answered with another error.
        """
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise SpecialistError(f"no time left to call {service.where}")
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._invoke, service, call, fn), left)
        except TimeoutError:
            raise SpecialistError(
                f"{service.where} did not answer {call} within {left:.0f} s"
            ) from None

    def _invoke(self, service: _Service, call: str, fn: Callable[[Any], T]) -> T:
        errors = self.errors
        try:
            session = self.boto3.session.Session(
                aws_access_key_id=service.access_key,
                aws_secret_access_key=service.secret_key,
                aws_session_token=service.session_token,
                region_name=service.settings.region,
            )
            client = session.client(
                service.name, endpoint_url=service.settings.endpoint_url, config=self.config
            )
            try:
                return fn(client)
            finally:
                client.close()
        except errors.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = str(error.get("Message") or exc)
            if code.isdigit():  # an error body the client could not parse: read its XML
                code = _xml_field(message, "Code") or code
                message = _xml_field(message, "Message") or message
            message = shorten(service.scrub(message))
            if status == 401 or any(c in code for c in _REFUSED):
                raise SpecialistError(
                    f"{service.where} refused {service.signed_with} for {call}: "
                    f"{code or status}: {message}"
                ) from None
            if status == 403 or code.startswith(_FORBIDDEN):
                raise _CallFailed(
                    call, f"{code or status}: {message} (the key lacks this permission)"
                ) from None
            raise _CallFailed(call, f"{code or status}: {message}") from None
        except (errors.NoCredentialsError, errors.PartialCredentialsError):
            raise SpecialistError(
                f"no AWS credentials for {service.where}: grant '{service.name}-access-key' "
                f"and '{service.name}-secret-key' (or 'access-key' and 'secret-key')"
            ) from None
        except (errors.ConnectionError, errors.HTTPClientError) as exc:
            raise SpecialistError(
                f"cannot reach {service.where}: {shorten(service.scrub(str(exc)))}"
            ) from None
        except errors.BotoCoreError as exc:
            raise _CallFailed(call, shorten(service.scrub(str(exc)))) from None


async def _aws(ctx: SpecialistContext) -> _Aws:
    def load() -> tuple[Any, Any, Any]:
        try:
            import boto3  # type: ignore[import-untyped]
            import botocore.config  # type: ignore[import-untyped]
            import botocore.exceptions  # type: ignore[import-untyped]
        except ImportError:
            raise SpecialistError(
                "the cloud specialist needs boto3: pip install 'episteme[aws]'"
            ) from None
        return boto3, botocore.exceptions, botocore.config.Config

    start = time.monotonic()
    boto3, errors, config_class = await asyncio.to_thread(load)
    config = config_class(
        connect_timeout=max(1.0, min(5.0, ctx.timeout_s / 4)),
        read_timeout=max(2.0, min(30.0, ctx.timeout_s / 2)),
        retries={"mode": "standard", "total_max_attempts": 2},
    )
    # end a little before the engine's own limit, so that the error says which call hung
    return _Aws(boto3, errors, config, start + ctx.timeout_s * 0.9)


# -- the look ---------------------------------------------------------------------------


async def run(ctx: SpecialistContext) -> list[Finding]:
    """Look at the instances of one AWS region and the CloudWatch metrics configured.

    Raises:
        SpecialistError: boto3 is not installed, a setting is malformed, credentials are
            missing or refused, or an endpoint cannot be reached in time.
    """
    settings = _settings(ctx.settings)
    ec2 = _service(ctx, "ec2", "EC2", settings)
    cloudwatch = _service(ctx, "cloudwatch", "CloudWatch", settings)
    aws = await _aws(ctx)
    results = await asyncio.gather(
        _instances(aws, ec2, cloudwatch, settings),
        _metrics(aws, cloudwatch, settings),
        return_exceptions=True,
    )
    findings: list[Finding] = []
    failures: list[SpecialistError] = []
    for result in results:
        if isinstance(result, SpecialistError):
            failures.append(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            findings += result
    if failures:
        raise SpecialistError("; ".join(dict.fromkeys(f.message for f in failures)))
    return findings


async def _instances(
    aws: _Aws, ec2: _Service, cloudwatch: _Service, settings: _Settings
) -> list[Finding]:
    params: dict[str, Any] = {"IncludeAllInstances": True}
    if settings.instance_ids:
        params["InstanceIds"] = list(settings.instance_ids)
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    call = f"DescribeInstanceStatus({shown})"

    def describe(client: Any) -> list[dict[str, Any]]:
        paginator = client.get_paginator("describe_instance_status")
        ids = list(settings.instance_ids)
        batches = [{**params, "InstanceIds": b} for b in _chunks(ids, DESCRIBE_IDS)] or [params]
        return [
            s
            for batch in batches
            for page in paginator.paginate(**batch)
            for s in page["InstanceStatuses"]
        ]

    try:
        statuses = await aws.call(ec2, call, describe)
    except _CallFailed as exc:
        return [_check_failed(ec2, exc)]
    findings = _status_findings(ec2, f"{call} in {settings.where}", statuses, settings)
    running = [s["InstanceId"] for s in statuses if _state(s) == "running"]
    if running:
        findings += await _cpu(aws, cloudwatch, settings, running[:CPU_INSTANCES])
    return findings


def _state(status: Mapping[str, Any]) -> str:
    return str(status.get("InstanceState", {}).get("Name", "unknown"))


def _status_findings(
    ec2: _Service, call: str, statuses: list[dict[str, Any]], settings: _Settings
) -> list[Finding]:
    findings: list[Finding] = []
    idle: list[JsonValue] = []
    for status in statuses:
        instance, state = str(status["InstanceId"]), _state(status)
        zone = str(status.get("AvailabilityZone", ""))
        impaired = _impaired(ec2, call, status)
        if impaired:
            findings.append(impaired)
        if state in _NOT_RUNNING:
            if instance in settings.instance_ids:
                claim = f"Instance {instance} ({zone}) should run but is {state}."
                evidence: dict[str, JsonValue] = {
                    "instance": instance,
                    "availability_zone": zone,
                    "state": state,
                }
                findings.append(
                    _finding(ec2, "cloud.instance_stopped", "warning", claim, evidence, call)
                )
            else:
                idle.append({"instance": instance, "state": state})
        findings += _events(ec2, call, status)
    if idle:
        claim = (
            f"{len(idle)} instance(s) in {settings.where} are not running "
            "(none of them named in instance_ids)."
        )
        evidence = {"instances": idle}
        findings.append(_finding(ec2, "cloud.instance_stopped", "info", claim, evidence, call))
    return findings


def _impaired(ec2: _Service, call: str, status: Mapping[str, Any]) -> Finding | None:
    parts = {"system": status.get("SystemStatus", {}), "instance": status.get("InstanceStatus", {})}
    which = [kind for kind, part in parts.items() if part.get("Status") == "impaired"]
    if not which:
        return None
    instance, zone = str(status["InstanceId"]), str(status.get("AvailabilityZone", ""))
    failed: list[JsonValue] = [
        {
            "check": f"{kind} {detail.get('Name', '')}".strip(),
            "since": _time(detail.get("ImpairedSince")),
        }
        for kind, part in parts.items()
        for detail in part.get("Details", [])
        if detail.get("Status") == "failed"
    ]
    claim = (
        f"Instance {instance} ({zone}) is impaired: its {' and '.join(which)} status check fails"
    )
    if "system" in which:
        claim += " (a problem of the AWS host or network: stop and start it to move it)"
    evidence: dict[str, JsonValue] = {
        "instance": instance,
        "availability_zone": zone,
        "state": _state(status),
        "system_status": str(parts["system"].get("Status", "")),
        "instance_status": str(parts["instance"].get("Status", "")),
        "failed_checks": failed,
    }
    return _finding(ec2, "cloud.instance_impaired", "critical", claim + ".", evidence, call)


def _events(ec2: _Service, call: str, status: Mapping[str, Any]) -> list[Finding]:
    findings = []
    instance = str(status["InstanceId"])
    for event in status.get("Events", []):
        description = str(event.get("Description", ""))
        if description.startswith(("[Completed]", "[Canceled]")):
            continue
        code = str(event.get("Code", ""))
        not_before = _time(event.get("NotBefore"))
        when = f" from {not_before}" if not_before else ""
        claim = f"Instance {instance} has a scheduled {code}{when}: {description}"
        evidence: dict[str, JsonValue] = {
            "instance": instance,
            "event": code,
            "event_id": str(event.get("InstanceEventId", "")),
            "description": description,
            "not_before": not_before,
            "not_after": _time(event.get("NotAfter")),
        }
        findings.append(_finding(ec2, "cloud.scheduled_event", "warning", claim, evidence, call))
    return findings


async def _cpu(
    aws: _Aws, cloudwatch: _Service, settings: _Settings, instances: list[str]
) -> list[Finding]:
    window, period = settings.window_minutes, settings.period_s
    stats = {
        f"cpu{i}": _stat("AWS/EC2", "CPUUtilization", {"InstanceId": instance}, period, "Average")
        for i, instance in enumerate(instances)
    }
    described = f"AWS/EC2 CPUUtilization Average, period {period} s, last {window:g} min"
    call = f"GetMetricData({described}, {len(instances)} instance(s))"
    try:
        values = await _metric_data(aws, cloudwatch, call, stats, window)
    except _CallFailed as exc:
        return [_check_failed(cloudwatch, exc)]
    findings = []
    threshold = settings.cpu_threshold
    for key, instance in zip(stats, instances, strict=True):
        points = values.get(key, [])
        if not points or max(points) <= threshold:
            continue
        peak, mean = max(points), statistics.fmean(points)
        severity: Severity = "critical" if mean > threshold else "warning"
        claim = (
            f"Instance {instance} runs hot: CPU up to {peak:.1f} % (average {mean:.1f} %) "
            f"over the last {window:g} min, above {threshold:g} %."
        )
        evidence: dict[str, JsonValue] = {
            "instance": instance,
            "max": _number(peak),
            "avg": _number(mean),
            "latest": _number(points[0]),
            "datapoints": len(points),
            "threshold": threshold,
            "window_minutes": window,
        }
        query = f"GetMetricData({described}, InstanceId={instance}) in {settings.where}"
        findings.append(_finding(cloudwatch, "cloud.cpu_high", severity, claim, evidence, query))
    return findings


async def _metrics(aws: _Aws, cloudwatch: _Service, settings: _Settings) -> list[Finding]:
    by_window: dict[float, list[_Metric]] = defaultdict(list)
    for metric in settings.metrics:
        by_window[metric.window_minutes].append(metric)
    findings: list[Finding] = []
    for window, metrics in by_window.items():
        findings += await _metric_window(aws, cloudwatch, settings, window, metrics)
    return findings


async def _metric_window(
    aws: _Aws, cloudwatch: _Service, settings: _Settings, window: float, metrics: list[_Metric]
) -> list[Finding]:
    checks = {f"m{i}": m for i, m in enumerate(metrics)}
    stats = {
        key: _stat(m.namespace, m.metric, m.dimensions, m.period_s, m.stat)
        for key, m in checks.items()
    }
    shown = "; ".join(m.describe() for m in metrics)
    call = f"GetMetricData({shown}, last {window:g} min)"
    try:
        values = await _metric_data(aws, cloudwatch, call, stats, window)
    except _CallFailed as exc:
        return [_check_failed(cloudwatch, exc)]
    findings = []
    for key, m in checks.items():
        points = values.get(key, [])
        if not points:
            continue
        above = m.comparison == "above"
        worst = max(points) if above else min(points)
        if not (worst > m.threshold if above else worst < m.threshold):
            continue
        mean = statistics.fmean(points)
        claim = (
            f"{m.name}: {m.stat} {m.comparison} {m.threshold:g} in the last {window:g} min, "
            f"worst {_number(worst)} (average {_number(mean)})."
        )
        evidence: dict[str, JsonValue] = {
            "name": m.name,
            "namespace": m.namespace,
            "metric": m.metric,
            "dimensions": dict(m.dimensions),
            "stat": m.stat,
            "comparison": m.comparison,
            "threshold": m.threshold,
            "worst": _number(worst),
            "avg": _number(mean),
            "datapoints": len(points),
            "window_minutes": window,
        }
        query = (
            f"GetMetricData({m.describe()}, period {m.period_s} s, last {window:g} min) "
            f"in {settings.where}"
        )
        findings.append(
            _finding(cloudwatch, "cloud.metric_threshold", m.severity, claim, evidence, query)
        )
    return findings


def _stat(
    namespace: str, metric: str, dimensions: Mapping[str, str], period: int, stat: str
) -> dict[str, Any]:
    """A MetricStat of GetMetricData."""
    return {
        "Metric": {
            "Namespace": namespace,
            "MetricName": metric,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
        },
        "Period": period,
        "Stat": stat,
    }


async def _metric_data(
    aws: _Aws, service: _Service, call: str, stats: Mapping[str, dict[str, Any]], window: float
) -> dict[str, list[float]]:
    """The values of each MetricStat over the last `window` minutes, newest first."""
    end = datetime.now(UTC)
    start = end - timedelta(minutes=window)
    queries = [{"Id": key, "MetricStat": stat, "ReturnData": True} for key, stat in stats.items()]

    def fetch(client: Any) -> dict[str, list[float]]:
        values: dict[str, list[float]] = defaultdict(list)
        paginator = client.get_paginator("get_metric_data")
        for chunk in _chunks(queries, MAX_QUERIES):
            pages = paginator.paginate(
                MetricDataQueries=chunk, StartTime=start, EndTime=end, ScanBy="TimestampDescending"
            )
            for page in pages:
                for result in page["MetricDataResults"]:
                    values[result["Id"]] += [float(v) for v in result.get("Values", [])]
        return dict(values)

    return await aws.call(service, call, fetch)


# -- helpers ----------------------------------------------------------------------------


def _finding(
    service: _Service,
    code: str,
    severity: Severity,
    claim: str,
    evidence: dict[str, JsonValue],
    query: str,
) -> Finding:
    return Finding(
        specialist=NAME,
        code=code,
        severity=severity,
        claim=claim,
        evidence=evidence,
        tool=service.tool,
        query=query,
        credential_ref=service.ref,
    )


def _check_failed(service: _Service, failure: _CallFailed) -> Finding:
    return _finding(
        service,
        "cloud.check_failed",
        "info",
        f"{service.where} answered an error: {failure.error}",
        {"call": failure.call, "error": failure.error},
        f"{failure.call} in {service.settings.where}",
    )


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _xml_field(text: str, tag: str) -> str | None:
    found = re.search(rf"<{tag}>([^<]*)</{tag}>", text)
    return found.group(1) if found else None


def _time(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return None if value is None else str(value)


def _number(value: float) -> JsonValue:
    return int(value) if value.is_integer() else round(value, 4)


def _positive(raw: Mapping[str, Any], key: str, default: float, where: str = "settings") -> float:
    value = raw.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise SpecialistError(f"{where}.{key} must be a number > 0, not {value!r}")
    return number


def _period(value: Any, where: str) -> int:
    """A CloudWatch period: 1, 5, 10, 30 or a multiple of 60 seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise SpecialistError(f"{where} must be a whole number of seconds, not {value!r}")
    period = int(value)
    if period <= 0 or (period not in (1, 5, 10, 30) and period % 60):
        raise SpecialistError(f"{where} must be 1, 5, 10, 30 or a multiple of 60, not {period}")
    return period


def _display(url: str) -> str:
    """A URL without the user and password it may carry."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
