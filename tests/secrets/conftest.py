"""Fixtures for the secret broker's tests: a real dev vault (uvicorn on a free port) and
brokers pointed at it, on a clock the tests move."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from episteme.secrets.broker import Broker
from episteme.secrets.devserver import create_devserver_app
from episteme.timeutil import ManualClock
from tests.integration.server import live_server

TOKEN = "dev-vault-test-token"
CANARY = "CANARY-5e1f-never-in-a-message"
"""A secret value that no message, repr or log record may ever contain."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def dev_vault() -> Iterator[str]:
    """The dev vault with its default items, behind `TOKEN`; yields its URL."""
    with live_server(create_devserver_app(None, TOKEN)) as url:
        yield url


def connect_env(url: str, token: str = TOKEN) -> dict[str, str]:
    return {"EPISTEME_OP_CONNECT_HOST": url, "EPISTEME_OP_CONNECT_TOKEN": token}


@pytest.fixture
def broker(dev_vault: str, clock: ManualClock) -> Broker:
    """A broker over every registered backend, with 1Password Connect at the dev vault."""
    return Broker.from_env(connect_env(dev_vault), clock=clock)


def canary_items() -> dict[str, Any]:
    """An items file whose secrets include `CANARY`, with sections and a look-alike."""
    return {
        "vaults": [
            {
                "name": "Infrastructure",
                "items": [
                    {
                        "title": "canary-db",
                        "category": "DATABASE",
                        "fields": {"username": "app", "password": CANARY},
                        "sections": {
                            "admin": {"password": CANARY + "-admin", "role": "rw"},
                            "replica": {
                                "password": CANARY + "-replica",
                                "host": "replica",
                                "role": "ro",
                            },
                        },
                    },
                    {"title": "twin", "fields": {"token": "one"}},
                    {"title": "Twin", "fields": {"token": "two"}},
                    {"title": "twin ", "fields": {"token": "three"}},
                ],
            },
            {"name": "Duplicate", "items": []},
            {"name": "duplicate", "items": []},
            {"name": "DUPLICATE", "items": []},
        ]
    }


@pytest.fixture(scope="module")
def canary_vault() -> Iterator[str]:
    """A dev vault serving `canary_items()`; yields its URL."""
    with live_server(create_devserver_app(canary_items(), TOKEN)) as url:
        yield url
