"""Reads and writes of what the ledger learns, for every SQL store.

Checks and webhooks are projections of the journal (`projector` writes them). The
gardener's own state, its cursor, the trust evidence it derives and the notifications
it raises, is written here, in one transaction per batch that also moves the cursor:
a batch is applied whole or not at all, and applying it twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import orjson

from episteme.errors import InvalidInput
from episteme.ledger.canonical import canonical
from episteme.ledger.model import Assertion, Candidate
from episteme.ledger.records import CheckRecord, NotificationRecord
from episteme.ledger.sql.projector import OPEN, Conn, Us, us
from episteme.timeutil import from_us


@dataclass(frozen=True, slots=True)
class Evidence:
    """One row of trust evidence: a success or failure weight for an agent on a subject."""

    seq: int
    agent: str
    role: str
    assertion_id: str
    subject: str
    at: int
    success: float
    failure: float
    reason: str


class Weighed(NamedTuple):
    """One piece of evidence as a score weighs it: whose, when, and its two weights."""

    agent: str
    at: int
    success: float
    failure: float


@dataclass(frozen=True, slots=True)
class Note:
    """A notification to raise once (by `key`), and the webhooks to deliver it to."""

    key: str
    type: str
    seq: int | None
    at: int
    summary: str
    data: dict[str, Any]
    deliver: tuple[tuple[str, Any], ...] = ()
    """(webhook name, job payload) for each webhook that takes this type."""


@dataclass(frozen=True, slots=True)
class Cursor:
    name: str
    seq: int
    updated_at: int | None
    scanned_at: int | None


def where(*filters: tuple[str, Any]) -> tuple[str, list[Any]]:
    """A WHERE condition of the `(clause, value)` filters whose value is not None."""
    given = [(c, v) for c, v in filters if v is not None]
    return " AND ".join([c for c, _ in given] or ["1 = 1"]), [v for _, v in given]


def earlier(alias: str, seq: int | None) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """`where` filters for the rows of a list (newest first) recorded before journal
    position `seq`, for the next page: below it, and (so that an index on the time stops
    where the page starts, not at the newest row) at most the time of the last event
    before it, which no earlier event exceeds."""
    return (f"{alias}seq < ?", seq), (
        f"{alias}at <= (SELECT at FROM journal WHERE seq < ? ORDER BY seq DESC LIMIT 1)",
        seq,
    )


def following(
    conn: Conn, table: str, key: str, at: str, after: str, what: str, hint: str = ""
) -> tuple[str, list[Any]]:
    """A condition (and its arguments) for the rows of `table`, listed by `at` newest
    first then by `key`, that follow the row whose `key` is `after`: the next page. One
    that names no row is refused, rather than answered with an empty page that would end
    a walk early."""
    found = conn.execute(f"SELECT {at} FROM {table} WHERE {key} = ?", [after]).fetchone()
    if found is None:
        raise InvalidInput(
            f"no {what} has the {key} {after!r}: `after` takes the {key} of the last of the"
            f" page before{hint}",
            field="after",
        )
    return f"{at} <= ? AND ({at} < ? OR {key} > ?)", [Us(found[0]), Us(found[0]), after]


def _range(column: str, prefix: str) -> tuple[str, list[Any]]:
    return f"({column} = ? OR ({column} > ? AND {column} < ?))", [
        prefix,
        prefix + ".",
        prefix + "/",
    ]


_T = TypeVar("_T")
TRUST_CHUNK = 200
"""Agents (or agent-topic pairs) per statement of a batched trust read: well inside every
engine's limit on bound parameters."""
GARDENER = "gardener"
"""The gardener's cursor: the last event it applied, and when it last looked for expiries."""
RAISED_ELSEWHERE = "raised-elsewhere"
"""Not a gardener: a mark set when a journal is imported or copied (notifications that the
events up to it raise were raised by the ledger they came from, and delivered there), and
moved to the gardener's cursor when it replays (they were raised here already). The
gardener records them without delivering them again."""


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), TRUST_CHUNK):
        yield items[i : i + TRUST_CHUNK]


