"""How diagnosis is set up: which credential references and settings each specialist
gets per environment, how long an approval may wait, and whether requesters may approve
their own sessions.

The defaults use the references of the bundled dev vault (`episteme dev-vault`). A JSON
file named by `EPISTEME_DIAGNOSIS_CONFIG` replaces any part of them::

    {"approval_ttl_s": 3600, "self_approval": false,
     "specialists": {"database": {"prod": {"settings": {"port": 5432, "dbname": "app"},
                                           "credentials": {"password": "op://…"}}}}}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from episteme.errors import InvalidInput
from episteme.ledger.model import describe

ENVIRONMENTS = ("prod", "staging", "dev")


class Access(BaseModel):
    """What a specialist needs in one environment."""

    model_config = ConfigDict(extra="forbid")

    credentials: dict[str, str] = Field(default_factory=dict)
    """Role → credential reference (``op://vault/item/field``)."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """Non-secret settings (ports, URLs, regions, namespaces)."""


def _db(item: str, host: bool) -> Access:
    refs = {
        "username": f"op://Infrastructure/{item}/username",
        "password": f"op://Infrastructure/{item}/password",
    }
    if host:
        refs["host"] = f"op://Infrastructure/{item}/host"
    return Access(credentials=refs)


def _aws() -> Access:
    return Access(
        credentials={
            "cloudwatch-access-key": "op://Infrastructure/aws-cloudwatch/access-key",
            "cloudwatch-secret-key": "op://Infrastructure/aws-cloudwatch/secret-key",
            "ec2-access-key": "op://Infrastructure/aws-ec2/access-key",
            "ec2-secret-key": "op://Infrastructure/aws-ec2/secret-key",
        }
    )


def _defaults() -> dict[str, dict[str, Access]]:
    k8s = Access(credentials={"token": "op://Infrastructure/k8s-prod/token"})
    return {
        "database": {
            "prod": _db("prod-db", True),
            "staging": _db("staging-db", False),
            "dev": _db("staging-db", False),
        },
        "cloud": {"prod": _aws(), "staging": _aws(), "dev": _aws()},
        "kubernetes": {"prod": k8s, "staging": k8s, "dev": k8s},
        "observability": {"prod": Access(), "staging": Access(), "dev": Access()},
    }


class DiagnosisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approval_ttl_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
    self_approval: bool = False
    specialist_timeout_s: float = Field(default=30.0, gt=0, le=600)
    lease_ttl_s: float = Field(default=900.0, gt=0, le=86400)
    specialists: dict[str, dict[str, Access]] = Field(default_factory=_defaults)

    def access(self, specialist: str, environment: str) -> Access:
        return self.specialists.get(specialist, {}).get(environment, Access())

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> DiagnosisConfig:
        """The defaults, with `EPISTEME_DIAGNOSIS_CONFIG` (a JSON file) laid over them."""
        env = os.environ if environ is None else environ
        path = env.get("EPISTEME_DIAGNOSIS_CONFIG")
        if not path:
            return cls()
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise InvalidInput(
                f"EPISTEME_DIAGNOSIS_CONFIG {path}: cannot read it ({exc.strerror})"
            ) from None
        try:
            given = cls.model_validate_json(text)
        except ValidationError as exc:
            raise InvalidInput(f"EPISTEME_DIAGNOSIS_CONFIG {path}: {describe(exc)}") from None
        merged = _defaults()
        for name, envs in given.specialists.items():
            merged.setdefault(name, {}).update(envs)
        return given.model_copy(update={"specialists": merged})
