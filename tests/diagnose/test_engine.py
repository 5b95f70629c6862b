"""The diagnosis flow on a real ledger (both stores): analysis, approval, specialists,
synthesis, the ledger record, and every way a session can end.

Specialists and the secret store here are plain functions (the real ones have their
own tests, and the end-to-end test runs them against real servers); what is under test
is the flow and what it lets out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from whenever import Instant, TimeDelta

from episteme.diagnose.alerts import AlertmanagerPayload, receive
from episteme.diagnose.config import DiagnosisConfig
from episteme.diagnose.engine import DiagnosisEngine
from episteme.diagnose.findings import Finding, SpecialistContext
from episteme.diagnose.narrator import ModelNarrator
from episteme.diagnose.narrator import from_env as narrator_from_env
from episteme.errors import Conflict, Forbidden, InvalidInput, NotFound
from episteme.ledger import Ledger
from episteme.ledger.webhooks import WebhookSpec, deliveries
from episteme.timeutil import ManualClock
from tests.backends import raw_connection

CANARY = "CANARY-d1a9-prod-db-password"
DB_REFS = {
    "op://Infrastructure/prod-db/host": "db.internal",
    "op://Infrastructure/prod-db/username": "app",
    "op://Infrastructure/prod-db/password": CANARY,
}


class FakeLease:
    def __init__(self, values: dict[str, str]) -> None:
        self.values: dict[str, str] | None = dict(values)

    def get(self, ref: str) -> str:
        assert self.values is not None, "the lease was wiped"
        return self.values[ref]

    def wipe(self) -> None:
        self.values = None


class Vault:
    """A secret store as a plain function, remembering the leases it gave."""

    def __init__(self, fail: bool = False) -> None:
        self.leases: list[FakeLease] = []
        self.fail = fail

    async def __call__(self, refs: Sequence[str], ttl_s: float) -> FakeLease:
        if self.fail:
            raise ConnectionError("the secret store at 127.0.0.1:9 is unreachable")
        known = {**DB_REFS, **{r: f"value-of-{r}" for r in refs if r not in DB_REFS}}
        lease = FakeLease({r: known[r] for r in refs})
        self.leases.append(lease)
        return lease


async def database(ctx: SpecialistContext) -> list[Finding]:
    password = ctx.secret(ctx.credentials["password"])
    assert password == CANARY
    return [
        Finding(
            specialist="database",
            code="db.connection_exhaustion",
            severity="critical",
            claim="97 of 100 connections in use",
            evidence={"used": 97, "max_connections": 100},
            tool="psycopg",
            query="SELECT state, count(*) FROM pg_stat_activity GROUP BY state",
            credential_ref=ctx.credentials["password"],
        ),
        Finding(
            specialist="database",
            code="db.idle_in_transaction",
            severity="warning",
            claim="40 sessions idle in transaction",
            evidence={"terminate": ["SELECT pg_terminate_backend(4242)"]},
            tool="psycopg",
        ),
    ]


async def leaky(ctx: SpecialistContext) -> list[Finding]:
    raise RuntimeError(f"login failed with {ctx.secret(ctx.credentials['cloudwatch-secret-key'])}")


async def hangs(ctx: SpecialistContext) -> list[Finding]:
    await asyncio.sleep(30)
    return []


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def vault() -> Vault:
    return Vault()


@pytest.fixture
def engine(ledger: Ledger, vault: Vault) -> DiagnosisEngine:
    config = DiagnosisConfig(specialist_timeout_s=0.5)
    specialists = {"database": database, "cloud": leaky, "kubernetes": hangs}
    return DiagnosisEngine(ledger, vault, config=config, specialists=specialists)


async def _events(engine: DiagnosisEngine, sid: str) -> list[dict[str, Any]]:
    return [e async for e in engine.events(sid, follow=False)]


@pytest.mark.anyio
async def test_diagnose_approve_and_find_the_root_cause(
    engine: DiagnosisEngine, ledger: Ledger, vault: Vault
) -> None:
    session = await engine.start("database connection failures in prod", "prod", requester="dev-1")
    assert session.status == "waiting_for_approval"
    assert session.specialists == ["database"]
    assert set(session.requested) == set(DB_REFS)
    assert vault.leases == []  # nothing fetched before the approval
    approved = await engine.approve(session.id, approver="lead", refs=None, reason="go")
    assert approved.status in ("retrieving_credentials", "diagnosing", "completed")
    done = await engine.wait(session.id)
    assert done.status == "completed"
    assert done.result is not None
    assert done.result.hypotheses[0].rule == "connection_exhaustion"
    assert "Terminate the sessions idle in transaction" in done.result.hypotheses[0].remediation[0]
    types = [e["type"] for e in await _events(engine, session.id)]
    assert types == [
        "session_start", "text", "approval_required", "approval_accepted",
        "credential_retrieved", "credential_retrieved", "credential_retrieved",
        "diagnosis_started", "specialists_selected", "specialist_complete",
        "synthesis_started", "text", "diagnosis_complete",
    ]  # fmt: skip
    assert all(e["v"] == 1 for e in await _events(engine, session.id))
    assert vault.leases[0].values is None  # wiped at completion
    # recorded in the ledger, with provenance, for time travel and trace
    found = ledger.answer("diagnosis.prod", lens="all")
    subjects = {i.assertion.subject for i in found.items}
    assert {"diagnosis.prod.session", "diagnosis.prod.conclusion",
            "diagnosis.prod.database.db_connection_exhaustion"} <= subjects  # fmt: skip
    assert {i.assertion.source for i in found.items} == {f"diagnosis:{session.id}"}


@pytest.mark.anyio
async def test_a_subset_approval_skips_what_it_does_not_cover(
    engine: DiagnosisEngine, vault: Vault
) -> None:
    session = await engine.start("pods crashloop and the db times out", "prod", requester="dev")
    assert session.specialists == ["database", "kubernetes"]
    only_db = sorted(DB_REFS)
    await engine.approve(session.id, approver="lead", refs=only_db, reason="db only")
    done = await engine.wait(session.id)
    assert done.status == "completed"
    assert done.result is not None
    assert any("kubernetes: credentials not approved" in m for m in done.result.missing)
    assert sorted(vault.leases[0].values or DB_REFS) == only_db


@pytest.mark.anyio
async def test_a_failing_or_hanging_specialist_does_not_sink_the_others(
    engine: DiagnosisEngine, ledger: Ledger, location: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    session = await engine.start(
        "db connection refused, pod restarts, high cpu on ec2", "prod", requester="dev"
    )
    assert session.specialists == ["database", "cloud", "kubernetes"]
    await engine.approve(session.id, approver="lead", refs=None, reason="all")
    done = await engine.wait(session.id)
    assert done.status == "completed", done.error
    assert done.result is not None
    assert done.result.hypotheses[0].rule == "connection_exhaustion"
    complete = {e["specialist"]: e for e in await _events(engine, session.id)
                if e["type"] == "specialist_complete"}  # fmt: skip
    assert complete["kubernetes"]["error"] == "no answer within 0.5 s"
    assert "[redacted]" in complete["cloud"]["error"]
    # no secret anywhere: events, session rows, the journal, logs
    secret_values = [*DB_REFS.values(), *(f"value-of-{r}" for r in session.requested)]
    everything = [
        orjson.dumps(await _events(engine, session.id)).decode(),
        done.model_dump_json(),
        "".join(str(e.to_json()) for e in ledger.export()),
        caplog.text,
        _raw_rows(location),
    ]
    for value in [CANARY, *(v for v in secret_values if v.startswith("value-of-op://"))]:
        assert not any(value in text for text in everything), value


def _raw_rows(location: object) -> str:
    with raw_connection(location) as conn:  # type: ignore[arg-type]
        rows = [
            conn.execute(f"SELECT * FROM {t}").fetchall()
            for t in ("diagnosis_sessions", "diagnosis_events", "journal", "assertions")
        ]
    return repr(rows)


@pytest.mark.anyio
async def test_denial_expiry_and_bad_decisions(
    engine: DiagnosisEngine, clock: ManualClock, vault: Vault
) -> None:
    denied = await engine.start("db timeouts", "prod", requester="dev")
    with pytest.raises(Forbidden, match="cannot approve it"):
        await engine.approve(denied.id, approver="dev", refs=None, reason="mine")
    with pytest.raises(InvalidInput, match="not requested"):
        await engine.approve(denied.id, approver="lead", refs=["op://x/y/z"], reason="r")
    with pytest.raises(InvalidInput, match="not a credential reference") as pasted:
        await engine.approve(denied.id, approver="lead", refs=["hunter2-pasted"], reason="r")
    assert "hunter2" not in str(pasted.value)
    assert (await engine.deny(denied.id, approver="lead", reason="not now")).status == "denied"
    with pytest.raises(Conflict, match="is denied"):
        await engine.approve(denied.id, approver="lead", refs=None, reason="r")

    late = await engine.start("db timeouts", "staging", requester="dev")
    clock.advance(TimeDelta(hours=2))
    expired = await engine.status(late.id)
    assert expired.status == "expired"
    # dated when it expired (an hour after it began), not when it was next looked at
    ended = (await _events(engine, late.id))[-1]
    assert (ended["type"], Instant.parse_iso(ended["at"])) == ("error", expired.expires_at)
    assert expired.updated_at == expired.expires_at
    [recorded] = engine.ledger.store.epoch_members(f"diagnosis-{late.id}")  # as a denied one
    assert recorded.value["status"] == "expired"  # type: ignore[index,call-overload]
    with pytest.raises(Conflict, match="is expired"):
        await engine.approve(late.id, approver="lead", refs=None, reason="r")

    twice = await engine.start("db timeouts", "prod", requester="dev")
    await engine.approve(twice.id, approver="lead", refs=None, reason="go")
    with pytest.raises(Conflict):
        await engine.approve(twice.id, approver="lead", refs=None, reason="again")
    await engine.wait(twice.id)
    with pytest.raises(NotFound):
        await engine.status("s_" + "0" * 24)
    with pytest.raises(InvalidInput, match="unknown environment"):
        await engine.start("db", "qa", requester="dev")
    assert len(vault.leases) == 1  # denied and expired sessions fetched nothing


@pytest.mark.anyio
async def test_a_secret_store_that_is_down_ends_the_session_in_error(ledger: Ledger) -> None:
    engine = DiagnosisEngine(ledger, Vault(fail=True), specialists={"database": database})
    session = await engine.start("db connection refused", "prod", requester="dev")
    await engine.approve(session.id, approver="lead", refs=None, reason="go")
    done = await engine.wait(session.id)
    assert done.status == "error"
    assert "unreachable" in (done.error or "")
    assert (await _events(engine, session.id))[-1]["type"] == "error"


@pytest.mark.anyio
async def test_whoever_sees_a_session_move_finds_the_event_that_says_so(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status and its event are one write: a reader between the two (`wait`, then
    the events) must not see a finished session whose last event is still missing."""
    store = ledger.store
    real = store.move_diagnosis_session
    seen: list[tuple[str, str]] = []

    def move_then_look(sid: str, frm: Sequence[str], changes: dict[str, Any], *rest: Any) -> bool:
        moved = real(sid, frm, changes, *rest)
        if moved:  # what any other reader would find at this moment
            row = store.diagnosis_session(sid)
            assert row is not None
            last = orjson.loads(store.diagnosis_events(sid)[-1][1])["type"]
            seen.append((row["status"], last))
        return moved

    monkeypatch.setattr(store, "move_diagnosis_session", move_then_look)
    engine = DiagnosisEngine(ledger, Vault(), specialists={"database": database})
    session = await engine.start("db connection refused", "prod", requester="dev")
    await engine.approve(session.id, approver="lead", refs=None, reason="go")
    assert (await engine.wait(session.id)).status == "completed"
    failing = DiagnosisEngine(ledger, Vault(fail=True), specialists={"database": database})
    broken = await failing.start("db connection refused", "prod", requester="dev")
    await failing.approve(broken.id, approver="lead", refs=None, reason="go")
    assert (await failing.wait(broken.id)).status == "error"
    denied = await engine.start("db connection refused", "prod", requester="dev")
    await engine.deny(denied.id, approver="lead", reason="not now")
    assert seen == [
        ("waiting_for_approval", "approval_required"),
        ("retrieving_credentials", "approval_accepted"),
        ("diagnosing", "diagnosis_started"),
        ("completed", "diagnosis_complete"),
        ("waiting_for_approval", "approval_required"),
        ("retrieving_credentials", "approval_accepted"),
        ("error", "error"),
        ("waiting_for_approval", "approval_required"),
        ("denied", "error"),
    ]


