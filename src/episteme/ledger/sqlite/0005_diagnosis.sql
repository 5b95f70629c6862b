-- Diagnosis sessions, their event streams and the incidents alerts open (state of the
-- diagnosis workers, not knowledge: what a session found is recorded in the journal as
-- observations). Credential references only: no secret value is ever stored.

CREATE TABLE diagnosis_sessions (
    id          TEXT PRIMARY KEY,
    status      TEXT    NOT NULL,
    problem     TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    context     TEXT    NOT NULL,
    requester   TEXT    NOT NULL,
    plan        TEXT    NOT NULL,
    approved    TEXT,
    decided_by  TEXT,
    reason      TEXT,
    result      TEXT,
    error       TEXT,
    incident    TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    expires_at  INTEGER
) WITHOUT ROWID;
CREATE INDEX diagnosis_sessions_created ON diagnosis_sessions (created_at);

CREATE TABLE diagnosis_events (
    session_id TEXT    NOT NULL,
    n          INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    event      TEXT    NOT NULL,
    PRIMARY KEY (session_id, n)
) WITHOUT ROWID;

CREATE TABLE incidents (
    key        TEXT PRIMARY KEY,
    group_key  TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    labels     TEXT    NOT NULL,
    session_id TEXT,
    alerts     INTEGER NOT NULL,
    opened_at  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
