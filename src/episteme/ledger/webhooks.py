"""Webhooks: the gardener's notifications, posted to people's endpoints, signed and retried.

The gardener raises a `Notification` once (by its key) and enqueues one job per
webhook that takes its type, on the job queue `QUEUE` (`job_payload` builds the
job). A `Deliverer`, run by whichever process does background work, leases those
jobs, posts the rendered body (plain JSON, or a Slack incoming-webhook message) and
completes the job on a 2xx answer. Anything else fails the attempt, and the job
comes back after an exponential backoff until the webhook's `max_attempts` is spent.

A webhook's URL may be secret (a Slack incoming webhook is its own credential) and
its signing secret always is: both may be given as ``env:VARNAME`` and are read
from the environment at delivery time only. Neither the resolved URL nor the secret
is ever written to the ledger, a job row, an error text, an exception message or a
log line (httpx's request log shows such a URL as ``env:VARNAME``).

Receivers check the ``X-Episteme-Signature`` header with `verify`: the header is
``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import random
import re
import socket
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_serializer,
    field_validator,
    model_validator,
)
from whenever import Instant

from episteme.errors import EpistemeError, InvalidInput, NotFound
from episteme.ledger.background import Job
from episteme.ledger.model import check_before, check_limit, check_name
from episteme.text import plural
from episteme.timeutil import Clock, rfc3339, to_us

if TYPE_CHECKING:
    import httpx

    from episteme.ledger.store import Store

log = logging.getLogger(__name__)

QUEUE = "webhook"
"""The job queue webhook deliveries travel on."""

SIGNATURE_HEADER = "X-Episteme-Signature"
EVENT_HEADER = "X-Episteme-Event"
DELIVERY_HEADER = "X-Episteme-Delivery"

NotificationType = Literal["correction", "conflict", "trust_drop", "expired", "approval"]
"""What a notification is about; "approval": a diagnosis session waits for an approver."""
NOTIFICATION_TYPES: frozenset[NotificationType] = frozenset(get_args(NotificationType))
Format = Literal["json", "slack"]
DeliveryState = Literal["pending", "retrying", "sending", "delivered", "failed"]

_SECOND_US = 1_000_000
_BACKOFF_FIRST_US = 2 * _SECOND_US
_BACKOFF_CAP_US = 600 * _SECOND_US
_LEASE_MARGIN_US = 30 * _SECOND_US
WHOLE_TIMEOUTS = 3
"""A delivery's whole exchange may take this many times its webhook's timeout (each step
of it, one): the lease is as long, and 30 s more."""
_ENV_PREFIX = "env:"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SLACK_TEXT_MAX = 3000  # Slack refuses a section text longer than this
_URL_HELP = "give an http:// or https:// URL, or env:VARNAME to read it from the environment"


class Notification(BaseModel):
    """Something raised (by the gardener, or by diagnosis), as a webhook receives it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    """Idempotency key (``correction:x_abc``): the same for every attempt and webhook."""
    type: NotificationType
    at: Instant
    summary: str
    """One line for people."""
    data: dict[str, Any]

    @field_serializer("at", when_used="json")
    def _rfc3339(self, value: Instant) -> str:
        return rfc3339(value)


STORED = "stored"
"""The validation context's key of a spec read back from the ledger (`Ledger.webhooks`):
a rule added since it was recorded does not make a ledger's webhooks unreadable."""


