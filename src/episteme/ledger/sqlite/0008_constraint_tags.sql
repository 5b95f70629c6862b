-- A negative constraint is scoped by a subject prefix or by tags (DESIGN §2): a rule
-- about an action ("no deploys on Friday", "never node-fetch in npm installs") belongs
-- to no subject. Its scope may now be left out where it has tags, so the table is made
-- again with `scope` nullable (SQLite cannot drop a NOT NULL), and its tags are kept
-- both in the row (as read back) and one row a tag (as a check looks them up). A check
-- records the tags it named. A constraint can be retired (by whom, when and why): it
-- stays in the record and no longer answers checks.
--
-- Incidents are listed newest first, a page at a time: that order now has an index.

CREATE TABLE constraints_next (
    id             TEXT PRIMARY KEY,
    seq            INTEGER NOT NULL,
    at             INTEGER NOT NULL,
    scope          TEXT,
    forbid         TEXT    NOT NULL,
    patterns       TEXT    NOT NULL,
    prefer         TEXT,
    reason         TEXT    NOT NULL,
    origin         TEXT    NOT NULL,
    created_by     TEXT    NOT NULL,
    items          TEXT    NOT NULL DEFAULT '[]',
    half_life_days REAL    NOT NULL DEFAULT 30,
    hits           INTEGER NOT NULL DEFAULT 0,
    last_hit_at    INTEGER,
    tags           TEXT    NOT NULL DEFAULT '[]',
    retired_at     INTEGER,
    retired_by     TEXT,
    retired_reason TEXT
) WITHOUT ROWID;
INSERT INTO constraints_next (id, seq, at, scope, forbid, patterns, prefer, reason, origin,
                              created_by, items, half_life_days, hits, last_hit_at)
    SELECT id, seq, at, scope, forbid, patterns, prefer, reason, origin, created_by, items,
           half_life_days, hits, last_hit_at
    FROM constraints;
DROP TABLE constraints;
ALTER TABLE constraints_next RENAME TO constraints;
CREATE INDEX constraints_scope ON constraints (scope);

CREATE TABLE constraint_tags (
    tag           TEXT NOT NULL,
    constraint_id TEXT NOT NULL,
    PRIMARY KEY (tag, constraint_id)
) WITHOUT ROWID;

ALTER TABLE checks ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';

CREATE INDEX IF NOT EXISTS incidents_opened ON incidents (opened_at DESC, key);
