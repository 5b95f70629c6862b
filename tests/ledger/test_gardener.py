"""The correction loop: trust that drops, constraints that stop the next agent, conflicts,
expiry, and a gardener that can be replayed and killed without changing its answer."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
from whenever import Instant, TimeDelta

from episteme.errors import InvalidInput, NotFound
from episteme.ledger import Ledger, learning
from episteme.ledger.constraints import evaluate
from episteme.ledger.copy import copy_ledger
from episteme.ledger.gardener import Gardener, GardenerLoop
from episteme.ledger.records import ConstraintRecord
from episteme.ledger.trust import TrustPolicy
from episteme.ledger.webhooks import Deliverer, WebhookSpec, deliveries, verify
from episteme.timeutil import ManualClock, to_us
from tests.receiver import Receiver

DAY = TimeDelta(hours=24)
SUBJECT = "auth.jwt.algorithm"


def _es256_story(ledger: Ledger) -> tuple[str, str]:
    """RS256 approved; ES256 proposed; the orchestrator reads `latest` and the deploy is
    recorded citing that read. Returns (ES256 id, decision id)."""
    ledger.assert_one(
        subject=SUBJECT, value="RS256", agent="docs-agent", confidence=0.92, lifecycle="approved"
    )
    es = ledger.assert_one(subject=SUBJECT, value="ES256", agent="research-agent", confidence=0.87)
    read = ledger.query(SUBJECT, agent="orchestrator", lens="latest")
    assert [i.assertion.value for i in read.items] == ["ES256"]
    decision = ledger.decide("deploy auth config", agent="orchestrator", query_ids=[read.query_id])
    return es.id, decision.id


def _score(ledger: Ledger, agent: str, topic: str = "auth") -> float:
    rows = ledger.trust_scores(agent=agent, topic=topic)
    return rows[0].score if rows else 0.5


def test_the_es256_correction_lowers_the_orchestrator_and_the_research_agent_more(
    ledger: Ledger,
) -> None:
    es, decision = _es256_story(ledger)
    gardener = Gardener(ledger)
    gardener.run_until_caught_up()
    before = {a: _score(ledger, a) for a in ("orchestrator", "research-agent")}
    assert before == {"orchestrator": 0.5, "research-agent": 0.5}

    ledger.correct(es, by="oncall", reason="prod expects RS256", value="RS256", forbid=True)
    assert gardener.run_until_caught_up() == 1

    orchestrator, research = _score(ledger, "orchestrator"), _score(ledger, "research-agent")
    assert research < orchestrator < 0.5
    assert research == pytest.approx(1 / 3)  # (1 + 0) / (2 + 1)
    assert orchestrator == pytest.approx(1 / 2.3)  # (1 + 0) / (2 + 0.3)
    # why it moved: the decision that relied on the bad answer is named
    moves = ledger.trust_scores(agent="orchestrator", topic="auth")[0].moves
    assert decision in moves[0].reason
    assert moves[0].role == "relied"
    # other topics are untouched, and the correction is a notification
    assert _score(ledger, "research-agent", "billing") == 0.5
    [note] = ledger.notifications(type="correction")
    assert note.data["assertion_id"] == es
    assert note.data["right_value"] == "RS256"
    assert gardener.status().lag_events == 0


def test_the_approver_of_a_wrong_value_loses_trust_too(ledger: Ledger) -> None:
    bad = ledger.assert_one(subject="db.pool.max", value=500, agent="tuner")
    ledger.approve(bad.id, by="lead")
    Gardener(ledger).run_until_caught_up()
    assert _score(ledger, "tuner", "db") == pytest.approx(2 / 3)  # approved: +1 success
    ledger.correct(bad.id, by="oncall", reason="max_connections is 100")
    Gardener(ledger).run_until_caught_up()
    assert _score(ledger, "lead", "db") == pytest.approx(1 / 2.5)
    assert _score(ledger, "tuner", "db") == pytest.approx(2 / 4)


def test_trust_decays_and_can_be_read_at_a_past_time(ledger: Ledger, clock: ManualClock) -> None:
    es, _ = _es256_story(ledger)
    ledger.correct(es, by="oncall", reason="prod expects RS256")
    Gardener(ledger).run_until_caught_up()
    corrected_at = clock.now()
    clock.advance(DAY * 90)  # one half-life: the failure weighs half
    assert _score(ledger, "research-agent") == pytest.approx(1 / 2.5)
    then = ledger.trust_scores(agent="research-agent", topic="auth", at=corrected_at)
    assert then[0].score == pytest.approx(1 / 3)
    before = ledger.trust_scores(agent="research-agent", at=corrected_at.subtract(seconds=1))
    assert before == []  # no evidence yet: the prior, 0.5


def test_the_consensus_lens_ranks_by_confidence_times_trust(ledger: Ledger) -> None:
    a = ledger.assert_one(subject="svc.region", value="eu-west-1", agent="mapper", confidence=0.9)
    ledger.assert_one(subject="svc.region", value="us-east-1", agent="scout", confidence=0.8)
    first = ledger.answer("svc.region", lens="consensus").items
    assert [i.assertion.value for i in first] == ["eu-west-1", "us-east-1"]
    for n in range(3):  # mapper is corrected three times on svc
        bad = ledger.assert_one(subject=f"svc.port{n}", value=n, agent="mapper")
        ledger.correct(bad.id, by="oncall", reason="wrong port")
    Gardener(ledger).run_until_caught_up()
    ranked = ledger.answer("svc.region", lens="consensus").items
    assert [i.assertion.value for i in ranked] == ["us-east-1", "eu-west-1"]
    assert ranked[1].assertion.id == a.id
    assert ranked[1].score == pytest.approx(0.9 * 0.2)


def test_trust_reads_take_any_number_of_agents(ledger: Ledger, clock: ManualClock) -> None:
    # a ranked read over values from many agents reads their trust in statements of
    # TRUST_CHUNK; the ones with evidence come back, whichever statement they fall in
    from episteme.ledger.sql.learning import TRUST_CHUNK

    bad = ledger.assert_one(subject="svc.port", value=1, agent="mapper")
    ledger.correct(bad.id, by="oncall", reason="wrong port")
    Gardener(ledger).run_until_caught_up()
    agents = [f"agent-{i:03d}" for i in range(2 * TRUST_CHUNK + 50)] + ["mapper"]
    totals = ledger.store.trust_totals([(a, "svc") for a in agents])
    assert list(totals) == [("mapper", "svc")]
    weights = ledger.store.trust_weights(agents, "svc", to_us(clock.now()))
    assert [(w.agent, w.failure) for w in weights] == [("mapper", 1.0)]
    assert ledger.store.trust_totals([]) == {}
    assert ledger.store.trust_weights([], "svc", to_us(clock.now())) == []


# -- constraints and checks --------------------------------------------------------------


def test_the_axios_story_thirty_days_later(ledger: Ledger, clock: ManualClock) -> None:
    made = ledger.add_constraint(
        scope="code.http_client",
        forbid=["node-fetch"],
        prefer="axios",
        reason="node-fetch v2 leaks sockets behind our proxy",
        by="oncall",
    )
    assert made.strength == 1.0
    assert made.state == "active"
    clock.advance(DAY * 30)  # a fresh agent, no memory
    result = ledger.check(
        "add node-fetch to call the billing API",
        ["code.http_client.billing"],
        agent="fresh-agent",
        items=["node-fetch"],
    )
    assert not result.ok
    [v] = result.violations
    assert (v.severity, v.strength, v.matched) == ("violation", 0.5, "node-fetch")
    assert v.constraint.prefer == "axios"
    assert v.constraint.origin == "direct:oncall"
    assert "use 'axios' instead" in v.message
    # the hit resurrected it
    assert ledger.constraint(made.constraint.id).strength == 1.0
    # audited like a read
    [record] = ledger.checks(agent="fresh-agent")
    assert record.id == result.check_id
    assert record.violations[0]["matched"] == "node-fetch"
    # a plan that uses axios passes
    assert ledger.check("call billing with axios", ["code.http_client"], agent="fresh-agent").ok


def test_a_dormant_constraint_still_answers_as_a_warning(
    ledger: Ledger, clock: ManualClock
) -> None:
    made = ledger.add_constraint(
        scope="deploy", patterns=[r"kubectl\s+delete\s+ns"], reason="namespaces hold PVCs", by="sre"
    )
    clock.advance(DAY * 120)
    assert ledger.constraints()[0].state == "dormant"
    result = ledger.check("kubectl delete ns staging", ["deploy.staging"], agent="ops-bot")
    assert result.ok  # a warning does not block
    [v] = result.violations
    assert v.severity == "warning"
    assert v.strength == pytest.approx(0.0625)
    assert ledger.constraint(made.constraint.id).state == "active"  # resurrected by the hit


def test_terms_patterns_and_identifiers(ledger: Ledger) -> None:
    ledger.add_constraint(
        scope="code",
        forbid=["eval"],
        patterns=[r"ES(256|384)"],
        items=["left-pad@1.0.0"],
        reason="reasons",
        by="sre",
    )
    check = ledger.check
    assert not check("we eval the config", agent="a").ok
    assert check("medieval retrieval", agent="a").ok  # whole words only
    assert not check("switch to es384", agent="a").ok
    assert not check("bump deps", agent="a", items=["ES256"]).ok
    assert not check("pin left-pad@1.0.0 for now", agent="a").ok
    assert check("pin left-pad@1.0.01", agent="a").ok  # a longer version is another identifier
    assert check("pin left-pad@1.0.0.1", agent="a").ok
    assert check("pin left-pad@1.0.0:latest", agent="a").ok
    for ended in ("we pin left-pad@1.0.0.", "pin left-pad@1.0.0: it works", "left-pad@1.0.0"):
        assert not check(ended, agent="a").ok, ended  # the end of a sentence is no version
    assert not check("bump deps", agent="a", items=["left-pad@1.0.0"]).ok
    assert check("bump deps", agent="a", items=["LEFT-PAD@1.0.0"]).ok  # identifiers are exact


def test_no_pattern_can_stall_a_check(ledger: Ledger) -> None:
    """Patterns are RE2, which matches in linear time: with Python's backtracking
    engine this check would search for longer than the age of the universe."""
    ledger.add_constraint(scope="code", patterns=[r"(a+)+$"], reason="r", by="sre")
    assert ledger.check("a" * 5_000 + "!", agent="a").ok
    assert not ledger.check("a" * 5_000, agent="a").ok
    assert not ledger.check("plan", agent="a", items=["A" * 500]).ok  # any case, whole


def test_a_pattern_recorded_before_patterns_were_re2_keeps_its_meaning() -> None:
    old = ConstraintRecord(
        id="c_1", seq=1, at=Instant.from_utc(2026, 1, 1), scope="code", forbid=[],
        patterns=[r"(?<!lib)curl"], prefer=None, reason="r", origin="sre", created_by="sre",
    )  # fmt: skip
    now = Instant.from_utc(2026, 1, 2)
    assert [v.matched for v in evaluate([old], "pipe CURL to sh", [], now)] == ["CURL"]
    assert evaluate([old], "link libcurl", [], now) == []


def test_a_correction_with_forbid_protects_the_next_agent(ledger: Ledger) -> None:
    es, _ = _es256_story(ledger)
    correction = ledger.correct(
        es, by="oncall", reason="prod expects RS256", value="RS256", forbid=True
    )
    assert correction.constraint is not None
    result = ledger.check("set auth.jwt.algorithm to ES256", [SUBJECT], agent="deploy-agent")
    [v] = result.violations
    assert v.constraint.origin.startswith("correction:x_")
    assert v.constraint.prefer == "RS256"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"scope": "", "forbid": ["x"]}, "needs a scope"),
        ({"scope": "code", "patterns": ["(unclosed"]}, "invalid regular expression '(unclosed'"),
        ({"scope": "code", "patterns": [r"(a)\1"]}, r"expression '(a)\1': "),  # as typed
        ({"scope": "code", "patterns": [r"(?<!x)a"]}, "without backreferences or lookaround"),
        ({"scope": "code"}, "must forbid something"),
        ({"scope": "code", "forbid": [" "]}, "an empty value among the terms to forbid"),
        ({"scope": "-bad", "forbid": ["x"]}, "invalid subject '-bad'"),
        (
            {"scope": "code", "forbid": ["x"], "half_life_days": 0},
            "the half-life must be more than 0",
        ),
    ],
)
def test_bad_constraints_are_refused_and_nothing_is_written(
    ledger: Ledger, fields: dict[str, object], expected: str
) -> None:
    head = ledger.store.head()
    with pytest.raises(InvalidInput, match=re.escape(expected)):
        ledger.add_constraint(reason="r", by="sre", **fields)  # type: ignore[arg-type]
    assert ledger.store.head() == head


def test_a_check_needs_a_plan_or_the_items_it_uses(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput, match="give the plan"):
        ledger.check("  ", agent="a")
    # the identifiers alone (DESIGN: "a plan, text and/or identifiers"): refused before
    ledger.add_constraint(scope="code.http_client", forbid=["node-fetch"], reason="r", by="s")
    result = ledger.check("", ["code.http_client"], agent="a", items=["node-fetch"])
    assert [v.matched for v in result.violations] == ["node-fetch"]
    assert ledger.checks(agent="a")[0].plan == ""
    with pytest.raises(NotFound):
        ledger.constraint("c_nothing")


@pytest.mark.parametrize(
    ("plan", "scope", "items", "words"),
    [
        ("x" * 65_537, [], [], "the plan has 65,537 characters"),
        ("deploy", ["code"] * 101, [], "101 subjects in scope: give at most 100"),
        ("deploy", [], ["x" * 513], "identifiers of 1 to 512 characters"),
        ("deploy", [], ["x"] * 201, "up to 200 identifiers"),
    ],
)
def test_a_check_has_the_same_limits_on_every_surface(
    ledger: Ledger, plan: str, scope: list[str], items: list[str], words: str
) -> None:
    """The library refuses what the API's schema refuses: MCP and the CLI reach it directly."""
    head = ledger.store.head()
    with pytest.raises(InvalidInput, match=words):
        ledger.check(plan, scope, agent="a", items=items)
    assert ledger.store.head() == head


