"""Alertmanager's webhook (version 4) → incidents → diagnosis up to the approval step.

Alertmanager sends a group of alerts again and again while they fire (its repeat
interval): an incident is keyed by the group key, each alert's fingerprint and when it
started firing (`startsAt`, the same in every repeat), so the same alert opens one
incident however often it arrives, and firing again after it stopped, a new one. A
resolved alert resolves its incident. A payload with at least one new firing alert opens
one session for the group.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from episteme.diagnose.config import ENVIRONMENTS
from episteme.diagnose.engine import MAX_PROBLEM, DiagnosisEngine
from episteme.errors import InvalidInput, refuse_tokens
from episteme.ledger.canonical import check_texts
from episteme.text import quoted

log = logging.getLogger(__name__)


class Alert(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str | None = None


class AlertmanagerPayload(BaseModel):
    """The body Alertmanager posts to a webhook receiver."""

    model_config = ConfigDict(extra="allow", strict=True)

    version: Literal["4"]
    groupKey: str = Field(min_length=1, max_length=4096)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    truncatedAlerts: int = 0
    alerts: list[Alert] = Field(min_length=1, max_length=1000)

    def check_storable(self) -> None:
        """Refuse text no backend can store (a NUL character, a lone surrogate) in what
        an incident and its session keep, while Alertmanager waits for the answer: the
        session opens after it."""
        kept = self.model_dump(include=_KEPT)
        kept["alerts"] = [a.model_dump(include=_KEPT_OF_ALERT) for a in self.alerts]
        check_texts(kept)
        refuse_tokens(orjson.dumps(kept).decode())
        environment_of(self.commonLabels)  # one it does not know is refused, not guessed


_KEPT = {"groupKey", "receiver", "externalURL", "groupLabels", "commonLabels", "commonAnnotations"}
_KEPT_OF_ALERT = {"labels", "annotations", "fingerprint", "generatorURL"}


def _fingerprint(alert: Alert) -> str:
    if alert.fingerprint:
        return alert.fingerprint
    return hashlib.blake2b(
        orjson.dumps(alert.labels, option=orjson.OPT_SORT_KEYS), digest_size=8
    ).hexdigest()


def problem_of(payload: AlertmanagerPayload) -> str:
    """The problem statement a session starts from: the alert's own words."""
    notes = payload.commonAnnotations
    name = payload.commonLabels.get("alertname") or payload.groupLabels.get("alertname", "alert")
    text = notes.get("summary") or notes.get("description") or ""
    problem = f"{name}: {text}".strip(": ") or name
    return problem if len(problem) <= MAX_PROBLEM else problem[: MAX_PROBLEM - 1] + "…"


_ENVIRONMENTS = {"production": "prod", "stage": "staging", "development": "dev"}


def environment_of(labels: dict[str, str]) -> str:
    """The environment the alerts' `environment` (or `env`) label names; prod without
    one. A value that names none of them is refused: diagnosing a `qa` alert as prod
    asked for prod's credentials."""
    given = labels.get("environment") or labels.get("env")
    value = (given or "prod").lower()
    value = _ENVIRONMENTS.get(value, value)
    if value not in ENVIRONMENTS:
        label = "environment" if labels.get("environment") else "env"
        raise InvalidInput(
            f"the alerts' {label} label is {quoted(given or '')}, which is none of the"
            " environments diagnosed (prod, staging, dev; production, stage and development"
            " are read as those): relabel it in Alertmanager, or route these alerts elsewhere",
            field=f"commonLabels.{label}",
        )
    return value


async def receive(engine: DiagnosisEngine, payload: AlertmanagerPayload, requester: str) -> int:
    """Open incidents for the payload's new firing alerts and start one session for them,
    and resolve the incidents of its resolved alerts; the number of incidents opened."""
    now = engine._now()
    opened = []
    labels = dict(payload.commonLabels)  # and those of each new firing alert, below
    for alert in payload.alerts:
        # an alert without `startsAt` keys by group and fingerprint alone: resolving its
        # incident is then what lets it open again
        episode = f"\x00{alert.startsAt}" if alert.startsAt else ""
        key = (
            "i_"
            + hashlib.blake2b(
                f"{payload.groupKey}\x00{_fingerprint(alert)}{episode}".encode(), digest_size=12
            ).hexdigest()
        )
        if alert.status == "resolved":
            await asyncio.to_thread(engine.store.resolve_incident, key, now)
            continue
        text = orjson.dumps({**payload.commonLabels, **alert.labels}).decode()
        # keyed by its firing, a resolved incident stays resolved: a repeat of that
        # firing that comes after the resolution (notifications are handled as they
        # come, not in order) counts, and opens nothing
        new, _ = await asyncio.to_thread(
            engine.store.open_incident, key, payload.groupKey, text, now, not alert.startsAt
        )
        if new:
            opened.append(key)
            # a label the alerts of the group do not share (each its own `pod`) is not
            # in commonLabels: its name still says which specialists to ask
            for name, value in alert.labels.items():
                labels.setdefault(name, value)
    if not opened:
        return 0
    environment = environment_of(payload.commonLabels)
    session = await engine.start(
        problem_of(payload),
        environment,
        requester=requester,
        context={
            "alertmanager": {
                "groupKey": payload.groupKey,
                "receiver": payload.receiver,
                "externalURL": payload.externalURL,
            }
        },
        labels=labels,
        incident=opened[0],
    )
    for key in opened:
        await asyncio.to_thread(engine.store.link_incident, key, session.id, now)
    return len(opened)
