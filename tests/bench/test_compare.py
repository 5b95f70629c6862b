"""The version comparisons (`bench/compare_writes.py`, `compare_reads.py`) at a tiny
size, on both backends: the installed version against a copy of its own source,
alternating in fresh processes. No figure is held to a budget here; what is checked is
what the runs wrote and read, and that the figures are consistent with one another (a
ratio is new/old, a p50 is not above its p99, a write's work is part of its query)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from whenever import TimeDelta

from episteme.ledger import AssertionInput, Ledger
from episteme.ledger.store import open_store
from tests.bench.support import run_script

ROOT = Path(__file__).resolve().parents[2]


def _ratio_of(row: dict[str, float], q: str) -> bool:
    """`{q}_ratio` is new/old, up to the rounding of the three (2 and 3 decimals)."""
    new, old = row[f"new_{q}_ms"], row[f"old_{q}_ms"]
    slack = 0.005 + 0.0005 / old * (1 + new / old)
    return abs(row[f"{q}_ratio"] - new / old) <= slack + 1e-9


def test_compare_writes_alternates_two_versions_on_one_ledger(location: str | Path) -> None:
    open_store(location, ensure=True).close()
    where = ["--home", str(location)] if isinstance(location, Path) else ["--db", location]
    out = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "compare_writes.py"),
            "--old-src", str(ROOT / "src"), *where,
            "--threads", "1", "--threads", "3", "--rounds", "2", "--seconds", "0.3",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["threads"] for r in rows] == [1, 3]
    for r in rows:
        assert r["old_rate"] > 0
        assert r["new_rate"] > 0
        assert r["new_cpu_ms"] > 0
        assert abs(r["rate_ratio"] - r["new_rate"] / r["old_rate"]) < 0.01
    with Ledger.open(location) as ledger:
        assert ledger.verify().ok
        counted = ledger.store.conn.execute(
            "SELECT count(*) FROM assertions WHERE subject LIKE 'bench.compare.%'"
        ).fetchone()
        assert counted is not None
        assert counted[0] >= 4 * 2 * 50  # 8 rounds, each with its 50 warm-up writes


def _compare_reads(location: str | Path, *args: str) -> dict[str, float]:
    """`compare_reads.py` of this version against itself on a ledger of five approved
    assertions; the one row it prints."""
    with Ledger.init(location) as ledger:
        for i in range(5):
            ledger.assert_one(subject=f"svc.s{i}", value=i, agent="a", lifecycle="approved")
    where = str(location)
    out = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "compare_reads.py"),
            "--old-src", str(ROOT / "src"), "--old-home", where, "--new-home", where, *args,
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 1, out.stdout
    row: dict[str, float] = rows[0]
    assert _ratio_of(row, "p50")
    return row


def test_compare_reads_times_pre_flight_checks_of_two_versions(location: str | Path) -> None:
    args = ("--rounds", "2", "--runs", "20", "--checks", "--constraints", "7")
    row = _compare_reads(location, *args)
    assert row["figure"] == "check"
    assert 0 < row["new_p50_ms"] <= row["new_p99_ms"]
    with Ledger.open(location) as ledger:
        assert len(ledger.constraints()) == 7  # recorded once, by the first round
        checks = ledger.checks(agent="bench.compare", limit=1000)
        assert len(checks) == 2 * 2 * (20 + 50)  # both versions, 2 rounds, with warm-ups
        assert any(c.violations for c in checks)  # plans that break a constraint, too


def test_compare_reads_times_audited_queries_of_two_versions(location: str | Path) -> None:
    row = _compare_reads(
        location, "--rounds", "2", "--runs", "20", "--lens", "approved", "--audited", "--held"
    )
    assert row["lens"] == "approved"
    assert 0 < row["new_p50_ms"] <= row["new_p99_ms"]
    assert 0 < row["new_held_p50_ms"] <= row["new_held_p99_ms"]
    assert row["new_held_p50_ms"] < row["new_p50_ms"]  # the write's work is inside the query
    assert _ratio_of(row, "held_p50")
    with Ledger.open(location) as ledger:
        audit = ledger.audit(agent="bench.compare", limit=1000)
        assert len(audit) == 2 * 2 * (20 + 50)  # both versions, 2 rounds, with warm-ups


def test_api_cpu_times_both_paths_and_the_library(location: str | Path) -> None:
    with Ledger.init(location) as ledger:
        for i in range(5):
            ledger.assert_one(subject=f"svc.s{i}", value=i, agent="a", lifecycle="approved")
    out = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "api_cpu.py"), "--home", str(location),
            "--rounds", "2", "--runs", "10",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    kinds = ["api, framework", "api, fast path", "library"]
    assert list(report["cpu_ms_per_query"]) == kinds
    for kind in kinds:
        assert len(report["rounds_ms"][kind]) == 2
        assert all(x > 0 for x in report["rounds_ms"][kind])
    with Ledger.open(location) as ledger:
        served = ledger.audit(agent="bench.api-cpu", limit=1000)
        assert len(served) == 3 * 3 * 10  # three kinds, a warm-up round and two counted
        assert ledger.verify().ok


def test_compare_reads_reads_as_of_hours_back(location: str | Path) -> None:
    args = ["--rounds", "1", "--runs", "10", "--lens", "consensus", "--audited"]
    row = _compare_reads(location, *args, "--back", "1.5")
    assert row["lens"] == "consensus"
    with Ledger.open(location) as ledger:
        audit = ledger.audit(agent="bench.compare", limit=1000)
    assert len(audit) == 2 * (10 + 50)
    assert {r.lens for r in audit} == {"consensus"}
    for r in audit:  # each read as of 1.5 h before the last event when its round began
        assert r.as_of is not None
        assert (r.at - r.as_of) >= TimeDelta(minutes=90)


def test_compare_reads_times_diffs_of_two_versions(location: str | Path) -> None:
    row = _compare_reads(location, "--rounds", "2", "--runs", "3", "--diff")
    assert row["figure"] == "diff"
    assert row["old_p50_ms"] > 0
    assert row["new_p50_ms"] > 0


def test_compare_reads_times_the_on_call_reads(location: str | Path) -> None:
    with Ledger.init(location) as ledger:
        ids = [
            ledger.assert_one(subject=f"svc.s{i}", value=i, agent="a", lifecycle="approved").id
            for i in range(5)
        ]
        queries = [ledger.query("svc", agent=f"agent-{i % 2}") for i in range(4)]
        ledger.decide("rolled out", agent="agent-0", query_ids=[q.query_id or "" for q in queries])
        seq = ledger.store.head()[0]
    out = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "compare_reads.py"),
            "--old-src", str(ROOT / "src"), "--old-home", str(location),
            "--new-home", str(location), "--rounds", "2", "--runs", "5", "--investigate",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["figure"] for r in rows] == [
        "audit, busiest agent",
        "impact",
        "audit",
        "served",
        "trace",
        "blame",
    ]
    for row in rows:
        assert 0 < row["new_p50_ms"] <= row["new_p99_ms"]
        assert _ratio_of(row, "p50")
        assert _ratio_of(row, "p99")
    with Ledger.open(location) as ledger:  # the reads wrote nothing
        assert ledger.store.head()[0] == seq
        assert ledger.impact(ids[0]).queries == 4


def test_compare_reads_refuses_options_that_would_do_nothing(tmp_path: Path) -> None:
    for args, why in (
        (["--held"], "add --audited"),
        (["--investigate", "--lens", "approved"], "drop --audited, --diff, --lens, --back"),
    ):
        out = subprocess.run(
            [
                sys.executable, str(ROOT / "bench" / "compare_reads.py"), "--old-src",
                str(ROOT / "src"), "--old-home", str(tmp_path), "--new-home", str(tmp_path), *args,
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 2
        assert why in out.stderr
        assert "Traceback" not in out.stderr


def test_a_wrong_old_source_or_a_failed_round_is_one_line(tmp_path: Path) -> None:
    # A folder holding no episteme was taken: Python imported the installed version in
    # its place, and the figures compared this version with itself.
    for script, args, code, words in (
        ("compare_reads.py", ["--old-src", str(tmp_path / "nope"), "--old-home", "a",
                              "--new-home", "b"], 2, "holds no episteme package"),
        ("compare_writes.py", ["--old-src", str(tmp_path), "--home", "a"], 2,
         "holds no episteme package"),
        ("sustained.py", ["--old-src", str(tmp_path), "--home", "a"], 2,
         "holds no episteme package"),
        ("cli_start.py", ["--old-src", str(tmp_path)], 2, "holds no episteme package"),
        ("compare_reads.py", ["--old-src", str(ROOT / "src"), "--old-home",
                              str(tmp_path / "none"), "--new-home", str(tmp_path / "none")], 1,
         f"error: a round on {tmp_path / 'none'} failed: "),
        ("diff_limit.py", [str(tmp_path / "none")], 1, "error: no ledger"),
    ):  # fmt: skip
        out = run_script(script, *args)
        assert out.returncode == code, (script, out.stderr)
        assert words in out.stderr, (script, out.stderr)
        assert "Traceback" not in out.stderr


def test_diff_limit_times_the_full_and_the_newest_diff(
    location: str | Path, tmp_path: Path
) -> None:
    with Ledger.init(location) as ledger:
        ledger.add([AssertionInput(subject=f"svc.s{i}", value=i, agent="a") for i in range(1500)])
    output = tmp_path / "diff.json"
    out = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "diff_limit.py"), str(location),
            "--runs", "3", "--output", str(output),
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = json.loads(output.read_text())
    assert figures == json.loads(out.stdout)
    assert figures["changes"] == 1500
    for name in ("full", "full floor", "newest 1,000", "newest 1,000 floor"):
        assert 0 < figures[name]["p50_ms"] <= figures[name]["p99_ms"], name
    ratio = figures["newest 1,000"]["p50_ms"] / figures["full"]["p50_ms"]
    assert abs(figures["newest/full p50"] - ratio) < 0.001
    # 1,500 changes of one event: the page below the newest starts inside it
    assert figures["pages"] == 2
    for page in ("second", "middle", "last"):
        for name in (f"{page} page", f"{page} page floor"):
            assert 0 < figures[name]["p50_ms"] <= figures[name]["p99_ms"], name
        assert figures[f"{page}/floor p50"] > 0
