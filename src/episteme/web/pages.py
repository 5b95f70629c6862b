"""Console pages over the ledger: the overview, a subject in time, diff, blame, agents and
negative constraints.

Each page is a thin skin like an API route: it parses what the person typed (times in
any form `episteme.timeutil.parse_time` reads), calls `Ledger` methods, and renders the
result. Reads here use `Ledger.answer`, which is not audited: looking at the ledger
from the console is investigation, not an agent acting on an answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response
from whenever import Instant, TimeDelta

from episteme.errors import InvalidInput, NotFound
from episteme.ledger.access import Op
from episteme.ledger.core import Ledger
from episteme.ledger.model import Assertion, check_prefix
from episteme.ledger.records import Version
from episteme.text import quoted
from episteme.timeutil import parse_time

from .graph import Chart, line_chart
from .render import PageRoute, page, redirect, short
from .session import Allowed, Console, Reader

LENSES = ("approved", "latest", "consensus", "all")
RECENT = 50
SCANNED = 200
"""The overview's reads and checks looked through for those that hid or were stopped."""
NOTES = 20
"""The correction notes the overview lists."""
MOVES_SHOWN = 10
"""The newest trust moves an agent's page lists, of all its topics."""
HISTORY = 200
"""The newest moves of a subject's history its page lists (`blame` lists every one)."""
DIFF_WINDOW = TimeDelta(hours=24)
AGENT_WINDOW = TimeDelta(hours=24 * 7)
DIFF_ROWS = 500
"""The newest changes a page lists (a busy day has a hundred thousand)."""
TRUST_DAYS = 30
READS = 100
"""The audited reads an agent's page lists; a full page links to the next."""
_HEX = re.compile(r"^[0-9a-f]{4,64}$")
_SESSION = re.compile(r"s_[0-9a-f]{24}")

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _moment(text: str, now: Instant) -> Instant | None:
    return parse_time(text, now) if text.strip() else None


def _overview(ledger: Ledger, now: Instant) -> dict[str, Any]:
    since = now.subtract(hours=24)
    diff = ledger.diff(None, since=since, until=now, limit=RECENT)
    reads = ledger.audit(since=since, until=now, limit=SCANNED)
    hiding = [q for q in reads if q.hidden.count]
    checks = ledger.checks(since=since, until=now, limit=SCANNED)
    stopped = [c for c in checks if c.outcome == "violated"]
    notes = ledger.notifications(type="correction", since=since, limit=NOTES)
    noted = {n.data.get("assertion_id") for n in notes}
    return {
        "now": now,
        "changes": list(reversed(diff.changes)),
        "counts": diff.counts,
        "total": diff.total,
        "notes": notes,
        # corrections the gardener has not yet turned into notes: those among the newest
        # changes listed, shown before the notes
        "pending": [
            c
            for c in reversed(diff.changes)
            if c.change == "corrected" and c.assertion_id not in noted
        ],
        # every correction of the window, from the diff's counts (the notes are a page)
        "corrections": diff.counts.get("corrected", 0),
        "conflicts": ledger.conflicts(),
        "hiding": hiding[:RECENT],
        # more than shown: past the card's length, or among reads older than those scanned
        "hiding_more": len(hiding) > RECENT or len(reads) == SCANNED,
        "stopped": stopped[:RECENT],
        "stopped_more": len(stopped) > RECENT or len(checks) == SCANNED,
        "scanned": SCANNED,
    }


@router.get("/")
async def overview(who: Reader) -> Response:
    ledger = who.ledger
    data = await anyio.to_thread.run_sync(_overview, ledger, ledger.clock.now())
    sessions = await who.engine.sessions(limit=100)
    waiting = [s for s in sessions if s.status == "waiting_for_approval"]
    return page(who.request, "overview.html", waiting=waiting, **data)


