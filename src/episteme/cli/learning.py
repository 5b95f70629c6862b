"""Learning commands: `constraint add|list|show`, `check`, `checks`, `trust`, `conflicts`,
`notifications`."""

from __future__ import annotations

from typing import Annotated, get_args

import typer
from rich.markup import escape
from rich.table import Table

from episteme.cli.common import (
    Before,
    Home,
    Json,
    TimeOpt,
    app,
    emit,
    next_page,
    open_ledger,
    page_option,
    state,
    when,
)
from episteme.cli.render import short, val
from episteme.cli.server import local_actor
from episteme.ledger.learning import ConstraintState
from episteme.ledger.trust import MOVES
from episteme.ledger.webhooks import NotificationType
from episteme.text import plural
from episteme.timeutil import show

VIOLATION = 3
"""Exit code of `check` when the plan violates a constraint (1 and 2 are errors)."""
MOVES_SHOWN = 5
"""The newest moves of a trust score `trust` prints under it."""

constraint_app = typer.Typer(help="Negative constraints: what must not be done, and why.")
app.add_typer(constraint_app, name="constraint")

Many = list[str] | None


@constraint_app.command("add")
def constraint_add(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option(help="Why it is forbidden (shown to agents).")],
    scope: Annotated[
        str | None, typer.Option(help="The subject it covers, and all below it (or --tag).")
    ] = None,
    tag: Annotated[
        Many,
        typer.Option(help="A kind of plan it covers: deploy, npm, db-migration (repeatable)."),
    ] = None,
    forbid: Annotated[
        Many, typer.Option(help="A term to forbid, matched as a whole word (repeatable).")
    ] = None,
    pattern: Annotated[
        Many, typer.Option(help="A regular expression to forbid, RE2 syntax (repeatable).")
    ] = None,
    identifier: Annotated[
        Many, typer.Option(help="A name, path or tag forbidden exactly as written (repeatable).")
    ] = None,
    prefer: Annotated[str | None, typer.Option(help="The preferred alternative.")] = None,
    half_life: Annotated[
        float, typer.Option("--half-life", help="Days until its strength halves without a hit.")
    ] = 30.0,
    by: Annotated[str | None, typer.Option(help="Who records it [local user].")] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Record a negative constraint (checked before agents act)."""
    with open_ledger(ctx, home) as ledger:
        made = ledger.add_constraint(
            scope=scope,
            reason=reason,
            by=by or local_actor(),
            forbid=forbid or [],
            patterns=pattern or [],
            items=identifier or [],
            prefer=prefer,
            half_life_days=half_life,
            tags=tag or [],
        )
    if not emit(ctx, as_json, made):
        state(ctx).console.print(_constraints([made]))


@constraint_app.command("list")
def constraint_list(
    ctx: typer.Context,
    scope: Annotated[
        str | None, typer.Option(help="Those on this subject (above and below it).")
    ] = None,
    tag: Annotated[
        Many, typer.Option(help="Those of this tag (repeatable; with --scope, either).")
    ] = None,
    retired: Annotated[bool, typer.Option("--retired", help="The retired ones too.")] = False,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Constraints with their strength now (dormant ones still answer, as warnings); with
    --scope, those on that subject (above and below it); with --tag, those of that tag."""
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        rows = ledger.constraints(scope, tag or [], retired=retired)
    if not emit(ctx, as_json, rows):
        none = "no constraint in force (--retired lists the retired ones)"
        if scope or tag:
            none = "no constraint meets that subject or tag"
        elif retired:
            none = "no constraint recorded"
        state(ctx).console.print(_constraints(rows) if rows else none)


