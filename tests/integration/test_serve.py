"""`episteme serve` as users run it: a fresh home, an admin token, many agents at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from episteme import client as client_module
from episteme.client import Client
from episteme.errors import EpistemeError, StoreUnavailable
from episteme.ledger import Ledger
from tests.integration import processes
from tests.integration.processes import served

AGENTS = 50
SECONDS = 20.0


def _home(home: Path, name: str, role: str) -> tuple[Path, dict[str, str]]:
    """A new ledger at `home`, and the headers of a token of `name` with `role` there."""
    with Ledger.init(home) as ledger:
        token, _ = ledger.issue_token(name, [role], by="admin")
    return home, {"Authorization": f"Bearer {token}"}


def test_a_fresh_home_gets_one_admin_token_shown_once_and_never_stored(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    with served(home) as (url, proc):
        assert proc.stdout is not None
        # the server is healthy, so the three lines it printed first are in the pipe
        # (reading a fourth would wait for output that never comes)
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        secret = next(line for line in lines if line.startswith("ep_"))
        me = httpx.get(f"{url}/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
        assert me.status_code == 200
        assert me.json()["roles"] == ["admin"]
    assert "shown once" in lines[0]
    with served(home) as (url, proc):  # a second start on the same home creates none
        pass
    with Ledger.open(home) as ledger:
        assert [(t.principal, t.roles) for t in ledger.tokens()] == [("admin", ["admin"])]
    for f in home.iterdir():
        assert secret.encode() not in f.read_bytes(), f


async def _agent(
    url: str,
    name: str,
    token: str,
    stop: float,
    acked: dict[str, Counter[str]],
    seen: list[str],
    ids: dict[str, list[str]],
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    n = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60.0) as client:
        while time.monotonic() < stop:
            n += 1
            subject = f"svc.{name}.k{n}"
            r = await client.post("/v1/assertions", json={"subject": subject, "value": n})
            assert r.status_code == 201, r.text
            seen.append(r.json()["agent"] + "=" + name)
            ids[name].append(r.json()["id"])
            acked[name]["assert"] += 1
            r = await client.post("/v1/query", json={"subject": f"svc.{name}", "lens": "latest"})
            assert r.status_code == 200, r.text
            answer = r.json()
            seen.append(answer["agent"] + "=" + name)
            assert {i["assertion"]["agent"] for i in answer["items"]} == {name}
            acked[name]["query"] += 1
            r = await client.post(
                "/v1/decisions", json={"action": f"step {n}", "query_ids": [answer["query_id"]]}
            )
            assert r.status_code == 201, r.text
            seen.append(r.json()["agent"] + "=" + name)
            acked[name]["decide"] += 1


def test_fifty_agents_for_twenty_seconds(tmp_path: Path) -> None:
    home = tmp_path / "busy"
    with Ledger.init(home) as ledger:
        tokens = {
            f"agent-{i:02d}": ledger.issue_token(f"agent-{i:02d}", ["agent"], by="admin")[0]
            for i in range(AGENTS)
        }
    acked: dict[str, Counter[str]] = {name: Counter() for name in tokens}
    ids: dict[str, list[str]] = {name: [] for name in tokens}
    seen: list[str] = []
    with served(home, "--workers", "2") as (url, _proc):

        async def run() -> None:
            stop = time.monotonic() + SECONDS
            await asyncio.gather(
                *(_agent(url, name, tok, stop, acked, seen, ids) for name, tok in tokens.items())
            )

        asyncio.run(run())
        # both workers' counters, whichever worker answers the scrape
        any_token = {"Authorization": f"Bearer {next(iter(tokens.values()))}"}
        metrics = httpx.get(f"{url}/metrics", headers=any_token).text
    # no mixed-up principal: every answer named the agent whose token asked
    assert all(a == b for a, b in (s.split("=") for s in seen))
    total = sum(sum(c.values()) for c in acked.values())
    assert total > 300  # the run did real work (figures are in the benchmark, not here)
    queries = sum(c["query"] for c in acked.values())
    assert f'episteme_queries_total{{lens="latest"}} {float(queries)}' in metrics
    with Ledger.open(home) as ledger:
        assert ledger.verify().ok
        assert ledger.rebuild().ok
        for name in tokens:
            # no lost write: every acknowledged write is in the ledger, under its agent
            stored = ledger.store.assertions(ids[name])
            assert len(stored) == acked[name]["assert"]
            assert {a.agent for a in stored} == {name}
            reads = ledger.audit(agent=name, limit=100_000)
            assert len(reads) == acked[name]["query"]
            rows = ledger.store.conn.execute(
                "SELECT count(*), count(DISTINCT agent) FROM decisions WHERE agent = ?", (name,)
            ).fetchone()
            assert rows == (acked[name]["decide"], 1 if acked[name]["decide"] else 0)
        events = ledger.store.head()[0]
    assert events == AGENTS + total


@pytest.mark.parametrize("workers", [1, 2])
def test_a_server_told_to_stop_ends_the_streams_it_cannot_finish(
    tmp_path: Path, workers: int
) -> None:
    # A client following a diagnosis that waits for approval holds its response open for
    # as long as the session lives (an hour by default). The server used to wait for it
    # (then, once a grace was added, for the whole grace, and cut it with a traceback in
    # its log); it ends it at once now, saying why.
    home, auth = _home(tmp_path / "home", "dev", "agent")
    token = auth["Authorization"].removeprefix("Bearer ")
    lines: list[dict[str, object]] = []
    raised: list[Exception] = []
    args = ("--workers", str(workers), "--shutdown-timeout", "60")
    with served(home, *args) as (url, proc):
        body = {"problem": "database connection failures in prod", "environment": "prod"}
        started = httpx.post(f"{url}/diagnose", json=body, headers=auth, timeout=30.0)
        assert started.status_code == 201, started.text
        assert started.json()["status"] == "waiting_for_approval"
        sid = started.json()["id"]

        def follow() -> None:
            stream = httpx.stream(
                "GET", f"{url}/status/{sid}?stream=true", headers=auth, timeout=None
            )
            with stream as r:
                lines.extend(json.loads(line) for line in r.iter_lines() if line)

        def follow_with_the_client() -> None:
            with Client(url, token) as ep:
                try:
                    for _ in ep.session_events(sid):
                        pass
                except EpistemeError as exc:
                    raised.append(exc)

        followers = [threading.Thread(target=f) for f in (follow, follow_with_the_client)]
        for follower in followers:
            follower.start()
        time.sleep(1.0)  # the streams are open, and follow
        assert all(follower.is_alive() for follower in followers)
        assert lines[-1]["type"] == "approval_required"
        os.killpg(proc.pid, signal.SIGTERM)
        # the grace is 60 s: a server that waited for the streams is still running at 45
        out, _ = proc.communicate(timeout=45)
        for follower in followers:
            follower.join(10)
    assert lines[-1]["type"] == "error", lines[-1]
    assert lines[-1]["code"] == "stopping"
    assert "n" not in lines[-1]  # the reader's end, not the session's
    assert [type(e) for e in raised] == [StoreUnavailable]
    assert "the server is stopping" in str(raised[0])
    assert "Traceback" not in out, out
    assert "ERROR" not in out, out
    with Ledger.open(home) as ledger:
        report = ledger.verify()
        assert report.ok, report.problem
        assert ledger.store.diagnosis_events(sid, 0)[-1][0] == 3  # nothing added


def test_a_followed_stream_hears_from_the_server_while_quiet_and_gives_up_on_a_stopped_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A session waiting for its approval makes no event for up to an hour: a proxy took
    # its stream for idle and cut it (nginx does after 60 s), and a client following a
    # server that had stopped (SIGSTOP, a host gone) waited for ever. The server sends a
    # blank line whenever the stream has been quiet for `keepalive_s`; the client gives
    # up after `FOLLOW_SILENCE_S` without a line.
    config = tmp_path / "diagnosis.json"
    config.write_text('{"keepalive_s": 0.3}')
    monkeypatch.setenv("EPISTEME_DIAGNOSIS_CONFIG", str(config))
    monkeypatch.setattr(client_module, "FOLLOW_SILENCE_S", 2.0)
    home, auth = _home(tmp_path / "home", "dev", "agent")
    token = auth["Authorization"].removeprefix("Bearer ")
    with served(home) as (url, proc):
        body = {"problem": "database connection failures in prod", "environment": "prod"}
        started = httpx.post(f"{url}/diagnose", json=body, headers=auth, timeout=30.0)
        assert started.json()["status"] == "waiting_for_approval", started.text
        sid = started.json()["id"]
        raw: list[bytes] = []
        stream = httpx.stream("GET", f"{url}/status/{sid}?stream=true", headers=auth)
        with stream as r:
            for line in ndjson_raw_lines(r.iter_bytes()):
                raw.append(line)
                if raw.count(b"") == 3:
                    break
        assert [json.loads(line)["type"] for line in raw if line] == [
            "session_start",
            "text",
            "approval_required",
        ]
        assert raw[3:] == [b"", b"", b""]  # after the events: blank lines, nothing else
        with Client(url, token, timeout=1.0) as ep:
            events = ep.session_events(sid)
            assert [next(events)["type"] for _ in range(3)] == [
                "session_start",
                "text",
                "approval_required",
            ]
            os.killpg(proc.pid, signal.SIGSTOP)
            try:
                with pytest.raises(StoreUnavailable, match="sent nothing for 2 s"):
                    next(events)
            finally:
                os.killpg(proc.pid, signal.SIGCONT)


def ndjson_raw_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Every line of a body as sent, blank ones too (NDJSON readers skip those)."""
    rest = b""
    for chunk in chunks:
        *complete, rest = (rest + chunk).split(b"\n")
        yield from complete


