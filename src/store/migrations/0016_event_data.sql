-- Payloads off the log's B-tree. `events` is WITHOUT ROWID with 1 KiB pages, so a row keeps
-- only about 230 bytes on its page and the rest spills to overflow pages. A `devices_changed`
-- row (the person's whole device list, ~800 bytes for eight devices) or a `profile` row (up to
-- 8 KiB) therefore made the log twice as large as its messages need, and every seek that
-- landed on one read its overflow page; the writer's page cache, which SQLite walks at each
-- commit after a page split, grew with it (loadtest/RESULTS.md, "the fan-out regression").
-- Those payloads now live in `event_data`, read only for the kinds that have one; the log's
-- rows stay a few dozen bytes.

CREATE TABLE event_data (
    person INTEGER NOT NULL REFERENCES persons(person) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (person, seq)
) WITHOUT ROWID;
INSERT INTO event_data (person, seq, data)
SELECT person, seq, data FROM events WHERE data IS NOT NULL;
ALTER TABLE events DROP COLUMN data;
