"""Credential references: the names of secrets, never their values.

Diagnosis configuration, sessions, approvals, findings and logs hold *references*; only
a lease (`episteme.secrets.broker`) ever holds a value. A reference is a URL whose
scheme picks the secret store::

    op://vault/item/field                   1Password (Connect)
    op://vault/item/section/field
    vault://mount/path/to/secret#field      HashiCorp Vault, KV version 2
    env://VAR_NAME                          an environment variable (development)
    file:///path/to/file                    a file's content (development)

This module parses the ``op://`` form (`SecretRef`, `parse_ref`) and reads the scheme of
any reference (`scheme_of`). Text that does not look like a reference at all is never
echoed in an error message: it may be a secret pasted where its reference belongs.
"""

from __future__ import annotations

from dataclasses import dataclass

from episteme.errors import InvalidInput

OP_FORMS = "op://vault/item/field or op://vault/item/section/field"
FORMS = f"{OP_FORMS}, vault://mount/path#field, env://VAR_NAME or file:///path"


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A parsed ``op://vault/item/[section/]field`` reference.

    Each part is a name or an id; a backend matches them case-insensitively.
    """

    vault: str
    item: str
    section: str | None
    field: str

    def __str__(self) -> str:
        middle = f"{self.section}/" if self.section is not None else ""
        return f"op://{self.vault}/{self.item}/{middle}{self.field}"


def scheme_of(text: str) -> str:
    """The scheme of a reference, lower-cased (``op``, ``vault``, ``env``, ``file``).

    Raises:
        InvalidInput: when the text has no ``scheme://``; the text itself is not shown.
    """
    head, sep, _rest = text.strip().partition("://")
    if not sep or not head or not head.replace("-", "").replace("+", "").isalnum():
        raise InvalidInput(
            f"not a credential reference (the text, {len(text)} characters, is not shown "
            f"in case it is a secret): a reference looks like {FORMS}",
            field="reference",
        )
    return head.lower()


def parse_ref(text: str) -> SecretRef:
    """Parse ``op://vault/item/field`` or ``op://vault/item/section/field``.

    Raises:
        InvalidInput: a one-line message that says what a reference looks like.
    """
    scheme = scheme_of(text)
    raw = text.strip()
    if scheme != "op":
        raise _bad(raw, f"{scheme}:// is not a 1Password reference")
    parts = raw[len("op://") :].split("/")
    if len(parts) not in (3, 4):
        raise _bad(raw, f"it has {len(parts)} parts after op:// where 3 or 4 are needed")
    names = ("vault", "item", "section", "field") if len(parts) == 4 else ("vault", "item", "field")
    for name, part in zip(names, parts, strict=True):
        if not part.strip():
            raise _bad(raw, f"the {name} is empty")
    if len(parts) == 3:
        return SecretRef(parts[0], parts[1], None, parts[2])
    return SecretRef(parts[0], parts[1], parts[2], parts[3])


def _bad(raw: str, why: str) -> InvalidInput:
    return InvalidInput(
        f"cannot read reference {raw!r}: {why}; a reference looks like {OP_FORMS} "
        "(names or ids; a name that contains '/' must be given by its id)",
        field="reference",
    )
