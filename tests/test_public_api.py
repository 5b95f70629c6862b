"""The public API is pinned: a change to it is a decision, made here on purpose."""

from __future__ import annotations

import episteme
import episteme.errors
import episteme.ledger


def test_top_level_names() -> None:
    assert sorted(episteme.__all__) == ["EpistemeError", "Ledger", "__version__"]


def test_ledger_names() -> None:
    assert set(episteme.ledger.__all__) == {
        "BUILTIN",
        "Answer",
        "Assertion",
        "AssertionInput",
        "Hidden",
        "Kind",
        "Ledger",
        "LensSpec",
        "Lifecycle",
    }


def test_ledger_methods() -> None:
    public = sorted(n for n in dir(episteme.ledger.Ledger) if not n.startswith("_"))
    assert public == [
        "add", "add_constraint", "answer", "approve", "assert_one", "audit", "authenticate",
        "blame", "bootstrap_admin", "check", "checks",
        "close", "conflicts", "constraint", "constraints", "correct", "corrections", "decide",
        "decisions",
        "define_lens",
        "denials", "deny", "deprecate", "diff",
        "epoch", "export", "get", "impact", "import_events", "init", "issue_token", "lens_spec",
        "lenses", "notifications", "open", "query", "rebuild", "recheck", "reject",
        "remove_webhook", "retire_constraint", "revoke_token", "served", "set_webhook",
        "supersede_epoch", "tokens", "trace", "trust_scores", "verify", "webhooks",
    ]  # fmt: skip


def test_exception_tree() -> None:
    e = episteme.errors
    for user in (
        e.InvalidInput,
        e.TooLarge,
        e.Unsupported,
        e.Unauthenticated,
        e.Forbidden,
        e.NotFound,
        e.Conflict,
    ):
        assert issubclass(user, e.UserError)
        assert 400 <= user.status < 500
        assert user.exit_code == 2
    for world in (e.StoreUnavailable, e.IntegrityError):
        assert issubclass(world, e.WorldError)
        assert world.status >= 500
        assert world.exit_code == 1
