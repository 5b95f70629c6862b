"""How diagnosis is set up: which credential references and settings each specialist
gets per environment, how long an approval may wait, and whether requesters may approve
their own sessions.

The defaults use the references of the bundled dev vault (`episteme dev-vault`). A JSON
file named by `EPISTEME_DIAGNOSIS_CONFIG` is laid over them, key by key (a credential
role given null is taken away)::

    {"approval_ttl_s": 3600, "self_approval": false,
     "specialists": {"database": {"prod": {"settings": {"port": 5432, "dbname": "app"},
                                           "credentials": {"password": "op://…"}}}}}
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from episteme.errors import InvalidInput
from episteme.ledger.model import describe
from episteme.secrets.refs import scheme_of

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


KEEPALIVE_MAX_S = 45.0
"""The longest `keepalive_s`: the Python client gives up on a followed stream after
`FOLLOW_SILENCE_S` (60 s) without a line."""


class DiagnosisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approval_ttl_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
    self_approval: bool = False
    specialist_timeout_s: float = Field(default=30.0, gt=0, le=600)
    lease_ttl_s: float = Field(default=900.0, gt=0, le=86400)
    keepalive_s: float = Field(default=15.0, gt=0, le=KEEPALIVE_MAX_S)
    """A followed stream that has had no event for this long sends a blank line: a
    proxy does not take it for idle and cut it, and a client that hears nothing for
    longer than `KEEPALIVE_MAX_S` knows the server is gone."""
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
            layer = _File.model_validate_json(text)
            given = cls.model_validate(layer.model_extra or {})
        except ValidationError as exc:
            # what was given is not quoted: it may be a secret written where it does not go
            problem = describe(exc, shown=False)
            raise InvalidInput(f"EPISTEME_DIAGNOSIS_CONFIG {path}: {problem}") from None
        merged = _defaults()
        bundled = list(merged)
        for name, envs in layer.specialists.items():
            meant = difflib.get_close_matches(name, bundled, n=1, cutoff=0.75)
            if meant and meant[0] != name:  # a typo would leave the default in force
                raise InvalidInput(
                    f"EPISTEME_DIAGNOSIS_CONFIG {path}: specialists.{name}: no specialist"
                    f" is named so; did you mean {meant[0]}?"
                )
            mine = merged.setdefault(name, {})
            for place, access in envs.items():
                where = f"{path}: specialists.{name}.{place}"
                if place not in ENVIRONMENTS:
                    raise InvalidInput(
                        f"EPISTEME_DIAGNOSIS_CONFIG {where}: environments are"
                        f" {', '.join(ENVIRONMENTS)} (a session's environment is one of them)"
                    )
                mine[place] = _laid_over(mine.get(place, Access()), access, where)
        return given.model_copy(update={"specialists": merged})


class _Given(BaseModel):
    """What a configuration file says of a specialist in one environment."""

    model_config = ConfigDict(extra="forbid")

    credentials: dict[str, str | None] = Field(default_factory=dict)
    """Role → reference; null takes away a role the defaults give."""
    settings: dict[str, Any] = Field(default_factory=dict)


class _File(BaseModel):
    """A configuration file: its specialists, and the rest for `DiagnosisConfig`."""

    model_config = ConfigDict(extra="allow")

    specialists: dict[str, dict[str, _Given]] = Field(default_factory=dict)


def _laid_over(default: Access, given: _Given, where: str) -> Access:
    """`given` laid over `default`, key by key: a role or a setting it names replaces
    the default's, a role given null is taken away, and the rest stay. A credential
    that is not a reference is refused without being shown: it may be a secret pasted
    where its reference belongs."""
    credentials = dict(default.credentials)
    for role, ref in given.credentials.items():
        if ref is None:
            credentials.pop(role, None)
            continue
        try:
            scheme_of(ref)
        except InvalidInput as exc:
            raise InvalidInput(
                f"EPISTEME_DIAGNOSIS_CONFIG {where}.credentials.{role}: {exc.message}"
            ) from None
        credentials[role] = ref
    return Access(credentials=credentials, settings={**default.settings, **given.settings})