# -- conflicts and expiry ------------------------------------------------------------------


def test_two_approved_values_at_once_are_a_conflict(ledger: Ledger, clock: ManualClock) -> None:
    rs = ledger.assert_one(subject=SUBJECT, value="RS256", agent="docs", lifecycle="approved")
    es = ledger.assert_one(
        subject=SUBJECT,
        value="ES256",
        agent="docs",
        lifecycle="approved",
        valid_from=clock.now().add(hours=24),
    )
    # the narrower window does not supersede the open-ended value: both stay approved
    assert ledger.get(rs.id).lifecycle == "approved"
    assert ledger.answer(SUBJECT).conflicts == []  # ES256 is not valid yet
    gardener = Gardener(ledger)
    gardener.run_until_caught_up()
    [conflict] = ledger.conflicts()
    assert conflict.open
    assert sorted(conflict.values) == ["ES256", "RS256"]
    clock.advance(DAY * 2)
    answer = ledger.answer(SUBJECT)
    assert {i.assertion.value for i in answer.items} == {"RS256", "ES256"}
    assert answer.conflicts[0].assertion_ids == sorted([rs.id, es.id])
    assert "conflict on auth.jwt.algorithm: 2 approved values" in answer.summary
    ledger.deprecate(rs.id, by="lead", reason="rotated")
    assert ledger.conflicts() == []
    assert not ledger.conflicts(include_resolved=True)[0].open
    # the gardener raised it once, whatever it replays
    gardener.replay()
    assert len(ledger.notifications(type="conflict")) == 1


