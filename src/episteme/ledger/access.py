"""Who may do what: principals, roles, bearer tokens and the permission table.

A bearer token belongs to one principal (an agent or a human) and carries roles
(DESIGN §5). Only the token's BLAKE3 hash is stored; the secret is shown once, when
it is issued. The API and the MCP server both authenticate through `Ledger.authenticate`
and authorize through `Principal.require`, so the rules live here, in one table.

Roles nest: ``admin`` holds every role, ``supervisor`` holds ``agent``. ``approver``
(credential approvals) stands apart; only ``admin`` includes it. Reading (answers
without audit, history, trace, impact, diff, the audit itself) is open to every role:
whoever is on call must be able to investigate.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from typing import Literal

import blake3
from pydantic import BaseModel, ConfigDict
from whenever import Instant

from episteme.errors import (
    TOKEN_PREFIX,
    Forbidden,
    InvalidInput,
    Unauthenticated,
)


class Role(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    APPROVER = "approver"
    ADMIN = "admin"


_HOLDS: dict[Role, frozenset[Role]] = {
    Role.AGENT: frozenset({Role.AGENT}),
    Role.SUPERVISOR: frozenset({Role.SUPERVISOR, Role.AGENT}),
    Role.APPROVER: frozenset({Role.APPROVER}),
    Role.ADMIN: frozenset(Role),
}


class Op(StrEnum):
    """Operations that need a role; every route and MCP tool names one."""

    READ = "read"  # answers without audit, history, trace, impact, diff, audit, lenses
    ASSERT = "assert"
    QUERY = "query"
    DECIDE = "decide"
    CHECK = "check"
    REVIEW = "review"  # approve, deprecate, reject
    CORRECT = "correct"
    SUPERSEDE = "supersede"
    DEFINE_LENS = "define_lens"
    INTEGRITY = "integrity"  # verify, rebuild
    EXPORT = "export"
    TOKENS = "tokens"
    DENIALS = "denials"
    CONSTRAIN = "constrain"  # record a negative constraint
    WEBHOOKS = "webhooks"  # add, list and remove webhooks; see deliveries
    DIAGNOSE = "diagnose"  # open a diagnosis session, send alerts
    APPROVE_CREDENTIALS = "approve_credentials"  # approve or deny a session's credentials
    DELETE_SESSION = "delete_session"  # remove a diagnosis session and its events


PERMISSIONS: dict[Op, Role | None] = {
    Op.READ: None,  # any role
    Op.ASSERT: Role.AGENT,
    Op.QUERY: Role.AGENT,
    Op.DECIDE: Role.AGENT,
    Op.CHECK: Role.AGENT,
    Op.REVIEW: Role.SUPERVISOR,
    Op.CORRECT: Role.SUPERVISOR,
    Op.SUPERSEDE: Role.SUPERVISOR,
    Op.DEFINE_LENS: Role.SUPERVISOR,
    Op.DENIALS: Role.SUPERVISOR,
    Op.INTEGRITY: Role.ADMIN,
    Op.EXPORT: Role.ADMIN,
    Op.TOKENS: Role.ADMIN,
    Op.CONSTRAIN: Role.SUPERVISOR,
    Op.WEBHOOKS: Role.ADMIN,
    Op.DIAGNOSE: Role.AGENT,
    Op.APPROVE_CREDENTIALS: Role.APPROVER,
    Op.DELETE_SESSION: Role.APPROVER,
}
"""The role each operation needs (a role that holds it will do); None: any role."""


class Principal(BaseModel):
    """The authenticated caller: who the token says it is, never what a request claims."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str  # "agent" or "human"
    roles: frozenset[Role]
    token_id: str

    def holds(self, role: Role) -> bool:
        return any(role in _HOLDS[r] for r in self.roles)

    def allows(self, op: Op) -> bool:
        need = PERMISSIONS[op]
        return bool(self.roles) if need is None else self.holds(need)

    def require(self, op: Op) -> None:
        """Raise `Forbidden` unless one of the principal's roles allows `op`."""
        if not self.allows(op):
            need = PERMISSIONS[op]
            have = ", ".join(sorted(self.roles)) or "no roles"
            raise Forbidden(
                f"{op} needs the {need} role; {self.name} has {have}: "
                f"ask an admin for a token with the {need} role"
            )


TokenState = Literal["active", "expired", "revoked"]


class TokenRecord(BaseModel):
    """A token as listed: never its secret, never its hash."""

    id: str
    principal: str
    kind: str
    roles: list[Role]
    created_at: Instant
    created_by: str
    expires_at: Instant | None = None
    revoked_at: Instant | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    state: TokenState | None = None
    """active, expired or revoked when it was issued, listed or revoked (`Ledger`)."""

    def state_at(self, now: Instant) -> TokenState:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


class Denial(BaseModel):
    """A refused call: who tried what, and why it was refused."""

    seq: int
    at: Instant
    principal: str
    token_id: str | None
    operation: str
    target: str | None
    reason: str


class TokenRefused(Unauthenticated):
    """A known token that is revoked or expired: the caller should record the attempt."""

    def __init__(self, message: str, *, principal: str, token_id: str) -> None:
        super().__init__(message)
        self.principal = principal
        self.token_id = token_id


def new_secret() -> str:
    """A fresh bearer token: the prefix and 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(secret: str) -> str:
    return blake3.blake3(secret.encode()).hexdigest()


def parse_roles(roles: list[str] | tuple[str, ...]) -> list[Role]:
    if not roles:
        raise InvalidInput("a token needs at least one role", field="roles")
    out: list[Role] = []
    for r in roles:
        try:
            role = Role(r)
        except ValueError:
            known = ", ".join(Role)
            raise InvalidInput(f"unknown role {r!r}: use one of {known}", field="roles") from None
        if role not in out:
            out.append(role)
    return out


def default_kind(roles: list[Role]) -> str:
    """Agents hold only the agent role; any other role is a person's."""
    return "agent" if set(roles) == {Role.AGENT} else "human"
