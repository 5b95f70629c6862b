-- A negative constraint is scoped by a subject prefix or by tags (DESIGN §2): a rule
-- about an action ("no deploys on Friday", "never node-fetch in npm installs") belongs
-- to no subject. Its scope may now be left out where it has tags; its tags are kept
-- both in the row (as read back) and one row a tag (as a check looks them up). A check
-- records the tags it named. A constraint can be retired (by whom, when and why): it
-- stays in the record and no longer answers checks.
--
-- Incidents are listed newest first, a page at a time: that order now has an index.

ALTER TABLE constraints ALTER COLUMN scope DROP NOT NULL;
ALTER TABLE constraints ADD COLUMN IF NOT EXISTS tags text NOT NULL DEFAULT '[]';
ALTER TABLE constraints ADD COLUMN IF NOT EXISTS retired_at timestamptz;
ALTER TABLE constraints ADD COLUMN IF NOT EXISTS retired_by text;
ALTER TABLE constraints ADD COLUMN IF NOT EXISTS retired_reason text;

CREATE TABLE IF NOT EXISTS constraint_tags (
    tag           text COLLATE "C" NOT NULL,
    constraint_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (tag, constraint_id)
);

ALTER TABLE checks ADD COLUMN IF NOT EXISTS tags text NOT NULL DEFAULT '[]';

CREATE INDEX IF NOT EXISTS incidents_opened ON incidents (opened_at DESC, key);
