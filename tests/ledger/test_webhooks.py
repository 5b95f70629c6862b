"""Webhook delivery, against a real HTTP receiver on 127.0.0.1, on both stores: signing,
retries with backoff, timeouts, giving up, Slack bodies, and secrets that stay secret."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from whenever import Instant, TimeDelta

from episteme.errors import InvalidInput
from episteme.ledger import Ledger
from episteme.ledger.store import Store
from episteme.ledger.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    NOTIFICATION_TYPES,
    QUEUE,
    SIGNATURE_HEADER,
    Deliverer,
    Notification,
    NotificationType,
    WebhookSpec,
    backoff,
    deliveries,
    job_payload,
    render,
    sign,
    verify,
)
from episteme.timeutil import ManualClock, to_us
from tests.receiver import Receiver

SECRET = b"s3cret"
SECOND_US = 1_000_000


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as c:
        yield c


# -- helpers ----------------------------------------------------------------------------


def note(key: str = "correction:x_abc", type: NotificationType = "correction") -> Notification:
    return Notification(
        key=key,
        type=type,
        at=Instant.parse_iso("2026-11-21T09:00:00.123456Z"),
        summary="payments.timeout was corrected: 30s, not 3s",
        data={"assertion_id": "a_1", "subject": "payments.timeout"},
    )


def enqueue(
    store: Store, clock: ManualClock, name: str = "hook", n: Notification | None = None
) -> int:
    return store.enqueue_job(QUEUE, job_payload(name, n or note()), to_us(clock.now()))


def deliverer(
    store: Store,
    clock: ManualClock,
    client: httpx.Client,
    specs: Mapping[str, WebhookSpec],
    environ: Mapping[str, str] | None = None,
) -> Deliverer:
    return Deliverer(
        store,
        lambda: specs,
        clock,
        worker="w1",
        client=client,
        environ={} if environ is None else environ,
    )


def only_delivery(store: Store) -> Any:
    [d] = deliveries(store)
    return d


def move_to_next_attempt(store: Store, clock: ManualClock) -> None:
    d = only_delivery(store)
    assert d.next_attempt is not None
    assert d.next_attempt > clock.now()
    clock.set(d.next_attempt)


# -- signing ------------------------------------------------------------------------------


def test_a_signature_verifies_with_the_right_secret_time_and_body_only() -> None:
    body = b'{"key":"correction:x_abc"}'
    header = sign(SECRET, 1_800_000_000, body)
    assert header.startswith("t=1800000000,v1=")
    assert verify(SECRET, header, body, now_s=1_800_000_000)
    assert verify(SECRET, header, body, now_s=1_800_000_299)
    assert not verify(b"wrong", header, body, now_s=1_800_000_000)
    assert not verify(SECRET, header, body, now_s=1_800_000_301)  # stale
    assert not verify(SECRET, header, body, now_s=1_799_999_600)  # from the future
    assert not verify(SECRET, header, body + b" ", now_s=1_800_000_000)  # tampered body
    tampered_time = header.replace("t=1800000000", "t=1800000001")
    assert not verify(SECRET, tampered_time, body, now_s=1_800_000_000)
    assert not verify(SECRET, "", body, now_s=1_800_000_000)
    assert not verify(SECRET, "v1=abc", body, now_s=1_800_000_000)
    # while a secret is rotated, either of two signatures may match
    rotated = f"{sign(b'old', 1_800_000_000, body)},{header.split(',')[1]}"
    assert verify(SECRET, rotated, body, now_s=1_800_000_000)


def test_a_webhook_recorded_before_a_rule_it_breaks_is_still_read(ledger: Ledger) -> None:
    # a URL signed in its query is refused now; one recorded before must not make the
    # ledger's webhooks unreadable (the list, the gardener's deliveries)
    url = "https://hooks.example/x?token=abc"
    with pytest.raises(InvalidInput, match=r"carries a credential \(token\)"):
        WebhookSpec(name="old", url=url)
    ledger.set_webhook(WebhookSpec.model_construct(name="old", url=url), by="admin")
    assert ledger.webhooks()["old"].url == url


# -- delivery -----------------------------------------------------------------------------


def test_a_process_that_stops_leading_leases_no_more_deliveries(
    ledger: Ledger, clock: ManualClock, receiver: Receiver, client: httpx.Client
) -> None:
    """Leadership lost during a run: the delivery in hand ends, the rest wait unleased for
    the new leader (they went on, up to 50, taking turns with it)."""
    store = ledger.store
    spec = WebhookSpec(name="hook", url=f"{receiver.url}/in")
    for n in range(5):
        enqueue(store, clock, n=note(key=f"correction:x_{n}"))
    d = deliverer(store, clock, client, {"hook": spec})
    leading = [True]

    def stopped() -> bool:
        return not leading[0]

    real = d._attempt

    def attempt_then_lose_leadership(*args: Any) -> None:
        real(*args)
        leading[0] = False

    d._attempt = attempt_then_lose_leadership  # type: ignore[method-assign]
    assert d.run_once(stopped) == 1
    jobs = store.jobs(QUEUE)
    assert sorted((j.state, j.attempts) for j in jobs) == [("done", 1)] + [("ready", 0)] * 4


def test_500_twice_then_200_is_delivered_on_the_third_attempt(
    ledger: Ledger, clock: ManualClock, receiver: Receiver, client: httpx.Client
) -> None:
    store = ledger.store
    spec = WebhookSpec(name="hook", url=f"{receiver.url}/in", secret="env:HOOK_SECRET")
    job_id = enqueue(store, clock)
    receiver.fail_next = 2
    d = deliverer(store, clock, client, {"hook": spec}, {"HOOK_SECRET": SECRET.decode()})

    assert d.run_once() == 1
    first = only_delivery(store)
    assert (first.state, first.attempts, first.error) == ("retrying", 1, "answered HTTP 500")
    assert d.run_once() == 0  # not due yet
    move_to_next_attempt(store, clock)
    assert d.run_once() == 1
    assert only_delivery(store).attempts == 2
    move_to_next_attempt(store, clock)
    assert d.run_once() == 1

    done = only_delivery(store)
    assert (done.job_id, done.state, done.attempts) == (job_id, "delivered", 3)
    assert (done.webhook, done.key, done.type) == ("hook", "correction:x_abc", "correction")
    assert done.next_attempt is None
    assert done.done_at == clock.now()
    [job] = store.jobs(QUEUE)
    assert (job.state, job.attempts) == ("done", 3)
    assert d.run_once() == 0
    assert len(receiver.requests) == 3

    last = receiver.requests[-1]
    assert last.path == "/in"
    headers = {k.lower(): v for k, v in last.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers[EVENT_HEADER.lower()] == "correction"
    assert headers[DELIVERY_HEADER.lower()] == "correction:x_abc"
    now_s = clock.now().timestamp()
    assert verify(SECRET, headers[SIGNATURE_HEADER.lower()], last.body, now_s)
    assert not verify(b"not-it", headers[SIGNATURE_HEADER.lower()], last.body, now_s)
    assert orjson.loads(last.body) == {
        "key": "correction:x_abc",
        "type": "correction",
        "at": "2026-11-21T09:00:00.123456Z",
        "summary": "payments.timeout was corrected: 30s, not 3s",
        "data": {"assertion_id": "a_1", "subject": "payments.timeout"},
    }
    assert {r.headers[DELIVERY_HEADER] for r in receiver.requests} == {"correction:x_abc"}


def test_a_receiver_slower_than_the_timeout_is_a_timeout_and_retried(
    ledger: Ledger, clock: ManualClock, receiver: Receiver, client: httpx.Client
) -> None:
    store = ledger.store
    spec = WebhookSpec(name="hook", url=receiver.url, timeout_s=0.5)
    enqueue(store, clock)
    receiver.stall_s = 5.0
    d = deliverer(store, clock, client, {"hook": spec})

    assert d.run_once() == 1
    slow = only_delivery(store)
    assert (slow.state, slow.attempts, slow.error) == ("retrying", 1, "timed out after 0.5 s")

    receiver.stall_s = 0.0
    move_to_next_attempt(store, clock)
    assert d.run_once() == 1
    assert only_delivery(store).state == "delivered"
    assert len(receiver.requests) == 2


@contextlib.contextmanager
def dripping(every_s: float, for_s: float) -> Iterator[str]:
    """A receiver that reads the request, then answers its status line a byte at a time,
    one every `every_s`, for at most `for_s`: never too slow for one read's timeout."""
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            deadline = time.monotonic() + for_s
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 1000:
                if done.wait(every_s) or time.monotonic() > deadline:
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/in"
    finally:
        done.set()
        server.close()
        worker.join(5)


