"""Negative constraints and the pre-flight check of a plan against them (DESIGN §2).

A constraint forbids, within a scope (a subject and everything below it, tags naming
the kinds of plan it covers, or both):

- *terms*, matched case-insensitively as whole words in the plan and against its items;
- *patterns*, regular expressions (RE2 syntax) searched in the plan and matched whole
  against items;
- *identifiers* (package names, paths, image tags), matched exactly against the items
  and as whole tokens in the plan.

A check is audited like a read (`constraint.checked`) and returns each violation with
the reason, the preferred alternative, the origin and the constraint's strength.
Strength is freshness: it halves every `half_life_days` since the constraint was made
or last hit, and a hit brings it back to 1. Below `DORMANT_BELOW` a constraint is
dormant: it still answers, as a warning rather than a violation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Literal, Protocol

import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints
from pydantic import BaseModel
from whenever import Instant

from episteme.errors import InvalidInput
from episteme.ledger.canonical import check_texts
from episteme.ledger.model import check_subject
from episteme.ledger.records import ConstraintRecord
from episteme.text import quoted
from episteme.timeutil import to_us

DORMANT_BELOW = 0.25
"""A constraint weaker than this (two half-lives without a hit) is dormant."""
DEFAULT_HALF_LIFE_DAYS = 30.0
MAX_PATTERN = 500
MAX_TERMS = 100
MAX_WORD = 512
"""The longest term, identifier or preferred alternative."""
MAX_REASON = 4096
"""The longest reason: agents are shown it at every hit."""
MAX_TAGS = 20
TAG = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"
"""A tag: a word such as ``deploy``, ``npm`` or ``db-migration`` (any case; kept in
lower case), up to 64 characters."""
_TAG_RE = re.compile(TAG)
_DAY_US = 86_400_000_000

Severity = Literal["violation", "warning"]
FoundIn = Literal["plan", "item"]


class Violation(BaseModel):
    """One constraint the plan breaks, and how strongly it still holds."""

    constraint: ConstraintRecord
    matched: str
    found_in: FoundIn
    strength: float
    severity: Severity
    message: str


class CheckResult(BaseModel):
    """The answer to a pre-flight check; `check_id` is its audit receipt."""

    check_id: str | None = None
    agent: str | None = None
    at: Instant | None = None
    plan: str
    scope: list[str]
    tags: list[str] = []
    items: list[str] = []
    checked: int
    violations: list[Violation]

    @property
    def ok(self) -> bool:
        """No violation (dormant warnings do not block)."""
        return not any(v.severity == "violation" for v in self.violations)


def strength(c: ConstraintRecord, now: Instant) -> float:
    """Freshness in (0, 1]: halves every half-life since creation or the last hit."""
    since = c.last_hit_at or c.at
    age_days = max(0, to_us(now) - to_us(since)) / _DAY_US
    return float(0.5 ** (age_days / c.half_life_days))


def check_list(values: Iterable[str], field: str) -> None:
    """Refuse one string where a list of them belongs: read as a list of its characters,
    ``"deploy"`` would be the tags d, e, p, l, o, y, and a check of them would meet none
    of the constraints on deploys."""
    if isinstance(values, str | bytes):
        raise InvalidInput(
            f"{field} is a list: give [{values!r}] rather than one string", field=field
        )


def check_reason(reason: str, missing: str) -> str:
    """`reason` without the spaces around it; refused when empty (saying `missing`) or
    over `MAX_REASON`."""
    check_texts({"reason": reason})
    if not reason.strip():
        raise InvalidInput(missing, field="reason")
    if len(reason) > MAX_REASON:
        raise InvalidInput(
            f"the reason has {len(reason):,} characters: give at most {MAX_REASON:,}",
            field="reason",
        )
    return reason.strip()


def check_tags(tags: Sequence[str], *, field: str = "tags") -> list[str]:
    """`tags` in lower case, each once, in the order given; refused unless each is a
    word of letters, digits and ``. _ : / -`` (such as ``deploy`` or ``db-migration``)."""
    check_list(tags, field)
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"at most {MAX_TAGS} tags", field=field)
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
            shown = quoted(tag) if isinstance(tag, str) else repr(tag)
            raise InvalidInput(
                f"invalid tag {shown}: use a word of letters, digits, '.', '_', ':', '/' or "
                "'-', starting with a letter or digit (e.g. deploy, npm, db-migration), at "
                "most 64 characters",
                field=field,
            )
        if (folded := tag.lower()) not in out:
            out.append(folded)
    return out


def new_constraint(
    *,
    scope: str | None,
    reason: str,
    forbid: Sequence[str] = (),
    patterns: Sequence[str] = (),
    items: Sequence[str] = (),
    prefer: str | None = None,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    tags: Sequence[str] = (),
) -> dict[str, Any]:
    """Validate a constraint and return its payload (without id and origin)."""
    for name, values in (("forbid", forbid), ("patterns", patterns), ("items", items)):
        check_list(values, name)
    texts = {"scope": scope, "reason": reason, "forbid": list(forbid), "prefer": prefer}
    check_texts(texts | {"patterns": list(patterns), "items": list(items)})
    labels = check_tags(tags)
    if scope is not None and not scope.strip():
        scope = None
    if scope is None and not labels:
        raise InvalidInput(
            "a constraint needs a scope: the subject it covers, or tags naming the kinds of "
            "plan it covers (deploy, npm)",
            field="scope",
        )
    if scope is not None:
        check_subject(scope, field="scope")
    check_reason(reason, "a constraint needs a reason: why it is forbidden")
    if prefer is not None and len(prefer) > MAX_WORD:
        raise InvalidInput(
            f"what to prefer has {len(prefer):,} characters: give at most {MAX_WORD}",
            field="prefer",
        )
    terms = _words(forbid, "forbid")
    idents = _words(items, "items")
    if len(patterns) > MAX_TERMS:
        raise InvalidInput(f"at most {MAX_TERMS} patterns to forbid", field="patterns")
    for p in patterns:
        _compile(p)
    if not (terms or patterns or idents):
        raise InvalidInput(
            "a constraint must forbid something: give a term, a pattern (a regular "
            "expression) or an identifier",
            field="forbid",
        )
    if not 0 < half_life_days <= 3650:
        raise InvalidInput(
            "the half-life must be more than 0 and at most 3650 days", field="half_life_days"
        )
    return {
        "scope": scope,
        **({"tags": labels} if labels else {}),  # recorded where given, as a check's are
        "forbid": terms,
        "patterns": list(patterns),
        "items": idents,
        "prefer": prefer.strip() if prefer and prefer.strip() else None,
        "reason": reason.strip(),
        "half_life_days": float(half_life_days),
    }


_FORBIDDEN = {"forbid": "terms", "items": "identifiers"}
"""What each list of forbidden words is, in the words of a refusal."""


def _words(values: Sequence[str], field: str) -> list[str]:
    out = [v.strip() for v in values]
    what = _FORBIDDEN[field]
    if any(not v for v in out):
        raise InvalidInput(f"an empty value among the {what} to forbid: give a word", field=field)
    if len(out) > MAX_TERMS:
        raise InvalidInput(f"at most {MAX_TERMS} {what} to forbid", field=field)
    if any(len(v) > MAX_WORD for v in out):
        raise InvalidInput(
            f"the {what} to forbid have at most {MAX_WORD} characters each", field=field
        )
    return out


class _Matcher(Protocol):
    def search(self, text: str) -> Any: ...
    def fullmatch(self, text: str) -> Any: ...


_RE2 = re2.Options()
_RE2.case_sensitive = False
_RE2.log_errors = False  # RE2 would write each refused pattern to stderr


def _cut(pattern: str, limit: int = 80) -> str:
    """A pattern as typed (no escapes doubled, spaces kept), cut when long."""
    return (
        pattern if len(pattern) <= limit else f"{pattern[: limit - 1]}… ({len(pattern)} characters)"
    )


def _compile(pattern: str) -> _Matcher:
    """A pattern as RE2 compiles it. RE2 matches in time linear in the text, so no
    pattern can stall a check: Python's backtracking engine takes days to search
    forty a's with `(a+)+$`, and a check runs on an agent's path to acting."""
    if not pattern or len(pattern) > MAX_PATTERN:
        raise InvalidInput(f"a pattern must have 1 to {MAX_PATTERN} characters", field="patterns")
    try:
        matcher: _Matcher = re2.compile(pattern, _RE2)
    except re2.error as exc:
        why = exc.args[0] if exc.args else "invalid"
        why = why.decode(errors="replace") if isinstance(why, bytes) else str(why)
        raise InvalidInput(
            f"invalid regular expression '{_cut(pattern)}': {why} (patterns are RE2 syntax, "
            "without backreferences or lookaround)",
            field="patterns",
        ) from None
    return matcher


@lru_cache(maxsize=1024)
def _matcher(pattern: str) -> _Matcher:
    """The matcher of a recorded pattern. One recorded before patterns were RE2 (with a
    lookaround, say) keeps the meaning Python's engine gave it."""
    try:
        return _compile(pattern)
    except InvalidInput:
        return re.compile(pattern, re.IGNORECASE)


