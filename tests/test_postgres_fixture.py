"""The throwaway PostgreSQL cluster: fresh databases, real authentication, restarts."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.postgres import Cluster, running_cluster


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of its own, for tests that stop and start the server."""
    with running_cluster() as cluster:
        yield cluster


def _refused(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError:
        return True
    return False


def test_a_fresh_database_is_empty_and_answers_queries(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        encoding = conn.execute("SHOW server_encoding").fetchone()
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
    assert name == (pg_url.rsplit("/", 1)[1],)
    assert name[0].startswith("t_")
    assert encoding == ("UTF8",)


def test_each_test_gets_its_own_database(pg_cluster: Cluster, pg_url: str) -> None:
    other = pg_cluster.create_database()
    try:
        with psycopg.connect(pg_url) as conn:
            conn.execute("CREATE TABLE only_here (id int)")
        with psycopg.connect(other) as conn:
            found = conn.execute("SELECT to_regclass('only_here') IS NOT NULL").fetchone()
        assert found == (False,)
    finally:
        pg_cluster.drop_database(other.rsplit("/", 1)[1])


def test_a_wrong_password_is_refused(pg_cluster: Cluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_cluster.url(password="not-the-password"), connect_timeout=5)


def test_a_stopped_cluster_refuses_connections_until_started(own_cluster: Cluster) -> None:
    with psycopg.connect(own_cluster.url()) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('before the stop')")

    own_cluster.stop()
    assert not own_cluster.running
    assert _refused(own_cluster.url())

    own_cluster.start()
    assert own_cluster.running
    with psycopg.connect(own_cluster.url()) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("before the stop",)]


def test_a_crashed_cluster_recovers_at_the_next_start(own_cluster: Cluster) -> None:
    own_cluster.kill()
    assert not own_cluster.running
    assert _refused(own_cluster.url())

    own_cluster.start()
    with psycopg.connect(own_cluster.url()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_database_made_from_a_template_has_its_tables(pg_cluster: Cluster) -> None:
    template_url = pg_cluster.create_database()
    template = template_url.rsplit("/", 1)[1]
    try:
        with psycopg.connect(template_url) as conn:
            conn.execute("CREATE TABLE facts (subject text PRIMARY KEY, value text)")
            conn.execute("INSERT INTO facts VALUES ('auth.alg', 'ES256')")
        copy_url = pg_cluster.create_database(template=template)
        try:
            with psycopg.connect(copy_url) as conn:
                rows = conn.execute("SELECT subject, value FROM facts").fetchall()
            assert rows == [("auth.alg", "ES256")]
        finally:
            pg_cluster.drop_database(copy_url.rsplit("/", 1)[1])
    finally:
        pg_cluster.drop_database(template)


def test_the_cluster_never_shows_its_password(pg_cluster: Cluster) -> None:
    assert pg_cluster.password not in repr(pg_cluster)
