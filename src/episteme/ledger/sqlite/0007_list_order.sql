-- Lists come newest first, a page at a time. Decisions had no index in that order, and
-- notifications none without a type: each page read and sorted the whole table. Both
-- lists now read their time index backwards, as audited reads and checks do, and stop
-- at the page's end (the journal never records an event at a time before the one
-- ahead of it, so time order is journal order).

CREATE INDEX IF NOT EXISTS decisions_at ON decisions (at);
CREATE INDEX IF NOT EXISTS notifications_at ON notifications (at);