class WebhookSpec(BaseModel):
    """Where notifications go, in which format, for which events, and how hard to try.

    Invalid values raise `InvalidInput` (one line naming the field), never a pydantic
    `ValidationError`, and never echo the URL or the secret.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    url: str
    """An http:// or https:// URL, or ``env:VARNAME`` (the URL may itself be a secret)."""
    format: Format = "json"
    events: frozenset[NotificationType] = NOTIFICATION_TYPES
    secret: str | None = None
    """``env:VARNAME`` holding the signing secret; None sends unsigned requests."""
    timeout_s: float = 5.0
    max_attempts: int = 8

    @model_validator(mode="wrap")
    @classmethod
    def _readable(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            raise _invalid(exc) from None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value == "deliveries":
            raise ValueError("'deliveries' names the list of deliveries: choose another name")
        return check_name(value, "webhook name")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith(_ENV_PREFIX):
            _env_name(value, "url")
        elif not _is_http_url(value):
            raise ValueError(_URL_HELP)
        elif (url := _url(value)).port is not None and not 0 < url.port < 65536:
            raise ValueError(f"port {url.port} is not one (1 to 65535): {_URL_HELP}")
        elif url.fragment or value.endswith("#"):
            # never sent to the receiver; what people put there is a token, if anything
            raise ValueError("a URL's fragment (#…) is never sent: leave it out")
        elif url.userinfo:
            raise ValueError(
                "a URL with credentials in it is refused: put it in an environment "
                "variable and give env:VARNAME"
            )
        elif (info.context or {}).get(STORED):
            pass  # as recorded before the rule below: read back, not refused
        elif _secret_path(url):
            raise ValueError(
                f"a {url.host} hook URL is itself the credential (its path is the secret):"
                " put it in an environment variable and give env:VARNAME"
            )
        elif names := [k for k, _ in url.params.multi_items() if _credential(k)]:
            # ?token=…, ?sig=…, ?code=… (as services sign their hook addresses): a URL
            # that is a secret is kept in the environment, not in the ledger and lists
            raise ValueError(
                f"a URL whose query carries a credential ({', '.join(sorted(set(names)))}) is"
                " refused: put it in an environment variable and give env:VARNAME"
            )
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(_ENV_PREFIX):
            raise ValueError(
                "a literal secret is refused: put it in an environment variable and give "
                "env:VARNAME"
            )
        _env_name(value, "secret")
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: frozenset[NotificationType]) -> frozenset[NotificationType]:
        if not value:
            raise ValueError(f"name at least one of {', '.join(sorted(NOTIFICATION_TYPES))}")
        return value

    @field_validator("timeout_s")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if not 0 < value <= 60:
            raise ValueError(f"{value} is out of range: give more than 0 and at most 60 seconds")
        return value

    @field_validator("max_attempts")
    @classmethod
    def _attempts(cls, value: int) -> int:
        if not 1 <= value <= 50:
            raise ValueError(f"{value} is out of range: give 1 to 50")
        return value

    @field_serializer("events", when_used="json")
    def _sorted(self, value: frozenset[str]) -> list[str]:
        # A stable order: this JSON goes into the journal, whose events are hashed.
        return sorted(value)

    def describe(self) -> str:
        """One line for people; the URL and secret as given (never their values)."""
        events = (
            "all events" if self.events == NOTIFICATION_TYPES else ", ".join(sorted(self.events))
        )
        signed = f"signed with {self.secret}" if self.secret else "unsigned"
        return (
            f"{self.name}: {self.format} to {self.url} ({events}; {signed}; "
            f"timeout {self.timeout_s} s; up to {plural(self.max_attempts, 'attempt')})"
        )

    def resolve_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The URL to post to, read from the environment for ``env:VARNAME``.

        Raises:
            InvalidInput: the variable is unset, empty or holds no http(s) URL (the
                message names the variable, never its value).
        """
        if not self.url.startswith(_ENV_PREFIX):
            return self.url
        name = self.url.removeprefix(_ENV_PREFIX)
        value = _lookup(name, environ, "url")
        if not _is_http_url(value):
            raise InvalidInput(
                f"environment variable {name} does not hold an http:// or https:// URL",
                field="url",
            )
        return value

    def resolve_secret(self, environ: Mapping[str, str] | None = None) -> bytes | None:
        """The signing secret from the environment, or None for an unsigned webhook.

        Raises:
            InvalidInput: the variable is unset or empty (named, its value never shown).
        """
        if self.secret is None:
            return None
        return _lookup(self.secret.removeprefix(_ENV_PREFIX), environ, "secret").encode()


def _invalid(exc: ValidationError) -> InvalidInput:
    # Built by hand rather than with `model.describe`: that one echoes the input, and
    # the input here may be a URL or a secret.
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else None
    if err["type"] == "missing":
        return InvalidInput(f"invalid webhook: {field} is required", field=field)
    if err["type"] == "extra_forbidden":
        known = ", ".join(WebhookSpec.model_fields)
        return InvalidInput(
            f"invalid webhook: unknown field {field!r}; the fields are {known}", field=field
        )
    msg = err["msg"].removeprefix("Value error, ")
    return InvalidInput(
        f"invalid webhook {field or 'spec'}: {msg[:1].lower()}{msg[1:]}", field=field
    )


def _env_name(value: str, field: str) -> str:
    name = value.removeprefix(_ENV_PREFIX)
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(
            f"{_ENV_PREFIX}{name!r} is not a variable name: use letters, digits and _ "
            f"(for example env:EPISTEME_WEBHOOK_{field.upper()})"
        )
    return name


_CREDENTIAL_WORDS = frozenset(
    {
        "token", "secret", "apikey", "pass", "passwd", "password", "pwd", "auth",
        "authorization", "sig", "signature", "credential", "credentials",
    }
)  # fmt: skip
"""Words of a query parameter's name that say it carries a credential."""
_KEYED = frozenset({"api", "access", "secret", "private", "subscription", "function", "auth"})
"""Words before `key` that make it a credential (`api_key`; `partition_key` is none)."""
_NOT_SECRET = frozenset({"page", "next", "continuation"})
"""Words before `token` that make it a position, not a credential (`page_token`)."""
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


