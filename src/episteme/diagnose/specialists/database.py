"""The database specialist: a PostgreSQL server seen through pg_catalog with psycopg 3.

It signs in with what the session's approval granted (credential roles ``host``,
``username``, ``password``; the host and user may come from the settings instead), sets
a statement timeout inside the session's budget, and runs read-only queries on the
statistics and settings views. Each finding names the SQL it ran and the reference of
the password it used.

Settings (all optional but a host, which a ``host`` credential may give instead)::

    host, port (5432), dbname ("postgres"), user, sslmode     where to connect
    idle_in_transaction_s (60)   idle-in-transaction sessions older than this are listed
    long_query_s (300)           active statements running longer than this are listed
    lock_wait_s (30)             a lock wait this long makes a lock chain critical
    slow_statement_ms (1000)     a pg_stat_statements mean time that is a warning

Findings:

    db.connection_exhaustion     client sessions ≥ 75 % (warning) or ≥ 90 % (critical) of
                                 the usable slots, or the server refusing new sessions
    db.connections               the same numbers below 75 % (info)
    db.idle_in_transaction       sessions idle in transaction, with the statements that
                                 terminate them
    db.long_running              active statements past long_query_s, with cancel statements
    db.lock_chain                blocker → blocked sessions from pg_blocking_pids()
    db.slow_statements           the top statements of pg_stat_statements by mean time
    db.pg_stat_statements_missing  the extension is not installed or not loaded (info)
    db.no_idle_timeout           idle_in_transaction_session_timeout is 0
    db.check_failed              one query failed; the others still ran (info)

A login the server refuses, or a server that cannot be reached, raises `SpecialistError`;
its message names the host, port and user, never the password.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue

from episteme.diagnose.findings import Finding, Severity, SpecialistContext, SpecialistError
from episteme.text import shorten

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow

    Conn = AsyncConnection[DictRow]

NAME = "database"
TOOL = "psycopg"
APPLICATION_NAME = "episteme-diagnose"
QUERY_CHARS = 200


def _cut(column: str) -> str:
    """`column` (a statement's text) as SQL that cuts it to `QUERY_CHARS`, ending a cut
    with an ellipsis: the scrubber knows a secret cut short by the ellipsis after it (a
    password in an `ALTER ROLE` cut at 200 characters was kept as it stood)."""
    return (
        f"CASE WHEN length({column}) > {QUERY_CHARS} "
        f"THEN left({column}, {QUERY_CHARS - 3}) || '...' ELSE {column} END"
    )


"""Characters of a session's query text kept in evidence."""
WARNING_SHARE = 0.75
CRITICAL_SHARE = 0.90
RECOMMENDED_IDLE_TIMEOUT = "60s"
_REFUSED_SLOTS = ("too many clients already", "remaining connection slots are reserved")


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    dbname: str
    user: str
    password: str | None = field(repr=False)
    password_ref: str | None
    sslmode: str | None

    def describe(self) -> str:
        return f"PostgreSQL at {self.host}:{self.port} (database {self.dbname}, user {self.user})"


@dataclass(frozen=True)
class _Limits:
    idle_in_transaction_s: float
    long_query_s: float
    lock_wait_s: float
    slow_statement_ms: float


async def run(ctx: SpecialistContext) -> list[Finding]:
    """Look at one PostgreSQL database and report what is wrong with its sessions.

    Raises:
        SpecialistError: the settings lack a host or user, the login was refused, or
            the server did not answer.
    """
    import psycopg

    target = _target(ctx)
    limits = _limits(ctx.settings)
    connect_timeout = max(2, min(10, math.ceil(ctx.timeout_s / 3)))
    try:
        conn = await asyncio.wait_for(_connect(target, connect_timeout), connect_timeout + 1)
    except TimeoutError:
        raise SpecialistError(
            f"cannot connect to {target.describe()}: no answer within {connect_timeout} s"
        ) from None
    except psycopg.OperationalError as exc:
        reason = _reason(exc, target.password)
        if any(marker in reason for marker in _REFUSED_SLOTS):
            return [_refused_for_slots(target, reason)]
        raise SpecialistError(f"cannot connect to {target.describe()}: {reason}") from None
    statement_ms = max(1000, int(ctx.timeout_s * 1000 / 4))
    findings: list[Finding] = []
    async with conn:
        await conn.execute(
            "SELECT pg_catalog.set_config('statement_timeout', %s, false),"
            " pg_catalog.set_config('lock_timeout', %s, false),"
            " pg_catalog.set_config('default_transaction_read_only', 'on', false)",
            (str(statement_ms), str(statement_ms)),
        )
        checks: list[tuple[str, Callable[[Conn, _Target, _Limits], Awaitable[list[Finding]]]]]
        checks = [
            ("connections", _connections),
            ("idle in transaction", _idle_in_transaction),
            ("long-running statements", _long_running),
            ("lock chains", _lock_chains),
            ("slow statements", _slow_statements),
        ]
        for what, check in checks:
            try:
                findings += await check(conn, target, limits)
            except psycopg.Error as exc:
                if conn.closed:
                    raise SpecialistError(
                        f"lost the connection to {target.describe()} while reading {what}: "
                        f"{_reason(exc, target.password)}"
                    ) from None
                findings.append(
                    _finding(
                        target,
                        "db.check_failed",
                        "info",
                        f"Could not read {what}: {_reason(exc, target.password)}",
                        {"check": what},
                        None,
                    )
                )
    return findings


# -- connecting -------------------------------------------------------------------------


def _target(ctx: SpecialistContext) -> _Target:
    settings, granted = ctx.settings, ctx.credentials
    host = ctx.secret(granted["host"]) if "host" in granted else settings.get("host")
    user = ctx.secret(granted["username"]) if "username" in granted else settings.get("user")
    if not host:
        raise SpecialistError(
            "the database specialist has no host: grant a 'host' credential or set settings.host"
        )
    if not user:
        raise SpecialistError(
            f"the database specialist has no user for {host}: grant a 'username' credential "
            "or set settings.user"
        )
    ref = granted.get("password")
    try:
        port = int(settings.get("port", 5432))
    except (TypeError, ValueError):
        raise SpecialistError(f"settings.port is not a port number: {settings['port']!r}") from None
    return _Target(
        host=str(host),
        port=port,
        dbname=str(settings.get("dbname", "postgres")),
        user=str(user),
        password=ctx.secret(ref) if ref else None,
        password_ref=ref,
        sslmode=settings.get("sslmode"),
    )


def _limits(settings: Mapping[str, Any]) -> _Limits:
    def number(key: str, default: float) -> float:
        value = settings.get(key, default)
        try:
            parsed = float(value)
        except (TypeError, ValueError):
            parsed = math.nan
        if not math.isfinite(parsed) or parsed < 0:
            raise SpecialistError(f"settings.{key} must be a number ≥ 0, not {value!r}")
        return parsed

    return _Limits(
        idle_in_transaction_s=number("idle_in_transaction_s", 60),
        long_query_s=number("long_query_s", 300),
        lock_wait_s=number("lock_wait_s", 30),
        slow_statement_ms=number("slow_statement_ms", 1000),
    )


async def _connect(target: _Target, timeout: int) -> Conn:
    from psycopg import AsyncConnection
    from psycopg.rows import dict_row

    params: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        "dbname": target.dbname,
        "user": target.user,
        "connect_timeout": timeout,
        "application_name": APPLICATION_NAME,
    }
    if target.password is not None:
        params["password"] = target.password
    if target.sslmode:
        params["sslmode"] = target.sslmode
    return await AsyncConnection.connect(autocommit=True, row_factory=dict_row, **params)