def test_every_open_conflict_is_listed_however_many_were_raised(
    ledger: Ledger, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Conflicts were read from the newest 1,000 conflict notifications: an older one
    # still open was never listed. They are read a page at a time (3 here), all at
    # one time, which paging by time could not get past.
    monkeypatch.setattr(learning, "PAGE", 3)
    later = clock.now().add(hours=24)  # a narrower window: both values stay approved
    for n in range(7):
        ledger.assert_one(subject=f"svc.s{n}", value="RS256", agent="a", lifecycle="approved")
        ledger.assert_one(
            subject=f"svc.s{n}", value="ES256", agent="a", lifecycle="approved", valid_from=later
        )
    Gardener(ledger).run_until_caught_up()
    assert sorted(c.subject for c in ledger.conflicts()) == [f"svc.s{n}" for n in range(7)]


def test_a_conflict_whose_overlap_has_passed_is_resolved_by_time(
    ledger: Ledger, clock: ManualClock
) -> None:
    # One side ran out an hour later; `conflicts` listed the subject as open for good,
    # while every answer showed one value.
    start = clock.now()
    ledger.assert_one(subject="svc.port", value=80, agent="a", lifecycle="approved")
    ledger.assert_one(subject="svc.port", value=8080, agent="b", lifecycle="approved",
                      valid_to=start.add(hours=1))  # fmt: skip
    Gardener(ledger).run_until_caught_up()
    [conflict] = ledger.conflicts()
    assert ledger.answer("svc.port").conflicts  # both current: the answer says so
    clock.advance(TimeDelta(hours=2))
    assert not ledger.answer("svc.port").conflicts
    assert ledger.conflicts() == []
    [resolved] = ledger.conflicts(include_resolved=True)
    assert (resolved.key, resolved.open) == (conflict.key, False)
    # one raised about a window already past when it was raised stays for a person
    now = clock.now()
    ledger.assert_one(subject="svc.host", value="a", agent="a", lifecycle="approved")
    past = {"valid_from": now.subtract(hours=48), "valid_to": now.subtract(hours=24)}
    ledger.assert_one(subject="svc.host", value="b", agent="b", lifecycle="approved", **past)
    Gardener(ledger).run_until_caught_up()
    assert [c.subject for c in ledger.conflicts()] == ["svc.host"]


def test_an_expired_assertion_stops_being_current(ledger: Ledger, clock: ManualClock) -> None:
    start = clock.now()
    a = ledger.assert_one(
        subject="oncall.primary",
        value="alice",
        agent="pager",
        lifecycle="approved",
        valid_to=start.add(hours=1),
    )
    gardener = Gardener(ledger)
    assert ledger.answer("oncall.primary").items[0].assertion.id == a.id
    clock.advance(TimeDelta(hours=2))
    answer = ledger.answer("oncall.primary")
    assert answer.items == []
    assert answer.hidden.by_reason == {"expired": 1}
    assert "(1 expired)" in answer.summary
    assert ledger.answer("oncall.primary", at=start.add(minutes=30)).items  # it was valid then
    assert ledger.answer("oncall.primary", lens="all").items  # `all` shows everything
    assert gardener.scan() == 1
    assert gardener.scan() == 0  # noticed once
    [note] = ledger.notifications(type="expired")
    assert note.data["assertion_id"] == a.id


def test_a_replay_keeps_where_the_expiry_scan_was(ledger: Ledger, clock: ManualClock) -> None:
    # Replay reset the scan's mark: its next look went back one day only, and an expiry
    # between that and the last scan was never raised.
    gardener = Gardener(ledger)
    gardener.scan()  # the scan's mark: now
    start = clock.now()
    ledger.assert_one(subject="oncall.primary", value="alice", agent="pager",
                      lifecycle="approved", valid_to=start.add(hours=1))  # fmt: skip
    clock.advance(TimeDelta(hours=72))  # a long weekend without a scan
    gardener.replay()
    assert gardener.scan() == 1
    assert [n.type for n in ledger.notifications(type="expired")] == ["expired"]


# -- the gardener itself -------------------------------------------------------------------


def _state(ledger: Ledger) -> tuple[list[object], list[object]]:
    evidence = ledger.store.trust_evidence(None, None, None)
    notes = [(n.key, n.type, n.summary) for n in ledger.notifications(limit=1000)]
    return list(evidence), sorted(notes)


def test_replay_and_repeated_batches_change_nothing(ledger: Ledger, clock: ManualClock) -> None:
    for n in range(4):
        clock.advance(TimeDelta(seconds=1))
        es, _ = _es256_story(ledger)
        ledger.correct(es, by="oncall", reason=f"wrong {n}")
    gardener = Gardener(ledger, batch=3)
    gardener.run_until_caught_up()
    first = _state(ledger)
    assert first[0]
    assert first[1]
    gardener.replay()
    assert _state(ledger) == first
    # a batch applied again (a gardener that died after writing, before it knew) is a no-op
    cursor = ledger.store.garden_cursor("gardener").seq
    assert not ledger.store.garden_commit("gardener", 0, cursor, first[0], [], 0)  # type: ignore[arg-type]
    assert _state(ledger) == first


def test_weights_come_from_the_policy(location: object, clock: ManualClock) -> None:
    policy = TrustPolicy(cited_failure=0.0, asserted_failure=2.0)
    with Ledger.open(str(location), clock=clock, ensure=True, policy=policy) as ledger:
        es, _ = _es256_story(ledger)
        ledger.correct(es, by="oncall", reason="wrong")
        Gardener(ledger).run_until_caught_up()
        assert _score(ledger, "orchestrator") == 0.5
        assert _score(ledger, "research-agent") == pytest.approx(1 / 4)


def test_the_policy_reads_its_environment_and_refuses_bad_values() -> None:
    assert TrustPolicy.from_env({"EPISTEME_TRUST_CITED_FAILURE": "0.1"}).cited_failure == 0.1
    with pytest.raises(InvalidInput, match="EPISTEME_TRUST_HALF_LIFE_DAYS"):
        TrustPolicy.from_env({"EPISTEME_TRUST_HALF_LIFE_DAYS": "-3"})


def test_a_correction_reaches_a_webhook_signed(
    ledger: Ledger, clock: ManualClock, receiver: Receiver
) -> None:
    canary = "CANARY-7f3a-signing-secret"
    ledger.set_webhook(
        WebhookSpec(name="pager", url=receiver.url + "/hook", secret="env:PAGER_SECRET"),
        by="admin",
    )
    ledger.set_webhook(
        WebhookSpec(name="slack", url=receiver.url + "/slack", format="slack", events={"conflict"}),
        by="admin",
    )
    es, _ = _es256_story(ledger)
    ledger.correct(es, by="oncall", reason="prod expects RS256", value="RS256")
    Gardener(ledger).run_until_caught_up()
    with (
        httpx.Client(trust_env=False) as client,
        Deliverer(
            ledger.store,
            ledger.webhooks,
            clock,
            worker="w",
            client=client,
            environ={"PAGER_SECRET": canary},
        ) as deliverer,
    ):
        assert deliverer.run_once() == 1  # the slack hook takes conflicts only
    [request] = receiver.requests
    assert request.path == "/hook"
    signature = request.headers["X-Episteme-Signature"]
    assert verify(canary.encode(), signature, request.body, int(clock.now().timestamp()))
    body = orjson.loads(request.body)
    assert body["type"] == "correction"
    assert body["data"]["assertion_id"] == es
    assert [d.state for d in deliveries(ledger.store)] == ["delivered"]
    # the secret is nowhere in the ledger's rows
    exported = "".join(str(e.to_json()) for e in ledger.export())
    jobs = str([j.model_dump() for j in ledger.store.jobs("webhook")])
    assert canary not in exported + jobs


def test_the_loop_keeps_following_the_journal_when_delivery_fails(ledger: Ledger) -> None:
    def broken(stopped: object) -> int:
        raise RuntimeError("the webhook store is away")

    loop = GardenerLoop(Gardener(ledger), deliver=broken, idle=0.01)
    loop.start()
    try:
        for n in range(3):
            bad = ledger.assert_one(subject=f"svc.k{n}", value=n, agent="tuner")
            ledger.correct(bad.id, by="oncall", reason="wrong")
        head = ledger.store.head()[0]
        deadline = time.monotonic() + 10
        while ledger.store.garden_cursor("gardener").seq < head:
            assert time.monotonic() < deadline, loop.last_error
            time.sleep(0.02)
    finally:
        loop.stop()
    assert loop.errors >= 1
    assert loop.last_error == "RuntimeError: the webhook store is away"
    assert not loop.running


def test_a_loop_started_again_never_runs_two_delivery_threads(ledger: Ledger) -> None:
    # Leadership lost and regained while a delivery hangs on a slow receiver: stop()
    # gives up waiting, and the next start() used to revive the old thread beside the
    # new one, so deliveries ran twice over from then on.
    callers: list[int] = []

    def slow(stopped: object) -> int:  # one delivery to a receiver that takes its time
        callers.append(threading.get_ident())
        time.sleep(0.8)
        return 0

    def delivering() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "webhooks")

    loop = GardenerLoop(Gardener(ledger), deliver=slow, idle=0.01)
    try:
        for _ in range(2):
            loop.start()
            time.sleep(0.1)  # a delivery under way
            loop.stop(timeout=0.1)  # gives up on it
            assert not loop.running
        loop.start()
        time.sleep(2.0)  # the earlier threads end after their delivery; this one goes on
        assert delivering() == 1
        assert loop.running
    finally:
        loop.stop(timeout=3.0)
    assert delivering() == 0
    assert len(set(callers)) == 3  # one thread per start


