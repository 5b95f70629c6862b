"""The HTTP figures: what serving the ledger adds, measured against the library itself.

Each figure stands beside a floor measured in the same run, on the same ledger:

- **point query over HTTP**: `POST /v1/query` (lens ``approved``, bearer token), one at a
  time on one keep-alive connection to ``episteme serve``, timed over many runs after a
  warm-up (p50, p99, max). Floor: the same audited query through `Ledger.query` in this
  process. The two alternate in blocks over the same subjects, so drift (the page cache,
  the growing journal, checkpoints) falls on both alike, and the ratio is what HTTP,
  authentication and JSON add.
- **audited queries per second** with ``episteme serve --workers N``: many keep-alive
  connections for a fixed time, counted in 1-second windows (the median window, and the
  worst). Floor: `Ledger.query` in N processes of T threads each, counted the same way
  (threads, like the server's thread pool, whose concurrent writes commit in groups).

The load generator is a few lines of asyncio speaking HTTP/1.1 over keep-alive
connections with requests encoded up front: it parses the status line and Content-Length
and reads the body, nothing more. Not httpx or another general client: on a 2-core machine
the client shares the cores with the server, and a general client spends as much CPU per
request as the server or more (httpx's AsyncClient: 3.2 ms against the server's 2.1 ms), so
the figure would measure the client. The report gives the CPU the client and the server
used, so a reader sees how much of the machine the measurement itself took.

Every query is audited, so the run appends to the ledger it measures; it also issues one
``agent`` token for the load. Before each server starts, the gardener is brought up to
date with the journal, as a running server's is: otherwise the server's gardener would
spend the measurement replaying the generated history (30 s of a core at 100 k events).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from episteme.benchmark.floor import is_postgres, open_floor
from episteme.benchmark.run import Figure, Report, _machine, _ms
from episteme.errors import WorldError
from episteme.ledger.core import Ledger
from episteme.ledger.gardener import Gardener
from episteme.ledger.sql.base import SQLStore
from episteme.ledger.sql.projector import Conn

AGENT = "bench-http"
POINT = "point query over HTTP (approved, audited)"
POINT_ONE = "point query over HTTP, answers of at most one item (approved, audited)"
BUDGET_MS = {POINT: 5.0}
BUDGET_RATE = {"audited queries/s over HTTP, 2 workers": 1_500.0}
_BLOCK = 50  # runs per turn when the HTTP and library timings alternate


@dataclass
class Load:
    """What one throughput run saw: completions per 1-second window and what it cost."""

    windows: list[int]
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    client_cpu: float | None = None  # CPU seconds of the load generator
    server_cpu: float | None = None  # CPU seconds of the server's processes

    def rates(self) -> tuple[float, float, float]:
        """Median window, 1st-percentile window and slowest window, in requests per second."""
        s = sorted(self.windows)
        low = s[round(0.01 * (len(s) - 1))]
        return float(statistics.median(s)), float(low), float(s[0])


# -- the client ------------------------------------------------------------------------


def _request(port: int, secret: str, subject: str) -> bytes:
    body = orjson.dumps({"subject": subject, "lens": "approved"})
    head = (
        f"POST /v1/query HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _head(head: bytes) -> tuple[int, int]:
    """Status and Content-Length of a response head (without its blank line)."""
    status = int(head[9:12])
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return status, int(value)
    raise WorldError(f"the server answered {status} without a Content-Length")


class _Connection:
    """One blocking keep-alive connection: send a request's bytes, read one response."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def call(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._more()
        status, length = _head(self.buf[:end])
        start = end + 4
        while len(self.buf) < start + length:
            self._more()
        body, self.buf = self.buf[start : start + length], self.buf[start + length :]
        return status, body

    def _more(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise WorldError("the server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


async def _drive(
    port: int, requests: list[bytes], connections: int, warmup: float, seconds: int, pid: int
) -> Load:
    """`connections` keep-alive connections, each sending its next request once answered."""
    start = time.perf_counter()
    t0, end = start + warmup, start + warmup + seconds
    load = Load(windows=[0] * seconds)

    async def one(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while (sent := time.perf_counter()) < end:
                writer.write(requests[i % len(requests)])
                i += connections
                try:
                    status, length = _head((await reader.readuntil(b"\r\n\r\n"))[:-4])
                    await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    raise WorldError(f"the server dropped a connection under load: {exc}") from None
                done = time.perf_counter()
                if not t0 <= done < end:
                    continue
                if status != 200:
                    load.errors += 1
                    continue
                load.windows[int(done - t0)] += 1
                load.latencies_ns.append(int((done - sent) * 1e9))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def meter() -> None:
        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
        cpu, server = time.process_time(), _tree_cpu(pid)
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        load.client_cpu = time.process_time() - cpu
        after = _tree_cpu(pid)
        if server is not None and after is not None:
            load.server_cpu = after - server

    await asyncio.gather(meter(), *(one(k) for k in range(connections)))
    return load


def _run_async(coro: Coroutine[Any, Any, Load]) -> Load:
    """Run on uvloop when it is installed (it comes with uvicorn's standard extra)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it on Linux and macOS
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _tree_cpu(root: int) -> float | None:
    """CPU seconds used so far by process `root` and its descendants (Linux /proc only)."""
    proc = Path("/proc")
    if not (proc / str(root) / "stat").exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # gone since the listing
            continue
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        cpu[pid] = int(fields[11]) + int(fields[12])  # utime + stime
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += [child for child, p in parent.items() if p == pid and child not in tree]
    return sum(cpu.get(pid, 0) for pid in tree) / tick


# -- the server ------------------------------------------------------------------------


@dataclass
class Served:
    port: int
    pid: int
    workers: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(where: Path | str, workers: int, timeout: float = 60.0) -> Iterator[Served]:
    """Run ``episteme serve --home WHERE --workers N`` on a free port until the block ends
    (WHERE: a home directory or a PostgreSQL URL)."""
    port = _free_port()
    argv = [sys.executable, "-m", "episteme", "serve", "--home", str(where)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            _wait_healthy(proc, port, timeout, log)
            yield Served(port, proc.pid, workers)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: the workers stop with it
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _wait_healthy(proc: subprocess.Popen[str], port: int, timeout: float, log: Any) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise WorldError(f"episteme serve exited with {proc.returncode}: {log.read()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise WorldError(f"episteme serve did not answer /health within {timeout:.0f} s")
        time.sleep(0.05)


# -- the library floor -----------------------------------------------------------------


def _library_windows(
    ledger: Ledger, subjects: list[str], threads: int, warmup: float, seconds: int
) -> list[int]:
    """Audited queries per 1-second window from `threads` threads calling `Ledger.query`."""

    def query(_: int, i: int) -> None:
        ledger.query(subjects[i % len(subjects)], agent=AGENT, lens="approved")

    return windows(query, threads, warmup, seconds)


def windows(
    op: Callable[[int, int], object], threads: int, warmup: float, seconds: int
) -> list[int]:
    """Calls of `op(thread, i)` completed per 1-second window, from `threads` threads
    calling it in a loop for `warmup` seconds (not counted) and then `seconds`."""
    start = time.perf_counter()
    t0, end = start + warmup, start + warmup + seconds
    counts = [[0] * seconds for _ in range(threads)]
    failed: list[BaseException] = []

    def loop(k: int) -> None:
        mine, i = counts[k], k
        try:
            while time.perf_counter() < end and not failed:
                op(k, i)
                i += threads
                done = time.perf_counter()
                if t0 <= done < end:
                    mine[int(done - t0)] += 1
        except BaseException as exc:  # handed to the caller below, not lost with the thread
            failed.append(exc)

    pool = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if failed:
        raise failed[0]
    return [sum(c[w] for c in counts) for w in range(seconds)]


def _library_child() -> None:
    """One process of the floor: JSON arguments on stdin; "ready", then on "go" its windows."""
    args = json.loads(sys.stdin.readline())
    with Ledger.open(args["where"]) as ledger:
        print("ready", flush=True)
        sys.stdin.readline()
        counts = _library_windows(
            ledger, args["subjects"], args["threads"], args["warmup"], args["seconds"]
        )
    print(json.dumps(counts), flush=True)


_CHILD = "from episteme.benchmark.http import _library_child; _library_child()"


def _library_load(
    where: Path | str,
    subjects: list[str],
    processes: int,
    threads: int,
    warmup: float,
    seconds: int,
) -> Load:
    """The library's rate in `processes` fresh processes of `threads` threads, started together."""
    args = {"where": str(where), "subjects": subjects, "threads": threads}
    return children_load(_CHILD, args | {"warmup": warmup, "seconds": seconds}, processes)


def children_load(code: str, args: dict[str, Any], processes: int) -> Load:
    """Run `code` in `processes` fresh interpreters started together; their summed windows.

    Each child reads `args` as one JSON line, prints "ready" once set up, waits for a
    "go" line (so none starts counting before all are ready) and prints its counts
    per 1-second window as one JSON list.
    """
    line = json.dumps(args) + "\n"
    with contextlib.ExitStack() as stack:  # on leaving: pipes closed, processes waited for
        procs = [stack.enter_context(_child(code)) for _ in range(processes)]
        try:
            for p in procs:
                _tell(p, line)
            for p in procs:  # every process has its ledger open before any starts counting
                _hear(p)
            for p in procs:
                _tell(p, "go\n")
            results = [json.loads(_hear(p)) for p in procs]
        except BaseException:
            for p in procs:
                p.kill()
            raise
    return Load(windows=[sum(w) for w in zip(*results, strict=True)])


def _child(code: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", code]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _tell(p: subprocess.Popen[str], line: str) -> None:
    assert p.stdin is not None
    p.stdin.write(line)
    p.stdin.flush()


def _hear(p: subprocess.Popen[str]) -> str:
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line:
        raise WorldError(f"a benchmark process exited with {p.wait()}: see its errors above")
    return line


# -- the figures -----------------------------------------------------------------------


def _top(db: Conn) -> int:
    row = db.execute("SELECT max(rowid) FROM assertions").fetchone()
    return int(row[0] or 0) if row else 0


def _probe_subjects(db: Conn, rng: random.Random, n: int = 2000) -> list[str]:
    """Subjects of random assertions: busy subjects come up as often as they are written."""
    q = db.execute
    top = _top(db)
    if not top:
        raise WorldError("the ledger holds no assertion: run `episteme bench generate` first")
    picks = [rng.randint(1, top) for _ in range(n)]
    marks = ",".join("?" * len(picks))
    found = dict(q(f"SELECT rowid, subject FROM assertions WHERE rowid IN ({marks})", picks))
    return [found[p] for p in picks if p in found]


def _timed(fn: Callable[[int], object], items: Sequence[int]) -> list[int]:
    out = []
    for i in items:
        t = time.perf_counter_ns()
        fn(i)
        out.append(time.perf_counter_ns() - t)
    return out


def _point(
    ledger: Ledger, server: Served, secret: str, subjects: list[str], runs: int, rng: random.Random
) -> list[Figure]:
    """The point query over HTTP beside its library floor, and the same runs restricted to
    answers of at most one item: a subject with children answers with all of theirs, and
    those answers, with an audit row per item, are what the p99 of the whole is made of."""
    port, workers = server.port, server.workers
    requests = [_request(port, secret, s) for s in subjects]
    order = [rng.randrange(len(subjects)) for _ in range(runs)]
    # what each answer holds, read once (unaudited: nothing is written, and only queries
    # are written during the runs, so no answer changes)
    size = {i: len(ledger.answer(subjects[i], lens="approved").items) for i in set(order)}
    conn = _Connection(port)

    def http(i: int) -> None:
        status, body = conn.call(requests[i])
        if status != 200:
            raise WorldError(f"POST /v1/query answered {status}: {body[:300]!r}")

    def library(i: int) -> None:
        ledger.query(subjects[i], agent=AGENT, lens="approved")

    try:
        warmup = [i % len(subjects) for i in range(max(5, runs // 10))]
        _timed(http, warmup)
        _timed(library, warmup)
        ours: list[int] = []
        floor: list[int] = []
        for base in range(0, runs, _BLOCK):  # alternate; both halves of a turn read alike
            chunk = order[base : base + _BLOCK]
            ours += _timed(http, chunk)
            floor += _timed(library, chunk)
    finally:
        conn.close()
    p50, p99, mx = _ms(ours)
    f50, f99, _ = _ms(floor)
    note = f"one keep-alive connection, {workers} worker{'s' * (workers > 1)}; floor: Ledger.query"
    note += f" in the harness's process, alternating in blocks of {_BLOCK} over the same subjects"
    figures = [Figure(POINT, "ms", runs, p50, p99, mx, f50, f99, BUDGET_MS[POINT], note)]
    one = [k for k, i in enumerate(order) if size[i] <= 1]
    if one:
        p50, p99, mx = _ms([ours[k] for k in one])
        f50, f99, _ = _ms([floor[k] for k in one])
        note = f"the runs above whose answer held at most one item: {len(one) / runs:.0%} of them"
        figures.append(Figure(POINT_ONE, "ms", len(one), p50, p99, mx, f50, f99, None, note))
    return figures


def _rate_figure(
    name: str, load: Load, floor: Load | None, floor_name: str, extra: str = ""
) -> Figure:
    p50, low, worst = load.rates()
    notes = ["p50: median 1-second window; p99/max: the 1st-percentile and slowest windows"]
    if load.latencies_ns:
        l50, l99, _ = _ms(load.latencies_ns)
        notes.append(f"latency under load p50 {l50:.1f} ms, p99 {l99:.1f} ms")
    if load.errors:
        notes.append(f"{load.errors:,} answers other than 200")
    seconds = len(load.windows)
    if load.client_cpu is not None:
        notes.append(f"client used {load.client_cpu / seconds:.2f} of a core")
    if load.server_cpu is not None:
        notes.append(f"server {load.server_cpu / seconds:.2f} cores")
    f50 = None
    if floor is not None:
        f50, f_low, _ = floor.rates()
        notes.append(f"floor: {floor_name}, worst window {f_low:,.0f}/s")
    if extra:
        notes.append(extra)
    return Figure(
        name, "/s", seconds, p50, low, worst, f50, f50, BUDGET_RATE.get(name), "; ".join(notes)
    )


def run(
    where: Path | str,
    *,
    runs: int = 2000,
    seconds: int = 10,
    warmup: float = 2.0,
    connections: int = 32,
    workers: Sequence[int] = (1, 2),
    threads: int = 8,
    warm_cache: bool = True,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Measure the HTTP figures on the ledger in `home`, each beside its library floor.

    Args:
        where: a ledger home or PostgreSQL URL, e.g. made by `episteme bench generate`.
        runs: timed point queries (and as many library ones), after a tenth as warm-up.
        seconds: length of each throughput measurement, in 1-second windows.
        warmup: seconds of load before each throughput measurement starts counting.
        connections: concurrent keep-alive connections of the load generator.
        workers: the `--workers` counts to measure throughput with.
        threads: threads per process of the library floor.
        warm_cache: bring the database into the cache first, as a running server has it.
        seed: the seed of the subjects drawn.
        progress: called with the name of each step as it starts.
    """
    say = progress or (lambda _: None)
    if warm_cache:
        with contextlib.closing(open_floor(where)) as cache:
            cache.warm()
    rng = random.Random(seed)
    figures: list[Figure] = []
    with Ledger.open(where) as ledger:
        assert isinstance(ledger.store, SQLStore)
        secret, _ = ledger.issue_token(AGENT, ["agent"], by="bench")
        subjects = _probe_subjects(ledger.store.conn, rng)
        say("library, 1 thread")
        single = Load(windows=_library_windows(ledger, subjects, 1, warmup, seconds))
        figures.append(_rate_figure("audited queries/s in the library, 1 thread", single, None, ""))
        for n in workers:
            say("gardener: catching up with the journal")
            Gardener(ledger).run_until_caught_up()
            with serve(where, n) as server:
                if n == workers[0]:
                    say("point query over HTTP")
                    figures += _point(ledger, server, secret, subjects, runs, rng)
                say(f"HTTP load, {n} worker{'s' * (n > 1)}")
                requests = [_request(server.port, secret, s) for s in subjects]
                load = _run_async(
                    _drive(server.port, requests, connections, warmup, seconds, server.pid)
                )
            say(f"library, {n} process{'es' * (n > 1)} × {threads} threads")
            floor = _library_load(where, subjects, n, threads, warmup, seconds)
            floor_name = f"the library in {n} process{'es' * (n > 1)} × {threads} threads"
            name = f"audited queries/s over HTTP, {n} worker{'s' * (n > 1)}"
            figures.append(
                _rate_figure(name, load, floor, floor_name, f"{connections} connections")
            )
        info = {"assertions": _top(ledger.store.conn), "events": ledger.store.head()[0]}
    machine = _machine() | {
        "load": {
            "client": "asyncio HTTP/1.1 keep-alive client on the same machine and cores",
            "connections": connections,
            "seconds": seconds,
            "warmup_s": warmup,
            "library_threads": threads,
        }
    }
    backend = "postgresql" if is_postgres(where) else "sqlite"
    return Report(machine=machine, ledger=info, figures=figures, backend=backend)
