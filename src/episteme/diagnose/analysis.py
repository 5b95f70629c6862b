"""Which specialists a problem needs (DESIGN §4): keywords, alert labels, the model.

Keywords come first; alert labels (``service``, ``job``, ``namespace``, ``pod``, ...) add
specialists; a configured model may propose more, never fewer. Nothing matched means
database and cloud, the two most common causes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

KEYWORDS: dict[str, tuple[str, ...]] = {
    "database": (
        "database", "db", "connection pool", "query", "queries", "sql", "postgres", "mysql",
        "timeout", "timed out", "connection", "transaction", "deadlock",
    ),
    "cloud": (
        "aws", "ec2", "cloudwatch", "instance", "cpu", "memory usage", "scaling",
        "load balancer", "rds",
    ),
    "kubernetes": (
        "kubernetes", "k8s", "pod", "container", "deployment", "replica", "crashloop",
        "oom", "health check", "liveness", "readiness",
        # the words Kubernetes itself shows, as people paste them
        "crashloopbackoff", "oomkilled", "imagepullbackoff", "errimagepull",
        "statefulset", "daemonset", "replicaset", "kubelet", "node notready",
    ),
    "observability": (
        "error rate", "errors", "latency", "log", "prometheus", "alert", "5xx",
        "metrics",
    ),
}  # fmt: skip
FALLBACK = ("database", "cloud")
ORDER = ("database", "cloud", "kubernetes", "observability")

LABELS: dict[str, tuple[str, ...]] = {
    "kubernetes": ("namespace", "pod", "container", "deployment", "kubernetes_namespace"),
    "database": ("datname", "db", "database"),
    "cloud": ("instance_id", "region", "availability_zone"),
    "observability": ("job",),
}


def _matches(text: str, keyword: str) -> bool:
    # whole words, so that "db" does not match "feedback" nor "pod" "tripod", or their
    # plurals ("pods", "replicas", "deadlocks", and each word of several: "nodes
    # NotReady", "health checks"); a hyphen or an underscore ends a word ("OOM-killed",
    # "oom_kill" hold "oom")
    words = r"\s+".join(re.escape(w) + "(?:e?s)?" for w in keyword.split())
    return re.search(rf"(?<![a-z0-9]){words}(?![a-z0-9])", text) is not None


def select(
    problem: str,
    labels: Mapping[str, str] | None = None,
    proposed: Iterable[str] = (),
) -> tuple[list[str], dict[str, list[str]]]:
    """The specialists for `problem`, in a fixed order, and why each was chosen."""
    text = problem.lower()
    why: dict[str, list[str]] = {}
    for name, words in KEYWORDS.items():
        hits = [w for w in words if _matches(text, w)]
        if hits:
            why[name] = [f"keyword {w!r}" for w in hits]
    for name, keys in LABELS.items():
        hits = [k for k in keys if k in (labels or {})]
        if hits:
            why.setdefault(name, []).extend(f"alert label {k}" for k in hits)
    for name in proposed:
        if name in KEYWORDS:
            why.setdefault(name, []).append("proposed by the model")
    if not why:
        why = {name: ["no keyword matched: the usual suspects"] for name in FALLBACK}
    return [n for n in ORDER if n in why], why
