"""The library behaviour of `Ledger`, one feature per test, and `parse_time`."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import whenever
from whenever import Instant, TimeDelta

from episteme.errors import Conflict, IntegrityError, InvalidInput, NotFound
from episteme.ledger import AssertionInput, Ledger, LensSpec, Lifecycle
from episteme.ledger.canonical import GENESIS, canonical
from episteme.ledger.journal import link, verify_chain
from episteme.ledger.model import HIDDEN_IDS
from episteme.ledger.records import Diff
from episteme.ledger.sql.projector import JSON_ESCAPES, search_sql, search_text
from episteme.ledger.store import StoreReader
from episteme.timeutil import ManualClock, parse_time
from tests.backends import set_back_before_tags

JWT = "auth.jwt.algorithm"


def later(clock: ManualClock, minutes: int = 1) -> Instant:
    clock.advance(TimeDelta(minutes=minutes))
    return clock.now()


def fact(ledger: Ledger, value: object, *, subject: str = JWT, **fields: object) -> str:
    agent = fields.pop("agent", "platform")
    return ledger.assert_one(subject=subject, value=value, agent=agent, **fields).id


# -- lifecycle ---------------------------------------------------------------------------


def test_proposed_can_be_approved_then_deprecated(ledger: Ledger) -> None:
    aid = fact(ledger, "RS256")
    assert ledger.get(aid).lifecycle is Lifecycle.PROPOSED
    assert ledger.approve(aid, by="alice").lifecycle is Lifecycle.APPROVED
    assert ledger.deprecate(aid, by="alice", reason="old").lifecycle is Lifecycle.DEPRECATED


def test_proposed_can_be_rejected(ledger: Ledger) -> None:
    aid = fact(ledger, "none")
    assert ledger.reject(aid, by="alice", reason="unsafe").lifecycle is Lifecycle.REJECTED


def test_rejected_cannot_be_approved(ledger: Ledger) -> None:
    aid = fact(ledger, "none")
    ledger.reject(aid, by="alice")
    head = ledger.store.head()
    with pytest.raises(Conflict, match="rejected"):
        ledger.approve(aid, by="alice")
    assert ledger.store.head() == head
    assert ledger.get(aid).lifecycle is Lifecycle.REJECTED


def test_approved_is_rejected_only_through_correct(ledger: Ledger) -> None:
    aid = fact(ledger, "HS256", lifecycle="approved")
    with pytest.raises(Conflict, match="episteme correct"):
        ledger.reject(aid, by="alice")
    assert ledger.get(aid).lifecycle is Lifecycle.APPROVED
    ledger.correct(aid, by="alice", reason="weak")
    assert ledger.get(aid).lifecycle is Lifecycle.REJECTED


def test_proposed_cannot_be_deprecated(ledger: Ledger) -> None:
    aid = fact(ledger, "RS256")
    with pytest.raises(Conflict, match="cannot become deprecated"):
        ledger.deprecate(aid, by="alice")


def test_approved_cannot_be_approved_again(ledger: Ledger) -> None:
    aid = fact(ledger, "RS256", lifecycle="approved")
    with pytest.raises(Conflict):
        ledger.approve(aid, by="alice")


def test_approving_a_second_fact_supersedes_the_first(ledger: Ledger, clock: ManualClock) -> None:
    rs = fact(ledger, "RS256", lifecycle="approved")
    later(clock)
    es = fact(ledger, "ES256", agent="research")
    ledger.approve(es, by="alice")
    assert ledger.get(rs).lifecycle is Lifecycle.SUPERSEDED
    assert ledger.get(es).lifecycle is Lifecycle.APPROVED
    assert [i.assertion.id for i in ledger.answer(JWT).items] == [es]
    with pytest.raises(Conflict):
        ledger.approve(rs, by="alice")  # superseded does not come back


def test_asserting_an_approved_fact_supersedes_the_approved_one(ledger: Ledger) -> None:
    rs = fact(ledger, "RS256", lifecycle="approved")
    es = ledger.assert_one(subject=JWT, value="ES256", agent="research", lifecycle="approved")
    assert ledger.get(rs).lifecycle is Lifecycle.SUPERSEDED
    assert es.lifecycle is Lifecycle.APPROVED


def test_each_version_that_approved_a_value_names_what_it_superseded(
    ledger: Ledger, clock: ManualClock
) -> None:
    """By approval, by asserting an approved value and by a correction's right value;
    and only the value that did it, in only that version."""

    def superseding(aid: str) -> list[tuple[str, list[str]]]:
        [blamed] = ledger.blame(aid)
        return [(str(v.lifecycle), v.superseded) for v in blamed.history]

    rs = fact(ledger, "RS256", lifecycle="approved")
    later(clock)
    es = fact(ledger, "ES256", agent="research")
    ledger.approve(es, by="alice")
    assert superseding(es) == [("proposed", []), ("approved", [rs])]
    assert superseding(rs) == [("approved", []), ("superseded", [])]
    later(clock)
    ps = ledger.assert_one(subject=JWT, value="PS256", agent="b", lifecycle="approved").id
    assert superseding(ps) == [("approved", [es])]
    later(clock)
    fixed = ledger.correct(ps, by="oncall", reason="prod verifies RS256", value="EdDSA")
    assert fixed.replacement is not None
    assert superseding(fixed.replacement.id) == [("approved", [])]  # the wrong one was rejected
    other = fact(ledger, "x", subject="auth.jwt.other", lifecycle="approved")
    assert superseding(other) == [("approved", [])]  # another subject's history is not its


def test_observations_are_multi_valued(ledger: Ledger) -> None:
    one = fact(ledger, 0.91, subject="svc.api.p99", kind="observation", lifecycle="approved")
    two = fact(ledger, 0.95, subject="svc.api.p99", kind="observation", lifecycle="approved")
    assert {ledger.get(one).lifecycle, ledger.get(two).lifecycle} == {Lifecycle.APPROVED}
    assert len(ledger.answer("svc.api.p99").items) == 2


# -- epochs ------------------------------------------------------------------------------


def test_superseding_an_epoch_retracts_all_its_assertions_in_one_event(ledger: Ledger) -> None:
    ids = [fact(ledger, v, subject=f"net.r{v}", epoch="ingest-7") for v in range(3)]
    ledger.approve(ids[0], by="alice")
    ledger.reject(ids[1], by="alice")
    keep = fact(ledger, "keep", subject="net.other")
    seq = ledger.store.head()[0]

    retracted = ledger.supersede_epoch("ingest-7", by="oncall", reason="bad source")

    assert sorted(retracted) == sorted([ids[0], ids[2]])  # the rejected one stays as it was
    assert ledger.store.head()[0] == seq + 1
    assert {ledger.get(i).lifecycle for i in ids} == {Lifecycle.REJECTED}
    assert ledger.get(keep).lifecycle is Lifecycle.PROPOSED
    epoch = ledger.epoch("ingest-7")
    assert epoch.superseded_by == "oncall"
    assert epoch.assertions == 3


def test_an_epoch_cannot_be_superseded_twice(ledger: Ledger) -> None:
    fact(ledger, 1, epoch="ingest-7")
    ledger.supersede_epoch("ingest-7", by="oncall", reason="bad source")
    with pytest.raises(Conflict, match="already superseded"):
        ledger.supersede_epoch("ingest-7", by="oncall", reason="again")
    with pytest.raises(Conflict, match="superseded"):
        fact(ledger, 2, epoch="ingest-7")
    with pytest.raises(NotFound):
        ledger.supersede_epoch("ingest-8", by="oncall", reason="never was")


# -- corrections -------------------------------------------------------------------------


def test_correction_with_value_approves_a_replacement_derived_from_the_bad_one(
    ledger: Ledger,
) -> None:
    bad = fact(ledger, "HS256", lifecycle="approved")
    c = ledger.correct(bad, by="alice", reason="HS256 is forbidden here", value="RS256")
    assert c.corrected.lifecycle is Lifecycle.REJECTED
    assert c.replacement is not None
    assert c.replacement.value == "RS256"
    assert c.replacement.lifecycle is Lifecycle.APPROVED
    assert c.replacement.derived_from == (bad,)
    assert c.correction.replacement_id == c.replacement.id
    assert c.constraint is None
    assert [i.assertion.value for i in ledger.answer(JWT).items] == ["RS256"]


def test_correction_to_the_approved_value_confirms_it_instead_of_duplicating(
    ledger: Ledger,
) -> None:
    rs = fact(ledger, "RS256", lifecycle="approved")
    es = fact(ledger, "ES256", agent="research")
    c = ledger.correct(es, by="alice", reason="we sign with RS256", value="RS256")
    assert c.replacement is not None
    assert c.replacement.id == rs  # the approved assertion that already says so
    assert c.correction.replacement_id == rs
    assert c.superseded == []
    assert ledger.get(rs).lifecycle is Lifecycle.APPROVED
    assert len(ledger.answer(JWT, lens="all").items) == 2


def test_a_correction_confirms_only_the_same_json_value(ledger: Ledger) -> None:
    # true "confirmed" an approved 1 (Python's True == 1): the correction named a value
    # no assertion held, and its constraint preferred one nothing said.
    one = ledger.assert_one(subject="svc.flag", value=1, agent="a", kind="observation",
                            lifecycle="approved")  # fmt: skip
    zero = ledger.assert_one(subject="svc.flag", value=0, agent="b", kind="observation",
                             lifecycle="approved")  # fmt: skip
    c = ledger.correct(zero.id, by="oncall", reason="it is on", value=True)
    assert c.replacement is not None
    assert c.replacement.id != one.id
    assert c.replacement.value is True
    same = ledger.assert_one(subject="svc.list", value=[1], agent="a", kind="observation",
                             lifecycle="approved")  # fmt: skip
    other = ledger.assert_one(subject="svc.list", value=[2], agent="b", kind="observation",
                              lifecycle="approved")  # fmt: skip
    confirmed = ledger.correct(other.id, by="oncall", reason="one", value=[1])
    assert confirmed.replacement is not None
    assert confirmed.replacement.id == same.id  # the same JSON: confirmed, as before


def test_correction_with_forbid_records_a_constraint(ledger: Ledger) -> None:
    bad = fact(ledger, "none", lifecycle="approved")
    c = ledger.correct(bad, by="alice", reason="alg none", value="RS256", forbid=True)
    assert c.constraint is not None
    assert c.constraint.scope == JWT
    assert c.constraint.forbid == ["none"]
    assert c.constraint.prefer == "RS256"
    assert c.correction.constraint_id == c.constraint.id
    assert [k.id for k in ledger.store.constraints(JWT + ".sub")] == [c.constraint.id]

    other = fact(ledger, {"ttl": 5}, subject="cache.ttl", lifecycle="approved")
    bare = ledger.correct(other, by="alice", reason="too short", forbid=True)
    assert bare.constraint is not None
    assert bare.constraint.forbid == ['{"ttl":5}']
    assert bare.constraint.prefer is None


def test_correction_needs_a_reason_and_a_live_target(ledger: Ledger) -> None:
    aid = fact(ledger, "x")
    with pytest.raises(InvalidInput, match="reason"):
        ledger.correct(aid, by="alice", reason="  ")
    ledger.correct(aid, by="alice", reason="wrong")
    with pytest.raises(Conflict):
        ledger.correct(aid, by="alice", reason="wrong again")


def test_a_query_serving_more_than_a_statements_worth_is_recorded_whole(ledger: Ledger) -> None:
    # the served rows go out in statements of SERVED_CHUNK rows: 250 rows take three
    from episteme.ledger.sql.projector import SERVED_CHUNK

    n = SERVED_CHUNK * 2 + 50
    added = ledger.add(
        [
            AssertionInput(subject=f"svc.many.s{i:03d}", value=i, agent="ops", lifecycle="approved")
            for i in range(n)
        ]
    )
    ids = sorted(a.id for a in added)
    for agent in ("deploy", "deploy", "audit"):
        q = ledger.query("svc.many.", agent=agent)
        assert len(q.items) == n
    assert q.query_id is not None
    record = ledger.store.query_record(q.query_id)
    assert record is not None
    assert sorted(s.assertion_id for s in record.returned) == ids
    assert {s.lifecycle for s in record.returned} == {Lifecycle.APPROVED}
    for a in (added[0], added[SERVED_CHUNK], added[-1]):  # each once a query, whatever chunk
        seen = ledger.impact(a.id)
        assert seen.queries == 3
        assert seen.agents == {"deploy": 2, "audit": 1}
    assert ledger.rebuild().ok


def test_a_recorded_query_keeps_what_it_hid_and_its_context(ledger: Ledger) -> None:
    # a record's hidden tally and context come out of its journal payload, which also
    # lists every served row: a wide read's payload is large, and read back whole
    added = ledger.add(
        [
            AssertionInput(
                subject=f"svc.wide.s{i:03d}",
                value={"n": i, "pad": "x" * 40},
                agent="ops",
                lifecycle="approved" if i % 3 else "proposed",
            )
            for i in range(150)
        ]
    )
    context = {"ticket": "INC-7", "why": ["deploy", "check"], "depth": {"n": 2}}
    ans = ledger.query("svc.wide", agent="deploy", context=context)
    assert len(ans.items) == 100
    assert ans.hidden.count == 50
    plain = ledger.query("svc.wide.s001", agent="deploy")
    for record in (ledger.store.query_record(ans.query_id or ""), ledger.audit(agent="deploy")[1]):
        assert record is not None
        assert record.id == ans.query_id
        assert record.hidden == ans.hidden
        assert record.context == context
        assert len(record.returned) == 100
    [newest] = ledger.audit(agent="deploy", limit=1)
    assert newest.id == plain.query_id
    assert newest.context == {}
    assert newest.hidden.count == 0
    assert {a.id for a in added if a.lifecycle == "proposed"} >= set(ans.hidden.ids)


def test_an_investigation_reads_one_snapshot(ledger: Ledger) -> None:
    # a query recorded between an investigation's statements is seen by all or none of
    # them: impact's count, its agents and its newest queries agree
    rs256 = fact(ledger, "RS256", lifecycle="approved")
    first = ledger.query(JWT, agent="deploy").query_id

    def read(r: StoreReader) -> tuple[object, object]:
        before = r.serving(rs256, 5)
        ledger.query(JWT, agent="audit")  # committed by the writer, on its own connection
        return before, r.serving(rs256, 5)

    before, after = ledger.store.reading(read)
    assert before == after == (1, {"deploy": 1}, [first])
    count, agents, _ = ledger.store.reading(lambda r: r.serving(rs256, 5))
    assert (count, agents) == (2, {"audit": 1, "deploy": 1})
    seen = ledger.impact(rs256)
    assert seen.queries == len(seen.recent_queries) == 2


# -- decisions and ids -------------------------------------------------------------------


def test_decision_cites_query_ids(ledger: Ledger) -> None:
    fact(ledger, "RS256", lifecycle="approved")
    q = ledger.query(JWT, agent="deploy")
    assert q.query_id is not None
    d = ledger.decide("rolled out RS256 keys", agent="deploy", query_ids=[q.query_id[:8]])
    assert d.id.startswith("d_")
    assert d.query_ids == [q.query_id]


def test_decision_citing_an_unknown_query_is_refused(ledger: Ledger) -> None:
    head = ledger.store.head()
    with pytest.raises(NotFound):
        ledger.decide("deploy", agent="deploy", query_ids=["q_0000000000000000deadbeef"])
    aid = fact(ledger, "RS256")
    with pytest.raises(InvalidInput, match=f"{aid} is an assertion id: give a query id \\(q_"):
        ledger.decide("deploy", agent="deploy", query_ids=[aid])
    with pytest.raises(NotFound, match="no query with id 'abcd'"):
        ledger.decide("deploy", agent="deploy", query_ids=["abcd"])
    with pytest.raises(InvalidInput, match="action"):
        ledger.decide(" ", agent="deploy", query_ids=[])
    assert ledger.store.head()[0] == head[0] + 1


def test_two_equal_decisions_at_one_time_get_distinct_ids(ledger: Ledger) -> None:
    one = ledger.decide("restart api", agent="deploy", query_ids=[])
    two = ledger.decide("restart api", agent="deploy", query_ids=[])
    assert one.id != two.id
    assert one.at == two.at


def test_id_prefix_of_four_characters_resolves(ledger: Ledger) -> None:
    aid = fact(ledger, "RS256")
    assert ledger.get(aid[:4]).id == aid
    assert ledger.get(aid[:10]).id == aid
    with pytest.raises(InvalidInput, match="too short"):
        ledger.get(aid[:3])
    with pytest.raises(InvalidInput, match="not an id"):
        ledger.get("ab'; --")
    with pytest.raises(NotFound):
        ledger.get("zzzzzz")


def test_ambiguous_id_prefix_is_refused(ledger: Ledger) -> None:
    made = ledger.add([AssertionInput(subject="n.v", value=i, agent="a") for i in range(800)])
    seen: dict[str, str] = {}
    shared = next(a.id[:4] for a in made if seen.setdefault(a.id[:4], a.id) != a.id)
    with pytest.raises(InvalidInput, match="ambiguous"):
        ledger.get(shared)
    assert ledger.get(seen[shared][:12]).id == seen[shared]


# -- reading -----------------------------------------------------------------------------


def test_full_text_search_folds_accents_alike_on_both_backends(ledger: Ledger) -> None:
    # SQLite's FTS5 folds accents, PostgreSQL's 'simple' configuration did not: `zurich`
    # found Zürich on one backend and nothing on the other.
    zh = fact(ledger, "Zürich", subject="dc.primary", source="runbook://dc/naïve")
    sp = fact(ledger, "São Paulo – backup", subject="dc.backup")
    for words, found in (
        ("zurich", {zh}), ("Zürich", {zh}), ("ZÜRICH", {zh}), ("naive", {zh}),
        ("sao", {sp}), ("São", {sp}), ("paulo backup", {sp}), ("\u017fao", {sp}),
    ):  # fmt: skip
        got = {i.assertion.id for i in ledger.answer(None, lens="all", text=words).items}
        assert got == found, words


def test_full_text_search_reads_words_around_escapes_and_combining_accents(
    ledger: Ledger,
) -> None:
    # A value's text is its JSON: "line\nsecond" was indexed as "line" and "nsecond", so
    # "second" found nothing on either backend; "e" and a combining acute accent folded
    # on SQLite alone.
    nl = fact(ledger, "first line\nsecond line", subject="notes.a")
    tab = fact(ledger, {"k": "tab\there", "q": 'say "hi"\\now'}, subject="notes.b")
    mark = fact(ledger, "e\u0301cole \u001bred", subject="notes.c")
    for words, found in (
        ("second", {nl}), ("line second", {nl}), ("nsecond", set()),
        ("here", {tab}), ("there", set()), ("hi", {tab}), ("now", {tab}), ("nnow", set()),
        ("ecole", {mark}), ("école", {mark}), ("e\u0301cole", {mark}), ("red", {mark}),
    ):  # fmt: skip
        got = {i.assertion.id for i in ledger.answer(None, lens="all", text=words).items}
        assert got == found, words


def test_the_search_text_is_the_same_in_python_and_in_each_migration() -> None:
    half = len(JSON_ESCAPES) // 2  # SQLite's view: two stages of nested calls
    stages = (search_sql("value", JSON_ESCAPES[:half]), search_sql("value", JSON_ESCAPES[half:]))
    sqlite_view = (resources.files("episteme.ledger.sqlite") / "0006_search_text.sql").read_text()
    assert all(stage in sqlite_view for stage in stages)
    postgres = (resources.files("episteme.ledger.postgres") / "0005_text.sql").read_text()
    assert search_sql("value") in postgres
    with sqlite3.connect(":memory:") as conn:  # the migration's own view, as it nests them
        conn.execute("CREATE TABLE assertions (subject TEXT, value TEXT, source TEXT)")
        conn.execute(sqlite_view[sqlite_view.index("CREATE VIEW") :].split(";")[0])
        tricky = canonical("\\u0010 \\\x10 \\n\n")  # a backslash, then an escape's look
        conn.execute("INSERT INTO assertions VALUES ('s', ?, NULL)", (tricky,))
        (got,) = conn.execute("SELECT value FROM assertions_search").fetchone()
        assert got == search_text(tricky) == '" u0010     n "'
        for value in ("a\\\\nb", '"\\"\\\\\\n\\t"', canonical('x\x01\x1fy\b\f\r\n\t"\\')):
            (got,) = conn.execute(
                f"SELECT {stages[1]} FROM (SELECT {stages[0]} AS value FROM (SELECT ? AS value))",
                (value,),
            ).fetchone()
            assert got == search_text(value), value


def test_full_text_search(ledger: Ledger) -> None:
    es = fact(ledger, "ES256", agent="research", source="https://example.org/jwt-es256")
    rs = fact(ledger, "RS256", lifecycle="approved")
    fact(ledger, 300, subject="cache.ttl", lifecycle="approved")
    assert [i.assertion.id for i in ledger.answer(None, lens="all", text="ES256").items] == [es]
    assert {i.assertion.id for i in ledger.answer(None, lens="all", text="jwt").items} == {es, rs}
    assert [i.assertion.id for i in ledger.answer(None, text="jwt").items] == [rs]
    assert ledger.answer("cache", lens="all", text="jwt").items == []
    q = ledger.query(None, agent="deploy", lens="latest", text="algorithm")
    assert [i.assertion.id for i in q.items] == [rs]
    with pytest.raises(InvalidInput):
        ledger.answer(None)
    # words of punctuation only: the same refusal on both backends, and no audit record
    head = ledger.store.head()
    for text in ("  ", "!!!", "-- ...", "\"'"):
        with pytest.raises(InvalidInput, match="no words to search for") as refused:
            ledger.query(None, agent="deploy", text=text)
        assert refused.value.field == "text"
    assert ledger.store.head() == head
    # a word of punctuation beside real words is left out, as both indexes do
    assert [i.assertion.id for i in ledger.answer(None, lens="all", text="ES256 !!").items] == [es]


def test_custom_lens_with_min_confidence(ledger: Ledger) -> None:
    sure = fact(ledger, "RS256", confidence=0.95)
    fact(ledger, "ES256", agent="research", confidence=0.4)
    spec = LensSpec(lifecycles=frozenset({Lifecycle.PROPOSED}), min_confidence=0.8)
    ledger.define_lens("confident", spec, by="alice")
    ans = ledger.query(JWT, agent="deploy", lens="confident")
    assert [i.assertion.id for i in ans.items] == [sure]
    assert ans.hidden.by_reason == {"confidence": 1}
    assert ledger.lenses()["confident"] == spec


def test_custom_lens_with_agent_allow_list(ledger: Ledger) -> None:
    mine = fact(ledger, "RS256", agent="platform", lifecycle="approved")
    fact(ledger, 300, subject="auth.jwt.ttl", agent="research", lifecycle="approved")
    ledger.define_lens("platform-only", LensSpec(agents=frozenset({"platform"})), by="alice")
    ans = ledger.answer("auth", lens="platform-only")
    assert [i.assertion.id for i in ans.items] == [mine]
    assert ans.hidden.by_reason == {"agent": 1}


def test_a_lens_names_what_it_hides_oldest_first(ledger: Ledger) -> None:
    """Live alternatives a lens hides are named in the order they were recorded, whether
    it read and hid them (too little confidence) or the store only counted and named
    them (proposed, a lifecycle the lens cannot show): at most HIDDEN_IDS of them, with
    exact counts."""
    ledger.define_lens("sure", LensSpec(min_confidence=0.8), by="alice")
    hidden = []
    for i in range(30):
        if i % 3 == 0:
            hidden.append(fact(ledger, i, kind="observation", lifecycle="approved", confidence=0.5))
        else:
            hidden.append(fact(ledger, i, kind="observation"))
    shown = fact(ledger, 99, kind="observation", lifecycle="approved", confidence=0.9)
    for ans in (ledger.answer(JWT, lens="sure"), ledger.query(JWT, agent="deploy", lens="sure")):
        assert [i.assertion.id for i in ans.items] == [shown]
        assert ans.hidden.ids == hidden[:HIDDEN_IDS]
        assert ans.hidden.count == 30
        assert ans.hidden.by_lifecycle == {"approved": 10, "proposed": 20}
        assert ans.hidden.by_reason == {"confidence": 10, "lifecycle": 20}
    few = ledger.answer(JWT, lens="approved")  # every hidden one proposed, named by the store
    assert few.hidden.ids == [h for i, h in enumerate(hidden) if i % 3][:HIDDEN_IDS]


def test_a_lens_that_picks_the_newest_names_the_older_in_recording_order(
    ledger: Ledger,
) -> None:
    # Older values were named after everything else: `latest` over p.x, p.y, p.y, p.x
    # named [y1, x1], and an approved alternative hidden as older fell out of the first 20.
    x1, y1 = fact(ledger, 1, subject="p.x"), fact(ledger, 1, subject="p.y")
    y2, x2 = fact(ledger, 2, subject="p.y"), fact(ledger, 2, subject="p.x")
    for ans in (ledger.answer("p", lens="latest"), ledger.query("p", agent="o", lens="latest")):
        assert [i.assertion.id for i in ans.items] == [x2, y2]  # subjects as they first came
        assert ans.hidden.ids == [x1, y1]
    spec = LensSpec(lifecycles=frozenset({Lifecycle.APPROVED}), pick="newest")
    ledger.define_lens("newest-approved", spec, by="alice")
    seen = {"kind": "observation"}  # observations: a second approval supersedes nothing
    older = fact(ledger, "ES256", lifecycle="approved", **seen)
    proposals = [fact(ledger, n, **seen) for n in range(HIDDEN_IDS)]
    newest = fact(ledger, "RS256", lifecycle="approved", **seen)
    ans = ledger.answer(JWT, lens="newest-approved")
    assert [i.assertion.id for i in ans.items] == [newest]
    assert ans.hidden.ids == [older, *proposals][:HIDDEN_IDS]
    assert ans.hidden.by_reason == {"older": 1, "lifecycle": HIDDEN_IDS}


def test_built_in_lens_names_cannot_be_redefined(ledger: Ledger) -> None:
    for name in ("approved", "latest", "consensus", "all"):
        with pytest.raises(Conflict, match="built-in"):
            ledger.define_lens(name, LensSpec(), by="alice")
    with pytest.raises(NotFound, match="no lens"):
        ledger.answer(JWT, lens="nope")


def test_query_as_of_a_past_time(ledger: Ledger, clock: ManualClock) -> None:
    rs = fact(ledger, "RS256", lifecycle="approved")
    before = clock.now()
    later(clock)
    es = fact(ledger, "ES256", lifecycle="approved")
    assert [i.assertion.id for i in ledger.query(JWT, agent="deploy", at=before).items] == [rs]
    assert [i.assertion.id for i in ledger.query(JWT, agent="deploy").items] == [es]
    then = ledger.answer(JWT, lens="all", at=before)
    assert [(i.assertion.id, i.assertion.lifecycle) for i in then.items] == [
        (rs, Lifecycle.APPROVED)
    ]


# -- investigation -----------------------------------------------------------------------


def test_served_lists_reads_up_to_a_time(ledger: Ledger, clock: ManualClock) -> None:
    rs = fact(ledger, "RS256", lifecycle="approved")
    fact(ledger, 300, subject="auth.session.ttl", lifecycle="approved")
    first = ledger.query("auth", agent="deploy")
    cutoff = clock.now()
    later(clock)
    second = ledger.query(JWT, agent="orchestrator", lens="all")
    ledger.query("cache", agent="deploy")

    upto = ledger.served(JWT, at=cutoff)
    assert [q.id for q in upto] == [first.query_id]
    assert [i.assertion_id for i in upto[0].returned] == [rs]  # only items under the subject
    assert [q.id for q in ledger.served(JWT)] == [second.query_id, first.query_id]


def test_audit_by_agent_and_window(ledger: Ledger, clock: ManualClock) -> None:
    fact(ledger, "RS256", lifecycle="approved")
    a = ledger.query(JWT, agent="deploy")
    start = later(clock)
    b = ledger.query(JWT, agent="orchestrator")
    c = ledger.query("auth", agent="deploy")
    end = clock.now()
    later(clock)
    d = ledger.query(JWT, agent="deploy")

    assert [q.id for q in ledger.audit(agent="deploy")] == [d.query_id, c.query_id, a.query_id]
    assert [q.id for q in ledger.audit(since=start, until=end)] == [c.query_id, b.query_id]
    assert [q.id for q in ledger.audit(agent="orchestrator", since=start)] == [b.query_id]
    assert [q.id for q in ledger.audit(subject="cache")] == []
    assert len(ledger.audit(limit=2)) == 2


def test_diff_counts_changes_in_a_window(ledger: Ledger, clock: ManualClock) -> None:
    fact(ledger, "none", subject="old.thing")
    since = clock.now()
    later(clock)
    rs = fact(ledger, "RS256", lifecycle="approved")
    es = fact(ledger, "ES256", agent="research")
    ledger.approve(es, by="alice")
    bad = fact(ledger, "HS256", subject="auth.jwt.fallback", lifecycle="approved")
    ledger.correct(bad, by="alice", reason="weak", value="RS256")
    until = clock.now()
    later(clock)
    fact(ledger, "later", subject="auth.later")

    d = ledger.diff("auth", since=since, until=until)
    assert d.counts == {"added": 4, "approved": 1, "superseded": 1, "corrected": 1}
    assert rs in {c.assertion_id for c in d.changes if c.change == "superseded"}
    # both ends held: old.thing was recorded at `since` itself (it was left out)
    assert ledger.diff(None, since=since).counts["added"] == 6
    with pytest.raises(InvalidInput):
        ledger.diff("auth", since=until, until=since)


def test_a_limited_diff_keeps_the_newest_and_counts_them_all(
    ledger: Ledger, clock: ManualClock
) -> None:
    # a busy day holds a hundred thousand changes: a limit keeps the newest, and the
    # counts and total still say what the whole window holds
    since = clock.now()
    later(clock)
    added = ledger.add(
        [AssertionInput(subject=f"svc.s{i}", value=i, agent="ops") for i in range(6)]
    )
    later(clock)
    ledger.approve(added[1].id, by="alice")
    ledger.correct(added[2].id, by="alice", reason="wrong", value=-2)
    whole = ledger.diff("svc", since=since)
    assert whole.total == len(whole.changes) == 9
    for limit in (1, 3, 8):
        part = ledger.diff("svc", since=since, limit=limit)
        assert part.changes == whole.changes[-limit:]
        assert (part.counts, part.total) == (whole.counts, 9)
    assert ledger.diff("svc", since=since, limit=9) == whole
    assert ledger.diff("svc", since=since, limit=50) == whole
    assert whole.counts == {"added": 7, "approved": 1, "corrected": 1}
    assert ledger.diff("nothing", since=since, limit=5).total == 0
    # a diff from a server that did not count held every change
    older = whole.model_dump(mode="json", exclude={"total"})
    assert Diff.model_validate(older) == whole
    with pytest.raises(InvalidInput, match="limit must be between 1 and"):
        ledger.diff("svc", since=since, limit=0)


def test_a_diff_pages_through_events_that_change_many_assertions(
    ledger: Ledger, clock: ManualClock
) -> None:
    # One event can change any number of assertions (a batch, an epoch retracted at
    # once), all at one time and one seq: the pages go past them without losing one
    since = clock.now()
    later(clock)
    ledger.add(
        [AssertionInput(subject=f"svc.s{i}", value=i, agent="ops", epoch="e1") for i in range(7)]
    )
    later(clock)
    # in one batch, the first approved value is added and superseded by the second: two
    # versions of one assertion in one event
    ledger.add(
        [
            AssertionInput(subject="svc.mode", value=v, agent="ops", lifecycle="approved")
            for v in ("a", "b", "c")
        ]
    )
    ledger.supersede_epoch("e1", by="alice", reason="re-ingested")
    later(clock)
    last = fact(ledger, "one more", subject="svc.tail")
    whole = ledger.diff("svc", since=since)
    assert whole.next is None
    assert whole.counts == {"added": 11, "superseded": 2, "retracted": 7}
    for limit in (1, 2, 3, 5, 19, 20):
        first = ledger.diff("svc", since=since, limit=limit)
        pages, cursor = [first.changes], first.next
        until = first.until
        while cursor is not None:
            page = ledger.diff("svc", since=since, until=until, limit=limit, before=cursor)
            assert 0 < len(page.changes) <= limit
            assert (page.counts, page.total) == (whole.counts, 20)
            pages.append(page.changes)
            cursor = page.next
        assert [c for p in reversed(pages) for c in p] == whole.changes, limit
        assert len(pages) == -(-20 // limit)
    # a page below a cursor keeps its place when newer changes land
    top = ledger.diff("svc", since=since, limit=4)
    assert top.changes[-1].assertion_id == last
    assert top.next is not None
    later(clock)
    fact(ledger, "newest", subject="svc.new")
    below = ledger.diff("svc", since=since, limit=4, before=top.next)
    assert below.changes == whole.changes[-8:-4]
    assert below.total == 21  # the window grew; the page did not move
    # no limit: everything below the cursor
    rest = ledger.diff("svc", since=since, until=top.until, before=top.next)
    assert rest.changes == whole.changes[:-4]
    assert rest.next is None
    huge = f"{'9' * 5000}.1.{last}.0"  # past what int() reads: refused before it
    for bad in ("", "12", "1.2.3.4", f"1.2.{last}.2", f"x.2.{last}.0", f"1.0.{last}.0", huge):
        with pytest.raises(InvalidInput, match="not a place in a diff") as e:
            ledger.diff("svc", since=since, limit=4, before=bad)
        assert e.value.field == "before"
    # well formed, but where no change is: an unknown assertion, or a known one with its
    # seq, time or version off (each would skip changes of the event it names)
    at, seq, aid, later_one = top.next.split(".")
    for nowhere in (
        f"{at}.{seq}.{'0' * 64}.0",
        f"{at}.{int(seq) - 1}.{aid}.{later_one}",
        f"{int(at) - 1}.{seq}.{aid}.{later_one}",
        f"{at}.{seq}.{aid}.{1 - int(later_one)}",
    ):
        with pytest.raises(InvalidInput, match="names no change of this ledger"):
            ledger.diff("svc", since=since, limit=4, before=nowhere)


def test_blame_of_a_subject_and_of_an_id(ledger: Ledger, clock: ManualClock) -> None:
    rs = fact(ledger, "RS256", lifecycle="approved", epoch="ingest-1")
    later(clock)
    es = fact(ledger, "ES256", agent="research", source="paper")
    ledger.approve(es, by="alice", reason="faster")

    by_subject = ledger.blame(JWT)
    assert [b.assertion.id for b in by_subject] == [rs, es]
    (one,) = ledger.blame(es[:8])
    assert one.assertion.agent == "research"
    assert [(v.lifecycle, v.actor, v.cause) for v in one.history] == [
        (Lifecycle.PROPOSED, "research", "added"),
        (Lifecycle.APPROVED, "alice", "approved"),
    ]
    (old,) = ledger.blame(rs)
    assert old.epoch is not None
    assert old.epoch.name == "ingest-1"
    assert old.history[-1].lifecycle is Lifecycle.SUPERSEDED

    fix = ledger.correct(es, by="bob", reason="clients lack ES256", value="RS256")
    assert fix.replacement is not None
    (fixed,) = ledger.blame(fix.replacement.id)
    assert [a.id for a in fixed.derived_from] == [es]
    assert [c.id for c in ledger.blame(es)[0].corrections] == [fix.correction.id]
    with pytest.raises(NotFound):
        ledger.blame("no.such.subject")


def test_trace_of_a_decision_and_of_a_query(ledger: Ledger) -> None:
    rs = fact(ledger, "RS256", lifecycle="approved", source="runbook", epoch="ingest-1")
    ttl = fact(ledger, 300, subject="auth.ttl", agent="research", lifecycle="approved")
    q1 = ledger.query(JWT, agent="deploy")
    q2 = ledger.query("auth.ttl", agent="orchestrator")
    assert q1.query_id is not None
    assert q2.query_id is not None
    d = ledger.decide("rotate keys", agent="deploy", query_ids=[q1.query_id, q2.query_id])

    t = ledger.trace(d.id)
    assert t.root_kind == "decision"
    assert {q.id for q in t.queries} == {q1.query_id, q2.query_id}
    assert {a.id for a in t.assertions} == {rs, ttl}
    assert t.agents[0] == "deploy"
    assert set(t.agents) == {"deploy", "orchestrator", "platform", "research"}
    assert t.sources == ["runbook"]
    assert t.epochs == ["ingest-1"]

    tq = ledger.trace(q2.query_id)
    assert tq.root_kind == "query"
    assert tq.decision is None
    assert [a.id for a in tq.assertions] == [ttl]
    with pytest.raises(InvalidInput, match="blame"):
        ledger.trace(rs)


def test_a_decisions_trace_says_what_its_agent_checked_in_the_hour_before(
    ledger: Ledger, clock: ManualClock
) -> None:
    # At 3 a.m. the question is also whether the deploy agent checked its plan at all.
    ledger.add_constraint(scope="auth", forbid=["ES256"], reason="prod verifies RS256", by="o")
    too_early = ledger.check("use ES256", ["auth"], agent="deploy")
    clock.advance(TimeDelta(minutes=61))
    stopped = ledger.check("use ES256", ["auth.jwt"], agent="deploy")
    clock.advance(TimeDelta(minutes=1))
    passed = ledger.check("rotate the RS256 key", ["auth"], agent="deploy")
    ledger.check("use ES256", ["auth"], agent="someone-else")  # not the deciding agent
    read = ledger.query(JWT, agent="deploy")
    assert read.query_id is not None
    d = ledger.decide("deployed", agent="deploy", query_ids=[read.query_id])
    later = ledger.check("use ES256 again", ["auth"], agent="deploy")  # after it
    t = ledger.trace(d.id)
    assert [c.id for c in t.checks] == [passed.check_id, stopped.check_id]  # newest first
    assert t.checks[1].violations[0]["matched"] == "ES256"
    assert too_early.check_id not in {c.id for c in t.checks}
    assert later.check_id not in {c.id for c in t.checks}
    assert ledger.trace(read.query_id).checks is None  # a query's trace does not say
    quiet = ledger.decide("restarted", agent="orchestrator", query_ids=[])
    assert ledger.trace(quiet.id).checks == []


def test_impact_of_an_assertion(ledger: Ledger) -> None:
    root = fact(ledger, "10.0.0.0/8", subject="net.cidr", lifecycle="approved")
    child = fact(ledger, "10.1.0.0/16", subject="net.subnet", derived_from=[root[:8]])
    grandchild = fact(ledger, "10.1.2.0/24", subject="net.subnet.a", derived_from=[child])
    fact(ledger, "unrelated", subject="net.other")
    q1 = ledger.query("net.cidr", agent="deploy")
    ledger.query("net", agent="orchestrator")
    ledger.query("net.cidr", agent="orchestrator", lens="all")
    ledger.query("net.subnet", agent="deploy")
    assert q1.query_id is not None
    d = ledger.decide("opened firewall", agent="deploy", query_ids=[q1.query_id])

    imp = ledger.impact(root[:6])
    assert imp.assertion.id == root
    assert imp.queries == 3
    assert imp.agents == {"orchestrator": 2, "deploy": 1}
    assert [x.id for x in imp.decisions] == [d.id]
    assert [a.id for a in imp.derived] == [child, grandchild]
    assert ledger.impact(grandchild).derived == []


# -- export and import -------------------------------------------------------------------


def _history(ledger: Ledger, clock: ManualClock) -> None:
    rs = fact(ledger, "RS256", lifecycle="approved", epoch="e1")
    es = fact(ledger, "ES256", agent="research")
    later(clock)
    ledger.approve(es, by="alice")
    q = ledger.query(JWT, agent="deploy")
    assert q.query_id is not None
    ledger.decide("ship", agent="deploy", query_ids=[q.query_id])
    ledger.correct(rs, by="alice", reason="old", value="PS256", forbid=True)
    ledger.define_lens("mine", LensSpec(agents=frozenset({"platform"})), by="alice")
    ledger.supersede_epoch("e1", by="oncall", reason="bad")


def test_export_and_import_reproduce_the_ledger(
    ledger: Ledger, clock: ManualClock, tmp_path: Path
) -> None:
    _history(ledger, clock)
    events = list(ledger.export())
    lines = [json.dumps(e.to_json()) for e in events]
    assert all(json.loads(line)["seq"] == e.seq for line, e in zip(lines, events, strict=True))

    with Ledger.init(tmp_path / "copy") as copy:
        assert copy.import_events(events) == len(events)
        assert copy.verify() == ledger.verify()
        assert copy.verify().head == ledger.store.head()[2].hex()  # type: ignore[union-attr]
        assert copy.rebuild().ok
        for lens in ("approved", "all", "mine"):
            mine = [i.assertion for i in ledger.answer("auth", lens=lens).items]
            theirs = [i.assertion for i in copy.answer("auth", lens=lens).items]
            assert theirs == mine
        with pytest.raises(Conflict, match="not empty"):
            copy.import_events(events)


@pytest.mark.parametrize("field", ["payload", "actor", "at", "hash"])
def test_import_of_a_tampered_export_is_refused(
    ledger: Ledger, clock: ManualClock, tmp_path: Path, field: str
) -> None:
    _history(ledger, clock)
    events = list(ledger.export())
    e = events[1]  # the proposal of ES256
    changes: dict[str, Any] = {
        "payload": e.payload.replace("ES256", "XS256"),
        "actor": e.actor + "x",
        "at": e.at + 1,
        "hash": bytes(32),
    }
    changed = changes[field]
    assert changed != getattr(e, field)
    events[1] = dataclasses.replace(e, **{field: changed})

    with Ledger.init(tmp_path / "copy") as copy:
        with pytest.raises(InvalidInput, match="broken at event 2"):
            copy.import_events(events)
        assert copy.store.head() == (0, 0, None)


def test_import_of_a_journal_whose_time_goes_back_is_refused(
    ledger: Ledger, clock: ManualClock, tmp_path: Path
) -> None:
    # Every store records an event at its predecessor's time or later, and lists page by
    # it; a journal chained again with an earlier time was taken whole.
    _history(ledger, clock)
    events = list(ledger.export())
    back = events[2].at - 1_000_000
    prev = GENESIS
    for i, e in enumerate(events):
        at = back if i == 3 else e.at
        h = link(prev, e.seq, at, e.actor, e.kind, e.payload)
        events[i], prev = dataclasses.replace(e, at=at, hash=h), h
    assert verify_chain(events).ok
    with Ledger.init(tmp_path / "copy") as copy:
        with pytest.raises(IntegrityError, match="event 4 is recorded before event 3"):
            copy.import_events(events)
        assert copy.store.head() == (0, 0, None)


# -- parse_time --------------------------------------------------------------------------

NIGHT = Instant.parse_iso("2026-11-22T03:00:00Z")


def test_parse_rfc3339_with_offsets() -> None:
    want = Instant.parse_iso("2026-11-21T21:00:00Z")
    assert parse_time("2026-11-21T21:00:00Z", NIGHT) == want
    assert parse_time("2026-11-21T22:00:00+01:00", NIGHT) == want
    assert parse_time("2026-11-21T16:00:00-05:00", NIGHT) == want
    assert parse_time("2026-11-21 21:00", NIGHT) == want  # plain local (UTC here)
    assert parse_time("now", NIGHT) == NIGHT


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("6h", 360), ("30m ago", 30), ("1h30m", 90), ("2d", 2880), ("45 minutes ago", 45)],
)
def test_parse_relative_durations(text: str, minutes: int) -> None:
    assert parse_time(text, NIGHT) == NIGHT.subtract(minutes=minutes)


def test_clock_time_means_its_most_recent_past_occurrence() -> None:
    last_night = Instant.parse_iso("2026-11-21T21:00:00Z")
    assert parse_time("21:00", NIGHT) == last_night
    assert parse_time("9pm", NIGHT) == last_night
    assert parse_time("9:00pm", NIGHT) == last_night
    assert parse_time("yesterday 21:00", NIGHT) == last_night
    evening = Instant.parse_iso("2026-11-22T22:00:00Z")
    assert parse_time("21:00", evening) == Instant.parse_iso("2026-11-22T21:00:00Z")
    assert parse_time("yesterday 21:00", evening) == last_night
    assert parse_time("02:30", NIGHT) == Instant.parse_iso("2026-11-22T02:30:00Z")
    assert parse_time("12am", NIGHT) == Instant.parse_iso("2026-11-22T00:00:00Z")


def test_clock_time_is_read_in_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Paris")
    whenever.reset_system_tz()
    # 21:30 UTC is 22:30 in Paris (CET, UTC+1): 21:00 Paris was 20:00 UTC, half an hour ago
    now = Instant.parse_iso("2026-11-21T21:30:00Z")
    assert parse_time("21:00", now) == Instant.parse_iso("2026-11-21T20:00:00Z")
    assert parse_time("9pm", now) == Instant.parse_iso("2026-11-21T20:00:00Z")
    # at 20:30 Paris, 21:00 Paris today has not come yet: it means yesterday's
    early = Instant.parse_iso("2026-11-21T19:30:00Z")
    assert parse_time("21:00", early) == Instant.parse_iso("2026-11-20T20:00:00Z")
    assert parse_time("2026-11-21 21:00", early) == Instant.parse_iso("2026-11-21T20:00:00Z")


@pytest.mark.parametrize(
    "text", ["", "   ", "soon", "21", "25:00", "13pm", "0am", "5 parsecs", "2026-13-01", "12:61"]
)
def test_unreadable_times_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_time(text, NIGHT)


@pytest.mark.parametrize("text", ["999999999d", "99999999999999999999w ago", "in 3000000d"])
def test_times_past_the_calendar_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="out of range: times run from year 1 to 9999"):
        parse_time(text, NIGHT)


@pytest.mark.parametrize("limit", [0, -1, 1_000_001, 2**70])
def test_a_limit_out_of_range_is_refused_by_every_listing(ledger: Ledger, limit: int) -> None:
    # 2**70 is more than either database's integers hold: refused before it gets there
    listings = [
        lambda: ledger.served("svc", limit=limit),
        lambda: ledger.audit(limit=limit),
        lambda: ledger.decisions(limit=limit),
        lambda: ledger.diff(None, since=NIGHT.subtract(hours=1), until=NIGHT, limit=limit),
        lambda: ledger.denials(limit=limit),
        lambda: ledger.checks(limit=limit),
        lambda: ledger.notifications(limit=limit),
    ]
    for listing in listings:
        with pytest.raises(InvalidInput, match="limit must be between 1 and 1,000,000"):
            listing()


def test_a_check_sees_constraints_above_and_below_its_subjects(ledger: Ledger) -> None:
    a = ledger.assert_one(subject="auth.jwt.algorithm", value="ES256", agent="research")
    ledger.approve(a.id, by="oncall")
    ledger.correct(a.id, by="oncall", reason="prod verifies RS256", value="RS256", forbid=True)
    plan = "roll out ES256 keys"
    for subjects in (["auth.jwt.algorithm"], ["auth.jwt"], ["auth"], [], ["auth.jwt.algorithm.x"]):
        result = ledger.check(plan, subjects, agent="deploy-agent")
        assert [v.matched for v in result.violations] == ["ES256"], subjects
    for subjects in (["auth.jw"], ["auth_jwt"], ["billing"]):
        assert ledger.check(plan, subjects, agent="deploy-agent").checked == 0, subjects


def test_a_constraint_of_tags_meets_the_checks_that_name_one(ledger: Ledger) -> None:
    # DESIGN §2: a constraint's scope is a subject prefix or a tag. A rule about an action
    # ("never force a deploy") is on no subject: it could not be recorded at all.
    forced = ledger.add_constraint(
        tags=["Deploy", "rollout", "deploy"],
        patterns=[r"--force\b"],
        reason="a forced deploy skips the canary",
        prefer="kubectl rollout with the canary",
        by="oncall",
    )
    assert forced.constraint.scope is None
    assert forced.constraint.tags == ["deploy", "rollout"]  # lower case, each once
    both = ledger.add_constraint(
        scope="code.http_client", tags=["npm"], items=["node-fetch"], reason="leaks", by="oncall"
    )
    es = ledger.assert_one(subject="auth.jwt.algorithm", value="ES256", agent="research")
    fix = ledger.correct(es.id, by="oncall", reason="prod verifies RS256", forbid=True)
    assert fix.constraint is not None
    plan = "kubectl apply --force: ES256 keys, npm install node-fetch"
    names = {forced.constraint.id: "forced", both.constraint.id: "both", fix.constraint.id: "es"}

    def met(subjects: list[str], tags: list[str]) -> list[str]:
        result = ledger.check(plan, subjects, agent="deploy-agent", tags=tags)
        assert result.checked == len(result.violations)  # the plan breaks every one met
        return sorted(names[v.constraint.id] for v in result.violations)

    named = ledger.check(plan, agent="deploy-agent", tags=["DEPLOY"])
    assert named.tags == ["deploy"]
    assert named.violations[0].message == (
        "'--force' is forbidden in deploy or rollout plans: a forced deploy skips the canary;"
        " use 'kubectl rollout with the canary' instead"
    )
    # A side a check names narrows that side; one it leaves out narrows nothing. A deploy
    # agent that names the kind of plan and not the subject still meets the constraint
    # the correction put on auth.jwt.algorithm.
    assert met([], ["deploy"]) == ["both", "es", "forced"]
    assert met(["code.http_client.retries"], []) == ["both", "forced"]
    assert met(["billing"], []) == ["both", "forced"]  # of any kind: both has a tag
    assert met(["billing"], ["terraform"]) == []
    assert met(["auth"], ["deploy"]) == ["es", "forced"]
    assert met(["code"], ["npm", "rollout"]) == ["both", "forced"]  # each once
    assert met([], []) == ["both", "es", "forced"]
    assert "forbidden on code.http_client or in npm plans" in " ".join(
        v.message for v in ledger.check(plan, ["code"], agent="a", tags=["npm"]).violations
    )
    # the audit keeps the tags each check named; the list filters strictly
    assert [c.tags for c in ledger.checks(limit=3)] == [["npm"], [], ["npm", "rollout"]]
    assert [s.constraint.id for s in ledger.constraints(tags=["rollout"])] == [forced.constraint.id]
    assert [s.constraint.id for s in ledger.constraints("billing", ["npm"])] == [both.constraint.id]
    assert ledger.constraint(forced.constraint.id).constraint.hits == 7
    assert ledger.rebuild().ok


def test_a_retired_constraint_is_kept_and_answers_no_check(
    ledger: Ledger, clock: ManualClock
) -> None:
    # A constraint could not be undone: a wrong or outgrown one blocked agents for good,
    # and every hit made it whole again.
    forced = ledger.add_constraint(tags=["deploy"], patterns=["--force"], reason="r", by="o")
    other = ledger.add_constraint(scope="auth", forbid=["ES256"], reason="RS256", by="o")
    assert not ledger.check("apply --force", agent="a", tags=["deploy"]).ok
    clock.advance(TimeDelta(minutes=5))
    done = ledger.retire_constraint(forced.constraint.id[:10], by="lead", reason="canary in CI")
    assert done.state == "retired"
    assert done.strength == 0.0
    c = done.constraint
    assert (c.retired_by, c.retired_reason, c.retired_at) == ("lead", "canary in CI", clock.now())
    assert c.hits == 1  # what it did before stays
    after = ledger.check("apply --force with ES256", agent="a", tags=["deploy"])
    assert [v.constraint.id for v in after.violations] == [other.constraint.id]
    assert [s.constraint.id for s in ledger.constraints()] == [other.constraint.id]
    assert ledger.constraints(tags=["deploy"]) == []
    every = ledger.constraints(retired=True)
    assert [s.state for s in every] == ["retired", "active"]
    assert ledger.constraint(forced.constraint.id).state == "retired"
    head = ledger.store.head()
    with pytest.raises(Conflict, match=r"was retired already, by lead at .*: canary in CI"):
        ledger.retire_constraint(forced.constraint.id, by="o", reason="again")
    with pytest.raises(NotFound, match="c_nope"):
        ledger.retire_constraint("c_nope", by="o", reason="r")
    with pytest.raises(InvalidInput, match="retiring a constraint needs a reason"):
        ledger.retire_constraint(other.constraint.id, by="o", reason="  ")
    assert ledger.store.head() == head  # nothing written
    # one on a subject, retired: met neither through its subject nor with a side left open
    ledger.retire_constraint(other.constraint.id, by="lead", reason="RS256 everywhere")
    for subjects, tags in ((["auth"], []), ([], ["deploy"]), (["auth.jwt"], ["deploy"]), ([], [])):
        assert ledger.check("use ES256", subjects, agent="a", tags=tags).checked == 0
    assert ledger.rebuild().ok
    assert ledger.verify().ok


def test_tags_are_words_and_a_constraint_needs_a_scope_or_one(ledger: Ledger) -> None:
    head = ledger.store.head()
    for tags in (["two words"], ["-leading"], [""], ["x" * 65], ["ok", "é"]):
        with pytest.raises(InvalidInput, match=r"invalid tag .*e\.g\. deploy") as bad:
            ledger.add_constraint(tags=tags, forbid=["x"], reason="r", by="oncall")
        assert bad.value.field == "tags"
        with pytest.raises(InvalidInput, match="invalid tag"):
            ledger.check("plan", agent="a", tags=tags)
        with pytest.raises(InvalidInput, match="invalid tag"):
            ledger.constraints(tags=tags)
    with pytest.raises(InvalidInput, match="at most 20 tags"):  # counted as given, as the API
        ledger.add_constraint(tags=["t"] * 21, forbid=["x"], reason="r", by="o")
    # one string where a list belongs: "deploy" read as the tags d, e, p, l, o, y
    calls = {
        "tags": lambda: ledger.add_constraint(tags="deploy", forbid=["x"], reason="r", by="o"),
        "forbid": lambda: ledger.add_constraint(scope="a", forbid="ES256", reason="r", by="o"),
        "scope": lambda: ledger.check("p", "auth", agent="a"),
        "items": lambda: ledger.check("p", agent="a", items="node-fetch"),
    }
    for field, call in calls.items():
        with pytest.raises(InvalidInput, match=f"{field} is a list: give") as bad:
            call()
        assert bad.value.field == field
    with pytest.raises(InvalidInput, match="tags is a list"):
        ledger.check("p", agent="a", tags="deploy")
    limits = {
        "reason": ({"reason": "r" * 4097}, "the reason has 4,097 characters: give at most 4,096"),
        "prefer": ({"prefer": "p" * 513}, "what to prefer has 513 characters: give at most 512"),
        "forbid": ({"forbid": ["f" * 513]}, "the terms to forbid have at most 512 characters"),
        "items": ({"items": ["i" * 513]}, "the identifiers to forbid have at most 512 characters"),
    }
    for field, (given, why) in limits.items():
        with pytest.raises(InvalidInput, match=why) as long:
            ledger.add_constraint(
                **({"scope": "a", "forbid": ["x"], "reason": "r"} | given), by="o"
            )
        assert long.value.field == field
    for scope in (None, "", "  "):
        with pytest.raises(InvalidInput, match="needs a scope: the subject it covers, or tags"):
            ledger.add_constraint(scope=scope, forbid=["x"], reason="r", by="oncall")
    assert ledger.store.head() == head  # nothing written


def test_constraints_and_checks_keep_through_the_migration_that_adds_tags(
    location: str | Path, clock: ManualClock
) -> None:
    # A ledger of the version before: the same journal (a constraint or check that names
    # no tag is recorded as before), its constraints table as that version made it.
    with Ledger.init(location, clock=clock) as ledger:
        a = ledger.assert_one(subject="auth.jwt.algorithm", value="ES256", agent="research")
        ledger.approve(a.id, by="oncall")
        ledger.correct(a.id, by="oncall", reason="prod verifies RS256", value="RS256", forbid=True)
        ledger.add_constraint(scope="code", items=["node-fetch"], reason="leaks", by="oncall")
        assert not ledger.check("roll out ES256", ["auth"], agent="deploy-agent").ok
        before = ledger.constraints()
        checks = ledger.checks()
        version = ledger.store.schema_version
    set_back_before_tags(location)
    with Ledger.open(location, clock=clock) as ledger:
        assert ledger.store.migrated_from == version - 1
        assert ledger.constraints() == before
        assert ledger.checks() == checks
        assert ledger.rebuild().ok
        assert not ledger.check("roll out ES256", ["auth.jwt"], agent="deploy-agent").ok
        tagged = ledger.add_constraint(tags=["deploy"], forbid=["friday"], reason="r", by="o")
        [hit] = ledger.check("deploy on friday", agent="x", tags=["deploy"]).violations
        assert (hit.constraint.id, hit.constraint.tags) == (tagged.constraint.id, ["deploy"])
        assert ledger.verify().ok
        assert ledger.rebuild().ok


def test_a_ledger_of_the_previous_schema_is_upgraded_on_open(tmp_path: Path) -> None:
    import sqlite3

    from episteme.ledger.sqlite import store as sqlite_store
    from tests.backends import old_sqlite_ledger

    path = old_sqlite_ledger(tmp_path)
    # several processes (API workers) opening the old file at once: one upgrades it
    import subprocess
    import sys

    code = f"from episteme.ledger import Ledger; Ledger.open({str(tmp_path)!r}).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    with Ledger.open(tmp_path) as ledger:
        ledger.assert_one(subject="a.b", value=1, agent="x")
        secret, _ = ledger.issue_token("x", ["agent"], by="admin")
        assert ledger.authenticate(secret).name == "x"
        assert ledger.verify().ok
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == sqlite_store.SCHEMA_VERSION
    check.close()


def test_decisions_by_agent_and_window(ledger: Ledger, clock: ManualClock) -> None:
    ledger.assert_one(subject="svc.a", value=1, agent="docs", lifecycle="approved")
    read = ledger.query("svc.a", agent="deployer")
    first = ledger.decide("deployed v1", agent="deployer", query_ids=[read.query_id])
    clock.advance(TimeDelta(hours=2))
    second = ledger.decide("rolled back", agent="deployer", query_ids=[])
    ledger.decide("scaled", agent="autoscaler", query_ids=[])
    mine = ledger.decisions(agent="deployer")
    assert [d.id for d in mine] == [second.id, first.id]
    assert mine[1].query_ids == [read.query_id]
    recent = ledger.decisions(since=clock.now().subtract(hours=1))
    assert {d.agent for d in recent} == {"deployer", "autoscaler"}
    assert [d.id for d in ledger.decisions(agent="deployer", limit=1)] == [second.id]


# -- text no backend can store ---------------------------------------------------------

_NUL_WRITES: dict[str, Any] = {
    "value": lambda led, aid: led.assert_one(subject="svc.b", value={"k": ["a\x00"]}, agent="o"),
    "source": lambda led, aid: led.assert_one(subject="svc.b", value=1, agent="o", source="\x00"),
    "evidence": lambda led, aid: led.add(
        [
            AssertionInput(subject="svc.b", value=1, agent="o"),
            AssertionInput(subject="svc.c", value=2, agent="o", evidence="log\x00tail"),
        ]
    ),
    "context": lambda led, aid: led.query("svc", agent="o", context={"task": "t\x00"}),
    "text": lambda led, aid: led.query(None, agent="o", text="rs256\x00"),
    "action": lambda led, aid: led.decide("deploy\x00", agent="o", query_ids=[]),
    "reason": lambda led, aid: led.correct(aid, by="oncall", reason="wrong\x00"),
}


@pytest.mark.parametrize("field", sorted(_NUL_WRITES))
def test_a_nul_character_is_refused_on_every_backend_and_nothing_is_written(
    ledger: Ledger, field: str
) -> None:
    # PostgreSQL can store no NUL in text or jsonb; SQLite could, and a ledger holding one
    # could then never be copied there. Both refuse it, naming where it was.
    aid = fact(ledger, "RS256", subject="svc.a", lifecycle="approved")
    before = ledger.store.head()
    with pytest.raises(InvalidInput, match=r"NUL character \(\\u0000\)") as refused:
        _NUL_WRITES[field](ledger, aid)
    assert refused.value.field == field
    assert ledger.store.head() == before
    assert ledger.verify().ok
    # the same text without it is recorded
    ledger.assert_one(subject="svc.b", value="a\ufffd", agent="o", source="s\x01")


_SURROGATE_WRITES: dict[str, Any] = {
    "patterns": lambda led: led.add_constraint(
        scope="svc", reason="r", by="oncall", patterns=["ES\ud800"]
    ),
    "forbid": lambda led: led.add_constraint(scope="svc", reason="r", by="o", forbid=["\udfff"]),
    "prefer": lambda led: led.add_constraint(
        scope="svc", reason="r", by="o", forbid=["ES256"], prefer="RS\ud800"
    ),
    "plan": lambda led: led.check("deploy \ud800", ["svc"], agent="deploy"),
    "action": lambda led: led.decide("roll \ud800", agent="deploy", query_ids=[]),
}


@pytest.mark.parametrize("field", sorted(_SURROGATE_WRITES))
def test_a_lone_surrogate_is_refused_naming_its_field(ledger: Ledger, field: str) -> None:
    # RE2 raised UnicodeEncodeError on a pattern (a traceback in the CLI), and the journal
    # refused the rest as "not storable as JSON: str is not valid UTF-8", naming nothing.
    before = ledger.store.head()
    with pytest.raises(InvalidInput, match=r"valid Unicode \(a lone surrogate") as refused:
        _SURROGATE_WRITES[field](ledger)
    assert refused.value.field == field
    assert ledger.store.head() == before


@pytest.mark.parametrize("name", ["svc.a\n", "alice\n"])
def test_a_name_or_subject_ending_in_a_newline_is_refused(ledger: Ledger, name: str) -> None:
    # `$` matches before a final newline: the library took "alice\n" as a principal,
    # which `token list` showed as "alice", and "svc.a\n" as a subject (the API refused).
    subject, agent = (name, "alice") if "." in name else ("svc.a", name)
    with pytest.raises(InvalidInput) as refused:
        ledger.assert_one(subject=subject, value=1, agent=agent)
    assert refused.value.field == ("subject" if "." in name else "agent")
    if "." not in name:
        with pytest.raises(InvalidInput):
            ledger.issue_token(name, ["agent"], by="oncall")
    assert ledger.verify().events == 0


@pytest.mark.parametrize(
    ("read", "field"),
    [
        (lambda led: led.epoch("e1\x00"), "epoch"),
        (lambda led: led.supersede_epoch("e1\x00", by="lead", reason="r"), "epoch"),
        (lambda led: led.answer("svc", lens="strict\x00"), "lens"),
        (lambda led: led.query("svc", agent="o", lens="strict\x00"), "lens"),
    ],
)
def test_a_name_no_backend_can_look_up_is_refused_alike(
    ledger: Ledger, read: Any, field: str
) -> None:
    # PostgreSQL refuses a NUL character even in a lookup; both backends answer as SQLite
    # would for any other malformed name.
    fact(ledger, 1, subject="svc.a", epoch="e1")
    before = ledger.store.head()
    with pytest.raises(InvalidInput, match=f"invalid {field}") as refused:
        read(ledger)
    assert refused.value.field == field
    assert ledger.store.head() == before


def test_an_ambiguous_id_prefix_names_some_of_what_it_matches(ledger: Ledger) -> None:
    ledger.assert_one(subject="svc.a", value=1, agent="a")
    seen: dict[str, str] = {}
    for n in range(300):  # until two query ids share their first four characters
        qid = ledger.query("svc", agent=f"agent-{n}", lens="all").query_id
        if qid[:4] in seen:
            break
        seen[qid[:4]] = qid
    else:
        pytest.fail("no two of 300 query ids share a 4-character prefix")
    with pytest.raises(InvalidInput) as ambiguous:
        ledger.trace(qid[:4])
    message = ambiguous.value.message
    assert message.startswith(f"id prefix '{qid[:4]}' is ambiguous (")
    assert message.endswith("): give more characters")
    assert f"{seen[qid[:4]][:8]}…" in message
    assert f"{qid[:8]}…" in message


def test_a_correction_to_the_value_it_marks_incorrect_is_refused(ledger: Ledger) -> None:
    # it would reject the assertion, record the same value again, and forbid what it prefers
    wrong = ledger.assert_one(subject="auth.jwt.algorithm", value="RS256", agent="a")
    with pytest.raises(InvalidInput, match='already holds "RS256"') as same:
        ledger.correct(wrong.id, by="oncall", reason="same", value="RS256", forbid=True)
    assert same.value.field == "value"
    assert ledger.get(wrong.id).lifecycle is Lifecycle.PROPOSED
    assert ledger.constraints() == []
    flag = ledger.assert_one(subject="feature.flag", value=True, agent="a")
    fixed = ledger.correct(flag.id, by="oncall", reason="it is 1, not true", value=1)
    assert fixed.replacement is not None


def test_a_window_that_ends_before_it_starts_is_refused_everywhere(
    ledger: Ledger, clock: ManualClock
) -> None:
    now = clock.now()
    soon = now.add(hours=1)
    calls = {
        "audit": lambda: ledger.audit(since=soon, until=now),
        "decisions": lambda: ledger.decisions(since=soon, until=now),
        "checks": lambda: ledger.checks(since=soon, until=now),
        "diff": lambda: ledger.diff("svc", since=soon, until=now),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidInput, match="before its start: swap them") as inverted:
            call()
        assert inverted.value.field == "until", name
    with pytest.raises(InvalidInput, match="the window starts in the future") as ahead:
        ledger.diff("svc", since=soon)
    assert ahead.value.field == "since"


def test_an_answer_says_its_time_as_its_receipt_records_it(ledger: Ledger) -> None:
    at = Instant.parse_iso("2026-11-21T21:00:00.123456789Z")
    answer = ledger.query("svc", agent="oncall", lens="all", at=at)
    (record,) = ledger.audit(agent="oncall")
    assert answer.as_of == record.as_of == Instant.parse_iso("2026-11-21T21:00:00.123456Z")
    assert ledger.answer("svc", lens="all", at=at).as_of == answer.as_of


def test_trace_names_the_kind_of_id_it_was_given(ledger: Ledger) -> None:
    wrong = ledger.assert_one(subject="auth.jwt.algorithm", value="ES256", agent="a")
    fix = ledger.correct(wrong.id, by="oncall", reason="RS256", value="RS256", forbid=True)
    assert fix.constraint is not None
    for ref, kind in ((fix.correction.id, "a correction"), (fix.constraint.id, "a constraint")):
        with pytest.raises(InvalidInput) as refused:
            ledger.trace(ref[:8])
        assert refused.value.message == (
            f"trace follows a decision (d_…) or a query (q_…); {ref[:8]} is {kind} id"
        )
    with pytest.raises(InvalidInput, match="its history \\(blame\\) says where it came from"):
        ledger.trace(wrong.id[:8])


def test_an_id_of_the_wrong_kind_is_named(ledger: Ledger) -> None:
    made = ledger.add_constraint(scope="code", forbid=["eval"], reason="r", by="sre")
    cid = made.constraint.id
    assert ledger.constraint(cid[2:10]).constraint.id == cid  # without its letter
    q = ledger.query("code", agent="a")
    assert q.query_id is not None
    with pytest.raises(InvalidInput, match="is a query id: give a constraint id \\(c_"):
        ledger.constraint(q.query_id)
    with pytest.raises(NotFound, match="no constraint with id 'abcdef'"):
        ledger.constraint("abcdef")


def test_ids_resolve_by_prefix_whatever_their_case_or_letter(ledger: Ledger) -> None:
    # A token id's prefix was "no token or principal", an upper-case prefix "no assertion",
    # and a query's hex without its q_ "no assertion with id" for trace.
    a = ledger.assert_one(subject="svc.a", value=1, agent="bot")
    assert ledger.get(a.id[:8].upper()).id == a.id
    q = ledger.query("svc", agent="deploy")
    d = ledger.decide("deployed", agent="deploy", query_ids=[q.query_id or ""])
    assert ledger.trace((q.query_id or "")[2:10]).queries[0].id == q.query_id
    assert ledger.trace(d.id[2:10]).decision is not None
    with pytest.raises(NotFound, match="no decision or query with id"):
        ledger.trace("abcdef01")
    _, first = ledger.issue_token("deploy", ["agent"], by="admin")
    _, second = ledger.issue_token("deploy", ["agent"], by="admin")
    [revoked] = ledger.revoke_token(first.id[:8], by="admin", reason="rotated")
    assert revoked.id == first.id
    assert ledger.store.token(token_id=second.id).revoked_at is None  # type: ignore[union-attr]
    [revoked] = ledger.revoke_token(second.id[:8].upper(), by="admin", reason="rotated")
    assert revoked.id == second.id  # T_…: was "no token or principal"


def test_an_assertion_added_and_superseded_in_one_batch_lists_its_moves_in_order(
    ledger: Ledger, clock: ManualClock
) -> None:
    # Two approved values of one fact in one batch: the first is added, then superseded
    # by the second, in one event. A correction in the same microsecond closed its second
    # version at the time its first was closed, and the versions, ordered by their times
    # after the event, came in either order (the backends disagreed).
    first, _ = ledger.add(
        [
            AssertionInput(subject="svc.a.b", value=1, agent="alice", lifecycle="approved"),
            AssertionInput(subject="svc.a.b", value=2, agent="alice", lifecycle="approved"),
        ]
    )
    ledger.correct(first.id, by="oncall", reason="wrong", value=3)  # the clock stands still
    causes = [v.cause for v in ledger.blame(first.id)[0].history]
    assert causes == ["added", "superseded", "corrected"]
    since = clock.now().subtract(seconds=1)
    every = [(c.change, c.assertion_id) for c in ledger.diff("svc", since=since).changes]
    assert [c for c, a in every if a == first.id] == causes
    for limit in range(1, len(every) + 1):  # the newest `limit`, in the same order
        newest = ledger.diff("svc", since=since, limit=limit).changes
        assert [(c.change, c.assertion_id) for c in newest] == every[-limit:], limit
