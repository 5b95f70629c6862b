"""The diagnosis desk: sessions, their approval, and their progress as it happens.

`/diagnosis/{id}` renders the session as it stands; `/diagnosis/{id}/events` streams its
events as NDJSON under the console's cookie session (the same events as the API's
``GET /status/{id}?stream=true``, each with a ``line`` in words), which the page's
script follows and then reloads to show the findings. Approving (all references or
the ticked ones) and denying are POST forms with a reason, for the approver role; they
call `DiagnosisEngine.approve` and `deny`, so the diagnosis runs in this server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from starlette.responses import Response, StreamingResponse

from episteme.diagnose.engine import KEEPALIVE, TERMINAL
from episteme.errors import InvalidInput
from episteme.ledger.access import Op
from episteme.ledger.model import MAX_SEQ

from .render import HEADERS, PageRoute, page, redirect
from .session import Allowed, Console, Reader

SessionId = Annotated[str, Path(max_length=64, pattern=r"^s_[0-9a-f]{24}$")]
NDJSON = "application/x-ndjson"

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _n(items: Any) -> int:
    return len(items) if isinstance(items, list | dict) else 0


def describe(event: Mapping[str, Any]) -> str:
    """One event of a session in words, for the desk's log."""
    e = event
    kind = e.get("type", "")
    if kind == "session_start":
        return f"opened by {e.get('requester')} for {e.get('environment')}: {e.get('problem')}"
    if kind == "text":
        return str(e.get("text", ""))
    if kind == "approval_required":
        names = ", ".join(e.get("specialists") or []) or "no specialist"
        return f"waiting for approval of {_n(e.get('references'))} references for {names}"
    if kind == "approval_accepted":
        refs = _n(e.get("references"))
        return f"{e.get('approver')} approved {refs} references: {e.get('reason')}"
    if kind == "credential_retrieved":
        return f"retrieved {e.get('reference')}"
    if kind == "diagnosis_started":
        return "the specialists start"
    if kind == "specialists_selected":
        skipped = e.get("skipped") or {}
        line = "running " + (", ".join(e.get("specialists") or []) or "no specialist")
        return line + "".join(f"; skipped {k}: {why}" for k, why in skipped.items())
    if kind == "specialist_complete":
        line = f"{e.get('specialist')}: {_n(e.get('findings'))} findings in {e.get('seconds')} s"
        return line + (f"; error: {e['error']}" if e.get("error") else "")
    if kind == "synthesis_started":
        return f"weighing {e.get('findings')} findings"
    if kind == "diagnosis_complete":
        return str((e.get("result") or {}).get("conclusion", "complete"))
    if kind == "error":
        return f"{e.get('code')}: {e.get('message')}"
    return str(kind)


@router.get("/diagnosis")
async def sessions(who: Reader) -> Response:
    rows = await who.engine.sessions(limit=100)
    return page(who.request, "diagnosis.html", sessions=rows)


@router.get("/diagnosis/{sid}")
async def session(sid: SessionId, who: Reader) -> Response:
    engine = who.engine
    found = await engine.status(sid)
    events = [{**e, "line": describe(e)} async for e in engine.events(sid, follow=False)]
    return page(
        who.request,
        "session.html",
        s=found,
        events=events,
        after=events[-1]["n"] if events else 0,
        live=found.status not in TERMINAL,
    )


@router.get("/diagnosis/{sid}/events")
async def events(
    sid: SessionId, who: Reader, after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0
) -> Response:
    engine = who.engine
    await engine.status(sid)  # an unknown session is a 404 page, before the stream starts

    reader = (who.principal, f"GET {who.request.url.path}")  # revoked: the stream ends

    async def lines() -> AsyncIterator[bytes]:
        async for event in engine.events(sid, after=after, reader=reader, keepalive=True):
            if event is KEEPALIVE:
                yield b"\n"
            else:
                yield orjson.dumps({**event, "line": describe(event)}) + b"\n"

    headers = {k: HEADERS[k] for k in ("Cache-Control", "X-Content-Type-Options")}
    return StreamingResponse(lines(), media_type=NDJSON, headers=headers)


@router.post("/diagnosis/{sid}/approve")
async def approve(
    sid: SessionId, who: Console = Allowed(Op.APPROVE_CREDENTIALS, form=True)
) -> Response:
    refs = None if who.field("scope") == "all" else who.fields("ref")
    if refs is not None and not refs:
        raise InvalidInput("tick the references to approve, or approve all of them", field="ref")
    await who.engine.approve(
        sid, approver=who.principal.name, refs=refs, reason=who.field("reason").strip()
    )
    return redirect(f"/diagnosis/{sid}")


@router.post("/diagnosis/{sid}/deny")
async def deny(
    sid: SessionId, who: Console = Allowed(Op.APPROVE_CREDENTIALS, form=True)
) -> Response:
    await who.engine.deny(sid, approver=who.principal.name, reason=who.field("reason").strip())
    return redirect(f"/diagnosis/{sid}")
