"""Which specialists a problem gets, from the words on-call people and alerts use."""

from __future__ import annotations

import pytest

from episteme.diagnose.analysis import select


@pytest.mark.parametrize(
    ("problem", "specialists"),
    [
        # Kubernetes's own words, as pasted from `kubectl get pods`: these fell back to
        # database and cloud, and no Kubernetes specialist looked
        ("checkout pods in CrashLoopBackOff", ["kubernetes"]),
        ("payments OOMKilled after deploy", ["kubernetes"]),
        ("5 replicas unavailable, deployments stuck", ["kubernetes"]),
        ("api containers OOM-killed", ["kubernetes"]),
        ("ErrImagePull on the new release", ["kubernetes"]),
        ("statefulsets of kafka not ready", ["kubernetes"]),
        ("three nodes NotReady since the upgrade", ["kubernetes"]),  # each word's plural
        ("health checks failing on api", ["kubernetes"]),
        ("slow queries and deadlocks on orders", ["database"]),
        ("requests timed out talking to postgres", ["database"]),
        ("connections refused", ["database"]),
        ("error rate up on checkout", ["observability"]),
        ("5xx spike behind the load balancer", ["cloud", "observability"]),
    ],
)
def test_the_words_people_type_choose_the_specialists(problem: str, specialists: list[str]) -> None:
    chosen, why = select(problem)
    assert chosen == specialists, why


@pytest.mark.parametrize(
    "problem",
    [
        "tripod delivery late",
        "feedback form broken",
        "podcast feed empty",
        "dbx",
        "cache keys evicted",  # a cache's word too: no Kubernetes specialist for it
    ],
)
def test_a_word_inside_another_is_not_the_word(problem: str) -> None:
    chosen, why = select(problem)
    assert chosen == ["database", "cloud"]
    assert why["database"] == ["no keyword matched: the usual suspects"]


def test_alert_labels_and_a_model_add_specialists_never_remove() -> None:
    chosen, why = select("disk full", {"namespace": "checkout"}, proposed=["database"])
    assert chosen == ["database", "kubernetes"]
    assert why == {"kubernetes": ["alert label namespace"], "database": ["proposed by the model"]}
