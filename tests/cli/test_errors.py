"""Refusals: every bad input gives one `error:` line, the right exit code, and writes nothing."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import random
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import episteme
from episteme.ledger.canonical import GENESIS, canonical
from episteme.ledger.journal import link
from tests.cli.support import (
    Scenario,
    assert_error,
    assert_usage_error,
    done,
    head,
    journal,
    ok,
    sql,
)
from tests.conftest import Cli

Args = Callable[[Scenario, Path], list[str]]


def _refused(
    cli: Cli, scenario: Scenario, tmp_path: Path, args: Args, code: int, *needles: str
) -> str:
    before = journal(cli)
    r = cli(*args(scenario, tmp_path))
    line = assert_error(r, code, *needles)
    assert journal(cli) == before, "a refused command wrote to the journal"
    return line


def _latin1(tmp_path: Path) -> str:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"subject": "db.primary", "value": "caf\xe9"}\n')
    return str(path)


def _batch(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


GOOD_LINE = '{"subject": "db.primary", "value": "db-1"}'

# (id, args, needles): user errors, exit 2.
USER_ERRORS: list[tuple[str, Args, tuple[str, ...]]] = [
    # subjects
    # an address the server could not listen on, refused before anything is created
    ("serve-host", lambda s, t: ["serve", "--host", "not..a..host"], ("cannot listen on",)),
    ("serve-port-0", lambda s, t: ["serve", "--port", "0"], ("port 0",)),
    # the ledger's location, given as a home and as a URL at once (the test adds --home)
    ("home-and-db", lambda s, t: ["audit", "--db", f"sqlite:///{t}/x.db"], ("not both",)),
    ("home-and-db=", lambda s, t: ["served", "a.b", f"--db={t}"], ("--home DIR and --db URL",)),
    ("subject-double-dot", lambda s, t: ["assert", "a..b", "1", "--agent", "x"], ("'a..b'",)),
    ("subject-space", lambda s, t: ["assert", "a b", "1", "--agent", "x"], ("'a b'",)),
    ("subject-trailing-dot", lambda s, t: ["assert", "a.", "1", "--agent", "x"], ("'a.'",)),
    ("subject-unicode", lambda s, t: ["assert", "auth.clé", "1", "--agent", "x"], ("subject",)),
    ("subject-empty", lambda s, t: ["assert", "", "1", "--agent", "x"], ("subject ''",)),
    ("subject-too-long", lambda s, t: ["assert", "a" * 256, "1", "--agent", "x"], ("subject",)),
    ("query-subject", lambda s, t: ["query", "a..b", "--agent", "x"], ("invalid subject 'a..b'",)),
    ("served-subject", lambda s, t: ["served", "a b"], ("invalid subject 'a b'",)),
    ("audit-subject", lambda s, t: ["audit", "--subject", "a..b"], ("invalid subject",)),
    ("diff-prefix", lambda s, t: ["diff", "a..b", "--from", "1h"], ("invalid subject",)),
    ("blame-subject", lambda s, t: ["blame", "a b"], ("invalid subject 'a b'",)),
    # a token pasted as a subject: not quoted back, and not recorded
    ("blame-token", lambda s, t: ["blame", "ep_" + "Ab1_" * 10 + "xyz"], ("'ep_…'",)),
    (
        "assert-token",
        lambda s, t: ["assert", "a.b", "ep_" + "Ab1-" * 10 + "xyz", "--agent", "x"],
        ("a bearer token (ep_…): a secret is never recorded",),
    ),
    ("agent-name", lambda s, t: ["assert", "a.b", "1", "--agent", "-bad"], ("agent '-bad'",)),
    ("agent-spaces", lambda s, t: ["query", "auth", "--agent", "on call"], ("invalid agent",)),
    ("by-name", lambda s, t: ["approve", s.es256, "--by", "a b"], ("invalid by",)),
    # the options of the other kind of approval, refused rather than dropped
    (
        "approve-assertion-ref",
        lambda s, t: ["approve", s.es256, "--by", "alice", "--ref", "op://v/i/f"],
        ("--ref approve a diagnosis session's credentials",),
    ),
    (
        "approve-assertion-server",
        lambda s, t: ["approve", s.es256, "--by", "a", "--server", "http://x", "--token", "t"],
        ("--server and --token approve a diagnosis session's",),
    ),
    (
        "approve-session-by",
        lambda s, t: ["approve", "s_0123456789abcdef", "--by", "alice"],
        ("--by and --home approve assertions: a session is approved on its server",),
    ),
    # confidence
    (
        "confidence-above-1",
        lambda s, t: ["assert", "a.b", "1", "--agent", "x", "--confidence", "1.5"],
        ("confidence 1.5", "less than or equal to 1"),
    ),
    (
        "confidence-below-0",
        lambda s, t: ["assert", "a.b", "1", "--agent", "x", "--confidence", "-0.1"],
        ("confidence -0.1", "greater than or equal to 0"),
    ),
    (
        "confidence-nan",
        lambda s, t: ["assert", "a.b", "1", "--agent", "x", "--confidence", "nan"],
        ("confidence",),
    ),
    (
        "batch-confidence",
        lambda s, t: [
            "assert",
            "--batch",
            _batch(t, GOOD_LINE, '{"subject": "a.b", "value": 1, "confidence": 2}'),
            "--agent",
            "x",
        ],
        ("line 2", "confidence"),
    ),
    (
        "lens-min-confidence",
        lambda s, t: ["lens", "define", "l", "--by", "a", "--min-confidence", "2"],
        ("invalid lens", "min_confidence"),
    ),
    (  # NaN was "less than or equal to 1"
        "confidence-nan",
        lambda s, t: ["assert", "a.b", "1", "--agent", "x", "--confidence", "nan"],
        ("confidence nan: Input should be a finite number",),
    ),
    # other assertion fields
    (
        "lifecycle-not-assertable",
        lambda s, t: ["assert", "a.b", "1", "--agent", "x", "--lifecycle", "rejected"],
        ("lifecycle",),
    ),
    ("kind", lambda s, t: ["assert", "a.b", "1", "--agent", "x", "--kind", "rumour"], ("kind",)),
    (
        "valid-to-before-from",
        lambda s, t: [
            "assert",
            "a.b",
            "1",
            "--agent",
            "x",
            "--valid-from",
            "1h",
            "--valid-to",
            "2h",
        ],
        ("valid_to must be after valid_from",),
    ),
    (
        "derived-from-unknown",
        lambda s, t: ["assert", "a.b", "1", "--agent", "x", "--derived-from", "ffffffff"],
        ("no assertion with id 'ffffffff'",),
    ),
    # lifecycle moves
    (
        "reject-approved",
        lambda s, t: ["reject", s.rs256[:8], "--by", "alice"],
        ("is approved: it cannot become rejected", "episteme correct"),
    ),
    (
        "deprecate-proposed",
        lambda s, t: ["deprecate", s.es256[:8], "--by", "alice"],
        ("cannot become deprecated; a proposed assertion can be approved or rejected",),
    ),
    (
        "approve-approved",
        lambda s, t: ["approve", s.rs256[:8], "--by", "alice"],
        ("is approved: it cannot become approved; an approved assertion can be deprecated",),
    ),
    # ids
    ("unknown-id", lambda s, t: ["approve", "ffffffff", "--by", "a"], ("no assertion",)),
    ("id-too-short", lambda s, t: ["approve", "abc", "--by", "a"], ("too short",)),
    ("id-not-hex", lambda s, t: ["approve", "zz!!zz", "--by", "a"], ("is not an id",)),
    ("reject-unknown", lambda s, t: ["reject", "0000000", "--by", "a"], ("no assertion",)),
    ("deprecate-short", lambda s, t: ["deprecate", "ab", "--by", "a"], ("too short",)),
    (
        "correct-unknown",
        lambda s, t: ["correct", "ffffffff", "--by", "a", "--reason", "r"],
        ("no assertion",),
    ),
    ("correct-short", lambda s, t: ["correct", "f", "--by", "a", "--reason", "r"], ("too short",)),
    ("impact-unknown", lambda s, t: ["impact", "ffffffff"], ("no assertion",)),
    ("impact-short", lambda s, t: ["impact", "ab"], ("too short",)),
    ("impact-query-id", lambda s, t: ["impact", s.q_orch], ("is a query id",)),
    (
        "impact-recent",
        lambda s, t: ["impact", s.es256, "--recent", "1001"],
        ("recent must be between 0 and 1,000",),
    ),
    ("blame-unknown", lambda s, t: ["blame", "ffffffff"], ("no assertion with id or subject",)),
    ("blame-unknown-subject", lambda s, t: ["blame", "db"], ("no assertion with id or subject",)),
    ("blame-query-id", lambda s, t: ["blame", s.q_orch], ("not an assertion",)),
    ("trace-unknown-query", lambda s, t: ["trace", "q_ffffff"], ("no query",)),
    ("trace-unknown-decision", lambda s, t: ["trace", "d_ffffff"], ("no decision",)),
    ("trace-short", lambda s, t: ["trace", "d_f"], ("too short",)),
    (
        "trace-assertion",
        lambda s, t: ["trace", s.es256[:8]],
        ("its history (blame) says where it came from",),
    ),
    (
        "decide-unknown-query",
        lambda s, t: ["decide", "x", "--agent", "a", "--query", "q_ffffff"],
        ("no query",),
    ),
    (
        "decide-cites-assertion",
        lambda s, t: ["decide", "x", "--agent", "a", "--query", s.es256[:8]],
        ("is an assertion id", "q_"),
    ),
    ("decide-no-action", lambda s, t: ["decide", " ", "--agent", "a"], ("needs an action",)),
    (
        "correct-blank-reason",
        lambda s, t: ["correct", s.es256[:8], "--by", "a", "--reason", " "],
        ("needs a reason",),
    ),
    # values
    (
        "malformed-json",
        lambda s, t: ["assert", "a.b", '{"a":', "--agent", "x"],
        ("malformed JSON value", "'{\"a\":'"),
    ),
    ("malformed-list", lambda s, t: ["assert", "a.b", "[1, 2", "--agent", "x"], ("malformed",)),
    (
        "correct-malformed-value",
        lambda s, t: ["correct", s.es256[:8], "--by", "a", "--reason", "r", "--value", "[1,"],
        ("malformed JSON value",),
    ),
    ("value-infinite", lambda s, t: ["assert", "a.b", "1e999", "--agent", "x"], ("finite",)),
    (
        "correct-infinite",
        lambda s, t: ["correct", s.es256[:8], "--by", "a", "--reason", "r", "--value", "1e999"],
        ("finite",),
    ),
    # batches
    (
        "batch-malformed-middle",
        lambda s, t: [
            "assert",
            "--batch",
            _batch(t, GOOD_LINE, '{"subject": "a.b", "value":', '{"subject": "a.c", "value": 1}'),
            "--agent",
            "x",
        ],
        ("line 2: malformed JSON",),
    ),
    (
        "batch-invalid-subject-middle",
        lambda s, t: [
            "assert",
            "--batch",
            _batch(t, GOOD_LINE, '{"subject": "a..b", "value": 1}', GOOD_LINE),
            "--agent",
            "x",
        ],
        ("line 2", "subject 'a..b'"),
    ),
    (
        "batch-not-an-object",
        lambda s, t: ["assert", "--batch", _batch(t, GOOD_LINE, "[1, 2]"), "--agent", "x"],
        ("line 2: expected a JSON object",),
    ),
    (
        "batch-unknown-field",
        lambda s, t: [
            "assert",
            "--batch",
            _batch(t, '{"subject": "a.b", "value": 1, "colour": "red"}'),
            "--agent",
            "x",
        ],
        ("line 1", "colour"),
    ),
    (
        "batch-missing-value",
        lambda s, t: ["assert", "--batch", _batch(t, '{"subject": "a.b"}'), "--agent", "x"],
        ("line 1", "value"),
    ),
    (
        "batch-nan",
        lambda s, t: [
            "assert",
            "--batch",
            _batch(t, GOOD_LINE, '{"subject": "a.b", "value": [NaN]}'),
            "--agent",
            "x",
        ],
        ("line 2", "finite"),
    ),
    (
        "batch-repeats-a-line",
        lambda s, t: ["assert", "--batch", _batch(t, GOOD_LINE, GOOD_LINE), "--agent", "x"],
        ("line 2 repeats line 1",),
    ),
    (
        "batch-derived-from-an-unknown-id",  # which line's: it named no line at all
        lambda s, t: [
            "assert",
            "--batch",
            _batch(t, GOOD_LINE, '{"subject": "a.c", "value": 1, "derived_from": ["ffffff"]}'),
            "--agent",
            "x",
        ],
        ("line 2: no assertion with id 'ffffff'",),
    ),
    (
        "batch-counts-lines-not-assertions",  # a blank line between: the file's numbers
        lambda s, t: [
            "assert",
            "--batch",
            _batch(t, GOOD_LINE, "", '{"subject": "a.c", "value": 1, "evidence": "x\\u0000"}'),
            "--agent",
            "x",
        ],
        ("line 3, evidence: text may not contain the NUL character",),
    ),
    (
        "batch-unknown-derivation",
        lambda s, t: [
            "assert",
            "--batch",
            _batch(t, GOOD_LINE, '{"subject": "a.b", "value": 1, "derived_from": ["ffffffff"]}'),
            "--agent",
            "x",
        ],
        ("no assertion with id 'ffffffff'",),
    ),
    (
        "batch-empty",
        lambda s, t: ["assert", "--batch", _batch(t, "", "  "), "--agent", "x"],
        ("has no assertions",),
    ),
    (
        "batch-missing-file",
        lambda s, t: ["assert", "--batch", str(t / "nope.jsonl"), "--agent", "x"],
        ("cannot read --batch", "No such file"),
    ),
    (
        "batch-and-subject",
        lambda s, t: ["assert", "a.b", "1", "--batch", _batch(t, GOOD_LINE), "--agent", "x"],
        ("either SUBJECT VALUE or --batch",),
    ),
    (
        "assert-no-value",
        lambda s, t: ["assert", "a.b", "--agent", "x"],
        ("give SUBJECT and VALUE",),
    ),
    # times
    (
        "query-at",
        lambda s, t: ["query", "auth", "--agent", "x", "--at", "yesterdayish"],
        ("--at: cannot read time 'yesterdayish'", "RFC 3339"),
    ),
    ("served-at", lambda s, t: ["served", "auth", "--at", "yesterdayish"], ("--at:",)),
    ("audit-since", lambda s, t: ["audit", "--since", "last tuesday"], ("--since: cannot read",)),
    ("audit-until", lambda s, t: ["audit", "--until", "25:00"], ("--until:",)),
    ("diff-from", lambda s, t: ["diff", "--from", "yesterdayish"], ("--from: cannot read",)),
    ("diff-to", lambda s, t: ["diff", "--from", "1h", "--to", "13pm"], ("--to:", "1-12")),
    ("time-unit", lambda s, t: ["diff", "--from", "3 fortnights"], ("unknown time unit",)),
    (
        "valid-from",
        lambda s, t: ["assert", "a.b", "1", "--agent", "x", "--valid-from", "soon"],
        ("--valid-from: cannot read time 'soon'",),
    ),
    (
        "to-before-from",
        lambda s, t: ["diff", "auth", "--from", "2h", "--to", "3h"],
        ("window is before its start",),
    ),
    (
        "to-before-from-rfc3339",
        lambda s, t: [
            "diff",
            "--from",
            "2026-11-21T21:00:00Z",
            "--to",
            "2026-11-21T14:00:00Z",
        ],
        ("window is before its start",),
    ),
    # lenses
    (
        "unknown-lens",
        lambda s, t: ["query", "auth", "--agent", "x", "--lens", "newest"],
        ("no lens named 'newest'", "approved, latest, consensus, all"),
    ),
    ("lens-builtin", lambda s, t: ["lens", "define", "all", "--by", "a"], ("built-in lens",)),
    (
        "lens-bad-lifecycle",
        lambda s, t: ["lens", "define", "l", "--by", "a", "--lifecycle", "maybe"],
        ("invalid lens", "'maybe'"),
    ),
    (
        "lens-bad-pick",
        lambda s, t: ["lens", "define", "l", "--by", "a", "--pick", "best"],
        ("invalid lens", "pick"),
    ),
    ("lens-bad-name", lambda s, t: ["lens", "define", "my lens", "--by", "a"], ("invalid lens",)),
    # epochs
    ("epoch-unknown", lambda s, t: ["epoch", "show", "nope"], ("no epoch named 'nope'",)),
    (
        "epoch-supersede-unknown",
        lambda s, t: ["epoch", "supersede", "nope", "--by", "a", "--reason", "r"],
        ("no epoch named 'nope'",),
    ),
    (
        "epoch-supersede-no-reason",
        lambda s, t: ["epoch", "supersede", "rfc-research-1", "--by", "a", "--reason", ""],
        ("needs a reason",),
    ),
    # numbers and times past what the databases and the calendar hold
    (
        "limit-too-large",
        lambda s, t: ["audit", "--limit", "99999999999999999999"],
        ("limit must be between 1 and 1,000,000",),
    ),
    (
        "limit-zero",
        lambda s, t: ["denials", "--limit", "0"],
        ("limit must be between 1 and 1,000,000",),
    ),
    (
        "time-before-year-1",
        lambda s, t: ["diff", "auth", "--from", "999999999d"],
        ("--from: time '999999999d' is out of range",),
    ),
    # files
    (
        "batch-not-utf8",
        lambda s, t: ["assert", "--agent", "x", "--batch", _latin1(t)],
        ("not UTF-8 text (byte 40 is not)",),
    ),
    (
        "import-not-utf8",
        lambda s, t: ["import", _latin1(t), "--home", str(t / "fresh")],
        ("not UTF-8 text",),
    ),
    ("export-no-name", lambda s, t: ["export", "--output", ""], ("needs a file name",)),
    ("export-to-a-directory", lambda s, t: ["export", "-o", str(t)], ("Is a directory",)),
    (
        "export-nowhere",
        lambda s, t: ["export", "-o", str(t / "no" / "such" / "dir.jsonl")],
        ("cannot write", "No such file or directory"),
    ),
    ("import-missing", lambda s, t: ["import", str(t / "nope.jsonl")], ("cannot read",)),
    ("init-existing", lambda s, t: ["init"], ("already holds a ledger",)),
]


@pytest.mark.parametrize(
    ("args", "needles"), [e[1:] for e in USER_ERRORS], ids=[e[0] for e in USER_ERRORS]
)
def test_user_error_is_one_line_exit_2_and_writes_nothing(
    cli: Cli, scenario: Scenario, tmp_path: Path, args: Args, needles: tuple[str, ...]
) -> None:
    _refused(cli, scenario, tmp_path, args, 2, *needles)


def test_a_subject_starting_with_a_dash_is_refused(
    cli: Cli, scenario: Scenario, home: Path
) -> None:
    before = journal(cli)
    # As an argument, Typer reads it as an option and says so.
    assert_usage_error(cli("assert", "-x", "1", "--agent", "x"), "No such option: -x")
    # After `--` it reaches the ledger, which refuses it.
    r = cli("assert", "--agent", "x", "--home", str(home), "--", "-x", "1", home_arg=False)
    assert_error(r, 2, "subject '-x'", "not starting with '-'")
    r = cli("query", "--agent", "x", "--home", str(home), "--", "-x", home_arg=False)
    assert_error(r, 2, "invalid subject '-x'")
    assert journal(cli) == before


def test_a_refused_lifecycle_move_on_a_rejected_assertion(cli: Cli, scenario: Scenario) -> None:
    done(cli("reject", scenario.es256[:8], "--by", "alice"))
    before = journal(cli)
    for args in (
        ["approve", scenario.es256[:8], "--by", "alice"],
        ["reject", scenario.es256[:8], "--by", "alice"],
    ):
        assert_error(cli(*args), 2, "is rejected; a rejected assertion cannot move again")
    assert journal(cli) == before
    # rejected in review, it can still be marked incorrect, once
    done(cli("correct", scenario.es256[:8], "--by", "oncall", "--reason", "prod is RS256"))
    before = journal(cli)
    again = cli("correct", scenario.es256[:8], "--by", "alice", "--reason", "again")
    assert_error(again, 2, "was corrected already (x_", "by oncall: prod is RS256)")
    assert journal(cli) == before


def test_a_superseded_epoch_is_closed(cli: Cli, scenario: Scenario) -> None:
    done(cli("epoch", "supersede", "rfc-research-1", "--by", "oncall", "--reason", "bad run"))
    before = journal(cli)
    again = cli("epoch", "supersede", "rfc-research-1", "--by", "oncall", "--reason", "again")
    assert_error(again, 2, "epoch rfc-research-1 was already superseded")
    reuse = cli("assert", "a.b", "1", "--agent", "x", "--epoch", "rfc-research-1")
    assert_error(reuse, 2, "epoch rfc-research-1 was superseded: use a new epoch name")
    assert journal(cli) == before


def test_a_batch_with_a_bad_line_from_stdin_writes_none_of_it(cli: Cli, scenario: Scenario) -> None:
    before = journal(cli)
    text = "\n".join(
        [
            '{"subject": "db.primary", "value": "db-1", "lifecycle": "approved"}',
            '{"subject": "db.replicas", "value": 2}',
            '{"subject": "db.engine", "value": {"name": "postgres"',
            '{"subject": "db.port", "value": 5432}',
        ]
    )
    r = cli("assert", "--batch", "-", "--agent", "importer", stdin=text)
    assert_error(r, 2, "line 3: malformed JSON")
    assert journal(cli) == before
    everything = ok(cli("query", "db", "--agent", "x", "--lens", "all", "--json"))
    assert everything["items"] == []


def test_missing_required_options_are_typer_usage_errors(cli: Cli, scenario: Scenario) -> None:
    before = journal(cli)
    assert_usage_error(cli("assert", "a.b", "1"), "Missing option '--agent'")
    assert_usage_error(cli("query", "auth"), "Missing option '--agent'")
    # approve also takes diagnosis sessions (no --by); for an assertion it is required
    assert_error(cli("approve", scenario.es256), 2, "needs --by")
    assert_usage_error(cli("correct", scenario.es256, "--by", "a"), "Missing option '--reason'")
    assert_usage_error(cli("diff", "auth"), "Missing option '--from'")
    assert_usage_error(cli("decide", "x"), "Missing option '--agent'")
    assert_usage_error(cli("epoch", "supersede", "e", "--by", "a"), "Missing option '--reason'")
    assert_usage_error(cli("lens", "define", "l"), "Missing option '--by'")
    # a limit out of range is the ledger's one line on every listing, as for denials
    assert_error(cli("served", "auth", "--limit", "0"), 2, "limit must be between 1 and")
    assert_error(cli("audit", "--limit", "-1"), 2, "limit must be between 1 and")
    assert_usage_error(
        cli("assert", "a.b", "1", "--agent", "x", "--confidence", "high"), "--confidence"
    )
    assert_usage_error(cli("trace"), "Missing argument")
    assert_usage_error(cli("frobnicate"), "No such command 'frobnicate'")
    assert journal(cli) == before


# -- the world: missing, corrupt and foreign files (exit 1) --------------------------


COMMANDS_THAT_OPEN: list[list[str]] = [
    ["verify"],
    ["query", "auth", "--agent", "x"],
    ["assert", "a.b", "1", "--agent", "x"],
    ["export"],
    ["lens", "list"],
    ["rebuild", "--repair"],
    ["import", "-"],
]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("args", COMMANDS_THAT_OPEN, ids=lambda a: a[0])
def test_a_corrupt_database_is_not_an_episteme_ledger(
    cli: Cli, home: Path, args: list[str]
) -> None:
    home.mkdir()
    db = home / "ledger.db"
    db.write_bytes(random.Random(7).randbytes(8192))
    before = _digest(db)
    r = cli(*args, stdin="")
    assert_error(r, 1, f"{db} is not an Episteme ledger", "episteme init")
    assert _digest(db) == before
    assert sorted(p.name for p in home.iterdir()) == ["ledger.db"]


@pytest.mark.parametrize("args", COMMANDS_THAT_OPEN, ids=lambda a: a[0])
def test_a_foreign_sqlite_file_is_not_an_episteme_ledger(
    cli: Cli, home: Path, args: list[str]
) -> None:
    home.mkdir()
    db = home / "ledger.db"
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE recipes (name TEXT, minutes INTEGER)")
        conn.execute("INSERT INTO recipes VALUES ('bread', 240)")
    before = _digest(db)
    r = cli(*args, stdin="")
    assert_error(r, 1, f"{db} is a SQLite file but not an Episteme ledger")
    assert _digest(db) == before
    with closing(sqlite3.connect(db)) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    assert tables == ["recipes"]


def test_init_refuses_a_corrupt_or_foreign_file(cli: Cli, home: Path) -> None:
    home.mkdir()
    db = home / "ledger.db"
    db.write_bytes(b"not a database at all" * 100)
    before = _digest(db)
    assert_error(cli("init"), 2, "already exists and is not an Episteme ledger")
    assert _digest(db) == before


def test_refused_files_leave_no_open_connection(cli: Cli, tmp_path: Path) -> None:
    corrupt, foreign = tmp_path / "corrupt", tmp_path / "foreign"
    corrupt.mkdir()
    foreign.mkdir()
    (corrupt / "ledger.db").write_bytes(random.Random(3).randbytes(4096))
    with closing(sqlite3.connect(foreign / "ledger.db")) as conn, conn:
        conn.execute("CREATE TABLE t (x)")
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    gc.collect()
    gc.disable()  # a leaked connection must not be rescued by the collector
    try:
        before = len(os.listdir(fd_dir))
        for _ in range(10):
            for h in (corrupt, foreign):
                assert cli("verify", "--home", str(h), home_arg=False).code == 1
        after = len(os.listdir(fd_dir))
    finally:
        gc.enable()
    assert after <= before


def test_a_home_without_a_ledger_says_to_run_init(cli: Cli, home: Path, tmp_path: Path) -> None:
    for args in (["verify"], ["query", "auth", "--agent", "x"], ["assert", "a.b", "1", "-a", "x"]):
        assert_error(cli(*args), 1, f"no ledger at {home / 'ledger.db'}", "run `episteme init`")
    assert not home.exists()
    home.mkdir()
    assert_error(cli("export"), 1, "run `episteme init` first")
    assert list(home.iterdir()) == []


def test_a_home_that_is_a_file(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    r = cli("verify", "--home", str(f), home_arg=False)
    assert_error(r, 2, "is a file: give a directory")
    assert f.read_text() == "hello"


def test_what_python_meets_before_a_check_is_one_line(cli: Cli, home: Path, tmp_path: Path) -> None:
    # Each of these was a traceback: bytes that are not UTF-8 in an argument (kept by
    # Python as surrogates), a row edited under the ledger, an export line without its
    # time (a KeyError's repr), and the demo given a file for its home.
    done(cli("init"))
    assert_error(cli("token", "revoke", "\udcff\udcfe", "--reason", "r"), 2, "not UTF-8 text")
    assert_error(cli("notifications", "--after", "\udcff"), 2, "not UTF-8 text")
    ok(cli("assert", "x.y", "1", "--agent", "a", "--json"))
    with closing(sqlite3.connect(home / "ledger.db")) as db, db:
        db.execute("UPDATE assertions SET value = '{bad'")
    for args in (("query", "x", "--agent", "a", "--lens", "all"), ("blame", "x.y")):
        assert_error(cli(*args), 1, "cannot be read back as JSON", "rebuild --repair")
    done(cli("rebuild", "--repair"))
    assert ok(cli("query", "x", "--agent", "a", "--lens", "all", "--json"))["items"]
    exported = tmp_path / "j.jsonl"
    exported.write_text('{"seq": 1}\n')
    r = cli("import", str(exported), "--home", str(tmp_path / "new"), home_arg=False)
    assert_error(r, 2, "line 1 of", "is not an exported event: it has no 'at'")
    r = cli("demo", "--home", str(exported), home_arg=False)
    assert_error(r, 2, "is a file: give an empty directory")
    r = cli("assert", "--agent", "a", "--batch", "-", stdin='{"subject":"b.a","value":"x\u0000y"}')
    assert_error(r, 2, "line 1: malformed JSON: Invalid control character at column")


def test_an_empty_location_is_refused_not_taken_for_the_default(cli: Cli, tmp_path: Path) -> None:
    # `--home "$UNSET"` used ~/.episteme, and `copy --to "$UNSET"` wrote ./ledger.db.
    for args in (("verify", "--home", ""), ("verify", "--db", " ")):
        assert_error(cli(*args, home_arg=False), 2, "--home/--db is empty")
    r = cli("copy", "--from", str(tmp_path), "--to", "", home_arg=False)
    assert_error(r, 2, "--to is empty")
    assert not (Path.cwd() / "ledger.db").exists()


def test_a_subject_refused_is_quoted_as_typed(cli: Cli) -> None:
    # 'auth..' was quoted as 'auth.', a form that is valid.
    done(cli("init"))
    for typed in ("auth..", ".", "auth.*.*"):
        assert_error(cli("query", typed, "--agent", "a"), 2, f"invalid subject {typed!r}")


def test_empty_lists_say_so(cli: Cli) -> None:
    # A header row over nothing, and "head None".
    done(cli("init"))
    assert done(cli("verify")) == "chain ok: 0 events, an empty journal\n"
    assert done(cli("denials")) == "no refused call\n"
    assert done(cli("token", "list")) == "no token\n"


def test_closed_standard_input_is_said(tmp_path: Path) -> None:
    # `--batch -` with stdin closed (`<&-`): sys.stdin is None, and reading it raised.
    r = subprocess.run(
        [sys.executable, "-m", "episteme", "assert", "--agent", "a", "--batch", "-",
         "--home", str(tmp_path)],
        capture_output=True, text=True, preexec_fn=lambda: os.close(0), timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr == "error: cannot read --batch -: standard input is closed; give a FILE\n"


def test_a_ledger_file_that_is_a_directory(cli: Cli, tmp_path: Path) -> None:
    # init said the home "already holds a ledger", verify to check that it is writable
    home = tmp_path / "home"
    (home / "ledger.db").mkdir(parents=True)
    for command in ("init", "verify"):
        r = cli(command, "--home", str(home), home_arg=False)
        assert_error(r, 1, "ledger.db is a directory, not a ledger file")


def test_init_twice_is_refused(cli: Cli, scenario: Scenario) -> None:
    before = journal(cli)
    assert_error(cli("init"), 2, "already holds a ledger")
    assert journal(cli) == before


# -- import ----------------------------------------------------------------------------


def test_import_into_a_non_empty_home_is_refused(
    cli: Cli, scenario: Scenario, tmp_path: Path
) -> None:
    dump = tmp_path / "journal.jsonl"
    done(cli("export", "-o", str(dump)))
    before = journal(cli)
    assert_error(cli("import", str(dump)), 2, "is not empty: import into a fresh ledger")
    assert journal(cli) == before
    assert head(cli)["ok"] is True


def test_values_with_unicode_line_separators_go_out_and_back(cli: Cli, tmp_path: Path) -> None:
    # JSON leaves U+2028, U+2029 and U+0085 unescaped; splitting lines at them, as
    # str.splitlines does, made such a batch or export unreadable.
    odd = "line\u2028sep\u2029para\x85next"
    done(cli("init"))
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"subject": "text.odd", "value": odd}, ensure_ascii=False) + "\n")
    done(cli("assert", "--batch", str(batch), "--agent", "bot"))
    dump = tmp_path / "journal.jsonl"
    done(cli("export", "-o", str(dump)))
    assert "\u2028" in dump.read_text()  # as it was written: unescaped
    other = tmp_path / "other"
    done(cli("import", str(dump), "--home", str(other), home_arg=False))
    assert head(cli, str(other)) == head(cli)
    answer = ok(cli("query", "text.odd", "--lens", "latest", "--json", "-a", "x"))
    assert answer["items"][0]["assertion"]["value"] == odd


def _tampered(lines: list[str], seq: int) -> list[str]:
    out = list(lines)
    event = json.loads(out[seq - 1])
    event["actor"] = "mallory"
    out[seq - 1] = json.dumps(event)
    return out


def test_import_of_a_tampered_line_is_refused_and_creates_nothing(
    cli: Cli, scenario: Scenario, tmp_path: Path
) -> None:
    dump = tmp_path / "tampered.jsonl"
    dump.write_text("\n".join(_tampered(journal(cli), 3)) + "\n")
    other = tmp_path / "other"
    r = cli("import", str(dump), "--home", str(other), home_arg=False)
    assert_error(r, 2, "the journal to import is broken at event 3", "hash does not match")
    assert not other.exists()


def test_import_of_a_tampered_line_into_an_empty_ledger_imports_nothing(
    cli: Cli, scenario: Scenario, tmp_path: Path
) -> None:
    lines = journal(cli)
    other = tmp_path / "other"
    done(cli("init", "--home", str(other), home_arg=False))
    text = "\n".join(_tampered(lines, len(lines))) + "\n"
    r = cli("import", "-", "--home", str(other), home_arg=False, stdin=text)
    assert_error(r, 2, f"broken at event {len(lines)}")
    assert head(cli, str(other))["events"] == 0
    # The same file, untampered, still imports into it.
    ok(cli("import", "-", "--json", "--home", str(other), home_arg=False, stdin="\n".join(lines)))
    assert head(cli, str(other)) == head(cli)


def test_import_of_a_reordered_or_truncated_journal_is_refused(
    cli: Cli, scenario: Scenario, tmp_path: Path
) -> None:
    lines = journal(cli)
    cases = {
        "swapped": [lines[1], lines[0], *lines[2:]],
        "gap": [lines[0], *lines[2:]],
    }
    for name, broken in cases.items():
        other = tmp_path / name
        r = cli("import", "-", "--home", str(other), home_arg=False, stdin="\n".join(broken))
        assert_error(r, 2, "the journal to import is broken at event")
        assert not other.exists()


def test_import_of_a_file_that_is_not_an_export(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"seq": 1}\nnot json\n')
    other = tmp_path / "other"
    r = cli("import", str(bad), "--home", str(other), home_arg=False)
    assert_error(r, 2, f"line 1 of {bad} is not an exported event")
    assert not other.exists()


# -- verify on a journal altered behind Episteme's back ---------------------------------


def test_verify_names_the_altered_event(cli: Cli, home: Path, scenario: Scenario) -> None:
    lines = journal(cli)
    es_seq = 3  # the ES256 proposal
    assert json.loads(lines[es_seq - 1])["payload"]["assertions"][0]["id"] == scenario.es256
    sql(
        home / "ledger.db",
        "UPDATE journal SET payload = replace(payload, 'ES256', 'RS256') WHERE seq = ?",
        es_seq,
    )
    r = cli("verify")
    assert_error(r, 1, f"chain broken at event {es_seq}", "hash does not match")
    r = cli("verify", "--json")
    assert r.code == 1
    report = r.json()
    assert (report["ok"], report["first_bad_seq"], report["events"]) == (False, es_seq, es_seq - 1)
    assert report["head"] == json.loads(lines[es_seq - 2])["hash"]


def test_verify_names_a_deleted_event(cli: Cli, home: Path, scenario: Scenario) -> None:
    sql(home / "ledger.db", "DELETE FROM journal WHERE seq = 5")
    r = cli("verify")
    assert_error(r, 1, "chain broken at event 6", "where 5 was expected")


def test_verify_names_an_altered_actor(cli: Cli, home: Path, scenario: Scenario) -> None:
    sql(home / "ledger.db", "UPDATE journal SET actor = 'mallory' WHERE seq = 7")
    assert_error(cli("verify"), 1, "chain broken at event 7")


# -- the demo refuses a used home --------------------------------------------------------


def test_demo_refuses_a_home_that_is_not_empty(cli: Cli, tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    r = cli("demo", "--home", str(used), home_arg=False)
    assert_error(r, 2, "is not empty: the demo needs a fresh directory")
    assert [p.name for p in used.iterdir()] == ["notes.txt"]


def test_a_database_error_the_store_did_not_expect_is_one_line(cli: Cli, home: Path) -> None:
    assert cli("init").code == 0
    with closing(sqlite3.connect(home / "ledger.db")) as raw, raw:
        raw.execute("DROP TABLE versions")  # a damaged file: a projection table is gone
    r = cli("query", "a.b", "--agent", "x")  # an audited read: a write
    assert r.code == 1
    assert r.err.startswith(f"error: cannot write to {home / 'ledger.db'}: no such table")
    assert r.err.endswith("nothing of this write was recorded\n")
    assert "Traceback" not in r.err
    r = cli("blame", "a.b")  # a read
    assert r.code == 1
    assert r.err.startswith("error: the ledger's database failed: no such table")
    assert "Traceback" not in r.err


def test_serve_on_a_port_in_use_is_one_line_exit_1(cli: Cli, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli("serve", "--port", str(port), "--home", str(tmp_path / "new"), home_arg=False)
    assert_error(r, 1, f"cannot listen on 127.0.0.1:{port}", "in use")
    assert not (tmp_path / "new").exists()  # no ledger, no admin token made for nothing


def test_serve_warns_of_a_misspelt_setting(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EPISTEME_WORKRES", "2")
    monkeypatch.setenv("EPISTEME_WEBHOOK_SECRET", "x")  # a name of the user's: not a typo
    with socket.socket() as taken:  # the server stops there, having warned
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli("serve", "--port", str(port), "--home", str(tmp_path / "new"), home_arg=False)
    assert r.err.splitlines()[0] == (
        "warning: EPISTEME_WORKRES is not a setting, and is ignored: did you mean EPISTEME_WORKERS?"
    )
    assert "WEBHOOK" not in r.err


def test_serve_refuses_a_model_or_a_diagnosis_config_it_cannot_use_before_it_starts(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It printed "serving … on …", then died with a traceback as the app started.
    monkeypatch.setenv("EPISTEME_MODEL", "nonsense")
    r = cli("serve", "--home", str(tmp_path / "new"), home_arg=False)
    assert_error(r, 2, "EPISTEME_MODEL nonsense: Unknown model: nonsense")
    monkeypatch.delenv("EPISTEME_MODEL")
    config = tmp_path / "diagnosis.json"
    config.write_text('{"keepalive_s": 0}')
    monkeypatch.setenv("EPISTEME_DIAGNOSIS_CONFIG", str(config))
    r = cli("serve", "--home", str(tmp_path / "new"), home_arg=False)
    assert_error(r, 2, "EPISTEME_DIAGNOSIS_CONFIG", "keepalive_s")
    assert "serving" not in r.out
    assert not (tmp_path / "new").exists()


def test_serve_that_fails_as_it_starts_leaves_its_port_free(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The socket it listens on before it says "serving" stayed bound (connections went
    # into a backlog nobody served) when the app then failed to start.
    monkeypatch.setenv("EPISTEME_TRUST_PRIOR", "0")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    r = cli("serve", "--port", str(port), "--home", str(tmp_path / "new"), home_arg=False)
    assert r.code != 0
    assert "EPISTEME_TRUST_PRIOR" in r.err, r.err
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))  # free


def test_a_bad_setting_is_named_as_it_was_given(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "max_body 'abc'" named neither the variable that held it nor the flag
    monkeypatch.setenv("EPISTEME_MAX_BODY", "abc")
    r = cli("mcp", "--home", str(tmp_path / "new"), home_arg=False)
    assert_error(r, 2, "invalid server setting: EPISTEME_MAX_BODY 'abc':")
    monkeypatch.setenv("EPISTEME_WORKERS", "0")
    r = cli("serve", "--home", str(tmp_path / "new"), home_arg=False)
    assert_error(r, 2, "invalid server setting: EPISTEME_WORKERS '0':")
    r = cli("serve", "--workers", "0", "--home", str(tmp_path / "new"), home_arg=False)
    assert_error(r, 2, "invalid server setting: --workers 0:")
    assert not (tmp_path / "new").exists()


def test_every_variable_the_code_reads_is_known_to_the_misspelling_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # EPISTEME_DB_POL and EPISTEME_CONSOLE_KY were ignored without a word: the check knew
    # only the server's settings.
    from episteme.api.settings import OTHER_VARIABLES, Settings

    source = Path(episteme.__file__).parent
    read = {
        name
        for path in source.rglob("*.py")
        for name in re.findall(r'"(EPISTEME_[A-Z0-9_]+)"', path.read_text())
    }
    known = {f"EPISTEME_{name.upper()}" for name in Settings.model_fields} | set(OTHER_VARIABLES)
    assert read <= known, sorted(read - known)
    for typo, meant in (
        ("EPISTEME_DB_POL", "EPISTEME_DB_POOL"),
        ("EPISTEME_CONSOLE_KY", "EPISTEME_CONSOLE_KEY"),
    ):
        monkeypatch.setenv(typo, "1")
        assert any(meant in line for line in Settings.misspelt()), typo


def test_serve_home_wins_over_episteme_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --home A` with EPISTEME_DB set serves A, as `token list --home A` reads A."""
    from episteme.cli.server import serve_settings

    monkeypatch.setenv("EPISTEME_DB", str(tmp_path / "b"))
    assert serve_settings(str(tmp_path / "a")).location == tmp_path / "a"
    assert serve_settings(None).location == tmp_path / "b"
    monkeypatch.setenv("EPISTEME_DB", "postgresql://u@db.example/ledger")
    assert serve_settings(str(tmp_path / "a")).location == tmp_path / "a"
    assert serve_settings(None).location == "postgresql://u@db.example/ledger"
    assert serve_settings("postgresql://u@other/x").location == "postgresql://u@other/x"
    # and so in the workers, which read the settings back from the variables it sets
    monkeypatch.setenv("EPISTEME_DB", str(tmp_path / "b"))
    for name, value in serve_settings(str(tmp_path / "a")).to_env().items():
        monkeypatch.setenv(name, value)
    from episteme.api.settings import Settings

    assert Settings.from_env().location == tmp_path / "a"


