"""The observability specialist: metrics from Prometheus, log lines from Loki and files.

Each source runs when its settings name it, all of them at once:

- **Prometheus** (httpx, the HTTP API's instant queries at ``prometheus_url``): the
  targets whose ``up`` is 0, and the PromQL checks listed in ``promql``.
- **Loki** (httpx, ``/loki/api/v1/query_range`` at ``loki_url``): the lines that the
  LogQL query ``logql`` selects over the last ``loki_window_s``, counted and grouped.
- **Log files** (``log_files``): the last ``log_tail_lines`` lines of each, matched
  against the error patterns, counted and grouped.

Settings::

    prometheus_url               e.g. http://prometheus:9090
    promql                       [{"name", "query", "above" | "below", "severity"}]
    loki_url, logql              e.g. {app="api"} |~ "(?i)error"
    loki_window_s (900), loki_limit (1000), loki_tenant (X-Scope-OrgID)
    log_files                    [paths]
    log_patterns                 a regex or a list of them (ERROR|FATAL|panic|Traceback)
    log_tail_lines (10000)

Credential roles (optional): ``prometheus-token`` and ``loki-token``, sent as bearer
tokens.

Findings:

    metrics.target_down          targets of one job with up == 0 (critical when the whole
                                 job is down)
    metrics.threshold            a PromQL check crossed its line
    metrics.no_data              a PromQL check returned no series (info)
    metrics.unavailable          Prometheus answered an error
    logs.errors                  error lines in Loki or a file, with the most repeated ones
    logs.no_errors               sources that were read and held no error line (info)
    logs.unavailable             Loki answered an error, or a file could not be read

Settings that name no source, or sources none of which can be reached, raise
`SpecialistError`; a Prometheus or Loki that cannot be reached beside a source that
could be read is a `metrics.unavailable` or `logs.unavailable` finding, and what the
others found stands.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from pydantic import JsonValue

from episteme.diagnose.findings import Finding, Severity, SpecialistContext, SpecialistError
from episteme.text import shorten

NAME = "observability"
DEFAULT_PATTERNS = ("ERROR", "FATAL", "panic", "Traceback")
TOP_MESSAGES = 5
MESSAGE_CHARS = 200
_SEVERITIES = ("info", "warning", "critical")
# what varies between repeats of one message: ids, addresses, counts, times
_VARIABLE = re.compile(
    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b|0x[0-9a-f]+|\d+",
    re.IGNORECASE,
)


async def run(ctx: SpecialistContext) -> list[Finding]:
    """Look at the metrics and logs the settings name.

    Raises:
        SpecialistError: no source is configured, a setting is malformed, or Prometheus
            or Loki cannot be reached.
    """
    settings = ctx.settings
    if not any(settings.get(k) for k in ("prometheus_url", "loki_url", "log_files")):
        raise SpecialistError(
            "the observability specialist has nothing to look at: set prometheus_url, "
            f"loki_url or log_files for {ctx.environment}"
        )
    timeout = httpx.Timeout(max(1.0, min(10.0, ctx.timeout_s / 3)))
    async with httpx.AsyncClient(timeout=timeout) as client:
        jobs, tools = [], []  # each source's reading, and the tool that reads it
        if settings.get("prometheus_url"):
            jobs.append(_prometheus(ctx, client))
            tools.append(("metrics", "prometheus"))
        if settings.get("loki_url"):
            jobs.append(_loki(ctx, client))
            tools.append(("logs", "loki"))
        if settings.get("log_files"):
            jobs.append(asyncio.to_thread(_log_files, settings, ctx.redact))
            tools.append(("logs", "logfile"))
        results = await asyncio.gather(*jobs, return_exceptions=True)
    findings: list[Finding] = []
    failures: list[tuple[tuple[str, str], SpecialistError]] = []
    for source, result in zip(tools, results, strict=True):
        if isinstance(result, SpecialistError):
            failures.append((source, result))
        elif isinstance(result, BaseException):
            raise result
        else:
            findings += result
    if len(failures) == len(results):  # none could be read (one that could may find nothing)
        raise SpecialistError("; ".join(f.message for _, f in failures))
    # what the other sources found stands; a source that could not be read is said
    for (kind, tool), failure in failures:
        claim = f"Could not read {tool}: {failure.message}"
        evidence: dict[str, JsonValue] = {"error": failure.message}
        findings.append(_finding(f"{kind}.unavailable", "warning", claim, evidence, tool, "", None))
    return findings


# -- Prometheus -------------------------------------------------------------------------


class _Api(NamedTuple):
    """An HTTP API the specialist asks, and the reference of the token it sends."""

    url: str
    ref: str | None

    @property
    def shown(self) -> str:
        return _display(self.url)


async def _prometheus(ctx: SpecialistContext, client: httpx.AsyncClient) -> list[Finding]:
    api = _Api(str(ctx.settings["prometheus_url"]).rstrip("/"), _ref(ctx, "prometheus-token"))
    headers = _bearer(ctx, api.ref)
    checks = [_check(c, i) for i, c in enumerate(_list(ctx.settings, "promql"))]

    async def query(promql: str) -> tuple[list[dict[str, Any]] | None, str | None]:
        return await _prom_query(client, api, headers, promql)

    answers = await asyncio.gather(query("up"), *(query(c["query"]) for c in checks))
    findings = _targets_down(api, *answers[0])
    for check, (result, error) in zip(checks, answers[1:], strict=True):
        if error is not None:
            findings.append(_unavailable(api, check["query"], error, check["name"]))
        elif not result:
            findings.append(_no_data(api, check))
        else:
            findings += _threshold(api, check, result)
    return findings


async def _prom_query(
    client: httpx.AsyncClient, api: _Api, headers: dict[str, str], promql: str
) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The series of an instant query, or the error Prometheus answered."""
    try:
        r = await client.get(f"{api.url}/api/v1/query", params={"query": promql}, headers=headers)
    except httpx.TransportError as exc:
        raise SpecialistError(
            f"cannot reach Prometheus at {api.shown}: {str(exc) or type(exc).__name__}"
        ) from None
    try:
        body = r.json()
    except ValueError:
        return None, f"HTTP {r.status_code}, not a Prometheus answer: {shorten(r.text)}"
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        kind = body.get("errorType") if isinstance(body, dict) else None
        return None, f"HTTP {r.status_code} {kind or 'error'}: {shorten(str(error or r.text))}"
    data = body.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "scalar" and isinstance(result, list):
        return [{"metric": {}, "value": result}], None
    if data.get("resultType") != "vector" or not isinstance(result, list):
        return None, f"expected an instant vector, got {data.get('resultType')!r}"
    return result, None


