"""`/v1` routes of the ledger: one per CLI command, each a thin call into `Ledger`.

Routes are plain functions (FastAPI runs them on its thread pool, where SQLite
calls belong); they return a `Response` already encoded, with `response_model`
only documenting it, so nothing is validated twice on the way out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from episteme.ledger.access import Op, Principal
from episteme.ledger.core import Ledger
from episteme.ledger.investigate import MAX_RECENT
from episteme.ledger.lenses import LensSpec
from episteme.ledger.model import (
    MAX_KEY,
    MAX_SEQ,
    MAX_SUBJECT,
    Answer,
    Assertion,
    AssertionInput,
    dump,
    parse_assertion,
)
from episteme.ledger.records import (
    Blame,
    Correction,
    DecisionRecord,
    Diff,
    EpochRecord,
    Impact,
    QueryRecord,
    Trace,
)
from episteme.timeutil import rfc3339

from .deps import LedgerDep, MetricsDep, allow
from .metrics import Metrics
from .problems import responses
from .schemas import (
    NAME,
    PREFIX,
    AssertionBody,
    BatchBody,
    CorrectBody,
    DecisionBody,
    QueryBody,
    ReasonBody,
    ReviewBody,
    WireTime,
)

router = APIRouter(prefix="/v1", responses=responses(401, 403, 422, 503))
Ref = Annotated[str, Path(description="an id or a unique prefix of one", max_length=128)]
SubjectOrRef = Annotated[
    str,
    Path(
        description="a subject (every assertion on it), or an assertion's id or a unique"
        " prefix of one",
        max_length=MAX_SUBJECT,
    ),
]
Limit = Annotated[int, Query(ge=1, le=1000)]


def page_before(what: str) -> Any:
    """The query parameter `before` of a list: the next page is `what`."""
    return Query(ge=1, le=MAX_SEQ, description=f"The next page: {what}.")


def page_after(what: str) -> Any:
    """The query parameter `after` of a list: the next page is `what`."""
    return Query(min_length=1, max_length=MAX_KEY, description=f"The next page: {what}.")


Before = Annotated[
    int | None,
    page_before(
        "the items recorded before this journal position (the `seq` of the last item of the"
        " page before). Unlike `until`, it gets past any number of items that share one time"
    ),
]


def Caller(op: Op) -> Any:  # a capital: it reads as a type in signatures
    return Depends(allow(op))


def encoded(data: BaseModel | list[Any] | dict[str, Any], status: int = 200) -> Response:
    body = data.model_dump_json() if isinstance(data, BaseModel) else orjson.dumps(dump(data))
    return Response(body, status, media_type="application/json")


def paged(
    *statuses: int, what: str = "A page of the list, newest first"
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses of a list: a page (`what`), with the `Link` to the next
    (`listed`), and the problems `statuses`."""
    link = {
        "description": (
            'On a full page, the next page: `<?QUERY>; rel="next"` (RFC 8288), this'
            " request's query with its cursor set to the last item's, relative to this"
            " request's address. Absent on the last page."
        ),
        "schema": {"type": "string"},
        "example": '<?agent=deploy-agent&limit=100&before=48213>; rel="next"',
    }
    page = {"description": what, "headers": {"Link": link}}
    return {200: page} | responses(*statuses)


def listed(
    request: Request, rows: Sequence[Any], limit: int, cursor: str = "before", field: str = "seq"
) -> Response:
    """A page of a list. A full one links to the next (`Link: <?…>; rel="next"`, RFC
    8288): this request's query with `cursor` set to the last item's `field`, as a
    reference relative to the request's own address, which a proxy that strips a
    prefix from the path leaves right."""
    response = encoded(list(rows))
    if rows and len(rows) == limit:
        url = request.url.include_query_params(**{cursor: getattr(rows[-1], field)})
        response.headers["Link"] = f'<?{url.query}>; rel="next"'
    return response


def _input(body: AssertionBody, who: Principal, n: int | None = None) -> AssertionInput:
    where = "assertion" if n is None else f"assertion {n}"
    return parse_assertion(body.model_dump(exclude_unset=True) | {"agent": who.name}, where=where)


# -- assertions ------------------------------------------------------------------------


@router.post(
    "/assertions",
    status_code=201,
    response_model=Assertion,
    responses=responses(400, 404, 409),
    tags=["assertions"],
    summary="Record one assertion (as the token's principal; approved needs supervisor)",
)
def add_assertion(
    body: AssertionBody, ledger: LedgerDep, who: Principal = Caller(Op.ASSERT)
) -> Response:
    return encoded(_add(ledger, who, [_input(body, who)], "POST /v1/assertions")[0], 201)


@router.post(
    "/assertions/batch",
    status_code=201,
    response_model=list[Assertion],
    responses=responses(400, 404, 409),
    tags=["assertions"],
    summary="Record a batch of assertions: all of them, or on any error none",
)
def add_batch(body: BatchBody, ledger: LedgerDep, who: Principal = Caller(Op.ASSERT)) -> Response:
    inputs = [_input(a, who, n) for n, a in enumerate(body.assertions, 1)]
    return encoded(_add(ledger, who, inputs, "POST /v1/assertions/batch"), 201)


