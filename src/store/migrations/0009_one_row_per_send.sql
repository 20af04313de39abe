-- One log row per send (issue 15, item 4). A message is the sender's log entry itself, found
-- through `messages_sender` (sender_person, sender_seq); only the recipient's log gets an
-- `events` row. Before, every send wrote two `events` rows and two `events_mid` entries
-- besides the message and its client-id index: six B-tree inserts, now four.
--
-- `events_mid` goes: whether a message is still held by a log is two primary-key lookups
-- (the recipient's row at (recipient_person, recipient_seq), the sender's horizon in
-- `persons`), see `log::HELD`. The foreign key events.mid -> messages(mid) goes with it: without
-- that index every message deleted by retention would scan the whole `events` table to check
-- it. So `events` is rebuilt (SQLite cannot drop a constraint), keeping the person's key and
-- its cascade, as SQLite's procedure for changing a table says (run with foreign keys off).

CREATE UNIQUE INDEX messages_sender ON messages(sender_person, sender_seq);

CREATE TABLE events_new (
    person   INTEGER NOT NULL REFERENCES persons(person) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    mid      INTEGER,
    out      INTEGER NOT NULL DEFAULT 0,
    ts       INTEGER NOT NULL,
    peer     TEXT,
    status   TEXT,
    call     TEXT,
    duration INTEGER,
    data     TEXT,
    version  INTEGER,
    PRIMARY KEY (person, seq)
) WITHOUT ROWID;
INSERT INTO events_new (person, seq, kind, mid, out, ts, peer, status, call, duration, data, version)
SELECT person, seq, kind, mid, out, ts, peer, status, call, duration, data, version
FROM events
WHERE NOT (kind = 'message' AND out = 1);
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
