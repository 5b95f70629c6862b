"""An app over a fresh ledger, with one token per role, driven in-process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from episteme.api import Settings, create_app
from episteme.ledger import Ledger

ROLES = ("agent", "supervisor", "approver", "admin")


@dataclass
class Api:
    ledger: Ledger
    client: TestClient
    app: FastAPI
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, role: str | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}

    def call(self, method: str, path: str, role: str | None = "agent", **kw: Any) -> Any:
        headers = self.auth(role) | kw.pop("headers", {})
        return self.client.request(method, path, headers=headers, **kw)


@pytest.fixture
def api(ledger: Ledger, home: Any) -> Iterator[Api]:
    app = create_app(Settings(home=home, mcp=False), ledger=ledger)
    with TestClient(app, raise_server_exceptions=False) as client:
        out = Api(ledger, client, app)
        for role in ROLES:
            out.tokens[role], _ = ledger.issue_token(f"{role}-1", [role], by="admin")
        yield out