def _term_pattern(term: str) -> re.Pattern[str]:
    # whole words where the term starts or ends with a word character
    left = r"(?<!\w)" if term[:1].isalnum() else ""
    right = r"(?!\w)" if term[-1:].isalnum() else ""
    return re.compile(left + re.escape(term) + right, re.IGNORECASE)


def _ident_pattern(ident: str) -> re.Pattern[str]:
    # a token of its own: not part of a longer name, path or version; a full stop or a
    # colon that ends a sentence or a clause after it is not part of it
    edge = r"[\w./@:-]"
    return re.compile(rf"(?<!{edge}){re.escape(ident)}(?![\w/@-]|[.:]{edge})")


def _hit(c: ConstraintRecord, plan: str, items: Sequence[str]) -> tuple[str, FoundIn] | None:
    """What of the plan or its items breaks `c`: (the text matched, "plan" or "item")."""
    folded = {i.casefold(): i for i in items}
    for term in c.forbid:
        if (m := _term_pattern(term).search(plan)) is not None:
            return m.group(0), "plan"
        if term.casefold() in folded:
            return folded[term.casefold()], "item"
    for p in c.patterns:
        rx = _matcher(p)
        if (m := rx.search(plan)) is not None:
            return m.group(0), "plan"
        if (hit := next((i for i in items if rx.fullmatch(i)), None)) is not None:
            return hit, "item"
    for ident in c.items:
        if ident in items:
            return ident, "item"
        if (m := _ident_pattern(ident).search(plan)) is not None:
            return m.group(0), "plan"
    return None


