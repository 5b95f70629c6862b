"""Tokens and refusals: the access part of `Ledger` (DESIGN §5).

A token belongs to one principal with roles; only its hash is stored. Every refused
call is recorded as an event (who tried what). `Tokens` is mixed into `Ledger`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from whenever import Instant

from episteme.errors import (
    TOKEN_PREFIX,
    Conflict,
    InvalidInput,
    NotFound,
    Unauthenticated,
    hide_secrets,
)
from episteme.ledger.access import (
    Denial,
    Principal,
    TokenRecord,
    TokenRefused,
    default_kind,
    new_secret,
    parse_roles,
    token_hash,
)
from episteme.ledger.journal import Draft, Event, EventKind
from episteme.ledger.model import check_before, check_limit, check_name, check_window
from episteme.timeutil import Clock, to_us

if TYPE_CHECKING:
    from episteme.ledger.store import BuildFn, Store, StoreReader


def _us(instant: Instant | None) -> int | None:
    return None if instant is None else to_us(instant)


class Tokens:
    """Issue, list, revoke and check bearer tokens; record refusals."""

    store: Store
    clock: Clock
    refusal_listeners: list[Callable[[str], None]]
    """Each called with the operation of every refusal `deny` records, once it is recorded
    (how a server counts them in `/metrics`)."""

    def _write(self, build: BuildFn) -> list[Event]:
        raise NotImplementedError

    def issue_token(
        self,
        principal: str,
        roles: Sequence[str],
        *,
        by: str,
        kind: str | None = None,
        expires: Instant | None = None,
        first: bool = False,
    ) -> tuple[str, TokenRecord]:
        """Issue a bearer token for `principal`. The secret is returned here, once.

        With `first`, only when the ledger has no token at all (checked in the write,
        so two processes starting on a fresh home cannot both create one).
        """
        check_name(principal, "name")
        if principal[:2].lower() == "t_":
            raise InvalidInput(
                "t_… names token ids: choose a principal name without it", field="name"
            )
        if principal[:6].lower() == "local:":
            raise InvalidInput(
                "local:… names the operating-system users of local commands: choose a"
                " principal name without it",
                field="name",
            )
        check_name(by, "by")
        parsed = parse_roles(list(roles))
        kind = kind or default_kind(parsed)
        if kind not in ("agent", "human"):
            raise InvalidInput(f"unknown kind {kind!r}: use agent or human", field="kind")
        if expires is not None and expires <= self.clock.now():
            raise InvalidInput(
                "the expiry is in the past: give a future time (a relative one reads as"
                " a time ago: write 'in 30d', not '30d')",
                field="expires",
            )
        secret = new_secret()
        digest = token_hash(secret)
        token_id = "t_" + digest[:12]

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            if first and r.tokens():
                raise Conflict("this ledger already has tokens: use `episteme token create`")
            payload = {
                "token_id": token_id,
                "hash": digest,
                "principal": principal,
                "kind": kind,
                "roles": [str(x) for x in parsed],
                "expires_at": _us(expires),
            }
            return [Draft(EventKind.TOKEN_ISSUED, by, payload)]

        self._write(build)
        found = self.store.token(token_id=token_id)
        assert found is not None
        return secret, self._stated(found)

    def bootstrap_admin(self, *, by: str) -> tuple[str, TokenRecord] | None:
        """The first admin token of a ledger that has none; None when it has tokens."""
        if self.store.tokens():
            return None
        try:
            return self.issue_token("admin", ["admin"], by=by, first=True)
        except Conflict:
            return None

    def tokens(self, principal: str | None = None) -> list[TokenRecord]:
        """Every token (active, expired and revoked), oldest first; never secrets."""
        if principal is not None:
            check_name(principal, "name")
        return [self._stated(t) for t in self.store.tokens(principal)]

    def _stated(self, record: TokenRecord) -> TokenRecord:
        """`record` with its state now (active, expired or revoked), as it is shown."""
        return record.model_copy(update={"state": record.state_at(self.clock.now())})

    def revoke_token(self, ref: str, *, by: str, reason: str) -> list[TokenRecord]:
        """Revoke a token by id or by its secret (what someone holding a leaked token
        has), or every active token of a principal by name."""
        check_name(by, "by")
        if not reason.strip():
            raise InvalidInput("revoking a token needs a reason", field="reason")
        ids: list[str] = []
        secret = ref.strip().startswith(TOKEN_PREFIX)
        missing = "no token has the secret given" if secret else f"no token or principal {ref!r}"

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            if secret:  # never repeated: found by its hash, named by its id
                found = r.token(hash=token_hash(ref.strip()))
            else:
                found = _by_id(r, ref) if ref[:2].lower() == "t_" else None  # or a prefix
            targets = [found] if found else r.tokens(ref)  # a principal named ep_…
            if not targets:
                raise NotFound(f"{missing}: see `episteme token list`", field="ref")
            live = [t.id for t in targets if t.revoked_at is None]
            if not live:
                which = f"token {targets[0].id}" if len(targets) == 1 else "every token"
                raise Conflict(f"{which} of {targets[0].principal} is already revoked")
            ids[:] = live
            return [Draft(EventKind.TOKEN_REVOKED, by, {"token_ids": live, "reason": reason})]

        self._write(build)
        return [self._stated(t) for t in self.store.tokens() if t.id in ids]

    def authenticate(self, secret: str | None) -> Principal:
        """The principal a bearer token belongs to; `Unauthenticated` otherwise.

        A revoked or expired token raises `TokenRefused`, which names the principal so
        that the caller can record the attempt (`deny`) off its request path.
        """
        if not secret:
            raise Unauthenticated(
                "no bearer token: send `Authorization: Bearer <token>` "
                "(an admin creates one with `episteme token create`)"
            )
        found = self.store.token(hash=token_hash(secret))
        if found is None:
            raise Unauthenticated("unknown token: check it, or ask an admin for a new one")
        now = self.clock.now()
        state = found.state_at(now)
        if state != "active":
            when = found.revoked_at if state == "revoked" else found.expires_at
            assert when is not None
            why = f"token {found.id} of {found.principal} {state} at {when.format_iso()}"
            raise TokenRefused(
                f"{why}: ask an admin for a new token", principal=found.principal, token_id=found.id
            )
        return Principal(
            name=found.principal, kind=found.kind, roles=frozenset(found.roles), token_id=found.id
        )

    def recheck(self, who: Principal, target: str) -> str | None:
        """None while `who`'s token is still active, for an answer that goes on after the
        request was authorized (a followed stream); else why it is not, the attempt then
        recorded as a refused authentication: the answer should say so, and end."""
        found = self.store.token(token_id=who.token_id)
        if found is not None and found.principal == who.name:
            state = found.state_at(self.clock.now())
            if state == "active":
                return None
            why = f"token {found.id} of {found.principal} {state} while it was being answered"
        else:
            why = f"token {who.token_id} of {who.name} is gone"
        self.deny(who.name, who.token_id, "authenticate", target, why)
        return why

    def deny(
        self, principal: str, token_id: str | None, operation: str, target: str | None, reason: str
    ) -> None:
        """Record a refused call: who tried what, and why."""

        def build(r: StoreReader, at: int, seq: int) -> list[Draft]:
            payload = {  # bounded: a refused caller chooses the path it asks for
                "token_id": token_id,
                "operation": operation,
                "target": None if target is None else hide_secrets(target)[:256],
                "reason": hide_secrets(reason)[:1024],
            }
            return [Draft(EventKind.ACCESS_DENIED, principal, payload)]

        self._write(build)
        for listener in self.refusal_listeners:
            listener(operation)

    def denials(
        self,
        *,
        principal: str | None = None,
        since: Instant | None = None,
        until: Instant | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[Denial]:
        """Refused calls, newest first (`until` inclusive); with `before`, the page below
        that journal position (the last item's `seq`)."""
        if principal is not None:
            check_name(principal, "principal")
        check_limit(limit)
        check_window(since, until)
        check_before(before)
        return self.store.denials(principal, _us(since), limit, _us(until), before=before)


def _by_id(r: StoreReader, ref: str) -> TokenRecord | None:
    """The token whose id is `ref` or a unique prefix of it; None: no such token (`ref`
    may then be a principal's name)."""
    try:
        return r.token(token_id=r.resolve(ref, want="token")[1])
    except NotFound:
        return None
