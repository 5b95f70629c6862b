-- Negative constraints that fade and resurrect, audited pre-flight checks, webhooks
-- (all projections of the journal), and the gardener's own state: its cursor, the
-- trust evidence it derives and the notifications it raised (outside the journal:
-- `episteme gardener replay` recomputes them under another policy).

ALTER TABLE constraints ADD COLUMN items jsonb NOT NULL DEFAULT '[]';
ALTER TABLE constraints ADD COLUMN half_life_days double precision NOT NULL DEFAULT 30;
ALTER TABLE constraints ADD COLUMN hits bigint NOT NULL DEFAULT 0;
ALTER TABLE constraints ADD COLUMN last_hit_at timestamptz;

CREATE TABLE checks (
    id         text COLLATE "C" PRIMARY KEY,
    seq        bigint NOT NULL,
    at         timestamptz NOT NULL,
    agent      text COLLATE "C" NOT NULL,
    plan       text NOT NULL,
    scope      jsonb NOT NULL,
    items      jsonb NOT NULL,
    checked    integer NOT NULL,
    violations jsonb NOT NULL,
    context    text NOT NULL
);
CREATE INDEX checks_agent ON checks (agent, at);
CREATE INDEX checks_at ON checks (at);

CREATE TABLE webhooks (
    name text COLLATE "C" PRIMARY KEY,
    spec jsonb NOT NULL,
    seq  bigint NOT NULL,
    at   timestamptz NOT NULL,
    by   text COLLATE "C" NOT NULL
);

CREATE INDEX assertions_valid_to ON assertions (valid_to) WHERE valid_to IS NOT NULL;

CREATE TABLE gardener (
    name       text COLLATE "C" PRIMARY KEY,
    cursor     bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    scanned_at timestamptz
);

CREATE TABLE trust_evidence (
    seq          bigint NOT NULL,
    agent        text COLLATE "C" NOT NULL,
    role         text COLLATE "C" NOT NULL,
    assertion_id text COLLATE "C" NOT NULL,
    subject      text COLLATE "C" NOT NULL,
    at           timestamptz NOT NULL,
    success      double precision NOT NULL,
    failure      double precision NOT NULL,
    reason       text NOT NULL,
    PRIMARY KEY (seq, agent, role, assertion_id)
);
CREATE INDEX trust_agent ON trust_evidence (agent, subject, at);

CREATE TABLE notifications (
    key     text COLLATE "C" PRIMARY KEY,
    type    text COLLATE "C" NOT NULL,
    seq     bigint,
    at      timestamptz NOT NULL,
    summary text NOT NULL,
    data    jsonb NOT NULL
);
CREATE INDEX notifications_type ON notifications (type, at);

-- Running totals per agent and top-level topic, decayed to `at`: what reads at the
-- present use (one row), where a read at a past time sums the evidence rows.
CREATE TABLE trust_totals (
    agent     text COLLATE "C" NOT NULL,
    topic     text COLLATE "C" NOT NULL,
    successes double precision NOT NULL,
    failures  double precision NOT NULL,
    at        timestamptz NOT NULL,
    PRIMARY KEY (agent, topic)
);
