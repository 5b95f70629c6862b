"""Projection of journal events into the tables, for every SQL store.

`apply` is the only code that writes projections: the live write path and
`rebuild` both call it, which is why a replay reproduces the tables exactly.
Statements are written once, in the SQL that SQLite and PostgreSQL share, with
`?` placeholders; a store's connection translates them where needed. Times travel
as `Us` (integer microseconds) so that PostgreSQL can bind them to `timestamptz`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from episteme.errors import IntegrityError
from episteme.ledger.canonical import canonical
from episteme.ledger.journal import Event, EventKind

OPEN = 9223372036854775807
"""tx_to of a version that is still current (PostgreSQL stores it as 'infinity')."""


class Us(int):
    """A time in integer microseconds, as a statement parameter (timestamptz there)."""

    __slots__ = ()


JSON_ESCAPES = ("\\\\", *(canonical(chr(c))[1:-1] for c in [0x22, *range(0x20)]))
"""The escapes canonical JSON writes inside a string (a backslash, a quote and the control
characters), in the order text search reads each as a space: a value's text is its
canonical JSON, and ``"line\\nnext"`` must index "next", not "nnext". A backslash in
JSON text always starts an escape, and ``\\\\`` goes first, so a backslash the value
holds never starts another."""


def search_text(value: str) -> str:
    """The text search indexes for a value's canonical JSON (`JSON_ESCAPES`)."""
    if "\\" not in value:  # every escape starts with one: most values have none
        return value
    for escape in JSON_ESCAPES:
        value = value.replace(escape, " ")
    return value


def search_sql(column: str, escapes: Sequence[str] = JSON_ESCAPES) -> str:
    """`search_text` as SQL (``replace`` is literal on both backends), or a stage of it:
    SQLite's parser takes about 30 nested calls, so its view runs two stages of half."""
    for escape in escapes:
        column = f"replace({column}, '{escape}', ' ')"
    return column


def us(value: int | None) -> Us | None:
    return None if value is None else Us(value)


