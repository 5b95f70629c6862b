-- Episteme ledger, schema version 1 (PostgreSQL).
-- The journal is the truth; every other table is a projection of it that
-- `episteme rebuild` can recompute. Times are timestamptz (microseconds, UTC); an
-- open version interval has tx_to = 'infinity'. Text is COLLATE "C": subjects and
-- ids are compared by byte ranges, as in SQLite.
-- The journal payload, assertion values and decision contexts keep their canonical
-- JSON text, which the hash chain covers: jsonb would rewrite numbers (1e16 becomes
-- an integer) and reorder keys.

CREATE TABLE meta (
    key   text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);

-- One row; a write locks it (SELECT ... FOR UPDATE) so that appends from every
-- process form one chain.
CREATE TABLE chain_lock (
    id integer PRIMARY KEY CHECK (id = 1)
);
INSERT INTO chain_lock VALUES (1);

CREATE TABLE journal (
    seq     bigint PRIMARY KEY,
    at      timestamptz NOT NULL,
    actor   text COLLATE "C" NOT NULL,
    kind    text COLLATE "C" NOT NULL,
    payload text NOT NULL,
    hash    bytea NOT NULL
);
CREATE INDEX journal_at ON journal (at);

CREATE TABLE assertions (
    rowid        bigint PRIMARY KEY,
    id           text COLLATE "C" NOT NULL UNIQUE,
    subject      text COLLATE "C" NOT NULL,
    value        text NOT NULL,
    kind         text COLLATE "C" NOT NULL,
    agent        text COLLATE "C" NOT NULL,
    source       text,
    evidence     text,
    epoch        text COLLATE "C",
    derived_from jsonb NOT NULL,
    valid_from   timestamptz,
    valid_to     timestamptz,
    recorded_at  timestamptz NOT NULL,
    seq          bigint NOT NULL,
    -- words of subject, value and source, split at spaces and ASCII punctuation (as FTS5)
    fts tsvector GENERATED ALWAYS AS (to_tsvector('simple', regexp_replace(
        subject || ' ' || value || ' ' || coalesce(source, ''), '[[:space:][:punct:]]+', ' ', 'g'
    ))) STORED
);
CREATE INDEX assertions_subject ON assertions (subject);
CREATE INDEX assertions_epoch ON assertions (epoch) WHERE epoch IS NOT NULL;
CREATE INDEX assertions_fts ON assertions USING gin (fts);

CREATE TABLE derivations (
    parent text COLLATE "C" NOT NULL,
    child  text COLLATE "C" NOT NULL,
    PRIMARY KEY (parent, child)
);

CREATE TABLE versions (
    arow           bigint NOT NULL,
    seq            bigint NOT NULL,
    subject        text COLLATE "C" NOT NULL,
    lifecycle      text COLLATE "C" NOT NULL,
    confidence     double precision NOT NULL,
    tx_from        timestamptz NOT NULL,
    tx_to          timestamptz NOT NULL,
    prev_lifecycle text COLLATE "C",
    actor          text COLLATE "C" NOT NULL,
    reason         text,
    cause          text COLLATE "C" NOT NULL,
    PRIMARY KEY (arow, seq, lifecycle)
);
CREATE INDEX versions_subject ON versions (subject, tx_to, lifecycle, tx_from);
CREATE INDEX versions_tx_from ON versions (tx_from);

CREATE TABLE epochs (
    name           text COLLATE "C" PRIMARY KEY,
    first_seq      bigint NOT NULL,
    created_at     timestamptz NOT NULL,
    created_by     text COLLATE "C" NOT NULL,
    superseded_seq bigint,
    superseded_at  timestamptz,
    superseded_by  text COLLATE "C",
    reason         text
);

CREATE TABLE queries (
    seq        bigint PRIMARY KEY,
    id         text COLLATE "C" NOT NULL UNIQUE,
    at         timestamptz NOT NULL,
    agent      text COLLATE "C" NOT NULL,
    lens       text COLLATE "C" NOT NULL,
    subject    text COLLATE "C",
    text       text,
    as_of      timestamptz,
    returned   integer NOT NULL,
    hidden     integer NOT NULL,
    latency_us bigint NOT NULL
);
CREATE INDEX queries_agent ON queries (agent, at);
CREATE INDEX queries_at ON queries (at);
CREATE INDEX queries_subject ON queries (subject, at);

