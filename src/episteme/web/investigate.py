"""Console pages that follow an answer: trace and impact drawn as graphs, and correct.

A trace reads left to right as DESIGN §2 states it: decision → queries → assertions
(as served, and their state now) → agents → sources and epochs. An impact starts from
an assertion: the reads that served it and what was derived from it, the agents that
saw it, the decisions built on those reads. Correcting shows the impact first and asks
for a confirmation; only a principal whose roles allow `Op.CORRECT` gets either step.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from episteme.errors import InvalidInput
from episteme.ledger.access import Op
from episteme.ledger.canonical import read_value
from episteme.ledger.investigate import CHECKS_BEFORE_US, CHECKS_SHOWN
from episteme.ledger.records import Impact, Trace
from episteme.timeutil import from_us, to_us

from .graph import Graph, Spec, layered
from .pages import older
from .render import PageRoute, page, redirect, shown, when
from .session import Allowed, Console, Reader

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def trace_graph(t: Trace) -> Graph:
    """The layered drawing of a trace."""
    layers: list[tuple[str, list[Spec]]] = []
    edges: list[tuple[str, str]] = []
    if t.decision is not None:
        d = t.decision
        note = f"{d.agent} · {when(d.at)}"
        layers.append(("decision", [Spec(d.id, d.action, note, "decision", None, d.action)]))
        edges += [(d.id, q) for q in d.query_ids]
    served: dict[str, str] = {}
    queries = []
    for q in t.queries:
        asked = q.subject or f"“{q.text}”"
        label = f"{q.agent} asked {asked}"
        queries.append(
            Spec(q.id, label, f"lens {q.lens} · {when(q.at)}", "query", f"/trace/{q.id}")
        )
        for item in q.returned:
            served.setdefault(item.assertion_id, str(item.lifecycle))
            edges.append((q.id, item.assertion_id))
    layers.append(("queries", queries))
    facts, agents, origins = [], [], []
    for a in t.assertions:
        label = f"{a.subject} = {shown(a.value)}"
        then = served.get(a.id, "?")
        note = f"served {then} · now {a.lifecycle}" if then != a.lifecycle else f"{then}"
        kind = f"assertion lc-{a.lifecycle}"
        facts.append(Spec(a.id, label, note, kind, f"/blame/{a.id}", label))
        who = f"agent:{a.agent}"
        agents.append(Spec(who, a.agent, "asserted", "agent", f"/agents/{a.agent}"))
        edges.append((a.id, who))
        if a.source:
            origins.append(Spec(f"source:{a.source}", a.source, "source", "source", None, a.source))
            edges.append((who, f"source:{a.source}"))
        if a.epoch:
            origins.append(Spec(f"epoch:{a.epoch}", a.epoch, "epoch", "epoch"))
            edges.append((who, f"epoch:{a.epoch}"))
    layers += [("assertions", facts), ("agents", agents), ("sources and epochs", origins)]
    return layered(layers, edges)


def impact_graph(i: Impact) -> Graph:
    """The layered drawing of an impact."""
    a = i.assertion
    root = Spec(
        a.id, f"{a.subject} = {shown(a.value)}", str(a.lifecycle), f"assertion lc-{a.lifecycle}"
    )
    reads, edges = [], []
    for q in i.recent_queries:
        reads.append(Spec(q.id, f"{q.agent}: lens {q.lens}", when(q.at), "query", f"/trace/{q.id}"))
        edges += [(a.id, q.id), (q.id, f"agent:{q.agent}")]
    for child in i.derived:
        label = f"{child.subject} = {shown(child.value)}"
        note = f"derived · {child.lifecycle}"
        reads.append(Spec(child.id, label, note, "assertion", f"/blame/{child.id}"))
        edges.append((a.id, child.id))
    agents = [
        Spec(f"agent:{name}", name, f"served {n}×", "agent", f"/agents/{name}")
        for name, n in i.agents.items()
    ]
    decisions = []
    shown_reads = {q.id for q in i.recent_queries}
    for d in i.decisions:
        decisions.append(
            Spec(d.id, d.action, f"{d.agent} · {when(d.at)}", "decision", f"/trace/{d.id}")
        )
        cited = [q for q in d.query_ids if q in shown_reads]
        edges += [(q, d.id) for q in cited] or [(f"agent:{d.agent}", d.id)]
    layers = [
        ("assertion", [root]),
        ("read by", reads),
        ("agents", agents),
        ("decisions", decisions),
    ]
    return layered(layers, edges)


@router.get("/trace/{ref}")
def trace_page(ref: str, who: Reader) -> Response:
    t = who.ledger.trace(ref)
    served = {i.assertion_id: i.lifecycle for q in t.queries for i in q.returned}
    more = None  # the agent page, that hour, below the last check listed
    if t.decision is not None and t.checks is not None:
        start = from_us(to_us(t.decision.at) - CHECKS_BEFORE_US)
        more = older(t.checks, "checks_before", start, t.decision.at, full=CHECKS_SHOWN)
    return page(
        who.request,
        "trace.html",
        trace=t,
        graph=trace_graph(t),
        served=served,
        checks_older=more,
    )


@router.get("/impact/{ref}")
def impact_page(ref: str, who: Reader) -> Response:
    i = who.ledger.impact(ref)
    done = who.ledger.corrections(i.assertion.id)
    return page(who.request, "impact.html", impact=i, graph=impact_graph(i), done=done)


@router.get("/assertions/{ref}/correct")
def correct_form(ref: str, who: Console = Allowed(Op.CORRECT)) -> Response:
    a = who.ledger.get(ref)
    done = who.ledger.corrections(a.id)
    return page(who.request, "correct.html", a=a, done=done, form={}, error=None)


@router.post("/assertions/{ref}/correct")
def correct(ref: str, who: Console = Allowed(Op.CORRECT, form=True)) -> Response:
    ledger = who.ledger
    a = ledger.get(ref)
    done = ledger.corrections(a.id)
    form = {k: who.field(k) for k in ("reason", "value")} | {"forbid": who.field("forbid")}
    extra: dict[str, Any] = {}
    try:
        if not form["reason"].strip():
            raise InvalidInput("say why it is wrong: a correction needs a reason", field="reason")
        if form["value"].strip():
            extra["value"] = read_value(form["value"])
    except InvalidInput as exc:
        return page(who.request, "correct.html", 400, a=a, done=done, form=form, error=exc.message)
    forbid = form["forbid"] == "on"
    if who.field("step") != "apply" or done:
        impact = ledger.impact(a.id)
        return page(
            who.request,
            "confirm.html",
            a=a,
            done=done,
            form=form,
            right=shown(extra["value"]) if "value" in extra else None,
            forbid=forbid,
            impact=impact,
            graph=impact_graph(impact),
        )
    made = ledger.correct(
        a.id, by=who.principal.name, reason=form["reason"].strip(), forbid=forbid, **extra
    )
    who.request.app.state.metrics.corrections.inc()
    return redirect(f"/blame/{a.id}?corrected={made.correction.id}")
