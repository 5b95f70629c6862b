"""Pre-flight checks of a plan against negative constraints (DESIGN §2).

A constraint forbids terms (matched case-insensitively as whole words) or regular
expressions within a scope: a subject and everything below it. A check takes the
plan's text and the subjects it touches and returns each violation with the
preferred alternative. Freshness, hit counting and auditing of checks belong to
the gardener.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from episteme.ledger.records import ConstraintRecord
from episteme.ledger.store import StoreReader


class Violation(BaseModel):
    constraint: ConstraintRecord
    matched: str
    message: str


class CheckResult(BaseModel):
    plan: str
    subjects: list[str]
    checked: int
    violations: list[Violation]

    @property
    def ok(self) -> bool:
        return not self.violations


def _term_pattern(term: str) -> re.Pattern[str]:
    # whole words where the term starts or ends with a word character
    left = r"(?<!\w)" if term[:1].isalnum() else ""
    right = r"(?!\w)" if term[-1:].isalnum() else ""
    return re.compile(left + re.escape(term) + right, re.IGNORECASE)


def check(reader: StoreReader, plan: str, subjects: list[str]) -> CheckResult:
    """The constraints in scope of `subjects` (all of them if none) that `plan` violates."""
    found: dict[str, ConstraintRecord] = {}
    for subject in subjects or [None]:  # type: ignore[list-item]
        for c in reader.constraints(subject):
            found.setdefault(c.id, c)
    violations = []
    for c in found.values():
        hit = next((m.group(0) for t in c.forbid if (m := _term_pattern(t).search(plan))), None)
        if hit is None:
            hit = next((m.group(0) for p in c.patterns if (m := _safe(p).search(plan))), None)
        if hit is not None:
            prefer = f"; use {c.prefer!r} instead" if c.prefer else ""
            message = f"{hit!r} is forbidden on {c.scope}: {c.reason}{prefer}"
            violations.append(Violation(constraint=c, matched=hit, message=message))
    return CheckResult(plan=plan, subjects=subjects, checked=len(found), violations=violations)


def _safe(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error:
        return re.compile(re.escape(pattern), re.IGNORECASE)