def _add(
    ledger: Ledger, who: Principal, inputs: list[AssertionInput], target: str
) -> list[Assertion]:
    # a refusal (approved needs supervisor) is recorded by the ledger, and so counted
    return ledger.add(inputs, actor=who.name, principal=who, target=target)


@router.get(
    "/assertions/{ref}",
    response_model=Assertion,
    responses=responses(400, 404),
    tags=["assertions"],
    summary="An assertion in its current state",
)
def get_assertion(ref: Ref, ledger: LedgerDep, who: Principal = Caller(Op.READ)) -> Response:
    return encoded(ledger.get(ref))


def _review(action: str, doc: str) -> None:
    @router.post(
        f"/assertions/{{ref}}/{action}",
        response_model=Assertion,
        responses=responses(400, 404, 409),
        tags=["lifecycle"],
        summary=doc,
        name=f"{action}_assertion",
    )
    def review(
        ref: Ref,
        ledger: LedgerDep,
        body: ReviewBody | None = None,
        who: Principal = Caller(Op.REVIEW),
    ) -> Response:
        move = getattr(ledger, action)
        return encoded(move(ref, by=who.name, reason=body.reason if body else None))


_review("approve", "Approve a proposed assertion (supersedes the subject's approved value)")
_review("deprecate", "Deprecate an approved assertion")
_review("reject", "Reject a proposed assertion (use correct for an approved one)")


@router.post(
    "/assertions/{ref}/correct",
    response_model=Correction,
    responses=responses(400, 404, 409),
    tags=["lifecycle"],
    summary="Mark an assertion incorrect now; optionally the right value and a constraint",
)
def correct(
    ref: Ref,
    body: CorrectBody,
    ledger: LedgerDep,
    metrics: MetricsDep,
    who: Principal = Caller(Op.CORRECT),
) -> Response:
    extra: dict[str, Any] = {"value": body.value} if "value" in body.model_fields_set else {}
    done = ledger.correct(ref, by=who.name, reason=body.reason, forbid=body.forbid, **extra)
    metrics.corrections.inc()
    return encoded(done)


# -- reading ---------------------------------------------------------------------------


@router.post(
    "/query",
    response_model=Answer,
    responses=responses(400, 404),
    tags=["reading"],
    summary="Read through a lens, audited: the answer carries its query_id receipt",
)
def query(
    body: QueryBody, ledger: LedgerDep, metrics: MetricsDep, who: Principal = Caller(Op.QUERY)
) -> Response:
    return run_query(ledger, metrics, body, who)


def run_query(ledger: Ledger, metrics: Metrics, body: QueryBody, who: Principal) -> Response:
    """The audited query, as the route and its framework-free path (`fastpath`) answer it."""
    ans = ledger.query(
        body.subject, agent=who.name, lens=body.lens, at=body.at, text=body.text,
        context=body.context,
    )  # fmt: skip
    metrics.answered(ans)
    return encoded(ans)


@router.post(
    "/decisions",
    status_code=201,
    response_model=DecisionRecord,
    responses=responses(400, 404),
    tags=["decisions"],
    summary="Record an action and the query ids it relied on",
)
def decide(body: DecisionBody, ledger: LedgerDep, who: Principal = Caller(Op.DECIDE)) -> Response:
    done = ledger.decide(
        body.action, agent=who.name, query_ids=body.query_ids, context=body.context
    )
    return encoded(done, 201)


@router.get(
    "/decisions",
    response_model=list[DecisionRecord],
    responses=paged(400),
    tags=["decisions"],
    summary="Recorded decisions by agent and window, newest first",
)
def decisions(
    request: Request,
    ledger: LedgerDep,
    agent: Annotated[str | None, Query(max_length=128, pattern=NAME)] = None,
    since: WireTime | None = None,
    until: WireTime | None = None,
    limit: Limit = 100,
    before: Before = None,
    who: Principal = Caller(Op.READ),
) -> Response:
    rows = ledger.decisions(agent=agent, since=since, until=until, limit=limit, before=before)
    return listed(request, rows, limit)


# -- investigation ---------------------------------------------------------------------


@router.get(
    "/served",
    response_model=list[QueryRecord],
    responses=paged(400),
    tags=["investigation"],
    summary="What agents were actually served about a subject, up to a time",
)
def served(
    request: Request,
    ledger: LedgerDep,
    subject: Annotated[str, Query(max_length=257, pattern=PREFIX)],
    at: WireTime | None = None,
    limit: Limit = 100,
    before: Before = None,
    who: Principal = Caller(Op.READ),
) -> Response:
    return listed(request, ledger.served(subject, at=at, limit=limit, before=before), limit)