def _reason(exc: Exception, password: str | None) -> str:
    """The server's or libpq's words, on one line, without the password."""
    text = " ".join(str(exc).split()).removeprefix("connection failed: ")
    if password:
        text = text.replace(password, "***")
    return text or type(exc).__name__


def _refused_for_slots(target: _Target, reason: str) -> Finding:
    return _finding(
        target,
        "db.connection_exhaustion",
        "critical",
        f"{target.host}:{target.port} refuses new sessions: every connection slot open to "
        f"{target.user} is taken.",
        {"server_message": reason},
        None,
    )


# -- the checks -------------------------------------------------------------------------

_SETTINGS_SQL = """\
SELECT name, setting
FROM pg_catalog.pg_settings
WHERE name IN ('max_connections', 'superuser_reserved_connections', 'reserved_connections',
               'idle_in_transaction_session_timeout')"""

_CONNECTIONS_SQL = """\
SELECT coalesce(state, 'unknown') AS state,
       coalesce(usename, '') AS usename,
       coalesce(nullif(application_name, ''), '(none)') AS application_name,
       coalesce(host(client_addr), 'local') AS client_addr,
       count(*)::int AS sessions
FROM pg_catalog.pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_catalog.pg_backend_pid()
GROUP BY 1, 2, 3, 4"""


