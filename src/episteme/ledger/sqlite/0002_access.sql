-- Bearer tokens (hashed) and refused calls: projections of token.* and access.denied.

CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL,
    hash          TEXT    NOT NULL UNIQUE,
    principal     TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    roles         TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT    NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    revoked_by    TEXT,
    revoke_reason TEXT
) WITHOUT ROWID;
CREATE INDEX tokens_principal ON tokens (principal);

CREATE TABLE denials (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    principal TEXT    NOT NULL,
    token_id  TEXT,
    operation TEXT    NOT NULL,
    target    TEXT,
    reason    TEXT    NOT NULL
);
CREATE INDEX denials_at ON denials (at);
