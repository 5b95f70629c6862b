"""Real server processes for integration tests: `episteme serve` on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def served(
    home: Path | str, *args: str, timeout: float = 30.0
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run `episteme serve --home HOME` until the block ends; yield its URL and process.

    HOME is a ledger directory or a database URL (``postgresql://...``).
    """
    with served_together(home, 1, *args, timeout=timeout) as [one]:
        yield one


@contextmanager
def served_together(
    home: Path | str, count: int, *args: str, timeout: float = 30.0
) -> Iterator[list[tuple[str, subprocess.Popen[str]]]]:
    """Start `count` `episteme serve` processes on one ledger at once; yield them when all
    are healthy, and stop them (those still running) when the block ends."""
    servers: list[tuple[str, subprocess.Popen[str]]] = []
    try:
        for _ in range(count):
            servers.append(spawn(home, args))
        deadline = time.monotonic() + timeout
        for url, proc in servers:
            _wait_healthy(url, proc, deadline)
        yield servers
    finally:
        for _url, proc in servers:
            stop(proc)


def spawn(home: Path | str, args: tuple[str, ...]) -> tuple[str, subprocess.Popen[str]]:
    """Start `episteme serve --home HOME ARGS` on a free port, in its own process group."""
    port = free_port()
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "episteme",
            "serve",
            "--home",
            str(home),
            "--port",
            str(port),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    return f"http://127.0.0.1:{port}", proc


def _wait_healthy(url: str, proc: subprocess.Popen[str], deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"episteme serve exited with {proc.returncode}: {out}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("episteme serve did not become healthy")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers; reap it."""
    try:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        if proc.stdout:
            proc.stdout.close()