CREATE TABLE served (
    query_seq  bigint NOT NULL,
    arow       bigint NOT NULL,
    lifecycle  text COLLATE "C" NOT NULL,
    confidence double precision NOT NULL,
    PRIMARY KEY (query_seq, arow)
);
CREATE INDEX served_assertion ON served (arow, query_seq);

CREATE TABLE exposure (
    arow  bigint NOT NULL,
    agent text COLLATE "C" NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (arow, agent)
);

CREATE TABLE reliance (
    arow        bigint NOT NULL,
    decision_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (arow, decision_id)
);

CREATE TABLE decisions (
    id      text COLLATE "C" PRIMARY KEY,
    seq     bigint NOT NULL,
    at      timestamptz NOT NULL,
    agent   text COLLATE "C" NOT NULL,
    action  text NOT NULL,
    context text NOT NULL
);
CREATE INDEX decisions_agent ON decisions (agent, at);

CREATE TABLE citations (
    decision_id text COLLATE "C" NOT NULL,
    query_id    text COLLATE "C" NOT NULL,
    PRIMARY KEY (decision_id, query_id)
);
CREATE INDEX citations_query ON citations (query_id);

CREATE TABLE corrections (
    id             text COLLATE "C" PRIMARY KEY,
    seq            bigint NOT NULL,
    at             timestamptz NOT NULL,
    assertion_id   text COLLATE "C" NOT NULL,
    by             text COLLATE "C" NOT NULL,
    reason         text NOT NULL,
    replacement_id text COLLATE "C",
    constraint_id  text COLLATE "C"
);
CREATE INDEX corrections_assertion ON corrections (assertion_id);

CREATE TABLE constraints (
    id         text COLLATE "C" PRIMARY KEY,
    seq        bigint NOT NULL,
    at         timestamptz NOT NULL,
    scope      text COLLATE "C" NOT NULL,
    forbid     jsonb NOT NULL,
    patterns   jsonb NOT NULL,
    prefer     text,
    reason     text NOT NULL,
    origin     text COLLATE "C" NOT NULL,
    created_by text COLLATE "C" NOT NULL
);
CREATE INDEX constraints_scope ON constraints (scope);

CREATE TABLE lenses (
    name text COLLATE "C" PRIMARY KEY,
    spec jsonb NOT NULL,
    seq  bigint NOT NULL,
    at   timestamptz NOT NULL,
    by   text COLLATE "C" NOT NULL
);

CREATE TABLE tokens (
    id            text COLLATE "C" PRIMARY KEY,
    seq           bigint NOT NULL,
    hash          text COLLATE "C" NOT NULL UNIQUE,
    principal     text COLLATE "C" NOT NULL,
    kind          text COLLATE "C" NOT NULL,
    roles         jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    created_by    text COLLATE "C" NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    revoked_by    text COLLATE "C",
    revoke_reason text
);
CREATE INDEX tokens_principal ON tokens (principal);

CREATE TABLE denials (
    seq       bigint PRIMARY KEY,
    at        timestamptz NOT NULL,
    principal text COLLATE "C" NOT NULL,
    token_id  text COLLATE "C",
    operation text COLLATE "C" NOT NULL,
    target    text,
    reason    text NOT NULL
);
CREATE INDEX denials_at ON denials (at);

-- Work for background workers (not knowledge: outside the journal). A worker leases
-- a job with SELECT ... FOR UPDATE SKIP LOCKED; a lease that runs out frees the job.
CREATE TABLE jobs (
    id          bigserial PRIMARY KEY,
    queue       text COLLATE "C" NOT NULL,
    payload     jsonb NOT NULL,
    state       text COLLATE "C" NOT NULL DEFAULT 'ready',
    attempts    integer NOT NULL DEFAULT 0,
    run_after   timestamptz NOT NULL,
    leased_by   text COLLATE "C",
    lease_until timestamptz,
    created_at  timestamptz NOT NULL,
    done_at     timestamptz,
    error       text
);
CREATE INDEX jobs_ready ON jobs (queue, run_after) WHERE state = 'ready';
