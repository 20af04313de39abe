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
