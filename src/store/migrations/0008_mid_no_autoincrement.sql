-- `messages.mid` without AUTOINCREMENT: every send also wrote the table's `sqlite_sequence`
-- row. The writer now assigns mids itself (`seqs::Tx::take_mid`), past every mid ever stored,
-- so a mid is never handed out twice even after retention has emptied the table.
--
-- SQLite cannot drop AUTOINCREMENT in place: the table is rebuilt by its documented procedure
-- ("Making Other Kinds Of Table Schema Changes"). `migrate` runs this with foreign_keys OFF
-- (events.mid and message_files.mid point at messages) and runs foreign_key_check before
-- committing.

-- The largest mid ever handed out, before dropping the table takes its sqlite_sequence row.
INSERT INTO meta (key, value)
SELECT 'mid_floor', max(
    coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0),
    coalesce((SELECT max(mid) FROM messages), 0),
    coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'mid_floor'), 0))
WHERE true
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- Every column of 0001, 0002 (pv) and 0004 (files), in the same order, with the same
-- constraints; messages has no other index (0007 dropped messages_ts), trigger or view.
CREATE TABLE messages_new (
    mid              INTEGER PRIMARY KEY,
    sender_person    INTEGER NOT NULL,
    client_id        TEXT NOT NULL,
    from_address     TEXT NOT NULL,
    to_address       TEXT NOT NULL,
    recipient_person INTEGER NOT NULL,
    sender_seq       INTEGER NOT NULL,
    recipient_seq    INTEGER NOT NULL,
    ts               INTEGER NOT NULL,
    body             TEXT NOT NULL,
    pv               INTEGER NOT NULL DEFAULT 0,
    files            TEXT,
    UNIQUE (sender_person, client_id)
);
INSERT INTO messages_new (mid, sender_person, client_id, from_address, to_address,
                          recipient_person, sender_seq, recipient_seq, ts, body, pv, files)
SELECT mid, sender_person, client_id, from_address, to_address,
       recipient_person, sender_seq, recipient_seq, ts, body, pv, files
FROM messages;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
