"""env:// and file:// references: the development backends, through the broker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from episteme.errors import InvalidInput, NotFound
from episteme.secrets import Broker
from episteme.secrets.env import MAX_FILE_BYTES, EnvBackend
from episteme.secrets.store import SecretStoreError
from episteme.timeutil import ManualClock
from tests.secrets.conftest import CANARY

pytestmark = pytest.mark.anyio


async def test_env_references_read_the_environment(clock: ManualClock) -> None:
    broker = Broker.from_env({"DB_PASSWORD": CANARY, "EMPTY": ""}, clock=clock)
    lease = await broker.lease(["env://DB_PASSWORD", "env://EMPTY"], ttl_s=60)
    assert lease.get("env://DB_PASSWORD") == CANARY
    assert lease.get("env://EMPTY") == ""
    with pytest.raises(NotFound, match=r"^env://NOPE: the environment variable NOPE is not set$"):
        await broker.lease(["env://NOPE"], ttl_s=60)
    with pytest.raises(InvalidInput, match="env://VAR_NAME"):
        await broker.lease(["env://not-a-name"], ttl_s=60)


async def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPISTEME_TEST_SECRET", "from-the-process")
    assert await EnvBackend().fetch("env://EPISTEME_TEST_SECRET") == "from-the-process"
    assert "from-the-process" not in repr(EnvBackend())
    assert os.environ["EPISTEME_TEST_SECRET"] == "from-the-process"


async def test_file_references_strip_one_trailing_newline(
    tmp_path: Path, clock: ManualClock
) -> None:
    files = {
        "plain": "s3cret",
        "newline": "s3cret\n",
        "two-newlines": "s3cret\n\n",
        "crlf": "s3cret\r\n",
        "multi line": "line one\nline two\n",
        "unicode": "pässwörd\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode())
    broker = Broker.from_env({}, clock=clock)
    refs = {name: f"file://{tmp_path / name}".replace(" ", "%20") for name in files}
    lease = await broker.lease(list(refs.values()), ttl_s=60)
    got = {name: lease.get(ref) for name, ref in refs.items()}
    assert got == {
        "plain": "s3cret",
        "newline": "s3cret",
        "two-newlines": "s3cret\n",
        "crlf": "s3cret",
        "multi line": "line one\nline two",
        "unicode": "pässwörd",
    }
    localhost = f"file://localhost{tmp_path / 'plain'}"
    assert (await broker.lease([localhost], 60)).get(localhost) == "s3cret"


async def test_file_reference_errors(tmp_path: Path, clock: ManualClock) -> None:
    broker = Broker.from_env({}, clock=clock)
    (tmp_path / "binary").write_bytes(b"\xff\xfe" + CANARY.encode())
    (tmp_path / "big").write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    cases: list[tuple[str, type[Exception], str]] = [
        (f"file://{tmp_path}/missing", NotFound, "there is no file"),
        (f"file://{tmp_path}", SecretStoreError, "cannot read"),
        (f"file://{tmp_path}/binary", InvalidInput, "is not UTF-8 text"),
        (f"file://{tmp_path}/big", InvalidInput, "is over 1 MiB"),
        ("file://relative/path", InvalidInput, "absolute path"),
    ]
    for ref, error, says in cases:
        with pytest.raises(error, match=says) as caught:
            await broker.lease([ref], ttl_s=60)
        assert ref in str(caught.value)
        assert CANARY not in str(caught.value)
