"""Diagnosis sessions, their events and incidents, for every SQL store.

Sessions are worker state, written in their own short transactions (like the job
queue), never inside the journal's writer. Rows hold credential references only.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from episteme.ledger.canonical import without_nul
from episteme.ledger.sql.learning import following, where
from episteme.ledger.sql.projector import Conn, Us, us

SESSION_COLUMNS = (
    "id, status, problem, environment, context, requester, plan, approved, decided_by,"
    " reason, result, error, incident, created_at, updated_at, expires_at"
)
_SESSION_FIELDS = tuple(c.strip() for c in SESSION_COLUMNS.split(","))
_TIMES = {"created_at", "updated_at", "expires_at"}
_INCIDENT_FIELDS = (
    "key",
    "group_key",
    "status",
    "labels",
    "session_id",
    "alerts",
    "opened_at",
    "updated_at",
)


def _row(r: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(_SESSION_FIELDS, r, strict=True))


_APPEND_TRIES = 20


def _value(column: str, value: Any) -> Any:
    """A column's value as stored: times as timestamps, and text without NUL characters,
    which PostgreSQL cannot store (what a caller gives is checked before; what is left is
    text the diagnosis produced, such as an error quoting a command's output)."""
    if column in _TIMES and value is not None:
        return Us(value)
    return without_nul(value) if isinstance(value, str) else value


class _NumberTaken(Exception):
    """Another append took the event number this transaction counted on."""


def _append(conn: Conn, session_id: str, at_us: int, event: str) -> int | None:
    """Append an event with the next number; None when a racing append took it."""
    row = conn.execute(
        "INSERT INTO diagnosis_events (session_id, n, at, event) SELECT ?,"
        " coalesce(max(n), 0) + 1, ?, ? FROM diagnosis_events WHERE session_id = ?"
        " ON CONFLICT DO NOTHING RETURNING n",
        (session_id, Us(at_us), event, session_id),
    ).fetchone()
    return None if row is None else int(row[0])


class DiagnosisReads:
    @property
    def conn(self) -> Conn:
        raise NotImplementedError

    def diagnosis_session(self, session_id: str) -> dict[str, Any] | None:
        r = self.conn.execute(
            f"SELECT {SESSION_COLUMNS} FROM diagnosis_sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return None if r is None else _row(r)

    def diagnosis_sessions(
        self, limit: int = 100, after: str | None = None
    ) -> list[dict[str, Any]]:
        """Sessions, newest first (then by id); with `after`, those that follow the
        session of that id."""
        cond = ""
        args: list[Any] = []
        if after is not None:
            next_page, args = following(
                self.conn, "diagnosis_sessions", "id", "created_at", after, "diagnosis session",
                "; if it was deleted since, start again from the newest",
            )  # fmt: skip
            cond = f" WHERE {next_page}"
        rows = self.conn.execute(
            f"SELECT {SESSION_COLUMNS} FROM diagnosis_sessions{cond}"
            " ORDER BY created_at DESC, id LIMIT ?",
            [*args, limit],
        )
        return [_row(r) for r in rows]

    def incidents(
        self, limit: int = 100, after: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Incidents alerts opened, newest first (then by key), `status` ("open",
        "resolved") alone if given; with `after`, those that follow the incident of that
        key."""
        cond, args = where(("status = ?", status))
        if after is not None:
            next_page, more = following(
                self.conn, "incidents", "key", "opened_at", after, "incident"
            )
            cond, args = f"{cond} AND {next_page}", [*args, *more]
        rows = self.conn.execute(
            f"SELECT {', '.join(_INCIDENT_FIELDS)} FROM incidents WHERE {cond}"
            " ORDER BY opened_at DESC, key LIMIT ?",
            [*args, limit],
        )
        return [dict(zip(_INCIDENT_FIELDS, r, strict=True)) for r in rows]

    def diagnosis_events(self, session_id: str, after: int = 0) -> list[tuple[int, str]]:
        return [(n, event) for n, _, event in self.diagnosis_timed_events(session_id, after)]

    def diagnosis_timed_events(self, session_id: str, after: int = 0) -> list[tuple[int, int, str]]:
        """A session's events after number `after`: (number, time in µs, event)."""
        rows = self.conn.execute(
            "SELECT n, at, event FROM diagnosis_events WHERE session_id = ? AND n > ? ORDER BY n",
            (session_id, after),
        )
        return [(int(r[0]), int(r[1]), r[2]) for r in rows]


class DiagnosisWrites:
    def _jobs_transaction(self) -> AbstractContextManager[Conn]:
        raise NotImplementedError

    def save_diagnosis_session(self, row: dict[str, Any]) -> None:
        """Insert or update a session row (every column given)."""
        values = [_value(f, row[f]) for f in _SESSION_FIELDS]
        updates = ", ".join(f"{f} = excluded.{f}" for f in _SESSION_FIELDS[1:])
        marks = ",".join("?" * len(_SESSION_FIELDS))
        with self._jobs_transaction() as conn:
            conn.execute(
                f"INSERT INTO diagnosis_sessions ({SESSION_COLUMNS}) VALUES ({marks})"
                f" ON CONFLICT (id) DO UPDATE SET {updates}",
                values,
            )

    def move_diagnosis_session(
        self,
        session_id: str,
        from_status: Sequence[str],
        changes: dict[str, Any],
        event: tuple[int, str] | None = None,
    ) -> bool:
        """Change a session only if its status is one of `from_status` (False otherwise):
        two approvals racing on two servers cannot both win.

        `event` (its time, its text) is appended in the same transaction, so whoever
        reads the new status finds the event that goes with it.
        """
        sets = ", ".join(f"{k} = ?" for k in changes)
        args = [_value(k, v) for k, v in changes.items()]
        marks = ",".join("?" * len(from_status))
        for _ in range(_APPEND_TRIES):
            try:
                with self._jobs_transaction() as conn:
                    row = conn.execute(
                        f"UPDATE diagnosis_sessions SET {sets} WHERE id = ?"
                        f" AND status IN ({marks}) RETURNING id",
                        [*args, session_id, *from_status],
                    ).fetchone()
                    if row is None:
                        return False
                    if event is not None and _append(conn, session_id, *event) is None:
                        raise _NumberTaken  # undoes the move; the next try takes the next n
                return True
            except _NumberTaken:
                continue
        raise RuntimeError(f"session {session_id}: could not append an event")

    def add_diagnosis_event(self, session_id: str, at_us: int, event: str) -> int:
        """Append one event to a session's stream; its number (1, 2, ...).

        Two appends racing for the same number: the loser finds it taken and takes the next.
        """
        for _ in range(_APPEND_TRIES):
            with self._jobs_transaction() as conn:
                n = _append(conn, session_id, at_us, event)
            if n is not None:
                return n
        raise RuntimeError(f"session {session_id}: could not append an event")

    def delete_diagnosis_session(self, session_id: str) -> bool:
        with self._jobs_transaction() as conn:
            conn.execute("DELETE FROM diagnosis_events WHERE session_id = ?", (session_id,))
            row = conn.execute(
                "DELETE FROM diagnosis_sessions WHERE id = ? RETURNING id", (session_id,)
            ).fetchone()
        return row is not None

    def open_incident(
        self, key: str, group_key: str, labels: str, now_us: int, reopen: bool = True
    ) -> tuple[bool, dict[str, Any] | None]:
        """Open an incident for `key`, open it again when it was resolved and `reopen`
        (the alert fires anew), or count one more alert on it.

        (True, None) when this call opened it; (False, its row) when it was there already.
        """
        with self._jobs_transaction() as conn:
            new = conn.execute(
                "INSERT INTO incidents (key, group_key, status, labels, session_id, alerts,"
                " opened_at, updated_at) VALUES (?, ?, 'open', ?, NULL, 1, ?, ?)"
                " ON CONFLICT (key) DO NOTHING RETURNING key",
                (key, group_key, labels, Us(now_us), Us(now_us)),
            ).fetchone()
            if new is None and reopen:  # it fired before: again, if it had resolved since
                new = conn.execute(
                    "UPDATE incidents SET status = 'open', labels = ?, session_id = NULL,"
                    " alerts = 1, opened_at = ?, updated_at = ? WHERE key = ?"
                    " AND status = 'resolved' RETURNING key",
                    (labels, Us(now_us), Us(now_us), key),
                ).fetchone()
            if new is not None:
                return True, None
            conn.execute(
                "UPDATE incidents SET alerts = alerts + 1, updated_at = ? WHERE key = ?",
                (Us(now_us), key),
            )
            r = conn.execute(
                "SELECT status, session_id FROM incidents WHERE key = ?", (key,)
            ).fetchone()
        return False, {"status": r[0], "session_id": r[1]}

    def resolve_incident(self, key: str, now_us: int) -> bool:
        """Mark the open incident `key` resolved (its alert stopped firing): the next time
        it fires, it opens again. Whether there was one open."""
        with self._jobs_transaction() as conn:
            row = conn.execute(
                "UPDATE incidents SET status = 'resolved', updated_at = ? WHERE key = ?"
                " AND status = 'open' RETURNING key",
                (Us(now_us), key),
            ).fetchone()
        return row is not None

    def link_incident(self, key: str, session_id: str, now_us: int) -> None:
        with self._jobs_transaction() as conn:
            conn.execute(
                "UPDATE incidents SET session_id = ?, updated_at = ? WHERE key = ?",
                (session_id, us(now_us), key),
            )
