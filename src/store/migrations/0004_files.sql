-- Files. A blob is stored bytes, named by their SHA-256 (the same bytes uploaded twice are kept
-- once, on disk under files/); a file is one upload of a blob, with its name and uploader; a
-- message carries files in order. The bytes live outside the database.

CREATE TABLE blobs (
    sha256       TEXT PRIMARY KEY,
    size         INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    width        INTEGER,
    height       INTEGER,
    thumb_type   TEXT,
    thumb_width  INTEGER,
    thumb_height INTEGER,
    thumb_size   INTEGER,
    blurhash     TEXT,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;

-- `uploader` is a person but not a foreign key: deleting the uploader must not take files
-- another person's log still shows.
CREATE TABLE files (
    id         TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL REFERENCES blobs(sha256),
    uploader   INTEGER NOT NULL,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX files_sha256 ON files(sha256);
CREATE INDEX files_created ON files(created_at);

CREATE TABLE message_files (
    mid     INTEGER NOT NULL REFERENCES messages(mid) ON DELETE CASCADE,
    pos     INTEGER NOT NULL,
    file_id TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    PRIMARY KEY (mid, pos)
) WITHOUT ROWID;
CREATE INDEX message_files_file ON message_files(file_id);

-- The attachments as delivered (a JSON array), so a replay sends exactly what went live.
ALTER TABLE messages ADD COLUMN files TEXT;

-- Pruning asks, per file, whether any event still carries one of its messages.
CREATE INDEX events_mid ON events(mid);