async def _connections(conn: Conn, target: _Target, limits: _Limits) -> list[Finding]:
    settings = {r["name"]: r["setting"] for r in await _rows(conn, _SETTINGS_SQL)}
    rows = await _rows(conn, _CONNECTIONS_SQL)
    max_connections = int(settings["max_connections"])
    reserved = int(settings.get("superuser_reserved_connections", 0)) + int(
        settings.get("reserved_connections", 0)
    )
    usable = max(1, max_connections - reserved)
    tally: dict[str, Counter[str]] = {
        k: Counter() for k in ("state", "application_name", "usename", "client_addr")
    }
    for row in rows:
        for key, counter in tally.items():
            counter[row[key]] += row["sessions"]
    used = sum(tally["state"].values())
    share = used / usable
    severity: Severity = (
        "critical" if share >= CRITICAL_SHARE else "warning" if share >= WARNING_SHARE else "info"
    )
    code = "db.connections" if severity == "info" else "db.connection_exhaustion"
    busiest = tally["application_name"].most_common(1)
    claim = (
        f"{used} of {usable} usable connection slots are in use ({share:.0%}; "
        f"max_connections {max_connections}, {reserved} reserved)"
    )
    if busiest and severity != "info":
        claim += f"; {busiest[0][0]} holds {busiest[0][1]}"
    evidence: dict[str, JsonValue] = {
        "used": used,
        "usable": usable,
        "percent": round(share * 100, 1),
        "max_connections": max_connections,
        "reserved_connections": reserved,
        "by_state": dict(tally["state"].most_common()),
        "by_application": dict(tally["application_name"].most_common(10)),
        "by_user": dict(tally["usename"].most_common(10)),
        "by_client": dict(tally["client_addr"].most_common(10)),
    }
    findings = [_finding(target, code, severity, claim + ".", evidence, _CONNECTIONS_SQL)]
    if settings.get("idle_in_transaction_session_timeout") == "0":
        findings.append(_no_idle_timeout(target, limits))
    return findings


def _no_idle_timeout(target: _Target, limits: _Limits) -> Finding:
    statements: list[JsonValue] = [
        f"ALTER SYSTEM SET idle_in_transaction_session_timeout = '{RECOMMENDED_IDLE_TIMEOUT}'",
        "SELECT pg_reload_conf()",
    ]
    return _finding(
        target,
        "db.no_idle_timeout",
        "warning",
        "idle_in_transaction_session_timeout is 0: a session left idle in transaction keeps "
        f"its slot and its locks for ever; set it, e.g. to '{RECOMMENDED_IDLE_TIMEOUT}'.",
        {
            "setting": "idle_in_transaction_session_timeout",
            "value": "0",
            "recommended": RECOMMENDED_IDLE_TIMEOUT,
            "statements": statements,
        },
        _SETTINGS_SQL,
    )