def test_a_receiver_that_drips_its_answer_is_cut_off_within_the_lease(
    ledger: Ledger, clock: ManualClock, client: httpx.Client
) -> None:
    # A byte a second passed every read's timeout: the delivery stayed "sending" for
    # 72 s with a 2 s timeout, past its lease (3 × 2 s + 30 s), when another worker may
    # lease the job and send it again.
    store = ledger.store
    with dripping(every_s=0.1, for_s=30.0) as url:
        spec = WebhookSpec(name="hook", url=url, timeout_s=0.5)
        enqueue(store, clock)
        d = deliverer(store, clock, client, {"hook": spec})
        assert d.run_once() == 1
    cut = only_delivery(store)
    assert (cut.state, cut.attempts) == ("retrying", 1)
    assert cut.error == "took longer than 1.5 s in all: cut off"


def test_a_deliverer_closed_mid_backlog_takes_no_more_jobs(
    ledger: Ledger, clock: ManualClock, receiver: Receiver, client: httpx.Client
) -> None:
    # A server stopping with deliveries due: the delivery in hand ends, and the rest stay
    # ready for the next leader instead of being leased, and tried, after the stop.
    store = ledger.store
    spec = WebhookSpec(name="hook", url=receiver.url, timeout_s=5.0)
    for i in range(5):
        enqueue(store, clock, n=note(key=f"correction:x_{i}"))
    receiver.stall_s = 0.5
    d = deliverer(store, clock, client, {"hook": spec})
    handled: list[int] = []
    worker = threading.Thread(target=lambda: handled.append(d.run_once()))
    worker.start()
    deadline = time.monotonic() + 5
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    d.close()  # while the first delivery waits for its answer
    worker.join(10)
    assert handled == [1]
    assert len(receiver.requests) == 1
    states = sorted(j.state for j in store.jobs(QUEUE))
    assert states == ["done", "ready", "ready", "ready", "ready"]


