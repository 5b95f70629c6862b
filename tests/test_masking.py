"""What keeps a secret out of text: a bearer token's shape (`episteme.errors`), the log
filter (`episteme.logs`) and the diagnosis scrubber (`episteme.diagnose.findings`)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from episteme.diagnose.findings import Finding, Redactor
from episteme.errors import (
    InvalidInput,
    NotFound,
    hide_secrets,
    hide_tokens,
    hide_url_passwords,
    holds_token,
)
from episteme.logs import HideSecrets, QuietDisconnects, uvicorn_config

TOKEN = "ep_" + "Zq3-_x" * 7 + "a"  # the prefix and 43 URL-safe characters


@pytest.mark.parametrize(
    "text",
    [
        f"name {TOKEN}",
        json.dumps({"m": "x\n" + TOKEN}),  # after JSON's \n, the n is no word
        repr("x\t" + TOKEN),  # after a repr's \t
        json.dumps({"m": "x\x1f" + TOKEN}),  # after \u001f
        repr("x\x1f" + TOKEN),  # after \x1f
        f"Authorization:%20Bearer%20{TOKEN}",  # a header pasted from a URL
    ],
)
def test_a_token_is_found_after_an_escape_sequence(text: str) -> None:
    assert TOKEN in text
    assert holds_token(text)  # refused where it would be recorded
    assert TOKEN[3:] not in hide_tokens(text)
    assert TOKEN[3:] not in hide_secrets(text)


def test_a_word_that_holds_the_prefix_is_not_a_token() -> None:
    words = ("keep_alive_timeout", "step_" + "a" * 43, "deep_" + "b" * 43, "step_" + "B" * 43)
    for word in (*words, "deep_" + "b1" * 30):
        assert not holds_token(word)
        assert hide_secrets(word) == word
    # Inside a run of URL-safe characters (base64url data, a JWT), `ep_` and 43 more come
    # by chance: such a value is recorded, but where it is shown in an error, masked.
    blob = "eyJhbGci" + TOKEN + "Qk9Y"
    assert not holds_token(blob)
    assert TOKEN[3:] not in hide_tokens(blob)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        *[("-", ""), ("_", ""), ("key_", ""), ("x", ""), ("Bearer-", ""), ("9", "")],
        *[("", "_old"), ("", "-prod"), ("", "0"), ("", "x")],
    ],
)
def test_a_token_glued_to_what_comes_before_or_after_it_is_still_found(
    before: str, after: str
) -> None:
    # `_START` wants no word character before the prefix, so that `step_…` is a word, and
    # a token ended where no URL-safe character follows: a token pasted right after one
    # (`key_ep_…`) or right before one (`ep_…_old`) was recorded whole.
    text = f"value {before}{TOKEN}{after} end"
    assert holds_token(text)
    assert TOKEN[3:] not in hide_tokens(text)
    assert TOKEN[3:] not in hide_secrets(text)
    assert TOKEN[3:] not in str(InvalidInput(f"invalid subject {before + TOKEN!r}"))


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(HideSecrets())
    log = logging.getLogger("tests.masking")
    log.addHandler(handler)
    log.propagate = False
    try:
        yield log, out
    finally:
        log.removeHandler(handler)


def test_the_log_filter_masks_messages_arguments_and_tracebacks(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logged
    log.warning("name %r, error %s, count %d, %s", "x\n" + TOKEN, ValueError(TOKEN), 3, TOKEN)
    try:
        raise RuntimeError(f"boom {TOKEN}")
    except RuntimeError:
        log.exception("failed")
    written = out.getvalue()
    assert TOKEN[3:] not in written
    assert "name 'x\\nep_…', error ep_…, count 3, ep_…" in written
    assert "RuntimeError: boom ep_…" in written


def test_the_log_filter_keeps_a_records_arguments_for_formatters_that_read_them(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    # uvicorn's access formatter unpacks the record's arguments: they were set to None
    record = logging.LogRecord(
        "a", logging.INFO, "f", 1, '%s - "%s %s"', ("1.2.3.4", "GET", f"/v1/blame/{TOKEN}"), None
    )
    assert HideSecrets().filter(record)
    client, method, path = record.args  # type: ignore[misc]
    assert (client, method, path) == ("1.2.3.4", "GET", "/v1/blame/ep_…")


def test_a_malformed_log_call_is_not_raised_into_its_caller(
    logged: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The filter raised TypeError into the caller; now the record reaches the handler,
    # which deals with it as with any malformed record (the test runner makes that a
    # failure unless the logging module is told to stay quiet)
    log, out = logged
    monkeypatch.setattr(logging, "raiseExceptions", False)
    log.warning("value %d", "x")
    log.warning("next %s", "line")
    assert out.getvalue() == "next line\n"


def _finding(**said: object) -> Finding:
    base: dict[str, object] = {
        "specialist": "database",
        "code": "db.connections",
        "severity": "info",
        "claim": "",
        "tool": "psycopg",
    }
    return Finding.model_validate(base | said)


def test_the_scrubber_blanks_a_cut_secret_only_where_a_text_was_cut() -> None:
    scrub = Redactor(["postgres-Pa55word!", "info2024!x", "database-Pw-2024"])
    assert scrub("password=postgres-Pa…") == "password=[redacted]…"
    assert scrub("password=postgres-Pa55word! rejected") == "password=[redacted] rejected"
    # a text that merely ends with the start of one is not cut: kept
    assert scrub("login failed for user postgres") == "login failed for user postgres"
    # what files a finding is not scrubbed: a value that starts as they do breaks nothing
    found = scrub.finding(_finding(claim="severity info", query="SELECT 1"))
    assert (found.specialist, found.severity, found.claim) == ("database", "info", "severity info")


def test_the_scrubber_knows_a_secret_in_the_forms_libraries_write_it() -> None:
    # An HTTP library refusing a header quotes it as bytes' repr ('\\'' and '\\x0b'
    # escaped); a JSON log line written with ensure_ascii escapes every non-ASCII letter.
    weird = "CANARY-7f3a9e \"quoted\" 'single'\nsecond-line\\back\x0b"
    accented = "pässwört-CANARY-9"
    scrub = Redactor([weird, accented, "sp ace&=/CANARY"])
    header = f"Invalid header value {('Bearer ' + weird).encode()!r}"
    assert scrub(header) == "Invalid header value b'Bearer [redacted]'"
    assert scrub(repr(weird)) == "'[redacted]'"
    assert scrub(json.dumps({"k": accented})) == '{"k": "[redacted]"}'
    assert scrub("?password=sp%20ace%26%3D%2FCANARY&x=1") == "?password=[redacted]&x=1"
    assert scrub("?password=sp+ace%26%3D%2FCANARY&x=1") == "?password=[redacted]&x=1"


def test_the_scrubber_blanks_what_is_left_of_a_secret_wherever_a_text_was_cut() -> None:
    # Cut, then followed by more text: the cut was looked for at the very end only.
    scrub = Redactor(["CANARY7F3AKEYXYZ", "CANARY-7f3a9e-dbpw"])
    said = scrub("UnauthorizedOperation: Credential=CANARY7F3… (the key lacks this permission)")
    assert said == "UnauthorizedOperation: Credential=[redacted]… (the key lacks this permission)"
    said = scrub("held by pid 7 (idle: PASSWORD 'CANARY-7f3a9e-d…); the longest wait is 52.4 s.")
    assert said == "held by pid 7 (idle: PASSWORD '[redacted]…); the longest wait is 52.4 s."
    assert scrub("a; b …7f3a9e-dbpw' done") == "a; b …[redacted]' done"  # cut from the left
    assert scrub("first CANARY7F3...; second") == "first [redacted]...; second"
    # five characters are not taken for a secret; six are
    assert scrub("CANAR… and CANARY…") == "CANAR… and [redacted]…"


def test_the_scrubber_finds_a_value_before_it_masks_urls_and_is_linear() -> None:
    # The URL rule ran first: a secret holding a URL, or an @, was split and not found.
    hook = "https://api:K3y@hooks.example.com/services/T0SECRETPATH"
    assert Redactor([hook])(f"POST {hook} failed") == "POST [redacted] failed"
    said = Redactor(["p@ssw0rd!"])("postgresql://app:p@ssw0rd!@db-1:5432/app")
    assert said == "postgresql://app:***@db-1:5432/app"  # found whole, then the URL rule
    # with no value to scrub, a finding's URL passwords are masked all the same
    found = Redactor(()).finding(_finding(claim="GET https://u:hunter2@prom:9090 failed"))
    assert found.claim == "GET https://u:***@prom:9090 failed"
    # a scheme's characters repeated: the rule backtracked from every one of them
    long = "a." * 200_000 + "://x"
    assert hide_url_passwords(long) == long


def test_a_password_in_a_url_is_masked_in_errors_and_by_the_scrubber() -> None:
    said = "1Password Connect at http://op:CANARY-hostpw@127.0.0.1:1 cannot be reached"
    assert "CANARY" not in str(InvalidInput(said))
    assert "http://op:***@127.0.0.1:1" in str(InvalidInput(said))
    botocore = 'Could not connect to the endpoint URL: "http://user:CANARY-urlpw@127.0.0.1:1/"'
    assert (
        Redactor([])(botocore)
        == 'Could not connect to the endpoint URL: "http://user:***@127.0.0.1:1/"'
    )
    for kept in ("postgresql://u@db/x", "https://a.example/c:d@e", "see http://host:8080/x"):
        assert hide_url_passwords(kept) == kept


def test_every_handler_of_the_servers_logging_hides_secrets() -> None:
    # the application's own loggers reached only Python's last-resort handler, which
    # filters nothing
    config = uvicorn_config()
    assert config["filters"]["secrets"]["()"] == "episteme.logs.HideSecrets"
    assert config["filters"]["disconnects"]["()"] == "episteme.logs.QuietDisconnects"
    assert all(h["filters"] == ["disconnects", "secrets"] for h in config["handlers"].values())
    assert config["root"]["handlers"] == ["episteme"]
    assert {"uvicorn", "uvicorn.error", "uvicorn.access"} <= set(config["loggers"])


def test_an_error_quotes_a_long_value_by_its_start_and_its_length() -> None:
    # 500 KB sent as a time, an id or an argument's name came back whole in the error
    said = InvalidInput(f"cannot read time {'x' * 500_000!r}: use RFC 3339").message
    assert said == f"cannot read time '{'x' * 60}…' (500,000 characters): use RFC 3339"
    short = f"no assertion with id {'a' * 64!r}"
    assert NotFound(short).message == short  # a whole id stays whole


def test_a_client_that_hung_up_is_not_logged_as_an_error() -> None:
    from starlette.requests import ClientDisconnect

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            info = sys.exc_info()
        return logging.LogRecord("mcp", logging.ERROR, "f", 1, "Error handling POST", (), info)

    assert not QuietDisconnects().filter(record(ClientDisconnect()))
    assert QuietDisconnects().filter(record(RuntimeError("a real one")))
