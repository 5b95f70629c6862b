"""Several `episteme serve` processes on one PostgreSQL ledger, as operators run them.

Real processes and a real database throughout: four servers taking writes from a
hundred writers at once, the background leadership moving when its holder is killed,
PostgreSQL stopped and started under load, and bad database URLs at start. After
each run the ledger is checked with the commands an operator would use: `episteme
export`, `episteme verify` and `episteme rebuild`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import psycopg
import pytest

from episteme.client import AsyncClient, Client
from episteme.errors import StoreUnavailable
from episteme.ledger import Ledger
from tests.integration.processes import free_port, served, served_together
from tests.postgres import Cluster

SERVERS = 4
WRITERS_PER_SERVER = 25
ASSERTS_PER_WRITER = 10
TAKEOVER_SECONDS = 5.0
WRITE_LOOPS = 4
OUTAGE_SECONDS = 2.0
RECOVERY_SECONDS = 10.0
WRITE_FAILS_SECONDS = 15.0  # the store waits 10 s for a connection before a 503
HEALTH_SECONDS = 5.0  # what a load balancer's health probe waits, at most

T = TypeVar("T")


# -- helpers ---------------------------------------------------------------------------


def episteme(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the `episteme` command as an operator would, in a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPISTEME_")}
    return subprocess.run(
        [sys.executable, "-m", "episteme", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def admin_token(proc: subprocess.Popen[str]) -> str:
    """The admin secret a server prints when it creates the ledger (three lines in all)."""
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip() for _ in range(3)]
    assert "shown once" in lines[0], lines
    return next(line for line in lines if line.startswith("ep_"))


def drain(proc: subprocess.Popen[str]) -> list[str]:
    """Keep reading a server's output (so that a full pipe never stalls it); the lines."""
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        # the pipe is closed under this thread when the server stops
        with contextlib.suppress(ValueError, OSError):
            lines.extend(proc.stdout)

    threading.Thread(target=read, daemon=True).start()
    return lines


