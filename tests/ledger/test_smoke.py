from episteme.ledger import Ledger, Lifecycle
from tests.conftest import Cli


def test_es256_story_in_the_library(ledger: Ledger) -> None:
    rs = ledger.assert_one(
        subject="auth.jwt.algorithm", value="RS256", agent="platform", lifecycle="approved"
    )
    es = ledger.assert_one(
        subject="auth.jwt.algorithm", value="ES256", agent="research", confidence=0.87
    )
    latest = ledger.query("auth.jwt", agent="orchestrator", lens="latest")
    assert [i.assertion.id for i in latest.items] == [es.id]
    approved = ledger.query("auth.jwt", agent="deploy")
    assert [i.assertion.id for i in approved.items] == [rs.id]
    assert approved.hidden.by_lifecycle == {Lifecycle.PROPOSED: 1}
    assert approved.summary == "1 proposed assertion hidden"


def test_cli_init_and_query(cli: Cli) -> None:
    assert cli("init").code == 0
    r = cli("assert", "a.b", "1", "--agent", "x", "--lifecycle", "approved", "--json")
    assert r.code == 0, r.err
    assert r.json()[0]["value"] == 1
    q = cli("query", "a", "--agent", "x", "--json")
    assert q.json()["items"][0]["assertion"]["value"] == 1
    bad = cli("assert", "a..b", "1", "--agent", "x")
    assert bad.code == 2
    assert bad.err.startswith("error: invalid assertion: subject 'a..b'")
