"""A throwaway PostgreSQL cluster for tests, run from the Debian server binaries.

`Cluster.create()` runs initdb into a fresh directory under /tmp, `start()` brings
the server up on a loopback port, `create_database()` hands out a fresh database URL
and `destroy()` stops the server and removes everything. The cluster is tuned for
speed, not durability: fsync and full-page writes are off (commits still wait for
the WAL to be written, as the store's deferred flush expects).

initdb and postgres refuse to run as root, and CI runs the tests as root; there the
binaries run as the `postgres` system user (which the Debian package creates) and the
cluster directory belongs to that user.

Errors:

    PostgresError              a cluster command failed (the message quotes its output)
    └── PostgresNotInstalled   no server binaries: install the Debian `postgresql` package
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from psycopg import sql

SUPERUSER = "postgres"
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
# /tmp rather than pytest's tmp_path: the postgres user must traverse every parent
# (pytest's root-owned 0700 directories stop it), and a short path keeps the Unix
# socket under the 107-byte limit.
_TMP = "/tmp"
_LOG_TAIL_LINES = 30
_PORT_ATTEMPTS = 3


class PostgresError(RuntimeError):
    """A cluster command failed; the message carries its output and the log tail."""


class PostgresNotInstalled(PostgresError):
    """The PostgreSQL server binaries (initdb, pg_ctl, postgres) are not on this machine."""


def find_bindir() -> Path:
    """Return the directory holding initdb and pg_ctl, the highest Debian version first.

    Raises:
        PostgresNotInstalled: no directory with the server binaries was found.
    """
    candidates: list[Path] = []
    if _DEBIAN_ROOT.is_dir():
        versions = [p for p in _DEBIAN_ROOT.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name)]
        versions.sort(key=lambda p: tuple(int(part) for part in p.name.split(".")), reverse=True)
        candidates += [p / "bin" for p in versions]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise PostgresNotInstalled(
        "PostgreSQL server binaries not found: install the Debian `postgresql` package "
        "(apt-get install --no-install-recommends postgresql, or run ./scripts/test)"
    )


def _server_user() -> pwd.struct_passwd:
    """The `postgres` account that runs the server when the tests run as root."""
    try:
        return pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresNotInstalled(
            f"no `{SUPERUSER}` system user to run the server as (the tests run as root): "
            "install the Debian `postgresql` package, which creates it"
        ) from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _quote_conf(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Cluster:
    """One PostgreSQL server with its own data directory, port and superuser password."""

    def __init__(self, *, bindir: Path, base: Path, port: int | None, password: str) -> None:
        self.bindir = bindir
        self.base = base
        self.data_dir = base / "data"
        self.log_path = base / "postgres.log"
        self.port = port or _free_port()
        self.password = password
        self._as_postgres = os.geteuid() == 0
        # a port we picked may be taken before the server binds it; then we pick again
        self._port_is_ours = port is None

    def __repr__(self) -> str:
        # never the password: a repr ends up in test reports
        return f"Cluster(base={str(self.base)!r}, port={self.port}, running={self.running})"

    @classmethod
    def create(cls, port: int | None = None) -> Cluster:
        """Run initdb into a fresh directory and write the test settings; not started yet.

        Args:
            port: the TCP port to listen on (127.0.0.1); a free one when None.

        Raises:
            PostgresNotInstalled: the server binaries are missing.
            PostgresError: initdb failed.
        """
        bindir = find_bindir()
        owner = _server_user() if os.geteuid() == 0 else None
        base = Path(tempfile.mkdtemp(prefix="episteme-pg-", dir=_TMP))
        cluster = cls(bindir=bindir, base=base, port=port, password=secrets.token_hex(16))
        try:
            if owner is not None:
                os.chown(base, owner.pw_uid, owner.pw_gid)
            cluster._initdb(owner)
            cluster._write_settings()
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        return cluster

    # -- server lifecycle -------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the postmaster named in postmaster.pid is alive."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by someone else
            return True
        return True

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections.

        Raises:
            PostgresError: it did not come up in time; the message has the log tail.
        """
        seconds = str(max(1, round(timeout)))
        args = ["-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", seconds, "start"]
        for attempt in range(_PORT_ATTEMPTS):
            logged = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                self._pg_ctl(*args, timeout=timeout + 10, what="start")
                return
            except PostgresError:
                if not self._port_is_ours or attempt == _PORT_ATTEMPTS - 1:
                    raise
                with self.log_path.open("rb") as log:
                    log.seek(logged)
                    if b"Address already in use" not in log.read():
                        raise
                self.port = _free_port()
                self._write_settings({"port": str(self.port)})

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop the server (`smart`, `fast` or `immediate`); nothing happens if it is down."""
        if not self.running:
            return
        seconds = str(max(1, round(timeout)))
        args = ["-D", str(self.data_dir), "-m", mode, "-w", "-t", seconds, "stop"]
        self._pg_ctl(*args, timeout=timeout + 10, what="stop")

    def kill(self) -> None:
        """Stop the way a crash does: no shutdown checkpoint, recovery at the next start."""
        self.stop(mode="immediate")

    def destroy(self) -> None:
        """Stop the server if it runs and remove the cluster directory."""
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- databases ----------------------------------------------------------------------

    def url(self, dbname: str = "postgres", password: str | None = None) -> str:
        """The superuser URL over TCP, with the real password unless another is given."""
        secret = self.password if password is None else password
        return (
            f"postgresql://{SUPERUSER}:{quote(secret, safe='')}@127.0.0.1:{self.port}/"
            f"{quote(dbname, safe='')}"
        )

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """Create a database (named `t_<hex>` when no name is given) and return its URL.

        A template must have no open connections while it is copied.
        """
        from psycopg import sql

        name = name or f"t_{secrets.token_hex(8)}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self._admin(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any sessions still connected to it."""
        from psycopg import sql

        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    # -- internals ----------------------------------------------------------------------

    def _admin(self, statement: sql.Composed) -> None:
        # imported here so that loading this module (conftest does) needs no psycopg
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)

    def _initdb(self, owner: pwd.struct_passwd | None) -> None:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if owner is not None:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        common = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-N",
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
        ]
        try:
            # C.UTF-8 sorts like C but knows what a letter is; some systems lack it
            first = self._run([*common, "--locale=C.UTF-8"], timeout=120)
            if first.returncode != 0:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                second = self._run([*common, "--no-locale"], timeout=120)
                if second.returncode != 0:
                    raise PostgresError(
                        f"initdb failed with C.UTF-8:\n{first.stdout}\n"
                        f"and with --no-locale:\n{second.stdout}"
                    )
        finally:
            pwfile.unlink(missing_ok=True)

    def _write_settings(self, settings: dict[str, str] | None = None) -> None:
        settings = settings or {
            "listen_addresses": _quote_conf("127.0.0.1"),
            "port": str(self.port),
            "unix_socket_directories": _quote_conf(str(self.base)),
            "fsync": "off",
            "full_page_writes": "off",
            # on, as in production, so the store's deferred flush (a durable commit after
            # each chain commit) runs in every test; fsync off keeps it cheap
            "synchronous_commit": "on",
            "max_connections": "300",
            "shared_buffers": _quote_conf("64MB"),
        }
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        # later lines win, so appending overrides initdb's defaults and earlier ports
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# test cluster settings\n" + lines)

    def _pg_ctl(self, *args: str, timeout: float, what: str) -> None:
        try:
            done = self._run([str(self.bindir / "pg_ctl"), *args], timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise PostgresError(
                f"pg_ctl {what} gave no answer in {timeout:.0f} s\n{self._log_tail()}"
            ) from exc
        if done.returncode != 0:
            raise PostgresError(
                f"pg_ctl {what} failed (exit {done.returncode}): {done.stdout.strip()}\n"
                f"{self._log_tail()}"
            )

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        if self._as_postgres:
            argv = ["runuser", "-u", SUPERUSER, "--", *argv]
        # PG* variables from the caller's shell must not redirect the tools
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return subprocess.run(
            argv,
            # the postgres user may not be able to enter the caller's directory
            cwd=self.base,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"(no server log at {self.log_path})"
        tail = "\n".join(lines[-_LOG_TAIL_LINES:])
        return f"last lines of {self.log_path}:\n{tail}"


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A started cluster, destroyed afterwards; a machine without the server fails the
    test with one line (a missing PostgreSQL is a broken test machine, never a skip)."""
    import pytest

    try:
        cluster = Cluster.create()
    except PostgresNotInstalled as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
