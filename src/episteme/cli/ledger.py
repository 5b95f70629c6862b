"""Ledger commands: init, assert, review, query, investigate, correct, integrity."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.markup import escape

from episteme import ndjson
from episteme.cli import render
from episteme.cli.common import (
    Before,
    Home,
    Json,
    TimeOpt,
    app,
    emit,
    location,
    next_page,
    open_ledger,
    page_option,
    state,
    typed,
    when,
)
from episteme.errors import Conflict, InvalidInput, NotFound, WorldError
from episteme.ledger import Ledger
from episteme.ledger.canonical import loads_exact, read_value
from episteme.ledger.journal import Event, verify_chain
from episteme.ledger.lenses import LensSpec
from episteme.ledger.model import Lifecycle, describe, parse_assertion
from episteme.text import plural, shorten

Agent = Annotated[str, typer.Option("--agent", "-a", help="Who is asking or asserting.")]
By = Annotated[str, typer.Option("--by", help="Who makes this change.")]
Reason = Annotated[str | None, typer.Option("--reason", help="Why.")]


@app.command()
def init(ctx: typer.Context, home: Home = None, as_json: Json = False) -> None:
    """Create an empty ledger in the home directory."""
    path = location(home)
    with Ledger.init(path, clock=state(ctx).clock) as ledger:
        url, where = ledger.store.url, ledger.store.where
    if not emit(ctx, as_json, {"home": str(path) if "://" not in str(path) else None, "db": url}):
        state(ctx).console.print(f"created an empty ledger in {where}")


@app.command("assert")
def assert_(
    ctx: typer.Context,
    subject: Annotated[
        str | None, typer.Argument(help="Dotted subject, e.g. auth.jwt.algorithm.")
    ] = None,
    value: Annotated[str | None, typer.Argument(help="JSON, or a plain string.")] = None,
    agent: Agent = ...,  # type: ignore[assignment]
    confidence: Annotated[float, typer.Option(help="Between 0 and 1.")] = 1.0,
    lifecycle: Annotated[str, typer.Option(help="proposed or approved.")] = "proposed",
    kind: Annotated[str, typer.Option(help="fact, decision, observation or constraint.")] = "fact",
    source: Annotated[str | None, typer.Option(help="URI or text it came from.")] = None,
    evidence: Annotated[str | None, typer.Option(help="Supporting evidence.")] = None,
    epoch: Annotated[str | None, typer.Option(help="Ingestion batch it belongs to.")] = None,
    derived_from: Annotated[
        list[str] | None, typer.Option("--derived-from", help="Assertion id (repeatable).")
    ] = None,
    valid_from: TimeOpt = None,
    valid_to: TimeOpt = None,
    batch: Annotated[
        str | None,
        typer.Option(
            help=(
                "Read JSON lines from FILE, or - for stdin: an object a line, with subject"
                " and value and any of agent, confidence, lifecycle, kind, source,"
                " evidence, epoch, derived_from (a list), valid_from and valid_to; the"
                " options given here fill in what a line leaves out."
            )
        ),
    ] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Record an assertion, or a batch of them from JSON lines (all or nothing)."""
    fields: dict[str, Any] = {
        "agent": agent,
        "confidence": confidence,
        "lifecycle": lifecycle,
        "kind": kind,
        "source": source,
        "evidence": evidence,
        "epoch": epoch,
        "derived_from": derived_from or [],
        "valid_from": when(ctx, valid_from, "--valid-from"),
        "valid_to": when(ctx, valid_to, "--valid-to"),
    }
    if batch is not None:
        if subject is not None or value is not None:
            raise InvalidInput("give either SUBJECT VALUE or --batch, not both")
        # what the command line says, for each line that does not say otherwise
        given = {k: v for k, v in fields.items() if v is not None and v != []}
        inputs, lines = _read_batch(batch, given)
    else:
        if subject is None or value is None:
            raise InvalidInput("give SUBJECT and VALUE (or --batch FILE)")
        fields |= {"subject": subject, "value": read_value(value)}
        inputs, lines = [parse_assertion(fields)], []
    with open_ledger(ctx, home) as ledger:
        try:
            added = ledger.add(inputs, actor=agent)
        except (InvalidInput, NotFound, Conflict) as exc:
            if not lines:
                raise
            raise type(exc)(_by_line(exc.message, lines), field=exc.field) from None
    if not emit(ctx, as_json, added):
        if len(added) == 1:
            a = added[0]
            state(ctx).console.print(f"{a.id}  {a.subject} = {render.val(a.value)} ({a.lifecycle})")
        else:
            state(ctx).console.print(f"recorded {len(added)} assertions in one transaction")


