"""What the ledger learns from corrections: constraints, checks, trust, conflicts, webhooks.

`Learning` is the part of `Ledger` that the gardener and the pre-flight check use
(DESIGN §2: negative constraint, trust, gardener). Constraints, checks and webhooks
are journal events like any other write; trust evidence and notifications are the
gardener's (`episteme.ledger.gardener`), read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, JsonValue
from whenever import Instant

from episteme.errors import Conflict, InvalidInput, NotFound
from episteme.ledger import constraints as rules
from episteme.ledger.canonical import content_id
from episteme.ledger.conflicts import conflicts
from episteme.ledger.constraints import CheckResult, Violation, check_list
from episteme.ledger.journal import Draft, Event, EventKind
from episteme.ledger.model import (
    check_after,
    check_before,
    check_context,
    check_limit,
    check_name,
    check_subject,
    check_window,
)
from episteme.ledger.records import CheckRecord, ConstraintRecord, NotificationRecord
from episteme.ledger.trust import TrustPolicy, TrustScore, scores
from episteme.ledger.webhooks import NOTIFICATION_TYPES, STORED, WebhookSpec
from episteme.timeutil import Clock, from_us, rfc3339, to_us

if TYPE_CHECKING:
    from episteme.ledger.store import BuildFn, Store, StoreReader

MAX_ITEMS = 200
MAX_ITEM = 512
MAX_SCOPE = 100
MAX_PLAN = 65_536
PAGE = 1000
"""How many notifications are read at a time where all of them are needed."""


class ConstraintState(BaseModel):
    """A constraint and how strongly it holds now."""

    constraint: ConstraintRecord
    strength: float
    state: str
    """``active``, ``dormant`` (it still answers checks, as a warning), or ``retired`` (it
    answers no check)."""


class ConflictState(BaseModel):
    """A conflict the gardener raised, and whether it still holds."""

    key: str
    subject: str
    assertion_ids: list[str]
    values: list[JsonValue]
    raised_at: Instant
    open: bool
    lifecycles: dict[str, str]


def _covering(
    r: StoreReader,
    subjects: Sequence[str],
    tags: Sequence[str],
    *,
    open_axes: bool = False,
    retired: bool = False,
) -> list[ConstraintRecord]:
    """The constraints on `subjects` (above and below them) and those of `tags`, in the
    order they were made; every constraint when both are empty.

    With `open_axes` (a check), a side left empty is not a filter but unknown: naming
    tags alone still meets every constraint on a subject, and naming subjects alone
    every constraint of a tag. A check that says what kind of plan it is must not miss
    the constraint a correction put on the subject it did not name."""
    if not subjects and not tags:
        return r.constraints(None, retired=retired)
    met: list[ConstraintRecord] = []
    for subject in subjects:
        met += r.constraints(subject, retired=retired)
    if not subjects and open_axes:
        met += [c for c in r.constraints(None, retired=retired) if c.scope is not None]
    if tags or open_axes:
        met += r.constraints_tagged(tags or None, retired=retired)  # None: of any tag
    return sorted({c.id: c for c in met}.values(), key=lambda c: c.seq)


def _us(instant: Instant | None) -> int | None:
    return None if instant is None else to_us(instant)


class Learning:
    """Constraints, audited checks, trust scores, conflicts and webhooks of a `Ledger`."""

    store: Store
    clock: Clock
    policy: TrustPolicy

    def _write(self, build: BuildFn) -> list[Event]:
        raise NotImplementedError

    # -- negative constraints --------------------------------------------------------

    def add_constraint(
        self,
        *,
        scope: str | None = None,
        reason: str,
        by: str,
        forbid: Sequence[str] = (),
        patterns: Sequence[str] = (),
        items: Sequence[str] = (),
        prefer: str | None = None,
        half_life_days: float = rules.DEFAULT_HALF_LIFE_DAYS,
        tags: Sequence[str] = (),
    ) -> ConstraintState:
        """Record a negative constraint: what must not be done in `scope` (a subject and all
        below it) or in plans of `tags` (``deploy``, ``npm``), and why."""
        check_name(by, "by")
        body = rules.new_constraint(
            scope=scope,
            reason=reason,
            forbid=forbid,
            patterns=patterns,
            items=items,
            prefer=prefer,
            half_life_days=half_life_days,
            tags=tags,
        )
        made: list[str] = []

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            cid = "c_" + content_id({**body, "by": by, "at": at, "seq": seq})[:24]
            made[:] = [cid]
            constraint = {"id": cid, **body, "origin": f"direct:{by}"}
            return [Draft(EventKind.CONSTRAINT_ADDED, by, {"constraint": constraint})]

        self._write(build)
        return self.constraint(made[0])

    def _state(self, c: ConstraintRecord, now: Instant) -> ConstraintState:
        if c.retired_at is not None:
            return ConstraintState(constraint=c, strength=0.0, state="retired")
        power = rules.strength(c, now)
        state = "active" if power >= rules.DORMANT_BELOW else "dormant"
        return ConstraintState(constraint=c, strength=round(power, 4), state=state)

    def retire_constraint(self, ref: str, *, by: str, reason: str) -> ConstraintState:
        """Retire a constraint (wrong, or no longer needed): it stays in the record, with
        who retired it, when and why, and answers no check from now on."""
        check_name(by, "by")
        why = rules.check_reason(
            reason, "retiring a constraint needs a reason: why it no longer holds"
        )
        cid = self.store.resolve(ref, want="constraint")[1]

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            found = r.constraint(cid)
            if found is None:
                raise NotFound(f"no constraint with id {ref!r}", field="id")
            if found.retired_at is not None:
                raise Conflict(
                    f"constraint {cid} was retired already, by {found.retired_by} at "
                    f"{rfc3339(found.retired_at)}: {found.retired_reason}"
                )
            payload = {"constraint_id": cid, "reason": why}
            return [Draft(EventKind.CONSTRAINT_RETIRED, by, payload)]

        self._write(build)
        return self.constraint(cid)

    def constraint(self, ref: str) -> ConstraintState:
        """A constraint by id (or unique prefix), with its strength now."""
        found = self.store.constraint(self.store.resolve(ref, want="constraint")[1])
        if found is None:
            raise NotFound(f"no constraint with id {ref!r}", field="id")
        return self._state(found, self.clock.now())

    def constraints(
        self, scope: str | None = None, tags: Sequence[str] = (), *, retired: bool = False
    ) -> list[ConstraintState]:
        """Every constraint, or those on `scope` (a subject, above and below it) and those
        of `tags`, with its strength now; the retired ones too with `retired`."""
        if scope is not None:
            check_subject(scope, field="scope")
        labels = rules.check_tags(tags)
        now = self.clock.now()
        subjects = [scope] if scope is not None else []
        found = self.store.reading(lambda r: _covering(r, subjects, labels, retired=retired))
        return [self._state(c, now) for c in found]

    def check(
        self,
        plan: str = "",
        scope: Sequence[str] = (),
        *,
        agent: str,
        items: Sequence[str] = (),
        context: dict[str, Any] | None = None,
        tags: Sequence[str] = (),
    ) -> CheckResult:
        """Pre-flight, audited: the constraints that `plan` or `items` would break (a plan
        in words, or the identifiers it uses alone, or both).

        `scope` (subjects) and `tags` (kinds of plan) each narrow what is checked on their
        side: the constraints on those subjects (above and below them), those of those
        tags. A side left empty narrows nothing: with tags alone, every constraint on a
        subject is checked too; with neither, every constraint.

        Every constraint hit is fresh again from now, dormant ones included.
        """
        check_name(agent, "agent")
        check_context(context)
        if not plan.strip():
            if not items:
                raise InvalidInput(
                    "give the plan to check (what you are about to do) or the items it uses",
                    field="plan",
                )
            plan = ""  # the items alone: no words to record
        if len(plan) > MAX_PLAN:
            raise InvalidInput(
                f"the plan has {len(plan):,} characters: give at most {MAX_PLAN:,}", field="plan"
            )
        check_list(scope, "scope")
        check_list(items, "items")
        if len(scope) > MAX_SCOPE:
            raise InvalidInput(
                f"{len(scope):,} subjects in scope: give at most {MAX_SCOPE}, or none to check "
                "every constraint on a subject",
                field="scope",
            )
        subjects = [check_subject(s, field="scope") for s in scope]
        labels = rules.check_tags(tags)
        if len(items) > MAX_ITEMS or any(not i.strip() or len(i) > MAX_ITEM for i in items):
            raise InvalidInput(
                f"items takes up to {MAX_ITEMS} identifiers of 1 to {MAX_ITEM} characters",
                field="items",
            )
        out: list[CheckResult] = []

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            found = _covering(r, subjects, labels, open_axes=True)
            now = from_us(at)
            violations = rules.evaluate(found, plan, list(items), now)
            kid = "k_" + content_id({"agent": agent, "at": at, "seq": seq})[:24]
            out[:] = [
                CheckResult(
                    check_id=kid,
                    agent=agent,
                    at=now,
                    plan=plan,
                    scope=subjects,
                    tags=labels,
                    items=list(items),
                    checked=len(found),
                    violations=violations,
                )
            ]
            payload = {
                "check_id": kid,
                "plan": plan,
                "scope": subjects,
                **({"tags": labels} if labels else {}),
                "items": list(items),
                "checked": len(found),
                "violations": [_served(v) for v in violations],
                "context": context or {},
            }
            return [Draft(EventKind.CONSTRAINT_CHECKED, agent, payload)]

        self._write(build)
        return out[0]

    def checks(
        self,
        *,
        agent: str | None = None,
        since: Instant | None = None,
        until: Instant | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[CheckRecord]:
        """Audited pre-flight checks by agent and window, newest first; with `before`, the
        page below that journal position (the last item's `seq`)."""
        if agent is not None:
            check_name(agent, "agent")
        check_limit(limit)
        check_window(since, until)
        check_before(before)
        return self.store.checks(agent, _us(since), _us(until), limit, before=before)

    # -- trust, conflicts, notifications ---------------------------------------------

    def trust_scores(
        self, *, agent: str | None = None, topic: str | None = None, at: Instant | None = None
    ) -> list[TrustScore]:
        """Scores per agent and topic at `at` (now), with the evidence that moved them."""
        if agent is not None:
            check_name(agent, "agent")
        if topic is not None:
            check_subject(topic, field="topic")
        at_us = to_us(at or self.clock.now())
        rows = self.store.trust_evidence(agent, topic, at_us)
        return scores(rows, at_us, self.policy, topic)

    def conflicts(self, *, include_resolved: bool = False) -> list[ConflictState]:
        """Conflicts the gardener raised, newest first; open ones only unless asked."""
        out = []
        at = self.clock.now()
        for n in self._every_notification("conflict"):
            ids = list(n.data["assertion_ids"])
            now = self.store.assertions(ids)
            still = {c.key for c in conflicts(now)}
            current = [a for a in now if a.valid_to is None or a.valid_to > at]
            ended = [a.valid_to for a in now if a.valid_to is not None and a.valid_to <= at]
            if still and not conflicts(current) and max(ended) > n.at:
                # the overlap was current when raised, and is history now: resolved by
                # time (one raised about a window already past stays for a person)
                still = set()
            state = ConflictState(
                key=n.key,
                subject=n.data["subject"],
                assertion_ids=ids,
                values=n.data["values"],
                raised_at=n.at,
                open=bool(still),
                lifecycles={a.id: str(a.lifecycle) for a in now},
            )
            if state.open or include_resolved:
                out.append(state)
        return out

    def _every_notification(self, type: str) -> list[NotificationRecord]:
        """Every notification of `type`, newest first, read a page at a time in one
        snapshot: a replay that raises them again meanwhile does not end the walk."""

        def walk(r: StoreReader) -> list[NotificationRecord]:
            page = r.notifications(type, limit=PAGE)
            found = list(page)
            while len(page) == PAGE:
                page = r.notifications(type, limit=PAGE, after=page[-1].key)
                found += page
            return found

        return self.store.reading(walk)

    def notifications(
        self,
        *,
        type: str | None = None,
        since: Instant | None = None,
        until: Instant | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[NotificationRecord]:
        """What was raised (corrections, conflicts, trust drops, expiries, approvals), newest
        first; with `after`, the page that follows the notification of that key (the last
        item's `key`)."""
        if type is not None and type not in NOTIFICATION_TYPES:
            known = ", ".join(sorted(NOTIFICATION_TYPES))
            raise InvalidInput(f"unknown notification type {type!r}: use {known}", field="type")
        check_after(after, "a notification's key")
        check_limit(limit)
        check_window(since, until)
        return self.store.notifications(type, _us(since), limit, _us(until), after=after)

    # -- webhooks ----------------------------------------------------------------------

    def webhooks(self) -> dict[str, WebhookSpec]:
        """The webhooks notifications go to, by name."""
        return {
            name: WebhookSpec.model_validate(spec, context={STORED: True})
            for name, (spec, _, _) in self.store.webhook_specs().items()
        }

    def set_webhook(self, spec: WebhookSpec, *, by: str) -> WebhookSpec:
        """Add a webhook, or replace the one of that name."""
        check_name(by, "by")
        data = spec.model_dump(mode="json")

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            return [Draft(EventKind.WEBHOOK_SET, by, {"name": spec.name, "spec": data})]

        self._write(build)
        return spec

    def remove_webhook(self, name: str, *, by: str) -> None:
        check_name(by, "by")

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            if name not in r.webhook_specs():
                raise NotFound(
                    f"no webhook named {name!r}: see `episteme webhook list`", field="name"
                )
            return [Draft(EventKind.WEBHOOK_REMOVED, by, {"name": name})]

        self._write(build)


def _served(v: Violation) -> dict[str, Any]:
    return {
        "constraint_id": v.constraint.id,
        "matched": v.matched,
        "found_in": v.found_in,
        "strength": v.strength,
        "severity": v.severity,
    }
