"""Synthesis: findings → ranked root-cause hypotheses with remediation (rules decide).

Each rule of the catalog (documented in docs/diagnosis-rules.md) names the finding codes
it needs, the codes that strengthen it, and what to do. A hypothesis's score is the
rule's weight times the severity of the findings behind it; the best goes first. With
no warning or critical finding the answer is "inconclusive", with what was missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, JsonValue

from episteme.diagnose.findings import Finding
from episteme.text import plural

SEVERITY = {"info": 0.0, "warning": 0.6, "critical": 1.0}
MAX_EVIDENCE = 2000
"""Characters of a finding's evidence kept for synthesis and the ledger."""


@dataclass(frozen=True)
class Rule:
    key: str
    title: str
    needs: tuple[str, ...]
    """Any one of these codes triggers the rule."""
    supports: tuple[str, ...]
    """These codes raise its confidence."""
    weight: float
    remediation: tuple[str, ...]
    monitoring: tuple[str, ...]


CATALOG: tuple[Rule, ...] = (
    Rule(
        "connection_exhaustion",
        "Database connection exhaustion",
        ("db.connection_exhaustion",),
        ("db.idle_in_transaction", "db.no_idle_timeout", "db.long_running"),
        1.0,
        (
            "Terminate the sessions idle in transaction (the statements are in the evidence).",
            "Cap the application's pool below max_connections minus the reserved slots, and "
            "make it return connections (commit or roll back) promptly.",
            "Set idle_in_transaction_session_timeout (e.g. '60s') so that a leaked "
            "transaction cannot hold a slot for ever.",
        ),
        (
            "Alert when connections in use exceed 80 % of max_connections.",
            "Alert on sessions idle in transaction for more than 60 s.",
        ),
    ),
    Rule(
        "idle_in_transaction",
        "Sessions left idle in transaction",
        ("db.idle_in_transaction",),
        ("db.no_idle_timeout", "db.lock_chain"),
        0.8,
        (
            "Terminate the listed sessions; find the code path that opens a transaction and "
            "does not end it.",
            "Set idle_in_transaction_session_timeout.",
        ),
        ("Alert on sessions idle in transaction for more than 60 s.",),
    ),
    Rule(
        "lock_contention",
        "Lock contention: sessions blocked behind a lock holder",
        ("db.lock_chain",),
        ("db.long_running", "db.idle_in_transaction"),
        0.9,
        (
            "End or terminate the blocking session at the head of the chain.",
            "Shorten the transactions that take these locks; add lock_timeout to them.",
        ),
        ("Alert on sessions waiting on locks for more than 30 s.",),
    ),
    Rule(
        "slow_queries",
        "Long-running or slow statements",
        ("db.long_running", "db.slow_statements"),
        (),
        0.6,
        (
            "EXPLAIN the statements listed; add the missing index or rewrite them.",
            "Set statement_timeout for the application's role.",
        ),
        ("Track pg_stat_statements mean time for the top statements.",),
    ),
    Rule(
        "crashloop",
        "Pods crash-looping",
        ("k8s.crashloop", "k8s.restarts"),
        ("k8s.events", "k8s.deployment_unavailable", "logs.errors"),
        0.9,
        (
            "Read the previous container's logs (kubectl logs --previous) for the exit reason.",
            "Roll back the last deployment if the crashes started with it.",
        ),
        ("Alert on kube_pod_container_status_restarts_total increasing.",),
    ),
    Rule(
        "oom",
        "Containers killed for memory (OOMKilled)",
        ("k8s.oomkilled",),
        ("k8s.restarts", "cloud.cpu_high"),
        0.9,
        ("Raise the memory limit or find the leak; compare usage with the limit.",),
        ("Alert when container memory exceeds 90 % of its limit.",),
    ),
    Rule(
        "probes",
        "Health probes failing",
        ("k8s.probe_failing",),
        ("k8s.events", "k8s.deployment_unavailable"),
        0.7,
        ("Check the probe's endpoint and timeouts; a slow dependency often fails readiness.",),
        ("Alert on pods not ready for more than 5 minutes.",),
    ),
    Rule(
        "deployment",
        "Deployment without its available replicas",
        ("k8s.deployment_unavailable",),
        ("k8s.events",),
        0.6,
        ("Look at the deployment's events (scheduling, image pulls, quotas).",),
        ("Alert on kube_deployment_status_replicas_unavailable > 0.",),
    ),
    Rule(
        "instance",
        "Cloud instance impaired or stopped",
        ("cloud.instance_impaired", "cloud.instance_stopped", "cloud.scheduled_event"),
        (),
        0.8,
        ("Stop and start the impaired instance (it moves to healthy hardware), or replace it.",),
        ("Alarm on StatusCheckFailed.",),
    ),
    Rule(
        "cpu",
        "CPU saturation",
        ("cloud.cpu_high", "cloud.metric_threshold"),
        ("metrics.threshold",),
        0.6,
        ("Scale out or up; find what started consuming CPU.",),
        ("Alarm on CPUUtilization above 80 % for 10 minutes.",),
    ),
    Rule(
        "targets_down",
        "Monitored targets down",
        ("metrics.target_down",),
        ("logs.errors",),
        0.7,
        ("Check the listed targets: process, host and network.",),
        ("Alert on up == 0 for 2 minutes.",),
    ),
    Rule(
        "errors",
        "Errors in logs and metrics",
        ("logs.errors", "metrics.threshold"),
        (),
        0.4,
        ("Read the most repeated error messages in the evidence.",),
        ("Alert on the error rate.",),
    ),
)