@router.get("/find")
def find(who: Reader, q: str = "") -> Response:
    """Jump to what was typed: a trace for q_/d_ ids, a session, an assertion or a subject."""
    ref = q.strip()
    if not ref:
        return redirect("/")
    safe = quote(ref, safe="")
    if ref.startswith(("q_", "d_")):
        return redirect(f"/trace/{safe}")
    if _SESSION.fullmatch(ref):
        return redirect(f"/diagnosis/{safe}")
    if _HEX.fullmatch(ref):
        return redirect(f"/blame/{safe}")
    try:  # a subject: one the page can be asked for (a / would leave its path)
        check_prefix(ref, field="q")
    except InvalidInput:
        raise InvalidInput(
            f"{quoted(ref)} is neither a subject (dotted words: auth.jwt.algorithm) nor an id"
            " (4 or more hex digits, q_…, d_…, or a session's s_ and 24 hex digits)",
            field="q",
        ) from None
    return redirect(f"/subjects/{safe}")


@dataclass(frozen=True)
class Moment:
    """One entry of a subject's history: an assertion entering a lifecycle."""

    version: Version
    assertion: Assertion
    later: bool
    """After the time the page shows."""


def _timeline(ledger: Ledger, subject: str, moment: Instant | None) -> tuple[list[Moment], int]:
    """The newest `HISTORY` moves of the subject and those under it, and how many
    there are in all."""
    try:
        blamed = ledger.blame(subject, superseded=False)  # each move is shown on its own
    except NotFound:
        return [], 0
    out = [
        Moment(v, b.assertion, moment is not None and v.tx_from > moment)
        for b in blamed
        for v in b.history
    ]
    out.sort(key=lambda m: m.version.seq)
    return out[-HISTORY:], len(out)


@router.get("/subjects")
def subjects(who: Reader, subject: str = "") -> Response:
    name = subject.strip()
    if not name:
        return redirect("/")
    check_prefix(name, field="subject")  # a / would leave the page's path: no route
    return redirect(f"/subjects/{quote(name, safe='')}")


@router.get("/subjects/{subject}")
def subject_page(
    subject: str, who: Reader, at: str = "", served_before: int | None = None
) -> Response:
    ledger = who.ledger
    time_error = None
    try:
        moment = _moment(at, ledger.clock.now())
    except InvalidInput as exc:
        moment, time_error = None, exc.message
    answers = [ledger.answer(subject, lens=lens, at=moment) for lens in LENSES]
    name = answers[0].subject or subject
    served = ledger.served(name, at=moment, limit=RECENT, before=served_before)
    timeline, moves = _timeline(ledger, name, moment)
    return page(
        who.request,
        "subject.html",
        400 if time_error else 200,
        subject=name,
        at=at,
        moment=moment,
        time_error=time_error,
        answers=answers,
        served=served,
        # a full page of reads links to the reads before its last (`at` as typed: the
        # position bounds the page, so a moment read again later loses none)
        older_served=(
            "?" + urlencode({"at": at, "served_before": served[-1].seq})
            if len(served) == RECENT
            else None
        ),
        served_paged=served_before is not None,
        timeline=timeline,
        moves=moves,
    )


@router.get("/diff")
def diff_page(
    who: Reader,
    request: Request,
    prefix: str = "",
    since: str = "",
    until: str = "",
    before: str | None = None,
) -> Response:
    ledger = who.ledger
    now = ledger.clock.now()
    error = None
    try:
        start, end = _window(since, until, now, DIFF_WINDOW)
        result = ledger.diff(
            prefix.strip() or None, since=start, until=end, limit=DIFF_ROWS, before=before
        )
    except InvalidInput as exc:  # what was typed stays in the form, over the default window
        error, before = exc.message, None
        start, end = now - DIFF_WINDOW, now
        result = ledger.diff(_prefix_or_none(prefix), since=start, until=end, limit=DIFF_ROWS)
    window = {"prefix": result.prefix or "", "since": start.format_iso(), "until": end.format_iso()}
    return page(
        request,
        "diff.html",
        400 if error else 200,
        diff=result,
        changes=list(reversed(result.changes)),
        form={"prefix": prefix, "since": since, "until": until},
        error=error,
        # the window as resolved now, as the agent page's older pages: "24h" read again
        # at the click would move it
        older=None if result.next is None else "?" + urlencode(window | {"before": result.next}),
        paged=before is not None,
    )


