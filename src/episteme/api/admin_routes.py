"""`/v1` routes for tokens, refusals and integrity (admin and supervisor work)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response, StreamingResponse

from episteme.errors import InvalidInput, hide_secrets
from episteme.ledger.access import Denial, Op, Principal, TokenRecord
from episteme.ledger.journal import VerifyReport
from episteme.ledger.records import RebuildReport

from .deps import LedgerDep
from .ledger_routes import Before, Caller, Limit, encoded, listed, paged
from .problems import responses
from .schemas import NAME, IssuedToken, ReasonBody, RebuildBody, RevokeBody, TokenBody, WireTime

router = APIRouter(prefix="/v1", responses=responses(401, 403, 422, 503))


@router.get("/whoami", response_model=Principal, tags=["access"], summary="The token's principal")
def whoami(who: Principal = Caller(Op.READ)) -> Response:
    return encoded(who)


@router.post(
    "/tokens",
    status_code=201,
    response_model=IssuedToken,
    responses=responses(400),
    tags=["access"],
    summary="Issue a token; its secret is in this answer only",
)
def create_token(
    body: TokenBody, ledger: LedgerDep, who: Principal = Caller(Op.TOKENS)
) -> Response:
    secret, record = ledger.issue_token(
        body.name, body.roles, by=who.name, kind=body.kind, expires=body.expires
    )
    return encoded(IssuedToken(token=secret, record=record), 201)


@router.get(
    "/tokens", response_model=list[TokenRecord], tags=["access"], summary="Tokens, without secrets"
)
def list_tokens(
    ledger: LedgerDep,
    name: Annotated[str | None, Query(max_length=128, pattern=NAME)] = None,
    who: Principal = Caller(Op.TOKENS),
) -> Response:
    return encoded(ledger.tokens(name))


@router.post(
    "/tokens/revoke",
    response_model=list[TokenRecord],
    responses=responses(400, 404, 409),
    tags=["access"],
    summary="Revoke a token by id or by its secret, or every active token of a principal",
)
def revoke_named_token(
    body: RevokeBody, ledger: LedgerDep, who: Principal = Caller(Op.TOKENS)
) -> Response:
    return encoded(ledger.revoke_token(body.ref, by=who.name, reason=body.reason))


def _ref_without_secret(ref: Annotated[str, Path(max_length=256)]) -> str:
    if hide_secrets(ref) != ref:
        raise InvalidInput(
            "a token's secret does not go in a URL, which proxies and logs keep: send it as"
            " `ref` in the body of POST /v1/tokens/revoke (and revoke it: take it as leaked)",
            field="ref",
        )
    return ref


@router.post(
    "/tokens/{ref}/revoke",
    response_model=list[TokenRecord],
    responses=responses(400, 404, 409),
    tags=["access"],
    summary="Revoke a token by id, or every active token of a principal by name",
)
def revoke_token(
    body: ReasonBody,
    ledger: LedgerDep,
    who: Principal = Caller(Op.TOKENS),
    ref: str = Depends(_ref_without_secret),  # judged before the body is
) -> Response:
    return revoke_named_token(RevokeBody(ref=ref, reason=body.reason), ledger, who)


@router.get(
    "/denials",
    response_model=list[Denial],
    responses=paged(400),
    tags=["access"],
    summary="Refused calls, newest first: who tried what, and why it was refused",
)
def denials(
    request: Request,
    ledger: LedgerDep,
    principal: Annotated[str | None, Query(max_length=128, pattern=NAME)] = None,
    since: WireTime | None = None,
    until: WireTime | None = None,
    limit: Limit = 100,
    before: Before = None,
    who: Principal = Caller(Op.DENIALS),
) -> Response:
    rows = ledger.denials(principal=principal, since=since, until=until, limit=limit, before=before)
    return listed(request, rows, limit)


@router.get(
    "/verify", response_model=VerifyReport, tags=["integrity"], summary="Recompute the chain"
)
def verify(ledger: LedgerDep, who: Principal = Caller(Op.INTEGRITY)) -> Response:
    return encoded(ledger.verify())


@router.post(
    "/rebuild",
    response_model=RebuildReport,
    tags=["integrity"],
    summary="Replay the journal into fresh projections; compare; optionally repair",
)
def rebuild(
    ledger: LedgerDep, body: RebuildBody | None = None, who: Principal = Caller(Op.INTEGRITY)
) -> Response:
    """With no body: compare only (`{"repair": false}`)."""
    return encoded(ledger.rebuild(repair=body is not None and body.repair))


@router.get(
    "/export",
    tags=["integrity"],
    summary="The journal as JSON lines (application/x-ndjson), one event per line",
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "events"}},
)
def export(ledger: LedgerDep, who: Principal = Caller(Op.EXPORT)) -> StreamingResponse:
    def lines() -> Iterator[bytes]:
        for ev in ledger.export():
            yield orjson.dumps(ev.to_json()) + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
