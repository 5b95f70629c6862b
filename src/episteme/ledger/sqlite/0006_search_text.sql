-- Text search reads a value's canonical JSON with its escapes as spaces
-- (episteme.ledger.sql.projector.JSON_ESCAPES): "first line\nsecond" indexed "nsecond", so
-- "second" found nothing. FTS5 takes its text from this view, which a rebuild of the
-- index reads again; rebuilding it here indexes every assertion once more.

DROP TABLE assertions_fts;

CREATE VIEW assertions_search AS
SELECT arow, subject, replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(value, '\u000f', ' '), '\u0010', ' '), '\u0011', ' '), '\u0012', ' '), '\u0013', ' '), '\u0014', ' '), '\u0015', ' '), '\u0016', ' '), '\u0017', ' '), '\u0018', ' '), '\u0019', ' '), '\u001a', ' '), '\u001b', ' '), '\u001c', ' '), '\u001d', ' '), '\u001e', ' '), '\u001f', ' ') AS value, source
FROM (
    SELECT rowid AS arow, subject, replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(value, '\\', ' '), '\"', ' '), '\u0000', ' '), '\u0001', ' '), '\u0002', ' '), '\u0003', ' '), '\u0004', ' '), '\u0005', ' '), '\u0006', ' '), '\u0007', ' '), '\b', ' '), '\t', ' '), '\n', ' '), '\u000b', ' '), '\f', ' '), '\r', ' '), '\u000e', ' ') AS value, source
    FROM assertions
);

CREATE VIRTUAL TABLE assertions_fts USING fts5 (
    subject, value, source, content = 'assertions_search', content_rowid = 'arow'
);

INSERT INTO assertions_fts(assertions_fts) VALUES('rebuild');
