"""The diagnosis flow (DESIGN §1, §4): analyse → approve → credentials → specialists →
synthesis → recorded in the ledger.

A session moves through ``analyzing → waiting_for_approval → retrieving_credentials →
diagnosing → completed``, or ends ``denied``, ``expired`` or ``error``. Every step is an
event of its NDJSON stream, persisted with the session, so any server process can
stream it. Credentials are fetched only after an approver approves, by the process that
took the approval, into a lease held in its memory and wiped when the session ends;
error texts are scrubbed of the leased values before they go anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, Protocol

import orjson
from pydantic import BaseModel, JsonValue
from whenever import Instant

from episteme.diagnose import analysis
from episteme.diagnose.config import ENVIRONMENTS, DiagnosisConfig
from episteme.diagnose.findings import NAMES_NOT_SECRETS, Finding, Redactor, Run, SpecialistContext
from episteme.diagnose.narrator import Narrator, Templates
from episteme.diagnose.synthesis import Report, cap, synthesize
from episteme.errors import Conflict, Forbidden, InvalidInput, NotFound, refuse_tokens
from episteme.ledger.access import Principal
from episteme.ledger.canonical import check_texts, without_nul
from episteme.ledger.core import Ledger
from episteme.ledger.gardener import addressed
from episteme.ledger.model import AssertionInput, Kind, check_after, check_context, check_limit
from episteme.ledger.sql.learning import Note
from episteme.secrets.refs import scheme_of
from episteme.text import shorten
from episteme.timeutil import from_us, to_us

log = logging.getLogger(__name__)

VERSION = 1
"""The version of the NDJSON events (field ``v`` of each)."""
TERMINAL = frozenset({"completed", "error", "denied", "expired"})
MAX_PROBLEM = 8192
"""The longest problem a session takes, in characters (an alert's summary is cut to it)."""
KEEPALIVE: dict[str, Any] = {}
"""What `events(…, keepalive=True)` yields when a followed session has been quiet: not
an event (it has no `type`), sent on the wire as a blank line, which NDJSON readers skip."""
"""The statuses a session ends in (each written with the event that closes its stream)."""
_DONE = {"approve": "approved", "deny": "denied"}
BUNDLED = ("database", "cloud", "kubernetes", "observability")
MAX_FINDINGS = 25
"""Findings kept per specialist before synthesis."""


class Lease(Protocol):
    """Fetched secrets, in memory only."""

    def get(self, ref: str) -> str: ...
    def wipe(self) -> None: ...


LeaseFn = Callable[[Sequence[str], float], Awaitable[Lease]]


class Session(BaseModel):
    """A diagnosis session as users see it: references only, never values."""

    id: str
    status: str
    problem: str
    environment: str
    context: dict[str, JsonValue]
    requester: str
    specialists: list[str]
    why: dict[str, list[str]]
    credentials: dict[str, dict[str, str]]
    """Specialist → role → reference."""
    requested: list[str]
    approved: list[str] | None
    decided_by: str | None
    reason: str | None
    result: Report | None
    error: str | None
    incident: str | None
    created_at: Instant
    updated_at: Instant
    expires_at: Instant | None


class Incident(BaseModel):
    """An alert that fired, as Alertmanager sent it, and the session it opened."""

    key: str
    group_key: str
    status: Literal["open", "resolved"]
    labels: dict[str, str]
    """The group's common labels and the alert's own."""
    session_id: str | None
    """The diagnosis session it opened: None while it opens, or when opening it failed;
    a session deleted since keeps its id here."""
    alerts: int
    """How many notifications of it came (Alertmanager repeats a firing alert)."""
    opened_at: Instant
    updated_at: Instant


def _session(row: Mapping[str, Any]) -> Session:
    plan = orjson.loads(row["plan"])
    return Session(
        id=row["id"],
        status=row["status"],
        problem=row["problem"],
        environment=row["environment"],
        context=orjson.loads(row["context"]),
        requester=row["requester"],
        specialists=plan["specialists"],
        why=plan["why"],
        credentials=plan["credentials"],
        requested=plan["requested"],
        approved=None if row["approved"] is None else orjson.loads(row["approved"]),
        decided_by=row["decided_by"],
        reason=row["reason"],
        result=None if row["result"] is None else Report.model_validate_json(row["result"]),
        error=row["error"],
        incident=row["incident"],
        created_at=from_us(row["created_at"]),
        updated_at=from_us(row["updated_at"]),
        expires_at=None if row["expires_at"] is None else from_us(row["expires_at"]),
    )


async def lease_from_env(refs: Sequence[str], ttl_s: float) -> Lease:
    """Fetch `refs` with the secret stores configured in the environment (secrets/)."""
    from episteme.secrets.broker import Broker

    lease: Lease = await Broker.from_env().lease(list(refs), ttl_s)
    return lease


def default_specialists() -> dict[str, Run]:
    """The bundled specialists, by name (each module imports its client when it runs)."""
    out: dict[str, Run] = {}
    for name in BUNDLED:
        module = importlib.import_module(f"episteme.diagnose.specialists.{name}")
        out[name] = module.run
    return out


class DiagnosisEngine:
    """Sessions over one ledger; background work runs on the caller's event loop."""

    def __init__(
        self,
        ledger: Ledger,
        lease: LeaseFn,
        *,
        config: DiagnosisConfig | None = None,
        narrator: Narrator | None = None,
        specialists: Mapping[str, Run] | None = None,
    ) -> None:
        self.ledger, self.store, self.clock = ledger, ledger.store, ledger.clock
        self.lease_fn = lease
        self.config = config or DiagnosisConfig()
        self.narrator: Narrator = narrator or Templates()
        self._specialists = specialists
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: set[str] = set()
        """Sessions this process is diagnosing now."""
        self._stopping = False

    def stop_following(self) -> None:
        """End every followed stream at its next look (within 0.1 s) with an `error` event
        of code `stopping`: the server is shutting down. Its graceful stop waits for open
        requests, and a stream following a session that waits for its approval would
        hold it for the whole wait, then be cut."""
        self._stopping = True

    @property
    def specialists(self) -> Mapping[str, Run]:
        if self._specialists is None:
            self._specialists = default_specialists()
        return self._specialists

    # -- plumbing ------------------------------------------------------------------------

    def _now(self) -> int:
        return to_us(self.clock.now())

    @staticmethod
    def _event(sid: str, now: int, type: str, data: Mapping[str, Any]) -> str:
        event = {"v": VERSION, "type": type, "session_id": sid, "at": from_us(now).format_iso()}
        return orjson.dumps({**event, **data}).decode()

    async def _emit(self, sid: str, type: str, **data: Any) -> None:
        now = self._now()
        await asyncio.to_thread(
            self.store.add_diagnosis_event, sid, now, self._event(sid, now, type, data)
        )

    async def _move(
        self,
        sid: str,
        frm: Sequence[str],
        then: tuple[str, Mapping[str, Any]] | None = None,
        at: int | None = None,
        **changes: Any,
    ) -> bool:
        """Move the session from one of the statuses `frm`, writing `changes` and (with
        `then`, an event's type and data) the event that says so, in one transaction;
        dated `at` when given (when the move happened, before it was seen), else now."""
        now = changes["updated_at"] = self._now() if at is None else at
        event = None if then is None else (now, self._event(sid, now, *then))
        return await asyncio.to_thread(self.store.move_diagnosis_session, sid, frm, changes, event)

    async def _row(self, sid: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self.store.diagnosis_session, sid)
        if row is None:
            raise NotFound(
                f"no diagnosis session {sid!r}: `episteme sessions` (GET /sessions) lists them",
                field="id",
            )
        return await self._settled(row)

    async def _settled(self, row: dict[str, Any]) -> dict[str, Any]:
        """`row`, after ending it if its time ran out: an approval not given in time, or
        a diagnosis whose process stopped before it finished."""
        sid, now = row["id"], self._now()
        stale_us = int((3 * self.config.specialist_timeout_s + 60) * 1_000_000)
        at = None
        if row["status"] == "waiting_for_approval" and row["expires_at"] <= now:
            ending = ("expired", "expired", "the approval was not given in time")
            at = row["expires_at"]  # when it expired, not when someone next looked
        elif (
            row["status"] in ("retrieving_credentials", "diagnosing")
            and row["updated_at"] + stale_us <= now
            and sid not in self._running
        ):
            ending = (
                "error",
                "failed",
                "the server running this session stopped before it finished",
            )
        else:
            return row
        status, code, message = ending
        error = ("error", {"code": code, "message": message})
        moved = await self._move(sid, [row["status"]], error, at, status=status, error=message)
        fresh = await asyncio.to_thread(self.store.diagnosis_session, sid)
        assert fresh is not None
        if moved:  # recorded once, as a session that ends any other way is
            await self._record(_session(fresh))
        return fresh

    # -- the flow ------------------------------------------------------------------------

    async def start(
        self,
        problem: str,
        environment: str,
        *,
        requester: str,
        context: Mapping[str, JsonValue] | None = None,
        labels: Mapping[str, str] | None = None,
        incident: str | None = None,
    ) -> Session:
        """Open a session and analyse it up to the approval step."""
        if not problem.strip():
            raise InvalidInput("describe the problem to diagnose", field="problem")
        if len(problem) > MAX_PROBLEM:
            raise InvalidInput(
                f"the problem is {len(problem):,} characters: describe it in at most"
                f" {MAX_PROBLEM:,}",
                field="problem",
            )
        check_texts({"problem": problem})
        check_context(dict(context or {}))
        refuse_tokens(orjson.dumps([problem, context, labels]).decode())
        if environment not in ENVIRONMENTS:
            raise InvalidInput(
                f"unknown environment {environment!r}: use prod, staging or dev",
                field="environment",
            )
        sid = "s_" + secrets.token_hex(12)
        now = self._now()
        row: dict[str, Any] = {
            "id": sid,
            "status": "analyzing",
            "problem": problem,
            "environment": environment,
            "context": orjson.dumps(dict(context or {})).decode(),
            "requester": requester,
            "plan": orjson.dumps(
                {"specialists": [], "why": {}, "credentials": {}, "requested": []}
            ).decode(),
            "approved": None,
            "decided_by": None,
            "reason": None,
            "result": None,
            "error": None,
            "incident": incident,
            "created_at": now,
            "updated_at": now,
            "expires_at": None,
        }
        await asyncio.to_thread(self.store.save_diagnosis_session, row)
        await self._emit(
            sid, "session_start", problem=problem, environment=environment, requester=requester
        )
        proposed = await self.narrator.propose(problem)
        chosen, why = analysis.select(problem, labels, proposed)
        await self._emit(sid, "text", text=await self.narrator.analysis(problem, chosen, why))
        credentials = {n: self.config.access(n, environment).credentials for n in chosen}
        requested = sorted({ref for refs in credentials.values() for ref in refs.values()})
        expires = now + int(self.config.approval_ttl_s * 1_000_000)
        plan = {
            "specialists": chosen,
            "why": why,
            "credentials": credentials,
            "requested": requested,
        }
        required = {
            "specialists": chosen,
            "credentials": credentials,
            "references": requested,
            "expires_at": from_us(expires).format_iso(),
            "self_approval": self.config.self_approval,
        }
        await self._move(
            sid,
            ["analyzing"],
            ("approval_required", required),
            status="waiting_for_approval",
            plan=orjson.dumps(plan).decode(),
            expires_at=expires,
        )
        session = await self.status(sid)
        if session.status == "waiting_for_approval":  # not decided, or gone, since
            await asyncio.to_thread(self._waiting, session)
        return session

    def _waiting(self, session: Session) -> None:
        """Tell the webhooks that take "approval" that `session` waits for an approver:
        one an alert opened at 3 a.m. would otherwise expire unseen. Failing to raise it
        leaves the session waiting, as it would be without webhooks."""
        expires = session.expires_at.format_iso() if session.expires_at else "never"
        note = Note(
            key=f"approval:{session.id}",
            type="approval",
            seq=None,
            at=to_us(session.updated_at),
            summary=f"diagnosis {session.id} ({session.environment}) waits for an approver"
            f" until {expires}: {shorten(session.problem, 120)}; approve with"
            f" `episteme approve {session.id} --reason …`",
            data={
                "session_id": session.id,
                "problem": session.problem,
                "environment": session.environment,
                "requester": session.requester,
                "specialists": session.specialists,
                "references": session.requested,
                "incident": session.incident,
                "expires_at": expires,
            },
        )
        try:
            self.store.raise_notes([addressed(note, self.ledger.webhooks())], self._now())
        except Exception:  # the session is waiting all the same: its caller goes on
            log.exception("could not raise the approval notification of %s", session.id)

    async def status(self, sid: str) -> Session:
        return _session(await self._row(sid))

    async def sessions(self, limit: int = 100, *, after: str | None = None) -> list[Session]:
        """Sessions, newest first; with `after`, the page that follows the session of
        that id (the last of the page before)."""
        check_limit(limit)
        check_after(after, "a session's id")
        rows = await asyncio.to_thread(self.store.diagnosis_sessions, limit, after)
        return [_session(await self._settled(r)) for r in rows]

    async def incidents(
        self, limit: int = 100, *, after: str | None = None, status: str | None = None
    ) -> list[Incident]:
        """Incidents alerts opened, newest first, `status` alone if given; with `after`,
        the page that follows the incident of that key (the last of the page before)."""
        check_limit(limit)
        check_after(after, "an incident's key")
        if status not in (None, "open", "resolved"):
            raise InvalidInput(f"unknown status {status!r}: use open or resolved", field="status")
        rows = await asyncio.to_thread(self.store.incidents, limit, after, status)
        return [
            Incident(
                **r
                | {
                    "labels": orjson.loads(r["labels"]),
                    "opened_at": from_us(r["opened_at"]),
                    "updated_at": from_us(r["updated_at"]),
                }
            )
            for r in rows
        ]

    async def approve(
        self, sid: str, *, approver: str, refs: Sequence[str] | None, reason: str
    ) -> Session:
        """Approve all requested references, or a subset; the diagnosis then runs here."""
        if not reason.strip():
            raise InvalidInput("an approval needs a reason", field="reason")
        check_texts({"reason": reason})
        session = _session(await self._row(sid))
        self._check_decidable(session, approver, "approve")
        chosen = list(session.requested if refs is None else refs)
        unknown = sorted(set(chosen) - set(session.requested))
        for ref in unknown:
            scheme_of(ref)  # text that is not a reference is refused, and not shown
        if unknown:
            raise InvalidInput(
                f"not requested by this session: {', '.join(unknown)}", field="references"
            )
        accepted = {"approver": approver, "references": sorted(set(chosen)), "reason": reason}
        moved = await self._move(
            sid,
            ["waiting_for_approval"],
            ("approval_accepted", accepted),
            status="retrieving_credentials",
            approved=orjson.dumps(sorted(set(chosen))).decode(),
            decided_by=approver,
            reason=reason,
        )
        if not moved:
            raise Conflict(f"session {sid} was decided meanwhile: see GET /status/{sid}")
        self.spawn(self._diagnose(sid))
        return await self.status(sid)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` in the background on this loop; `close` cancels what still runs."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deny(self, sid: str, *, approver: str, reason: str) -> Session:
        if not reason.strip():
            raise InvalidInput("a denial needs a reason", field="reason")
        check_texts({"reason": reason})
        session = _session(await self._row(sid))
        self._check_decidable(session, approver, "deny")
        denied = ("error", {"code": "denied", "message": f"denied by {approver}: {reason}"})
        if not await self._move(
            sid,
            ["waiting_for_approval"],
            denied,
            status="denied",
            decided_by=approver,
            reason=reason,
        ):
            raise Conflict(f"session {sid} was decided meanwhile: see GET /status/{sid}")
        await self._record(await self.status(sid))
        return await self.status(sid)

    def _check_decidable(self, session: Session, approver: str, verb: str) -> None:
        if session.status != "waiting_for_approval":
            raise Conflict(
                f"session {session.id} is {session.status}: only a session waiting for "
                f"approval can be {_DONE.get(verb, verb)}"
            )
        if session.requester == approver and not self.config.self_approval and verb == "approve":
            raise Forbidden(
                f"{approver} requested this session and cannot approve it: another approver "
                "must (or set self_approval in the diagnosis config)"
            )

    async def delete(self, sid: str) -> None:
        await self._row(sid)
        await asyncio.to_thread(self.store.delete_diagnosis_session, sid)

    async def wait(self, sid: str, timeout: float = 60.0) -> Session:
        """The session once it has ended (tests, the CLI without streaming), and, when
        this process diagnosed it, once it is recorded in the ledger (just after its
        status moves)."""
        deadline = time.monotonic() + timeout
        while (session := await self.status(sid)).status not in TERMINAL | {
            "waiting_for_approval"
        } or sid in self._running:
            if time.monotonic() > deadline:
                raise TimeoutError(f"session {sid} still {session.status}")
            await asyncio.sleep(0.05)
        return session

    async def events(
        self,
        sid: str,
        *,
        after: int = 0,
        follow: bool = True,
        until_waiting: bool = False,
        reader: tuple[Principal, str] | None = None,
        keepalive: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """The session's events from number `after` on; with `follow`, until it ends
        (or, with `until_waiting`, until it waits for an approval). With `reader` (who
        reads, and what: the route), its token is checked again before each new batch of
        events: revoked or expired, the events end there with an `error` event (code
        `unauthenticated`, no `n`: it is this reader's, not the session's), and the attempt
        is recorded. A followed stream also ends, with code `stopping`, when the server
        stops (`stop_following`). With `keepalive`, a followed stream that has had no
        event for the config's `keepalive_s` yields an empty object (`KEEPALIVE`): a
        streamed answer sends a blank line for it. The reader's token is checked again
        before each keep-alive too, so that a revoked one ends a quiet stream."""
        seen, authorized_now = after, True
        quiet_since = time.monotonic()
        while True:
            # The status is read before the events: a session's status moves in the same
            # transaction as the event that says so, so the events read next include it.
            status = (await self._row(sid))["status"]
            rows = await asyncio.to_thread(self.store.diagnosis_events, sid, seen)
            quiet = keepalive and time.monotonic() - quiet_since >= self.config.keepalive_s
            if (rows or quiet) and reader is not None and not authorized_now:
                refused = await asyncio.to_thread(self.ledger.recheck, *reader)
                if refused is not None:  # said, so that the end is not taken for the end
                    said = {"code": "unauthenticated", "message": refused}
                    yield orjson.loads(self._event(sid, self._now(), "error", said))
                    return
            authorized_now = False
            for n, text in rows:
                seen = n
                yield {**orjson.loads(text), "n": n}
            if rows:
                quiet_since = time.monotonic()
            if not follow or status in TERMINAL:
                return
            if until_waiting and status == "waiting_for_approval":
                return
            if self._stopping:  # the reader's, as `unauthenticated` is: no `n`
                said = {
                    "code": "stopping",
                    "message": f"the server is stopping: follow session {sid} again once "
                    "it is back (its events are kept)",
                }
                yield orjson.loads(self._event(sid, self._now(), "error", said))
                return
            if quiet and not rows:
                quiet_since = time.monotonic()
                yield KEEPALIVE
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- after the approval -----------------------------------------------------------------

    async def _diagnose(self, sid: str) -> None:
        self._running.add(sid)
        try:
            await self._diagnose_running(sid)
        finally:
            self._running.discard(sid)

    async def _diagnose_running(self, sid: str) -> None:
        session = await self.status(sid)
        approved = set(session.approved or [])
        lease: Lease | None = None
        redact = Redactor(())
        try:
            runnable, skipped = [], {}
            for name in session.specialists:
                needs = set(session.credentials.get(name, {}).values())
                if needs - approved:
                    skipped[name] = "credentials not approved: " + ", ".join(
                        sorted(needs - approved)
                    )
                elif name not in self.specialists:
                    skipped[name] = "no such specialist is installed"
                else:
                    runnable.append(name)
            # only what a specialist that runs uses: an approved reference of one that
            # cannot run is not fetched
            used = {
                (role, ref)
                for name in runnable
                for role, ref in session.credentials.get(name, {}).items()
            }
            refs = sorted({ref for _, ref in used})
            lease = await self.lease_fn(refs, self.config.lease_ttl_s)
            redact = Redactor(
                lease.get(ref) for ref in {r for role, r in used if role not in NAMES_NOT_SECRETS}
            )
            for ref in refs:
                await self._emit(sid, "credential_retrieved", reference=ref)
            started: tuple[str, dict[str, Any]] = ("diagnosis_started", {})
            await self._move(sid, ["retrieving_credentials"], started, status="diagnosing")
            await self._emit(sid, "specialists_selected", specialists=runnable, skipped=skipped)
            results = await asyncio.gather(
                *(self._specialist(sid, session, name, lease, redact) for name in runnable)
            )
            findings = [f for found in results for f in found[0]]
            missing = [f"{n}: {why}" for n, why in skipped.items()]
            missing += [f"{n}: {err}" for n, (_, err) in zip(runnable, results, strict=True) if err]
            await self._emit(sid, "synthesis_started", findings=len(findings))
            report = synthesize(findings, missing)
            report.text = redact(await self.narrator.synthesis(session.problem, report))
            await self._emit(sid, "text", text=report.text)
            await self._move(
                sid,
                ["diagnosing"],
                ("diagnosis_complete", {"result": report.model_dump(mode="json")}),
                status="completed",
                result=report.model_dump_json(),
            )
        except asyncio.CancelledError:
            await self._fail(sid, "the server stopped during the diagnosis")
            raise
        except Exception as exc:  # every failure ends the session in a defined state
            await self._fail(sid, redact(f"{type(exc).__name__}: {exc}"))
        finally:
            if lease is not None:
                lease.wipe()
        await self._record(await self.status(sid))

    async def _fail(self, sid: str, message: str) -> None:
        await self._move(
            sid,
            ["retrieving_credentials", "diagnosing"],
            ("error", {"code": "failed", "message": message}),
            status="error",
            error=message,
        )

    async def _specialist(
        self, sid: str, session: Session, name: str, lease: Lease, redact: Redactor
    ) -> tuple[list[Finding], str | None]:
        access = self.config.access(name, session.environment)
        granted = dict(access.credentials)

        def secret(ref: str) -> str:
            if ref not in granted.values():
                raise PermissionError(f"{name} did not declare {ref}")
            return lease.get(ref)

        ctx = SpecialistContext(
            problem=session.problem,
            environment=session.environment,  # type: ignore[arg-type]
            settings=access.settings,
            secret=secret,
            credentials=granted,
            timeout_s=self.config.specialist_timeout_s,
            redact=redact,
        )
        started = time.monotonic()
        error = None
        kept: list[Finding] = []
        try:
            found = await asyncio.wait_for(
                self.specialists[name](ctx), self.config.specialist_timeout_s
            )
            # scrubbed before they are cut: a secret cut in two would be half shown
            kept = [cap(redact.finding(f)) for f in found[:MAX_FINDINGS]]
        except TimeoutError:
            error = f"no answer within {self.config.specialist_timeout_s:g} s"
        except Exception as exc:  # one specialist failing does not sink the others
            error = redact(str(exc) or type(exc).__name__)
        await self._emit(
            sid,
            "specialist_complete",
            specialist=name,
            findings=[f.model_dump() for f in kept],
            seconds=round(time.monotonic() - started, 3),
            error=error,
        )
        return kept, error

    async def _record(self, session: Session) -> None:
        """The session, its findings and its conclusion, as observations in the ledger."""
        try:
            rows = _observations(session)
            await asyncio.to_thread(self.ledger.add, rows)
        except Exception:  # the session's own state is already saved
            log.exception("diagnosis %s: could not record it in the ledger", session.id)


def _observations(session: Session) -> list[AssertionInput]:
    """What a session recorded: itself, its findings and its conclusion (the text its
    specialists read from real systems kept as it is, but for NUL characters)."""
    env = session.environment

    def observed(what: str, value: JsonValue, **more: Any) -> AssertionInput:
        return AssertionInput(
            subject=f"diagnosis.{env}.{what}",
            value=without_nul(value),
            agent="diagnosis",
            kind=Kind.OBSERVATION,
            source=f"diagnosis:{session.id}",
            epoch=f"diagnosis-{session.id}",
            **more,
        )

    summary: dict[str, JsonValue] = {
        "session": session.id,
        "problem": session.problem,
        "status": session.status,
        "requester": session.requester,
        "decided_by": session.decided_by,
        "approved_references": list(session.approved or []),
        "reason": session.reason,
    }
    rows = [observed("session", summary)]
    if session.result is not None:
        for f in session.result.findings:
            code = f.code.replace(".", "_")
            evidence = without_nul(f.query)
            found = f.model_dump(mode="json")
            rows.append(
                observed(f"{f.specialist}.{code}", found, evidence=evidence, confidence=0.9)
            )
        conclusion: dict[str, JsonValue] = {
            "session": session.id,
            "conclusion": session.result.conclusion,
            "inconclusive": session.result.inconclusive,
            "hypotheses": [h.title for h in session.result.hypotheses],
        }
        rows.append(observed("conclusion", conclusion))
    return rows