@pytest.mark.anyio
async def test_the_model_writes_the_words_and_never_sees_a_secret(
    ledger: Ledger, vault: Vault
) -> None:
    prompts: list[str] = []

    def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompts.append(repr(messages))
        text = repr(messages)
        answer = "database" if "Which of these specialists" in text else "It is the pool."
        return ModelResponse(parts=[TextPart(answer)])

    narrator = ModelNarrator(FunctionModel(reply))
    engine = DiagnosisEngine(
        ledger, vault, narrator=narrator, specialists={"database": database, "cloud": leaky}
    )
    session = await engine.start("checkout is slow since noon", "prod", requester="dev")
    assert session.specialists == ["database"]
    assert session.why["database"] == ["proposed by the model"]
    await engine.approve(session.id, approver="lead", refs=None, reason="go")
    done = await engine.wait(session.id)
    assert done.result is not None
    assert done.result.text == "It is the pool."
    assert len(prompts) == 3  # propose, analysis, synthesis
    assert not any(CANARY in p or "db.internal" in p for p in prompts)


@pytest.mark.anyio
@pytest.mark.parametrize("fails", ["analysis", "synthesis"])
async def test_a_model_that_fails_leaves_the_words_to_the_templates(
    ledger: Ledger, vault: Vault, fails: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A model that failed in the analysis answered POST /diagnose with a 500 and left
    # the session `analyzing` for ever (its stream followed it for ever); one that
    # failed in the synthesis ended the session in error, and the findings were lost.
    key = "sk-CANARY-model-key-123456"

    def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        text = repr(messages)
        if "Which of these specialists" in text:
            return ModelResponse(parts=[TextPart("database")])
        if ("Explain the root cause" in text) == (fails == "synthesis"):
            raise RuntimeError(f"401 from the provider: invalid key {key}")
        return ModelResponse(parts=[TextPart("The model's words.")])

    narrator = ModelNarrator(FunctionModel(reply), secrets=[key])
    engine = DiagnosisEngine(ledger, vault, narrator=narrator, specialists={"database": database})
    with caplog.at_level(logging.WARNING):
        session = await engine.start("checkout is slow since noon", "prod", requester="dev")
        assert session.status == "waiting_for_approval"
        await engine.approve(session.id, approver="lead", refs=None, reason="go")
        done = await engine.wait(session.id)
    assert done.status == "completed"
    assert done.result is not None
    assert done.result.findings  # kept
    texts = [e["text"] for e in await _events(engine, session.id) if e["type"] == "text"]
    if fails == "analysis":
        assert texts[0].startswith("Specialists for this problem: database")
        assert done.result.text == "The model's words."
    else:
        assert texts[0] == "The model's words."
        assert done.result.text == done.result.conclusion
    [warned] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned.startswith(f"the model did not write the {fails} (RuntimeError: 401 from")
    assert key not in warned
    assert "[redacted]" in warned


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ("nonsense", "EPISTEME_MODEL nonsense: Unknown model: nonsense"),
        ("openai:gpt-4o", "EPISTEME_MODEL openai:gpt-4o: "),
    ],
)
def test_a_model_that_cannot_be_used_is_refused_when_it_is_named(model: str, said: str) -> None:
    # It used to fail at the first diagnosis, or kill the server after "serving … on …"
    # with a traceback (the provider's package missing).
    with pytest.raises(InvalidInput) as refused:
        narrator_from_env({"EPISTEME_MODEL": model, "OPENAI_API_KEY": ""})
    assert str(refused.value).startswith(said), refused.value