@router.get(
    "/audit",
    response_model=list[QueryRecord],
    responses=paged(400),
    tags=["investigation"],
    summary="Audited reads by agent, subject and window, newest first",
)
def audit(
    request: Request,
    ledger: LedgerDep,
    agent: Annotated[str | None, Query(max_length=128, pattern=NAME)] = None,
    subject: Annotated[str | None, Query(max_length=257, pattern=PREFIX)] = None,
    since: WireTime | None = None,
    until: WireTime | None = None,
    limit: Limit = 100,
    before: Before = None,
    who: Principal = Caller(Op.READ),
) -> Response:
    rows = ledger.audit(
        agent=agent, subject=subject, since=since, until=until, limit=limit, before=before
    )
    return listed(request, rows, limit)


@router.get(
    "/diff",
    response_model=Diff,
    responses=paged(400, what="The changes, oldest first, and the counts of the whole window"),
    tags=["investigation"],
    summary="What changed under a prefix between two times",
)
def diff(
    request: Request,
    ledger: LedgerDep,
    since: WireTime,
    prefix: Annotated[str | None, Query(max_length=257, pattern=PREFIX)] = None,
    until: WireTime | None = None,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=100_000,
            description="The newest this many changes; `counts` and `total` are of them all.",
        ),
    ] = 1000,
    before: Annotated[
        str | None,
        Query(
            description=(
                "The next page: the changes below this place, the `next` of the page"
                " before (give that page's `since` and `until` too, so that the window"
                " stays the same); anything else is refused (400)."
            ),
        ),
    ] = None,
    who: Principal = Caller(Op.READ),
) -> Response:
    d = ledger.diff(prefix, since=since, until=until, limit=limit, before=before)
    response = encoded(d)
    if d.next is not None:  # as a list's: the window as this page resolved it
        window = {"since": rfc3339(d.since), "until": rfc3339(d.until), "before": d.next}
        url = request.url.include_query_params(**window)
        response.headers["Link"] = f'<?{url.query}>; rel="next"'
    return response


@router.get(
    "/blame/{ref}",
    response_model=list[Blame],
    responses=responses(400, 404),
    tags=["investigation"],
    summary="Who introduced an assertion (by id) or each assertion on a subject",
)
def blame(ref: SubjectOrRef, ledger: LedgerDep, who: Principal = Caller(Op.READ)) -> Response:
    return encoded(ledger.blame(ref))


@router.get(
    "/trace/{ref}",
    response_model=Trace,
    responses=responses(400, 404),
    tags=["investigation"],
    summary="Decision or query → queries → assertions → agents, sources, epochs",
)
def trace(ref: Ref, ledger: LedgerDep, who: Principal = Caller(Op.READ)) -> Response:
    return encoded(ledger.trace(ref))


@router.get(
    "/impact/{ref}",
    response_model=Impact,
    responses=responses(400, 404),
    tags=["investigation"],
    summary="Assertion → queries that served it, agents, decisions, derived assertions",
)
def impact(
    ref: Ref,
    ledger: LedgerDep,
    recent: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_RECENT,
            description="How many of the newest queries that served it to list (all are counted).",
        ),
    ] = 20,
    who: Principal = Caller(Op.READ),
) -> Response:
    return encoded(ledger.impact(ref, recent=recent))


# -- epochs and lenses -----------------------------------------------------------------


class EpochView(BaseModel):
    epoch: EpochRecord
    assertions: list[Assertion]


class Superseded(BaseModel):
    epoch: str
    retracted: list[str]


@router.get(
    "/epochs/{name}",
    response_model=EpochView,
    responses=responses(404),
    tags=["epochs"],
    summary="An ingestion batch and what it brought",
)
def epoch(
    name: Annotated[str, Path(max_length=128)], ledger: LedgerDep, who: Principal = Caller(Op.READ)
) -> Response:
    record = ledger.epoch(name)
    return encoded(EpochView(epoch=record, assertions=ledger.store.epoch_members(name)))


@router.post(
    "/epochs/{name}/supersede",
    response_model=Superseded,
    responses=responses(400, 404, 409),
    tags=["epochs"],
    summary="Retract everything an epoch brought, in one event",
)
def supersede(
    name: Annotated[str, Path(max_length=128)],
    body: ReasonBody,
    ledger: LedgerDep,
    who: Principal = Caller(Op.SUPERSEDE),
) -> Response:
    ids = ledger.supersede_epoch(name, by=who.name, reason=body.reason)
    return encoded(Superseded(epoch=name, retracted=ids))


@router.get(
    "/lenses",
    response_model=dict[str, LensSpec],
    tags=["lenses"],
    summary="Built-in and custom lenses",
)
def lenses(ledger: LedgerDep, who: Principal = Caller(Op.READ)) -> Response:
    return encoded(ledger.lenses())


@router.put(
    "/lenses/{name}",
    response_model=LensSpec,
    responses=responses(400, 409),
    tags=["lenses"],
    summary="Define (or redefine) a custom lens",
)
def define_lens(
    name: Annotated[str, Path(max_length=128)],
    spec: LensSpec,
    ledger: LedgerDep,
    who: Principal = Caller(Op.DEFINE_LENS),
) -> Response:
    return encoded(ledger.define_lens(name, spec, by=who.name))