def health(url: str, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{url}/health", timeout=timeout)
    return r.status_code, r.json()


def background(url: str) -> str | None:
    try:
        _code, body = health(url, timeout=2.0)
    except httpx.TransportError:
        return None
    state: str | None = body.get("workers", {}).get("background")
    return state


def check_ledger(db: str) -> list[dict[str, Any]]:
    """verify and rebuild are clean and the journal's seqs are 1..n; the exported events."""
    exported = episteme("export", "--db", db)
    assert exported.returncode == 0, exported.stderr
    events = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    with psycopg.connect(db, connect_timeout=10) as conn:
        row = conn.execute("SELECT count(*), min(seq), max(seq) FROM journal").fetchone()
    assert row == (len(events), 1, len(events))

    verified = episteme("verify", "--db", db, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] is True
    assert report["events"] == len(events)
    assert report["head"] == events[-1]["hash"]

    rebuilt = episteme("rebuild", "--db", db, "--json")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    report = json.loads(rebuilt.stdout)
    assert report["ok"] is True
    assert report["differences"] == {}
    assert report["events"] == len(events)
    return events


def stored_assertions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every assertion the journal added, in order (one entry per time it was added)."""
    return [
        a for e in events if e["kind"] == "assertions.added" for a in e["payload"]["assertions"]
    ]


# -- four servers, a hundred writers ---------------------------------------------------


async def _write(url: str, token: str, name: str, acked: dict[str, tuple[str, str, str]]) -> None:
    async with AsyncClient(url, token, timeout=60.0) as ep:
        for n in range(ASSERTS_PER_WRITER):
            subject, value = f"load.{name}.k{n}", f"{name}/{n}"
            made = await ep.add_assertion(subject, value)
            acked[made.id] = (subject, value, made.agent)


@pytest.mark.slow
def test_four_servers_take_a_hundred_writers_and_keep_one_chain(pg_url: str) -> None:
    with served(pg_url) as (first, first_proc):
        admin = admin_token(first_proc)
        drain(first_proc)
        with served_together(pg_url, SERVERS - 1) as others:
            for _url, proc in others:
                drain(proc)
            urls = [first, *(url for url, _proc in others)]
            with Client(first, admin) as ep:
                # per-writer tokens, issued through the API; each writer acts as its own
                tokens = {
                    f"w{s}-{i:02d}": (urls[s], ep.create_token(f"w{s}-{i:02d}", ["agent"])[0])
                    for s in range(SERVERS)
                    for i in range(WRITERS_PER_SERVER)
                }
            acked: dict[str, tuple[str, str, str]] = {}

            async def run() -> None:
                await asyncio.gather(
                    *(_write(url, tok, name, acked) for name, (url, tok) in tokens.items())
                )

            asyncio.run(run())
            for url in urls:  # every server still up and healthy
                assert health(url)[0] == 200

    writers = SERVERS * WRITERS_PER_SERVER
    assert len(acked) == writers * ASSERTS_PER_WRITER
    events = check_ledger(pg_url)
    # the admin token, one token per writer, one event per acknowledged write
    assert len(events) == 1 + writers + writers * ASSERTS_PER_WRITER
    added = stored_assertions(events)
    counts = Counter(a["id"] for a in added)
    assert all(counts[i] == 1 for i in acked), "an acknowledged write is missing or doubled"
    assert len(added) == len(acked)
    for a in added:
        assert acked[a["id"]] == (a["subject"], a["value"], a["agent"])
        assert a["subject"].startswith(f"load.{a['agent']}.")


# -- the background leadership ---------------------------------------------------------


def test_the_standby_takes_the_lead_when_the_leader_is_killed(pg_url: str) -> None:
    with served_together(pg_url, 2) as servers:
        for _url, proc in servers:
            drain(proc)
        deadline = time.monotonic() + 10
        while True:
            states = [background(url) for url, _proc in servers]
            if sorted(map(str, states)) == ["leading", "standby"]:
                break
            assert time.monotonic() < deadline, f"no single leader: {states}"
            time.sleep(0.1)
        leading = states.index("leading")
        leader_url, leader = servers[leading]
        standby_url, _standby = servers[1 - leading]
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(timeout=10)
        killed = time.monotonic()
        while background(standby_url) != "leading":
            waited = time.monotonic() - killed
            assert waited < TAKEOVER_SECONDS, f"standby not leading {waited:.1f} s after kill -9"
            time.sleep(0.1)
        assert health(standby_url)[0] == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{leader_url}/health", timeout=1.0)
        # the gardener moved with the leadership: a correction made now is applied there
        with Ledger.open(pg_url) as ledger:
            bad = ledger.assert_one(subject="auth.jwt.algorithm", value="ES256", agent="research")
            ledger.correct(bad.id, by="oncall", reason="prod expects RS256")
            head = ledger.store.head()[0]
            deadline = time.monotonic() + TAKEOVER_SECONDS
            while ledger.store.garden_cursor("gardener").seq < head:
                assert time.monotonic() < deadline, "the new leader's gardener did not catch up"
                time.sleep(0.1)
            assert ledger.trust_scores(agent="research")[0].score < 0.5


# -- PostgreSQL stopped and started under load -----------------------------------------


@dataclass
class Answer:
    """One assert sent through the client: when, and what came back."""

    sent: float
    answered: float
    subject: str
    id: str | None = None  # set when acknowledged
    error: BaseException | None = None
    status: int | None = None  # the HTTP status behind an error (None: no answer)
    body: str = ""


class _Recording(httpx.HTTPTransport):
    """The network, noting the last response so that an error can name its status."""

    def __init__(self) -> None:
        super().__init__()
        self.last: httpx.Response | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.last = None
        response = super().handle_request(request)
        response.read()
        self.last = response
        return response


class Writer:
    """A client that asserts and notes each answer, whatever it is."""

    def __init__(self, url: str, token: str) -> None:
        self._transport = _Recording()
        self._client = Client(url, token, timeout=90.0, transport=self._transport)

    def close(self) -> None:
        self._client.close()

    def write(self, subject: str, value: int) -> Answer:
        sent = time.monotonic()
        try:
            made = self._client.add_assertion(subject, value)
        except Exception as exc:  # noted and judged by the test
            last = self._transport.last
            status, body = (last.status_code, last.text) if last is not None else (None, "")
            return Answer(sent, time.monotonic(), subject, error=exc, status=status, body=body)
        return Answer(sent, time.monotonic(), subject, id=made.id)


@dataclass
class WriteLoop:
    """Asserts one after another until stopped."""

    url: str
    token: str
    name: str
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        writer = Writer(self.url, self.token)
        try:
            n = 0
            while not self.stop.is_set():
                n += 1
                answer = writer.write(f"outage.{self.name}.k{n}", n)
                self.answers.append(answer)
                if answer.id is None:
                    time.sleep(0.05)
        finally:
            writer.close()

    def sent_after(self, t: float) -> list[Answer]:
        return [a for a in list(self.answers) if a.sent >= t]


class Probe(Generic[T]):
    """One call, made from a thread of its own: when it was sent and answered, and how."""

    def __init__(self, call: Callable[[], T]) -> None:
        self.sent = time.monotonic()
        self.answered: float | None = None
        self.value: T | None = None
        self.error = ""
        threading.Thread(target=self._run, args=(call,), daemon=True).start()

    def _run(self, call: Callable[[], T]) -> None:
        try:
            self.value = call()
        except Exception as exc:  # judged by the test: no answer is a finding too
            self.error = repr(exc)
        self.answered = time.monotonic()

    def within(self, seconds: float) -> bool:
        """Answered, or past the time it had to answer."""
        return self.answered is not None or time.monotonic() > self.sent + seconds

    def took(self) -> float:
        return (self.answered or time.monotonic()) - self.sent


def _wait(until: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not until():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _healthy(url: str) -> bool:
    try:
        code, body = health(url, timeout=5.0)
    except httpx.TransportError:
        return False
    return code == 200 and body["workers"].get("background") == "leading"


def _judge(probe: Probe[Any], up: float, seconds: float, what: str) -> list[str]:
    """What is wrong with a probe sent in the outage: late, or never answered."""
    took = probe.took()
    if probe.answered is None:
        return [f"{what} sent in the outage: no answer in {took:.1f} s ({probe.error})"]
    late = [] if took <= seconds else [f"{what} took {took:.1f} s to answer (at most {seconds})"]
    if probe.answered >= up:
        late.append(f"{what} sent in the outage was answered after it, with {probe.value!r}")
    return late


def _write_once(url: str, token: str, subject: str) -> Answer:
    writer = Writer(url, token)
    try:
        return writer.write(subject, 0)
    finally:
        writer.close()


@pytest.mark.slow
def test_the_server_rides_out_postgres_stopped_and_started_under_load() -> None:
    cluster = Cluster.create()  # a private cluster: stopping it disturbs no other test
    try:
        cluster.start()
        db = cluster.create_database()
        with served(db) as (url, proc):
            token = admin_token(proc)
            log = drain(proc)
            loops = [WriteLoop(url, token, f"w{i}") for i in range(WRITE_LOOPS)]
            threads = [threading.Thread(target=loop.run) for loop in loops]
            for t in threads:
                t.start()
            try:
                assert _wait(lambda: all(len(lp.answers) >= 10 for lp in loops), 10)

                cluster.stop("fast")
                down = time.monotonic()
                probe_health = Probe(lambda: health(url, timeout=90.0))
                probe_write = Probe(lambda: _write_once(url, token, "outage.probe"))
                # Down for OUTAGE_SECONDS, and longer while the probes sent in the outage
                # are within their time to answer: they are judged against an outage.
                _wait(
                    lambda: (
                        time.monotonic() - down >= OUTAGE_SECONDS
                        and probe_health.within(HEALTH_SECONDS)
                        and probe_write.within(WRITE_FAILS_SECONDS)
                    ),
                    WRITE_FAILS_SECONDS + 1,
                )
                cluster.start()
                up = time.monotonic()

                recovered = _wait(lambda: any(a.id for lp in loops for a in lp.sent_after(up)), 30)
                recovery = time.monotonic() - up
                healthy = _wait(lambda: _healthy(url), 10)
                time.sleep(1.0)  # more writes after the recovery
            finally:
                for lp in loops:
                    lp.stop.set()
                for t in threads:
                    t.join(timeout=120)
            assert proc.poll() is None, "the server exited"
        evidence = "".join(log[-60:])

        # every failure is a 503 problem that the client raises as StoreUnavailable
        answers = [a for lp in loops for a in lp.answers]
        if isinstance(probe_write.value, Answer):
            answers.append(probe_write.value)
        failed = [a for a in answers if a.id is None]
        for a in failed:
            assert isinstance(a.error, StoreUnavailable), (repr(a.error), evidence)
            assert a.status == 503, (a.status, a.body, evidence)
            problem = json.loads(a.body)
            assert problem["status"] == 503
            assert problem["title"] == "Service unavailable"
            assert "unavailable" in problem["detail"]

        # back by itself, without a restart: writes succeed, health is ok and leading
        assert recovered, f"no write succeeded in 30 s after PostgreSQL started: {evidence}"
        assert recovery <= RECOVERY_SECONDS, f"writes came back {recovery:.1f} s after the start"
        assert healthy, "/health not ok and leading 10 s after the recovery"

        # no acknowledged write lost; a failed one is absent, or there once (it committed
        # as its connection dropped), and never half-written: verify and rebuild are clean
        stored = stored_assertions(check_ledger(db))
        by_id = Counter(a["id"] for a in stored)
        acked = [a.id for a in answers if a.id is not None]
        assert all(by_id[i] == 1 for i in acked), "an acknowledged write is lost or doubled"
        by_subject = Counter(a["subject"] for a in stored)
        assert all(by_subject[a.subject] <= 1 for a in failed)
        # the store settles a lost COMMIT with the database: only a write it reported as
        # possibly recorded may be there
        unsure = "may have been recorded"
        assert all(by_subject[a.subject] == 0 for a in failed if unsure not in a.body)
        assert len(stored) == len(acked) + sum(by_subject[a.subject] for a in failed)

        # While PostgreSQL is down, a write fails in the time the store gives itself to
        # connect (10 s, and a little more), and /health says so in the time that a load
        # balancer's probe waits. Both are reported together, with what they answered.
        found = _judge(probe_write, up, WRITE_FAILS_SECONDS, "a write")
        found += _judge(probe_health, up, HEALTH_SECONDS, "/health")
        if (probe_write.answered or up) < up and getattr(probe_write.value, "id", None):
            found.append("a write succeeded with PostgreSQL stopped")
        if (probe_health.answered or up) < up and (probe_health.value or [503])[0] != 503:
            found.append(f"/health answered {probe_health.value} with PostgreSQL stopped")
        assert not found, "\n".join(found)
    finally:
        cluster.destroy()


# -- bad input at start ----------------------------------------------------------------

PASSWORD = "pw-Kf83-never-shown"


@dataclass
class BadStart:
    url: str
    cause: str
    secrets: tuple[str, ...]


def _bad_start(case: str, request: pytest.FixtureRequest) -> BadStart:
    if case == "closed port":
        url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/ledger"
        return BadStart(url, "unavailable", (PASSWORD,))
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    if case == "wrong password":
        url = cluster.url("postgres", password=PASSWORD)
        return BadStart(url, "password authentication failed", (PASSWORD, cluster.password))
    url = request.getfixturevalue("pg_url")
    made = episteme("init", "--db", url)
    assert made.returncode == 0, made.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    return BadStart(url, "newer", (cluster.password,))


def _cluster_processes(cluster: Cluster) -> list[int]:
    """The postmaster of `cluster` and its children (Linux /proc)."""
    postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    found = [postmaster]
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == postmaster:
                    found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("pause", [0.0, 2.0])
def test_a_server_stops_when_postgres_stops_answering(pause: float) -> None:
    # A database that hangs (its processes stopped, as a frozen VM): the leader's check
    # waits on it for ever, and stopping the server used to wait for that check too
    # (pause 2: a check is under way); and with no check under way (pause 0, most
    # often), the unlock of the leadership waited for ever in its place.
    cluster = Cluster.create()  # a private cluster: freezing it disturbs no other test
    frozen: list[int] = []
    try:
        cluster.start()
        db = cluster.create_database()
        with served(db) as (url, proc):
            drain(proc)
            assert _wait(
                lambda: httpx.get(f"{url}/health").json()["workers"].get("background") == "leading",
                10,
            )
            frozen = _cluster_processes(cluster)
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            time.sleep(pause)
            asked = time.monotonic()
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)  # before: until the database answered again
            # within an orchestrator's grace period (Kubernetes: 30 s) with room to spare:
            # each part of the shutdown used to wait its own time on the frozen database,
            # some twice (25.6 s in all); now the leader's thread is given 1 s, the work
            # 5 s and the lock 2 s, once each
            assert time.monotonic() - asked < 22
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        cluster.destroy()


@pytest.mark.parametrize("command", ["serve", "verify"])
@pytest.mark.parametrize("case", ["closed port", "wrong password", "newer schema"])
def test_a_bad_database_at_start_is_one_line_and_no_secret(
    case: str, command: str, request: pytest.FixtureRequest
) -> None:
    bad = _bad_start(case, request)
    extra = ["--port", str(free_port())] if command == "serve" else []
    done = episteme(command, "--db", bad.url, *extra, timeout=30)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines
    assert bad.cause in lines[0], lines
    assert "Traceback" not in done.stdout + done.stderr
    for secret in bad.secrets:
        assert secret not in done.stdout + done.stderr


def test_metrics_answer_while_postgres_is_away() -> None:
    # A scrape looked its token up in the database, so for a whole outage Prometheus saw
    # failed scrapes (503 after 10 s, its own timeout), and none of the outage's 503s.
    cluster = Cluster.create()  # a private cluster: stopping it disturbs no other test
    try:
        cluster.start()
        db = cluster.create_database()
        with Ledger.init(db) as ledger:
            scraper, _ = ledger.issue_token("prometheus", ["approver"], by="admin")
            stranger, _ = ledger.issue_token("never-scraped", ["approver"], by="admin")
        with served(db) as (url, _proc):
            auth = {"Authorization": f"Bearer {scraper}"}
            first = httpx.get(f"{url}/metrics", headers=auth, timeout=30)
            assert first.status_code == 200
            assert "episteme_store_up 1.0" in first.text
            assert "episteme_journal_events 2.0" in first.text

            cluster.stop("fast")
            failed = httpx.post(f"{url}/v1/query", json={"subject": "a"}, headers=auth, timeout=30)
            assert failed.status_code == 503
            asked = time.monotonic()
            during = httpx.get(f"{url}/metrics", headers=auth, timeout=30)
            assert time.monotonic() - asked < 8  # 10 s before: the pool's wait
            assert during.status_code == 200, during.text
            assert "episteme_store_up 0.0" in during.text
            assert "episteme_journal_events" not in during.text
            assert 'route="/v1/query",status="503"' in during.text
            unknown = {"Authorization": f"Bearer {stranger}"}
            assert httpx.get(f"{url}/metrics", headers=unknown, timeout=30).status_code == 503
            assert httpx.get(f"{url}/metrics", timeout=30).status_code == 401

            cluster.start()
            back = httpx.get(f"{url}/metrics", headers=auth, timeout=30)
            assert back.status_code == 200
            assert "episteme_store_up 1.0" in back.text
    finally:
        cluster.destroy()