class LearningReads:
    """Reads of checks, webhooks, trust evidence, notifications and the cursor."""

    @property
    def conn(self) -> Conn:
        raise NotImplementedError

    def checks(
        self,
        agent: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int = 100,
        *,
        before: int | None = None,
    ) -> list[CheckRecord]:
        """Audited pre-flight checks, newest first."""
        cond, args = where(
            ("agent = ?", agent),
            ("at >= ?", us(since)),
            ("at <= ?", us(until)),
            *earlier("", before),
        )
        rows = self.conn.execute(
            "SELECT id, seq, at, agent, plan, scope, items, checked, violations, context, tags"
            f" FROM checks WHERE {cond} ORDER BY at DESC, seq DESC LIMIT ?",
            [*args, limit],
        )
        return [
            CheckRecord.model_construct(
                id=r[0],
                seq=r[1],
                at=from_us(r[2]),
                agent=r[3],
                plan=r[4],
                scope=orjson.loads(r[5]),
                items=orjson.loads(r[6]),
                checked=r[7],
                violations=orjson.loads(r[8]),
                context=orjson.loads(r[9]),
                tags=orjson.loads(r[10]),
            )
            for r in rows
        ]

    def webhook_specs(self) -> dict[str, tuple[dict[str, Any], int, str]]:
        """Each webhook's spec (as JSON data), when it was set and by whom."""
        rows = self.conn.execute("SELECT name, spec, at, by FROM webhooks ORDER BY name")
        return {r[0]: (orjson.loads(r[1]), r[2], r[3]) for r in rows}

    def trust_evidence(
        self, agent: str | None, prefix: str | None, until: int | None
    ) -> list[Evidence]:
        """Evidence rows (oldest first) for `agent` on `prefix` and below, up to `until`."""
        cond, args = where(("agent = ?", agent), ("at <= ?", us(until)))
        if prefix is not None:
            clause, pargs = _range("subject", prefix)
            cond, args = f"{cond} AND {clause}", [*args, *pargs]
        rows = self.conn.execute(
            "SELECT seq, agent, role, assertion_id, subject, at, success, failure, reason"
            f" FROM trust_evidence WHERE {cond} ORDER BY seq, agent, role, assertion_id",
            args,
        )
        return [Evidence(*r) for r in rows]

    def trust_weights(self, agents: Sequence[str], topic: str, until: int) -> list[Weighed]:
        """The evidence of `agents` on `topic` and below recorded up to `until`, as
        weights, each agent's in the order it was recorded. One statement per 200 agents."""
        clause, args = _range("subject", topic)
        out: list[Weighed] = []
        for chunk in _chunks(agents):
            out += map(
                Weighed._make,
                self.conn.execute(
                    "SELECT agent, at, success, failure FROM trust_evidence"
                    f" WHERE agent IN ({','.join('?' * len(chunk))}) AND {clause} AND at <= ?"
                    " ORDER BY seq, agent, role, assertion_id",
                    [*chunk, *args, Us(until)],
                ),
            )
        return out

    def notifications(
        self,
        type: str | None = None,
        since: int | None = None,
        limit: int = 100,
        until: int | None = None,
        *,
        after: str | None = None,
    ) -> list[NotificationRecord]:
        """Notifications raised, newest first (the newest time first, then by
        key); with `after`, those that follow the notification of that key."""
        cond, args = where(("type = ?", type), ("at >= ?", us(since)), ("at <= ?", us(until)))
        if after is not None:
            next_page, more = following(
                self.conn, "notifications", "key", "at", after, "notification"
            )
            cond, args = f"{cond} AND {next_page}", [*args, *more]
        rows = self.conn.execute(
            "SELECT key, type, seq, at, summary, data FROM notifications"
            f" WHERE {cond} ORDER BY at DESC, key LIMIT ?",
            [*args, limit],
        )
        return [
            NotificationRecord.model_construct(
                key=r[0],
                type=r[1],
                seq=r[2],
                at=from_us(r[3]),
                summary=r[4],
                data=orjson.loads(r[5]),
            )
            for r in rows
        ]

    def trust_totals(
        self, pairs: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[float, float, int]]:
        """(successes, failures, at) by (agent, top-level topic), for those of `pairs` with
        evidence: their evidence, decayed to `at`. One statement per 200 pairs."""
        found: dict[tuple[str, str], tuple[float, float, int]] = {}
        for chunk in _chunks(sorted(set(pairs))):
            rows = self.conn.execute(
                "SELECT t.agent, t.topic, t.successes, t.failures, t.at"
                f" FROM (VALUES {','.join(['(?,?)'] * len(chunk))}) AS x"
                " JOIN trust_totals t ON t.agent = x.column1 AND t.topic = x.column2",
                [v for pair in chunk for v in pair],
            )
            found |= {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
        return found

    def garden_cursor(self, name: str) -> Cursor:
        r = self.conn.execute(
            "SELECT cursor, updated_at, scanned_at FROM gardener WHERE name = ?", (name,)
        ).fetchone()
        if r is None:
            return Cursor(name, 0, None, None)
        return Cursor(name, r[0], r[1], r[2])

    def expired(self, after: int, until: int) -> list[Assertion]:
        """Approved assertions whose valid time ended in (after, until], after they were
        recorded (one recorded already over changed nothing when it ended)."""
        rows = self.conn.execute(
            "SELECT a.id, a.subject, a.value, a.kind, a.agent, a.source, a.evidence, a.epoch,"
            " a.derived_from, a.valid_from, a.valid_to, a.recorded_at, v.lifecycle,"
            " v.confidence FROM assertions a JOIN versions v ON v.arow = a.rowid"
            f" AND v.tx_to = {OPEN} WHERE a.valid_to > ? AND a.valid_to <= ?"
            " AND a.recorded_at < a.valid_to"
            " AND v.lifecycle = 'approved' ORDER BY a.valid_to, a.id",
            (Us(after), Us(until)),
        )
        return [Candidate(*r).assertion() for r in rows]


class LearningWrites:
    """The gardener's transactions (they never wait for the journal's writer)."""

    def _jobs_transaction(self) -> AbstractContextManager[Conn]:
        raise NotImplementedError

    def garden_commit(
        self,
        name: str,
        expected: int,
        cursor: int,
        evidence: Sequence[Evidence],
        notes: Sequence[Note],
        now_us: int,
        scanned_at: int | None = None,
        half_life_us: float | None = None,
    ) -> bool:
        """Apply one batch and move the cursor from `expected` to `cursor`, atomically.

        False (and nothing written) when the cursor is no longer at `expected`: another
        gardener applied this batch first. Rows already present are left as they are.
        With `half_life_us`, the running totals per agent and top-level topic take the
        batch's evidence (exactly once: they move with the cursor).
        """
        with self._jobs_transaction() as conn:
            conn.execute(
                "INSERT INTO gardener (name, cursor, updated_at) VALUES (?, 0, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (name, Us(now_us)),
            )
            moved = conn.execute(
                "UPDATE gardener SET cursor = ?, updated_at = ?,"
                " scanned_at = coalesce(?, scanned_at) WHERE name = ? AND cursor = ?"
                " RETURNING cursor",
                (cursor, Us(now_us), us(scanned_at), name, expected),
            ).fetchone()
            if moved is None:
                return False
            if evidence:
                conn.executemany(
                    "INSERT INTO trust_evidence (seq, agent, role, assertion_id, subject, at,"
                    " success, failure, reason) VALUES (?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT DO NOTHING",
                    [
                        (e.seq, e.agent, e.role, e.assertion_id, e.subject, Us(e.at),
                         e.success, e.failure, e.reason)
                        for e in evidence
                    ],
                )  # fmt: skip
                if half_life_us:
                    _add_totals(conn, evidence, half_life_us)
            _raise(conn, notes, now_us)
        return True

    def raise_notes(self, notes: Sequence[Note], now_us: int) -> None:
        """Record notifications raised outside the journal (a diagnosis session waiting
        for its approver), and queue their deliveries, in one transaction; one raised
        before (its key) is left as it is, and not delivered again."""
        with self._jobs_transaction() as conn:
            _raise(conn, notes, now_us)

    def garden_reset(self, name: str, now_us: int) -> None:
        """Forget the trust evidence and move the cursor back to the start (replay).

        Notifications stay: replaying raises none twice. One the replay raises anew for
        an event applied before (a new policy's lower alert line) is recorded but sent to
        no webhook: the events up to the old cursor count as raised already, as a copy's
        do. The expiry scan carries on from where it was (it follows the clock, not the
        journal): reset, its next look went back one day only, and expiries between that
        and its last scan were never raised.
        """
        with self._jobs_transaction() as conn:
            conn.execute(
                "INSERT INTO gardener (name, cursor, updated_at)"
                " SELECT ?, cursor, ? FROM gardener WHERE name = ?"
                " ON CONFLICT (name) DO UPDATE SET cursor = CASE"
                " WHEN excluded.cursor > gardener.cursor THEN excluded.cursor"
                " ELSE gardener.cursor END",
                (RAISED_ELSEWHERE, Us(now_us), name),
            )
            conn.execute("DELETE FROM trust_evidence")
            conn.execute("DELETE FROM trust_totals")
            conn.execute(
                "INSERT INTO gardener (name, cursor, updated_at) VALUES (?, 0, ?)"
                " ON CONFLICT (name) DO UPDATE SET cursor = 0, updated_at = excluded.updated_at",
                (name, Us(now_us)),
            )


def _raise(conn: Conn, notes: Sequence[Note], now_us: int) -> None:
    for n in notes:
        new = conn.execute(
            "INSERT INTO notifications (key, type, seq, at, summary, data)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING RETURNING key",
            (n.key, n.type, n.seq, Us(n.at), n.summary, canonical(n.data)),
        ).fetchone()
        if new is None:
            continue  # raised before: delivered (or queued) once already
        for _, payload in n.deliver:
            conn.execute(
                "INSERT INTO jobs (queue, payload, state, attempts, run_after,"
                " created_at) VALUES ('webhook', ?, 'ready', 0, ?, ?)",
                (canonical(payload), Us(now_us), Us(now_us)),
            )


def _add_totals(conn: Conn, evidence: Sequence[Evidence], half_life_us: float) -> None:
    totals: dict[tuple[str, str], tuple[float, float, int]] = {}
    for e in evidence:
        key = (e.agent, e.subject.split(".", 1)[0])
        if key not in totals:
            r = conn.execute(
                "SELECT successes, failures, at FROM trust_totals WHERE agent = ? AND topic = ?",
                key,
            ).fetchone()
            totals[key] = (0.0, 0.0, e.at) if r is None else (r[0], r[1], r[2])
        s, f, at = totals[key]
        if e.at >= at:  # decay the total to this evidence's time, then add it
            d = 0.5 ** ((e.at - at) / half_life_us)
            totals[key] = (s * d + e.success, f * d + e.failure, e.at)
        else:  # older evidence (never in journal order): decay it to the total's time
            d = 0.5 ** ((at - e.at) / half_life_us)
            totals[key] = (s + e.success * d, f + e.failure * d, at)
    conn.executemany(
        "INSERT INTO trust_totals (agent, topic, successes, failures, at) VALUES (?,?,?,?,?)"
        " ON CONFLICT (agent, topic) DO UPDATE SET successes = excluded.successes,"
        " failures = excluded.failures, at = excluded.at",
        [(a, t, s, f, Us(at)) for (a, t), (s, f, at) in totals.items()],
    )
