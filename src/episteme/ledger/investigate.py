"""The on-call questions (DESIGN §2): served, diff, blame, trace, impact.

Each function reads the projections through a `StoreReader`; none writes.
"""

from __future__ import annotations

import contextlib
from collections import Counter

from whenever import Instant

from episteme.errors import InvalidInput, NotFound
from episteme.ledger.model import (
    Assertion,
    article,
    check_limit,
    check_prefix,
    check_window,
)
from episteme.ledger.records import (
    COPY_THE_PLACE,
    Blame,
    ChangeCursor,
    CheckRecord,
    Diff,
    Impact,
    QueryRecord,
    Trace,
)
from episteme.ledger.store import StoreReader
from episteme.timeutil import to_us

_HEX = frozenset("0123456789abcdef")


CHECKS_BEFORE_US = 3_600_000_000
"""How far back a decision's trace looks for its agent's pre-flight checks: an hour."""
CHECKS_SHOWN = 20


def served(
    r: StoreReader, subject: str, until: int | None, limit: int, before: int | None = None
) -> list[QueryRecord]:
    """Audited reads that served something under `subject`, with only those items."""
    records = r.queries(subject=subject, until=until, limit=limit, before=before)
    below = subject + "."
    out = []
    for q in records:
        items = [i for i in q.returned if i.subject == subject or i.subject.startswith(below)]
        out.append(q.model_copy(update={"returned": items}))
    return out


def diff(
    r: StoreReader,
    prefix: str | None,
    since: Instant,
    until: Instant,
    limit: int | None,
    before: ChangeCursor | None = None,
) -> Diff:
    """The changes in [since, until] (those below `before` when given); with `limit`,
    the newest `limit` of them and where the older ones start, and the counts and total
    still of the whole window."""
    if prefix is not None:
        prefix = check_prefix(prefix, field="prefix")
    check_window(since, until)
    if limit is not None:
        check_limit(limit)
    start, end = to_us(since), to_us(until)
    if before is not None and not _a_change_at(r, before):
        # a made-up place (a seq or time off by one) would skip changes without a word
        raise InvalidInput(
            f"before {str(before)!r} names no change of this ledger: {COPY_THE_PLACE}",
            field="before",
        )
    # one more than a page says whether the page left any out
    changes = r.changes(prefix, start, end, None if limit is None else limit + 1, before)
    more = limit is not None and len(changes) > limit
    if more:
        del changes[0]  # journal order: the oldest first
    if before is None and not more:
        counts = dict(Counter(c.change for c in changes))
    else:  # there are changes that were not read: count them all
        counts = r.change_counts(prefix, start, end)
    return Diff(
        prefix=prefix,
        since=since,
        until=until,
        changes=changes,
        counts=counts,
        next=str(ChangeCursor.of(changes[0])) if more else None,
    )


def _a_change_at(r: StoreReader, place: ChangeCursor) -> bool:
    """Whether `place` is where a change of the ledger is: its assertion's version of
    that seq (the first or the second of that event), at that time."""
    return any(
        v.seq == place.seq
        and (v.prev_lifecycle is not None) == place.later
        and to_us(v.tx_from) == place.at
        for v in r.versions(place.assertion_id)
    )


def _looks_like_id(ref: str) -> bool:
    return len(ref) >= 4 and set(ref.lower()) <= _HEX


def blame(r: StoreReader, ref: str, superseded: bool = True) -> list[Blame]:
    targets: list[Assertion]
    if ref[:2] in ("q_", "d_", "x_", "c_"):
        raise InvalidInput(
            f"{ref} is not an assertion: blame takes a subject or an assertion id", field="id"
        )
    if _looks_like_id(ref):
        try:
            kind, full = r.resolve(ref)
            found = r.assertion(full) if kind == "assertion" else None
            targets = [found] if found is not None else []
        except NotFound:
            targets = [c.assertion() for c in r.candidates(check_prefix(ref)).rows]
    else:
        subject = check_prefix(ref)
        targets = [c.assertion() for c in r.candidates(subject).rows]
    if not targets:
        raise NotFound(f"no assertion with id or subject {ref!r}", field="ref")
    out = []
    for a in targets:
        epoch = r.epoch(a.epoch) if a.epoch else None
        out.append(
            Blame(
                assertion=a,
                history=r.versions(a.id, superseded=superseded),
                corrections=r.corrections_of(a.id),
                epoch=epoch,
                derived_from=r.assertions(list(a.derived_from)),
            )
        )
    return out


def trace(r: StoreReader, ref: str) -> Trace:
    try:
        kind, full = r.resolve(ref)
    except NotFound:
        if ref.strip()[1:2] == "_":
            raise
        kind, full = _decision_or_query(r, ref.strip())  # its hex without the letter
    decision = None
    checks: list[CheckRecord] | None = None
    if kind == "decision":
        decision = r.decision(full)
        assert decision is not None
        queries = r.query_records(decision.query_ids)
        at = to_us(decision.at)
        checks = r.checks(
            decision.agent, at - CHECKS_BEFORE_US, at, CHECKS_SHOWN, before=decision.seq
        )
    elif kind == "query":
        found = r.query_record(full)
        assert found is not None
        queries = [found]
    elif kind == "assertion":
        raise InvalidInput(
            f"trace follows a decision (d_…) or a query (q_…); {ref} is an assertion id: its"
            " history (blame) says where it came from, and its impact where it went",
            field="id",
        )
    else:
        raise InvalidInput(
            f"trace follows a decision (d_…) or a query (q_…); {ref} is {article(kind)} id",
            field="id",
        )
    ids: list[str] = []
    for q in queries:
        ids += [i.assertion_id for i in q.returned if i.assertion_id not in ids]
    assertions = r.assertions(ids)
    agents = ([decision.agent] if decision else []) + [q.agent for q in queries]
    agents += [a.agent for a in assertions]
    return Trace(
        root=full,
        root_kind=kind,
        decision=decision,
        queries=queries,
        assertions=assertions,
        agents=list(dict.fromkeys(agents)),
        sources=list(dict.fromkeys(a.source for a in assertions if a.source)),
        epochs=list(dict.fromkeys(a.epoch for a in assertions if a.epoch)),
        checks=checks,
    )


MAX_RECENT = 1000
"""The most queries that served an assertion its impact lists (the newest); it counts all."""


def impact(r: StoreReader, assertion_id: str, recent: int) -> Impact:
    found = r.assertion(assertion_id)
    if found is None:
        raise NotFound(f"no assertion with id {assertion_id!r}", field="id")
    total, agents, recent_ids = r.serving(assertion_id, recent)
    recent_queries = r.query_records(recent_ids)
    return Impact(
        assertion=found,
        queries=total,
        recent_queries=recent_queries,
        agents=agents,
        decisions=r.decisions_citing_assertion(assertion_id),
        derived=r.derived([assertion_id]),
    )


def _decision_or_query(r: StoreReader, bare: str) -> tuple[str, str]:
    for want in ("decision", "query"):
        with contextlib.suppress(NotFound):
            return r.resolve(bare, want=want)
    raise NotFound(
        f"no decision or query with id {bare!r}: trace follows a decision (d_…) or a query (q_…)",
        field="id",
    )
