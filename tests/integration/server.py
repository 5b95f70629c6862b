"""A real HTTP server for integration tests: uvicorn in a daemon thread, on a free port.

Clients under test talk to it over TCP exactly as they would in production; the app
(and the ledger behind it) stay in this process, so a test can still look at them.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

START_TIMEOUT = 10.0


@contextlib.contextmanager
def live_server(app: ASGIApp) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 while the block runs; yields its base URL.

    The socket is bound here, before the thread starts, so the port is ours and known
    at once: no race between finding a free port and binding it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", ws="none", http="h11"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn:{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server on port {port} did not start")
            time.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)
        sock.close()
