"""Server settings: flags override `EPISTEME_*` environment variables override defaults."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from episteme.errors import InvalidInput
from episteme.ledger.model import describe

DEFAULT_HOME = Path("~/.episteme")
MiB = 1024 * 1024


OTHER_VARIABLES = (
    "EPISTEME_CONSOLE_KEY",
    "EPISTEME_DB_POOL",
    "EPISTEME_DEV_VAULT_TOKEN",
    "EPISTEME_DIAGNOSIS_CONFIG",
    "EPISTEME_MODEL",
    "EPISTEME_MODEL_API_KEY",
    "EPISTEME_MODEL_BASE_URL",
    "EPISTEME_OP_CONNECT_HOST",
    "EPISTEME_OP_CONNECT_TIMEOUT",
    "EPISTEME_OP_CONNECT_TOKEN",
    "EPISTEME_TOKEN",
    "EPISTEME_URL",
    "EPISTEME_VAULT_ADDR",
    "EPISTEME_VAULT_NAMESPACE",
    "EPISTEME_VAULT_TIMEOUT",
    "EPISTEME_VAULT_TOKEN",
)
"""The variables other parts read (the store's pool, the console, diagnosis, secret
stores, the client): a near miss of one of them is misspelt too."""


class Settings(BaseModel):
    """How `episteme serve` runs. Every field has an `EPISTEME_<NAME>` variable."""

    home: Path = DEFAULT_HOME
    db: str | None = Field(
        None, description="database URL (postgresql://...); None: the SQLite file in home"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    max_body: int = Field(MiB, ge=1024, description="largest request body, in bytes")
    mcp: bool = True
    background: bool = Field(
        True, description="compete for the leadership of background work (one process leads)"
    )
    shutdown_timeout: int = Field(
        20,
        ge=0,
        description="seconds a stopping server waits for open requests (a followed stream,"
        " a slow client) before it closes them",
    )
    fast_query: bool = Field(
        True,
        description="answer plain POST /v1/query calls without the framework (false: through"
        " it, as every other route; the answers are the same)",
    )

    @classmethod
    def from_env(cls, *only: str, **overrides: object) -> Settings:
        """Settings from `EPISTEME_*` variables (those of the fields named in `only`, when
        given; the others keep their defaults), then the given overrides (None is
        skipped)."""
        raw: dict[str, object] = {}
        for name in only or cls.model_fields:
            value = os.environ.get(f"EPISTEME_{name.upper()}")
            if value is not None and value != "":
                raw[name] = value
        from_env = set(raw)
        given = {k: v for k, v in overrides.items() if v is not None}
        raw.update(given)
        try:
            settings = cls.model_validate(raw)
        except ValidationError as exc:
            said = describe(exc)
            name = next((str(e["loc"][0]) for e in exc.errors() if e["loc"]), "")
            if name in given:  # named as it was set: a flag of `episteme serve`
                said = "--" + name.replace("_", "-") + said.removeprefix(name)
            elif name in from_env:  # or a variable
                said = f"EPISTEME_{name.upper()}" + said.removeprefix(name)
            raise InvalidInput(f"invalid server setting: {said}") from None
        return settings.model_copy(update={"home": settings.home.expanduser()})

    @classmethod
    def misspelt(cls) -> list[str]:
        """`EPISTEME_*` variables that look like a setting's but are none (EPISTEME_WORKRES):
        one line each, naming the setting meant. Others are left alone: names of the
        user's choosing (a webhook's secret) start with EPISTEME_ too."""
        names = [f"EPISTEME_{name.upper()}" for name in cls.model_fields] + list(OTHER_VARIABLES)
        out = []
        for var in sorted(os.environ):
            if var.startswith("EPISTEME_") and var not in names:
                close = difflib.get_close_matches(var, names, n=1, cutoff=0.85)
                if close:
                    out.append(f"{var} is not a setting, and is ignored: did you mean {close[0]}?")
        return out

    @property
    def location(self) -> str | Path:
        """Where the ledger is: the database URL, else the home directory."""
        return self.db or self.home

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in a worker process."""
        return {
            f"EPISTEME_{k.upper()}": str(v) for k, v in self.model_dump().items() if v is not None
        }
