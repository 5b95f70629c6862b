"""The diagnosis configuration: the defaults, and a file laid over them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from episteme.client import FOLLOW_SILENCE_S
from episteme.diagnose.config import KEEPALIVE_MAX_S, DiagnosisConfig
from episteme.errors import InvalidInput


def _load(tmp_path: Path, given: dict[str, Any]) -> DiagnosisConfig:
    path = tmp_path / "diagnosis.json"
    path.write_text(json.dumps(given))
    return DiagnosisConfig.load({"EPISTEME_DIAGNOSIS_CONFIG": str(path)})


def test_a_file_is_laid_over_the_defaults_key_by_key(tmp_path: Path) -> None:
    # A file that gave the prod cloud its settings took away its default credentials,
    # and the specialist then ran with none.
    defaults = DiagnosisConfig()
    config = _load(
        tmp_path,
        {
            "self_approval": True,
            "specialists": {
                "cloud": {"prod": {"settings": {"region": "eu-west-1"}}},
                "database": {
                    "prod": {
                        "settings": {"dbname": "app"},
                        "credentials": {"host": None, "password": "op://Ops/db/password"},
                    }
                },
                "search": {"dev": {"settings": {"url": "http://search:9200"}}},
            },
        },
    )
    assert config.self_approval is True
    cloud = config.access("cloud", "prod")
    assert cloud.settings == {"region": "eu-west-1"}
    assert cloud.credentials == defaults.access("cloud", "prod").credentials
    db = config.access("database", "prod")
    assert db.settings == {"dbname": "app"}
    assert db.credentials == {  # host taken away, password replaced, username kept
        "username": "op://Infrastructure/prod-db/username",
        "password": "op://Ops/db/password",
    }
    assert config.access("database", "staging") == defaults.access("database", "staging")
    assert config.access("search", "dev").settings == {"url": "http://search:9200"}


@pytest.mark.parametrize(
    ("given", "words"),
    [
        (
            {"specialists": {"kubernetes": {"prod": {"credentials": {"token": "eyJ-pasted"}}}}},
            "specialists.kubernetes.prod.credentials.token: not a credential reference",
        ),
        ({"self_approval": "maybe"}, "self_approval"),
        ({"specialists": {"cloud": {"prod": {"secrets": {}}}}}, "secrets"),
        ({"approval_ttlS": 5}, "approval_ttlS"),
        # a secret where no key takes it, or of a type a key does not take: not quoted
        ({"specialists": {"database": {"prod": {"password": "eyJ-pasted"}}}}, "password"),
        ({"specialists": {"database": {"prod": {"credentials": {"password": 7319}}}}}, "password"),
        ({"password": "eyJ-pasted"}, "password"),
    ],
)
def test_a_bad_file_is_one_line_that_never_shows_a_pasted_secret(
    tmp_path: Path, given: dict[str, Any], words: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        _load(tmp_path, given)
    message = str(refused.value)
    assert message.startswith("EPISTEME_DIAGNOSIS_CONFIG ")
    assert words in message
    assert "\n" not in message
    assert "eyJ-pasted" not in message
    assert "7319" not in message


def test_the_keepalive_stays_within_what_a_following_client_waits_for(tmp_path: Path) -> None:
    # A keep-alive longer than the client's patience would end every quiet stream.
    assert _load(tmp_path, {"keepalive_s": 45}).keepalive_s == 45.0
    assert KEEPALIVE_MAX_S < FOLLOW_SILENCE_S
    for bad in (0, -1, 46):
        with pytest.raises(InvalidInput, match="keepalive_s"):
            _load(tmp_path, {"keepalive_s": bad})


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"databse": {"prod": {}}}, "specialists.databse: no specialist is named so; did you"),
        ({"database": {"production": {}}}, "specialists.database.production: environments are"),
        ({"database": {"qa": {}}}, "specialists.database.qa: environments are prod, staging"),
    ],
)
def test_a_misspelt_specialist_or_environment_is_refused(
    tmp_path: Path, given: dict[str, Any], said: str
) -> None:
    # Taken without a word, it left the defaults (the dev vault's references) in force.
    with pytest.raises(InvalidInput, match=said.replace(".", r"\.")):
        _load(tmp_path, {"specialists": given})


def test_specialists_of_ones_own_may_have_names_alike(tmp_path: Path) -> None:
    # each name was compared with those read before it too: queue2 was taken for queue1
    config = _load(tmp_path, {"specialists": {"queue1": {"dev": {}}, "queue2": {"dev": {}}}})
    assert {"queue1", "queue2"} <= set(config.specialists)
