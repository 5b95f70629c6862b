"""Conflicts: two approved values on a single-valued subject at the same valid time.

Approving a fact or decision supersedes the approved values whose valid time it covers
(all of them, for assertions without a valid time). A value approved for a narrower
window leaves the older one approved: where their valid times overlap with different
values, the subject is in conflict. Answers show it; the gardener lists and notifies it.
"""

from __future__ import annotations

from collections.abc import Iterable

from episteme.ledger.canonical import content_id
from episteme.ledger.model import SINGLE_VALUED, Assertion, ConflictNote, Lifecycle
from episteme.timeutil import to_us

_NEVER = -(2**63)
_EVER = 2**63


def _window(a: Assertion) -> tuple[int, int]:
    start = _NEVER if a.valid_from is None else to_us(a.valid_from)
    end = _EVER if a.valid_to is None else to_us(a.valid_to)
    return start, end


def covers(
    new_from: int | None, new_to: int | None, old_from: int | None, old_to: int | None
) -> bool:
    """Whether a new valid time [new_from, new_to) covers an old one (None: unbounded)."""
    starts = new_from is None or (old_from is not None and new_from <= old_from)
    ends = new_to is None or (old_to is not None and new_to >= old_to)
    return starts and ends


def conflicts(assertions: Iterable[Assertion]) -> list[ConflictNote]:
    """The conflicts among approved single-valued assertions, per subject."""
    by_subject: dict[str, list[Assertion]] = {}
    for a in assertions:
        if a.lifecycle is Lifecycle.APPROVED and a.kind in SINGLE_VALUED:
            by_subject.setdefault(a.subject, []).append(a)
    out = []
    for subject, group in sorted(by_subject.items()):
        clash: dict[str, Assertion] = {}
        for i, a in enumerate(group):
            a_start, a_end = _window(a)
            for b in group[i + 1 :]:
                b_start, b_end = _window(b)
                if a.value != b.value and a_start < b_end and b_start < a_end:
                    clash[a.id], clash[b.id] = a, b
        if clash:
            ids = sorted(clash)
            out.append(
                ConflictNote(
                    key="conflict:" + content_id({"ids": ids})[:24],
                    subject=subject,
                    assertion_ids=ids,
                    values=[clash[i].value for i in ids],
                )
            )
    return out
