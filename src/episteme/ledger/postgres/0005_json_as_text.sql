-- Every JSON column keeps the canonical JSON text the store wrote, as the journal,
-- values and contexts always did: jsonb rewrote numbers (1e16 came back as an integer,
-- -0.0 as 0.0) and reordered keys, so a notification's wrong value, a webhook's body,
-- a lens's spec or a check's violations read back otherwise than on SQLite. Nothing
-- queries inside these columns. Rows written before keep jsonb's rendering of them.

ALTER TABLE assertions ALTER COLUMN derived_from TYPE text USING derived_from::text;
ALTER TABLE constraints ALTER COLUMN forbid TYPE text USING forbid::text;
ALTER TABLE constraints ALTER COLUMN patterns TYPE text USING patterns::text;
ALTER TABLE constraints ALTER COLUMN items DROP DEFAULT;
ALTER TABLE constraints ALTER COLUMN items TYPE text USING items::text;
ALTER TABLE constraints ALTER COLUMN items SET DEFAULT '[]';
ALTER TABLE lenses ALTER COLUMN spec TYPE text USING spec::text;
ALTER TABLE tokens ALTER COLUMN roles TYPE text USING roles::text;
ALTER TABLE jobs ALTER COLUMN payload TYPE text USING payload::text;
ALTER TABLE checks ALTER COLUMN scope TYPE text USING scope::text;
ALTER TABLE checks ALTER COLUMN items TYPE text USING items::text;
ALTER TABLE checks ALTER COLUMN violations TYPE text USING violations::text;
ALTER TABLE webhooks ALTER COLUMN spec TYPE text USING spec::text;
ALTER TABLE notifications ALTER COLUMN data TYPE text USING data::text;