class Rows(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """What projections and reads need of a connection (`Conn` is one)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Rows: ...
    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


Handler = Callable[[Conn, Event, dict[str, Any]], None]


def apply(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    """Project one event; `data` is its payload as a dict."""
    _HANDLERS[ev.kind](conn, ev, data)


# A batch of one names its row by expressions, not values (see _insert_assertions)
_NEXT_ROWID = "(SELECT coalesce(max(rowid), 0) + 1 FROM assertions)"
_ROWID_OF = "(SELECT rowid FROM assertions WHERE id = ?)"


def _insert_assertions(conn: Conn, ev: Event, batch: list[dict[str, Any]]) -> None:
    """Insert a batch of assertion records: one statement per table, rowids in order.

    A batch of one (every single assert) leaves its row id to the database: the insert
    takes the next one and the other tables look it up by assertion id, which spares
    PostgreSQL a statement and a round trip. A larger batch reads the first row id once.
    """
    one = len(batch) == 1
    if one:
        first, new_row, row_of, ref = 0, _NEXT_ROWID, _ROWID_OF, 1
    else:
        first = conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM assertions").fetchone()[0]
        new_row, row_of, ref = "?", "?", 0
    rows: list[tuple[Any, ...]] = []
    for a in batch:
        rows.append(
            (
                first + len(rows),
                a["id"],
                a["subject"],
                canonical(a["value"]),
                a["kind"],
                a["agent"],
                a["source"],
                a["evidence"],
                a["epoch"],
                canonical(a["derived_from"]),
                us(a["valid_from"]),
                us(a["valid_to"]),
                us(a["recorded_at"]),
                ev.seq,
            )
        )
    conn.executemany(
        "INSERT INTO assertions (rowid, id, subject, value, kind, agent, source, evidence, epoch,"
        f" derived_from, valid_from, valid_to, recorded_at, seq) VALUES ({new_row},"
        "?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [r[1:] for r in rows] if one else rows,
    )
    # below, r[ref] names the row: its row id, or for a batch of one its assertion id
    if isinstance(conn, sqlite3.Connection):  # PostgreSQL computes its tsvector column itself
        conn.executemany(
            f"INSERT INTO assertions_fts (rowid, subject, value, source) VALUES ({row_of},?,?,?)",
            [(r[ref], r[2], search_text(r[3]), r[6]) for r in rows],
        )
    conn.executemany(
        "INSERT INTO derivations (parent, child) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(p, a["id"]) for a in batch for p in a["derived_from"]],
    )
    conn.executemany(
        "INSERT INTO versions (arow, seq, subject, lifecycle, confidence, tx_from, tx_to,"
        f" prev_lifecycle, actor, reason, cause) VALUES ({row_of},?,?,?,?,?,?,NULL,?,NULL,'added')",
        [
            (r[ref], ev.seq, r[2], a["lifecycle"], a["confidence"], Us(ev.at), Us(OPEN), ev.actor)
            for r, a in zip(rows, batch, strict=True)
        ],
    )
    epochs = {a["epoch"]: a["agent"] for a in reversed(batch) if a["epoch"] is not None}
    conn.executemany(
        "INSERT INTO epochs (name, first_seq, created_at, created_by) VALUES (?,?,?,?)"
        " ON CONFLICT DO NOTHING",
        [(name, ev.seq, Us(ev.at), agent) for name, agent in epochs.items()],
    )


def _move(
    conn: Conn, ev: Event, assertion_id: str, to: str, cause: str, reason: str | None
) -> None:
    row = conn.execute(
        "UPDATE versions SET tx_to = ? WHERE tx_to = ?"
        " AND arow = (SELECT rowid FROM assertions WHERE id = ?)"
        " RETURNING arow, subject, lifecycle, confidence",
        (Us(ev.at), Us(OPEN), assertion_id),
    ).fetchone()
    if row is None:  # the ledger validated the move; a miss means a damaged projection
        raise IntegrityError(f"no current version of {assertion_id} (seq {ev.seq})")
    arow, subject, prev, confidence = row
    conn.execute(
        "INSERT INTO versions (arow, seq, subject, lifecycle, confidence, tx_from, tx_to,"
        " prev_lifecycle, actor, reason, cause) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (arow, ev.seq, subject, to, confidence, Us(ev.at), Us(OPEN), prev, ev.actor, reason, cause),
    )


def _supersede(conn: Conn, ev: Event, ids: list[str], by: str) -> None:
    for sid in ids:
        _move(conn, ev, sid, "superseded", "superseded", f"superseded by {by}")


def _added(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    _insert_assertions(conn, ev, data["assertions"])
    for sid, by in data["superseded"]:
        _supersede(conn, ev, [sid], by)


def _moved(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    _move(conn, ev, data["id"], data["to"], data["to"], data["reason"])
    _supersede(conn, ev, data["superseded"], data["id"])


def _corrected(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    _move(conn, ev, data["id"], "rejected", "corrected", data["reason"])
    replacement = data["replacement"]
    if replacement is not None:
        _insert_assertions(conn, ev, [replacement])
        _supersede(conn, ev, data["superseded"], replacement["id"])
    constraint = data["constraint"]
    if constraint is not None:
        _insert_constraint(conn, ev, constraint)
    conn.execute(
        "INSERT INTO corrections (id, seq, at, assertion_id, by, reason, replacement_id,"
        " constraint_id) VALUES (?,?,?,?,?,?,?,?)",
        (
            data["correction_id"],
            ev.seq,
            Us(ev.at),
            data["id"],
            ev.actor,
            data["reason"],
            replacement["id"] if replacement else data["confirmed"],
            constraint["id"] if constraint else None,
        ),
    )


def _epoch_superseded(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    reason = f"epoch {data['epoch']} superseded: {data['reason']}"
    for aid in data["retracted"]:
        _move(conn, ev, aid, "rejected", "retracted", reason)
    conn.execute(
        "UPDATE epochs SET superseded_seq = ?, superseded_at = ?, superseded_by = ?, reason = ?"
        " WHERE name = ?",
        (ev.seq, Us(ev.at), ev.actor, data["reason"], data["epoch"]),
    )


SERVED_CHUNK = 100
"""Served rows per statement (statements of each length are prepared once)."""


def _query_served(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    returned = data["returned"]
    conn.execute(
        "INSERT INTO queries (seq, id, at, agent, lens, subject, text, as_of, returned, hidden,"
        " latency_us) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            ev.seq,
            data["query_id"],
            Us(ev.at),
            ev.actor,
            data["lens"],
            data["subject"],
            data["text"],
            us(data["as_of"]),
            len(returned),
            data["hidden"]["count"],
            data["latency_us"],
        ),
    )
    if not returned:
        return
    # One statement per chunk of served rows, whatever their number, finding the rows'
    # ids in the statement itself: no lookup to wait for, no statement per row.
    for i in range(0, len(returned), SERVED_CHUNK):
        chunk = returned[i : i + SERVED_CHUNK]  # rows are [id, subject, lifecycle, confidence]
        rows = ",".join(["(?,?,?)"] * len(chunk))
        conn.execute(
            "INSERT INTO served (query_seq, arow, lifecycle, confidence)"
            f" SELECT ?, a.rowid, x.column2, x.column3 FROM (VALUES {rows}) AS x"
            " JOIN assertions a ON a.id = x.column1",
            [ev.seq, *(v for r in chunk for v in (r[0], r[2], r[3]))],
        )
    # then the exposure of every row at once, from the served rows just written (adjacent
    # in their index) rather than by each id again (a random page of the id index each)
    conn.execute(
        "INSERT INTO exposure (arow, agent, n) SELECT arow, ?, 1 FROM served"
        " WHERE query_seq = ? ON CONFLICT (arow, agent) DO UPDATE SET n = exposure.n + 1",
        (ev.actor, ev.seq),
    )


def _decision(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO decisions (id, seq, at, agent, action, context) VALUES (?,?,?,?,?,?)",
        (
            data["decision_id"],
            ev.seq,
            Us(ev.at),
            ev.actor,
            data["action"],
            canonical(data["context"]),
        ),
    )
    conn.executemany(
        "INSERT INTO citations (decision_id, query_id) VALUES (?, ?)",
        [(data["decision_id"], q) for q in data["query_ids"]],
    )
    conn.executemany(
        "INSERT INTO reliance (arow, decision_id) SELECT s.arow, ? FROM served s"
        " JOIN queries q ON q.seq = s.query_seq WHERE q.id = ? ON CONFLICT DO NOTHING",
        [(data["decision_id"], q) for q in data["query_ids"]],
    )


def _insert_constraint(conn: Conn, ev: Event, c: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO constraints (id, seq, at, scope, forbid, patterns, prefer, reason, origin,"
        " created_by, items, half_life_days, tags) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            c["id"],
            ev.seq,
            Us(ev.at),
            c["scope"],
            canonical(c["forbid"]),
            canonical(c["patterns"]),
            c["prefer"],
            c["reason"],
            c["origin"],
            ev.actor,
            canonical(c.get("items", [])),  # constraints of the first schema had neither
            float(c.get("half_life_days", 30.0)),
            canonical(tags := c.get("tags", [])),  # nor tags, before version 8
        ),
    )
    conn.executemany(
        "INSERT INTO constraint_tags (tag, constraint_id) VALUES (?,?)",
        [(t, c["id"]) for t in tags],
    )


def _constraint(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    _insert_constraint(conn, ev, data["constraint"])


def _retired(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    """A constraint retired: kept, and no longer met by checks."""
    conn.execute(
        "UPDATE constraints SET retired_at = ?, retired_by = ?, retired_reason = ? WHERE id = ?",
        (Us(ev.at), ev.actor, data["reason"], data["constraint_id"]),
    )


def _checked(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    """An audited pre-flight check; each constraint it hit is fresh again from now."""
    conn.execute(
        "INSERT INTO checks (id, seq, at, agent, plan, scope, items, checked, violations,"
        " context, tags) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (data["check_id"], ev.seq, Us(ev.at), ev.actor, data["plan"], canonical(data["scope"]),
         canonical(data["items"]), data["checked"], canonical(data["violations"]),
         canonical(data["context"]), canonical(data.get("tags", []))),
    )  # fmt: skip
    conn.executemany(
        "UPDATE constraints SET hits = hits + 1, last_hit_at = ? WHERE id = ?",
        [(Us(ev.at), v["constraint_id"]) for v in data["violations"]],
    )


def _webhook_set(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO webhooks (name, spec, seq, at, by) VALUES (?,?,?,?,?) ON CONFLICT (name)"
        " DO UPDATE SET spec = excluded.spec, seq = excluded.seq, at = excluded.at,"
        " by = excluded.by",
        (data["name"], canonical(data["spec"]), ev.seq, Us(ev.at), ev.actor),
    )


def _webhook_removed(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    conn.execute("DELETE FROM webhooks WHERE name = ?", (data["name"],))


def _lens(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO lenses (name, spec, seq, at, by) VALUES (?,?,?,?,?) ON CONFLICT (name)"
        " DO UPDATE SET spec = excluded.spec, seq = excluded.seq, at = excluded.at,"
        " by = excluded.by",
        (data["name"], canonical(data["spec"]), ev.seq, Us(ev.at), ev.actor),
    )


def _token_issued(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO tokens (id, seq, hash, principal, kind, roles, created_at, created_by,"
        " expires_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            data["token_id"],
            ev.seq,
            data["hash"],
            data["principal"],
            data["kind"],
            canonical(data["roles"]),
            Us(ev.at),
            ev.actor,
            us(data["expires_at"]),
        ),
    )


def _token_revoked(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    conn.executemany(
        "UPDATE tokens SET revoked_at = ?, revoked_by = ?, revoke_reason = ? WHERE id = ?",
        [(Us(ev.at), ev.actor, data["reason"], t) for t in data["token_ids"]],
    )


def _denied(conn: Conn, ev: Event, data: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO denials (seq, at, principal, token_id, operation, target, reason)"
        " VALUES (?,?,?,?,?,?,?)",
        (ev.seq, Us(ev.at), ev.actor, data["token_id"], data["operation"], data["target"],
         data["reason"]),
    )  # fmt: skip


_HANDLERS: dict[str, Handler] = {
    EventKind.ASSERTIONS_ADDED: _added,
    EventKind.ASSERTION_MOVED: _moved,
    EventKind.ASSERTION_CORRECTED: _corrected,
    EventKind.EPOCH_SUPERSEDED: _epoch_superseded,
    EventKind.QUERY_SERVED: _query_served,
    EventKind.DECISION_RECORDED: _decision,
    EventKind.LENS_DEFINED: _lens,
    EventKind.CONSTRAINT_ADDED: _constraint,
    EventKind.CONSTRAINT_CHECKED: _checked,
    EventKind.CONSTRAINT_RETIRED: _retired,
    EventKind.WEBHOOK_SET: _webhook_set,
    EventKind.WEBHOOK_REMOVED: _webhook_removed,
    EventKind.TOKEN_ISSUED: _token_issued,
    EventKind.TOKEN_REVOKED: _token_revoked,
    EventKind.ACCESS_DENIED: _denied,
}

PROJECTIONS = (
    "assertions",
    "derivations",
    "versions",
    "epochs",
    "queries",
    "served",
    "exposure",
    "reliance",
    "decisions",
    "citations",
    "corrections",
    "constraints",
    "constraint_tags",
    "checks",
    "webhooks",
    "lenses",
    "tokens",
    "denials",
)
"""The tables that `rebuild` recomputes and compares (the FTS index is rebuilt too)."""
