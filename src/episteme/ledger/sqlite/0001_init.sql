-- Episteme ledger, schema version 1 (SQLite).
-- The journal is the truth; every other table is a projection of it that
-- `episteme rebuild` can recompute. Times are integer microseconds, UTC.
-- An open version interval has tx_to = 9223372036854775807.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE journal (
    seq     INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    payload TEXT    NOT NULL,
    hash    BLOB    NOT NULL
);
CREATE INDEX journal_at ON journal (at);

CREATE TABLE assertions (
    rowid        INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    subject      TEXT    NOT NULL,
    value        TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    agent        TEXT    NOT NULL,
    source       TEXT,
    evidence     TEXT,
    epoch        TEXT,
    derived_from TEXT    NOT NULL,
    valid_from   INTEGER,
    valid_to     INTEGER,
    recorded_at  INTEGER NOT NULL,
    seq          INTEGER NOT NULL
);
CREATE INDEX assertions_subject ON assertions (subject);
CREATE INDEX assertions_epoch ON assertions (epoch) WHERE epoch IS NOT NULL;

CREATE VIRTUAL TABLE assertions_fts USING fts5 (
    subject, value, source, content = 'assertions', content_rowid = 'rowid'
);

CREATE TABLE derivations (
    parent TEXT NOT NULL,
    child  TEXT NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;

-- arow is assertions.rowid: new versions append, joins are rowid lookups.
CREATE TABLE versions (
    arow           INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    subject        TEXT    NOT NULL,
    lifecycle      TEXT    NOT NULL,
    confidence     REAL    NOT NULL,
    tx_from        INTEGER NOT NULL,
    tx_to          INTEGER NOT NULL,
    prev_lifecycle TEXT,
    actor          TEXT    NOT NULL,
    reason         TEXT,
    cause          TEXT    NOT NULL,
    -- an assertion added and superseded in one batch has two versions in one event
    PRIMARY KEY (arow, seq, lifecycle)
) WITHOUT ROWID;
-- lifecycle in the index: a lens counts the history it hides without reading rows
CREATE INDEX versions_subject ON versions (subject, tx_to, lifecycle, tx_from);
CREATE INDEX versions_tx_from ON versions (tx_from);

CREATE TABLE epochs (
    name           TEXT PRIMARY KEY,
    first_seq      INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    created_by     TEXT    NOT NULL,
    superseded_seq INTEGER,
    superseded_at  INTEGER,
    superseded_by  TEXT,
    reason         TEXT
) WITHOUT ROWID;

-- The audit appends in journal order: keyed by seq, so inserts go to the end.
CREATE TABLE queries (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    at         INTEGER NOT NULL,
    agent      TEXT    NOT NULL,
    lens       TEXT    NOT NULL,
    subject    TEXT,
    text       TEXT,
    as_of      INTEGER,
    returned   INTEGER NOT NULL,
    hidden     INTEGER NOT NULL, -- how many (what, and the context, stay in the journal)
    latency_us INTEGER NOT NULL
);
CREATE INDEX queries_agent ON queries (agent, at);
CREATE INDEX queries_at ON queries (at);
CREATE INDEX queries_subject ON queries (subject, at);

-- What each query returned, as served. Integer keys keep this, the largest table of a
-- busy ledger, small: arow is assertions.rowid; time and agent are the query's.
CREATE TABLE served (
    query_seq  INTEGER NOT NULL,
    arow       INTEGER NOT NULL,
    lifecycle  TEXT    NOT NULL,
    confidence REAL    NOT NULL,
    PRIMARY KEY (query_seq, arow)
) WITHOUT ROWID;
CREATE INDEX served_assertion ON served (arow, query_seq);

-- Impact, precomputed as events arrive: who was served an assertion how often, and which
-- decisions relied on it (through a query that served it). Impact is then two lookups.
CREATE TABLE exposure (
    arow  INTEGER NOT NULL,
    agent TEXT    NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (arow, agent)
) WITHOUT ROWID;

CREATE TABLE reliance (
    arow        INTEGER NOT NULL,
    decision_id TEXT    NOT NULL,
    PRIMARY KEY (arow, decision_id)
) WITHOUT ROWID;

CREATE TABLE decisions (
    id      TEXT PRIMARY KEY,
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    agent   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    context TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX decisions_agent ON decisions (agent, at);

CREATE TABLE citations (
    decision_id TEXT NOT NULL,
    query_id    TEXT NOT NULL,
    PRIMARY KEY (decision_id, query_id)
) WITHOUT ROWID;
CREATE INDEX citations_query ON citations (query_id);

CREATE TABLE corrections (
    id             TEXT PRIMARY KEY,
    seq            INTEGER NOT NULL,
    at             INTEGER NOT NULL,
    assertion_id   TEXT    NOT NULL,
    by             TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    replacement_id TEXT,
    constraint_id  TEXT
) WITHOUT ROWID;
CREATE INDEX corrections_assertion ON corrections (assertion_id);

CREATE TABLE constraints (
    id         TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    scope      TEXT    NOT NULL,
    forbid     TEXT    NOT NULL,
    patterns   TEXT    NOT NULL,
    prefer     TEXT,
    reason     TEXT    NOT NULL,
    origin     TEXT    NOT NULL,
    created_by TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX constraints_scope ON constraints (scope);

CREATE TABLE lenses (
    name TEXT PRIMARY KEY,
    spec TEXT    NOT NULL,
    seq  INTEGER NOT NULL,
    at   INTEGER NOT NULL,
    by   TEXT    NOT NULL
) WITHOUT ROWID;
