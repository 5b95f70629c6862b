"""Rich rendering of ledger results for people; `--json` bypasses all of this."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree
from whenever import Instant

from episteme.ledger.access import Denial, TokenRecord
from episteme.ledger.canonical import canonical
from episteme.ledger.investigate import CHECKS_BEFORE_US, CHECKS_SHOWN, MAX_RECENT
from episteme.ledger.model import Answer, Assertion
from episteme.ledger.records import (
    Blame,
    CheckRecord,
    DecisionRecord,
    Diff,
    Impact,
    QueryRecord,
    Trace,
)
from episteme.text import plural
from episteme.timeutil import from_us, rfc3339, show, to_us

_STYLE = {
    "approved": "green",
    "proposed": "yellow",
    "rejected": "red",
    "deprecated": "dim",
    "superseded": "dim",
}


def short(ident: str) -> str:
    """A readable id: 12 characters, enough to be unique in practice."""
    return ident[:12] if not ident[:2].endswith("_") else ident[:14]


SHOWN_CHARS = 2_000
"""The most of one value or text a person's output shows (`--json` gives it whole): a
megabyte through Rich's wrapping took minutes, and nobody reads it on a terminal."""

_LINE_BREAKS = str.maketrans({"\n": "\\n", "\t": "\\t"})


def val(value: Any) -> str:
    """A value for a Rich string: JSON unless a plain string, markup escaped."""
    return esc(value if isinstance(value, str) else canonical(value))


def esc(text: str | None, empty: str = "") -> str:
    """Free text (values, sources, reasons, actions) is data, never Rich markup, and on
    one line: a newline written as `\\n` (an agent's value with lines of its own read as
    more of the output: "introduced by platform-team", under a proposal of its own).
    Cut to `SHOWN_CHARS`, saying how long it is."""
    if not text:
        return empty
    line = escape(text[:SHOWN_CHARS].translate(_LINE_BREAKS))
    if len(text) > SHOWN_CHARS:
        line += f"… ({len(text):,} characters; --json gives it whole)"
    return line


def life(state: str) -> str:
    return f"[{_STYLE.get(state, 'white')}]{state}[/]"


def when(instant: Instant | None) -> str:
    return "-" if instant is None else show(instant)


