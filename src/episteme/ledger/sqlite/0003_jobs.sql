-- Work for background workers (not knowledge: outside the journal). A worker leases
-- a job; a lease that runs out frees the job. Times are integer microseconds.

CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue       TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'ready',
    attempts    INTEGER NOT NULL DEFAULT 0,
    run_after   INTEGER NOT NULL,
    leased_by   TEXT,
    lease_until INTEGER,
    created_at  INTEGER NOT NULL,
    done_at     INTEGER,
    error       TEXT
);
CREATE INDEX jobs_ready ON jobs (queue, run_after) WHERE state = 'ready';