def test_a_server_that_says_it_serves_answers_at_once(tmp_path: Path) -> None:
    # "serving … on …" came before the port listened: a script that waited for the line
    # and then called the server had its connection refused for about a second.
    url, proc = processes.spawn(tmp_path / "home", ())
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("serving "):
                break
        else:
            raise AssertionError("the server never said it was serving")
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # no retry
    finally:
        processes.stop(proc)


def test_head_on_a_followed_stream_answers_and_frees_the_connection(tmp_path: Path) -> None:
    # HEAD is answered as GET without the body; a followed diagnosis used to run on for
    # nobody, keeping the connection busy until the session ended (an hour by default).
    home, auth = _home(tmp_path / "home", "dev", "agent")
    with served(home) as (url, _proc):
        body = {"problem": "database connection failures in prod", "environment": "prod"}
        started = httpx.post(f"{url}/diagnose", json=body, headers=auth, timeout=30.0)
        assert started.json()["status"] == "waiting_for_approval", started.text
        sid = started.json()["id"]
        with httpx.Client(base_url=url, headers=auth, timeout=5.0) as one_connection:
            head = one_connection.head(f"/status/{sid}", params={"stream": "true"})
            assert head.status_code == 200
            assert head.headers["content-type"] == "application/x-ndjson"
            assert head.content == b""
            # the same keep-alive connection serves the next request at once
            assert one_connection.get("/health").status_code == 200
            assert one_connection.head("/v1/export").status_code == 403


