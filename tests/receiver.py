"""A local HTTP receiver for webhooks (the `receiver` fixture of tests/conftest.py)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server that records every POST; it can fail or stall when told to."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    fail_next: int = 0
    """Answer 500 to this many requests, then 200."""
    stall_s: float = 0.0
    """Wait this long before answering (until released at teardown)."""
    released: threading.Event = field(default_factory=threading.Event)

    def answer(self, request: Request) -> int:
        self.requests.append(request)
        if self.stall_s:
            self.released.wait(self.stall_s)
        if self.fail_next:
            self.fail_next -= 1
            return 500
        return 200


@contextlib.contextmanager
def running_receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            status = rec.answer(Request(self.path, dict(self.headers.items()), body))
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield rec
    finally:
        rec.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
