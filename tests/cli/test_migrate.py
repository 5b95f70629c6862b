"""`episteme migrate`: a ledger of an older schema is brought up to date, once."""

from __future__ import annotations

import hashlib
import socket
from importlib import resources
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

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


def test_the_database_is_named_as_libpqs_variables_complete_it(
    cli: Cli, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With PGHOST, PGPORT and PGUSER set and `--db postgresql:///e4`, migrate said
    # "postgresql://localhost:5432/e4", and an unreachable server's error named 5432 too.
    parts = conninfo_to_dict(pg_url)
    assert cli("init", "--db", pg_url, home_arg=False).code == 0
    for key, variable in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER")):
        monkeypatch.setenv(variable, str(parts[key]))
    monkeypatch.setenv("PGPASSWORD", str(parts["password"]))
    r = cli("migrate", "--db", f"postgresql:///{parts['dbname']}", home_arg=False)
    assert r.code == 0, r.err
    shown = f"postgresql://postgres@127.0.0.1:{parts['port']}/{parts['dbname']}"
    assert r.out == f"{shown} is at schema version {postgres_store.SCHEMA_VERSION}\n"
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PGPORT", str(port))
    r = cli("migrate", "--db", "postgresql:///nodb", home_arg=False)
    assert r.code == 1
    assert f"PostgreSQL at postgresql://postgres@127.0.0.1:{port}/nodb is unavailable" in r.err
    assert str(parts["password"]) not in r.out + r.err


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


def test_a_reader_without_grants_is_told_what_to_grant(cli: Cli, pg_url: str) -> None:
    # verify only reads, and it said "refused to set up the ledger: permission denied
    # for table meta".
    import psycopg

    assert cli("init", "--db", pg_url, home_arg=False).code == 0
    user_url = _role(pg_url, "no_grants")
    r = cli("verify", "--db", user_url, home_arg=False)
    assert r.code == 1
    assert r.err.count("\n") == 1, r.err
    assert r.err.startswith("error: cannot read the ledger at postgresql://no_grants@"), r.err
    assert "permission denied for table meta: grant the role SELECT" in r.err
    assert "set up" not in r.err
    grant = r.err.split("(", 1)[1].split(";", 1)[0]
    assert grant == "GRANT SELECT ON ALL TABLES IN SCHEMA public TO no_grants"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(grant)
    assert cli("verify", "--db", user_url, home_arg=False).out.startswith("chain ok: 0 events")


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
    # verify reads the journal alone, as it is: it needs no migration, and makes none
    assert cli("verify", "--db", user_url, home_arg=False).out.startswith("chain ok: 0 events")
    r = cli("assert", "a.b", "1", "--agent", "x", "--db", user_url, home_arg=False)
    assert r.code == 1
    assert r.err.count("\n") == 1, r.err
    assert f"schema version 2, and this episteme needs {postgres_store.SCHEMA_VERSION}" in r.err
    assert "run `episteme migrate` as a role that may create tables" in r.err
    assert "not-a-secret-canary" not in r.err + r.out
    migrated = cli("migrate", "--db", pg_url, "--json", home_arg=False)  # as the owner
    assert migrated.json()["migrated_from"] == 2


def test_default_privileges_give_the_serving_role_the_tables_a_migration_adds(
    cli: Cli, pg_url: str
) -> None:
    # docs/deploy.md: GRANT ... ON ALL TABLES covers the tables there are; version 7's
    # constraint_tags, made by the owner's migration, was refused to the serving role.
    from tests.backends import set_back_before_tags

    assert cli("init", "--db", pg_url, home_arg=False).code == 0
    set_back_before_tags(pg_url)
    grants = "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
    sequences = "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"
    tag = ("constraint", "add", "--tag", "deploy", "--forbid", "friday", "--reason", "r")
    app_url = _role(pg_url, "app_later", grants, sequences)
    migrated = cli("migrate", "--db", pg_url, "--json", home_arg=False)  # as the owner
    assert migrated.json()["migrated_from"] == postgres_store.SCHEMA_VERSION - 1
    refused = cli(*tag, "--db", app_url, home_arg=False)
    assert refused.code == 1
    assert "permission denied for table constraint_tags" in refused.err
    assert refused.err.count("\n") == 1, refused.err
    # the same with default privileges set by the migrating role beforehand
    defaults = (
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
        " GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
    )
    set_back_before_tags(pg_url)
    app_url = _role(pg_url, "app_ahead", grants, sequences, defaults)
    assert cli("migrate", "--db", pg_url, home_arg=False).code == 0
    made = cli(*tag, "--db", app_url, "--json", home_arg=False)
    assert made.code == 0, made.err
    assert made.json()["constraint"]["tags"] == ["deploy"]


def test_an_older_ledger_on_a_read_only_database_says_to_migrate_the_primary(
    cli: Cli, pg_url: str
) -> None:
    # A standby answers every write "read-only transaction": the advice was to migrate
    # "as a role that may create tables", which no role can do there.
    import psycopg

    assert cli("init", "--db", pg_url, home_arg=False).code == 0
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
        name = admin.execute("SELECT current_database()").fetchone()
        assert name is not None
        admin.execute(f'ALTER DATABASE "{name[0]}" SET default_transaction_read_only = on')
    assert cli("verify", "--db", pg_url, home_arg=False).out.startswith("chain ok: 0 events")
    r = cli("assert", "a.b", "1", "--agent", "x", "--db", pg_url, home_arg=False)
    assert r.code == 1
    assert r.err.count("\n") == 1, r.err
    assert "read-only transaction: run `episteme migrate` on the primary" in r.err


SHIPPED = {  # the first 16 hex digits of each migration's SHA-256
    "sqlite/0001_init.sql": "7f5796c0d8c3b84e",
    "sqlite/0002_access.sql": "5d7d06972150170d",
    "sqlite/0003_jobs.sql": "60d7ce63a57291cd",
    "sqlite/0004_gardener.sql": "0f85e703740c4ffe",
    "sqlite/0005_diagnosis.sql": "30e3eb03348fee06",
    "sqlite/0006_search_text.sql": "816ba65baebaba8a",
    "sqlite/0007_list_order.sql": "e592520809cdf0a1",
    "sqlite/0008_constraint_tags.sql": "593d3e07962ec244",
    "postgres/0001_init.sql": "218d26316bd72f6e",
    "postgres/0002_gardener.sql": "02cf9945fddd5223",
    "postgres/0003_diagnosis.sql": "e198f36d225b63db",
    "postgres/0004_fold_accents.sql": "a125cbc7c3a3e0b7",
    "postgres/0005_text.sql": "1797a63d92c4d267",
    "postgres/0006_list_order.sql": "e592520809cdf0a1",
    "postgres/0007_constraint_tags.sql": "771454589cfba998",
}


def test_a_migration_once_shipped_is_never_edited() -> None:
    # A ledger at version N was made by the migrations up to N as they were then. A table
    # added to 0002 (PostgreSQL) and 0004 (SQLite) after ledgers at those versions existed
    # was never made in them: `migrate` found nothing to do, and the gardener failed at
    # the first correction ("no such table: trust_totals"). Change the schema in a new
    # file, and add its digest here.
    found = {}
    for package, store in (("sqlite", sqlite_store), ("postgres", postgres_store)):
        for name in store.MIGRATIONS:
            text = (resources.files(f"episteme.ledger.{package}") / name).read_bytes()
            found[f"{package}/{name}"] = hashlib.sha256(text).hexdigest()[:16]
    assert found == SHIPPED