def _targets_down(
    api: _Api, result: list[dict[str, Any]] | None, error: str | None
) -> list[Finding]:
    if error is not None:
        return [_unavailable(api, "up", error, "targets")]
    jobs: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for series in result or []:
        labels = series.get("metric", {})
        jobs[labels.get("job", "")].append((labels.get("instance", ""), _value(series)))
    findings = []
    for job, targets in sorted(jobs.items()):
        down = sorted(instance for instance, value in targets if value == 0)
        if not down:
            continue
        severity: Severity = "critical" if len(down) == len(targets) else "warning"
        claim = (
            f"{len(down)} of {len(targets)} target(s) of job {job or '(none)'} are down "
            f"(up == 0): {', '.join(down[:5])}{' …' if len(down) > 5 else ''}."
        )
        evidence: dict[str, JsonValue] = {
            "prometheus": api.shown,
            "job": job,
            "down": list(down),
            "targets": len(targets),
        }
        findings.append(
            _finding(
                "metrics.target_down", severity, claim, evidence, "prometheus", "up == 0", api.ref
            )
        )
    return findings


def _check(raw: Any, index: int) -> dict[str, Any]:
    """A PromQL check from the settings, validated."""
    where = f"settings.promql[{index}]"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("query"), str):
        raise SpecialistError(f"{where} needs a query (a PromQL string)")
    bounds = [k for k in ("above", "below") if raw.get(k) is not None]
    if len(bounds) != 1:
        raise SpecialistError(f"{where} needs exactly one of above and below")
    try:
        line = float(raw[bounds[0]])
    except (TypeError, ValueError):
        raise SpecialistError(f"{where}.{bounds[0]} is not a number") from None
    severity = raw.get("severity", "warning")
    if severity not in _SEVERITIES:
        raise SpecialistError(f"{where}.severity must be one of {', '.join(_SEVERITIES)}")
    return {
        "name": str(raw.get("name") or raw["query"]),
        "query": raw["query"],
        "bound": bounds[0],
        "line": line,
        "severity": severity,
    }


