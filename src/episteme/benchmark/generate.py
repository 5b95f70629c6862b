"""A realistic ledger for benchmarks, deterministic from a seed.

The generator simulates D days of an agent fleet in memory — batches of assertions
(some in epochs), reviews that approve, reject and deprecate, supersessions, a few
corrections and epoch retractions, audited queries through the built-in lenses
answered from the simulated state, and decisions citing recent queries — and appends
the resulting events with `Store.backfill`, which chains and projects them exactly
like live writes. So `verify` and `rebuild` hold on a generated ledger too.

Subject popularity is skewed (a few subjects are read far more than the rest), and the
most read subject keeps one approved assertion, served over 10,000 times at the reference
size: the impact benchmark needs one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from whenever import Instant

from episteme.ledger.core import content_record, query_id_for, served_payload
from episteme.ledger.journal import Draft, EventKind
from episteme.ledger.model import HIDDEN_IDS, LIVE
from episteme.ledger.store import Store
from episteme.timeutil import to_us

_DOMAINS = (
    "auth",
    "db",
    "net",
    "k8s",
    "cache",
    "queue",
    "billing",
    "search",
    "cdn",
    "mail",
    "storage",
    "observability",
)
_SERVICES = (
    "api",
    "gateway",
    "worker",
    "scheduler",
    "ingest",
    "router",
    "store",
    "proxy",
    "indexer",
    "notifier",
    "ledger",
    "session",
    "token",
    "payment",
    "profile",
    "feed",
    "media",
    "export",
    "import",
    "audit",
    "cron",
    "edge",
    "admin",
    "hooks",
    "sync",
)
_KEYS = (
    "version",
    "replicas",
    "timeout_ms",
    "pool_size",
    "algorithm",
    "region",
    "owner",
    "endpoint",
    "tls",
    "retries",
    "limit",
    "image",
    "port",
    "quota",
    "ttl",
    "backend",
    "mode",
)
_ATTRS = ("current", "default", "max", "min", "primary")
_LENSES = (("approved", 0.7), ("latest", 0.2), ("consensus", 0.1))


@dataclass(frozen=True)
class Spec:
    """What to generate. The defaults are the benchmark's reference ledger."""

    assertions: int = 1_000_000
    subjects: int = 20_000
    agents: int = 100
    days: int = 30
    queries: int = 2_000_000
    seed: int = 7


@dataclass
class Summary:
    """What was generated: the counts `bench generate` reports."""

    events: int = 0
    assertions: int = 0
    moves: int = 0
    corrections: int = 0
    queries: int = 0
    decisions: int = 0
    hot_served: int = 0  # how often the most served assertion was served


def subject_name(i: int) -> str:
    """The i-th subject: unique by construction, 3 or 4 levels deep."""
    name = f"{_DOMAINS[i % 12]}.{_SERVICES[(i // 12) % 25]}{i // 300}.{_KEYS[i % 17]}"
    return name + f".{_ATTRS[i % 5]}" if i % 3 == 0 else name


