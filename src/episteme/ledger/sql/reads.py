"""Reads of the projections, over one connection, for every SQL store.

The same reader serves the store's read connections and, inside a write
transaction, the write connection (so validation sees what it is about to change).
Every statement is an index lookup; see docs/ledger.md for the indexes. Statements
use the SQL that SQLite and PostgreSQL share; the few that differ (full-text search,
JSON fields of the journal) are class attributes that a store's reader overrides.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterator, Sequence
from typing import Any, NamedTuple

import orjson

from episteme.errors import InvalidInput, NotFound
from episteme.ledger.access import Denial, Role, TokenRecord
from episteme.ledger.journal import Event
from episteme.ledger.lenses import LensSpec
from episteme.ledger.model import (
    HIDDEN_IDS,
    Assertion,
    Candidate,
    Candidates,
    Hidden,
    Lifecycle,
    article,
)
from episteme.ledger.records import (
    Change,
    ChangeCursor,
    ConstraintRecord,
    CorrectionRecord,
    DecisionRecord,
    EpochRecord,
    QueryRecord,
    ServedItem,
    Version,
)
from episteme.ledger.sql.diagnosis import DiagnosisReads
from episteme.ledger.sql.learning import LearningReads, earlier, where
from episteme.ledger.sql.projector import OPEN, Conn, Rows, Us, us
from episteme.timeutil import from_us

_A_COLS = (
    "a.id, a.subject, a.value, a.kind, a.agent, a.source, a.evidence, a.epoch, a.derived_from,"
    " a.valid_from, a.valid_to, a.recorded_at, v.lifecycle, v.confidence"
)
_FROM_CURRENT = f"FROM assertions a JOIN versions v ON v.arow = a.rowid AND v.tx_to = {OPEN}"
_LIFECYCLES = {str(x): x for x in Lifecycle}
_AROW = "SELECT rowid FROM assertions WHERE id = ?"
_ADDED_FIRST = "(v.prev_lifecycle IS NOT NULL)"
"""Orders an assertion's two versions of one event (added, then superseded by a later
item of its batch) as they were made. Their times cannot: a later event at the same
microsecond closes the second at the time the first was closed."""
_ID_PREFIXES = {
    "q_": "query",
    "d_": "decision",
    "x_": "correction",
    "c_": "constraint",
    "k_": "check",
    "t_": "token",
}
_LETTERS = {kind: letter for letter, kind in _ID_PREFIXES.items()}
_ID_TABLES = {
    "query": "queries",
    "decision": "decisions",
    "correction": "corrections",
    "constraint": "constraints",
    "check": "checks",
    "token": "tokens",
}


def _opt(us: int | None) -> Any:
    return None if us is None else from_us(us)


def row_assertion(r: Sequence[Any]) -> Assertion:
    return Candidate(*r).assertion()


def _subject_ranges(subject: str) -> list[tuple[str, list[Any]]]:
    """`subject` itself, and everything below it, as two index ranges."""
    return [
        ("v.subject = ?", [subject]),
        ("v.subject > ? AND v.subject < ?", [subject + ".", subject + "/"]),  # '/' after '.'
    ]


def _subject_clause(subject: str | None) -> tuple[str, list[Any]]:
    """`subject` itself and everything below it (``auth`` covers ``auth.jwt.algorithm``)."""
    if subject is None:
        return "1 = 1", []
    (same, args), (below, more) = _subject_ranges(subject)
    return f"({same} OR ({below}))", args + more


def _window(subject: str | None, since: int, until: int) -> tuple[str, list[Any]]:
    """Versions (`v`) under `subject` recorded in [since, until]."""
    where, args = _subject_clause(subject)
    return f"WHERE {where} AND v.tx_from >= ? AND v.tx_from <= ?", [*args, Us(since), Us(until)]


def _search_words(text: str) -> list[list[str]]:
    """Each word of `text` as its parts split at ASCII punctuation, as both backends
    index text; words with no part are left out, and text with none is refused."""
    words = [parts for w in text.split() if (parts := [t for t in _PUNCT.split(w) if t])]
    if not words:
        raise InvalidInput(
            "no words to search for: give words with letters or digits", field="text"
        )
    return words


def fts_query(text: str) -> str:
    """Quote each word so that user input is never FTS5 syntax."""
    _search_words(text)
    return " ".join('"{}"'.format(w.replace('"', '""')) for w in text.split())


ACCENTED = (
    "ÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝàáâãäåçèéêëìíîïñòóôõöùúûüýÿĀāĂăĄąĆ"
    "ćĈĉĊċČčĎďĒēĔĕĖėĘęĚěĜĝĞğĠġĢģĤĥĨĩĪīĬĭĮįİĴĵĶķĹĺĻļĽľŃńŅņŇňŌōŎŏŐő"
    "ŔŕŖŗŘřŚśŜŝŞşŠšŢţŤťŨũŪūŬŭŮůŰűŲųŴŵŶŷŸŹźŻżŽžſƠơƯưǍǎǏǐǑǒǓǔǦǧǨǩǪǫ"
    "ǰǴǵǸǹȀȁȂȃȄȅȆȇȈȉȊȋȌȍȎȏȐȑȒȓȔȕȖȗȘșȚțȞȟȦȧȨȩȮȯȲȳḀḁḂḃḄḅḆḇḊḋḌḍḎḏḐḑḒ"
    "ḓḘḙḚḛḞḟḠḡḢḣḤḥḦḧḨḩḪḫḬḭḰḱḲḳḴḵḶḷḺḻḼḽḾḿṀṁṂṃṄṅṆṇṈṉṊṋṔṕṖṗṘṙṚṛṞṟṠṡṢ"
    "ṣṪṫṬṭṮṯṰṱṲṳṴṵṶṷṼṽṾṿẀẁẂẃẄẅẆẇẈẉẊẋẌẍẎẏẐẑẒẓẔẕẖẗẘẙẛẠạẢảẸẹẺẻẼẽỈỉỊị"
    "ỌọỎỏỤụỦủỲỳỴỵỶỷỸỹ"
)
"""The Latin letters with one diacritic that SQLite's FTS5 (tokenizer unicode61, which
removes diacritics) indexes as their base letter, and the long s (U+017F); `UNACCENTED`
holds those base letters, in the same order. PostgreSQL's `fts` column and its queries fold the same
letters (`translate`, migration 0004), so that a word is found alike on both."""
UNACCENTED = (
    "aaaaaaceeeeiiiinooooouuuuyaaaaaaceeeeiiiinooooouuuuyyaaaaaac"
    "cccccccddeeeeeeeeeegggggggghhiiiiiiiiijjkkllllllnnnnnnoooooo"
    "rrrrrrssssssssttttuuuuuuuuuuuuwwyyyzzzzzzsoouuaaiioouuggkkoo"
    "jggnnaaaaeeeeiiiioooorrrruuuusstthhaaeeooyyaabbbbbbddddddddd"
    "deeeeffgghhhhhhhhhhiikkkkkkllllllmmmmmmnnnnnnnnpppprrrrrrsss"
    "sttttttttuuuuuuvvvvwwwwwwwwwwxxxxyyzzzzzzhtwysaaaaeeeeeeiiii"
    "oooouuuuyyyyyyyy"
)
_FOLD = str.maketrans(ACCENTED, UNACCENTED)


def tsquery(text: str) -> str:
    """PostgreSQL's reading of `fts_query`: each word a phrase of its parts.

    Words split at ASCII punctuation, as the `fts` column's text does, their accents
    folded as it folds them (`ACCENTED`); the database folds case on both sides (its
    `simple` configuration), so it is left alone here.
    """
    words = _search_words(unicodedata.normalize("NFC", text).translate(_FOLD))
    return " & ".join(" <-> ".join(f"'{t}'" for t in parts) for parts in words)


_PUNCT = re.compile(r"[\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]+")


class PlanOnce(NamedTuple):
    """Statements a store sends around a lens's reads of a subject so that its planner
    plans them once per connection rather than at every query. Planning the three joins
    cost PostgreSQL more than running them (0.76 against 0.62 ms a query at 1 M), and
    it kept choosing to, since its estimate for a plan that fits every subject is higher
    than for one subject's."""

    before: tuple[str, ...]
    after: str
    """Puts back what `before` changed, as the transaction had it, for the rest of it."""


