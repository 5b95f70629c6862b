"""The ES256 story in a fresh SQLite ledger, and the console over it, signed in or not.

The story follows `episteme demo`: RS256 approved at 09:00, ES256 proposed by the
research agent at 14:30, the orchestrator reading with lens ``latest`` at 20:40 and
deciding at 21:00; the on-call person looks at 03:00 the next morning.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient
from whenever import Instant

from episteme.api import Settings, create_app
from episteme.diagnose.config import DiagnosisConfig
from episteme.diagnose.engine import DiagnosisEngine
from episteme.ledger import Ledger
from episteme.timeutil import ManualClock
from tests.diagnose.test_engine import Vault, database

NIGHT = Instant.parse_iso("2026-11-22T03:00:00Z")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def at(text: str) -> Instant:
    return Instant.parse_iso(f"2026-11-21T{text}:00Z")


@dataclass
class Story:
    ledger: Ledger
    clock: ManualClock
    home: Path
    rs256: str
    es256: str
    query: str
    decision: str
    tokens: dict[str, str] = field(default_factory=dict)

    def engine(self) -> DiagnosisEngine:
        config = DiagnosisConfig(specialist_timeout_s=2.0)
        return DiagnosisEngine(
            self.ledger, Vault(), config=config, specialists={"database": database}
        )

    def app(self) -> FastAPI:
        settings = Settings(home=self.home, mcp=False, background=False)
        return create_app(settings, ledger=self.ledger, diagnosis=self.engine())


def tell(home: Path) -> Story:
    clock = ManualClock(at("09:00"))
    ledger = Ledger.init(home, clock=clock)
    rs = ledger.assert_one(
        subject="auth.jwt.algorithm", value="RS256", agent="platform-team",
        lifecycle="approved", confidence=0.92, source="runbook://auth/jwt",
        epoch="platform-baseline",
    )  # fmt: skip
    clock.set(at("14:30"))
    es = ledger.assert_one(
        subject="auth.jwt.algorithm", value="ES256", agent="research-agent", confidence=0.87,
        source="https://www.rfc-editor.org/rfc/rfc7518", evidence="ES256 gives shorter tokens",
        epoch="rfc-research-1",
    )  # fmt: skip
    clock.set(at("20:40"))
    read = ledger.query("auth.jwt", agent="orchestrator", lens="latest")
    assert read.query_id is not None
    clock.set(at("21:00"))
    decision = ledger.decide(
        "use ES256 for auth-service tokens", agent="orchestrator", query_ids=[read.query_id]
    )
    clock.set(NIGHT)
    story = Story(ledger, clock, home, rs.id, es.id, read.query_id, decision.id)
    people = {"oncall": ["supervisor", "approver"], "agent-1": ["agent"], "lead": ["supervisor"]}
    for name, roles in people.items():
        story.tokens[name], _ = ledger.issue_token(name, roles, by="admin")
    return story


@pytest.fixture
def story(tmp_path: Path) -> Iterator[Story]:
    told = tell(tmp_path / "home")
    with told.ledger:
        yield told


class Console:
    """A TestClient that signs in through the form, as a browser would."""

    def __init__(self, client: TestClient, story: Story) -> None:
        self.client = client
        self.story = story

    def sign_in(self, who: str, next: str = "/") -> Any:
        form = self.client.get("/login")
        csrf = CSRF.search(form.text)
        assert csrf is not None
        token = self.story.tokens.get(who, who)
        data = {"csrf": csrf.group(1), "token": token, "next": next}
        return self.client.post("/login", data=data)

    def csrf(self, path: str = "/") -> str:
        found = CSRF.search(self.client.get(path).text)
        assert found is not None
        return found.group(1)

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, **kw)

    def post(self, path: str, data: dict[str, Any], **kw: Any) -> Any:
        return self.client.post(path, data=data, **kw)


@pytest.fixture
def console(story: Story) -> Iterator[Console]:
    with TestClient(story.app(), follow_redirects=False) as client:
        yield Console(client, story)