def _read_text(source: str, named: str) -> str:
    """The UTF-8 text of a file, or of stdin for -."""
    if source == "-" and sys.stdin is None:
        raise InvalidInput(f"cannot read {named}: standard input is closed; give a FILE")
    try:
        if source == "-":  # its bytes, read as a file's are (its own decoding is lenient)
            return sys.stdin.buffer.read().decode("utf-8")
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {named}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"cannot read {named}: it is not UTF-8 text (byte {exc.start + 1} is not)"
        ) from None


_INDEXED = re.compile(r"\bassertions\[(\d+)\](\.?)|\bassertion (\d+)\b")


def _by_line(message: str, lines: list[int]) -> str:
    """The ledger's words for a batch's assertions (`assertions[0].evidence`, 0 on;
    `assertion 2 repeats assertion 1`, 1 on) in the lines of the file they came from,
    which blank lines make differ. An assertion named by nothing (an unknown id in its
    `derived_from`) is said as it is."""

    def line(m: re.Match[str]) -> str:
        i = int(m[1]) if m[1] is not None else int(m[3]) - 1
        if not 0 <= i < len(lines):
            return m[0]
        return f"line {lines[i]}" + (", " if m[2] else "")  # "line 3, evidence: …"

    return _INDEXED.sub(line, message)


def _read_batch(batch: str, given: dict[str, Any]) -> tuple[list[Any], list[int]]:
    """The assertions of a batch file, and the line each came from."""
    text = _read_text(batch, f"--batch {batch}")
    inputs = []
    lines = []
    for n, line in ndjson.numbered(text):
        try:
            data = loads_exact(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"line {n}: malformed JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}"
            ) from None
        except InvalidInput as exc:
            raise InvalidInput(f"line {n}: {exc.message}") from None
        if not isinstance(data, dict):
            raise InvalidInput(f"line {n}: expected a JSON object with subject and value")
        data = given | data
        inputs.append(parse_assertion(data, where=f"line {n}"))
        lines.append(n)
    if not inputs:
        raise InvalidInput(f"--batch {batch} has no assertions")
    return inputs, lines


def _review(
    ctx: typer.Context,
    home: str | None,
    as_json: bool,
    verb: str,
    ref: str,
    by: str,
    reason: str | None,
) -> None:
    with open_ledger(ctx, home) as ledger:
        a = getattr(ledger, verb)(ref, by=by, reason=reason)
        displaced = []
        if not as_json and verb == "approve":  # the values this approval superseded
            [blamed] = ledger.blame(a.id)
            # the one move to approved from proposed, whatever moved the assertion since
            for v in blamed.history:
                if v.lifecycle == Lifecycle.APPROVED and v.prev_lifecycle == Lifecycle.PROPOSED:
                    displaced = [ledger.get(i) for i in v.superseded]
    if not emit(ctx, as_json, a):
        console = state(ctx).console
        console.print(
            f"{a.id}  {a.subject} = {render.val(a.value)} is now {render.life(a.lifecycle)}"
        )
        for old in displaced:
            console.print(
                f"{old.id}  {old.subject} = {render.val(old.value)} is now"
                f" {render.life(old.lifecycle)} by it"
            )


def _review_command(verb: str, doc: str) -> None:
    def command(
        ctx: typer.Context,
        id: str,
        by: By,
        reason: Reason = None,
        home: Home = None,
        as_json: Json = False,
    ) -> None:
        _review(ctx, home, as_json, verb, id, by, reason)

    command.__doc__ = doc
    app.command(verb)(command)


