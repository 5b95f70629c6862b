"""Diagnosis over HTTP: NDJSON streams, roles, the paths users know and /v1/diagnosis."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient
from whenever import TimeDelta

from episteme.api import Settings, create_app
from episteme.client import Client
from episteme.diagnose.config import DiagnosisConfig
from episteme.diagnose.engine import MAX_PROBLEM, DiagnosisEngine
from episteme.errors import Forbidden
from episteme.ledger import Ledger
from tests.diagnose.test_engine import CANARY, Vault, database
from tests.integration.server import live_server

NDJSON = {"Accept": "application/x-ndjson"}


class Http:
    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:
        self.client, self.tokens = client, tokens

    def __call__(self, method: str, path: str, who: str = "dev", **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def lines(self, r: Any) -> list[dict[str, Any]]:
        assert r.headers["content-type"].startswith("application/x-ndjson"), r.text
        return [orjson.loads(line) for line in r.text.splitlines() if line]


@pytest.fixture
def http(ledger: Ledger, home: Path) -> Iterator[Http]:
    engine = DiagnosisEngine(
        ledger, Vault(), config=DiagnosisConfig(), specialists={"database": database}
    )
    app = create_app(Settings(home=home, mcp=False, background=False), ledger=ledger,
                     diagnosis=engine)  # fmt: skip
    tokens = {
        who: ledger.issue_token(who, [role], by="admin")[0]
        for who, role in [("dev", "agent"), ("lead", "approver"), ("boss", "supervisor")]
    }
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Http(client, tokens)


@pytest.mark.parametrize("prefix", ["", "/v1/diagnosis"])
def test_diagnose_approve_stream_to_the_root_cause(http: Http, prefix: str) -> None:
    body = {"problem": "database connection failures in prod", "environment": "prod"}
    first = http.lines(http("POST", f"{prefix}/diagnose", json=body, headers=NDJSON))
    assert [e["type"] for e in first] == ["session_start", "text", "approval_required"]
    sid = first[0]["session_id"]
    refs = first[-1]["references"]
    assert refs == sorted(refs)
    assert all(r.startswith("op://Infrastructure/prod-db/") for r in refs)
    # the requester holds no approver role; a supervisor does not either
    for who in ("dev", "boss"):
        r = http("POST", f"{prefix}/approve/{sid}", who, json={"reason": "go"})
        assert r.status_code == 403, r.text
    r = http("POST", f"{prefix}/approve/{sid}", "lead", json={"reason": "incident 4711"},
             headers=NDJSON)  # fmt: skip
    rest = http.lines(r)
    assert rest[0]["type"] == "approval_accepted"
    assert rest[-1]["type"] == "diagnosis_complete"
    result = rest[-1]["result"]
    assert result["hypotheses"][0]["rule"] == "connection_exhaustion"
    assert [e["n"] for e in first + rest] == list(range(1, len(first + rest) + 1))
    status = http("GET", f"{prefix}/status/{sid}").json()
    assert status["status"] == "completed"
    assert status["approved"] == refs
    assert status["decided_by"] == "lead"
    everything = http("GET", f"{prefix}/status/{sid}?stream=true")
    assert len(http.lines(everything)) == len(first + rest)
    listed = http("GET", f"{prefix}/sessions").json()
    assert [s["id"] for s in listed] == [sid]
    assert CANARY not in everything.text + str(listed)
    assert http("DELETE", f"{prefix}/sessions/{sid}", "lead").status_code == 204
    assert http("GET", f"{prefix}/status/{sid}").status_code == 404


def test_sessions_page_on_by_id_past_a_shared_time(http: Http) -> None:
    # the clock stands still: every session starts at one time, ordered by id after it
    body = {"problem": "db timeouts", "environment": "staging"}
    made = {http("POST", "/diagnose", json=body).json()["id"] for _ in range(5)}
    every = http("GET", "/sessions").json()
    assert {s["id"] for s in every} == made
    walked: list[dict[str, Any]] = []
    got = http("GET", "/v1/diagnosis/sessions", params={"limit": 2})
    while got.json():
        walked += got.json()
        if len(got.json()) == 2:  # a full page links to the next
            link = got.headers["link"]
            assert link == f'<?limit=2&after={walked[-1]["id"]}>; rel="next"'
        else:
            assert "link" not in got.headers
        after = {"limit": 2, "after": walked[-1]["id"]}
        got = http("GET", "/v1/diagnosis/sessions", params=after)
    assert walked == every
    gone = http("GET", "/sessions", params={"after": "s_" + "0" * 24})
    assert gone.status_code == 400
    assert "no diagnosis session has the id 's_000000000000000000000000'" in gone.json()["detail"]
    long = http("GET", "/sessions", params={"after": "s" * 1025})
    assert long.status_code == 422
    assert http("GET", "/sessions", params={"after": ""}).status_code == 422


def test_json_answers_and_problems(http: Http) -> None:
    made = http("POST", "/diagnose", json={"problem": "db timeouts", "environment": "staging"})
    assert made.status_code == 201
    sid = made.json()["id"]
    assert made.json()["status"] == "waiting_for_approval"
    bad = [
        ("POST", "/diagnose", {"problem": "", "environment": "prod"}, 422),
        ("POST", "/diagnose", {"problem": "x", "environment": "qa"}, 422),
        ("POST", "/diagnose", {"problem": "x", "secret": "no"}, 422),
        ("POST", f"/approve/{sid}", {"reason": "go", "references": ["op://x/y/z"]}, 400),
        ("POST", "/approve/s_" + "0" * 24, {"reason": "go"}, 404),
        ("POST", "/approve/nonsense", {"reason": "go"}, 422),
        ("POST", f"/deny/{sid}", {}, 422),
    ]
    for method, path, body, status in bad:
        r = http(method, path, "dev" if path == "/diagnose" else "lead", json=body)
        assert r.status_code == status, (path, body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    assert http("POST", f"/deny/{sid}", "lead", json={"reason": "not now"}).json()["status"] == (
        "denied"
    )
    again = http("POST", f"/approve/{sid}", "lead", json={"reason": "go"})
    assert again.status_code == 409
    assert "is denied" in again.json()["detail"]


def _polled(http: Http, path: str, settled: Callable[[Any], bool]) -> Any:
    """What GET `path` answers once `settled` holds of it: the alerts route answers at
    once, and handles the payload just after. Fails after 10 s, with the last answer."""
    for _ in range(200):
        got = http("GET", path).json()
        if settled(got):
            return got
        time.sleep(0.05)
    raise AssertionError(f"GET {path} never settled: {got}")


def _sessions_once_settled(http: Http, count: int) -> list[dict[str, Any]]:
    """The sessions, once `count` of them are open and waiting for their approver."""
    waiting = "waiting_for_approval"
    return list(
        _polled(
            http,
            "/sessions",
            lambda got: len(got) >= count and all(s["status"] == waiting for s in got),
        )
    )


def _alerting(
    name: str,
    common: dict[str, str],
    summary: str,
    labels: dict[str, str],
    status: str = "firing",
    starts: str | None = None,
) -> dict[str, Any]:
    """What Alertmanager posts for one alert of the group `name` (`starts`: when it began
    to fire, which Alertmanager repeats in every notification of that firing)."""
    alert = {"status": status, "labels": labels, "fingerprint": f"f-{name}"}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{name}"}}',
        "status": status,
        "receiver": "episteme",
        "commonLabels": {"alertname": name, **common},
        "commonAnnotations": {"summary": summary},
        "alerts": [alert | ({"startsAt": starts} if starts else {})],
    }


def test_alertmanager_posts_twice_and_one_session_opens(http: Http) -> None:
    payload = _alerting(
        "PostgresTooManyConnections",
        {"datname": "app"},
        "connections near max_connections",
        {"instance": "db-1"},
    )
    for _ in range(2):
        r = http("POST", "/alerts", json=payload)
        assert r.status_code == 202
    bad = http("POST", "/alerts", json={**payload, "version": "3"})
    assert bad.status_code == 422
    sessions = _sessions_once_settled(http, 1)
    assert len(sessions) == 1
    assert sessions[0]["specialists"][0] == "database"


def test_a_session_never_records_a_bearer_token(http: Http, ledger: Ledger) -> None:
    # A token pasted in a problem, a context or an alert's summary was kept whole in the
    # session and streamed to every role that reads sessions; the ledger's own routes
    # refused it.
    token = http.tokens["lead"]
    for body in (
        {"problem": f"db down, used {token}", "environment": "prod"},
        {"problem": "db down", "environment": "prod", "context": {"t": f"x-{token}"}},
    ):
        r = http("POST", "/diagnose", json=body)
        assert r.status_code == 400, r.text
        assert "holds a bearer token" in r.json()["detail"]
    alert = _alerting("DbDown", {}, f"db down {token}", {"instance": "db-1"})
    r = http("POST", "/alerts", json=alert)
    assert r.status_code == 400, r.text
    assert "holds a bearer token" in r.json()["detail"]
    assert http("GET", "/sessions").json() == []
    assert token[3:] not in http("GET", "/incidents").text


def test_an_alert_is_cut_to_a_problem_and_an_unknown_environment_is_refused(
    http: Http,
) -> None:
    # A 300,000-character summary opened a session with all of it as its problem (sent
    # to the model, the approval's webhooks); env=qa was diagnosed as prod, with prod's
    # credentials asked for.
    r = http("POST", "/alerts", json=_alerting("Qa", {"env": "qa"}, "slow", {"i": "a"}))
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("the alerts' env label is 'qa', which is none of")
    assert r.json()["field"] == "commonLabels.env"
    long = _alerting("Big", {"environment": "Production"}, "x" * 300_000, {"i": "b"})
    assert http("POST", "/alerts", json=long).status_code == 202
    [session] = _sessions_once_settled(http, 1)
    assert session["environment"] == "prod"
    assert len(session["problem"]) == MAX_PROBLEM
    assert session["problem"].startswith("Big: xxx")
    assert session["problem"].endswith("x…")


@pytest.mark.parametrize("timed", [True, False])
def test_an_alert_that_resolved_and_fires_again_opens_a_new_diagnosis(
    http: Http, timed: bool
) -> None:
    # Its incident stayed open for good: the same alert firing a week later opened no
    # incident and no diagnosis. Alertmanager says when each firing began (`startsAt`);
    # without it, the resolved notification is what lets the alert open again.
    def alert(status: str, starts: str) -> dict[str, Any]:
        return _alerting(
            "PodCrashLooping",
            {"namespace": "checkout"},
            "checkout pods in CrashLoopBackOff",
            {"pod": "checkout-7d9"},
            status,
            starts if timed else None,
        )

    week = ("2026-11-14T03:00:00Z", "2026-11-21T03:00:00Z")
    # each payload, and the incidents (state, notifications) once it is handled: keyed
    # by its firing, the first firing's incident stays; untimed, the one incident opens
    # again
    again = [("open", 1), ("resolved", 2)] if timed else [("open", 1)]
    steps = [
        (alert("firing", week[0]), 1, [("open", 1)]),
        (alert("firing", week[0]), 1, [("open", 2)]),  # repeated while it fires
        (alert("resolved", week[0]), 1, [("resolved", 2)]),
        (alert("firing", week[1]), 2, again),
        (alert("firing", week[1]), 2, [(s, n + (s == "open")) for s, n in again]),
    ]
    for payload, sessions, incidents in steps:
        assert http("POST", "/alerts", json=payload).status_code == 202
        _incidents_become(http, incidents)  # each handled before the next is sent
        seen = _sessions_once_settled(http, sessions)
        assert len(seen) == sessions, (payload["status"], seen)
    assert [s["specialists"] for s in seen] == [["kubernetes"], ["kubernetes"]]


def _incidents_become(http: Http, expected: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """The incidents, once they are `expected` (state, notifications), in any order, and
    each linked to its session (which happens after the session has started)."""
    return list(
        _polled(
            http,
            "/v1/diagnosis/incidents",
            lambda got: (
                sorted((i["status"], i["alerts"]) for i in got) == sorted(expected)
                and all(i["session_id"] for i in got)
            ),
        )
    )


def test_a_new_firing_opens_a_diagnosis_when_no_resolved_notification_came(
    http: Http,
) -> None:
    # With `send_resolved: false`, Alertmanager never says an alert stopped: a firing
    # that began later is a new one all the same.
    for starts, sessions in (("2026-11-14T03:00:00Z", 1), ("2026-11-21T03:00:00Z", 2)):
        payload = _alerting("DiskFull", {"instance": "db-1"}, "disk full", {}, starts=starts)
        assert http("POST", "/alerts", json=payload).status_code == 202
        assert len(_sessions_once_settled(http, sessions)) == sessions


def test_incidents_are_listed_with_their_state_and_sessions(http: Http, ledger: Ledger) -> None:
    # An incident an alert opened could not be seen anywhere, open or resolved.
    def alert(status: str, starts: str) -> dict[str, Any]:
        return _alerting("DiskFull", {"instance": "db-1"}, "disk full", {}, status, starts)

    week = ("2026-11-14T03:00:00Z", "2026-11-21T03:00:00Z")
    for payload, sessions in (
        (alert("firing", week[0]), 1),
        (alert("firing", week[0]), 1),
        (alert("resolved", week[0]), 1),
        (alert("firing", week[1]), 2),
    ):
        assert http("POST", "/alerts", json=payload).status_code == 202
        settled = _sessions_once_settled(http, sessions)
        ledger.clock.advance(TimeDelta(minutes=1))  # type: ignore[attr-defined]
    every = _incidents_become(http, [("open", 1), ("resolved", 2)])  # the first sent twice
    assert [(i["status"], i["alerts"]) for i in every] == [("open", 1), ("resolved", 2)]
    assert [i["session_id"] for i in every] == [s["id"] for s in settled]
    assert every[0]["labels"] == {"alertname": "DiskFull", "instance": "db-1"}
    opened = http("GET", "/v1/diagnosis/incidents", params={"status": "open"}).json()
    assert opened == every[:1]
    first = http("GET", "/v1/diagnosis/incidents", params={"limit": 1})
    assert first.headers["link"] == f'<?limit=1&after={every[0]["key"]}>; rel="next"'
    rest = http("GET", "/v1/diagnosis/incidents", params={"after": every[0]["key"]}).json()
    assert rest == every[1:]
    bad = http("GET", "/v1/diagnosis/incidents", params={"status": "closed"})
    assert bad.status_code == 422


def test_incidents_opened_at_one_time_page_one_at_a_time(http: Http) -> None:
    # Every alert of one payload opens its incident at the same moment: a page of one
    # must still get past each, with and without a status.
    firing = _alerting("NodeDown", {}, "nodes down", {})
    firing["alerts"] = [
        {"status": "firing", "labels": {"node": f"n{n}"}, "fingerprint": f"n{n}"} for n in range(3)
    ]
    assert http("POST", "/alerts", json=firing).status_code == 202
    _sessions_once_settled(http, 1)
    gone = {
        **firing,
        "status": "resolved",
        "alerts": [{**firing["alerts"][1], "status": "resolved"}],
    }
    assert http("POST", "/alerts", json=gone).status_code == 202
    every = _incidents_become(http, [("open", 1), ("open", 1), ("resolved", 1)])
    assert len({i["opened_at"] for i in every}) == 1
    for status in (None, "open"):
        asked = {} if status is None else {"status": status}
        whole = http("GET", "/v1/diagnosis/incidents", params=asked).json()
        walked: list[dict[str, Any]] = []
        at: dict[str, str] = {}
        while page := http(
            "GET", "/v1/diagnosis/incidents", params=asked | at | {"limit": 1}
        ).json():
            walked += page
            at = {"after": page[-1]["key"]}
        assert walked == whole
        assert len(walked) == (3 if status is None else 2)


def test_the_python_client_diagnoses_and_approves(ledger: Ledger, home: Path) -> None:
    engine = DiagnosisEngine(ledger, Vault(), specialists={"database": database})
    app = create_app(
        Settings(home=home, mcp=False, background=False), ledger=ledger, diagnosis=engine
    )
    dev, _ = ledger.issue_token("dev", ["agent"], by="admin")
    lead, _ = ledger.issue_token("lead", ["approver"], by="admin")
    with live_server(app) as url, Client(url, dev) as agent, Client(url, lead) as approver:
        session = agent.diagnose("database connection failures", environment="prod")
        assert session.status == "waiting_for_approval"
        with pytest.raises(Forbidden):
            agent.approve_session(session.id, reason="mine")
        approver.approve_session(session.id, reason="incident 4711")
        for _ in range(100):
            done = agent.session(session.id)
            if done.status == "completed":
                break
            time.sleep(0.05)
        assert done.result is not None
        assert done.result.hypotheses[0].rule == "connection_exhaustion"
        assert [s.id for s in agent.sessions()] == [session.id]


def test_text_no_backend_can_store_is_refused_before_anything_opens(http: Http) -> None:
    # A NUL character: PostgreSQL cannot store it, so neither backend takes it.
    r = http("POST", "/diagnose", json={"problem": "db\u0000 timeouts", "environment": "prod"})
    assert (r.status_code, r.json()["field"]) == (400, "problem"), r.text
    assert "NUL character" in r.json()["detail"]
    context = {"problem": "db timeouts", "context": {"ticket": "\u0000"}}
    assert http("POST", "/diagnose", json=context).json()["field"] == "context"
    assert http("GET", "/sessions").json() == []
    sid = http("POST", "/diagnose", json={"problem": "db timeouts"}).json()["id"]
    for verb in ("approve", "deny"):
        r = http("POST", f"/{verb}/{sid}", "lead", json={"reason": "ok\u0000"})
        assert (r.status_code, r.json()["field"]) == (400, "reason"), r.text
    assert http("GET", f"/status/{sid}").json()["status"] == "waiting_for_approval"
    alert = {
        "version": "4",
        "groupKey": '{}:{alertname="PostgresTooManyConnections"}',
        "status": "firing",
        "alerts": [{"status": "firing", "labels": {"team": "db\u0000"}}],
    }
    r = http("POST", "/alerts", json=alert)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "team"
    assert r.json()["detail"].startswith("alerts[0].labels.team: text may not contain")
    # Alertmanager's fields that are not kept may hold anything
    alert["alerts"][0]["labels"] = {"team": "db"}
    alert["alerts"][0]["extra"] = {"n": 2**70, "s": "\u0000"}
    assert http("POST", "/alerts", json=alert).status_code == 202
