"""What the ledger learns, over HTTP: constraints and checks, trust after a correction,
conflicts, notifications, webhooks, and the gardener running inside the server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from whenever import TimeDelta

from episteme.api import Settings, create_app
from episteme.ledger import Ledger
from episteme.ledger.gardener import Gardener
from episteme.ledger.model import AssertionInput, Lifecycle
from episteme.timeutil import ManualClock
from tests.api.conftest import Api

SUBJECT = "auth.jwt.algorithm"
AXIOS = {
    "scope": "code.http_client",
    "forbid": ["node-fetch"],
    "prefer": "axios",
    "reason": "node-fetch v2 leaks sockets behind our proxy",
}
DAYS_30 = TimeDelta(hours=24 * 30)


def _problem(r: Any, status: int | tuple[int, ...], *words: str) -> dict[str, Any]:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert set(body) == {"type", "title", "status", "detail", "field"}
    assert body["status"] == r.status_code
    for word in words:
        assert word in body["detail"], body
    return body


def _head(api: Api) -> int:
    return api.ledger.store.head()[0]


def _constraint(api: Api) -> dict[str, Any]:
    r = api.call("POST", "/v1/constraints", role="supervisor", json=AXIOS)
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def _wrong_value(api: Api) -> str:
    """ES256 asserted by agent-1, then corrected by supervisor-1 with RS256 and a constraint."""
    r = api.call("POST", "/v1/assertions", json={"subject": SUBJECT, "value": "ES256"})
    assert r.status_code == 201, r.text
    es: str = r.json()["id"]
    fix = api.call(
        "POST",
        f"/v1/assertions/{es}/correct",
        role="supervisor",
        json={"reason": "prod verifies RS256", "value": "RS256", "forbid": True},
    )
    assert fix.status_code == 200, fix.text
    return es


# -- constraints and pre-flight checks ----------------------------------------------------


def test_a_constraint_stops_an_agents_plan_and_the_check_is_audited(api: Api) -> None:
    made = _constraint(api)
    assert made["strength"] == 1.0
    assert made["state"] == "active"
    cid = made["constraint"]["id"]
    assert made["constraint"]["origin"] == "direct:supervisor-1"

    r = api.call(
        "POST",
        "/v1/constraints/check",
        json={
            "plan": "add node-fetch and call the billing API",
            "scope": ["code.http_client"],
            "items": ["node-fetch"],
        },
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["agent"] == "agent-1"  # the token's principal
    assert result["checked"] == 1
    [v] = result["violations"]
    assert v["severity"] == "violation"
    assert v["strength"] == 1.0
    assert v["matched"] == "node-fetch"
    assert v["constraint"]["id"] == cid
    assert v["constraint"]["prefer"] == "axios"
    assert v["constraint"]["origin"] == "direct:supervisor-1"
    assert "use 'axios' instead" in v["message"]

    audited = api.call("GET", "/v1/checks", params={"agent": "agent-1"}).json()
    assert [c["id"] for c in audited] == [result["check_id"]]
    assert audited[0]["violations"][0]["constraint_id"] == cid
    assert api.call("GET", "/v1/checks", params={"agent": "someone-else"}).json() == []

    # the older path, with `subjects`, answers the same way
    old = api.call(
        "POST", "/v1/check", json={"plan": "use node-fetch", "subjects": ["code.http_client"]}
    )
    assert old.status_code == 200, old.text
    assert [v["matched"] for v in old.json()["violations"]] == ["node-fetch"]
    fine = api.call("POST", "/v1/constraints/check", json={"plan": "use axios"}).json()
    assert fine["violations"] == []
    assert len(api.call("GET", "/v1/checks").json()) == 3
    listed = api.call("GET", "/v1/constraints", params={"scope": "code.http_client.retry"})
    assert [c["constraint"]["id"] for c in listed.json()] == [cid]


def test_a_constraint_of_tags_over_http(api: Api) -> None:
    forced = {"tags": ["deploy"], "patterns": ["--force"], "reason": "skips the canary"}
    r = api.call("POST", "/v1/constraints", role="supervisor", json=forced)
    assert r.status_code == 201, r.text
    made = r.json()["constraint"]
    assert (made["scope"], made["tags"]) == (None, ["deploy"])
    plan = {"plan": "kubectl apply --force", "tags": ["deploy"]}
    result = api.call("POST", "/v1/constraints/check", json=plan).json()
    assert result["tags"] == ["deploy"]
    assert [v["constraint"]["id"] for v in result["violations"]] == [made["id"]]
    assert "forbidden in deploy plans" in result["violations"][0]["message"]
    other = api.call("POST", "/v1/check", json=plan | {"tags": ["terraform"]}).json()
    assert other["checked"] == 0
    assert [c["tags"] for c in api.call("GET", "/v1/checks").json()] == [["terraform"], ["deploy"]]
    one = api.call("GET", "/v1/constraints", params={"tag": ["rollout", "deploy"]}).json()
    assert [c["constraint"]["id"] for c in one] == [made["id"]]
    assert api.call("GET", "/v1/constraints", params={"tag": "npm"}).json() == []

    head = _head(api)
    for path, body in (
        ("/v1/constraints", {"forbid": ["x"], "reason": "no scope, no tag"}),
        ("/v1/constraints", forced | {"tags": ["two words"]}),
        ("/v1/constraints/check", {"plan": "p", "tags": ["-x"]}),
        ("/v1/constraints/check", {"plan": "p", "tags": "deploy"}),
    ):
        r = api.call("POST", path, role="supervisor", json=body)
        problem = _problem(r, (400, 422))
        assert problem["field"] in ("scope", "tags", "tags.0"), problem
        assert "tag" in problem["detail"], problem
    bad = api.call("GET", "/v1/constraints", params={"tag": "no way"})
    assert "e.g. deploy" in _problem(bad, 422)["detail"]
    assert _head(api) == head  # nothing written


def test_a_supervisor_retires_a_constraint_over_http(api: Api) -> None:
    made = _constraint(api)["constraint"]
    path = f"/v1/constraints/{made['id'][:10]}/retire"
    head = _head(api)
    _problem(api.call("POST", path, json={"reason": "in my way"}), 403)  # an agent
    _problem(api.call("POST", path, role="supervisor", json={}), 422)
    _problem(api.call("POST", "/v1/constraints/c_nope/retire", role="supervisor",
                      json={"reason": "r"}), 404, "c_nope")  # fmt: skip
    assert _head(api) == head + 1  # the refused agent is recorded, nothing else
    r = api.call("POST", path, role="supervisor", json={"reason": "axios everywhere now"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "retired"
    assert r.json()["constraint"]["retired_by"] == "supervisor-1"
    again = api.call("POST", path, role="supervisor", json={"reason": "again"})
    _problem(again, 409, "was retired already, by supervisor-1")
    assert api.call("GET", "/v1/constraints").json() == []
    listed = api.call("GET", "/v1/constraints", params={"retired": "true"}).json()
    assert [c["state"] for c in listed] == ["retired"]
    fine = api.call("POST", "/v1/constraints/check", json={"plan": "use node-fetch"}).json()
    assert (fine["checked"], fine["violations"]) == (0, [])


def test_a_constraint_fades_in_thirty_days_and_a_hit_renews_it(
    api: Api, clock: ManualClock
) -> None:
    cid = _constraint(api)["constraint"]["id"]
    clock.advance(DAYS_30)
    faded = api.call("GET", f"/v1/constraints/{cid}").json()
    assert faded["strength"] == pytest.approx(0.5)
    assert faded["state"] == "active"

    r = api.call(
        "POST", "/v1/constraints/check", json={"plan": "x", "items": ["node-fetch"]}
    ).json()
    [v] = r["violations"]
    assert v["strength"] == pytest.approx(0.5)
    assert v["severity"] == "violation"
    renewed = api.call("GET", f"/v1/constraints/{cid[:10]}").json()
    assert renewed["strength"] == 1.0
    assert renewed["constraint"]["hits"] == 1


BAD_INPUT = [
    # method, path, role, body, status, words in the detail, field
    (
        "POST",
        "/v1/constraints",
        "supervisor",
        {"scope": "code", "patterns": ["("], "reason": "r"},
        400,
        ["invalid regular expression '('"],
        "patterns",
    ),
    ("POST", "/v1/constraints", "supervisor", {**AXIOS, "scope": ""}, (400, 422), [], "scope"),
    (
        "POST",
        "/v1/constraints",
        "supervisor",
        {"scope": "code", "reason": "r"},
        400,
        ["must forbid something", "a term, a pattern"],
        "forbid",
    ),
    (
        "POST",
        "/v1/constraints",
        "supervisor",
        {**AXIOS, "colour": "red"},
        422,
        ["unknown field 'colour'"],
        "colour",
    ),
    ("POST", "/v1/constraints/check", "agent", {"plan": ""}, 400, ["give the plan"], "plan"),
    ("POST", "/v1/constraints/check", "agent", {"plan": " "}, 400, ["give the plan"], "plan"),
    (
        "POST",
        "/v1/constraints/check",
        "agent",
        {"plan": "x", "agent": "someone-else"},
        422,
        ["unknown field 'agent'", "bearer token"],
        "agent",
    ),
    (
        "PUT",
        "/v1/webhooks/hook",
        "admin",
        {"url": "https://hooks.example.com/x", "secret": "literal-value"},
        400,
        ["literal secret", "env:VARNAME"],
        "secret",
    ),
    (
        "PUT",
        "/v1/webhooks/hook",
        "admin",
        {"url": "ftp://hooks.example.com"},
        400,
        ["http://"],
        "url",
    ),
    ("DELETE", "/v1/webhooks/nobody", "admin", None, 404, ["'nobody'"], "name"),
]


@pytest.mark.parametrize(("method", "path", "role", "body", "status", "words", "field"), BAD_INPUT)
def test_bad_input_is_a_problem_and_nothing_is_written(
    api: Api,
    method: str,
    path: str,
    role: str,
    body: dict[str, Any] | None,
    status: int | tuple[int, ...],
    words: list[str],
    field: str | None,
) -> None:
    before = _head(api)
    problem = _problem(api.call(method, path, role=role, json=body), status, *words)
    assert problem["field"] == field
    assert "literal-value" not in str(problem)
    assert _head(api) == before
    assert api.call("GET", "/v1/constraints").json() == []
    assert api.call("GET", "/v1/webhooks", role="admin").json() == []


def test_a_malformed_scope_is_explained_like_a_subject(api: Api) -> None:
    r = api.call("POST", "/v1/constraints", role="supervisor", json={**AXIOS, "scope": "a b"})
    _problem(r, 422, "dotted segments")


# -- trust, notifications and the gardener --------------------------------------------------


def test_a_correction_lowers_the_asserting_agents_trust(api: Api) -> None:
    es = _wrong_value(api)
    Gardener(api.ledger).run_until_caught_up()

    scores = api.call("GET", "/v1/trust", params={"topic": "auth"}).json()
    [mine] = [s for s in scores if s["agent"] == "agent-1"]
    assert mine["score"] < 0.5
    assert mine["score"] == pytest.approx(1 / 3)
    assert mine["moves"][0]["assertion_id"] == es
    assert "corrected by supervisor-1" in mine["moves"][0]["reason"]

    [note] = api.call("GET", "/v1/notifications", params={"type": "correction"}).json()
    assert note["data"]["assertion_id"] == es
    assert note["data"]["right_value"] == "RS256"
    assert note["data"]["by"] == "supervisor-1"
    status = api.call("GET", "/v1/gardener").json()
    assert status["lag_events"] == 0
    assert status["cursor"] == status["head"] == _head(api)

    # the constraint the correction recorded stops the next agent
    check = api.call(
        "POST", "/v1/constraints/check", json={"plan": "set ES256", "scope": [SUBJECT]}
    ).json()
    assert check["violations"][0]["constraint"]["origin"].startswith("correction:")


def test_webhooks_keep_only_env_references(api: Api) -> None:
    spec = {
        "url": "env:SOME_VAR",
        "secret": "env:OTHER",
        "format": "slack",
        "events": ["correction"],
    }
    r = api.call("PUT", "/v1/webhooks/oncall", role="admin", json=spec)
    assert r.status_code == 200, r.text
    [listed] = api.call("GET", "/v1/webhooks", role="admin").json()
    assert listed["name"] == "oncall"
    assert listed["url"] == "env:SOME_VAR"
    assert listed["secret"] == "env:OTHER"
    assert listed["format"] == "slack"
    assert listed["events"] == ["correction"]

    # a correction is queued for it (its delivery state depends on the deliverer's timing)
    _wrong_value(api)
    Gardener(api.ledger).run_until_caught_up()
    r = api.call("GET", "/v1/webhooks/deliveries", role="admin")
    assert r.status_code == 200, r.text
    assert [(d["webhook"], d["type"]) for d in r.json()] == [("oncall", "correction")]
    job = r.json()[0]["job_id"]
    one = api.call("GET", "/v1/webhooks/deliveries", role="admin", params={"limit": 1})
    assert one.headers["link"] == f'<?limit=1&before={job}>; rel="next"'
    older = api.call("GET", "/v1/webhooks/deliveries", role="admin", params={"before": job})
    assert older.status_code == 200, older.text
    assert older.json() == []
    zero = api.call("GET", "/v1/webhooks/deliveries", role="admin", params={"before": 0})
    assert zero.status_code == 422
    assert "before" in zero.json()["detail"]
    assert api.call("GET", "/v1/webhooks", role="agent").status_code == 403

    assert api.call("DELETE", "/v1/webhooks/oncall", role="admin").status_code == 204
    assert api.call("GET", "/v1/webhooks", role="admin").json() == []


def test_two_approved_values_at_once_are_a_conflict(api: Api, clock: ManualClock) -> None:
    rs = api.call(
        "POST",
        "/v1/assertions",
        role="supervisor",
        json={"subject": SUBJECT, "value": "RS256", "lifecycle": "approved"},
    )
    assert rs.status_code == 201, rs.text
    tomorrow = clock.now().add(hours=24)
    es = api.call(
        "POST",
        "/v1/assertions",
        role="supervisor",
        json={
            "subject": SUBJECT,
            "value": "ES256",
            "lifecycle": "approved",
            "valid_from": tomorrow.format_iso(),
        },
    )
    assert es.status_code == 201, es.text
    ids = sorted([rs.json()["id"], es.json()["id"]])
    Gardener(api.ledger).run_until_caught_up()

    [conflict] = api.call("GET", "/v1/conflicts").json()
    assert conflict["subject"] == SUBJECT
    assert conflict["assertion_ids"] == ids
    assert conflict["open"] is True
    assert set(conflict["values"]) == {"RS256", "ES256"}
    [note] = api.call("GET", "/v1/notifications", params={"type": "conflict"}).json()
    assert note["key"] == conflict["key"]

    today = api.call("POST", "/v1/query", json={"subject": SUBJECT, "lens": "approved"}).json()
    assert [i["assertion"]["value"] for i in today["items"]] == ["RS256"]
    assert today["conflicts"] == []
    clock.advance(TimeDelta(hours=25))
    later = api.call("POST", "/v1/query", json={"subject": SUBJECT, "lens": "approved"}).json()
    [shown] = later["conflicts"]
    assert shown["subject"] == SUBJECT
    assert shown["assertion_ids"] == ids
    assert f"conflict on {SUBJECT}" in later["summary"]


# -- the gardener inside the server -------------------------------------------------------


def test_the_server_runs_the_gardener_when_it_leads(ledger: Ledger, home: Path) -> None:
    settings = Settings(home=home, mcp=False)
    assert settings.background  # on by default
    agent, _ = ledger.issue_token("agent-1", ["agent"], by="admin")
    boss, _ = ledger.issue_token("supervisor-1", ["supervisor"], by="admin")
    app = create_app(settings, ledger=ledger)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(
            "/v1/assertions",
            json={"subject": SUBJECT, "value": "ES256"},
            headers={"Authorization": f"Bearer {agent}"},
        )
        es = r.json()["id"]
        r = client.post(
            f"/v1/assertions/{es}/correct",
            json={"reason": "prod verifies RS256"},
            headers={"Authorization": f"Bearer {boss}"},
        )
        assert r.status_code == 200, r.text
        head = ledger.store.head()[0]

        auth = {"Authorization": f"Bearer {agent}"}
        deadline = time.monotonic() + 10
        status = client.get("/v1/gardener", headers=auth).json()
        while status["cursor"] < head and time.monotonic() < deadline:
            time.sleep(0.05)
            status = client.get("/v1/gardener", headers=auth).json()
        assert status["lag_events"] == 0, status
        assert status["cursor"] == head

        notes = client.get("/v1/notifications", headers=auth).json()
        assert [n["data"]["assertion_id"] for n in notes if n["type"] == "correction"] == [es]
        workers = client.get("/health").json()["workers"]
        assert workers["background"] == "leading"
        assert workers["gardener"].startswith(f"cursor {head}, 0 events behind")
        assert "gardener_errors" not in workers


def _approved(subject: str, value: int) -> AssertionInput:
    return AssertionInput(subject=subject, value=value, agent="seed", lifecycle=Lifecycle.APPROVED)


def test_a_server_that_stops_closes_its_ledger_after_its_gardener_stopped(
    location: str | Path, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A backlog that takes the gardener one long step (60 events of 40 approvals each,
    # under its batch of 500): the server stops while that step runs.
    with Ledger.init(location) as seeded:
        for b in range(60):
            seeded.add([_approved(f"svc.s{b}.k{i}", i) for i in range(40)])
        head = seeded.store.head()[0]
    db = location if isinstance(location, str) else None
    app = create_app(Settings(home=home, db=db, mcp=False))  # the app opens (owns) the ledger
    with TestClient(app):
        deadline = time.monotonic() + 10
        while not app.state.gardener.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.gardener.running
    loop = app.state.gardener
    assert not loop.running
    # the step under way was dropped, not cut short by a closed store
    assert loop.errors == 0, loop.last_error
    assert "gardener:" not in caplog.text
    with Ledger.open(location) as after:
        gardener = Gardener(after)
        assert gardener.status().cursor in (0, head)  # a step is recorded whole or not at all
        gardener.run_until_caught_up()
        assert gardener.status().cursor == head