def test_after_max_attempts_the_delivery_fails_for_good(
    ledger: Ledger, clock: ManualClock, receiver: Receiver, client: httpx.Client
) -> None:
    store = ledger.store
    spec = WebhookSpec(name="hook", url=receiver.url, max_attempts=3)
    enqueue(store, clock)
    receiver.fail_next = 100
    d = deliverer(store, clock, client, {"hook": spec})

    for _ in range(2):
        assert d.run_once() == 1
        move_to_next_attempt(store, clock)
    assert d.run_once() == 1
    gone = only_delivery(store)
    assert (gone.state, gone.attempts, gone.error) == ("failed", 3, "answered HTTP 500")
    assert gone.next_attempt is None
    assert gone.done_at == clock.now()

    clock.advance(TimeDelta(hours=24))
    assert d.run_once() == 0
    assert len(receiver.requests) == 3
    assert store.jobs(QUEUE)[0].state == "failed"


def test_an_unknown_webhook_fails_for_good_without_a_request(
    ledger: Ledger, clock: ManualClock, receiver: Receiver, client: httpx.Client
) -> None:
    store = ledger.store
    enqueue(store, clock, name="removed")
    d = deliverer(store, clock, client, {"hook": WebhookSpec(name="hook", url=receiver.url)})

    assert d.run_once() == 1
    gone = only_delivery(store)
    assert (gone.webhook, gone.state, gone.attempts) == ("removed", "failed", 1)
    assert gone.error == "no webhook named 'removed'"
    assert receiver.requests == []


def test_deliveries_page_on_by_job_id(ledger: Ledger, clock: ManualClock) -> None:
    ids = [enqueue(ledger.store, clock, n=note(f"correction:x_{n}")) for n in range(5)]
    pages = [deliveries(ledger.store, limit=2)]
    while pages[-1]:
        pages.append(deliveries(ledger.store, limit=2, before=pages[-1][-1].job_id))
    assert [d.job_id for page in pages for d in page] == ids[::-1]
    assert [len(page) for page in pages] == [2, 2, 1, 0]
    with pytest.raises(InvalidInput, match="before must be a delivery's job id") as exc:
        deliveries(ledger.store, before=0)
    assert exc.value.field == "before"


