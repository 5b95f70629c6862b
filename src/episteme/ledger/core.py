"""`Ledger`: the library object behind every skin (CLI, API, MCP, client).

Each write validates against the current state inside the store's write
transaction and returns to the store the events that record it; each read through
a lens is itself an audited event with a `query_id` receipt. Investigation (diff,
blame, trace, impact) lives in `episteme.ledger.investigate`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import JsonValue
from whenever import Instant

from episteme.errors import Conflict, Forbidden, IntegrityError, InvalidInput, NotFound, naming
from episteme.ledger import investigate
from episteme.ledger.access import (
    Op,
    Principal,
)
from episteme.ledger.canonical import canonical, check_json, check_texts, content_id
from episteme.ledger.conflicts import conflicts, covers
from episteme.ledger.journal import Draft, Event, EventKind, VerifyReport, verify_chain
from episteme.ledger.learning import Learning
from episteme.ledger.lenses import BUILTIN, LensSpec, TrustFn, apply_lens
from episteme.ledger.model import (
    LIVE,
    SINGLE_VALUED,
    Answer,
    Assertion,
    AssertionInput,
    Candidate,
    Hidden,
    Item,
    Kind,
    Lifecycle,
    article,
    check_before,
    check_context,
    check_limit,
    check_move,
    check_name,
    check_prefix,
    check_window,
    parse_assertion,
)
from episteme.ledger.records import (
    Blame,
    ChangeCursor,
    Correction,
    CorrectionRecord,
    DecisionRecord,
    Diff,
    EpochRecord,
    Impact,
    QueryRecord,
    RebuildReport,
    Trace,
)
from episteme.ledger.store import Store, StoreReader, open_store
from episteme.ledger.tokens import Tokens
from episteme.ledger.trust import TrustBook, TrustPolicy, fixed
from episteme.text import shorten
from episteme.timeutil import Clock, SystemClock, from_us, rfc3339, to_us

_MISSING: Any = object()


def _us(instant: Instant | None) -> int | None:
    return None if instant is None else to_us(instant)


def content_record(
    *,
    subject: str,
    value: Any,
    kind: str,
    agent: str,
    recorded_at: int,
    lifecycle: str,
    confidence: float,
    source: str | None = None,
    evidence: str | None = None,
    epoch: str | None = None,
    derived_from: Sequence[str] = (),
    valid_from: int | None = None,
    valid_to: int | None = None,
) -> dict[str, Any]:
    """The payload record of one assertion: its content, content id, lifecycle, confidence."""
    content: dict[str, Any] = {
        "subject": subject,
        "value": value,
        "kind": kind,
        "agent": agent,
        "source": source,
        "evidence": evidence,
        "epoch": epoch,
        "derived_from": list(derived_from),
        "valid_from": valid_from,
        "valid_to": valid_to,
        "recorded_at": recorded_at,
    }
    return {**content, "id": content_id(content), "lifecycle": lifecycle, "confidence": confidence}


def record(inp: AssertionInput, agent: str, derived: list[str], at: int) -> dict[str, Any]:
    """`content_record` of a validated input recorded at `at`."""
    return content_record(
        subject=inp.subject,
        value=inp.value,
        kind=str(inp.kind),
        agent=agent,
        recorded_at=at,
        lifecycle=str(inp.lifecycle),
        confidence=inp.confidence,
        source=inp.source,
        evidence=inp.evidence,
        epoch=inp.epoch,
        derived_from=derived,
        valid_from=_us(inp.valid_from),
        valid_to=_us(inp.valid_to),
    )


def _from_record(rec: dict[str, Any], *, superseded: bool = False) -> Assertion:
    """The Assertion a just-written record describes (no read back needed)."""
    return Assertion.model_construct(
        id=rec["id"],
        subject=rec["subject"],
        value=rec["value"],
        kind=Kind(rec["kind"]),
        agent=rec["agent"],
        source=rec["source"],
        evidence=rec["evidence"],
        epoch=rec["epoch"],
        derived_from=tuple(rec["derived_from"]),
        valid_from=None if rec["valid_from"] is None else from_us(rec["valid_from"]),
        valid_to=None if rec["valid_to"] is None else from_us(rec["valid_to"]),
        recorded_at=from_us(rec["recorded_at"]),
        lifecycle=Lifecycle.SUPERSEDED if superseded else Lifecycle(rec["lifecycle"]),
        confidence=rec["confidence"],
    )


def _micro(at: Instant | None) -> Instant | None:
    """`at` in the journal's resolution (microseconds), the one receipts record."""
    return None if at is None else from_us(to_us(at))