def test_serve_removes_the_counters_of_killed_servers_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server killed with SIGKILL leaves its counters' directory; the next start removes
    it, and leaves those of servers still running."""
    import subprocess
    import sys
    import tempfile

    from episteme.cli import server

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = tmp_path / f"{server.METRICS_PREFIX}{gone.stdout.strip()}-x1"
    alive = tmp_path / f"{server.METRICS_PREFIX}{os.getpid()}-x2"
    other = tmp_path / "episteme-metrics-notapid"
    for d in (dead, alive, other):
        d.mkdir()
    server._remove_stale_metrics()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])


# -- what a terminal shows, and values Python cannot read -------------------------------


def test_control_characters_are_shown_as_escapes(cli: Cli, home: Path) -> None:
    # An escape sequence in a value reached the terminal: "erase the line, go green"
    # made an approved RS256 read as "ES256-looks-fine" to the person on call.
    done(cli("init"))
    forged = "RS256\x1b[2K\x1b[32mES256-looks-fine\x1b[0m\u202e"
    ok(cli("assert", "esc.x", forged, "--agent", "evil", "--json"))
    q = ok(cli("query", "esc", "--agent", "oncall", "--lens", "latest", "--json"))
    done(cli("decide", "ok\x1b[1A\x1b[2Kfake", "--agent", "evil", "--query", q["query_id"]))
    for args in (
        ("query", "esc", "--agent", "oncall", "--lens", "latest"),
        ("blame", "esc.x"),
        ("decisions",),
    ):
        out = done(cli(*args))
        assert "\x1b" not in out
        assert "\u202e" not in out
        assert "\\u001b[" in out
    shown = "RS256\\u001b[2K\\u001b[32mES256-looks-fine\\u001b[0m\\u202e"
    assert shown in done(cli("blame", "esc.x"))
    r = cli("get", "\x1b[2Kx")  # what an error repeats, too
    assert r.code == 2
    assert "\x1b" not in r.err


def test_lines_in_a_value_cannot_forge_lines_of_the_output(cli: Cli, home: Path) -> None:
    # A proposal of a rogue agent read, under `blame`, as an approved value introduced by
    # platform-team: its value's own lines were printed as lines of the tree.
    done(cli("init"))
    forged = (
        "ES256  approved  0dc556d55fbc\n├── introduced by platform-team at 09:00\n"
        "└── history\tother"
    )
    ok(cli("assert", "auth.alg", forged, "--agent", "rogue", "--source", "a\nb", "--json"))
    out = done(cli("blame", "auth.alg"))
    assert "introduced by platform-team" not in out.splitlines()[1]
    assert "0dc556d55fbc\\n├── introduced by platform-team at 09:00\\n└── history\\tother" in out
    assert "source: a\\nb" in out
    assert len([line for line in out.splitlines() if "introduced by" in line]) == 2


def test_a_huge_value_is_cut_for_people_and_whole_in_json(cli: Cli, home: Path) -> None:
    # Rich wrapped the whole of it: 34 s for 6.4 MB, and no end for 50 MB.
    done(cli("init"))
    huge = "word " * 400_000
    [made] = ok(cli("assert", "big.value", huge, "--agent", "a", "--json"))
    out = done(cli("blame", "big.value"))
    assert f"… ({len(huge):,} characters; --json gives it whole)" in out
    assert len(out) < 10_000
    [whole] = ok(cli("blame", made["id"], "--json"))
    assert whole["assertion"]["value"] == huge


@pytest.mark.parametrize(
    "value",
    ["1" * 5000, "[" + "1" * 5000 + "]", "[" * 5000 + "]" * 5000],
)
def test_a_value_python_cannot_read_is_one_line(cli: Cli, home: Path, value: str) -> None:
    # A 5,000-digit number and a value nested 5,000 deep were tracebacks.
    done(cli("init"))
    words = (
        "integers must fit in 64 bits"
        if "1" * 100 in value or "9" * 100 in value
        else ("values may nest at most 64 levels deep")
    )
    assert_error(cli("assert", "a.b", value, "--agent", "bot"), 2, words)
    line = '{"subject": "a.b", "value": ' + value + "}\n"
    assert_error(cli("assert", "--batch", "-", "--agent", "bot", stdin=line), 2, "line 1", words)


def test_an_import_whose_chain_holds_but_whose_events_do_not(
    cli: Cli, scenario: Scenario, tmp_path: Path
) -> None:
    # The chain's hash has no key: an edited export chained again (or one from a newer
    # version) verified, then raised KeyError or OverflowError from the projection.
    lines = journal(cli)
    cases: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
        "no id": (
            lambda e: e["payload"]["assertions"][0].pop("id"),
            "event 1 (assertions.added) is not one this version can read (KeyError: 'id')",
        ),
        "far future": (lambda e: e.update(at=10**30), "event 1 (assertions.added) is not one"),
        "seq inf": (lambda e: e.update(seq=1e400), "line 1 of -: Infinity is not a JSON value"),
    }
    for name, (change, words) in cases.items():
        other = tmp_path / name.replace(" ", "-")
        text = "\n".join(_rechained(lines, change)) + "\n"
        r = cli("import", "-", "--home", str(other), home_arg=False, stdin=text)
        assert_error(r, 2, words)
    deep = '{"seq": 1, "payload": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    r = cli("import", "-", "--home", str(tmp_path / "deep"), home_arg=False, stdin=deep)
    assert_error(r, 2, "line 1 of -: values may nest at most 64 levels deep")


def _rechained(lines: list[str], change: Callable[[dict[str, Any]], None]) -> list[str]:
    """The journal with its first event changed by `change`, every hash computed again."""
    events = [json.loads(line) for line in lines]
    change(events[0])
    prev, out = GENESIS, []
    for e in events:
        payload = canonical(e["payload"])
        if isinstance(e["seq"], int) and isinstance(e["at"], int):
            prev = link(prev, e["seq"], e["at"], e["actor"], e["kind"], payload)
        e["hash"] = prev.hex()
        out.append(json.dumps(e))
    return out


def test_export_never_writes_over_the_ledger_itself(
    cli: Cli, scenario: Scenario, home: Path
) -> None:
    # -o HOME/ledger.db replaced the database with its journal.
    before = journal(cli)
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-lock"):
        r = cli("export", "-o", str(home / name))
        assert_error(r, 2, "is the ledger's own file: export somewhere else")
    link_to_it = home.parent / "alias.db"
    link_to_it.symlink_to(home / "ledger.db")
    assert_error(cli("export", "-o", str(link_to_it)), 2, "the ledger's own file")
    assert journal(cli) == before


def test_export_to_what_is_not_a_plain_file_writes_into_it(
    cli: Cli, scenario: Scenario, tmp_path: Path
) -> None:
    # A full disk is the world failing (exit 1, not 2). And a device or a pipe is written
    # to, never renamed over: `-o /dev/full` replaced the device with the journal. (A link
    # to it here, so that a regression replaces the link, not the machine's device.)
    full = tmp_path / "full"
    full.symlink_to("/dev/full")
    assert_error(cli("export", "-o", str(full)), 1, "No space left on device")
    assert full.is_symlink()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    done(cli("export", "-o", str(fifo)))
    reader.join(10)
    assert got[0].decode().splitlines() == journal(cli)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_sigterm_stops_a_command_through_its_clean_ups(tmp_path: Path) -> None:
    # SIGTERM killed a command where it stood (an export's part-file was left behind);
    # it now ends it as Ctrl-C does. Here `import -` waits on its input when told.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "episteme", "import", "-", "--home", str(tmp_path / "h")]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path
    )
    assert proc.stdin is not None
    proc.stdin.write(b'{"seq": 1')  # a line begun, never ended
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not _catches(proc.pid, signal.SIGTERM):  # the command's handler is in place
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert b"Traceback" not in err
    assert not (tmp_path / "h").exists()


def _catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler of its own for `signum` (Linux's SigCgt)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)
