-- Negative constraints that fade and resurrect, audited pre-flight checks, webhooks
-- (all projections of the journal), and the gardener's own state: its cursor, the
-- trust evidence it derives and the notifications it raised (outside the journal:
-- `episteme gardener replay` recomputes them under another policy).

ALTER TABLE constraints ADD COLUMN items TEXT NOT NULL DEFAULT '[]';
ALTER TABLE constraints ADD COLUMN half_life_days REAL NOT NULL DEFAULT 30;
ALTER TABLE constraints ADD COLUMN hits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE constraints ADD COLUMN last_hit_at INTEGER;

CREATE TABLE checks (
    id         TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    agent      TEXT    NOT NULL,
    plan       TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    items      TEXT    NOT NULL,
    checked    INTEGER NOT NULL,
    violations TEXT    NOT NULL,
    context    TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX checks_agent ON checks (agent, at);
CREATE INDEX checks_at ON checks (at);

CREATE TABLE webhooks (
    name TEXT PRIMARY KEY,
    spec TEXT    NOT NULL,
    seq  INTEGER NOT NULL,
    at   INTEGER NOT NULL,
    by   TEXT    NOT NULL
) WITHOUT ROWID;

CREATE INDEX assertions_valid_to ON assertions (valid_to) WHERE valid_to IS NOT NULL;

CREATE TABLE gardener (
    name       TEXT PRIMARY KEY,
    cursor     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    scanned_at INTEGER
) WITHOUT ROWID;

CREATE TABLE trust_evidence (
    seq          INTEGER NOT NULL,
    agent        TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    assertion_id TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    at           INTEGER NOT NULL,
    success      REAL    NOT NULL,
    failure      REAL    NOT NULL,
    reason       TEXT    NOT NULL,
    PRIMARY KEY (seq, agent, role, assertion_id)
) WITHOUT ROWID;
CREATE INDEX trust_agent ON trust_evidence (agent, subject, at);

CREATE TABLE notifications (
    key     TEXT PRIMARY KEY,
    type    TEXT    NOT NULL,
    seq     INTEGER,
    at      INTEGER NOT NULL,
    summary TEXT    NOT NULL,
    data    TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX notifications_type ON notifications (type, at);

-- Running totals per agent and top-level topic, decayed to `at`: what reads at the
-- present use (one row), where a read at a past time sums the evidence rows.
CREATE TABLE trust_totals (
    agent     TEXT NOT NULL,
    topic     TEXT NOT NULL,
    successes REAL NOT NULL,
    failures  REAL NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (agent, topic)
) WITHOUT ROWID;
