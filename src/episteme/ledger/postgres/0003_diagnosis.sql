-- Diagnosis sessions, their event streams and the incidents alerts open (state of the
-- diagnosis workers, not knowledge: what a session found is recorded in the journal as
-- observations). Credential references only: no secret value is ever stored.

CREATE TABLE diagnosis_sessions (
    id          text COLLATE "C" PRIMARY KEY,
    status      text COLLATE "C" NOT NULL,
    problem     text NOT NULL,
    environment text COLLATE "C" NOT NULL,
    context     text NOT NULL,
    requester   text COLLATE "C" NOT NULL,
    plan        text NOT NULL,
    approved    text,
    decided_by  text COLLATE "C",
    reason      text,
    result      text,
    error       text,
    incident    text COLLATE "C",
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    expires_at  timestamptz
);
CREATE INDEX diagnosis_sessions_created ON diagnosis_sessions (created_at);

CREATE TABLE diagnosis_events (
    session_id text COLLATE "C" NOT NULL,
    n          integer NOT NULL,
    at         timestamptz NOT NULL,
    event      text NOT NULL,
    PRIMARY KEY (session_id, n)
);

CREATE TABLE incidents (
    key        text COLLATE "C" PRIMARY KEY,
    group_key  text NOT NULL,
    status     text COLLATE "C" NOT NULL,
    labels     text NOT NULL,
    session_id text COLLATE "C",
    alerts     integer NOT NULL,
    opened_at  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
