"""`/v1` routes of what the ledger learns: constraints and checks, trust, conflicts,
notifications, the gardener's state and webhooks. Thin calls into `Ledger`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from episteme.ledger.access import Op, Principal
from episteme.ledger.constraints import MAX_TAGS, CheckResult
from episteme.ledger.gardener import Gardener, GardenerStatus
from episteme.ledger.learning import ConflictState, ConstraintState
from episteme.ledger.records import CheckRecord, NotificationRecord
from episteme.ledger.trust import TrustScore
from episteme.ledger.webhooks import Delivery, NotificationType, WebhookSpec, deliveries

from .deps import LedgerDep
from .ledger_routes import (
    Before,
    Caller,
    Limit,
    Ref,
    encoded,
    listed,
    page_after,
    page_before,
    paged,
)
from .problems import responses
from .schemas import (
    NAME,
    SUBJECT,
    CheckBody,
    ConstraintBody,
    ReasonBody,
    Tag,
    WebhookBody,
    WireTime,
)

router = APIRouter(prefix="/v1", responses=responses(401, 403, 422, 503))


# -- constraints and pre-flight checks ---------------------------------------------------


@router.post(
    "/constraints",
    status_code=201,
    response_model=ConstraintState,
    responses=responses(400),
    tags=["constraints"],
    summary="Record a negative constraint (supervisor)",
)
def add_constraint(
    body: ConstraintBody, ledger: LedgerDep, who: Principal = Caller(Op.CONSTRAIN)
) -> Response:
    made = ledger.add_constraint(by=who.name, **body.model_dump())
    return encoded(made, 201)


@router.get(
    "/constraints",
    response_model=list[ConstraintState],
    responses=responses(400),
    tags=["constraints"],
    summary="Constraints with their strength now (on a subject, of tags, or all)",
)
def list_constraints(
    ledger: LedgerDep,
    scope: Annotated[str | None, Query(max_length=255, pattern=SUBJECT)] = None,
    tag: Annotated[
        list[Tag] | None,
        Query(max_length=MAX_TAGS, description="a tag (repeatable): constraints of these tags"),
    ] = None,
    retired: Annotated[bool, Query(description="the retired ones too")] = False,
    who: Principal = Caller(Op.READ),
) -> Response:
    return encoded(ledger.constraints(scope, tag or [], retired=retired))


@router.get(
    "/constraints/{ref}",
    response_model=ConstraintState,
    responses=responses(404),
    tags=["constraints"],
    summary="One constraint by id or unique prefix",
)
def get_constraint(ref: Ref, ledger: LedgerDep, who: Principal = Caller(Op.READ)) -> Response:
    return encoded(ledger.constraint(ref))


@router.post(
    "/constraints/{ref}/retire",
    response_model=ConstraintState,
    responses=responses(400, 404, 409),
    tags=["constraints"],
    summary="Retire a constraint: kept in the record, it answers no check (supervisor)",
)
def retire_constraint(
    ref: Ref, body: ReasonBody, ledger: LedgerDep, who: Principal = Caller(Op.CONSTRAIN)
) -> Response:
    return encoded(ledger.retire_constraint(ref, by=who.name, reason=body.reason))


def _check(body: CheckBody, ledger: LedgerDep, who: Principal) -> Response:
    scope = [*body.scope, *(s for s in body.subjects if s not in body.scope)]
    result = ledger.check(
        body.plan, scope, agent=who.name, items=body.items, context=body.context, tags=body.tags
    )
    return encoded(result)


@router.post(
    "/constraints/check",
    response_model=CheckResult,
    responses=responses(400),
    tags=["constraints"],
    summary="Pre-flight, audited: the constraints a plan would violate",
)
def check(body: CheckBody, ledger: LedgerDep, who: Principal = Caller(Op.CHECK)) -> Response:
    return _check(body, ledger, who)


@router.post(
    "/check",
    response_model=CheckResult,
    responses=responses(400),
    tags=["constraints"],
    summary="The same as POST /v1/constraints/check (older path)",
)
def check_alias(body: CheckBody, ledger: LedgerDep, who: Principal = Caller(Op.CHECK)) -> Response:
    return _check(body, ledger, who)


@router.get(
    "/checks",
    response_model=list[CheckRecord],
    responses=paged(400),
    tags=["constraints"],
    summary="Audited pre-flight checks by agent and window, newest first",
)
def checks(
    request: Request,
    ledger: LedgerDep,
    agent: Annotated[str | None, Query(max_length=128, pattern=NAME)] = None,
    since: WireTime | None = None,
    until: WireTime | None = None,
    limit: Limit = 100,
    before: Before = None,
    who: Principal = Caller(Op.READ),
) -> Response:
    rows = ledger.checks(agent=agent, since=since, until=until, limit=limit, before=before)
    return listed(request, rows, limit)


# -- trust, conflicts, notifications, the gardener -----------------------------------------


@router.get(
    "/trust",
    response_model=list[TrustScore],
    responses=responses(400),
    tags=["trust"],
    summary="Trust per agent and topic at a time, with the evidence that moved it",
)
def trust(
    ledger: LedgerDep,
    agent: Annotated[str | None, Query(max_length=128, pattern=NAME)] = None,
    topic: Annotated[str | None, Query(max_length=255, pattern=SUBJECT)] = None,
    at: WireTime | None = None,
    who: Principal = Caller(Op.READ),
) -> Response:
    return encoded(ledger.trust_scores(agent=agent, topic=topic, at=at))


@router.get(
    "/conflicts",
    response_model=list[ConflictState],
    tags=["trust"],
    summary="Subjects with two approved values at once (open ones, or all)",
)
def conflicts(
    ledger: LedgerDep,
    include_resolved: Annotated[bool, Query(alias="all")] = False,
    who: Principal = Caller(Op.READ),
) -> Response:
    return encoded(ledger.conflicts(include_resolved=include_resolved))


@router.get(
    "/notifications",
    response_model=list[NotificationRecord],
    responses=paged(400),
    tags=["trust"],
    summary="What was raised: corrections, conflicts, trust drops, expiries, approvals",
)
def notifications(
    request: Request,
    ledger: LedgerDep,
    type: NotificationType | None = None,
    since: WireTime | None = None,
    until: WireTime | None = None,
    limit: Limit = 100,
    after: Annotated[
        str | None,
        page_after(
            "the notifications that follow the one with this `key` (the last of the page"
            " before). Unlike `until`, it gets past any number of notifications that share"
            " one time"
        ),
    ] = None,
    who: Principal = Caller(Op.READ),
) -> Response:
    rows = ledger.notifications(type=type, since=since, until=until, limit=limit, after=after)
    return listed(request, rows, limit, "after", "key")


@router.get(
    "/gardener",
    response_model=GardenerStatus,
    tags=["trust"],
    summary="The gardener's cursor in the journal, and its lag",
)
def gardener(ledger: LedgerDep, who: Principal = Caller(Op.READ)) -> Response:
    return encoded(Gardener(ledger).status())


# -- webhooks ---------------------------------------------------------------------------


@router.get(
    "/webhooks",
    response_model=list[WebhookSpec],
    tags=["webhooks"],
    summary="Webhooks notifications go to (admin)",
)
def webhooks(ledger: LedgerDep, who: Principal = Caller(Op.WEBHOOKS)) -> Response:
    return encoded(list(ledger.webhooks().values()))


@router.put(
    "/webhooks/{name}",
    response_model=WebhookSpec,
    responses=responses(400),
    tags=["webhooks"],
    summary="Add or replace a webhook (admin); secrets only as env:VAR references",
)
def set_webhook(
    name: Annotated[str, Path(max_length=128, pattern=NAME)],
    body: WebhookBody,
    ledger: LedgerDep,
    who: Principal = Caller(Op.WEBHOOKS),
) -> Response:
    spec = WebhookSpec.model_validate({**body.model_dump(exclude_unset=True), "name": name})
    return encoded(ledger.set_webhook(spec, by=who.name))


@router.delete(
    "/webhooks/{name}",
    status_code=204,
    responses=responses(404),
    tags=["webhooks"],
    summary="Remove a webhook (admin)",
)
def remove_webhook(
    name: Annotated[str, Path(max_length=128, pattern=NAME)],
    ledger: LedgerDep,
    who: Principal = Caller(Op.WEBHOOKS),
) -> Response:
    ledger.remove_webhook(name, by=who.name)
    return Response(status_code=204)


@router.get(
    "/webhooks/deliveries",
    response_model=list[Delivery],
    responses=paged(),
    tags=["webhooks"],
    summary="Deliveries, newest first: state, attempts, last error, next try (admin)",
)
def webhook_deliveries(
    request: Request,
    ledger: LedgerDep,
    limit: Limit = 100,
    before: Annotated[
        int | None,
        page_before(
            "the deliveries queued before this one (the `job_id` of the last of the page before)"
        ),
    ] = None,
    who: Principal = Caller(Op.WEBHOOKS),
) -> Response:
    return listed(request, deliveries(ledger.store, limit, before=before), limit, field="job_id")