@app.command()
def approve(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(help="An assertion id, or a diagnosis session id (s_…).")],
    by: Annotated[str | None, typer.Option(help="Who approves (assertions).")] = None,
    reason: Reason = None,
    ref: Annotated[
        list[str] | None,
        typer.Option(help="Approve only this credential reference (sessions; repeatable)."),
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="`episteme serve` URL, for sessions [env EPISTEME_URL].")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Bearer token, for sessions [env EPISTEME_TOKEN].")
    ] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Approve a proposed assertion (superseding the subject's previous approved value),
    or a diagnosis session's credentials (all, or those given with --ref)."""
    # the options of the other kind of approval, typed, are refused rather than dropped
    if id.startswith("s_"):
        if wrong := [f"--{n}" for n in ("by", "home") if typed(ctx, n)]:
            raise InvalidInput(
                f"{' and '.join(wrong)} approve assertions: a session is approved on its"
                " server (--server) by the principal of the token (--token)"
            )
        from episteme.cli.diagnose import approve_session

        approve_session(ctx, id, ref, reason, server, token, as_json)
        return
    if wrong := [f"--{n}" for n in ("ref", "server", "token") if typed(ctx, n)]:
        raise InvalidInput(
            f"{' and '.join(wrong)} approve a diagnosis session's credentials (s_…);"
            f" {id} is taken for an assertion, approved in the ledger --by someone"
        )
    if by is None:
        raise InvalidInput("approving an assertion needs --by: who approves it")
    _review(ctx, home, as_json, "approve", id, by, reason)


_review_command("deprecate", "Deprecate an approved assertion.")
_review_command(
    "reject", "Reject a proposed assertion (to mark an approved one incorrect, use `correct`)."
)


@app.command()
def query(
    ctx: typer.Context,
    subject: Annotated[
        str | None, typer.Argument(help="Subject or prefix (auth covers auth.*).")
    ] = None,
    agent: Agent = ...,  # type: ignore[assignment]
    lens: Annotated[
        str, typer.Option(help="approved, latest, consensus, all or a custom lens.")
    ] = "approved",
    at: TimeOpt = None,
    text: Annotated[
        str | None, typer.Option(help="Full-text words over subject, value, source.")
    ] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Read through a lens (audited; the answer carries its query_id receipt)."""
    instant = when(ctx, at, "--at")
    with open_ledger(ctx, home) as ledger:
        ans = ledger.query(subject, agent=agent, lens=lens, at=instant, text=text)
    if not emit(ctx, as_json, ans):
        render.answer(state(ctx).console, ans)


@app.command()
def served(
    ctx: typer.Context,
    subject: str,
    at: TimeOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    before: Before = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """What agents were actually served about SUBJECT, up to --at (from the audit)."""
    instant = when(ctx, at, "--at")
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        rows = ledger.served(subject, at=instant, limit=limit, before=before)
    if not emit(ctx, as_json, rows):
        until = f" up to {render.when(instant)}" if instant else ""
        render.queries(state(ctx).console, f"served about {subject}{until}", rows)
        next_page(ctx, rows, limit, "--before")


@app.command()
def audit(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", "-a")] = None,
    subject: Annotated[str | None, typer.Option()] = None,
    since: TimeOpt = None,
    until: TimeOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    before: Before = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Audited reads, newest first, by agent, subject and time window."""
    t1, t2 = when(ctx, since, "--since"), when(ctx, until, "--until")
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        rows = ledger.audit(
            agent=agent, subject=subject, since=t1, until=t2, limit=limit, before=before
        )
    if not emit(ctx, as_json, rows):
        who = f" by {agent}" if agent else ""
        render.queries(state(ctx).console, f"queries{who}", rows)
        next_page(ctx, rows, limit, "--before", since=t1)


@app.command()
def decisions(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", "-a")] = None,
    since: TimeOpt = None,
    until: TimeOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    before: Before = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Recorded decisions, newest first, by agent and time window."""
    t1, t2 = when(ctx, since, "--since"), when(ctx, until, "--until")
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        rows = ledger.decisions(agent=agent, since=t1, until=t2, limit=limit, before=before)
    if not emit(ctx, as_json, rows):
        console = state(ctx).console
        for d in rows:
            cited = ", ".join(d.query_ids) or "no reads"
            console.print(f"{d.id} {render.when(d.at)} {d.agent}: {d.action} (cited {cited})")
        if not rows:
            console.print("no decision recorded")
        next_page(ctx, rows, limit, "--before", since=t1)


@app.command()
def diff(
    ctx: typer.Context,
    prefix: Annotated[
        str | None, typer.Argument(help="Subject prefix; everything if omitted.")
    ] = None,
    from_: Annotated[str, typer.Option("--from", help="TIME to start from.")] = ...,  # type: ignore[assignment]
    to: TimeOpt = None,
    limit: Annotated[
        int, typer.Option(help="Show the newest this many (the counts are of all).")
    ] = 100,
    before: Annotated[
        str | None, page_option("PLACE", "the changes older than this place in the window")
    ] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """What changed between two times: additions, lifecycle moves, corrections, retractions."""
    t1 = when(ctx, from_, "--from")
    assert t1 is not None
    t2 = when(ctx, to, "--to")
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        d = ledger.diff(prefix, since=t1, until=t2, limit=limit, before=before)
    if not emit(ctx, as_json, d):
        render.diff(state(ctx).console, d)


@app.command()
def blame(ctx: typer.Context, subject_or_id: str, home: Home = None, as_json: Json = False) -> None:
    """Who introduced an assertion, from what source and epoch, and every move since."""
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        rows = ledger.blame(subject_or_id)
    if not emit(ctx, as_json, rows):
        render.blame(state(ctx).console, rows)


@app.command()
def trace(ctx: typer.Context, id: str, home: Home = None, as_json: Json = False) -> None:
    """Decision or query → queries → assertions → agents, sources, epochs."""
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        tr = ledger.trace(id)
    if not emit(ctx, as_json, tr):
        render.trace(state(ctx).console, tr)


@app.command()
def impact(
    ctx: typer.Context,
    id: str,
    recent: Annotated[
        int, typer.Option(help="How many of the newest queries that served it to list (0-1000).")
    ] = 20,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Assertion → queries that served it, agents that saw it, decisions, derived assertions."""
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        im = ledger.impact(id, recent=recent)
    if not emit(ctx, as_json, im):
        render.impact(state(ctx).console, im)


@app.command()
def decide(
    ctx: typer.Context,
    action: str,
    agent: Agent = ...,  # type: ignore[assignment]
    query_ids: Annotated[
        list[str] | None, typer.Option("--query", "-q", help="query_id relied on (repeatable).")
    ] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Record an action and the query ids it relied on."""
    with open_ledger(ctx, home) as ledger:
        d = ledger.decide(action, agent=agent, query_ids=query_ids or [])
    if not emit(ctx, as_json, d):
        state(ctx).console.print(
            f"{d.id}  {d.action}  (cites {', '.join(d.query_ids) or 'nothing'})"
        )


@app.command()
def correct(
    ctx: typer.Context,
    id: str,
    by: By,
    reason: Annotated[str, typer.Option(help="Why it is incorrect.")],
    value: Annotated[str | None, typer.Option(help="The right value (JSON or string).")] = None,
    forbid: Annotated[
        bool, typer.Option("--forbid", help="Also record a negative constraint.")
    ] = False,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Mark an assertion incorrect now; optionally record the right value and a constraint."""
    extra: dict[str, Any] = {} if value is None else {"value": read_value(value)}
    with open_ledger(ctx, home) as ledger:
        c = ledger.correct(id, by=by, reason=reason, forbid=forbid, **extra)
    if emit(ctx, as_json, c):
        return
    con = state(ctx).console
    bad = c.corrected
    con.print(
        f"[red]rejected[/] {bad.id}  {bad.subject} = {render.val(bad.value)}  ({c.correction.id})"
    )
    if c.replacement is not None:
        r = c.replacement
        verb = "confirmed" if r.id != bad.id and r.agent != by else "recorded"
        con.print(f"{verb} {r.id}  {r.subject} = {render.val(r.value)} ({r.lifecycle})")
    if c.constraint is not None:
        k = c.constraint
        prefer = f", prefer {render.esc(k.prefer)}" if k.prefer else ""
        forbidden = render.esc(", ".join(k.forbid))
        con.print(f"constraint {k.id} on {k.scope}: forbid {forbidden}{prefer}")


epoch_app = typer.Typer(help="Ingestion batches.", no_args_is_help=True)
app.add_typer(epoch_app, name="epoch")


@epoch_app.command("supersede")
def epoch_supersede(
    ctx: typer.Context,
    epoch: str,
    by: By,
    reason: Annotated[str, typer.Option(help="Why.")],
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Retract everything an epoch brought, in one event."""
    with open_ledger(ctx, home) as ledger:
        ids = ledger.supersede_epoch(epoch, by=by, reason=reason)
    if not emit(ctx, as_json, {"epoch": epoch, "retracted": ids}):
        state(ctx).console.print(f"epoch {epoch} superseded: {len(ids)} assertions retracted")


@epoch_app.command("show")
def epoch_show(ctx: typer.Context, epoch: str, home: Home = None, as_json: Json = False) -> None:
    """An epoch and the assertions it brought."""
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        record = ledger.epoch(epoch)
        members = ledger.store.epoch_members(epoch)
    if not emit(ctx, as_json, {"epoch": record.model_dump(mode="json"), "assertions": members}):
        console = state(ctx).console
        console.print(render.assertions_table(f"epoch {epoch}", members))
        made = f"made by {record.created_by} at {render.when(record.created_at)}"
        console.print(f"{escape(made)}; {plural(record.assertions, 'assertion')}", highlight=False)
        if record.superseded_at is not None:
            console.print(
                escape(
                    f"superseded by {record.superseded_by} at {render.when(record.superseded_at)}:"
                    f" {record.reason}"
                ),
                highlight=False,
            )


lens_app = typer.Typer(help="Named read policies.", no_args_is_help=True)
app.add_typer(lens_app, name="lens")


@lens_app.command("list")
def lens_list(ctx: typer.Context, home: Home = None, as_json: Json = False) -> None:
    """Built-in and custom lenses."""
    with open_ledger(ctx, home, reads="knowledge") as ledger:
        lenses = ledger.lenses()
    if not emit(ctx, as_json, {k: v.model_dump(mode="json") for k, v in lenses.items()}):
        for name, spec in lenses.items():
            # every filter the lens applies, as the JSON has them: a lens that hides by
            # confidence, trust, agent or source must not read as one that does not
            parts = [
                ",".join(sorted(spec.lifecycles)),
                f"pick={spec.pick}",
                f"confidence ≥ {spec.min_confidence:g}" if spec.min_confidence else "",
                f"trust ≥ {spec.min_trust:g}" if spec.min_trust else "",
                f"agents {','.join(sorted(spec.agents))}" if spec.agents else "",
                f"sources {','.join(spec.sources)}" if spec.sources else "",
                "expired too" if spec.include_expired else "",
                spec.description,
            ]
            state(ctx).console.print(
                f"[bold]{escape(name)}[/]  {escape('  '.join(p for p in parts if p))}",
                highlight=False,
            )


@lens_app.command("define")
def lens_define(
    ctx: typer.Context,
    name: str,
    by: By,
    lifecycle: Annotated[
        list[str] | None,
        typer.Option("--lifecycle", help="Shown lifecycle (repeatable) [default: approved]."),
    ] = None,
    min_confidence: Annotated[
        float, typer.Option(help="Hide assertions below this confidence (0 to 1).")
    ] = 0.0,
    min_trust: Annotated[
        float, typer.Option(help="Hide assertions whose agent's trust is below this (0 to 1).")
    ] = 0.0,
    agent: Annotated[
        list[str] | None, typer.Option("--agent", help="Allowed agent (repeatable).")
    ] = None,
    source: Annotated[
        list[str] | None, typer.Option("--source", help="Allowed source prefix (repeatable).")
    ] = None,
    pick: Annotated[str, typer.Option(help="all, newest or ranked.")] = "all",
    description: Annotated[str, typer.Option(help="What the lens is for, in words.")] = "",
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Store a custom lens in the ledger."""
    from pydantic import ValidationError

    try:
        spec = LensSpec(
            lifecycles=frozenset(Lifecycle(x) for x in (lifecycle or ["approved"])),
            min_confidence=min_confidence,
            min_trust=min_trust,
            agents=frozenset(agent) if agent else None,
            sources=tuple(source) if source else None,
            pick=pick,  # type: ignore[arg-type]
            description=description,
        )
    except ValidationError as exc:
        raise InvalidInput(f"invalid lens: {describe(exc)}") from None
    except ValueError as exc:
        raise InvalidInput(f"invalid lens: {exc}; lifecycles are {', '.join(Lifecycle)}") from None
    with open_ledger(ctx, home) as ledger:
        before = ledger.store.lens(name)
        ledger.define_lens(name, spec, by=by)
    if not emit(ctx, as_json, {"name": name, "spec": spec.model_dump(mode="json")}):
        if before is None:
            state(ctx).console.print(f"lens {name} defined")
        elif before == spec:
            state(ctx).console.print(f"lens {name} defined again, as it was")
        else:  # all of it: what was given replaces what it had, filters included
            was = render.esc(before.model_dump_json(exclude_defaults=True))
            state(ctx).console.print(f"lens {name} replaced; it was {was}")


@app.command()
def verify(ctx: typer.Context, home: Home = None, as_json: Json = False) -> None:
    """Recompute the journal's hash chain; exit 1 naming the first bad event."""
    with open_ledger(ctx, home, reads="journal") as ledger:
        report = ledger.verify()
    if not emit(ctx, as_json, report):
        if report.ok:
            head = f"head {report.head}" if report.head else "an empty journal"
            state(ctx).console.print(f"chain ok: {report.events} events, {head}")
        else:
            typer.echo(
                f"error: chain broken at event {report.first_bad_seq}: {report.problem}", err=True
            )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def rebuild(
    ctx: typer.Context,
    repair: Annotated[
        bool, typer.Option("--repair", help="Replace the projections with the replay.")
    ] = False,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Replay the journal into fresh projections and report any difference."""
    with open_ledger(ctx, home) as ledger:
        report = ledger.rebuild(repair=repair)
    if not emit(ctx, as_json, report):
        if report.ok:
            state(ctx).console.print(f"projections match the journal ({report.events} events)")
        else:
            rows = ", ".join(f"{t}: {n} rows" for t, n in report.differences.items())
            fixed = " (repaired)" if report.repaired else "; run `episteme rebuild --repair`"
            line = f"projections differ from the journal: {rows}{fixed}"
            typer.echo(line if report.repaired else f"error: {line}", err=not report.repaired)
    if not report.ok and not report.repaired:
        raise typer.Exit(1)


@app.command("export")
def export_(
    ctx: typer.Context,
    output: Annotated[str, typer.Option("--output", "-o", help="File, or - for stdout.")] = "-",
    home: Home = None,
) -> None:
    """Write the journal as JSON lines (one event per line)."""
    with open_ledger(ctx, home, reads="journal") as ledger:
        if output == "-":
            if sys.stdout is None:
                raise InvalidInput("standard output is closed: give --output FILE")
            _export_to(sys.stdout, ledger)
            return
        if not output:
            raise InvalidInput("--output needs a file name, or - for stdout", field="output")
        # Into a file beside the target, renamed over it once whole: a failed export
        # leaves no half-written journal under the name asked for. A link is followed
        # (its file is written, the link kept), and what is not a plain file (a pipe,
        # /dev/stdout) is written to as it is: renaming over it would replace it.
        given = Path(output)
        _not_the_ledger(given, ledger)
        part: Path | None = None
        try:
            if given.exists() and not given.is_file():
                with open(given, "w", encoding="utf-8") as stream:
                    _export_to(stream, ledger)
                return
            target = given.resolve()
            _remove_stale_parts(target)
            with tempfile.NamedTemporaryFile(
                "w", dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False
            ) as out:
                part = Path(out.name)
                fcntl.flock(out.fileno(), fcntl.LOCK_EX)  # held while written: see below
                _export_to(out, ledger)
                out.flush()
                os.fsync(out.fileno())
            os.replace(part, target)
            part = None
        except OSError as exc:
            why = f"cannot write {output}: {exc.strerror or exc}"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):  # the world failing
                raise WorldError(why) from None
            raise InvalidInput(why) from None
        finally:
            if part is not None:
                part.unlink(missing_ok=True)


def _remove_stale_parts(target: Path) -> None:
    """Remove what exports to `target` that were killed part way left beside it (hidden
    part files of up to the journal's size each). One that is locked is being written by
    an export still running, and is left to it."""
    for part in target.parent.glob(f".{glob.escape(target.name)}.*.part"):
        try:
            fd = os.open(part, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            part.unlink(missing_ok=True)
        except OSError:  # locked (an export under way), or not ours to remove
            pass
        finally:
            os.close(fd)


def _not_the_ledger(target: Path, ledger: Ledger) -> None:
    """Refuse to export over the ledger's own files (`-o HOME/ledger.db` replaced the
    database with its journal: what lives beside the journal was lost)."""
    path = getattr(ledger.store, "path", None)
    if not isinstance(path, Path):
        return  # PostgreSQL: no file of its own here
    for own in (path, *(Path(f"{path}{end}") for end in ("-wal", "-shm", "-lock"))):
        same = target.resolve() == own.resolve()
        with contextlib.suppress(OSError):
            same = same or os.path.samefile(target, own)
        if same:
            raise InvalidInput(
                f"{target} is the ledger's own file: export somewhere else", field="output"
            )


def _export_to(out: IO[str], ledger: Ledger) -> None:
    for ev in ledger.export():
        out.write(json.dumps(ev.to_json(), ensure_ascii=False) + "\n")


@app.command()
def migrate(ctx: typer.Context, home: Home = None, as_json: Json = False) -> None:
    """Bring the ledger's schema up to this version of episteme (every start does it too)."""
    with open_ledger(ctx, home) as ledger:
        store = ledger.store
        report = {
            "db": store.where,
            "schema_version": store.schema_version,
            "migrated_from": store.migrated_from,
        }
    if not emit(ctx, as_json, report):
        if store.migrated_from is None:
            state(ctx).console.print(f"{store.where} is at schema version {store.schema_version}")
        else:
            state(ctx).console.print(
                f"migrated {store.where} from schema version {store.migrated_from}"
                f" to {store.schema_version}"
            )


@app.command("import")
def import_(
    ctx: typer.Context,
    input: Annotated[str, typer.Argument(help="JSON lines file from `export`, or -.")],
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Load an exported journal into an empty home (creating it), verifying the chain."""
    events = _read_events(input)
    # Refuse a broken chain before creating anything, so a failed import leaves no ledger.
    report = verify_chain(events)
    if not report.ok:
        raise InvalidInput(
            f"the journal to import is broken at event {report.first_bad_seq}: "
            f"{report.problem}; nothing was imported"
        )
    with Ledger.open(location(home), clock=state(ctx).clock, ensure=True) as ledger:
        count = ledger.import_events(events)
    if not emit(ctx, as_json, {"imported": count}):
        state(ctx).console.print(f"imported {count} events; chain verified")


def _read_events(source: str) -> list[Event]:
    from episteme.ledger.canonical import canonical

    text = _read_text(source, source)
    events = []
    for n, line in ndjson.numbered(text):
        try:
            d = loads_exact(line)
            events.append(
                Event(
                    int(d["seq"]),
                    int(d["at"]),
                    str(d["actor"]),
                    str(d["kind"]),
                    canonical(d["payload"]),
                    bytes.fromhex(d["hash"]),
                )
            )
        except InvalidInput as exc:
            raise InvalidInput(f"line {n} of {source}: {exc.message}") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError) as exc:
            why = f"it has no {exc}" if isinstance(exc, KeyError) else shorten(str(exc), 200)
            raise InvalidInput(f"line {n} of {source} is not an exported event: {why}") from None
    return events