def _prefix_or_none(prefix: str) -> str | None:
    """The prefix typed, when it is one (a bad time keeps a good prefix)."""
    try:
        return check_prefix(prefix.strip()) if prefix.strip() else None
    except InvalidInput:
        return None


def _window(since: str, until: str, now: Instant, default: TimeDelta) -> tuple[Instant, Instant]:
    """A page's window as typed: `until` (now when empty), and `since`, or `default`
    before the end when empty ("To: yesterday 21:00" alone is the day before it)."""
    end = _moment(until, now) or now
    start = parse_time(since, now) if since.strip() else end - default
    return start, end


@router.get("/constraints")
def constraints_page(
    who: Reader, scope: str = "", tag: str = "", retired: bool = False
) -> Response:
    """Negative constraints, newest first: all, or those on a subject or of a tag; the
    retired ones too when asked."""
    tag = tag.strip().removeprefix("#")  # as the table shows tags
    tags = [tag] if tag else []
    found = who.ledger.constraints(scope.strip() or None, tags, retired=retired)
    return page(
        who.request,
        "constraints.html",
        constraints=list(reversed(found)),
        form={"scope": scope, "tag": tag, "retired": retired},
    )


@router.post("/constraints/{ref}/retire")
def constraint_retire(ref: str, who: Console = Allowed(Op.CONSTRAIN, form=True)) -> Response:
    done = who.ledger.retire_constraint(ref, by=who.principal.name, reason=who.field("reason"))
    return redirect(f"/constraints?retired=1#{done.constraint.id}")


_CONSTRAINT_FIELDS = (
    "scope",
    "tags",
    "forbid",
    "patterns",
    "items",
    "prefer",
    "reason",
    "half_life",
)


def _lines(text: str) -> list[str]:
    """A text area's values, one a line, as typed (a pattern may hold commas, and spaces
    at its ends); blank lines left out."""
    return [line for line in text.splitlines() if line.strip()]


@router.get("/constraints/new")
def constraint_form(who: Console = Allowed(Op.CONSTRAIN)) -> Response:
    return page(who.request, "constraint_new.html", form={"half_life": "30"}, error=None)


@router.post("/constraints/new")
def constraint_add(who: Console = Allowed(Op.CONSTRAIN, form=True)) -> Response:
    form = {k: who.field(k) for k in _CONSTRAINT_FIELDS}
    try:
        try:
            half_life = float(form["half_life"] or "30")
        except ValueError:
            raise InvalidInput(
                f"the half-life is a number of days, not {quoted(form['half_life'])}",
                field="half_life",
            ) from None
        made = who.ledger.add_constraint(
            scope=form["scope"].strip() or None,
            tags=[t for t in re.split(r"[\s,]+", form["tags"]) if t],
            forbid=_lines(form["forbid"]),
            patterns=_lines(form["patterns"]),
            items=_lines(form["items"]),
            prefer=form["prefer"].strip() or None,
            reason=form["reason"],
            half_life_days=half_life,
            by=who.principal.name,
        )
    except InvalidInput as exc:
        return page(who.request, "constraint_new.html", 400, form=form, error=exc.message)
    return redirect(f"/constraints#{made.constraint.id}")


