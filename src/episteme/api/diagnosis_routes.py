"""Diagnosis over HTTP, at the paths users know (`POST /diagnose`, `POST /approve/{id}`,
`POST /deny/{id}`, `GET /status/{id}`, `GET /sessions`, `DELETE /sessions/{id}`, `POST
/alerts`), and the same under `/v1/diagnosis/…`.

Ask for `application/x-ndjson` (or `?stream=true`) to get the session's events as they
happen, one JSON object per line; otherwise the session comes back as JSON.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.responses import Response, StreamingResponse

from episteme.diagnose.alerts import AlertmanagerPayload, receive
from episteme.diagnose.engine import (
    KEEPALIVE,
    MAX_PROBLEM,
    DiagnosisEngine,
    Incident,
    Session,
)
from episteme.ledger.access import Op, Principal

from .ledger_routes import Caller, listed, page_after, paged
from .problems import responses

NDJSON = "application/x-ndjson"
SessionId = Annotated[str, Path(max_length=64, pattern=r"^s_[0-9a-f]{24}$")]
Stream = Annotated[bool, Query(description="stream the events as NDJSON")]


class DiagnoseBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"problem": "database connection failures in prod", "environment": "prod"}]
        },
    )

    problem: str = Field(min_length=1, max_length=MAX_PROBLEM)
    environment: str = Field("prod", pattern=r"^(prod|staging|dev)$")
    context: dict[str, JsonValue] = Field(default_factory=dict)


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    references: list[Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=100, description="the references approved; none: all requested"
    )
    reason: str = Field(min_length=1, max_length=4096)


class DenyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=4096)


def _engine(request: Request) -> DiagnosisEngine:
    engine: DiagnosisEngine = request.app.state.diagnosis
    return engine


def _streams(request: Request, stream: bool) -> bool:
    return stream or NDJSON in request.headers.get("accept", "")


def _reader(request: Request, who: Principal) -> tuple[Principal, str]:
    """Who follows a stream, and where (as a refusal would record it): the token is
    checked again as the events come, so that revoking it ends the stream."""
    return who, f"{request.method} {request.url.path}"


def _ndjson(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def lines() -> AsyncIterator[bytes]:
        async for event in events:
            yield b"\n" if event is KEEPALIVE else orjson.dumps(event) + b"\n"

    return StreamingResponse(lines(), media_type=NDJSON)


def _json(session: Session, status: int = 200) -> Response:
    return Response(session.model_dump_json(), status, media_type="application/json")


def build(prefix: str) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["diagnosis"], responses=responses(401, 403, 422))
    stream_doc: dict[int | str, dict[str, Any]] = {
        200: {"content": {NDJSON: {}}, "description": "the events, one per line"}
    }

    @router.post(
        "/diagnose",
        status_code=201,
        response_model=Session,
        responses={**stream_doc, **responses(400)},
        summary="Open a diagnosis: analysis up to the approval step",
    )
    async def diagnose(
        body: DiagnoseBody,
        request: Request,
        stream: Stream = False,
        who: Principal = Caller(Op.DIAGNOSE),
    ) -> Response:
        engine = _engine(request)
        session = await engine.start(
            body.problem, body.environment, requester=who.name, context=body.context
        )
        if _streams(request, stream):
            return _ndjson(engine.events(session.id, follow=False))
        return _json(session, 201)

    @router.post(
        "/approve/{id}",
        status_code=202,  # accepted: the specialists run after the answer
        response_model=Session,
        responses={**stream_doc, **responses(400, 404, 409)},
        summary="Approve all requested credentials, or a subset (approver)",
    )
    async def approve(
        id: SessionId,
        body: ApproveBody,
        request: Request,
        stream: Stream = False,
        who: Principal = Caller(Op.APPROVE_CREDENTIALS),
    ) -> Response:
        engine = _engine(request)
        before = len(await asyncio.to_thread(engine.store.diagnosis_events, id))
        session = await engine.approve(
            id, approver=who.name, refs=body.references, reason=body.reason
        )
        if _streams(request, stream):
            return _ndjson(
                engine.events(id, after=before, reader=_reader(request, who), keepalive=True)
            )
        return _json(session, 202)

    @router.post(
        "/deny/{id}",
        response_model=Session,
        responses=responses(400, 404, 409),
        summary="Deny a session's credentials (approver)",
    )
    async def deny(
        id: SessionId,
        body: DenyBody,
        request: Request,
        who: Principal = Caller(Op.APPROVE_CREDENTIALS),
    ) -> Response:
        return _json(await _engine(request).deny(id, approver=who.name, reason=body.reason))

    @router.get(
        "/status/{id}",
        response_model=Session,
        responses={**stream_doc, **responses(404)},
        summary="A session's state (or its events, streamed until it ends)",
    )
    async def status(
        id: SessionId, request: Request, stream: Stream = False, who: Principal = Caller(Op.READ)
    ) -> Response:
        engine = _engine(request)
        if _streams(request, stream):
            await engine.status(id)  # a 404 before the stream starts
            return _ndjson(engine.events(id, reader=_reader(request, who), keepalive=True))
        return _json(await engine.status(id))

    @router.get(
        "/sessions",
        response_model=list[Session],
        responses=paged(),
        summary="Sessions, newest first",
    )
    async def sessions(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: Annotated[
            str | None,
            page_after(
                "the sessions that follow the one with this id (the last of the page before)"
            ),
        ] = None,
        who: Principal = Caller(Op.READ),
    ) -> Response:
        rows = await _engine(request).sessions(limit, after=after)
        return listed(request, rows, limit, "after", "id")

    @router.get(
        "/incidents",
        response_model=list[Incident],
        responses=paged(400),
        summary="Incidents alerts opened, newest first, and the sessions they opened",
    )
    async def incidents(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        status: Annotated[
            Literal["open", "resolved"] | None,
            Query(description="Only the open ones (still firing), or the resolved."),
        ] = None,
        after: Annotated[
            str | None,
            page_after(
                "the incidents that follow the one with this key (the last of the page before)"
            ),
        ] = None,
        who: Principal = Caller(Op.READ),
    ) -> Response:
        rows = await _engine(request).incidents(limit, after=after, status=status)
        return listed(request, rows, limit, "after", "key")

    @router.delete(
        "/sessions/{id}",
        status_code=204,
        responses=responses(404),
        summary="Delete a session and its events (approver)",
    )
    async def delete(
        id: SessionId, request: Request, who: Principal = Caller(Op.DELETE_SESSION)
    ) -> Response:
        await _engine(request).delete(id)
        return Response(status_code=204)

    @router.post(
        "/alerts",
        status_code=202,
        responses=responses(400),
        summary="Alertmanager's webhook (version 4): opens an incident and its diagnosis",
    )
    async def alerts(
        payload: AlertmanagerPayload, request: Request, who: Principal = Caller(Op.DIAGNOSE)
    ) -> Response:
        payload.check_storable()
        engine = _engine(request)
        engine.spawn(receive(engine, payload, who.name))
        return Response(b'{"accepted":true}', 202, media_type="application/json")

    return router