class _Sim:
    """The simulated ledger state the generated events imply."""

    def __init__(self, spec: Spec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self.subjects = [subject_name(i) for i in range(spec.subjects)]
        self.agents = [f"agent-{i:03d}" for i in range(spec.agents)]
        # per subject: list of [id, lifecycle, confidence, agent, kind] in recorded order
        self.by_subject: list[list[list[Any]]] = [[] for _ in range(spec.subjects)]
        self.where: dict[str, tuple[int, int]] = {}  # id -> (subject index, position)
        self.proposed: list[str] = []
        self.approved: list[str] = []
        self.epochs: dict[str, list[str]] = {}
        self.recent_queries: list[str] = []
        self.served_count: dict[str, int] = {}
        self.seq = 0
        self.batch_sizes: list[int] = []
        self.pinned = ""  # id of the hot subject's one approved assertion

    def pick_subject(self, skew: float) -> int:
        """A subject index; `skew` > 1 favours low indices (1: uniform)."""
        return int(self.spec.subjects * self.rng.random() ** skew)

    def state(self, aid: str) -> list[Any]:
        s, pos = self.where[aid]
        return self.by_subject[s][pos]

    def approved_on(self, s: int) -> list[str]:
        return [a[0] for a in self.by_subject[s] if a[1] == "approved" and a[4] == "fact"]


def generate(
    store: Store,
    spec: Spec,
    *,
    end: Instant | None = None,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Generate the ledger `spec` describes into an empty `store`, ending at `end`."""
    rng = random.Random(spec.seed)
    sim = _Sim(spec, rng)
    end_us = to_us(end or Instant.now())
    start_us = end_us - spec.days * 86_400_000_000
    summary = Summary()
    ops, sim.batch_sizes = _plan(spec, rng)
    step = (end_us - start_us) / max(1, len(ops))

    def events() -> Iterator[tuple[int, Draft]]:
        for k, op in enumerate(ops):
            at = start_us + int(k * step)
            draft = _OPS[op](sim, summary, at)
            if draft is None:
                continue
            sim.seq += 1
            summary.events += 1
            if progress is not None and summary.events % 10_000 == 0:
                progress(10_000)
            yield at, draft

    store.backfill(events())
    hot = max(sim.served_count.items(), key=lambda kv: kv[1], default=("", 0))
    summary.hot_served = hot[1]
    return summary


def _plan(spec: Spec, rng: random.Random) -> tuple[list[str], list[int]]:
    """The sequence of operations, interleaved uniformly over time."""
    sizes: list[int] = []
    left = spec.assertions
    while left > 0:
        n = rng.randint(1, 5) if rng.random() < 0.9 else rng.randint(100, 1000)
        sizes.append(min(n, left))
        left -= sizes[-1]
    moves = spec.assertions // 5
    decisions = spec.queries // 100
    ops = (["add"] * len(sizes)) + ["move"] * moves + ["query"] * spec.queries
    ops += ["decide"] * decisions + ["correct"] * max(1, spec.assertions // 2000)
    ops += ["retract"] * max(1, spec.days // 6)
    rng.shuffle(ops)
    # additions come first among equals so early reads have something to read
    first_adds = min(len(sizes), 50)
    ops = ["add"] * first_adds + [o for o in ops if o != "add"]
    adds_left = len(sizes) - first_adds
    positions = sorted(rng.randrange(first_adds, len(ops) + 1) for _ in range(adds_left))
    for offset, pos in enumerate(positions):
        ops.insert(pos + offset, "add")
    return ops, sizes


def _add(sim: _Sim, summary: Summary, at: int) -> Draft | None:
    rng = sim.rng
    size = sim.batch_sizes.pop() if sim.batch_sizes else 1
    agent = rng.choice(sim.agents)
    epoch = f"ingest-{sim.seq + 1}" if size >= 100 else None
    records: list[dict[str, Any]] = []
    superseded: list[list[str]] = []
    for _ in range(size):
        s = sim.pick_subject(1.3)
        kind = "observation" if s % 7 == 3 else "fact"
        lifecycle = "approved" if rng.random() < 0.4 else "proposed"
        value: Any = rng.choice((rng.randint(0, 10_000), f"v{rng.randint(0, 999)}", True))
        if not sim.pinned:  # the first assertion: the hot subject's answer, never replaced
            s, kind, lifecycle = 0, "fact", "approved"
        elif s == 0:
            lifecycle = "proposed"  # proposals pile up on it; none is approved
        rec = _record(sim, s, value, kind, agent, at, lifecycle, None if s == 0 else epoch)
        if rec["id"] in sim.where:  # same content in the same batch: draw a unique value
            unique = f"u{sim.seq}-{len(records)}"
            rec = _record(sim, s, unique, kind, agent, at, lifecycle, None if s == 0 else epoch)
        sim.pinned = sim.pinned or rec["id"]
        if lifecycle == "approved" and kind == "fact":
            for old in sim.approved_on(s):
                superseded.append([old, rec["id"]])
                sim.state(old)[1] = "superseded"
        entry = [rec["id"], lifecycle, rec["confidence"], agent, kind]
        sim.where[rec["id"]] = (s, len(sim.by_subject[s]))
        sim.by_subject[s].append(entry)
        (sim.approved if lifecycle == "approved" else sim.proposed).append(rec["id"])
        if rec["epoch"]:
            sim.epochs.setdefault(rec["epoch"], []).append(rec["id"])
        records.append(rec)
    summary.assertions += len(records)
    payload = {"assertions": records, "superseded": superseded}
    return Draft(EventKind.ASSERTIONS_ADDED, agent, payload)


def _record(
    sim: _Sim, s: int, value: Any, kind: str, agent: str, at: int, lifecycle: str, epoch: str | None
) -> dict[str, Any]:
    return content_record(
        subject=sim.subjects[s],
        value=value,
        kind=kind,
        agent=agent,
        recorded_at=at,
        lifecycle=lifecycle,
        confidence=round(sim.rng.uniform(0.5, 1.0), 2),
        source=f"https://docs.internal/{sim.subjects[s].replace('.', '/')}",
        epoch=epoch,
    )


def _pop_live(sim: _Sim, pool: list[str], want: str) -> str | None:
    while pool:
        aid = pool.pop(sim.rng.randrange(len(pool)))
        if sim.state(aid)[1] == want:
            return aid
    return None


def _move(sim: _Sim, summary: Summary, at: int) -> Draft | None:
    rng = sim.rng
    roll = rng.random()
    if roll < 0.9:
        aid = _pop_live(sim, sim.proposed, "proposed")
        to = "approved" if roll < 0.6 else "rejected"
    else:
        aid = _pop_live(sim, sim.approved, "approved")
        to = "deprecated"
    if aid is None or aid == sim.pinned:
        return None
    if to == "approved" and sim.where[aid][0] == 0:
        to = "rejected"  # the hot subject keeps its one approved answer
    entry = sim.state(aid)
    superseded: list[str] = []
    if to == "approved" and entry[4] == "fact":
        s = sim.where[aid][0]
        superseded = [o for o in sim.approved_on(s) if o != aid]
        for old in superseded:
            sim.state(old)[1] = "superseded"
        sim.approved.append(aid)
    entry[1] = to
    summary.moves += 1
    payload = {"id": aid, "to": to, "reason": "reviewed", "superseded": superseded}
    return Draft(EventKind.ASSERTION_MOVED, "reviewer", payload)


def _correct(sim: _Sim, summary: Summary, at: int) -> Draft | None:
    aid = _pop_live(sim, sim.approved, "approved") or _pop_live(sim, sim.proposed, "proposed")
    if aid is None or aid == sim.pinned:
        return None
    entry = sim.state(aid)
    previous = entry[1]
    entry[1] = "rejected"
    summary.corrections += 1
    payload = {
        "correction_id": f"x_{sim.seq:024x}",
        "id": aid,
        "from": previous,
        "reason": "wrong value",
        "replacement": None,
        "confirmed": None,
        "superseded": [],
        "constraint": None,
    }
    return Draft(EventKind.ASSERTION_CORRECTED, "oncall", payload)


def _retract(sim: _Sim, summary: Summary, at: int) -> Draft | None:
    if not sim.epochs:
        return None
    name = sim.rng.choice(sorted(sim.epochs))
    ids = sim.epochs.pop(name)
    retracted = [i for i in ids if sim.state(i)[1] != "rejected"]
    for i in retracted:
        sim.state(i)[1] = "rejected"
    payload = {"epoch": name, "reason": "re-ingested", "retracted": retracted}
    return Draft(EventKind.EPOCH_SUPERSEDED, "oncall", payload)


def _query(sim: _Sim, summary: Summary, at: int) -> Draft | None:
    rng = sim.rng
    s = sim.pick_subject(2.0)
    agent = rng.choice(sim.agents)
    roll, lens = rng.random(), "approved"
    for name, weight in _LENSES:
        if roll < weight:
            lens = name
            break
        roll -= weight
    entries = sim.by_subject[s]
    if lens == "approved":
        shown = [e for e in entries if e[1] == "approved"]
    elif lens == "latest":
        live = [e for e in entries if e[1] != "rejected"]
        shown = live[-1:]
    else:
        shown = sorted((e for e in entries if e[1] in LIVE), key=lambda e: -e[2])
    shown_ids = {e[0] for e in shown}
    hidden: dict[str, Any] = {"count": 0, "by_lifecycle": {}, "by_reason": {}, "ids": []}
    for e in entries:
        if e[0] not in shown_ids:
            hidden["count"] += 1
            hidden["by_lifecycle"][e[1]] = hidden["by_lifecycle"].get(e[1], 0) + 1
            reason = "older" if lens == "latest" and e[1] != "rejected" else "lifecycle"
            hidden["by_reason"][reason] = hidden["by_reason"].get(reason, 0) + 1
            if e[1] in LIVE and len(hidden["ids"]) < HIDDEN_IDS:
                hidden["ids"].append(e[0])
    qid = query_id_for(agent, at, sim.seq + 1)
    returned = [[e[0], sim.subjects[s], e[1], e[2]] for e in shown]
    for e in shown:
        sim.served_count[e[0]] = sim.served_count.get(e[0], 0) + 1
    sim.recent_queries.append(qid)
    if len(sim.recent_queries) > 50:
        del sim.recent_queries[0]
    summary.queries += 1
    latency = rng.randint(80, 400)
    payload = served_payload(qid, lens, sim.subjects[s], None, None, returned, hidden, latency, {})
    return Draft(EventKind.QUERY_SERVED, agent, payload)


def _decide(sim: _Sim, summary: Summary, at: int) -> Draft | None:
    if not sim.recent_queries:
        return None
    rng = sim.rng
    cited = sorted(
        set(rng.sample(sim.recent_queries, min(len(sim.recent_queries), rng.randint(1, 3))))
    )
    did = f"d_{sim.seq + 1:024x}"
    summary.decisions += 1
    payload = {"decision_id": did, "action": "rolled out change", "query_ids": cited, "context": {}}
    return Draft(EventKind.DECISION_RECORDED, rng.choice(sim.agents), payload)


_OPS: dict[str, Callable[[_Sim, Summary, int], Draft | None]] = {
    "add": _add,
    "move": _move,
    "correct": _correct,
    "retract": _retract,
    "query": _query,
    "decide": _decide,
}