def test_a_trust_drop_past_the_alert_line_is_notified_once(
    location: object, clock: ManualClock
) -> None:
    policy = TrustPolicy(alert_below=0.4)
    with Ledger.open(str(location), clock=clock, ensure=True, policy=policy) as ledger:
        es, _ = _es256_story(ledger)
        ledger.correct(es, by="oncall", reason="prod expects RS256")
        gardener = Gardener(ledger)
        gardener.run_until_caught_up()
        [drop] = ledger.notifications(type="trust_drop")
        assert drop.data["agent"] == "research-agent"  # 0.33; the orchestrator stays at 0.43
        assert drop.data["topic"] == "auth"
        assert drop.data["before"] == 0.5
        assert "fell to 0.33" in drop.summary
        gardener.replay()
        assert len(ledger.notifications(type="trust_drop")) == 1


def test_a_replay_under_a_new_alert_line_pages_nobody_about_old_events(
    location: object, clock: ManualClock
) -> None:
    # A replay raised a trust_drop for a week-old correction under the new, higher alert
    # line, and queued it for every webhook: a page about what was long handled.
    hook = WebhookSpec(name="pager", url="http://127.0.0.1:9/hook")
    with Ledger.open(str(location), clock=clock, ensure=True) as ledger:
        ledger.set_webhook(hook, by="admin")
        es, _ = _es256_story(ledger)
        ledger.correct(es, by="oncall", reason="prod expects RS256")
        Gardener(ledger).run_until_caught_up()
        assert ledger.notifications(type="trust_drop") == []  # 0.33 and 0.43: above 0.3
        queued = {d.key for d in deliveries(ledger.store)}
    higher = TrustPolicy(alert_below=0.4)
    with Ledger.open(str(location), clock=clock, policy=higher) as ledger:
        gardener = Gardener(ledger)
        gardener.replay()
        [drop] = ledger.notifications(type="trust_drop")  # recorded, for the record
        assert drop.data["agent"] == "research-agent"
        assert {d.key for d in deliveries(ledger.store)} == queued  # sent to nobody
        clock.advance(TimeDelta(seconds=1))
        again, _ = _es256_story(ledger)  # what happens after the replay is sent as ever
        ledger.correct(again, by="oncall", reason="still ES256")
        gardener.run_until_caught_up()
        new = {d.key for d in deliveries(ledger.store)} - queued
        assert any(key.startswith("correction:") for key in new), new


