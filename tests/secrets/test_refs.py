"""References: what an op://, vault://, env:// or file:// reference looks like, and the
one-line messages for those that are not."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from episteme.errors import InvalidInput
from episteme.secrets.env import parse_env_ref, parse_file_ref
from episteme.secrets.refs import SecretRef, parse_ref, scheme_of
from episteme.secrets.vault import VaultRef, parse_vault_ref

INFRA = "Infrastructure"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("op://Infrastructure/prod-db/password", SecretRef(INFRA, "prod-db", None, "password")),
        (
            "op://Infrastructure/prod-db/connection/host",
            SecretRef(INFRA, "prod-db", "connection", "host"),
        ),
        (
            "OP://Private/My Item/one-time password",
            SecretRef("Private", "My Item", None, "one-time password"),
        ),
        ("  op://v/i/f\n", SecretRef("v", "i", None, "f")),
        (
            "op://tm73n5vjhmlpo4mbhvimtsvure/vka57ghww3fk2fq6nntz3rj4fi/password",
            SecretRef("tm73n5vjhmlpo4mbhvimtsvure", "vka57ghww3fk2fq6nntz3rj4fi", None, "password"),
        ),
    ],
)
def test_parse_ref_reads_names_ids_and_sections(text: str, expected: SecretRef) -> None:
    assert parse_ref(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("op://Infrastructure/prod-db", "2 parts"),
        ("op://a/b/c/d/e", "5 parts"),
        ("op://Infrastructure//password", "the item is empty"),
        ("op:///prod-db/password", "the vault is empty"),
        ("op://v/i/ /f", "the section is empty"),
        ("op://v/i/", "the field is empty"),
        ("vault://secret/db#password", "vault:// is not a 1Password reference"),
    ],
)
def test_parse_ref_says_what_a_reference_looks_like(text: str, why: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_ref(text)
    message = caught.value.message
    assert why in message
    assert "op://vault/item/field or op://vault/item/section/field" in message
    assert "\n" not in message
    assert caught.value.field == "reference"


@pytest.mark.parametrize("text", ["hunter2-secret-value", "", "   ", "://x", "p@ss://word"])
def test_text_that_is_not_a_reference_is_never_echoed(text: str) -> None:
    """A secret pasted where its reference belongs must not land in an error message."""
    for parse in (parse_ref, scheme_of, parse_vault_ref, parse_env_ref, parse_file_ref):
        with pytest.raises(InvalidInput) as caught:
            parse(text)
        assert "is not shown" in caught.value.message
        if text.strip():
            assert text not in caught.value.message


def test_scheme_of_is_lower_case() -> None:
    assert scheme_of("OP://a/b/c") == "op"
    assert scheme_of("Vault://m/p#f") == "vault"
    assert scheme_of("file:///x") == "file"


_part = st.text(
    alphabet=st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1
).filter(lambda s: s.strip() == s and s != "")


@given(vault=_part, item=_part, section=st.none() | _part, field=_part)
def test_a_reference_reads_back_as_itself(
    vault: str, item: str, section: str | None, field: str
) -> None:
    ref = SecretRef(vault, item, section, field)
    assert parse_ref(str(ref)) == ref


def test_vault_references() -> None:
    assert parse_vault_ref("vault://secret/prod/db#password") == VaultRef(
        "secret", "prod/db", "password"
    )
    assert str(VaultRef("kv", "a/b", "x")) == "vault://kv/a/b#x"
    for bad, why in [
        ("vault://secret/prod/db", "no field"),
        ("vault://secret/prod/db#", "no field"),
        ("vault://secret#password", "a mount and a path"),
        ("vault://secret/a//b#password", "a mount and a path"),
        ("op://v/i/f", "not a Vault reference"),
    ]:
        with pytest.raises(InvalidInput, match=why) as caught:
            parse_vault_ref(bad)
        assert "vault://mount/path/to/secret#field" in caught.value.message


def test_env_and_file_references() -> None:
    assert parse_env_ref("env://DB_PASSWORD") == "DB_PASSWORD"
    assert parse_file_ref("file:///run/secrets/db-password") == Path("/run/secrets/db-password")
    assert parse_file_ref("file://localhost/run/secrets/x") == Path("/run/secrets/x")
    assert parse_file_ref("file:///tmp/with%20space") == Path("/tmp/with space")
    for bad in ("env://1BAD", "env://A-B", "env://"):
        with pytest.raises(InvalidInput, match="env://VAR_NAME"):
            parse_env_ref(bad)
    for bad in ("file://relative/path", "file:///", "file://"):
        with pytest.raises(InvalidInput, match="absolute path"):
            parse_file_ref(bad)