def query_id_for(agent: str, at: int, seq: int) -> str:
    """The receipt id of an audited read: unique by journal position."""
    return "q_" + content_id({"agent": agent, "at": at, "seq": seq})[:24]


def served_payload(
    query_id: str,
    lens: str,
    subject: str | None,
    text: str | None,
    as_of: int | None,
    returned: list[list[Any]],
    hidden: dict[str, Any],
    latency_us: int,
    context: dict[str, Any],
) -> dict[str, Any]:
    """The payload of a `query.served` event; `returned` rows are [id, subject, lifecycle, conf]."""
    return {
        "query_id": query_id,
        "lens": lens,
        "subject": subject,
        "text": text,
        "as_of": as_of,
        "returned": returned,
        "hidden": hidden,
        "latency_us": latency_us,
        "context": context,
    }


class _Look(NamedTuple):
    """A lens's reading of the store, before any model is built."""

    subject: str | None
    now: Instant
    shown: list[tuple[Candidate, float | None]]
    hidden: Hidden


def _answer_of(
    look: _Look,
    lens: str,
    at: Instant | None,
    text: str | None,
    *,
    query_id: str | None,
    agent: str,
    asked_at: Instant,
    latency_us: int = 0,
) -> Answer:
    items = [Item.model_construct(assertion=c.assertion(), score=score) for c, score in look.shown]
    return Answer(
        query_id=query_id,
        agent=agent,
        lens=lens,
        subject=look.subject,
        text=text,
        as_of=at,
        asked_at=asked_at,
        items=items,
        hidden=look.hidden,
        latency_us=latency_us,
        conflicts=conflicts(i.assertion for i in items),
    )