def test_an_assertion_recorded_already_expired_raises_no_expiry(
    ledger: Ledger, clock: ManualClock
) -> None:
    gardener = Gardener(ledger)
    gardener.scan()
    clock.advance(TimeDelta(seconds=6))
    start = clock.now()  # over since the last scan, and before it was recorded:
    ledger.assert_one(subject="oncall.old", value="bob", agent="pager", lifecycle="approved",
                      valid_to=start.subtract(seconds=2))  # fmt: skip
    ledger.assert_one(subject="oncall.primary", value="alice", agent="pager",
                      lifecycle="approved", valid_to=start.add(seconds=5))  # fmt: skip
    clock.advance(TimeDelta(seconds=10))
    assert gardener.scan() == 1
    [note] = ledger.notifications(type="expired")
    assert "oncall.primary" in note.summary


def test_a_copy_or_an_import_delivers_no_notification_twice(
    ledger: Ledger, location: str | Path, clock: ManualClock, tmp_path: Path
) -> None:
    # The gardener of a copied ledger starts from the first event. It used to queue a
    # delivery of every notification the source had sent long before: a page for each
    # old correction, conflict and trust drop.
    ledger.set_webhook(WebhookSpec(name="pager", url="http://127.0.0.1:9/hook"), by="admin")
    es, _ = _es256_story(ledger)
    first = ledger.correct(es, by="oncall", reason="prod expects RS256", value="RS256")
    Gardener(ledger).run_until_caught_up()  # raised (and queued) at the source
    sent = {n.key for n in ledger.notifications()}
    assert f"correction:{first.correction.id}" in sent
    port = ledger.assert_one(subject="svc.port", value=82, agent="bot")
    unsent = ledger.correct(port.id, by="oncall", reason="it listens on 81", value=81)  # not yet

    copy_ledger(location, tmp_path / "copy")
    with Ledger.open(tmp_path / "copy", clock=clock) as copied:
        Gardener(copied).run_until_caught_up()
        queued = {d.key for d in deliveries(copied.store)}
        assert f"correction:{unsent.correction.id}" in queued  # never sent: sent from here
        assert not queued & sent
        raised = {n.key for n in copied.notifications()}

    Gardener(ledger).run_until_caught_up()
    assert raised == {n.key for n in ledger.notifications()}  # as the source, in the end

    with Ledger.init(tmp_path / "imported", clock=clock) as imported:
        imported.import_events(ledger.export())  # a journal alone: all of it raised before
        Gardener(imported).run_until_caught_up()
        assert deliveries(imported.store) == []
        assert {n.key for n in imported.notifications()} == raised
        later = imported.assert_one(subject="svc.port", value=80, agent="bot")
        new = imported.correct(later.id, by="oncall", reason="no", value=81)
        Gardener(imported).run_until_caught_up()
        assert f"correction:{new.correction.id}" in {d.key for d in deliveries(imported.store)}