@pytest.mark.anyio
async def test_a_quiet_followed_stream_hears_keepalives_and_ends_once_its_token_is_revoked(
    ledger: Ledger, vault: Vault
) -> None:
    # The token was checked again only when an event came: through a quiet wait (an
    # hour for an approval) a revoked reader kept its stream, and its keep-alives.
    config = DiagnosisConfig(keepalive_s=0.1)
    engine = DiagnosisEngine(ledger, vault, config=config, specialists={"database": database})
    session = await engine.start("database connection failures", "prod", requester="dev")
    secret, _ = ledger.issue_token("watcher", ["agent"], by="admin")
    reader = (ledger.authenticate(secret), "GET /status")
    stream = engine.events(session.id, reader=reader, keepalive=True)
    types = [(await anext(stream)).get("type") for _ in range(5)]
    assert types == ["session_start", "text", "approval_required", None, None]  # keep-alives
    ledger.revoke_token("watcher", by="admin", reason="left")
    last = await asyncio.wait_for(anext(stream), 5)
    assert (last["type"], last["code"]) == ("error", "unauthenticated")
    assert "n" not in last
    assert [e async for e in stream] == []  # ended
    assert (await engine.status(session.id)).status == "waiting_for_approval"


@pytest.mark.anyio
async def test_a_session_waiting_for_its_approver_is_sent_to_the_webhooks(
    engine: DiagnosisEngine, ledger: Ledger
) -> None:
    # An alert's session waited for an approver nobody told: after an hour it expired.
    ledger.set_webhook(WebhookSpec(name="pager", url="http://127.0.0.1:9/page"), by="admin")
    only = WebhookSpec(name="trust", url="http://127.0.0.1:9/t", events=frozenset({"trust_drop"}))
    ledger.set_webhook(only, by="admin")
    session = await engine.start("database connection failures", "prod", requester="dev-1")
    [note] = ledger.notifications(type="approval")
    assert note.key == f"approval:{session.id}"
    assert note.data["session_id"] == session.id
    assert note.data["references"] == session.requested
    assert f"diagnosis {session.id} (prod) waits for an approver until" in note.summary
    assert note.summary.endswith(f"`episteme approve {session.id} --reason …`")
    [queued] = deliveries(ledger.store)
    assert (queued.webhook, queued.key, queued.state) == ("pager", note.key, "pending")
    await engine.approve(session.id, approver="lead", refs=None, reason="go")
    await engine.wait(session.id)
    assert len(ledger.notifications(type="approval")) == 1  # raised once
    dumped = orjson.dumps([n.model_dump(mode="json") for n in ledger.notifications()])
    assert CANARY.encode() not in dumped


