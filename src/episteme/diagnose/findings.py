"""What specialists produce and what they are given.

A specialist is a coroutine ``run(ctx) -> list[Finding]``. It reads the credentials it
declared through `ctx.secret(ref)` (values live only in the memory of the worker running
the session, and never go into a finding, a log line or an exception message), runs its
diagnostic queries with a real client, and reports each observation as a `Finding` that
names the query it ran and the credential *reference* it used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from episteme.errors import WorldError, hide_url_passwords


class SpecialistError(WorldError):
    """A specialist could not look at its system: the login was refused, the server could
    not be reached, or its settings are incomplete. The message never holds a secret."""


Severity = Literal["info", "warning", "critical"]
Environment = Literal["prod", "staging", "dev"]


class Finding(BaseModel):
    """One observation of a specialist, with its provenance."""

    model_config = ConfigDict(extra="forbid")

    specialist: str
    code: str = Field(description="the rule it feeds, e.g. db.connection_exhaustion")
    severity: Severity
    claim: str = Field(description="one sentence a person can act on")
    evidence: dict[str, JsonValue] = Field(default_factory=dict)
    tool: str = Field(description="the client that observed it, e.g. psycopg, boto3:cloudwatch")
    query: str | None = Field(None, description="the query or call it ran")
    credential_ref: str | None = Field(None, description="the op://… reference used, never a value")


NAMES_NOT_SECRETS = frozenset({"host", "port", "username", "user", "dbname", "database", "region"})
"""Credential roles whose values are names (where to sign in, as whom): fetched from the
secret store with the rest, and said in messages ("cannot connect to PostgreSQL at
db-1:5432 (database app, user app)"), so not scrubbed; scrubbing them blanked every
"app" inside "approved" and "apps", and the blanks said what the value was."""

PARTIAL = 6
"""The shortest start (or end) of a secret taken for one where a text was cut short: at
an ellipsis."""

_CUT = re.compile(r"…|\.\.\.")
"""Where a text was cut short: an ellipsis, wherever it stands (what follows a cut, a
"(the key lacks this permission)" or the next of several joined messages, leaves it
inside the text)."""


def _forms(value: str) -> set[str]:
    """`value` as texts about it may write it: whole; as a JSON string writes it (a
    quote, a backslash, a control character escaped, and with `ensure_ascii` every
    letter past ASCII too); as Python's repr of it writes it, as a `str` and as `bytes`
    (an HTTP library's "Invalid header value b'Bearer …'"); percent-encoded, as in a
    URL or a form."""
    return {
        value,
        json.dumps(value, ensure_ascii=False)[1:-1],
        json.dumps(value)[1:-1],
        repr(value)[1:-1],
        repr(value.encode())[2:-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
    }


class Redactor:
    """Scrubs secret values out of text: each value wherever it appears whole (in any of
    the forms `_forms` lists; a run of white space in it matching any other, as in text
    put on one line), and what is left of one cut short: its start (`PARTIAL`
    characters or more) just before an ellipsis, or its end just after one, wherever
    the ellipsis stands. Passwords in URLs (`scheme://user:password@host`) are masked
    too, whoever's they are. Call it on a string; `finding` scrubs what a finding says
    (its claim, its evidence, keys included, and its query), not the names that file it
    (specialist, code, severity, tool, reference)."""

    MARK = "[redacted]"

    def __init__(self, values: Iterable[str]) -> None:
        given = [v for v in values if v.strip()]
        kept = {v.strip() for v in given} | set(given)  # and as given, white space and all
        forms = {form for v in kept for form in _forms(v)}
        self._values = sorted(forms, key=len, reverse=True)
        whole = (r"\s+".join(map(re.escape, v.split())) for v in self._values)
        self._whole = re.compile("|".join(whole)) if self._values else None
        self._longest = max(map(len, self._values), default=0)
        # what a cut leaves of a value starts (or ends) with one of these: one pass of C
        # over the text at a cut says whether any value needs a closer look
        starts = {re.escape(v[:PARTIAL]) for v in self._values}
        ends = {re.escape(v[-PARTIAL:]) for v in self._values}
        self._starts = re.compile("|".join(sorted(starts))) if starts else None
        self._ends = re.compile("|".join(sorted(ends))) if ends else None

    def __call__(self, text: str) -> str:
        if self._whole is None:
            return hide_url_passwords(text)
        # the values first: one may hold a URL, or an @ that the URL rule would split
        return hide_url_passwords(self._cut(self._whole.sub(self.MARK, text)))

    def _cut(self, text: str) -> str:
        """`text` with what is left of a value cut short blanked, at each ellipsis."""
        cuts = list(_CUT.finditer(text))
        if not cuts:
            return text
        spans = []
        for cut in cuts:
            n = self._start_before(text, cut.start())
            if n:
                spans.append((cut.start() - n, cut.start()))
            n = self._end_after(text, cut.end())
            if n:
                spans.append((cut.end(), cut.end() + n))
        for start, stop in sorted(spans, reverse=True):  # from the end: places stay put
            text = text[:start] + self.MARK + text[stop:]
        return text

    def _start_before(self, text: str, at: int) -> int:
        """How many characters before `at` are the start of a value (0: none)."""
        window = text[max(0, at - self._longest) : at]
        if self._starts is None or not self._starts.search(window):
            return 0
        best = 0
        for value in self._values:
            if value[:PARTIAL] not in window:
                continue
            for n in range(min(len(value), len(window)), max(best, PARTIAL - 1), -1):
                if window.endswith(value[:n]):
                    best = n
                    break
        return best

    def _end_after(self, text: str, at: int) -> int:
        """How many characters from `at` on are the end of a value (0: none)."""
        window = text[at : at + self._longest]
        if self._ends is None or not self._ends.search(window):
            return 0
        best = 0
        for value in self._values:
            if value[-PARTIAL:] not in window:
                continue
            for n in range(min(len(value), len(window)), max(best, PARTIAL - 1), -1):
                if window.startswith(value[-n:]):
                    best = n
                    break
        return best

    def finding(self, finding: Finding) -> Finding:
        return finding.model_copy(
            update={
                "claim": self(finding.claim),
                "evidence": self._walk(finding.evidence),
                "query": None if finding.query is None else self(finding.query),
            }
        )

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(k): self._walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        return value


def _unchanged(text: str) -> str:
    return text


@dataclass
class SpecialistContext:
    """What a specialist runs with: the problem, the environment, its settings and secrets.

    `settings` holds the non-secret configuration of the specialist for this environment
    (a database's port and name, a Prometheus URL, an AWS region and endpoint, a
    Kubernetes API server URL and namespace). `secret(ref)` returns the value of a
    credential reference the session's approval covered; asking for another raises.
    """

    problem: str
    environment: Environment
    settings: Mapping[str, Any]
    secret: Callable[[str], str]
    credentials: Mapping[str, str] = field(default_factory=dict)
    """Role → reference of the credentials this specialist was granted, e.g.
    ``{"password": "op://Infrastructure/prod-db/password"}``."""
    timeout_s: float = 20.0
    redact: Callable[[str], str] = _unchanged
    """Scrubs the session's secret values out of a text (a `Redactor`): for text read
    from a system that is then changed (grouped, shaped), where the engine's own
    scrubbing of the finding would no longer recognise a value."""


Run = Callable[[SpecialistContext], Awaitable[list[Finding]]]