def test_a_missing_environment_variable_is_named_and_retried(
    ledger: Ledger, clock: ManualClock, receiver: Receiver, client: httpx.Client
) -> None:
    store = ledger.store
    spec = WebhookSpec(name="slack", url="env:SLACK_URL", format="slack")
    enqueue(store, clock, name="slack")
    environ: dict[str, str] = {}
    d = deliverer(store, clock, client, {"slack": spec}, environ)

    assert d.run_once() == 1
    waiting = only_delivery(store)
    assert waiting.state == "retrying"
    assert waiting.error == "environment variable SLACK_URL is not set"

    environ["SLACK_URL"] = receiver.url
    move_to_next_attempt(store, clock)
    assert d.run_once() == 1
    assert only_delivery(store).state == "delivered"


def test_a_refused_connection_is_retried(
    ledger: Ledger, clock: ManualClock, client: httpx.Client
) -> None:
    store = ledger.store
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens there now
    enqueue(store, clock)
    d = deliverer(
        store, clock, client, {"hook": WebhookSpec(name="hook", url=f"http://127.0.0.1:{port}")}
    )

    assert d.run_once() == 1
    failed = only_delivery(store)
    assert (failed.state, failed.error) == ("retrying", "could not connect")


def test_a_slack_webhook_gets_a_slack_message(
    ledger: Ledger, clock: ManualClock, receiver: Receiver, client: httpx.Client
) -> None:
    n = Notification(
        key="conflict:payments.timeout",
        type="conflict",
        at=Instant.parse_iso("2026-11-21T09:00:00Z"),
        summary="payments.timeout: 2 approved values disagree <30s & 3s>",
        data={},
    )
    body = render(n, "slack")
    escaped = "payments.timeout: 2 approved values disagree &lt;30s &amp; 3s&gt;"
    assert body == {
        "text": escaped,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": escaped}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": "*conflict* · 2026-11-21T09:00:00Z · conflict:payments.timeout",
                    }
                ],
            },
        ],
    }

    store = ledger.store
    enqueue(store, clock, n=n)
    spec = WebhookSpec(name="hook", url=receiver.url, format="slack")
    assert deliverer(store, clock, client, {"hook": spec}).run_once() == 1
    [request] = receiver.requests
    assert orjson.loads(request.body) == body
    assert SIGNATURE_HEADER not in request.headers  # no secret: unsigned
    assert only_delivery(store).state == "delivered"