def test_two_servers_with_workers_on_one_home_keep_their_own_counters(tmp_path: Path) -> None:
    # Each server with workers shares its counters through files; a second server on the
    # same home used to wipe the first's files as it started, and the first's scrapes
    # then reported nothing it had counted.
    home, auth = _home(tmp_path / "shared", "reader", "agent")
    counted = 'episteme_queries_total{lens="latest"}'
    with served(home, "--workers", "2") as (first, _):
        for _ in range(3):
            r = httpx.post(
                f"{first}/v1/query", json={"subject": "svc", "lens": "latest"}, headers=auth
            )
            assert r.status_code == 200, r.text
        with served(home, "--workers", "2") as (second, _):
            assert f"{counted} 3.0" in httpx.get(f"{first}/metrics", headers=auth).text
            assert counted not in httpx.get(f"{second}/metrics", headers=auth).text
    assert sorted(p.name for p in home.iterdir() if p.is_dir()) == []  # nothing left behind


def test_a_counters_directory_in_the_environment_is_not_a_single_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # prometheus-client reads PROMETHEUS_MULTIPROC_DIR when it is imported: inherited by
    # `serve` with one worker, it made the server write its counters there, carry them
    # over restarts, or stop at its first request when the directory was gone.
    home, auth = _home(tmp_path / "home", "reader", "agent")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "gone"))
    for _ in range(2):  # a restart starts from nothing
        with served(home) as (url, proc):
            r = httpx.post(f"{url}/v1/query", json={"subject": "svc"}, headers=auth)
            assert r.status_code == 200, r.text
            scraped = httpx.get(f"{url}/metrics", headers=auth).text
            assert 'episteme_queries_total{lens="approved"} 1.0' in scraped
            assert proc.poll() is None
    assert not (tmp_path / "gone").exists()


def test_the_console_of_a_server_with_workers_signs_in_on_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each worker process made its own random signing key unless EPISTEME_CONSOLE_KEY was
    # set, so a sign-in, or a page after it, failed whenever another worker answered.
    home = tmp_path / "console"
    with Ledger.init(home) as ledger:
        token, _ = ledger.issue_token("oncall", ["supervisor"], by="admin")
    monkeypatch.delenv("EPISTEME_CONSOLE_KEY", raising=False)
    with served(home, "--workers", "2") as (url, _):
        for _ in range(6):
            # a fresh connection for every request, so that either worker may answer
            form = httpx.get(f"{url}/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf is not None
            cookies = dict(form.cookies)
            signed = httpx.post(
                f"{url}/login",
                data={"csrf": csrf.group(1), "token": token, "next": "/"},
                cookies=cookies,
            )
            assert signed.status_code == 303, signed.text
            cookies |= dict(signed.cookies)
            for _ in range(4):
                page = httpx.get(f"{url}/", cookies=cookies)
                assert page.status_code == 200, page.headers.get("location")


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux: from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Whether `pid` runs (an exited process not yet reaped, a zombie, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_stop_when_their_server_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves a server no chance to stop its workers: they notice, and stop, so
    that none goes on answering on its port with no one to restart or stop it."""
    home = tmp_path / "killed"
    with served(home, "--workers", "2") as (url, proc):
        workers = _children(proc.pid)
        assert len(workers) >= 2  # the workers and multiprocessing's resource tracker
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 20
        while any(_running(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [w for w in workers if _running(w)]
        for w in left:  # not to leave them running if the test fails
            os.kill(w, signal.SIGKILL)
        assert left == []
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=2)
