"""A value typed by a person is read one way on every surface (the CLI, the console)."""

from __future__ import annotations

import pytest

from episteme.errors import InvalidInput
from episteme.ledger.canonical import read_value


@pytest.mark.parametrize(
    ("typed", "value"),
    [
        ("RS256", "RS256"),
        ("42", 42),
        (" 42 ", 42),
        ("-1.5e3", -1500.0),
        ('"42"', "42"),
        ("[1, 2]", [1, 2]),
        ('{"b": 1, "a": null}', {"b": 1, "a": None}),
        ("null", None),
        ("true", True),
        ("12abc", "12abc"),
        ("NaN", "NaN"),
        ("", ""),
    ],
)
def test_a_typed_value_is_json_when_it_looks_like_json(typed: str, value: object) -> None:
    got = read_value(typed)
    assert got == value
    assert type(got) is type(value)


def test_an_integer_past_64_bits_is_refused_not_made_a_float() -> None:
    # read as a float it would be stored as 1.8446744073709552e+19, silently
    with pytest.raises(InvalidInput, match="integers must fit in 64 bits"):
        read_value("18446744073709551616")
    with pytest.raises(InvalidInput, match="integers must fit in 64 bits"):
        read_value('{"n": -9223372036854775809}')
    assert read_value("[9223372036854775807]") == [2**63 - 1]
    with pytest.raises(InvalidInput, match="numbers must be finite"):
        read_value("1e999")


@pytest.mark.parametrize(
    ("typed", "words"),
    [
        ("{oops", "malformed JSON value '{oops'"),
        ("[NaN]", "NaN is not a JSON value"),
        ('{"a": Infinity}', "Infinity is not a JSON value"),
    ],
)
def test_what_looks_like_json_but_is_not_is_refused(typed: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words.replace("[", r"\[").replace("{", r"\{")):
        read_value(typed)