@router.get("/blame/{ref}")
def blame_page(ref: str, who: Reader, corrected: str = "") -> Response:
    blames = who.ledger.blame(ref)
    # the note after a correction names one of these assertions' corrections, as recorded:
    # any link could otherwise make the page announce one
    correction = next((c for b in blames for c in b.corrections if c.id == corrected), None)
    return page(
        who.request,
        "blame.html",
        ref=ref,
        # a subject in full; an id cut to what a person compares
        title=short(ref) if _HEX.match(ref.lower()) else ref,
        blames=blames,
        correction=correction,
    )


def _trust_chart(ledger: Ledger, agent: str, now: Instant) -> Chart | None:
    """The agent's score per topic once a day for `TRUST_DAYS` days, up to now."""
    times = [now.subtract(hours=24 * d) for d in range(TRUST_DAYS, -1, -1)]
    daily = [{s.topic: s.score for s in ledger.trust_scores(agent=agent, at=t)} for t in times]
    topics = sorted({topic for day in daily for topic in day})
    if not topics:
        return None
    series = {topic: [day.get(topic, 0.5) for day in daily] for topic in topics}
    labels = [t.format_iso()[5:10] for t in times]
    return line_chart(series, labels)


def older(
    rows: list[Any], cursor: str, start: Instant, end: Instant, full: int = READS
) -> str | None:
    """The query of the page after a full one (`full` rows: there may be more), which
    starts below its last item: the window as resolved now ("7d" read again at the click
    would move its start), and `cursor` set to the last item's seq."""
    if len(rows) < full:
        return None
    window = {"since": start.format_iso(), "until": end.format_iso()}
    return "?" + urlencode(window | {cursor: rows[-1].seq})


def _agent_lists(
    ledger: Ledger,
    name: str,
    start: Instant,
    end: Instant,
    cursors: tuple[int | None, int | None, int | None],
) -> tuple[list[Any], list[Any], list[Any]]:
    """The agent's reads, decisions and checks in the window, each below its cursor."""
    before, decisions_before, checks_before = cursors
    return (
        ledger.audit(agent=name, since=start, until=end, limit=READS, before=before),
        ledger.decisions(agent=name, since=start, until=end, limit=READS, before=decisions_before),
        ledger.checks(agent=name, since=start, until=end, limit=READS, before=checks_before),
    )


@router.get("/agents/{name}")
def agent_page(
    name: str,
    who: Reader,
    since: str = "",
    until: str = "",
    before: int | None = None,
    decisions_before: int | None = None,
    checks_before: int | None = None,
) -> Response:
    ledger = who.ledger
    now = ledger.clock.now()
    cursors = (before, decisions_before, checks_before)
    error = None
    try:
        start, end = _window(since, until, now, AGENT_WINDOW)
        queries, decisions, checks = _agent_lists(ledger, name, start, end, cursors)
    except InvalidInput as exc:  # what was typed stays in the form, over the default window
        error, cursors = exc.message, (None, None, None)
        start, end = now - AGENT_WINDOW, now
        queries, decisions, checks = _agent_lists(ledger, name, start, end, cursors)
    scores = ledger.trust_scores(agent=name)
    moves = sorted(
        ((s.topic, mv) for s in scores for mv in s.moves), key=lambda m: m[1].seq, reverse=True
    )
    return page(
        who.request,
        "agent.html",
        400 if error else 200,
        agent=name,
        form={"since": since, "until": until},
        error=error,
        start=start,
        end=end,
        queries=queries,
        older=older(queries, "before", start, end),
        paged=cursors[0] is not None,
        decisions=decisions,
        older_decisions=older(decisions, "decisions_before", start, end),
        decisions_paged=cursors[1] is not None,
        checks=checks,
        older_checks=older(checks, "checks_before", start, end),
        checks_paged=cursors[2] is not None,
        scores=scores,
        # the newest moves of every topic, in one list newest first
        moves=moves[:MOVES_SHOWN],
        older_moves=sum(s.evidence for s in scores) - len(moves[:MOVES_SHOWN]),
        chart=_trust_chart(ledger, name, now),
    )