_SECRET_PATHS = {
    "hooks.slack.com": "/services/",
    "discord.com": "/api/webhooks/",
    "discordapp.com": "/api/webhooks/",
}
"""Services whose incoming-webhook URLs carry their secret in the path."""


def _secret_path(url: httpx.URL) -> bool:
    start = _SECRET_PATHS.get(url.host.lower())
    return start is not None and url.path.startswith(start) and len(url.path) > len(start)


def _credential(name: str) -> bool:
    """Whether a query parameter's name says it carries a credential: by one of its words
    (`api_key`, `apiKey`, `X-Amz-Signature`, `sig`), or as `key` or `code` alone (as
    services sign hook addresses: `?key=`, `?code=`); not by a part of a word
    (`encoding`, `design`, `author`) nor by `status_code`, `partition_key`, `page_token`."""
    words = [w.lower() for w in _WORD.findall(name)]
    if words in (["key"], ["code"]):
        return True
    for before, word in zip([None, *words], words, strict=False):
        if word == "token" and before in _NOT_SECRET:
            continue
        if word in _CREDENTIAL_WORDS or (word == "key" and before in _KEYED):
            return True
    return False


class _Watchdog:
    """Shuts a delivery's socket down once the delivery has taken `seconds`: a read
    blocked in another thread then fails at once, and the delivery with it."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's trace extension: it names each step, with the connection's stream
        once connected (a new connection each time: the deliverer keeps none)."""
        if event != "connection.connect_tcp.complete":
            return
        stream = info.get("return_value")
        found = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self._socket = found if isinstance(found, socket.socket) else None
            late = self.fired
        if late:
            self._shut()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
        self._shut()

    def _shut(self) -> None:
        with self._lock:
            held = self._socket
        if held is not None:
            with contextlib.suppress(OSError):
                held.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _url(value: str) -> httpx.URL:
    import httpx  # here: the CLI starts faster without it (it loads its own CLI's modules)

    return httpx.URL(value)


def _is_http_url(value: str) -> bool:
    import httpx

    try:
        url = _url(value)
    except (httpx.InvalidURL, TypeError):
        return False
    return (
        url.scheme in ("http", "https")
        and bool(url.host)
        and value.isprintable()
        and not any(c.isspace() for c in value)  # httpx quotes them; no address has them
    )


def _lookup(name: str, environ: Mapping[str, str] | None, field: str) -> str:
    value = (os.environ if environ is None else environ).get(name)
    if not value:
        state = "is not set" if value is None else "is empty"
        raise InvalidInput(f"environment variable {name} {state}", field=field)
    return value