@constraint_app.command("retire")
def constraint_retire(
    ctx: typer.Context,
    id: str,
    reason: Annotated[str, typer.Option(help="Why it no longer holds (kept with it).")],
    by: Annotated[str | None, typer.Option(help="Who retires it [local user].")] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Retire a constraint (wrong, or no longer needed): kept, it answers no check."""
    with open_ledger(ctx, home) as ledger:
        done = ledger.retire_constraint(id, by=by or local_actor(), reason=reason)
    if not emit(ctx, as_json, done):
        state(ctx).console.print(_constraints([done]))


@constraint_app.command("show")
def constraint_show(ctx: typer.Context, id: str, home: Home = None, as_json: Json = False) -> None:
    """One constraint by id (or unique prefix)."""
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        found = ledger.constraint(id)
    if not emit(ctx, as_json, found):
        c = found.constraint
        console = state(ctx).console
        console.print(_constraints([found]))
        console.print(f"reason: {escape(c.reason)}")
        console.print(f"origin: {escape(c.origin)}; created {show(c.at)} by {escape(c.created_by)}")
        hit = show(c.last_hit_at) if c.last_hit_at else "never"
        console.print(f"hits: {c.hits}, last {hit}; half-life {c.half_life_days:g} days")
        if c.retired_at is not None:
            console.print(
                f"retired {show(c.retired_at)} by {escape(c.retired_by or '')}: "
                f"{escape(c.retired_reason or '')}"
            )


def _constraints(rows: list[ConstraintState]) -> Table:
    table = Table("id", "scope", "forbids", "prefer", "strength", "state")
    for s in rows:
        c = s.constraint
        forbids = [*c.forbid, *(f"/{p}/" for p in c.patterns), *(f"={i}" for i in c.items)]
        style = {"active": "green", "dormant": "dim"}.get(s.state, "red")
        table.add_row(
            short(c.id),
            escape(_covered([c.scope] if c.scope else [], c.tags)),
            escape(", ".join(forbids)),
            escape(c.prefer or "-"),
            f"{s.strength:.2f}",
            f"[{style}]{s.state}[/]",
        )
    return table


def _covered(subjects: list[str], tags: list[str]) -> str:
    """Subjects and tags as the tables show them: ``auth.jwt, #deploy``."""
    return ", ".join([*subjects, *(f"#{t}" for t in tags)])


@app.command()
def check(
    ctx: typer.Context,
    plan: Annotated[
        str, typer.Option(help="What you are about to do, in words (or give --item alone).")
    ] = "",
    scope: Annotated[
        Many, typer.Option("--scope", "--subject", "-s", help="A subject it touches (repeatable).")
    ] = None,
    item: Annotated[
        Many, typer.Option(help="An identifier it uses: package, path, image (repeatable).")
    ] = None,
    tag: Annotated[
        Many,
        typer.Option("--tag", "-t", help="The kind of plan: deploy, npm... (repeatable)."),
    ] = None,
    agent: Annotated[str | None, typer.Option(help="Who checks [local user].")] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Pre-flight, audited: the constraints a plan would violate (exit 3 if any). --scope
    narrows the constraints on subjects, --tag those of tags; a side left out narrows
    nothing."""
    with open_ledger(ctx, home) as ledger:
        result = ledger.check(
            plan, scope or [], agent=agent or local_actor(), items=item or [], tags=tag or []
        )
    if not emit(ctx, as_json, result):
        console = state(ctx).console
        for v in result.violations:
            colour = "red" if v.severity == "violation" else "yellow"
            origin = v.constraint.origin
            console.print(
                f"[{colour}]{v.severity}[/] {escape(v.message)} "
                f"(strength {v.strength:.2f}, {short(v.constraint.id)}, from {escape(origin)})"
            )
        if not result.violations:
            many = "constraint" if result.checked == 1 else "constraints"
            console.print(f"no violation ({result.checked} {many} in scope)")
        console.print(f"check id {result.check_id}", style="dim")
    if not result.ok:
        raise typer.Exit(VIOLATION)


@app.command()
def checks(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option(help="Only this agent's checks.")] = None,
    since: TimeOpt = None,
    until: TimeOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    before: Before = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Audited pre-flight checks, newest first: who checked what, and what it hit."""
    t1 = when(ctx, since, "--since")
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        rows = ledger.checks(
            agent=agent,
            since=t1,
            until=when(ctx, until, "--until"),
            limit=limit,
            before=before,
        )
    if not emit(ctx, as_json, rows):
        table = Table("check", "at", "agent", "plan", "on", "hits")
        for r in rows:
            hits = ", ".join(f"{v['matched']} ({v['severity']})" for v in r.violations) or "-"
            plan = r.plan or "items: " + ", ".join(r.items)  # identifiers alone, no words
            on = _covered(r.scope, r.tags) or "all"
            table.add_row(r.id, show(r.at), r.agent, escape(plan[:60]), escape(on), escape(hits))
        state(ctx).console.print(table if rows else "no check recorded")
        next_page(ctx, rows, limit, "--before", since=t1)


@app.command()
def trust(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    topic: Annotated[
        str | None, typer.Option(help="A subject prefix (default: each top-level topic).")
    ] = None,
    at: TimeOpt = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Trust per agent and topic, and the evidence that moved it (see docs/trust.md)."""
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        rows = ledger.trust_scores(agent=agent, topic=topic, at=when(ctx, at, "--at"))
    if emit(ctx, as_json, rows):
        return
    console = state(ctx).console
    if not rows:
        who = f" for {escape(agent)}" if agent else ""
        where = f" on {topic}" if topic else ""
        stands = "every agent stands at 0.50"
        if agent:
            stands = "it stands at 0.50" + ("" if topic else " on every topic")
        console.print(f"no trust evidence yet{who}{where}: {stands}")
        return
    for s in rows:
        console.print(
            f"[bold]{escape(s.agent)}[/] on {s.topic}: {s.score:.2f} "
            f"(successes {s.successes:.2f}, failures {s.failures:.2f}, as of {show(s.at)})"
        )
        for m in s.moves[:MOVES_SHOWN]:
            sign = f"+{m.success:g}" if m.success else f"-{m.failure:g}"
            weight = m.success + m.failure  # decayed since: what it weighs in the score now
            now = f" (now {m.weight_now:.2f})" if abs(m.weight_now - weight) >= 0.005 else ""
            console.print(f"  {sign:>5}{now} {show(m.at)} {escape(m.reason)}")
        if (more := s.evidence - len(s.moves[:MOVES_SHOWN])) > 0:
            console.print(
                f"  [dim]and {plural(more, 'older move')} (--json lists the newest {MOVES})[/]"
            )


@app.command()
def conflicts(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Also conflicts since resolved.")] = False,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Subjects with two approved values at once (raised by the gardener)."""
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        rows = ledger.conflicts(include_resolved=all_)
    if emit(ctx, as_json, rows):
        return
    console = state(ctx).console
    if not rows:
        console.print("no open conflict")
    for c in rows:
        status = "[red]open[/]" if c.open else "[dim]resolved[/]"
        console.print(f"{status} {c.subject} (raised {show(c.raised_at)})")
        for aid, value in zip(c.assertion_ids, c.values, strict=True):
            lifecycle = escape(f"[{c.lifecycles.get(aid, '?')}]")  # not a style
            console.print(f"  {short(aid)} {val(value)} {lifecycle}")


@app.command()
def notifications(
    ctx: typer.Context,
    type: Annotated[
        str | None, typer.Option(help=f"{', '.join(get_args(NotificationType))}.")
    ] = None,
    since: TimeOpt = None,
    until: TimeOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    after: Annotated[
        str | None, page_option("KEY", "what follows the notification of this key")
    ] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """What was raised, newest first (what webhooks are sent)."""
    t1 = when(ctx, since, "--since")
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        rows = ledger.notifications(
            type=type,
            since=t1,
            until=when(ctx, until, "--until"),
            limit=limit,
            after=after,
        )
    if not emit(ctx, as_json, rows):
        table = Table("at", "type", "summary")
        for n in rows:
            table.add_row(show(n.at), n.type, escape(n.summary))
        state(ctx).console.print(table if rows else "nothing raised")
        next_page(ctx, rows, limit, "--after", "key", since=t1)
