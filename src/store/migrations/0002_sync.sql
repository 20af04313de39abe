-- Sync: the log's epoch and each person's retention horizon.

-- Key/value facts about this database. `epoch` is random per database: a client whose `since`
-- comes from another epoch (the log was reset) cannot be caught up.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('epoch', lower(hex(randomblob(8))));

-- Every event with seq <= pruned_upto was removed by retention.
ALTER TABLE persons ADD COLUMN pruned_upto INTEGER NOT NULL DEFAULT 0;

CREATE INDEX events_ts ON events(ts);
CREATE INDEX messages_ts ON messages(ts);

-- Delivery state: how far each device acked its person's log, and how far any device of a
-- person acked it (the point up to which delivered receipts were sent).
ALTER TABLE users ADD COLUMN acked_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE persons ADD COLUMN delivered_upto INTEGER NOT NULL DEFAULT 0;

-- Receipts and read markers: `mid` is the message (for read: up to which), `peer` the other
-- person's primary address, `status` delivered or read.
ALTER TABLE events ADD COLUMN peer TEXT;
ALTER TABLE events ADD COLUMN status TEXT;

-- Call records: the call id, and how long an answered call lasted.
ALTER TABLE events ADD COLUMN call TEXT;
ALTER TABLE events ADD COLUMN duration INTEGER;
-- A profile change: the whole profile after the change, as JSON text.
ALTER TABLE events ADD COLUMN data TEXT;
ALTER TABLE events ADD COLUMN version INTEGER;

-- Each person's profile (a JSON object) and its version, bumped on every change.
ALTER TABLE persons ADD COLUMN profile TEXT NOT NULL DEFAULT '{}';
ALTER TABLE persons ADD COLUMN profile_version INTEGER NOT NULL DEFAULT 0;
-- The sender's profile version when the message was sent, so a replay shows the same `pv`.
ALTER TABLE messages ADD COLUMN pv INTEGER NOT NULL DEFAULT 0;

-- How far each person has read each conversation: a read marker only moves forward.
CREATE TABLE read_marks (
    person      INTEGER NOT NULL REFERENCES persons(person) ON DELETE CASCADE,
    peer_person INTEGER NOT NULL,
    upto        INTEGER NOT NULL,
    PRIMARY KEY (person, peer_person)
) WITHOUT ROWID;
