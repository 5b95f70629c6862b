"""Tokens, refusals and pre-flight checks from the command line."""

from __future__ import annotations

from whenever import TimeDelta

from episteme.ledger import Ledger
from episteme.timeutil import ManualClock
from tests.cli.support import assert_error
from tests.conftest import Cli


def test_token_create_list_revoke(cli: Cli, clock: ManualClock) -> None:
    assert cli("init").code == 0
    made = cli("token", "create", "--name", "deploy-agent", "--role", "agent", "--json").json()
    secret = made["token"]
    assert secret.startswith("ep_")
    assert made["record"]["kind"] == "agent"
    r = cli("token", "create", "--name", "alice", "--role", "supervisor", "--expires", "in 1h")
    assert r.code == 0
    assert "shown once" in r.out
    listed = cli("token", "list", "--json").json()
    assert [(t["principal"], t["roles"]) for t in listed] == [
        ("deploy-agent", ["agent"]),
        ("alice", ["supervisor"]),
    ]
    assert secret not in cli("token", "list").out
    clock.advance(TimeDelta(hours=2))
    table = cli("token", "list").out
    assert "expired" in table
    assert "active" in table
    [deploy] = [line for line in table.splitlines() if "deploy-agent" in line]
    assert deploy.split()[-1] == "never"  # no expiry: said so, not "-"
    # the JSON says each one's state too, where a script had to work it out
    states = {t["principal"]: t["state"] for t in cli("token", "list", "--json").json()}
    assert states == {"deploy-agent": "active", "alice": "expired"}
    r = cli("token", "revoke", "deploy-agent", "--reason", "leaked in a CI log", "--json")
    assert r.json()[0]["revoked_by"].startswith("local:")
    assert "revoked" in cli("token", "list").out


def test_token_refusals(cli: Cli) -> None:
    assert cli("init").code == 0
    assert_error(cli("token", "create", "--name", "x", "--role", "root"), 2, "unknown role 'root'")
    assert_error(cli("token", "create", "--name", "t_x", "--role", "agent"), 2, "token ids")
    assert_error(
        cli("token", "create", "--name", "x", "--role", "agent", "--expires", "1h ago"), 2, "past"
    )
    assert_error(cli("token", "revoke", "nobody", "--reason", "x"), 2, "no token or principal")
    cli("token", "create", "--name", "a", "--role", "agent")
    cli("token", "revoke", "a", "--reason", "x")
    assert_error(cli("token", "revoke", "a", "--reason", "again"), 2, "already revoked")


def test_a_token_is_revoked_by_its_secret_without_repeating_it(cli: Cli) -> None:
    """A leaked secret is what its finder holds: it revokes the token, and is never shown."""
    assert cli("init").code == 0
    made = cli("token", "create", "--name", "ci-bot", "--role", "agent", "--json").json()
    secret, tid = made["token"], made["record"]["id"]
    r = cli("token", "revoke", secret, "--reason", "found in a CI log", "--json")
    assert r.code == 0
    assert [t["id"] for t in r.json()] == [tid]
    assert secret not in r.out + r.err
    again = cli("token", "revoke", secret, "--reason", "again")
    assert_error(again, 2, f"token {tid} of ci-bot is already revoked")
    unknown = cli("token", "revoke", secret + "x", "--reason", "x")
    assert_error(unknown, 2, "no token has the secret given: see `episteme token list`")
    assert secret not in again.err + unknown.err
    # a principal may be named like a secret
    cli("token", "create", "--name", "ep_bot", "--role", "agent")
    assert cli("token", "revoke", "ep_bot", "--reason", "x").code == 0
    # names that would be read as something else: a token id (in either case), or the
    # operating-system user a local command records (an HTTP caller passing as one)
    past = cli("token", "create", "--name", "soon", "--role", "agent", "--expires", "1h")
    assert_error(past, 2, "the expiry is in the past", "write 'in 30d', not '30d'")
    for name, words in (
        ("T_bot", "t_… names token ids"),
        ("local:root", "local:… names the operating-system users"),
    ):
        assert_error(cli("token", "create", "--name", name, "--role", "agent"), 2, words)


def test_denials_and_check(cli: Cli, home: object) -> None:
    assert cli("init").code == 0
    with Ledger.open(str(home)) as ledger:
        a = ledger.assert_one(subject="auth.jwt.algorithm", value="ES256", agent="research")
        ledger.correct(a.id, by="oncall", reason="prod verifies RS256", value="RS256", forbid=True)
        ledger.deny(
            "deploy-agent", "t_1", "review", "POST /v1/assertions/x/approve", "needs supervisor"
        )
    rows = cli("denials", "--json").json()
    assert [(d["principal"], d["operation"]) for d in rows] == [("deploy-agent", "review")]
    assert "needs supervisor" in cli("denials").out
    r = cli("check", "--plan", "set auth.jwt.algorithm to ES256", "-s", "auth.jwt.algorithm")
    assert r.code == 3
    assert "use 'RS256' instead" in r.out
    r = cli("check", "--plan", "rotate RS256 keys", "--json")
    assert r.code == 0
    assert r.json()["violations"] == []


def test_future_times_for_expiries(clock: ManualClock) -> None:
    from episteme.timeutil import parse_time

    now = clock.now()
    assert parse_time("in 30d", now) == now.add(hours=24 * 30)
    assert parse_time("in 1h 30m", now) == now.add(minutes=90)
    assert parse_time("30d ago", now) == now.subtract(hours=24 * 30)


def test_the_first_admin_token_is_made_once(ledger: Ledger) -> None:
    made = ledger.bootstrap_admin(by="local:root")
    assert made is not None
    assert made[1].roles == ["admin"]
    assert ledger.bootstrap_admin(by="local:root") is None
    assert len(ledger.tokens()) == 1
