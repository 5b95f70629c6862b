"""Every role × every route: allowed, or 403 (recorded); no token: 401.

The table below is the policy as users read it in docs/api.md. A route that is not
in it fails `test_the_table_covers_every_route`, so a new route cannot slip in
without a decision about who may call it.
"""

from __future__ import annotations

from typing import Any

import pytest
from whenever import TimeDelta

from episteme.ledger.access import Principal, Role
from episteme.timeutil import ManualClock
from tests.api.conftest import ROLES, Api

ANY = "any"  # any role
PUBLIC = "public"  # no token needed

POLICY: dict[tuple[str, str], str] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/metrics"): ANY,
    ("GET", "/v1/whoami"): ANY,
    ("POST", "/v1/assertions"): "agent",
    ("POST", "/v1/assertions/batch"): "agent",
    ("GET", "/v1/assertions/{ref}"): ANY,
    ("POST", "/v1/assertions/{ref}/approve"): "supervisor",
    ("POST", "/v1/assertions/{ref}/deprecate"): "supervisor",
    ("POST", "/v1/assertions/{ref}/reject"): "supervisor",
    ("POST", "/v1/assertions/{ref}/correct"): "supervisor",
    ("POST", "/v1/query"): "agent",
    ("POST", "/v1/check"): "agent",
    ("POST", "/v1/constraints/check"): "agent",
    ("POST", "/v1/constraints"): "supervisor",
    ("GET", "/v1/constraints"): ANY,
    ("GET", "/v1/constraints/{ref}"): ANY,
    ("POST", "/v1/constraints/{ref}/retire"): "supervisor",
    ("GET", "/v1/checks"): ANY,
    ("GET", "/v1/trust"): ANY,
    ("GET", "/v1/conflicts"): ANY,
    ("GET", "/v1/notifications"): ANY,
    ("GET", "/v1/gardener"): ANY,
    ("GET", "/v1/webhooks"): "admin",
    ("PUT", "/v1/webhooks/{name}"): "admin",
    ("DELETE", "/v1/webhooks/{name}"): "admin",
    ("GET", "/v1/webhooks/deliveries"): "admin",
    ("POST", "/diagnose"): "agent",
    ("POST", "/approve/{id}"): "approver",
    ("POST", "/deny/{id}"): "approver",
    ("GET", "/status/{id}"): ANY,
    ("GET", "/sessions"): ANY,
    ("GET", "/incidents"): ANY,
    ("DELETE", "/sessions/{id}"): "approver",
    ("POST", "/alerts"): "agent",
    ("POST", "/v1/diagnosis/diagnose"): "agent",
    ("POST", "/v1/diagnosis/approve/{id}"): "approver",
    ("POST", "/v1/diagnosis/deny/{id}"): "approver",
    ("GET", "/v1/diagnosis/status/{id}"): ANY,
    ("GET", "/v1/diagnosis/sessions"): ANY,
    ("GET", "/v1/diagnosis/incidents"): ANY,
    ("DELETE", "/v1/diagnosis/sessions/{id}"): "approver",
    ("POST", "/v1/diagnosis/alerts"): "agent",
    ("POST", "/v1/decisions"): "agent",
    ("GET", "/v1/decisions"): ANY,
    ("GET", "/v1/served"): ANY,
    ("GET", "/v1/audit"): ANY,
    ("GET", "/v1/diff"): ANY,
    ("GET", "/v1/blame/{ref}"): ANY,
    ("GET", "/v1/trace/{ref}"): ANY,
    ("GET", "/v1/impact/{ref}"): ANY,
    ("GET", "/v1/epochs/{name}"): ANY,
    ("POST", "/v1/epochs/{name}/supersede"): "supervisor",
    ("GET", "/v1/lenses"): ANY,
    ("PUT", "/v1/lenses/{name}"): "supervisor",
    ("POST", "/v1/tokens"): "admin",
    ("GET", "/v1/tokens"): "admin",
    ("POST", "/v1/tokens/revoke"): "admin",
    ("POST", "/v1/tokens/{ref}/revoke"): "admin",
    ("GET", "/v1/denials"): "supervisor",
    ("GET", "/v1/verify"): "admin",
    ("POST", "/v1/rebuild"): "admin",
    ("GET", "/v1/export"): "admin",
}