class Hypothesis(BaseModel):
    rule: str
    title: str
    confidence: float
    findings: list[int]
    """Indexes into the report's findings."""
    remediation: list[str]
    monitoring: list[str]


class Report(BaseModel):
    """The conclusion of a session."""

    conclusion: str
    inconclusive: bool
    hypotheses: list[Hypothesis]
    findings: list[Finding]
    missing: list[str]
    """What was not looked at (specialists skipped or failed), when it matters."""
    text: str = ""
    """The narrative (the model's, when one is configured; else a template)."""


def cap(finding: Finding) -> Finding:
    """The finding with its claim and evidence cut to a size fit for synthesis."""
    evidence: dict[str, JsonValue] = {}
    used = 0
    for key, value in finding.evidence.items():
        text = str(value)
        if used + len(text) > MAX_EVIDENCE:
            evidence[key] = text[: max(0, MAX_EVIDENCE - used)] + "…"
            break
        evidence[key] = value
        used += len(text)
    return finding.model_copy(update={"claim": finding.claim[:500], "evidence": evidence})


def synthesize(findings: Sequence[Finding], missing: Sequence[str] = ()) -> Report:
    """Rank hypotheses from `findings` by the catalog."""
    hypotheses = []
    for rule in CATALOG:
        needed = [i for i, f in enumerate(findings) if f.code in rule.needs]
        strongest = max((SEVERITY[findings[i].severity] for i in needed), default=0.0)
        if not strongest:
            continue
        support = [i for i, f in enumerate(findings) if f.code in rule.supports]
        bonus = min(0.3, 0.1 * len({findings[i].code for i in support}))
        hypotheses.append(
            Hypothesis(
                rule=rule.key,
                title=rule.title,
                confidence=round(min(1.0, rule.weight * strongest + bonus), 2),
                findings=needed + support,
                remediation=list(rule.remediation),
                monitoring=list(rule.monitoring),
            )
        )
    hypotheses.sort(key=lambda h: -h.confidence)
    if hypotheses:
        best = hypotheses[0]
        conclusion = f"Most likely root cause: {best.title} (confidence {best.confidence:.2f})."
    else:
        above = sum(f.severity != "info" for f in findings)
        conclusion = (
            f"Inconclusive: {plural(above, 'finding')} above info level, none that a rule of"
            " the catalog explains."
            if above
            else "Inconclusive: no finding above info level."
        )
        if missing:
            conclusion += " Not examined: " + "; ".join(missing) + "."
    return Report(
        conclusion=conclusion,
        inconclusive=not hypotheses,
        hypotheses=hypotheses,
        findings=list(findings),
        missing=list(missing),
    )