class Ledger(Learning, Tokens):
    """The bitemporal, audited knowledge ledger."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        trust: TrustFn | None = None,
        policy: TrustPolicy | None = None,
    ) -> None:
        self.store = store
        self.refusal_listeners = []
        self.clock: Clock = clock or SystemClock()
        self.policy = policy or TrustPolicy()
        """The trust policy: the gardener's weights, and the decay reads apply."""
        self._trust_at = fixed(trust) if trust else TrustBook(store, self.policy, self.clock).at

    @classmethod
    def open(
        cls,
        location: str | Path,
        *,
        clock: Clock | None = None,
        ensure: bool = False,
        policy: TrustPolicy | None = None,
        read_only: bool = False,
    ) -> Ledger:
        """Open the ledger at a home directory or database URL (`ensure`: create if none;
        `read_only`: write nothing to it, see `open_store`)."""
        store = open_store(location, ensure=ensure, read_only=read_only)
        return cls(store, clock=clock, policy=policy)

    @classmethod
    def init(cls, location: str | Path, *, clock: Clock | None = None) -> Ledger:
        """Create a new, empty ledger."""
        return cls(open_store(location, create=True), clock=clock)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> int:
        return to_us(self.clock.now())

    def _write(self, build: Any) -> list[Event]:
        return self.store.write(build, self._now())

    # -- assertions --------------------------------------------------------------------

    def add(
        self,
        inputs: Sequence[AssertionInput],
        *,
        actor: str | None = None,
        principal: Principal | None = None,
        target: str | None = None,
    ) -> list[Assertion]:
        """Record assertions atomically: all of them or, on any error, none.

        Approving a fact or decision supersedes the subject's previous approved value.
        With a `principal` (a caller over the network), recording an assertion as
        approved is a review: it needs the supervisor role, and a refusal is recorded.
        """
        if not inputs:
            raise InvalidInput("nothing to assert: give at least one assertion")
        approving = any(i.lifecycle is Lifecycle.APPROVED for i in inputs)
        if principal is not None and approving and not principal.allows(Op.REVIEW):
            why = (
                f"recording an approved assertion is a review: {principal.name} may only "
                "propose (lifecycle proposed); a supervisor approves"
            )
            self.deny(principal.name, principal.token_id, str(Op.REVIEW), target, why)
            raise Forbidden(why, field="lifecycle")
        submitter = check_name(actor or inputs[0].agent, "agent")

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            records: list[dict[str, Any]] = []
            superseded: list[list[str]] = []
            approved_now: dict[str, str] = {}
            seen: dict[str, int] = {}
            for n, inp in enumerate(inputs, 1):
                try:
                    with naming("derived_from"):
                        derived = [self._resolve_assertion(r, ref) for ref in inp.derived_from]
                except (NotFound, InvalidInput) as exc:
                    if len(inputs) == 1:
                        raise
                    # which of the batch's, as its other refusals say
                    raise type(exc)(f"assertion {n}: {exc.message}", field=exc.field) from None
                rec = record(inp, inp.agent, derived, at)
                if rec["id"] in seen:
                    raise InvalidInput(
                        f"assertion {n} repeats assertion {seen[rec['id']]}", field="assertions"
                    )
                seen[rec["id"]] = n
                if inp.epoch is not None:
                    epoch = r.epoch(inp.epoch)
                    if epoch is not None and epoch.superseded_at is not None:
                        raise Conflict(f"epoch {inp.epoch} was superseded: use a new epoch name")
                if inp.lifecycle is Lifecycle.APPROVED and inp.kind in SINGLE_VALUED:
                    prior = approved_now.get(inp.subject)
                    window = (rec["valid_from"], rec["valid_to"])
                    olds = [prior] if prior else self._approved_ids(r, inp.subject, *window)
                    superseded += [[old, rec["id"]] for old in olds]
                    approved_now[inp.subject] = rec["id"]
                records.append(rec)
            already = r.existing_ids(list(seen), at)  # same content, agent and microsecond
            if already:
                n, aid = min((seen[i], i) for i in already)
                raise Conflict(f"assertion {n} is already recorded as {aid[:12]}")
            payload = {"assertions": records, "superseded": superseded}
            out[:] = records
            gone.clear()
            gone.update(old for old, _ in superseded)
            return [Draft(EventKind.ASSERTIONS_ADDED, submitter, payload)]

        out: list[dict[str, Any]] = []
        gone: set[str] = set()
        self._write(build)
        return [_from_record(rec, superseded=rec["id"] in gone) for rec in out]

    def assert_one(self, **fields: Any) -> Assertion:
        """Convenience for one assertion from keyword fields (see `AssertionInput`)."""
        return self.add([parse_assertion(fields)])[0]

    def _approved_ids(
        self, r: StoreReader, subject: str, valid_from: int | None, valid_to: int | None
    ) -> list[str]:
        """The approved values a new approval for [valid_from, valid_to) supersedes: those
        whose valid time it covers (every one, for a value without a valid time)."""
        return [
            a.id
            for a in r.current_on_subject(subject)
            if a.lifecycle is Lifecycle.APPROVED
            and a.kind in SINGLE_VALUED
            and covers(valid_from, valid_to, _us(a.valid_from), _us(a.valid_to))
        ]

    def _resolve_assertion(self, r: StoreReader, ref: str) -> str:
        kind, full = r.resolve(ref)
        if kind != "assertion":
            raise InvalidInput(f"{ref} is {article(kind)} id, not an assertion id", field="id")
        return full

    def approve(self, ref: str, *, by: str, reason: str | None = None) -> Assertion:
        return self._review(ref, Lifecycle.APPROVED, by, reason)

    def deprecate(self, ref: str, *, by: str, reason: str | None = None) -> Assertion:
        return self._review(ref, Lifecycle.DEPRECATED, by, reason)

    def reject(self, ref: str, *, by: str, reason: str | None = None) -> Assertion:
        return self._review(ref, Lifecycle.REJECTED, by, reason)

    def _review(self, ref: str, to: Lifecycle, by: str, reason: str | None) -> Assertion:
        check_name(by, "by")
        target: list[str] = []

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            aid = self._resolve_assertion(r, ref)
            current = r.assertion(aid)
            assert current is not None
            check_move(current.lifecycle, to, "review", aid)
            superseded = []
            if to is Lifecycle.APPROVED and current.kind in SINGLE_VALUED:
                window = (_us(current.valid_from), _us(current.valid_to))
                superseded = [
                    i for i in self._approved_ids(r, current.subject, *window) if i != aid
                ]
            target[:] = [aid]
            payload = {"id": aid, "to": str(to), "reason": reason, "superseded": superseded}
            return [Draft(EventKind.ASSERTION_MOVED, by, payload)]

        self._write(build)
        return self._get(target[0])

    def _get(self, assertion_id: str) -> Assertion:
        found = self.store.assertion(assertion_id)
        if found is None:
            raise NotFound(f"no assertion with id {assertion_id!r}", field="id")
        return found

    def get(self, ref: str) -> Assertion:
        """The assertion with this id (or unique id prefix), in its current state."""
        return self._get(self._resolve_assertion(self.store, ref))

    def corrections(self, ref: str) -> list[CorrectionRecord]:
        """The correction that marked an assertion incorrect, if one did (a list of at
        most one): an assertion can be corrected until one has."""
        return self.store.reading(lambda r: r.corrections_of(self._resolve_assertion(r, ref)))

    def correct(
        self,
        ref: str,
        *,
        by: str,
        reason: str,
        value: JsonValue = _MISSING,
        forbid: bool = False,
    ) -> Correction:
        """Mark an assertion incorrect now; optionally record the right value and a constraint."""
        check_name(by, "by")
        if not reason.strip():
            raise InvalidInput("a correction needs a reason: say why it is wrong", field="reason")
        problem = None if value is _MISSING else check_json(value)
        if problem:
            raise InvalidInput(f"invalid value: {problem}", field="value")
        ids: dict[str, Any] = {}

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            aid = self._resolve_assertion(r, ref)
            bad = r.assertion(aid)
            assert bad is not None
            if bad.lifecycle is not Lifecycle.REJECTED:
                check_move(bad.lifecycle, Lifecycle.REJECTED, "correction", aid)
            elif done := r.corrections_of(aid):
                raise Conflict(
                    f"assertion {aid[:12]} was corrected already ({done[0].id} by "
                    f"{done[0].by}: {shorten(done[0].reason, 80)}): it is marked incorrect"
                )
            # else rejected in review, or retracted with its epoch, and never marked
            # incorrect: agents may have been served it (and acted) while it was proposed
            if value is not _MISSING and canonical(value) == canonical(bad.value):
                raise InvalidInput(
                    f"assertion {aid[:12]} already holds {canonical(value)}: a correction "
                    "gives the right value, not the one it marks incorrect",
                    field="value",
                )
            cid = "x_" + content_id({"id": aid, "by": by, "at": at, "reason": reason})[:24]
            replacement = None
            confirmed = None
            superseded: list[str] = []
            if value is not _MISSING:
                right = canonical(value)  # as JSON: true is not 1, nor 1.0 (Python's ==)
                confirmed = next(
                    (
                        a.id
                        for a in r.current_on_subject(bad.subject)
                        if a.lifecycle is Lifecycle.APPROVED
                        and a.id != aid
                        and canonical(a.value) == right
                    ),
                    None,
                )
            if value is not _MISSING and confirmed is None:
                inp = AssertionInput(
                    subject=bad.subject,
                    value=value,
                    agent=by,
                    kind=bad.kind,
                    lifecycle=Lifecycle.APPROVED,
                    source=f"correction:{cid}",
                    evidence=reason,
                    derived_from=(aid,),
                )
                replacement = record(inp, by, [aid], at)
                if bad.kind in SINGLE_VALUED:
                    superseded = [
                        i for i in self._approved_ids(r, bad.subject, None, None) if i != aid
                    ]
            constraint = None
            if forbid:
                constraint = {
                    "id": "c_" + content_id({"correction": cid})[:24],
                    "scope": bad.subject,
                    "forbid": [_term(bad.value)],
                    "patterns": [],
                    "prefer": None if value is _MISSING else _term(value),
                    "reason": reason,
                    "origin": f"correction:{cid}",
                }
            ids.update(cid=cid, aid=aid, superseded=superseded)
            payload = {
                "correction_id": cid,
                "id": aid,
                "from": str(bad.lifecycle),
                "reason": reason,
                "replacement": replacement,
                "confirmed": confirmed,
                "superseded": superseded,
                "constraint": constraint,
            }
            return [Draft(EventKind.ASSERTION_CORRECTED, by, payload)]

        self._write(build)
        # Not `record`: that name is the module function `build` calls above.
        found = self.store.correction(ids["cid"])
        assert found is not None
        return Correction(
            correction=found,
            corrected=self._get(ids["aid"]),
            replacement=self._get(found.replacement_id) if found.replacement_id else None,
            constraint=self.store.constraint(found.constraint_id) if found.constraint_id else None,
            superseded=ids["superseded"],
        )

    def supersede_epoch(self, epoch: str, *, by: str, reason: str) -> list[str]:
        """Retract everything an epoch brought, in one event. Returns the retracted ids."""
        check_name(epoch, "epoch")
        check_name(by, "by")
        if not reason.strip():
            raise InvalidInput("superseding an epoch needs a reason", field="reason")
        out: list[str] = []

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            found = r.epoch(epoch)
            if found is None:
                raise NotFound(f"no epoch named {epoch!r}", field="epoch")
            if found.superseded_at is not None:
                raise Conflict(f"epoch {epoch} was already superseded")
            retracted = [
                a.id for a in r.epoch_members(epoch) if a.lifecycle is not Lifecycle.REJECTED
            ]
            out[:] = retracted
            payload = {"epoch": epoch, "reason": reason, "retracted": retracted}
            return [Draft(EventKind.EPOCH_SUPERSEDED, by, payload)]

        self._write(build)
        return out

    def epoch(self, name: str) -> EpochRecord:
        """An epoch by name."""
        found = self.store.epoch(check_name(name, "epoch"))
        if found is None:
            raise NotFound(f"no epoch named {name!r}", field="epoch")
        return found

    # -- reading through lenses ---------------------------------------------------------

    def lens_spec(self, name: str, reader: StoreReader | None = None) -> LensSpec:
        spec = BUILTIN.get(name) or (reader or self.store).lens(check_name(name, "lens"))
        if spec is None:
            known = ", ".join([*BUILTIN, *self.store.lenses()])
            raise NotFound(f"no lens named {name!r}: use one of {known}", field="lens")
        return spec

    def answer(
        self,
        subject: str | None,
        *,
        lens: str = "approved",
        at: Instant | None = None,
        text: str | None = None,
        reader: StoreReader | None = None,
    ) -> Answer:
        """The answer a query would give, without auditing it (for replays and checks)."""
        at = _micro(at)
        look = self._look(subject, lens, at, text, reader or self.store)
        return _answer_of(look, lens, at, text, query_id=None, agent="", asked_at=look.now)

    def _look(
        self, subject: str | None, lens: str, at: Instant | None, text: str | None, r: StoreReader
    ) -> _Look:
        """What a lens shows and hides, read from the store: the rows, no models yet."""
        if subject is not None:
            subject = check_prefix(subject)
        elif text is None:
            raise InvalidInput("give a subject, a prefix or words to search for", field="subject")
        if text is not None:
            check_texts({"text": text})
        spec = self.lens_spec(lens, r)
        now = self.clock.now()
        found = r.candidates(subject, _us(at), text, spec.lifecycles, listed=LIVE)
        if spec.pick == "ranked" or spec.min_trust:
            # every row's trust in one read, those the lens drops for other reasons too
            trust = self._trust_at(at, [(c.agent, c.subject) for c in found.rows])
        else:
            trust = _no_trust
        shown, hidden = apply_lens(
            spec, found.rows, trust, found.elsewhere, to_us(at or now), found.listed
        )
        return _Look(subject, now, shown, hidden)

    def query(
        self,
        subject: str | None,
        *,
        agent: str,
        lens: str = "approved",
        at: Instant | None = None,
        text: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Answer:
        """Read through a lens, audited: the answer carries its `query_id` receipt."""
        at = _micro(at)  # as the receipt records it
        check_name(agent, "agent")
        check_context(context)
        start = time.perf_counter_ns()
        result: list[tuple[_Look, str, int, int]] = []

        def build(r: StoreReader, now: int, seq: int) -> list[Draft]:
            # Only the reads and the receipt under the writer lock: the answer's models
            # are built after it is released (the lock is what concurrent writers share),
            # from rows the store just returned. Only corrupt rows could fail there, and
            # the receipt of such a read stays recorded.
            look = self._look(subject, lens, at, text, r)
            latency = (time.perf_counter_ns() - start) // 1000
            qid = query_id_for(agent, now, seq)
            returned = [[c.id, c.subject, c.lifecycle, c.confidence] for c, _ in look.shown]
            result[:] = [(look, qid, now, latency)]
            payload = served_payload(
                qid, lens, look.subject, text, _us(at), returned,
                look.hidden.model_dump(mode="json"), latency, context or {},
            )  # fmt: skip
            return [Draft(EventKind.QUERY_SERVED, agent, payload)]

        self._write(build)
        look, qid, now, latency = result[0]
        return _answer_of(
            look, lens, at, text, query_id=qid, agent=agent, asked_at=from_us(now),
            latency_us=latency,
        )  # fmt: skip

    def define_lens(self, name: str, spec: LensSpec, *, by: str) -> LensSpec:
        """Store a named custom lens (redefining a custom name replaces it)."""
        check_name(name, "lens")
        check_name(by, "by")
        if name.lower() in BUILTIN:  # `Approved` beside `approved` reads as the same lens
            raise Conflict(f"{name!r} is a built-in lens's name: choose another name")
        # a lens that can show nothing is a mistake, not a policy: said when defined
        if not spec.lifecycles:
            raise InvalidInput(
                "a lens shows at least one lifecycle (proposed, approved, …)", field="lifecycles"
            )
        for agent in spec.agents or ():
            try:
                check_name(agent, "agent")
            except InvalidInput as exc:  # one of the list's
                raise InvalidInput(exc.message, field="agents") from None
        if spec.agents is not None and not spec.agents:
            raise InvalidInput("an empty allow list of agents lets none through", field="agents")
        if spec.sources is not None and not spec.sources:
            raise InvalidInput("an empty allow list of sources lets none through", field="sources")
        if spec.sources is not None and not all(p.strip() for p in spec.sources):
            raise InvalidInput(
                "an empty source prefix lets every source through: leave sources out for that",
                field="sources",
            )

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            payload = {"name": name, "spec": spec.model_dump(mode="json")}
            return [Draft(EventKind.LENS_DEFINED, by, payload)]

        self._write(build)
        return spec

    def lenses(self) -> dict[str, LensSpec]:
        return {**BUILTIN, **self.store.lenses()}

    # -- decisions ---------------------------------------------------------------------

    def decide(
        self,
        action: str,
        *,
        agent: str,
        query_ids: Sequence[str],
        context: dict[str, Any] | None = None,
    ) -> DecisionRecord:
        """Record an action and the reads (query ids) it relied on."""
        check_name(agent, "agent")
        check_context(context)
        if not action.strip():
            raise InvalidInput("a decision needs an action: say what was done", field="action")
        out: list[str] = []

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            with naming("query_ids"):
                cited = [r.resolve(ref, want="query")[1] for ref in query_ids]
            key = {"agent": agent, "at": at, "action": action, "q": cited, "seq": seq}
            did = "d_" + content_id(key)[:24]
            out[:] = [did]
            payload = {
                "decision_id": did,
                "action": action,
                "query_ids": sorted(set(cited)),
                "context": context or {},
            }
            return [Draft(EventKind.DECISION_RECORDED, agent, payload)]

        self._write(build)
        found = self.store.decision(out[0])
        assert found is not None
        return found

    # -- investigation -----------------------------------------------------------------

    def served(
        self,
        subject: str,
        *,
        at: Instant | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[QueryRecord]:
        """What agents were actually served about `subject`, up to `at` (newest first);
        with `before`, the page below that journal position (the last item's `seq`)."""
        subject = check_prefix(subject)
        check_limit(limit)
        check_before(before)
        return self.store.reading(
            lambda r: investigate.served(r, subject, _us(at), limit, before), snapshot=False
        )  # query records never change once written: their reads agree without one

    def audit(
        self,
        *,
        agent: str | None = None,
        subject: str | None = None,
        since: Instant | None = None,
        until: Instant | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[QueryRecord]:
        """Audited reads by agent, subject and window, newest first; with `before`, the
        page below that journal position (the last item's `seq`)."""
        check_limit(limit)
        check_window(since, until)
        check_before(before)
        if subject is not None:
            subject = check_prefix(subject)
        if agent is not None:
            check_name(agent, "agent")
        return self.store.reading(
            lambda r: r.queries(agent, subject, _us(since), _us(until), limit, before=before),
            snapshot=False,
        )  # query records never change once written: their reads agree without one

    def decisions(
        self,
        *,
        agent: str | None = None,
        since: Instant | None = None,
        until: Instant | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[DecisionRecord]:
        """Recorded decisions by agent and window, newest first; with `before`, the page
        below that journal position (the last item's `seq`)."""
        if agent is not None:
            check_name(agent, "agent")
        check_limit(limit)
        check_window(since, until)
        check_before(before)
        return self.store.decisions(agent, _us(since), _us(until), limit, before=before)

    def diff(
        self,
        prefix: str | None,
        *,
        since: Instant,
        until: Instant | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> Diff:
        """What changed under `prefix` between two times: every change, or the newest
        `limit` of them (with the counts and total of all) and, when it left older ones
        out, the `next` to pass as `before` for them."""
        cursor = None if before is None else ChangeCursor.parse(before)
        # the window in the journal's resolution, as the answer echoes it
        now = self.clock.now()
        if until is None and since > now:
            raise InvalidInput(
                f"the window starts in the future ({rfc3339(since)}): give a start in the past",
                field="since",
            )
        since, until = from_us(to_us(since)), from_us(to_us(until or now))
        return self.store.reading(
            lambda r: investigate.diff(r, prefix, since, until, limit, cursor)
        )

    def blame(self, ref: str, *, superseded: bool = True) -> list[Blame]:
        """Who introduced an assertion (by id) or each assertion on a subject, and every
        move since; with `superseded`, what each approval superseded (one statement more
        for each assertion that was approved)."""
        return self.store.reading(lambda r: investigate.blame(r, ref, superseded))

    def trace(self, ref: str) -> Trace:
        """Decision or query → queries → assertions → agents, sources, epochs."""
        return self.store.reading(lambda r: investigate.trace(r, ref))

    def impact(self, ref: str, *, recent: int = 20) -> Impact:
        """Assertion → queries that served it, agents, decisions, derived assertions; the
        newest `recent` of those queries (at most `MAX_RECENT`) listed."""
        if not 0 <= recent <= investigate.MAX_RECENT:
            raise InvalidInput(
                f"recent must be between 0 and {investigate.MAX_RECENT:,}", field="recent"
            )
        return self.store.reading(
            lambda r: investigate.impact(r, self._resolve_assertion(r, ref), recent)
        )

    # -- integrity ---------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        return self.store.verify()

    def rebuild(self, *, repair: bool = False) -> RebuildReport:
        """Replay the journal into fresh projections and compare (or `repair`). A journal
        whose chain is broken is refused: projections rebuilt from it would serve what
        was changed on disk, and a repair would spread it."""
        checked = self.store.verify()
        if not checked.ok:
            raise IntegrityError(
                f"the journal's chain is broken at event {checked.first_bad_seq} "
                f"({checked.problem}): the projections cannot be rebuilt from it; "
                "restore the ledger from a backup"
            )
        return self.store.rebuild(repair)

    def export(self) -> Iterator[Event]:
        return self.store.events()

    def import_events(self, events: Iterable[Event]) -> int:
        """Load an exported journal into this empty ledger after verifying its chain."""
        batch = list(events)
        report = verify_chain(batch)
        if not report.ok:
            raise InvalidInput(
                f"the journal to import is broken at event {report.first_bad_seq}: {report.problem}"
            )
        return self.store.import_events(batch)


def _no_trust(agent: str, subject: str) -> float:
    raise AssertionError("this lens does not use trust")


def _term(value: Any) -> str:
    return value if isinstance(value, str) else canonical(value)