def assertions_table(title: str, rows: Sequence[Assertion]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("id", "subject", "value", "lifecycle", "conf", "agent", "source", "recorded"):
        t.add_column(col, overflow="fold")
    for a in rows:
        t.add_row(
            short(a.id),
            a.subject,
            val(a.value),
            life(a.lifecycle),
            f"{a.confidence:.2f}",
            a.agent,
            esc(a.source),
            when(a.recorded_at),
        )
    return t


def answer(console: Console, ans: Answer) -> None:
    # both filters when both were given: "t2" alone read as if t2 held nothing
    searched = f"text {ans.text!r}" if ans.text else None
    what = escape(" with ".join(p for p in (ans.subject, searched) if p))
    at = f" as of {when(ans.as_of)}" if ans.as_of else ""
    t = Table(title=f"{what} through lens '{ans.lens}'{at}", title_justify="left")
    for col in ("id", "subject", "value", "lifecycle", "conf", "agent", "source"):
        t.add_column(col, overflow="fold")
    ranked = any(i.score is not None for i in ans.items)
    if ranked:
        t.add_column("score")
    for item in ans.items:
        a = item.assertion
        row = [short(a.id), a.subject, val(a.value), life(a.lifecycle), f"{a.confidence:.2f}"]
        row += [a.agent, esc(a.source)]
        if ranked:
            row.append(f"{item.score or 0:.3f}")
        t.add_row(*row)
    console.print(t if ans.items else f"[bold]{what}[/]: no assertion shown by lens '{ans.lens}'")
    hidden = ans.hidden.summary()
    style = "yellow" if ans.hidden.count else "dim"
    console.print(f"[{style}]{hidden}[/]   query_id [bold]{ans.query_id or '-'}[/]")
    for c in ans.conflicts:  # two approved values at once: say so, as the JSON does
        console.print(f"[red]{esc(c.summary())}[/]")


def queries(console: Console, title: str, rows: Sequence[QueryRecord]) -> None:
    t = Table(title=title, title_justify="left")
    for col in ("query_id", "at", "agent", "lens", "asked", "served", "hidden"):
        t.add_column(col, overflow="fold")
    for q in rows:
        served = "; ".join(
            f"{i.subject}={val(i.value)} ({i.lifecycle} {i.confidence:.2f})" for i in q.returned
        )
        asked = (q.subject or "") + (f" text:{q.text!r}" if q.text else "")
        if q.as_of:
            asked += f" @ {when(q.as_of)}"
        t.add_row(
            q.id,
            when(q.at),
            q.agent,
            q.lens,
            asked,
            served or "-",
            q.hidden.summary() if q.hidden.count else "",
        )
    console.print(t if rows else f"{title}: none")


def diff(console: Console, d: Diff) -> None:
    title = f"changes to {d.prefix or 'everything'} from {when(d.since)} to {when(d.until)}"
    t = Table(title=title, title_justify="left")
    for col in ("at", "change", "subject", "value", "id", "by", "reason"):
        t.add_column(col, overflow="fold")
    for c in d.changes:
        move = f"{c.prev_lifecycle} → {c.lifecycle}" if c.prev_lifecycle else str(c.lifecycle)
        t.add_row(
            when(c.at),
            f"{c.change} ({move})",
            c.subject,
            val(c.value),
            short(c.assertion_id),
            c.actor,
            esc(c.reason),
        )
    console.print(t if d.changes else f"{title}: no changes")
    if d.next is not None:
        # the window as the page read it ("--from 24h" again later would move its start
        # and lose the oldest changes), so that the pages stay one window
        window = f"--from {d.since.format_iso()} --to {d.until.format_iso()}"
        place = f"{window} --before {d.next}"
        console.print(
            f"{len(d.changes):,} of {d.total:,} changes shown; for older ones, run it again"
            f" with {place}",
            highlight=False,
            soft_wrap=True,  # one line however narrow the terminal: it is copied whole
        )
    elif d.total > len(d.changes):  # a page below, the last
        console.print(f"the oldest {len(d.changes):,} of {d.total:,} changes", highlight=False)
    if d.counts:
        console.print(", ".join(f"{n} {k}" for k, n in sorted(d.counts.items())))


def blame(console: Console, rows: Sequence[Blame]) -> None:
    for b in rows:
        a = b.assertion
        tree = Tree(f"[bold]{a.subject}[/] = {val(a.value)}  {life(a.lifecycle)}  {a.id}")
        tree.add(f"introduced by [bold]{a.agent}[/] at {when(a.recorded_at)}")
        tree.add(f"kind {a.kind}, confidence {a.confidence:.2f}")
        if a.valid_from or a.valid_to:  # when it holds in the world, as its agent said
            start = when(a.valid_from) if a.valid_from else "always"
            end = when(a.valid_to) if a.valid_to else "until further notice"
            tree.add(f"valid from {start} to {end}")
        tree.add(f"source: {esc(a.source, '-')}; evidence: {esc(a.evidence, '-')}")
        if b.epoch:
            state = f", superseded by {b.epoch.superseded_by}" if b.epoch.superseded_at else ""
            tree.add(f"epoch {b.epoch.name} ({plural(b.epoch.assertions, 'assertion')}{state})")
        for p in b.derived_from:
            tree.add(f"derived from {short(p.id)} {p.subject}={val(p.value)} ({p.lifecycle})")
        hist = tree.add("history")
        for v in b.history:
            move = f"{v.prev_lifecycle} → {v.lifecycle}" if v.prev_lifecycle else str(v.lifecycle)
            reason = f": {esc(v.reason)}" if v.reason else ""
            step = hist.add(f"{when(v.tx_from)}  {v.cause}  {move}  by {v.actor}{reason}")
            for other in v.superseded:
                step.add(f"superseding {other}")
        for c in b.corrections:
            tree.add(f"[red]corrected[/] {c.id} by {c.by}: {esc(c.reason)}")
        console.print(tree)


def trace(console: Console, tr: Trace) -> None:
    def read(q: QueryRecord) -> str:
        return f"query {q.id} by [bold]{q.agent}[/] lens '{q.lens}' at {when(q.at)}" + (
            f"  [yellow]{q.hidden.summary()}[/]" if q.hidden.count else ""
        )

    if tr.decision:
        d = tr.decision
        root = Tree(f"[bold]decision[/] {d.id}: {esc(d.action)}  by {d.agent} at {when(d.at)}")
        nodes = [(root.add(read(q)), q) for q in tr.queries]
    else:  # a query's trace: the query is the root, not a child of itself
        root = Tree(read(tr.queries[0]) if tr.queries else f"[bold]query[/] {tr.root}")
        nodes = [(root, q) for q in tr.queries[:1]]
    by_id = {a.id: a for a in tr.assertions}
    for node, q in nodes:
        for item in q.returned:
            a = by_id.get(item.assertion_id)
            leaf = node.add(
                f"{item.subject} = {val(item.value)}  served as {life(item.lifecycle)} "
                f"{item.confidence:.2f}  {short(item.assertion_id)}"
                + (f"  (now {life(a.lifecycle)})" if a and a.lifecycle != item.lifecycle else "")
            )
            if a:
                leaf.add(f"agent {a.agent}; source {esc(a.source, '-')}; epoch {a.epoch or '-'}")
    console.print(root)
    console.print(
        f"agents: {', '.join(tr.agents)}  sources: {esc(', '.join(tr.sources), '-')}  "
        f"epochs: {', '.join(tr.epochs) or '-'}"
    )
    if tr.decision and tr.checks is not None:
        checked(console, tr.decision, tr.checks)


_OUTCOME_STYLE = {"passed": "green", "warned": "yellow", "violated": "red"}


def checked(console: Console, d: DecisionRecord, checks: list[CheckRecord]) -> None:
    """A decision's pre-flight checks: what its agent checked in the hour before it."""
    if not checks:
        console.print(f"[yellow]no pre-flight check by {d.agent} in the hour before it[/]")
        return
    newest = f"the newest {len(checks)} " if len(checks) == CHECKS_SHOWN else ""
    console.print(f"{newest}pre-flight checks by {d.agent} in the hour before it:")
    for c in checks:
        outcome = f"[{_OUTCOME_STYLE[c.outcome]}]{c.outcome}[/]"
        if c.outcome == "violated":
            hits = (v["matched"] for v in c.violations if v["severity"] == "violation")
            outcome += f" ({esc(', '.join(hits))})"
        plan = c.plan or "items " + ", ".join(c.items)
        console.print(f"  {when(c.at)} {outcome}  {esc(plan[:80])}  {c.id}")
    if len(checks) == CHECKS_SHOWN:
        since = rfc3339(from_us(to_us(d.at) - CHECKS_BEFORE_US))
        console.print(
            f"  older ones: episteme checks --agent {d.agent} --since {since}"
            f" --before {checks[-1].seq}",
            highlight=False,
        )


def impact(console: Console, im: Impact) -> None:
    a = im.assertion
    root = Tree(f"[bold]{a.subject}[/] = {val(a.value)}  {life(a.lifecycle)}  {a.id}")
    agents = ", ".join(f"{k} ×{n}" for k, n in im.agents.items()) or "nobody"
    queries = "audited query" if im.queries == 1 else "audited queries"
    served = root.add(f"served in {im.queries} {queries}, to {agents}")
    for q in im.recent_queries:
        served.add(f"{q.id} at {when(q.at)} to {esc(q.agent)} through {esc(q.lens)}")
    if im.recent_queries and (older := im.queries - len(im.recent_queries)) > 0:
        served.add(f"[dim]and {older:,} older (--recent lists up to the newest {MAX_RECENT:,})[/]")
    dec = root.add(f"{plural(len(im.decisions), 'decision')} cited those queries")
    for d in im.decisions:
        dec.add(f"{d.id}: {esc(d.action)} by {d.agent} at {when(d.at)}")
    der = root.add(f"{plural(len(im.derived), 'assertion')} derived from it")
    for x in im.derived:
        der.add(f"{short(x.id)} {x.subject} = {val(x.value)} ({x.lifecycle})")
    console.print(root)


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def tokens(rows: Sequence[TokenRecord], now: Instant) -> Table:
    table = Table("id", "principal", "kind", "roles", "state", "created", "expires", box=None)
    for t in rows:
        st = t.state_at(now)
        colour = {"active": "green", "expired": "yellow", "revoked": "red"}[st]
        expires = "never" if t.expires_at is None else when(t.expires_at)
        table.add_row(
            t.id, esc(t.principal), t.kind, ", ".join(t.roles), f"[{colour}]{st}[/]",
            f"{when(t.created_at)} by {esc(t.created_by)}", expires,
        )  # fmt: skip
    return table


def denials(rows: Sequence[Denial]) -> Table:
    table = Table("at", "principal", "tried", "on", "why refused", box=None)
    for d in rows:
        table.add_row(when(d.at), esc(d.principal), d.operation, esc(d.target), esc(d.reason))
    return table
