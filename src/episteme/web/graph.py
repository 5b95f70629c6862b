"""Drawings the console renders server-side as inline SVG: layered graphs and line charts.

A trace (decision → queries → assertions → agents → sources and epochs) and an impact
(assertion → queries → agents → decisions) are layered graphs: each layer is a column,
drawn left to right; within a column, nodes are ordered by the mean position of the
nodes that point at them, which removes most crossings in graphs of this size. Trust
over time is a line chart. This module only computes coordinates; the templates draw
them, so every label goes through the template's escaping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

NODE_W = 184
NODE_H = 48
COL_GAP = 52
ROW_GAP = 16
PAD = 12
LABEL_CHARS = 24


@dataclass(frozen=True)
class Spec:
    """A node as a page describes it, before layout."""

    key: str
    label: str
    note: str = ""
    kind: str = "node"
    """A CSS class (``decision``, ``query``, ``assertion``, ``agent``, ``source``…)."""
    href: str | None = None
    title: str = ""
    """The full text, shown as a tooltip (labels are cut to fit the box)."""


@dataclass(frozen=True)
class Node:
    spec: Spec
    x: float
    y: float
    label: str
    note: str

    @property
    def text_x(self) -> float:
        return self.x + 10

    @property
    def label_y(self) -> float:
        return self.y + 20

    @property
    def note_y(self) -> float:
        return self.y + 38


@dataclass(frozen=True)
class Edge:
    path: str
    kind: str


@dataclass
class Graph:
    width: float
    height: float
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    headers: list[tuple[float, str]] = field(default_factory=list)
    """(x, title) of each column."""
    node_w: int = NODE_W
    node_h: int = NODE_H


def cut(text: str, limit: int = LABEL_CHARS) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def layered(
    layers: Sequence[tuple[str, Sequence[Spec]]], edges: Iterable[tuple[str, str]]
) -> Graph:
    """Lay out named layers as columns; edges go from a key to a key in a later column.

    A key that appears in several layers is drawn in the first; edges to unknown keys
    or backwards are left out.
    """
    column: dict[str, int] = {}
    kept: list[tuple[str, list[Spec]]] = []
    for i, (title, specs) in enumerate(layers):
        mine = []
        for s in specs:
            if s.key not in column:
                column[s.key] = i
                mine.append(s)
        kept.append((title, mine))
    pairs = list(dict.fromkeys((a, b) for a, b in edges if a in column and b in column))
    pairs = [(a, b) for a, b in pairs if column[a] < column[b]]
    parents: dict[str, list[str]] = {}
    for a, b in pairs:
        parents.setdefault(b, []).append(a)

    rank: dict[str, float] = {}
    ordered: list[list[Spec]] = []
    for _, specs in kept:

        def mean(s: Spec) -> float:
            ups = [rank[p] for p in parents.get(s.key, []) if p in rank]
            return sum(ups) / len(ups) if ups else float("inf")

        # stable: nodes without placed parents keep the order the page gave
        specs = sorted(specs, key=mean)
        for n, s in enumerate(specs):
            rank[s.key] = n
        ordered.append(specs)

    tallest = max((len(s) for s in ordered), default=0)
    height = max(1, tallest) * (NODE_H + ROW_GAP) - ROW_GAP + 2 * PAD + 24
    graph = Graph(width=len(ordered) * (NODE_W + COL_GAP) - COL_GAP + 2 * PAD, height=height)
    place: dict[str, Node] = {}
    for i, specs in enumerate(ordered):
        x = PAD + i * (NODE_W + COL_GAP)
        graph.headers.append((x, kept[i][0]))
        block = len(specs) * (NODE_H + ROW_GAP) - ROW_GAP
        top = PAD + 24 + (height - 2 * PAD - 24 - block) / 2
        for n, s in enumerate(specs):
            node = Node(
                s, x, top + n * (NODE_H + ROW_GAP), cut(s.label), cut(s.note, LABEL_CHARS + 4)
            )
            place[s.key] = node
            graph.nodes.append(node)
    for a, b in pairs:
        src, dst = place[a], place[b]
        x1, y1 = src.x + NODE_W, src.y + NODE_H / 2
        x2, y2 = dst.x, dst.y + NODE_H / 2
        mid = (x1 + x2) / 2
        path = f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
        graph.edges.append(Edge(path, dst.spec.kind))
    return graph


@dataclass(frozen=True)
class Series:
    name: str
    points: str
    """SVG polyline points."""
    last: float
    last_x: float
    last_y: float


@dataclass
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_w: int
    plot_h: int
    series: list[Series]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]


def line_chart(
    series: Mapping[str, Sequence[float]],
    x_labels: Sequence[str],
    *,
    width: int = 640,
    height: int = 220,
    ticks: int = 4,
) -> Chart:
    """A chart of values in [0, 1] at evenly spaced times; `x_labels` names each time."""
    left, top, right, bottom = 40, 12, 16, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    count = len(x_labels)

    def x(i: int) -> float:
        return left + (plot_w * i / (count - 1) if count > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - min(1.0, max(0.0, v)))

    out = []
    for name, values in series.items():
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        last = values[-1] if values else 0.5
        out.append(Series(name, pts, last, x(len(values) - 1), y(last)))
    y_ticks = [(y(v), f"{v:.2f}") for v in (0.0, 0.25, 0.5, 0.75, 1.0)]
    marks = sorted({round(k * (count - 1) / ticks) for k in range(ticks + 1)}) if count else []
    x_ticks = [(x(i), x_labels[i]) for i in marks]
    return Chart(width, height, left, top, plot_w, plot_h, out, y_ticks, x_ticks)