def _threshold(api: _Api, check: dict[str, Any], result: list[dict[str, Any]]) -> list[Finding]:
    line, bound = check["line"], check["bound"]
    crossed = [
        (_labels(s.get("metric", {})), v)
        for s in result
        if not math.isnan(v := _value(s)) and (v > line if bound == "above" else v < line)
    ]
    if not crossed:
        return []
    labels, value = (max if bound == "above" else min)(crossed, key=lambda c: c[1])
    claim = (
        f"{check['name']}: {len(crossed)} of {len(result)} series {bound} {line:g}, "
        f"worst {_number(value)}{' at ' + labels if labels else ''}."
    )
    evidence: dict[str, JsonValue] = {
        "prometheus": api.shown,
        "check": check["name"],
        bound: line,
        "series": [{"labels": k, "value": _number(v)} for k, v in crossed[:20]],
    }
    severity = check["severity"]
    query = check["query"]
    return [_finding("metrics.threshold", severity, claim, evidence, "prometheus", query, api.ref)]


def _no_data(api: _Api, check: dict[str, Any]) -> Finding:
    return _finding(
        "metrics.no_data",
        "info",
        f"{check['name']}: the query returned no series (a missing metric or a wrong label?).",
        {"prometheus": api.shown, "check": check["name"]},
        "prometheus",
        check["query"],
        api.ref,
    )


def _unavailable(api: _Api, promql: str, error: str, what: str) -> Finding:
    return _finding(
        "metrics.unavailable",
        "warning",
        f"Prometheus at {api.shown} answered an error for {what}: {error}",
        {"prometheus": api.shown, "check": what, "error": error},
        "prometheus",
        promql,
        api.ref,
    )