# -- signing -------------------------------------------------------------------------


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `SIGNATURE_HEADER` value for `body` sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, now_s: int, tolerance_s: int = 300) -> bool:
    """Whether `header` signs `body` with `secret`, within `tolerance_s` of `now_s`.

    For receivers. Several ``v1=`` values are accepted (any one may match), so a
    sender can sign with an old and a new secret while the secret is rotated.
    """
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            macs.append(value)
    if timestamp is None or not macs or abs(now_s - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    found = False
    for mac in macs:  # compare with every one, so the time taken says nothing
        found |= hmac.compare_digest(expected.encode(), mac.encode())
    return found


# -- bodies and jobs -----------------------------------------------------------------


def render(notification: Notification, format: Format) -> dict[str, Any]:
    """The body posted for `notification`: itself as JSON, or a Slack message."""
    if format == "json":
        return notification.model_dump(mode="json")
    summary = _slack_escape(notification.summary)[:_SLACK_TEXT_MAX]
    context = (
        f"*{notification.type}* · {rfc3339(notification.at)} · {_slack_escape(notification.key)}"
    )
    return {
        "text": summary,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": summary}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def _slack_escape(text: str) -> str:
    # The three characters Slack's mrkdwn reserves for links and mentions.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def job_payload(name: str, notification: Notification) -> dict[str, Any]:
    """The payload of the job that delivers `notification` to the webhook `name`."""
    check_name(name, "webhook name")
    return {"webhook": name, "notification": notification.model_dump(mode="json")}


def backoff(attempts: int, *, rand: Callable[[], float] = random.random) -> int:
    """Microseconds to wait after failed attempt number `attempts` (1, 2, ...).

    2 s, 4 s, 8 s and so on, at most 10 minutes, each ±20 % so that deliveries
    failing together do not come back together.
    """
    exponent = min(max(attempts, 1) - 1, 20)
    base = min(_BACKOFF_CAP_US, _BACKOFF_FIRST_US * 2**exponent)
    return int(base * (0.8 + 0.4 * rand()))


# -- delivery ------------------------------------------------------------------------


class _HideURLs(logging.Filter):
    """Shows URLs read from the environment as ``env:VARNAME`` in httpx's request log.

    httpx logs every request's URL at INFO; a webhook URL given as ``env:VARNAME`` is a
    credential (a Slack incoming webhook), so its value must not reach a log.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._labels: dict[str, str] = {}

    def hide(self, url: str, label: str) -> None:
        with self._lock:
            self._labels[str(_url(url))] = label

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and self._labels:
            import httpx  # loaded already: httpx is what logs

            record.args = tuple(
                self._labels.get(str(a), a) if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


_HIDE_URLS = _HideURLs()


class _Failed(Exception):
    """One attempt failed: `text` is stored on the job (short, nothing secret)."""

    def __init__(self, text: str, *, retry: bool) -> None:
        super().__init__(text)
        self.text = text
        self.retry = retry


class Deliverer:
    """Delivers the webhook jobs of a store: lease, post, complete or fail.

    `webhooks()` gives the current webhooks by name (read at each `run_once`, so
    changes apply to the next delivery). `environ` is where ``env:VARNAME`` values are
    read (default: the process environment); `client` the HTTP client to post with
    (default: one of its own, closed by `close`).
    """

    def __init__(
        self,
        store: Store,
        webhooks: Callable[[], Mapping[str, WebhookSpec]],
        clock: Clock,
        *,
        worker: str,
        client: httpx.Client | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._store = store
        self._webhooks = webhooks
        self._clock = clock
        self._worker = worker
        self._own_client = client is None
        if client is None:
            import httpx

            # a connection of its own for each delivery: the watchdog of `_post` holds
            # its socket, which a connection taken from a pool would not give it
            no_pool = httpx.Limits(max_keepalive_connections=0)
            client = httpx.Client(follow_redirects=False, limits=no_pool)
        self._client = client
        self._environ = environ
        self._closed = False
        self._in_hand: Job | None = None
        """The job being delivered now, handed back by `hand_back` if it is still so."""
        self.outcome_listeners: list[Callable[[str], None]] = []
        """Told each attempt's outcome: "delivered", "retrying" (failed, tried again
        later) or "failed" (failed for good)."""
        logging.getLogger("httpx").addFilter(_HIDE_URLS)  # once: the same filter object

    def run_once(self, stopped: Callable[[], bool] | None = None, limit: int = 50) -> int:
        """Deliver up to `limit` jobs that are due, until closed or `stopped()` (this
        process no longer leads the background work); how many were handled.

        A failed delivery is recorded on its job, never raised; errors of the store
        itself (the database away) are raised.
        """
        specs = dict(self._webhooks())
        # Connecting, sending and waiting for the answer each get timeout_s.
        longest = max((s.timeout_s for s in specs.values()), default=5.0)
        lease_us = int(WHOLE_TIMEOUTS * longest * _SECOND_US) + _LEASE_MARGIN_US
        handled = 0
        # closed or stopped: the jobs left wait, unleased, for whoever leads
        while handled < limit and not self._closed and not (stopped and stopped()):
            job = self._store.lease_job(QUEUE, self._worker, self._now_us(), lease_us)
            if job is None:
                break
            handled += 1
            self._in_hand = job
            try:
                self._attempt(job, specs)
            except _Failed as failure:
                self._fail(job, failure)
                outcome = "retrying" if failure.retry else "failed"
            else:
                self._complete(job)
                outcome = "delivered"
            finally:
                self._in_hand = None
            for listener in self.outcome_listeners:
                listener(outcome)
        return handled

    def _attempt(self, job: Job, specs: Mapping[str, WebhookSpec]) -> None:
        payload = job.payload
        name = payload.get("webhook") if isinstance(payload, dict) else None
        if not isinstance(name, str):
            raise _Failed("the job is not a webhook delivery", retry=False)
        spec = specs.get(name)
        if spec is None:
            raise _Failed(f"no webhook named {name!r}", retry=False)
        try:
            note = Notification.model_validate(payload.get("notification"))
        except ValidationError:
            raise _Failed("the job's notification is malformed", retry=False) from None
        if note.type not in spec.events:
            raise _Failed(f"webhook {name} no longer takes {note.type} events", retry=False)
        retry = job.attempts < spec.max_attempts
        try:
            url = spec.resolve_url(self._environ)
            secret = spec.resolve_secret(self._environ)
        except InvalidInput as exc:
            raise _Failed(exc.message, retry=retry) from None
        if url != spec.url:
            _HIDE_URLS.hide(url, spec.url)
        body = orjson.dumps(render(note, spec.format))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "episteme-webhook",
            EVENT_HEADER: note.type,
            DELIVERY_HEADER: note.key,
        }
        if secret is not None:
            now_s = self._clock.now().timestamp()
            headers[SIGNATURE_HEADER] = sign(secret, now_s, body)
        status = self._post(url, body, headers, spec.timeout_s, retry)
        if not 200 <= status < 300:
            extra = " (redirects are not followed)" if 300 <= status < 400 else ""
            raise _Failed(f"answered HTTP {status}{extra}", retry=retry)

    def _post(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float, retry: bool
    ) -> int:
        # Only the status is read: the answer's body is the receiver's business, and
        # its error texts never reach the job (they may quote the URL).
        import httpx

        # Each step (connecting, sending, reading) waits at most timeout_s for the next
        # bytes; a receiver that sends a byte a second would pass every step's wait and
        # hold the delivery past its lease, for another worker to lease and send again.
        # The watchdog shuts the socket down once the whole has taken 3 × timeout_s.
        watchdog = _Watchdog(WHOLE_TIMEOUTS * timeout_s)
        try:
            with self._client.stream(
                "POST",
                url,
                content=body,
                headers=headers,
                timeout=httpx.Timeout(timeout_s),
                extensions={"trace": watchdog.trace},
            ) as response:
                return response.status_code
        except httpx.ConnectTimeout:
            text = f"timed out connecting after {timeout_s} s"
        except httpx.TimeoutException:
            text = f"timed out after {timeout_s} s"
        except httpx.TransportError as exc:
            if watchdog.fired:
                text = f"took longer than {WHOLE_TIMEOUTS * timeout_s:g} s in all: cut off"
            elif isinstance(exc, httpx.ConnectError):
                text = "could not connect"
            elif isinstance(exc, httpx.RemoteProtocolError):
                text = "answered with a broken HTTP response"
            else:
                text = f"the connection failed ({type(exc).__name__})"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            text = f"the request failed ({type(exc).__name__})"
        finally:
            watchdog.cancel()
        raise _Failed(text, retry=retry)

    def _complete(self, job: Job) -> None:
        self._settle(job, lambda now: self._store.complete_job(job.id, self._worker, now))

    def _fail(self, job: Job, failure: _Failed) -> None:
        retry_in = backoff(job.attempts) if failure.retry else None
        log.warning(
            "webhook job %s, attempt %s: %s%s",
            job.id,
            job.attempts,
            failure.text,
            "" if failure.retry else " (giving up)",
        )
        self._settle(
            job,
            lambda now: self._store.fail_job(job.id, self._worker, now, failure.text, retry_in),
        )

    def _settle(self, job: Job, settle: Callable[[int], None]) -> None:
        try:
            settle(self._now_us())
        except NotFound:
            # The lease ran out and another worker took the job: its outcome counts.
            log.warning("webhook job %s: lease lost before it was settled", job.id)

    def _now_us(self) -> int:
        return to_us(self._clock.now())

    def hand_back(self) -> None:
        """Take no more jobs, and hand back the delivery in hand, if any: ready again at
        once for whichever process leads, rather than leased for minutes more to one that
        is about to exit (a stopping server waited for it, and a slow receiver kept it).
        Its receiver may get it twice, as after any retry."""
        self._closed = True
        job = self._in_hand
        if job is not None:
            failure = _Failed("the server stopped while sending it", retry=True)
            log.warning("webhook job %s: %s; handed back", job.id, failure.text)
            with contextlib.suppress(EpistemeError):  # settled meanwhile, or the store away
                self._store.fail_job(job.id, self._worker, self._now_us(), failure.text, 0)

    def close(self) -> None:
        """Take no more jobs (a `run_once` under way ends after the one in hand) and close
        the HTTP client, if it is the deliverer's own."""
        self._closed = True
        if self._own_client:
            self._client.close()

    def __enter__(self) -> Deliverer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- what was delivered --------------------------------------------------------------


class Delivery(BaseModel):
    """One notification on its way to one webhook (`episteme webhook deliveries`)."""

    job_id: int
    webhook: str
    key: str
    type: str
    state: DeliveryState
    """``pending`` (not tried yet), ``retrying`` (failed, will try again), ``sending``
    (leased to a worker now), ``delivered``, or ``failed`` (for good)."""
    attempts: int
    error: str | None
    """The last failure, if any (kept after a later success)."""
    next_attempt: Instant | None
    """When it will be tried next (pending or retrying only)."""
    created_at: Instant
    done_at: Instant | None


_STATES: dict[str, DeliveryState] = {"leased": "sending", "done": "delivered", "failed": "failed"}


def deliveries(store: Store, limit: int = 100, *, before: int | None = None) -> list[Delivery]:
    """The newest `limit` webhook deliveries, newest first; with `before`, those queued
    before the delivery of that job id (the last of the page before)."""
    check_limit(limit)
    check_before(before, "a delivery's job id")
    out = []
    for job in store.jobs(QUEUE, limit, before):
        payload = job.payload if isinstance(job.payload, dict) else {}
        note = payload.get("notification")
        note = note if isinstance(note, dict) else {}
        waiting = job.state == "ready"
        state = _STATES.get(job.state, "retrying" if job.attempts else "pending")
        out.append(
            Delivery(
                job_id=job.id,
                webhook=str(payload.get("webhook", "?")),
                key=str(note.get("key", "?")),
                type=str(note.get("type", "?")),
                state=state,
                attempts=job.attempts,
                error=job.error,
                next_attempt=job.run_after if waiting else None,
                created_at=job.created_at,
                done_at=job.done_at,
            )
        )
    return out