def test_secrets_stay_in_the_environment(
    ledger: Ledger,
    clock: ManualClock,
    receiver: Receiver,
    client: httpx.Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = "CANARY-7f3a9c1e"
    environ = {
        "HOOK_URL": f"{receiver.url}/services/{canary}-url",
        "HOOK_SECRET": f"{canary}-secret",
        "BROKEN_URL": f"not a url {canary}",
    }
    specs = {
        "hook": WebhookSpec(name="hook", url="env:HOOK_URL", secret="env:HOOK_SECRET"),
        "broken": WebhookSpec(name="broken", url="env:BROKEN_URL"),
    }
    store = ledger.store
    enqueue(store, clock, name="hook")
    enqueue(store, clock, name="broken", n=note(key="expired:a_2", type="expired"))
    receiver.fail_next = 1
    d = deliverer(store, clock, client, specs, environ)

    with caplog.at_level(logging.DEBUG):
        assert d.run_once() == 2
        clock.advance(TimeDelta(hours=1))
        assert d.run_once() == 2

    assert len(receiver.requests) == 2  # the secret URL was used ...
    assert receiver.requests[0].path == f"/services/{canary}-url"
    secret = environ["HOOK_SECRET"].encode()
    last = receiver.requests[-1]
    assert verify(secret, last.headers[SIGNATURE_HEADER], last.body, clock.now().timestamp())

    # ... and is written nowhere
    rows = store.conn.execute("SELECT * FROM jobs").fetchall()
    assert rows
    assert canary not in repr(rows)
    shown = [x.model_dump_json() for x in deliveries(store)]
    assert canary not in repr(shown)
    errors = {x.webhook: x.error for x in deliveries(store)}
    assert errors == {
        "hook": "answered HTTP 500",
        "broken": "environment variable BROKEN_URL does not hold an http:// or https:// URL",
    }
    assert canary not in caplog.text
    assert "POST env:HOOK_URL" in caplog.text  # httpx's request log names the variable
    assert all(canary not in s.describe() for s in specs.values())
    assert canary not in repr(specs) + str([s.model_dump_json() for s in specs.values()])

    with pytest.raises(InvalidInput) as refused:
        WebhookSpec(name="hook", url=receiver.url, secret=f"{canary}-literal")
    assert canary not in str(refused.value)
    with pytest.raises(InvalidInput) as bad_url:
        WebhookSpec(name="hook", url=f"hooks.slack.com/services/{canary}")
    assert canary not in str(bad_url.value)
    with pytest.raises(InvalidInput) as unresolved:
        specs["broken"].resolve_url(environ)
    assert canary not in str(unresolved.value)


# -- specs ------------------------------------------------------------------------------


def test_a_spec_round_trips_and_describes_itself_as_given() -> None:
    spec = WebhookSpec(
        name="oncall-slack",
        url="env:SLACK_URL",
        format="slack",
        events=frozenset({"trust_drop", "correction"}),
        secret="env:HOOK_SECRET",
        timeout_s=2.5,
        max_attempts=4,
    )
    data = spec.model_dump(mode="json")
    assert data["events"] == ["correction", "trust_drop"]  # sorted: the journal hashes it
    assert WebhookSpec.model_validate(data) == spec
    assert spec.describe() == (
        "oncall-slack: slack to env:SLACK_URL (correction, trust_drop; signed with "
        "env:HOOK_SECRET; timeout 2.5 s; up to 4 attempts)"
    )
    plain = WebhookSpec(name="h", url="https://example.org/hook")
    assert plain.events == NOTIFICATION_TYPES
    assert (plain.format, plain.timeout_s, plain.max_attempts, plain.secret) == (
        "json",
        5.0,
        8,
        None,
    )
    assert "all events; unsigned" in plain.describe()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"name": "has space"}, "invalid webhook name 'has space': start with a letter"),
        ({"url": "ftp://example.org"}, "invalid webhook url: give an http:// or https:// URL"),
        ({"url": "example.org/hook"}, "invalid webhook url: give an http:// or https:// URL"),
        ({"url": "env:1BAD"}, "invalid webhook url: env:'1BAD' is not a variable name"),
        ({"secret": "hunter2"}, "put it in an environment variable and give env:VARNAME"),
        ({"secret": "env:"}, "invalid webhook secret: env:'' is not a variable name"),
        ({"format": "teams"}, "invalid webhook format: input should be 'json' or 'slack'"),
        ({"events": ["correction", "birthday"]}, "invalid webhook events: input should be"),
        (
            {"events": []},
            "invalid webhook events: name at least one of approval, conflict, correction",
        ),
        ({"timeout_s": 0}, "invalid webhook timeout_s: 0.0 is out of range: give more than 0"),
        ({"timeout_s": 61}, "invalid webhook timeout_s: 61.0 is out of range"),
        ({"max_attempts": 0}, "invalid webhook max_attempts: 0 is out of range: give 1 to 50"),
        ({"max_attempts": 51}, "invalid webhook max_attempts: 51 is out of range"),
        ({"colour": "red"}, "invalid webhook: unknown field 'colour'; the fields are name, url"),
        ({"url": None}, "invalid webhook url: input should be a valid string"),
    ],
)
def test_bad_specs_are_refused_in_one_readable_line(given: dict[str, Any], message: str) -> None:
    data = {"name": "hook", "url": "https://example.org/hook", **given}
    with pytest.raises(InvalidInput) as caught:
        WebhookSpec(**data)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(InvalidInput):
        WebhookSpec.model_validate(data)


def test_a_spec_without_a_url_says_so() -> None:
    with pytest.raises(InvalidInput, match=r"^invalid webhook: url is required$"):
        WebhookSpec.model_validate({"name": "hook"})


def test_backoff_doubles_from_two_seconds_up_to_ten_minutes_with_jitter() -> None:
    def low() -> float:
        return 0.0

    def high() -> float:
        return 1.0

    def mid() -> float:
        return 0.5

    assert [backoff(n, rand=mid) // SECOND_US for n in range(1, 11)] == [
        2, 4, 8, 16, 32, 64, 128, 256, 512, 600,
    ]  # fmt: skip
    assert backoff(1, rand=low) == int(1.6 * SECOND_US)
    assert backoff(1, rand=high) == int(2.4 * SECOND_US)
    assert backoff(1000, rand=mid) == 600 * SECOND_US
    assert 480 * SECOND_US <= backoff(50) <= 720 * SECOND_US