def _idle_sql(threshold_s: float) -> str:
    return f"""\
SELECT pid, usename, application_name, coalesce(host(client_addr), 'local') AS client_addr,
       state,
       round(extract(epoch FROM now() - state_change)::numeric, 1)::float8 AS idle_s,
       round(extract(epoch FROM now() - xact_start)::numeric, 1)::float8 AS transaction_s,
       {_cut("query")} AS last_query
FROM pg_catalog.pg_stat_activity
WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND now() - state_change > make_interval(secs => {threshold_s!r})
  AND pid <> pg_catalog.pg_backend_pid()
ORDER BY state_change
LIMIT 50"""


async def _idle_in_transaction(conn: Conn, target: _Target, limits: _Limits) -> list[Finding]:
    sql = _idle_sql(limits.idle_in_transaction_s)
    rows = await _rows(conn, sql)
    if not rows:
        return []
    oldest = rows[0]
    evidence: dict[str, JsonValue] = {
        "count": len(rows),
        "threshold_s": limits.idle_in_transaction_s,
        "terminate": [f"SELECT pg_terminate_backend({r['pid']})" for r in rows],
        "sessions": [dict(r) for r in rows],
    }
    claim = (
        f"{len(rows)} session(s) idle in transaction for more than "
        f"{limits.idle_in_transaction_s:g} s; the oldest, pid {oldest['pid']} "
        f"({oldest['usename']}, {oldest['application_name'] or 'no application name'}), "
        f"for {oldest['idle_s']:g} s."
    )
    return [_finding(target, "db.idle_in_transaction", "warning", claim, evidence, sql)]


def _long_sql(threshold_s: float) -> str:
    return f"""\
SELECT pid, usename, application_name, coalesce(host(client_addr), 'local') AS client_addr,
       round(extract(epoch FROM now() - query_start)::numeric, 1)::float8 AS running_s,
       wait_event_type, wait_event, {_cut("query")} AS query
FROM pg_catalog.pg_stat_activity
WHERE state = 'active' AND backend_type = 'client backend'
  AND now() - query_start > make_interval(secs => {threshold_s!r})
  AND pid <> pg_catalog.pg_backend_pid()
ORDER BY query_start
LIMIT 50"""


async def _long_running(conn: Conn, target: _Target, limits: _Limits) -> list[Finding]:
    sql = _long_sql(limits.long_query_s)
    rows = await _rows(conn, sql)
    if not rows:
        return []
    oldest = rows[0]
    evidence: dict[str, JsonValue] = {
        "count": len(rows),
        "threshold_s": limits.long_query_s,
        "cancel": [f"SELECT pg_cancel_backend({r['pid']})" for r in rows],
        "sessions": [dict(r) for r in rows],
    }
    claim = (
        f"{len(rows)} statement(s) running for more than {limits.long_query_s:g} s; the "
        f"longest, pid {oldest['pid']} ({oldest['usename']}), for {oldest['running_s']:g} s."
    )
    return [_finding(target, "db.long_running", "warning", claim, evidence, sql)]


_LOCKS_SQL = f"""\
SELECT blocker.pid AS blocker_pid, blocker.usename AS blocker_user,
       blocker.state AS blocker_state, {_cut("blocker.query")} AS blocker_query,
       blocked.pid AS blocked_pid, blocked.usename AS blocked_user,
       {_cut("blocked.query")} AS blocked_query,
       round(extract(epoch FROM now() - blocked.query_start)::numeric, 1)::float8 AS waiting_s
FROM pg_catalog.pg_stat_activity AS blocked
CROSS JOIN LATERAL unnest(pg_catalog.pg_blocking_pids(blocked.pid)) AS held(pid)
JOIN pg_catalog.pg_stat_activity AS blocker ON blocker.pid = held.pid
WHERE blocked.wait_event_type = 'Lock'
ORDER BY waiting_s DESC
LIMIT 100"""