class Reader(LearningReads, DiagnosisReads):
    """Read methods over one connection (SQLite's SQL, which the others translate)."""

    MATCH = "v.arow IN (SELECT rowid FROM assertions_fts WHERE assertions_fts MATCH ?)"
    """Assertions whose words match the parameter (made by `match_text`)."""
    QUERY_ROWS = (
        "SELECT q.id, q.seq, q.at, q.agent, q.lens, q.subject, q.text, q.as_of, j.payload,"
        " q.latency_us FROM queries q JOIN journal j ON j.seq = q.seq {where}"
        " ORDER BY q.at DESC, q.seq DESC LIMIT ?"
    )
    """The newest query rows matching `{where}` (on `q`), with their journal payloads.
    SQLite walks its (agent, at) index in this order, the row id last, and stops at the
    limit."""
    NEWEST_SERVED: str | None = None
    """Where a store's planner needs it spelled out: the newest (at most N) query seqs up
    to a seq that served an assertion under a subject (`{where}` on `v.subject`)."""

    plan_once: PlanOnce | None = None
    """Sent around a lens's reads of a subject, where the store has such statements."""

    def __init__(self, conn: Conn | None = None, plan_once: PlanOnce | None = None) -> None:
        self._fixed = conn
        self.plan_once = plan_once
        self.head_at: int | None = None
        """Set by a writer holding the writer lock: the time of the journal's last event,
        so of every recorded assertion (nothing can be recorded later while it holds)."""

    @property
    def conn(self) -> Conn:
        assert self._fixed is not None
        return self._fixed

    @staticmethod
    def match_text(text: str) -> str:
        return fts_query(text)

    # -- assertions -------------------------------------------------------------------

    def assertion(self, assertion_id: str) -> Assertion | None:
        r = self.conn.execute(f"SELECT {_A_COLS} {_FROM_CURRENT} WHERE a.id = ?", (assertion_id,))
        row = r.fetchone()
        return None if row is None else row_assertion(row)

    def assertions(self, ids: Sequence[str]) -> list[Assertion]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f"SELECT {_A_COLS} {_FROM_CURRENT} WHERE a.id IN ({marks}) ORDER BY a.rowid", list(ids)
        )
        return [row_assertion(r) for r in rows]

    def candidates(
        self,
        subject: str | None,
        as_of: int | None = None,
        text: str | None = None,
        lifecycles: Collection[str] | None = None,
        listed: Collection[str] = (),
    ) -> Candidates:
        """Assertions under `subject` in their state at `as_of` (None: now).

        With `lifecycles`, only assertions in those states come back as rows; the others
        are counted by lifecycle (an index-only scan), and of those in the `listed`
        states the first `HIDDEN_IDS` come back by id, so a lens that shows little of a
        long history reads little of it.
        """
        rest = ""
        rest_args: list[Any] = []
        if as_of is None:
            rest += f" AND v.tx_to = {OPEN}"
        else:
            rest += " AND v.tx_to > ? AND v.tx_from <= ?"
            rest_args += [Us(as_of), Us(as_of)]
        if text is not None:
            rest += " AND " + self.MATCH
            rest_args.append(self.match_text(text))
        where, args = _subject_clause(subject)
        where += rest
        # a subject's reads only: their plans fit every subject (checked at 1 M), where a
        # text search's or the whole store's may depend on the words or the lifecycles
        plan = self.plan_once if subject is not None and text is None else None
        if plan is not None:
            for statement in plan.before:
                self.conn.execute(statement)
        args += rest_args
        states: list[str] = sorted(lifecycles) if lifecycles is not None else []
        only = ""
        hidden: Rows | None = None
        first: Rows | None = None
        if lifecycles is not None and len(states) < len(Lifecycle):
            marks = ",".join("?" * len(states))
            only = f" AND v.lifecycle IN ({marks})"
            # one range per branch, so that PostgreSQL counts from the index alone (an OR
            # of the two ranges makes it visit the table's page of every version)
            ranges = [("1 = 1", [])] if subject is None else _subject_ranges(subject)

            def branches(select: str, test: str, wanted: Sequence[str]) -> tuple[str, list[Any]]:
                sql = " UNION ALL ".join(
                    f"SELECT {select} FROM versions v WHERE {r}{rest}"
                    f" AND v.lifecycle {test} ({','.join('?' * len(wanted))})"
                    for r, _ in ranges
                )
                return sql, [a for _, r_args in ranges for a in (*r_args, *rest_args, *wanted)]

            counted, count_args = branches("v.lifecycle", "NOT IN", states)
            hidden = self.conn.execute(
                f"SELECT lifecycle, count(*) FROM ({counted}) x GROUP BY lifecycle", count_args
            )
            named = sorted(set(listed) - set(states))
            if named:
                # Sorted by an expression, and joined after the limit: a planner that can
                # read rows in the order of ORDER BY … LIMIT may walk every version or
                # assertion in key order, filtering, rather than find the few and sort
                # them (PostgreSQL's generic plans did: 1.2 s against 14 ms at 1 M).
                # One branch per range here too: SQLite's OR of two ranges costs twice.
                found, found_args = branches("v.arow", "IN", named)
                first = self.conn.execute(
                    f"SELECT f.arow, a.id FROM (SELECT arow FROM ({found}) x ORDER BY arow + 0"
                    f" LIMIT {HIDDEN_IDS}) f JOIN assertions a ON a.rowid = f.arow ORDER BY f.arow",
                    found_args,
                )
            args += states
        sql = (
            f"SELECT {_A_COLS}, v.arow FROM versions v JOIN assertions a ON a.rowid = v.arow"
            f" WHERE {where}{only} ORDER BY v.arow"
        )
        # the statements are sent before any is read: one round trip in a pipeline
        rows = self.conn.execute(sql, args)
        if plan is not None:
            self.conn.execute(plan.after)
        counts: dict[str, int] = {} if hidden is None else dict(hidden.fetchall())
        ids = [] if first is None else [(int(r[0]), str(r[1])) for r in first]
        return Candidates([Candidate(*r) for r in rows], counts, ids)

    def current_on_subject(self, subject: str) -> list[Assertion]:
        rows = self.conn.execute(
            f"SELECT {_A_COLS} {_FROM_CURRENT} WHERE v.subject = ? ORDER BY a.rowid", (subject,)
        )
        return [row_assertion(r) for r in rows]

    def existing_ids(self, ids: Sequence[str], recorded_at: int | None = None) -> set[str]:
        # Assertion ids are content ids of a microsecond: none recorded later than the
        # journal's head can exist yet (a writer's usual case, spared a round trip).
        if not ids:
            return set()
        if recorded_at is not None and self.head_at is not None and recorded_at > self.head_at:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(f"SELECT id FROM assertions WHERE id IN ({marks})", list(ids))
        return {r[0] for r in rows}

    def resolve(self, ref: str, want: str | None = None) -> tuple[str, str]:
        """Resolve an id or a unique prefix of one (at least 4 characters) to (kind, id).

        `want`, the kind the caller takes (query, constraint…): an id of another kind is
        refused, naming both, and one given without its letter (`2f30…` for `c_2f30…`)
        is looked up among that kind before among assertions. Case does not matter."""
        ref = ref.strip().lower()
        kind = _ID_PREFIXES.get(ref[:2], "assertion")
        if len(ref) < 4:
            raise InvalidInput(f"id {ref!r} is too short: give at least 4 characters", field="id")
        if not all(c.isalnum() or c == "_" for c in ref):
            raise InvalidInput(f"{ref!r} is not an id: ids are hexadecimal", field="id")
        if want is None or want == kind:
            rows = self._starting(kind, ref)
        elif kind == "assertion" and (rows := self._starting(want, _LETTERS.get(want, "") + ref)):
            kind = want  # the wanted kind's id without its letter
        elif kind == "assertion" and not self._starting(kind, ref):
            raise NotFound(f"no {want} with id {ref!r}", field="id")
        else:
            hint = f" ({_LETTERS[want]}…)" if want in _LETTERS else ""
            raise InvalidInput(
                f"{ref} is {article(kind)} id: give {article(want)} id{hint}", field="id"
            )
        if not rows:
            raise NotFound(f"no {kind} with id {ref!r}", field="id")
        if len(rows) > 1:
            some = ", ".join(f"{str(r[0])[: len(ref) + 4]}…" for r in rows[:3])
            more = ", …" if len(rows) > 3 else ""
            raise InvalidInput(
                f"id prefix {ref!r} is ambiguous ({some}{more}): give more characters",
                field="id",
            )
        return kind, str(rows[0][0])

    def _starting(self, kind: str, prefix: str) -> list[Any]:
        """Up to 4 ids of `kind` that start with `prefix`, in order."""
        return list(
            self.conn.execute(
                f"SELECT id FROM {_ID_TABLES.get(kind, 'assertions')}"
                " WHERE id >= ? AND id < ? ORDER BY id LIMIT 4",
                (prefix, prefix + "\U0010ffff"),
            ).fetchall()
        )

    def derived(self, parent_ids: Sequence[str]) -> list[Assertion]:
        """Assertions derived from any of `parent_ids`, transitively."""
        seen: set[str] = set(parent_ids)
        frontier = list(parent_ids)
        found: list[str] = []
        while frontier:
            marks = ",".join("?" * len(frontier))
            rows = self.conn.execute(
                f"SELECT child FROM derivations WHERE parent IN ({marks})", frontier
            )
            frontier = [r[0] for r in rows if r[0] not in seen]
            seen.update(frontier)
            found += frontier
        return self.assertions(found)

    def versions(self, assertion_id: str, *, superseded: bool = False) -> list[Version]:
        rows = self.conn.execute(
            "SELECT seq, lifecycle, confidence, tx_from, tx_to, prev_lifecycle, actor, reason,"
            f" cause, subject FROM versions v WHERE arow = ({_AROW})"
            f" ORDER BY seq, {_ADDED_FIRST}",
            (assertion_id,),
        ).fetchall()
        # what it superseded when it became approved (its subject's values, in that event)
        displaced: dict[int, list[str]] = {}
        if superseded and any(r[1] == Lifecycle.APPROVED for r in rows):
            for seq, other in self.conn.execute(
                "SELECT v.seq, a.id FROM versions v JOIN assertions a ON a.rowid = v.arow"
                " WHERE v.subject = ? AND v.cause = 'superseded' AND v.reason = ?"
                " ORDER BY v.seq, a.id",
                (rows[0][9], f"superseded by {assertion_id}"),
            ):
                displaced.setdefault(seq, []).append(other)
        return [
            Version.model_construct(
                seq=r[0],
                lifecycle=Lifecycle(r[1]),
                confidence=r[2],
                tx_from=from_us(r[3]),
                tx_to=None if r[4] == OPEN else from_us(r[4]),
                prev_lifecycle=None if r[5] is None else Lifecycle(r[5]),
                actor=r[6],
                reason=r[7],
                cause=r[8],
                superseded=displaced.get(r[0], []) if r[1] == Lifecycle.APPROVED else [],
            )
            for r in rows
        ]

    def changes(
        self,
        subject: str | None,
        since: int,
        until: int,
        limit: int | None = None,
        before: ChangeCursor | None = None,
    ) -> list[Change]:
        window, args = _window(subject, since, until)
        if before is not None:
            # below the cursor in (time, seq, assertion, added first) order; the time
            # bounds the walk of the time index, the rest breaks ties among one event's
            b = before
            window += (
                " AND v.tx_from <= ? AND (v.seq < ? OR (v.seq = ? AND"
                f" (v.arow < ({_AROW}) OR (v.arow = ({_AROW}) AND ? = 1"
                " AND v.prev_lifecycle IS NULL))))"
            )
            args += [Us(b.at), b.seq, b.seq, b.assertion_id, b.assertion_id, int(b.later)]
        source, outer = "versions v", window
        if limit is not None:
            # The newest `limit` versions, picked before the join, walking the time index
            # backwards: a version's time is its event's, and the journal's time never
            # goes back, so time then seq is seq order (sorting the window by seq alone
            # read all of its 104,390 versions at 1 M to keep 1,000: 105 against 1.3 ms)
            source = (
                f"(SELECT * FROM versions v {window}"
                " ORDER BY v.tx_from DESC, v.seq DESC, v.arow DESC,"
                f" {_ADDED_FIRST} DESC LIMIT ?) v"
            )
            outer, args = "", [*args, limit]
        rows = self.conn.execute(
            "SELECT v.seq, v.tx_from, v.cause, a.id, a.subject, a.value, a.agent, v.lifecycle,"
            f" v.prev_lifecycle, v.actor, v.reason FROM {source}"
            f" JOIN assertions a ON a.rowid = v.arow {outer}"
            f" ORDER BY v.seq, v.arow, {_ADDED_FIRST}",
            args,
        )
        life = _LIFECYCLES
        return [
            Change(
                r[0],
                from_us(r[1]),
                r[2],
                r[3],
                r[4],
                orjson.loads(r[5]),
                r[6],
                life[r[7]],
                None if r[8] is None else life[r[8]],
                r[9],
                r[10],
            )
            for r in rows
        ]

    def change_counts(self, subject: str | None, since: int, until: int) -> dict[str, int]:
        window, args = _window(subject, since, until)
        rows = self.conn.execute(
            f"SELECT v.cause, count(*) FROM versions v {window} GROUP BY v.cause", args
        )
        return {r[0]: r[1] for r in rows}

    # -- epochs, lenses, constraints, corrections ----------------------------------

    def epoch(self, name: str) -> EpochRecord | None:
        r = self.conn.execute(
            "SELECT e.name, e.created_at, e.created_by, (SELECT count(*) FROM assertions a"
            " WHERE a.epoch = e.name), e.superseded_at, e.superseded_by, e.reason"
            " FROM epochs e WHERE e.name = ?",
            (name,),
        ).fetchone()
        if r is None:
            return None
        return EpochRecord.model_construct(
            name=r[0],
            created_at=from_us(r[1]),
            created_by=r[2],
            assertions=r[3],
            superseded_at=_opt(r[4]),
            superseded_by=r[5],
            reason=r[6],
        )

    def epoch_members(self, name: str) -> list[Assertion]:
        rows = self.conn.execute(
            f"SELECT {_A_COLS} {_FROM_CURRENT} WHERE a.epoch = ? ORDER BY a.rowid", (name,)
        )
        return [row_assertion(r) for r in rows]

    def lens(self, name: str) -> LensSpec | None:
        r = self.conn.execute("SELECT spec FROM lenses WHERE name = ?", (name,)).fetchone()
        return None if r is None else LensSpec.model_validate_json(r[0])

    def lenses(self) -> dict[str, LensSpec]:
        rows = self.conn.execute("SELECT name, spec FROM lenses ORDER BY name")
        return {r[0]: LensSpec.model_validate_json(r[1]) for r in rows}

    def constraint(self, constraint_id: str) -> ConstraintRecord | None:
        rows = self._constraints("id = ?", [constraint_id], retired=True)
        return rows[0] if rows else None

    def constraints(
        self, scope: str | None = None, *, retired: bool = False
    ) -> list[ConstraintRecord]:
        if scope is None:
            return self._constraints("TRUE", [], retired=retired)
        # the scope itself, those above it (a constraint on `auth` covers `auth.jwt`) and
        # those below it (a plan for `auth.jwt` touches `auth.jwt.algorithm`); ranges, not
        # LIKE, whose `_` would match any character
        return self._constraints(
            "scope = ? OR substr(?, 1, length(scope) + 1) = scope || '.'"
            " OR (scope > ? AND scope < ?)",
            [scope, scope, scope + ".", scope + "/"],
            retired=retired,
        )

    def constraints_tagged(
        self, tags: Sequence[str] | None, *, retired: bool = False
    ) -> list[ConstraintRecord]:
        if tags is None:  # of any tag
            return self._constraints(
                "id IN (SELECT constraint_id FROM constraint_tags)", [], retired=retired
            )
        if not tags:
            return []
        return self._constraints(
            "id IN (SELECT constraint_id FROM constraint_tags WHERE tag IN"
            f" ({', '.join('?' * len(tags))}))",
            list(tags),
            retired=retired,
        )

    def _constraints(self, cond: str, args: list[Any], *, retired: bool) -> list[ConstraintRecord]:
        """The constraints where `cond` holds; the retired ones too only with `retired`."""
        live = "" if retired else " AND retired_at IS NULL"
        rows = self.conn.execute(
            "SELECT id, seq, at, scope, forbid, patterns, prefer, reason, origin, created_by,"
            " items, half_life_days, hits, last_hit_at, tags, retired_at, retired_by,"
            f" retired_reason FROM constraints WHERE ({cond}){live} ORDER BY seq",
            args,
        )
        return [
            ConstraintRecord.model_construct(
                id=r[0],
                seq=r[1],
                at=from_us(r[2]),
                scope=r[3],
                forbid=orjson.loads(r[4]),
                patterns=orjson.loads(r[5]),
                prefer=r[6],
                reason=r[7],
                origin=r[8],
                created_by=r[9],
                items=orjson.loads(r[10]),
                half_life_days=r[11],
                hits=r[12],
                last_hit_at=_opt(r[13]),
                tags=orjson.loads(r[14]),
                retired_at=_opt(r[15]),
                retired_by=r[16],
                retired_reason=r[17],
            )
            for r in rows
        ]

    def corrections_of(self, assertion_id: str) -> list[CorrectionRecord]:
        rows = self.conn.execute(
            "SELECT id, seq, at, assertion_id, by, reason, replacement_id, constraint_id"
            " FROM corrections WHERE assertion_id = ? ORDER BY seq",
            (assertion_id,),
        )
        return [_correction(r) for r in rows]

    def correction(self, correction_id: str) -> CorrectionRecord | None:
        r = self.conn.execute(
            "SELECT id, seq, at, assertion_id, by, reason, replacement_id, constraint_id"
            " FROM corrections WHERE id = ?",
            (correction_id,),
        ).fetchone()
        return None if r is None else _correction(r)

    # -- the audit -----------------------------------------------------------------

    def query_record(self, query_id: str) -> QueryRecord | None:
        found = self._queries("WHERE q.id = ?", [query_id], 1)
        return found[0] if found else None

    def query_records(self, query_ids: Sequence[str]) -> list[QueryRecord]:
        """Audited reads by id, newest first (ids not found are left out)."""
        if not query_ids:
            return []
        marks = ",".join("?" * len(query_ids))
        return self._queries(f"WHERE q.id IN ({marks})", list(query_ids), len(query_ids))

    def queries(
        self,
        agent: str | None = None,
        subject: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int = 100,
        *,
        before: int | None = None,
    ) -> list[QueryRecord]:
        """Audited reads, newest first, filtered by agent, subject served and window, and
        with `before`, recorded before that journal position."""
        if subject is not None and agent is None and since is None and self.NEWEST_SERVED:
            return self._newest_on_subject(subject, until, limit, before)
        cond, args = where(
            ("q.agent = ?", agent),
            ("q.at >= ?", us(since)),
            ("q.at <= ?", us(until)),
            *earlier("q.", before),
        )
        clauses = [cond]
        if subject is not None:
            on, sargs = _subject_clause(subject)
            clauses.append(
                "(q.seq IN (SELECT s.query_seq FROM served s JOIN assertions v"
                " ON v.rowid = s.arow WHERE "
                + on
                + ") OR q.subject = ? OR (q.subject > ? AND q.subject < ?))"
            )
            args += [*sargs, *sargs]
        return self._queries("WHERE " + " AND ".join(clauses), args, limit)

    def _newest_on_subject(
        self, subject: str, until: int | None, limit: int, before: int | None
    ) -> list[QueryRecord]:
        """`queries(subject=, until=, before=)` through `NEWEST_SERVED` (journal order
        is time order)."""
        assert self.NEWEST_SERVED is not None
        cond, args = where(("at <= ?", us(until)), *earlier("", before))
        last = self.conn.execute(
            f"SELECT seq FROM queries WHERE {cond} ORDER BY at DESC, seq DESC LIMIT 1", args
        ).fetchone()
        if last is None:
            return []
        bound = last[0]
        on, sargs = _subject_clause(subject)
        sql = self.NEWEST_SERVED.format(where=on)
        seqs = {r[0] for r in self.conn.execute(sql, [bound, limit, *sargs, limit])}
        own = self.conn.execute(
            "SELECT seq FROM queries WHERE (subject = ? OR (subject > ? AND subject < ?))"
            " AND seq <= ? ORDER BY seq DESC LIMIT ?",
            [*sargs, bound, limit],
        )
        seqs.update(r[0] for r in own)
        newest = sorted(seqs, reverse=True)[:limit]
        if not newest:
            return []
        marks = ",".join("?" * len(newest))
        return self._queries(f"WHERE q.seq IN ({marks})", newest, limit)

    def serving(self, assertion_id: str, limit: int) -> tuple[int, dict[str, int], list[str]]:
        """How often `assertion_id` was served, to whom, and the newest query ids."""
        agents = {
            r[0]: r[1]
            for r in self.conn.execute(
                f"SELECT agent, n FROM exposure WHERE arow = ({_AROW}) ORDER BY n DESC, agent",
                (assertion_id,),
            )
        }
        recent = [
            r[0]
            for r in self.conn.execute(
                "SELECT q.id FROM served s JOIN queries q ON q.seq = s.query_seq"
                f" WHERE s.arow = ({_AROW}) ORDER BY s.query_seq DESC LIMIT ?",
                (assertion_id, limit),
            )
        ]
        return sum(agents.values()), agents, recent

    def _queries(self, where: str, args: list[Any], limit: int) -> list[QueryRecord]:
        rows = self.conn.execute(self.QUERY_ROWS.format(where=where), [*args, limit]).fetchall()
        served = self._served_items([r[1] for r in rows])
        # The hidden tally and the context are read from the event's payload here, not by
        # the database's JSON functions: those parse the whole payload once per field, and
        # a query's payload lists everything it served (tens of kB for a wide prefix).
        payloads = [orjson.loads(r[8]) for r in rows]
        return [
            QueryRecord.model_construct(
                id=r[0],
                seq=r[1],
                at=from_us(r[2]),
                agent=r[3],
                lens=r[4],
                subject=r[5],
                text=r[6],
                as_of=_opt(r[7]),
                returned=served.get(r[1], []),
                hidden=Hidden.model_validate(p["hidden"]),
                latency_us=r[9],
                context=p["context"],
            )
            for r, p in zip(rows, payloads, strict=True)
        ]

    def _served_items(self, query_seqs: list[int]) -> dict[int, list[ServedItem]]:
        out: dict[int, list[ServedItem]] = {}
        for start in range(0, len(query_seqs), 500):
            chunk = query_seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                "SELECT s.query_seq, a.id, a.subject, s.lifecycle, s.confidence, a.value"
                f" FROM served s JOIN assertions a ON a.rowid = s.arow"
                f" WHERE s.query_seq IN ({marks}) ORDER BY a.rowid",
                chunk,
            )
            for r in rows:
                out.setdefault(r[0], []).append(
                    ServedItem(r[1], r[2], _LIFECYCLES[r[3]], r[4], orjson.loads(r[5]))
                )
        return out

    def decision(self, decision_id: str) -> DecisionRecord | None:
        found = self._decisions("WHERE d.id = ?", [decision_id])
        return found[0] if found else None

    def decisions(
        self,
        agent: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int = 100,
        *,
        before: int | None = None,
    ) -> list[DecisionRecord]:
        """Recorded decisions, newest first, by agent and window."""
        cond, args = where(
            ("d.agent = ?", agent),
            ("d.at >= ?", us(since)),
            ("d.at <= ?", us(until)),
            *earlier("d.", before),
        )
        rows = self.conn.execute(
            f"SELECT d.id FROM decisions d WHERE {cond} ORDER BY d.at DESC, d.seq DESC LIMIT ?",
            [*args, limit],
        ).fetchall()
        if not rows:
            return []
        marks = ",".join("?" * len(rows))
        found = self._decisions(f"WHERE d.id IN ({marks})", [r[0] for r in rows])
        return sorted(found, key=lambda d: d.seq, reverse=True)

    def decisions_citing_assertion(self, assertion_id: str) -> list[DecisionRecord]:
        where = f"WHERE d.id IN (SELECT decision_id FROM reliance WHERE arow = ({_AROW}))"
        return self._decisions(where, [assertion_id])

    def _decisions(self, where: str, args: list[Any]) -> list[DecisionRecord]:
        rows = self.conn.execute(
            f"SELECT d.id, d.seq, d.at, d.agent, d.action, d.context FROM decisions d {where}"
            " ORDER BY d.seq",
            args,
        ).fetchall()
        cited: dict[str, list[str]] = {}
        for start in range(0, len(rows), 500):  # one statement per 500 decisions, not one each
            chunk = [r[0] for r in rows[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            for decision_id, query_id in self.conn.execute(
                "SELECT decision_id, query_id FROM citations"
                f" WHERE decision_id IN ({marks}) ORDER BY decision_id, query_id",
                chunk,
            ):
                cited.setdefault(decision_id, []).append(query_id)
        return [
            DecisionRecord.model_construct(
                id=r[0],
                seq=r[1],
                at=from_us(r[2]),
                agent=r[3],
                action=r[4],
                query_ids=cited.get(r[0], []),
                context=orjson.loads(r[5]),
            )
            for r in rows
        ]

    # -- the journal ---------------------------------------------------------------

    # -- access ------------------------------------------------------------------------

    def token(self, *, token_id: str | None = None, hash: str | None = None) -> TokenRecord | None:
        where, arg = ("id = ?", token_id) if hash is None else ("hash = ?", hash)
        rows = self._tokens(f"WHERE {where}", [arg])
        return rows[0] if rows else None

    def tokens(self, principal: str | None = None) -> list[TokenRecord]:
        if principal is None:
            return self._tokens("", [])
        return self._tokens("WHERE principal = ?", [principal])

    def _tokens(self, where: str, args: list[Any]) -> list[TokenRecord]:
        rows = self.conn.execute(
            "SELECT id, principal, kind, roles, created_at, created_by, expires_at, revoked_at,"
            f" revoked_by, revoke_reason FROM tokens {where} ORDER BY seq",
            args,
        )
        return [
            TokenRecord.model_construct(
                id=r[0],
                principal=r[1],
                kind=r[2],
                roles=[Role(x) for x in orjson.loads(r[3])],
                created_at=from_us(r[4]),
                created_by=r[5],
                expires_at=_opt(r[6]),
                revoked_at=_opt(r[7]),
                revoked_by=r[8],
                revoke_reason=r[9],
            )
            for r in rows
        ]

    def denials(
        self,
        principal: str | None = None,
        since: int | None = None,
        limit: int = 100,
        until: int | None = None,
        *,
        before: int | None = None,
    ) -> list[Denial]:
        cond, args = where(
            ("principal = ?", principal),
            ("at >= ?", us(since)),
            ("at <= ?", us(until)),
            *earlier("", before),
        )
        rows = self.conn.execute(
            "SELECT seq, at, principal, token_id, operation, target, reason FROM denials"
            f" WHERE {cond} ORDER BY seq DESC LIMIT ?",
            [*args, limit],
        )
        return [
            Denial.model_construct(
                seq=r[0],
                at=from_us(r[1]),
                principal=r[2],
                token_id=r[3],
                operation=r[4],
                target=r[5],
                reason=r[6],
            )
            for r in rows
        ]

    def head(self) -> tuple[int, int, bytes | None]:
        """(last seq, its time, its hash); (0, 0, None) when the journal is empty."""
        r = self.conn.execute("SELECT seq, at, hash FROM journal ORDER BY seq DESC LIMIT 1")
        row = r.fetchone()
        return (0, 0, None) if row is None else (row[0], row[1], row[2])

    def waiting_jobs(self, queue: str, now_us: int) -> tuple[int, int | None]:
        # both from the partial index of ready jobs, (queue, run_after): no row is read
        row = self.conn.execute(
            "SELECT count(*), min(CASE WHEN run_after <= ? THEN run_after END) FROM jobs"
            " WHERE queue = ? AND state = 'ready'",
            (Us(now_us), queue),
        ).fetchone()
        return int(row[0]), None if row[1] is None else int(row[1])

    def event_at(self, after_seq: int) -> int | None:
        """The time of the first event after `after_seq`; None at the journal's end."""
        row = self.conn.execute(
            "SELECT at FROM journal WHERE seq > ? ORDER BY seq LIMIT 1", [after_seq]
        ).fetchone()
        return None if row is None else int(row[0])

    def events(self, after_seq: int = 0, until_at: int | None = None) -> Iterator[Event]:
        """Journal events in order, read in pages so that memory stays flat.

        Each page is its own statement: a cursor held open across a long export would
        pin this thread's connection (and its reads) to the state when it began.
        """
        extra, args = ("", []) if until_at is None else (" AND at <= ?", [Us(until_at)])
        sql = (
            "SELECT seq, at, actor, kind, payload, hash FROM journal WHERE seq > ?"
            f"{extra} ORDER BY seq LIMIT 2000"
        )
        last = after_seq
        while True:
            rows = self.conn.execute(sql, [last, *args]).fetchall()
            if not rows:
                return
            for r in rows:
                yield Event(*r)
            last = rows[-1][0]


def _correction(r: Sequence[Any]) -> CorrectionRecord:
    return CorrectionRecord.model_construct(
        id=r[0],
        seq=r[1],
        at=from_us(r[2]),
        assertion_id=r[3],
        by=r[4],
        reason=r[5],
        replacement_id=r[6],
        constraint_id=r[7],
    )
