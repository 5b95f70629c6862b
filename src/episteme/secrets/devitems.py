"""What the dev vault serves: the items file format, its checks, and the default items.

An items file (``episteme dev-vault --items FILE``) is JSON: vaults, each with items,
each with fields outside any section and sections of fields (label → value)::

    {"vaults": [{"name": "Infrastructure", "items": [
        {"title": "prod-db", "category": "DATABASE",
         "fields": {"username": "app", "password": "…"},
         "sections": {"connection": {"host": "db.internal", "port": "5432"}}}]}]}

Ids are optional (26 lowercase letters and digits, like Connect's); those not given are
derived from the names (`make_id`), so they stay the same from one start to the next.
The defaults hold every reference the diagnosis defaults name, with obviously fake
values (``dev-…``). A message about a bad file never quotes its content: it holds
secret values.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from episteme.errors import InvalidInput

_ID = re.compile(r"^[a-z0-9]{26}$")


class ItemSpec(BaseModel):
    """An item: fields outside any section, and sections of fields (label → value)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    id: str | None = Field(default=None, pattern=_ID.pattern)
    category: str = "LOGIN"
    tags: list[str] = Field(default_factory=list)
    fields: dict[str, str] = Field(default_factory=dict)
    sections: dict[str, dict[str, str]] = Field(default_factory=dict)


class VaultSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    id: str | None = Field(default=None, pattern=_ID.pattern)
    description: str = ""
    items: list[ItemSpec] = Field(default_factory=list)


class ItemsFile(BaseModel):
    """An items file: the vaults the dev vault serves (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    vaults: list[VaultSpec]


def _item(
    title: str, category: str, fields: Mapping[str, str], **sections: Mapping[str, str]
) -> ItemSpec:
    return ItemSpec(
        title=title,
        category=category,
        fields=dict(fields),
        sections={k: dict(v) for k, v in sections.items()},
    )


def _dev(item: str, *labels: str) -> dict[str, str]:
    return {label: f"dev-{item}-{label}" for label in labels}


def default_items() -> ItemsFile:
    """The development items: every reference the diagnosis defaults name, fake values."""
    db = "DATABASE"
    api = "API_CREDENTIAL"
    infra = [
        _item("prod-db", db, {"username": "app", **_dev("prod-db", "password"),
                              "host": "127.0.0.1", "port": "5432"}),
        _item("staging-db", db, {"username": "app", **_dev("staging-db", "password")}),
        _item("aws-cloudwatch", api, _dev("aws-cloudwatch", "access-key", "secret-key")),
        _item("aws-ec2", api, _dev("aws-ec2", "access-key", "secret-key")),
        _item("k8s-prod", api, _dev("k8s-prod", "token")),
        _item("datadog", api, _dev("datadog", "api-key")),
        _item("grafana", "LOGIN", {"username": "admin", **_dev("grafana", "admin-password")}),
    ]  # fmt: skip
    services = [
        _item("payment-api", api, _dev("payment-api", "api-key")),
        _item("email-service", "LOGIN",
              {"username": "mailer", **_dev("email-service", "smtp-password")}),
    ]  # fmt: skip
    return ItemsFile(
        vaults=[
            VaultSpec(name="Infrastructure", description="Development credentials", items=infra),
            VaultSpec(name="Services", description="Development service keys", items=services),
        ]
    )


def load_items(path: Path) -> ItemsFile:
    """Read an items file (JSON).

    Raises:
        InvalidInput: the file cannot be read, or is not an `ItemsFile`.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"--items {path}: cannot read it ({exc.strerror})") from None
    try:
        spec = ItemsFile.model_validate_json(text)
    except ValidationError as exc:
        raise InvalidInput(f"--items {path}: {describe_error(exc)}", field="items") from None
    check(spec)
    return spec


def describe_error(exc: ValidationError) -> str:
    """The first problem of `exc` as one line, without the offending input."""
    # not `ledger.model.describe`: it quotes the offending input, and an items file
    # holds secret values
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "input"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {err['msg']}{more}"


def references(spec: ItemsFile) -> list[str]:
    """Every ``op://`` reference `spec` serves, by name (sections spelled out)."""
    out: list[str] = []
    for vault in spec.vaults:
        for item in vault.items:
            base = f"op://{vault.name}/{item.title}"
            out.extend(f"{base}/{label}" for label in item.fields)
            for section, fields in item.sections.items():
                out.extend(f"{base}/{section}/{label}" for label in fields)
    return out


def check(spec: ItemsFile) -> None:
    """Refuse an id given twice.

    Raises:
        InvalidInput: naming the id.
    """
    seen: set[str] = set()
    for vault in spec.vaults:
        for given in [vault.id, *(i.id for i in vault.items)]:
            if given is not None and given in seen:
                raise InvalidInput(f"id {given!r} is used twice in the items file", field="items")
            if given is not None:
                seen.add(given)


def make_id(*parts: str) -> str:
    """A stable 26-character lowercase id, like Connect's, from names."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower()[:26]