async def _lock_chains(conn: Conn, target: _Target, limits: _Limits) -> list[Finding]:
    rows = await _rows(conn, _LOCKS_SQL)
    if not rows:
        return []
    blocked = {r["blocked_pid"] for r in rows}
    heads = sorted({r["blocker_pid"] for r in rows} - blocked)
    longest = max(r["waiting_s"] or 0.0 for r in rows)
    severity: Severity = "critical" if longest >= limits.lock_wait_s else "warning"
    first = next((r for r in rows if r["blocker_pid"] in heads), rows[0])
    claim = (
        f"{len(blocked)} session(s) wait on locks held by pid "
        f"{', '.join(map(str, heads)) or first['blocker_pid']} "
        f"({first['blocker_state']}: {shorten(first['blocker_query'], 80)}); "
        f"the longest wait is {longest:g} s."
    )
    evidence: dict[str, JsonValue] = {
        "heads": list(heads),
        "terminate": [f"SELECT pg_terminate_backend({pid})" for pid in heads],
        "longest_wait_s": longest,
        "chain": [
            f"{r['blocker_pid']} → {r['blocked_pid']} (waiting {r['waiting_s'] or 0:g} s)"
            for r in rows
        ],
        "edges": [dict(r) for r in rows],
    }
    return [_finding(target, "db.lock_chain", severity, claim, evidence, _LOCKS_SQL)]


_EXTENSION_SQL = """\
SELECT n.nspname AS schema, e.extversion
FROM pg_catalog.pg_extension AS e
JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'"""


async def _slow_statements(conn: Conn, target: _Target, limits: _Limits) -> list[Finding]:
    import psycopg
    from psycopg import sql as pgsql

    found = await _rows(conn, _EXTENSION_SQL)
    if not found:
        return [
            _finding(
                target,
                "db.pg_stat_statements_missing",
                "info",
                f"pg_stat_statements is not installed in {target.dbname}: slow statements "
                "were not examined (CREATE EXTENSION pg_stat_statements, with the library "
                "in shared_preload_libraries, makes them visible).",
                {"dbname": target.dbname},
                _EXTENSION_SQL,
            )
        ]
    schema = pgsql.Identifier(found[0]["schema"]).as_string(conn)
    # the columns were renamed in PostgreSQL 13
    prefix = "exec_" if conn.info.server_version >= 130000 else ""
    sql = f"""\
SELECT s.queryid::text AS queryid, d.datname, s.calls,
       round(s.mean_{prefix}time::numeric, 2)::float8 AS mean_ms,
       round(s.total_{prefix}time::numeric, 1)::float8 AS total_ms,
       s.rows, {_cut("s.query")} AS query
FROM {schema}.pg_stat_statements AS s
LEFT JOIN pg_catalog.pg_database AS d ON d.oid = s.dbid
WHERE s.calls > 0
ORDER BY s.mean_{prefix}time DESC
LIMIT 5"""
    try:
        rows = await _rows(conn, sql)
    except psycopg.errors.ObjectNotInPrerequisiteState as exc:
        return [
            _finding(
                target,
                "db.pg_stat_statements_missing",
                "info",
                f"pg_stat_statements is installed in {target.dbname} but not loaded: "
                f"{_reason(exc, target.password)}",
                {"dbname": target.dbname},
                sql,
            )
        ]
    if not rows:
        return []
    top = rows[0]
    severity: Severity = "warning" if top["mean_ms"] >= limits.slow_statement_ms else "info"
    claim = (
        f"The slowest statement by mean time takes {top['mean_ms']:g} ms over "
        f"{top['calls']} call(s): {shorten(top['query'], 80)}"
    )
    evidence: dict[str, JsonValue] = {
        "threshold_ms": limits.slow_statement_ms,
        "statements": [dict(r) for r in rows],
    }
    return [_finding(target, "db.slow_statements", severity, claim, evidence, sql)]


# -- helpers ----------------------------------------------------------------------------


async def _rows(conn: Conn, sql: str) -> list[dict[str, Any]]:
    cur = await conn.execute(sql)
    return list(await cur.fetchall())


def _finding(
    target: _Target,
    code: str,
    severity: Severity,
    claim: str,
    evidence: dict[str, JsonValue],
    query: str | None,
) -> Finding:
    return Finding(
        specialist=NAME,
        code=code,
        severity=severity,
        claim=claim,
        evidence={"server": f"{target.host}:{target.port}/{target.dbname}", **evidence},
        tool=TOOL,
        query=query,
        credential_ref=target.password_ref,
    )
