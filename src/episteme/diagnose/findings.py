"""What specialists produce and what they are given.

A specialist is a coroutine ``run(ctx) -> list[Finding]``. It reads the credentials it
declared through `ctx.secret(ref)` (values live only in the memory of the worker running
the session, and never go into a finding, a log line or an exception message), runs its
diagnostic queries with a real client, and reports each observation as a `Finding` that
names the query it ran and the credential *reference* it used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from episteme.errors import WorldError


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


Run = Callable[[SpecialistContext], Awaitable[list[Finding]]]