def _value(series: Mapping[str, Any]) -> float:
    try:
        return float(series["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return math.nan


def _number(value: float) -> JsonValue:
    """A sample as JSON: infinities as text, whole numbers as integers."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return int(value) if value.is_integer() else round(value, 6)


def _labels(labels: Mapping[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return "{" + inner + "}" if inner else ""


# -- Loki -------------------------------------------------------------------------------


async def _loki(ctx: SpecialistContext, client: httpx.AsyncClient) -> list[Finding]:
    settings = ctx.settings
    api = _Api(str(settings["loki_url"]).rstrip("/"), _ref(ctx, "loki-token"))
    logql = settings.get("logql")
    if not isinstance(logql, str) or not logql.strip():
        raise SpecialistError("loki_url is set but logql (the LogQL query to run) is not")
    window_s = _positive(settings, "loki_window_s", 900)
    limit = int(_positive(settings, "loki_limit", 1000))
    headers = _bearer(ctx, api.ref)
    if settings.get("loki_tenant"):
        headers["X-Scope-OrgID"] = str(settings["loki_tenant"])
    end_ns = time.time_ns()
    params = {
        "query": logql,
        "start": str(end_ns - int(window_s * 1e9)),
        "end": str(end_ns),
        "limit": str(limit),
        "direction": "backward",
    }
    url = f"{api.url}/loki/api/v1/query_range"
    try:
        r = await client.get(url, params=params, headers=headers)
    except httpx.TransportError as exc:
        raise SpecialistError(
            f"cannot reach Loki at {api.shown}: {str(exc) or type(exc).__name__}"
        ) from None
    where: dict[str, JsonValue] = {"loki": api.shown, "window_s": window_s}
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
        error = f"HTTP {r.status_code}: {shorten(r.text)}"
        return [_log_unavailable(f"Loki at {api.shown}", error, logql, "loki", where, api.ref)]
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result") or []
    if kind == "streams":
        lines = [
            (_labels(s.get("stream", {})), str(v[1]))
            for s in result
            for v in s.get("values", [])
            if isinstance(v, list) and len(v) == 2
        ]
        by_stream = Counter(labels for labels, _ in lines)
        count = len(lines)
        found = _tally(count, by_stream, (ctx.redact(line) for _, line in lines), None)
        found["limit_reached"] = count >= limit
    elif kind in ("matrix", "vector"):
        # a metric query (count_over_time …): the newest sample of each series is its count
        counts = Counter[str]()
        for s in result:
            samples = s.get("values") or [s.get("value")]
            newest = _value({"value": samples[-1]})
            counts[_labels(s.get("metric", {}))] += 0 if math.isnan(newest) else int(newest)
        count = sum(counts.values())
        found = _tally(count, counts, (), None)
    else:
        error = f"unexpected resultType {kind!r}"
        return [_log_unavailable(f"Loki at {api.shown}", error, logql, "loki", where, api.ref)]
    return [_log_finding(f"Loki at {api.shown}", count, found | where, logql, "loki", api.ref)]


# -- log files --------------------------------------------------------------------------


def _log_files(settings: Mapping[str, Any], redact: Callable[[str], str]) -> list[Finding]:
    patterns = settings.get("log_patterns") or list(DEFAULT_PATTERNS)
    if isinstance(patterns, str):
        patterns = [patterns]
    source = "|".join(patterns)
    try:
        pattern = re.compile(source)
    except re.error as exc:
        raise SpecialistError(f"settings.log_patterns is not a regular expression: {exc}") from None
    tail = int(_positive(settings, "log_tail_lines", 10000))
    findings: list[Finding] = []
    quiet: list[JsonValue] = []
    for raw in _list(settings, "log_files"):
        path = Path(str(raw))
        try:
            lines = _tail(path, tail)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            findings.append(
                _log_unavailable(str(path), reason, source, "logfile", {"path": str(path)}, None)
            )
            continue
        matched = [line for line in lines if pattern.search(line)]
        if not matched:
            quiet.append(str(path))
            continue
        found = _tally(len(matched), Counter(), map(redact, matched), pattern)
        found |= {"path": str(path), "lines_read": len(lines)}
        findings.append(_log_finding(str(path), len(matched), found, source, "logfile", None))
    if quiet:
        claim = f"No line matching {source} in the last {tail} lines of {len(quiet)} file(s)."
        evidence: dict[str, JsonValue] = {"paths": quiet, "lines": tail}
        findings.append(
            _finding("logs.no_errors", "info", claim, evidence, "logfile", source, None)
        )
    return findings


def _tail(path: Path, count: int, block: int = 64 * 1024) -> list[str]:
    """The last `count` lines of a file, read from its end."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= count:
            step = min(block, end)
            end -= step
            f.seek(end)
            data = f.read(step) + data
    return data.decode("utf-8", errors="replace").splitlines()[-count:]


# -- log findings -----------------------------------------------------------------------


def _tally(
    count: int, by_source: Counter[str], lines: Iterable[str], pattern: re.Pattern[str] | None
) -> dict[str, JsonValue]:
    """The count of error lines, by source, and the most repeated messages."""
    shapes: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for line in lines:
        match = pattern.search(line) if pattern else None
        text = line[match.start() :] if match else line
        shape = _VARIABLE.sub("#", text.strip())[:MESSAGE_CHARS]
        shapes[shape] += 1
        examples.setdefault(shape, text.strip()[:MESSAGE_CHARS])
    found: dict[str, JsonValue] = {
        "error_lines": count,
        "top_messages": [
            {"message": shape, "count": n, "example": examples[shape]}
            for shape, n in shapes.most_common(TOP_MESSAGES)
        ],
    }
    if by_source:
        found["by_stream"] = dict(by_source.most_common(10))
    return found


def _log_finding(
    source: str, count: int, found: dict[str, JsonValue], query: str, tool: str, ref: str | None
) -> Finding:
    if not count:
        claim = f"No error line in {source}."
        return _finding("logs.no_errors", "info", claim, found, tool, query, ref)
    top = found["top_messages"]
    first = top[0] if isinstance(top, list) and top else None
    claim = f"{count} error line(s) in {source}"
    if isinstance(first, dict):
        claim += f"; the most repeated ({first['count']}×): {first['message']}"
    return _finding("logs.errors", "warning", claim + ".", found, tool, query, ref)


def _log_unavailable(
    source: str, error: str, query: str, tool: str, where: dict[str, JsonValue], ref: str | None
) -> Finding:
    return _finding(
        "logs.unavailable",
        "warning",
        f"Could not read logs from {source}: {error}",
        {**where, "error": error},
        tool,
        query,
        ref,
    )


# -- helpers ----------------------------------------------------------------------------


def _finding(
    code: str,
    severity: Severity,
    claim: str,
    evidence: dict[str, JsonValue],
    tool: str,
    query: str,
    ref: str | None,
) -> Finding:
    return Finding(
        specialist=NAME,
        code=code,
        severity=severity,
        claim=claim,
        evidence=evidence,
        tool=tool,
        query=query,
        credential_ref=ref,
    )


def _ref(ctx: SpecialistContext, role: str) -> str | None:
    return ctx.credentials.get(role)


def _bearer(ctx: SpecialistContext, ref: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.secret(ref)}"} if ref else {}


def _list(settings: Mapping[str, Any], key: str) -> Sequence[Any]:
    value = settings.get(key) or []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise SpecialistError(f"settings.{key} must be a list")
    return value


def _positive(settings: Mapping[str, Any], key: str, default: float) -> float:
    value = settings.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise SpecialistError(f"settings.{key} must be a number > 0, not {value!r}")
    return number


def _display(url: str) -> str:
    """A URL without the user and password it may carry."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else url
