"""The exception tree of Episteme: every error a user can meet, in one place.

::

    EpistemeError                 anything Episteme raises on purpose
    ├── UserError                 your mistake: fix the input and retry   (HTTP 4xx, exit 2)
    │   ├── InvalidInput          a value that cannot be used             (400)
    │   │   ├── TooLarge          a request body over the size limit      (413)
    │   │   ├── Unsupported       a body compressed, or not JSON          (415)
    │   │   └── BodyStalled       a request body that stopped arriving    (408)
    │   ├── Unauthenticated       no token, or one that is unknown,
    │   │                         expired or revoked                      (401)
    │   ├── Forbidden             the token's roles do not allow it       (403)
    │   ├── NotFound              an id, subject or name that is unknown  (404)
    │   └── Conflict              a move the current state forbids        (409)
    └── WorldError                the world failed: retry or repair       (HTTP 5xx, exit 1)
        ├── StoreUnavailable      the database cannot be opened or used   (503)
        ├── SpecialistError       a diagnosis specialist cannot reach or
        │                         sign in to its system (in diagnose.findings)
        ├── SecretStoreError      a secret store is down or refuses us
        │                         (in secrets.store: ...Unavailable, ...Refused)
        └── IntegrityError        the journal or projections are damaged  (500)

Each error carries its HTTP status, its CLI exit code and a message that says what to do.
Messages never contain secret values.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator

TOKEN_PREFIX = "ep_"
"""How every bearer token begins (`episteme.ledger.access.new_secret`)."""
_START = (
    r"(?:(?<![A-Za-z0-9_\-])|(?<=\\[abfnrtv])|(?<=\\x[0-9a-fA-F]{2})|(?<=\\u[0-9a-fA-F]{4})"
    r"|(?<=%[0-9a-fA-F]{2}))" + re.escape(TOKEN_PREFIX)
)
"""Where a token starts: its prefix, not inside a word (`keep_alive`, `step_build_…`), or
right after an escape sequence (JSON's or Python's `\\n`, `\\u001f`, as a repr or a JSON
text writes a newline or a control character before it) or a percent-encoded character
(`Bearer%20ep_…`, a header pasted from a URL)."""
_SECRET_LIKE = re.compile(_START + r"[A-Za-z0-9_\-]{8,}")
"""A token, or the start of one."""
_BODY = r"[A-Za-z0-9_\-]{43}(?![A-Za-z0-9_\-])"
_MIXED = r"(?=[A-Za-z0-9_\-]{0,42}[A-Z])(?=[A-Za-z0-9_\-]{0,42}[a-z])"
_TOKEN = re.compile(
    _START + _BODY  # where a token starts and ends
    + "|" + r"(?<=[A-Za-z0-9_\-])" + re.escape(TOKEN_PREFIX) + _MIXED + _BODY  # glued before
    + "|" + _START + _MIXED + r"[A-Za-z0-9_\-]{43}"  # glued after
)  # fmt: skip
"""A whole bearer token: the prefix and 43 URL-safe characters (256 random bits), where
a token starts (`_START`) and ends; or, when its 43 characters mix capitals and small
letters (as random ones do all but once in billions, and a word's seldom do: `step_`
and 43 small letters stays a word), glued to what comes before it (`key_ep_…`) or after
it (`ep_…_old`). Not glued on both sides: inside a run of URL-safe characters (a JWT,
base64url data) `ep_` and 43 more come by chance, about once in 260,000 positions."""

_SHOWN_TOKEN = re.compile(
    _START + _BODY + "|" + re.escape(TOKEN_PREFIX) + _MIXED + r"[A-Za-z0-9_\-]{43}"
)
"""What is masked where text is shown: `_TOKEN`'s tokens, and one glued on both sides
too (`mmm…ep_…zzz`, a method's name): in an error, masking by chance costs a few
characters of it, where refusing a write by chance would lose the write."""


def holds_token(text: str) -> bool:
    """Whether `text` holds a whole bearer token (what is recorded must not)."""
    return TOKEN_PREFIX in text and _TOKEN.search(text) is not None


def hide_secrets(text: str) -> str:
    """`text` with anything shaped like a bearer token (or the start of one) masked: what
    a caller put in a path, a query or a body may be someone's secret, pasted in the
    wrong place, and an error that quotes it back must not repeat it."""
    if TOKEN_PREFIX not in text:
        return text
    return _SHOWN_TOKEN.sub(TOKEN_PREFIX + "…", _SECRET_LIKE.sub(TOKEN_PREFIX + "…", text))


def hide_tokens(text: str) -> str:
    """`text` with every whole bearer token masked, and nothing else: for whole replies
    made by others (the MCP SDK's), where a word that only begins as a token does is
    someone's data."""
    return _SHOWN_TOKEN.sub(TOKEN_PREFIX + "…", text) if TOKEN_PREFIX in text else text


_URL_PASSWORD = re.compile(
    r"(?i)((?<![a-z0-9+.\-])[a-z][a-z0-9+.\-]*+://[^/\s:@]*+:)[^\s@/]++(?=@)"
)
"""The password of a URL's userinfo (`https://user:password@host`)."""


def hide_url_passwords(text: str) -> str:
    """`text` with the password of every URL in it masked (`user:***@`): a configured
    address (a secret store's, an endpoint's) may carry one, and a client library's
    error repeats the address whole."""
    return _URL_PASSWORD.sub(r"\1***", text) if "://" in text else text


_LONG_QUOTE = re.compile(r"'(?:[^'\\\n]|\\.){200,}'" + r'|"(?:[^"\\\n]|\\.){200,}"')
"""A value quoted in a message (as `{value!r}` writes it) of 200 characters or more."""


def _bounded(message: str) -> str:
    """`message` with each long quoted value cut to its start and its length: a message
    that quotes what was sent (a time, an id, a name) never carries back a megabyte."""
    if len(message) < 200:
        return message
    return _LONG_QUOTE.sub(
        lambda m: f"{m[0][:61]}…{m[0][0]} ({len(m[0]) - 2:,} characters)", message
    )


class EpistemeError(Exception):
    """Base of every error Episteme raises on purpose. Its message and field never hold
    a token: one quoted from the input is masked here, for every surface at once (the
    API's problem, the CLI's line, MCP's tool error, the console's page, the log)."""

    status: int = 500
    exit_code: int = 1
    title: str = "Episteme error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        message = _bounded(hide_url_passwords(hide_secrets(message)))
        super().__init__(message)
        self.message = message
        self.field = None if field is None else hide_secrets(field)


@contextlib.contextmanager
def naming(field: str) -> Iterator[None]:
    """Errors raised inside about an id name `field`, the input that holds it
    (`query_ids`, `derived_from`), where the lookup knew only that it read an id."""
    try:
        yield
    except EpistemeError as exc:
        if exc.field in (None, "id"):
            exc.field = field
        raise


class UserError(EpistemeError):
    """The caller's mistake: bad input or wrong usage."""

    status = 400
    exit_code = 2
    title = "Bad request"


class InvalidInput(UserError):
    """A value that cannot be used (syntax, range, type)."""

    title = "Invalid input"


class TooLarge(InvalidInput):
    """A request body over the configured size limit."""

    status = 413
    title = "Request too large"


class Unsupported(InvalidInput):
    """A request body in a form the server does not read (compressed, not JSON)."""

    status = 415
    title = "Unsupported media type"


class BodyStalled(InvalidInput):
    """A request body that stopped arriving before its end."""

    status = 408
    title = "Request timeout"


class Unauthenticated(UserError):
    """No bearer token, or one that is unknown, expired or revoked."""

    status = 401
    title = "Unauthenticated"


class Forbidden(UserError):
    """The principal's roles do not allow the operation."""

    status = 403
    title = "Forbidden"


class NotFound(UserError):
    """An id, subject, lens or epoch that the ledger does not know."""

    status = 404
    title = "Not found"


class Conflict(UserError):
    """A change the current state forbids, such as a disallowed lifecycle move."""

    status = 409
    title = "Conflict"


class WorldError(EpistemeError):
    """Something outside the caller's input failed."""

    status = 503
    exit_code = 1
    title = "Service unavailable"


class StoreUnavailable(WorldError):
    """The store cannot be opened or used (missing, foreign, corrupt, locked, newer)."""


class SchemaBehind(StoreUnavailable):
    """A ledger of an older schema that was not migrated here (a role or a database that
    may not, or a store opened to read only): what can still be read, and how to migrate."""


class IntegrityError(WorldError):
    """The journal's chain or the projections do not match what was recorded."""

    status = 500
    title = "Integrity failure"


def database_failed(exc: BaseException) -> StoreUnavailable:
    """A database error the store did not turn into one of these (a damaged file, a disk
    that failed under a read), as the world failing: the same words everywhere."""
    lines = str(exc).strip().splitlines()
    said = lines[0] if lines else type(exc).__name__
    return StoreUnavailable(f"the ledger's database failed: {said}")


def from_database(exc: BaseException) -> bool:
    """Whether `exc` was raised by a database driver: SQLite's, or psycopg's."""
    return isinstance(exc, sqlite3.DatabaseError) or type(exc).__module__.startswith("psycopg")


def refuse_tokens(text: str) -> None:
    """Refuse input whose text (its JSON, as it would be kept) holds a whole bearer
    token: pasted where a name, a value or a problem goes, it would be recorded, and
    shown to whoever reads it."""
    if holds_token(text):
        raise InvalidInput(
            "the input holds a bearer token (ep_…): a secret is never recorded;"
            " take it out, and if it leaked, revoke it (episteme token revoke)"
        )