def covers(c: ConstraintRecord) -> str:
    """What a constraint covers, in words: ``on auth.jwt``, ``in deploy plans``."""
    kinds = f"in {' or '.join(c.tags)} plans" if c.tags else ""
    return " or ".join(w for w in (f"on {c.scope}" if c.scope else "", kinds) if w)


def evaluate(
    found: Iterable[ConstraintRecord], plan: str, items: Sequence[str], now: Instant
) -> list[Violation]:
    """The violations of `plan` and `items` among `found`, strongest first."""
    out = []
    for c in found:
        hit = _hit(c, plan, items)
        if hit is None:
            continue
        power = strength(c, now)
        severity: Severity = "violation" if power >= DORMANT_BELOW else "warning"
        prefer = f"; use {c.prefer!r} instead" if c.prefer else ""
        dormant = " (dormant constraint, revived by this hit)" if severity == "warning" else ""
        message = f"{hit[0]!r} is forbidden {covers(c)}: {c.reason}{prefer}{dormant}"
        out.append(
            Violation(
                constraint=c,
                matched=hit[0],
                found_in=hit[1],
                strength=round(power, 4),
                severity=severity,
                message=message,
            )
        )
    out.sort(key=lambda v: (v.severity != "violation", -v.strength, v.constraint.seq))
    return out
