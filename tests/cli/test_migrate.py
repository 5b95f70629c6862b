"""`episteme migrate`: a ledger of an older schema is brought up to date, once."""

from __future__ import annotations

from pathlib import Path

from episteme.ledger.postgres import store as postgres_store
from episteme.ledger.sqlite import store as sqlite_store
from tests.backends import old_sqlite_ledger
from tests.conftest import Cli


def test_migrate_upgrades_an_old_ledger_then_finds_nothing_to_do(cli: Cli, home: Path) -> None:
    old_sqlite_ledger(home)
    first = cli("migrate", "--json")
    assert first.code == 0, first.err
    report = first.json()
    assert report["migrated_from"] == 1
    assert report["schema_version"] == sqlite_store.SCHEMA_VERSION
    again = cli("migrate")
    assert again.code == 0, again.err
    assert f"is at schema version {sqlite_store.SCHEMA_VERSION}" in again.out


def test_migrate_on_postgresql_reports_the_version(cli: Cli, pg_url: str) -> None:
    assert cli("init", "--db", pg_url, home_arg=False).code == 0
    r = cli("migrate", "--db", pg_url, "--json", home_arg=False)
    assert r.code == 0, r.err
    assert r.json()["migrated_from"] is None
    assert "postgresql://postgres@" in r.json()["db"]
    assert ":" + pg_url.split(":")[2].split("@")[0] + "@" not in r.out  # no password


def test_migrate_without_a_ledger_says_how_to_make_one(cli: Cli) -> None:
    r = cli("migrate")
    assert r.code != 0
    assert r.err.count("\n") == 1
    assert "episteme init" in r.err


def _role(pg_url: str, role: str, *grants: str) -> str:
    """The URL of a new login role (password a canary) on `pg_url`'s database."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'not-a-secret-canary'")
        for grant in grants:
            admin.execute(grant.format(role=role))
    user_url = pg_url.replace("postgres:", f"{role}:not-a-secret-canary@", 1)
    return user_url.split("@", 1)[0] + "@" + pg_url.split("@", 1)[1]


def test_a_role_that_may_not_create_tables_gets_one_line(cli: Cli, pg_url: str) -> None:
    user_url = _role(pg_url, "reader_only")
    r = cli("init", "--db", user_url, home_arg=False)
    assert r.code == 1
    assert r.err.count("\n") == 1, r.err
    assert "refused to set up the ledger" in r.err
    assert "permission denied" in r.err
    assert "not-a-secret-canary" not in r.err + r.out


def test_an_older_ledger_a_role_may_not_migrate_says_to_migrate(cli: Cli, pg_url: str) -> None:
    # It said only "refused to set up the ledger: permission denied for schema public".
    import psycopg

    assert cli("init", "--db", pg_url, home_arg=False).code == 0
    with psycopg.connect(pg_url, autocommit=True) as admin:  # as version 2 left it
        admin.execute("DROP TABLE incidents, diagnosis_events, diagnosis_sessions")
        admin.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    tables = "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
    user_url = _role(pg_url, "app_only", tables)
    r = cli("verify", "--db", user_url, home_arg=False)
    assert r.code == 1
    assert r.err.count("\n") == 1, r.err
    assert f"schema version 2, and this episteme needs {postgres_store.SCHEMA_VERSION}" in r.err
    assert "run `episteme migrate` as a role that may create tables" in r.err
    assert "not-a-secret-canary" not in r.err + r.out
    migrated = cli("migrate", "--db", pg_url, "--json", home_arg=False)  # as the owner
    assert migrated.json()["migrated_from"] == 2