@pytest.mark.anyio
async def test_a_label_the_alerts_of_a_group_do_not_share_still_picks_specialists(
    engine: DiagnosisEngine,
) -> None:
    # Each alert has its own `pod`, so Alertmanager leaves it out of commonLabels: the
    # Kubernetes specialist was chosen from commonLabels alone, and not asked.
    payload = AlertmanagerPayload.model_validate(
        {
            "version": "4",
            "groupKey": '{}:{alertname="HighRestarts"}',
            "status": "firing",
            "commonLabels": {"alertname": "HighRestarts"},
            "commonAnnotations": {"summary": "restarts climbing"},
            "alerts": [
                {"status": "firing", "labels": {"pod": f"api-{n}"}, "fingerprint": f"p{n}"}
                for n in range(2)
            ],
        }
    )
    assert await receive(engine, payload, "alertmanager") == 2
    [session] = await engine.sessions()
    assert session.specialists == ["kubernetes"]
    assert session.why["kubernetes"] == ["alert label pod"]


@pytest.mark.anyio
async def test_an_alert_sent_twice_opens_one_incident(engine: DiagnosisEngine) -> None:
    payload = AlertmanagerPayload.model_validate(
        {
            "version": "4",
            "groupKey": '{}:{alertname="PostgresTooManyConnections"}',
            "status": "firing",
            "receiver": "episteme",
            "commonLabels": {
                "alertname": "PostgresTooManyConnections",
                "env": "production",
                "datname": "app",
            },
            "commonAnnotations": {"summary": "connections near max_connections"},
            "alerts": [
                {"status": "firing", "labels": {"instance": "db-1"}, "fingerprint": "a1b2c3"}
            ],
        }
    )
    assert await receive(engine, payload, "alertmanager") == 1
    assert await receive(engine, payload, "alertmanager") == 0
    [session] = await engine.sessions()
    assert session.status == "waiting_for_approval"
    assert session.environment == "prod"
    assert session.problem == "PostgresTooManyConnections: connections near max_connections"
    assert "database" in session.specialists
    assert session.incident is not None