def _request(aid: str, path: str, method: str) -> dict[str, Any]:
    """Arguments that make a well-formed request to `path` (the target may not exist)."""
    concrete = path.format(ref=aid, name="docs-batch", id="s_" + "0" * 24)
    if path.startswith("/v1/constraints/{ref}"):
        concrete = path.format(ref="c_")
    bodies: dict[str, Any] = {
        "/v1/assertions": {"subject": "svc.a", "value": 1},
        "/v1/assertions/batch": {"assertions": [{"subject": "svc.b", "value": 2}]},
        "/v1/query": {"subject": "auth"},
        "/v1/check": {"plan": "deploy ES256"},
        "/v1/constraints/check": {"plan": "deploy ES256", "items": ["node-fetch"]},
        **{
            p + "/diagnose": {"problem": "db timeouts", "environment": "dev"}
            for p in ("", "/v1/diagnosis")
        },
        **{
            p + "/alerts": {
                "version": "4",
                "groupKey": "g",
                "status": "firing",
                "alerts": [{"status": "firing", "labels": {"alertname": "X"}}],
            }
            for p in ("", "/v1/diagnosis")
        },
        "/v1/constraints": {"scope": "code.http", "forbid": ["node-fetch"], "reason": "leaks"},
        "/v1/decisions": {"action": "deploy", "query_ids": []},
        "/v1/tokens": {"name": "new-agent", "roles": ["agent"]},
        "/v1/rebuild": {"repair": False},
    }
    body = bodies.get(path)
    if path == "/v1/tokens/revoke":
        body = {"ref": aid, "reason": "wrong"}
    elif path.endswith(("/correct", "/supersede", "/revoke", "/retire")):
        body = {"reason": "wrong"}
    elif path.endswith(("/approve", "/deprecate", "/reject")):
        body = {}
    elif path.startswith("/v1/lenses/"):
        body = {"lifecycles": ["approved"]}
    elif path.endswith(("/approve/{id}", "/deny/{id}")):
        body = {"reason": "go"}
    elif path == "/v1/webhooks/{name}" and method == "PUT":
        body = {"url": "http://127.0.0.1:9/hook", "format": "slack"}
    params = {
        "/v1/served": {"subject": "auth"},
        "/v1/diff": {"since": "2026-11-21T00:00:00Z"},
    }.get(path, {})
    return {"path": concrete, "json": body, "params": params}


def test_the_table_covers_every_route(api: Api) -> None:
    documented = {
        (method.upper(), path) for path, ops in api.app.openapi()["paths"].items() for method in ops
    }
    assert documented == set(POLICY)


def _allowed(role: str, need: str) -> bool:
    if need in (PUBLIC, ANY):
        return True
    principal = Principal(name="p", kind="human", roles=frozenset({Role(role)}), token_id="t")
    return principal.holds(Role(need))


@pytest.mark.parametrize(("method", "path"), sorted(POLICY), ids=lambda x: str(x))
def test_every_role_on_every_route(api: Api, clock: ManualClock, method: str, path: str) -> None:
    need = POLICY[(method, path)]
    refused = 0
    aid = api.ledger.assert_one(subject="auth.jwt.algorithm", value="RS256", agent="seed").id
    for role in (None, *ROLES):
        clock.advance(TimeDelta(seconds=1))
        r = api.call(method, role=role, **_request(aid, path, method))
        who = role or "no token"
        if role is None and need != PUBLIC:
            assert r.status_code == 401, (who, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["www-authenticate"] == "Bearer"
        elif role is None or _allowed(role, need):
            assert r.status_code not in (401, 403), (who, r.status_code, r.text)
            assert r.status_code < 500, (who, r.text)
        else:
            assert r.status_code == 403, (who, r.status_code, r.text)
            problem = r.json()
            assert problem["status"] == 403
            assert f"needs the {need} role" in problem["detail"]
            refused += 1
    # every refusal is itself recorded: who tried what
    denials = api.ledger.denials()
    assert len(denials) == refused
    for d in denials:
        assert d.target is not None
        assert d.target.startswith(method + " /")
        assert d.principal.endswith("-1")
        assert d.token_id


def test_roles_nest_as_documented() -> None:
    def holds(role: Role) -> set[str]:
        p = Principal(name="p", kind="human", roles=frozenset({role}), token_id="t")
        return {r.value for r in Role if p.holds(r)}

    assert holds(Role.AGENT) == {"agent"}
    assert holds(Role.SUPERVISOR) == {"supervisor", "agent"}
    assert holds(Role.APPROVER) == {"approver"}
    assert holds(Role.ADMIN) == {"agent", "supervisor", "approver", "admin"}


def test_an_agent_cannot_approve_its_own_assertion(api: Api) -> None:
    """Recording an assertion as approved is a review: the ES256 outage in one request."""
    body = {"subject": "auth.jwt.algorithm", "value": "ES256", "lifecycle": "approved"}
    before = api.ledger.store.head()[0]
    for path, payload in (
        ("/v1/assertions", body),
        ("/v1/assertions/batch", {"assertions": [{"subject": "a.b", "value": 1}, body]}),
    ):
        r = api.call("POST", path, json=payload)
        assert r.status_code == 403, r.text
        assert "a supervisor approves" in r.json()["detail"]
    assert api.ledger.answer("auth.jwt.algorithm").items == []
    assert [d.operation for d in api.ledger.denials()] == ["review", "review"]
    assert api.ledger.store.head()[0] == before + 2  # the two refusals, nothing else
    r = api.call("POST", "/v1/assertions", role="supervisor", json=body)
    assert r.status_code == 201
    assert r.json()["lifecycle"] == "approved"