@pytest.mark.anyio
async def test_a_session_left_running_by_a_stopped_server_ends_in_error(
    engine: DiagnosisEngine, ledger: Ledger, clock: ManualClock, vault: Vault
) -> None:
    session = await engine.start("db timeouts", "prod", requester="dev")
    # another process took the approval and died before it finished
    moved = ledger.store.move_diagnosis_session(
        session.id, ["waiting_for_approval"], {"status": "diagnosing"}
    )
    assert moved
    assert (await engine.status(session.id)).status == "diagnosing"
    clock.advance(TimeDelta(minutes=10))
    stale = await engine.status(session.id)
    assert stale.status == "error"
    assert stale.error == "the server running this session stopped before it finished"


async def _binary_output(ctx: SpecialistContext) -> list[Finding]:
    return [
        Finding(
            specialist="database",
            code="db.connection_exhaustion",
            severity="critical",
            claim="97 of 100 connections in use by svc\x00worker",
            evidence={"application_name": "svc\x00worker", "used": 97, "max_connections": 100},
            tool="psycopg",
            query="SELECT datname FROM pg_stat_activity -- \x00",
        )
    ]


async def _binary_error(ctx: SpecialistContext) -> list[Finding]:
    raise RuntimeError("kubectl said \x00\x00")


@pytest.mark.anyio
async def test_what_specialists_read_is_recorded_even_with_nul_characters(
    ledger: Ledger, location: object
) -> None:
    # Real systems answer with NUL characters at times (a column, a log line). The session
    # and the ledger keep that text as it is but for them: no backend can refuse it.
    specialists = {"database": _binary_output, "kubernetes": _binary_error}
    engine = DiagnosisEngine(ledger, Vault(), specialists=specialists)
    session = await engine.start("db connections and pod restarts", "prod", requester="dev")
    await engine.approve(session.id, approver="lead", refs=None, reason="go")
    done = await engine.wait(session.id)
    assert done.status == "completed", done.error
    found = ledger.answer("diagnosis.prod.database", lens="all").items
    assert len(found) == 1
    recorded = found[0].assertion
    assert recorded.value["claim"] == "97 of 100 connections in use by svc\ufffdworker"  # type: ignore[index,call-overload]
    assert recorded.evidence == "SELECT datname FROM pg_stat_activity -- \ufffd"
    events = await _events(engine, session.id)
    error = next(e["error"] for e in events if e.get("specialist") == "kubernetes")
    assert "kubectl said" in error
    assert "\x00" not in _raw_rows(location)
    assert ledger.verify().ok


SHAPED = 'CANARY-7f3a9c "q\\z  horse'
"""A password with what JSON escapes, and white space a one-line text flattens."""


async def _spills(ctx: SpecialistContext) -> list[Finding]:
    """A specialist that puts its password everywhere a finding can hold it."""
    password = ctx.secret(ctx.credentials["password"])
    flat = " ".join(password.split())
    return [
        Finding(
            specialist="database",
            code="db.connection_exhaustion",
            severity="critical",
            claim=f"login as app with {password} approved; apps connected",
            evidence={
                f"by_{password}": 1,
                "nested": [{"line": f"ERROR password={flat} rejected"}],
                "cut": f"password={password[:9]}…",
                "as_json": orjson.dumps({"pw": password}).decode(),
            },
            tool="psycopg",
            query=f"ALTER ROLE app PASSWORD '{password}'",
        )
    ]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(s for v in value.values() for s in _strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.mark.anyio
async def test_a_secret_is_scrubbed_wherever_and_however_a_finding_holds_it(
    ledger: Ledger, location: object
) -> None:
    # The values were replaced in the finding's JSON text, where a quote or a backslash
    # is escaped: such a password reached the events, the model and the ledger whole.
    # And a user "app" fetched with it blanked every "approved".
    values = {**DB_REFS, "op://Infrastructure/prod-db/password": SHAPED}

    async def store(refs: Sequence[str], ttl_s: float) -> FakeLease:
        return FakeLease({r: values[r] for r in refs})

    engine = DiagnosisEngine(ledger, store, specialists={"database": _spills})
    session = await engine.start("db connection refused", "prod", requester="dev")
    await engine.approve(session.id, approver="lead", refs=None, reason="go")
    done = await engine.wait(session.id)
    assert done.status == "completed", done.error
    assert done.result is not None
    [finding] = done.result.findings
    assert finding.claim == "login as app with [redacted] approved; apps connected"
    assert finding.evidence["cut"] == "password=[redacted]…"
    assert finding.evidence["nested"] == [{"line": "ERROR password=[redacted] rejected"}]
    assert "by_[redacted]" in finding.evidence
    events = await _events(engine, session.id)
    members = ledger.store.epoch_members(f"diagnosis-{session.id}")
    recorded = [a.model_dump(mode="json") for a in members]
    pieces = (SHAPED, " ".join(SHAPED.split()), SHAPED[:9], "q\\z")
    for text in _strings(events) + _strings(recorded) + _strings(done.model_dump(mode="json")):
        for piece in pieces:
            assert piece not in text, (piece, text)
    raw = _raw_rows(location) + "".join(str(e.to_json()) for e in ledger.export())
    assert "CANARY-7f3a9c" not in raw


@pytest.mark.anyio
async def test_only_what_a_specialist_that_runs_uses_is_fetched(ledger: Ledger) -> None:
    # A subset approval fetched the secrets of a specialist that was then skipped.
    config = DiagnosisConfig()
    config.specialists["observability"]["prod"].credentials["prometheus-token"] = (
        "op://Infrastructure/prometheus/token"
    )
    vault = Vault()
    engine = DiagnosisEngine(ledger, vault, config=config, specialists={"database": database})
    session = await engine.start("db timeouts and high latency", "prod", requester="dev")
    assert session.specialists == ["database", "observability"]
    await engine.approve(session.id, approver="lead", refs=None, reason="go")
    done = await engine.wait(session.id)
    assert done.result is not None
    assert done.result.missing == ["observability: no such specialist is installed"]
    [lease] = vault.leases
    assert "op://Infrastructure/prometheus/token" not in (lease.values or {})
    fetched = [e["reference"] for e in await _events(engine, session.id)
               if e["type"] == "credential_retrieved"]  # fmt: skip
    assert fetched == sorted(DB_REFS)
