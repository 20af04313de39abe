-- octet's first schema. Applied once, in a transaction, when user_version is 0.

-- The app: one row. Only the SHA-256 of its token is kept.
CREATE TABLE app (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    token_hash BLOB NOT NULL
);

-- Every user. A primary has primary_uid NULL; a linked user names its primary.
-- Deleting a primary deletes its linked users (and through them their tokens and devices).
CREATE TABLE users (
    uid         INTEGER PRIMARY KEY AUTOINCREMENT,
    address     TEXT NOT NULL UNIQUE,
    name        TEXT,
    primary_uid INTEGER REFERENCES users(uid) ON DELETE CASCADE,
    device_id   TEXT,
    appid       TEXT,
    last_seen   INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX users_primary ON users(primary_uid);
-- One device id maps to one user within a person (primary rows use their own uid as person).
CREATE UNIQUE INDEX users_device ON users(coalesce(primary_uid, uid), device_id)
    WHERE device_id IS NOT NULL;

-- The 8-device cap, enforced by the database as well as by the code that gives the clear error:
-- a person is its primary and at most 7 linked users.
CREATE TRIGGER users_cap_insert BEFORE INSERT ON users
WHEN NEW.primary_uid IS NOT NULL
 AND (SELECT count(*) FROM users WHERE primary_uid = NEW.primary_uid) >= 7
BEGIN
    SELECT RAISE(ABORT, 'device_limit');
END;
CREATE TRIGGER users_cap_update BEFORE UPDATE OF primary_uid ON users
WHEN NEW.primary_uid IS NOT NULL
 AND (SELECT count(*) FROM users WHERE primary_uid = NEW.primary_uid AND uid != NEW.uid) >= 7
BEGIN
    SELECT RAISE(ABORT, 'device_limit');
END;

-- User tokens, by hash only.
CREATE TABLE tokens (
    hash       BLOB PRIMARY KEY,
    uid        INTEGER NOT NULL REFERENCES users(uid) ON DELETE CASCADE,
    appid      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tokens_uid ON tokens(uid);

-- One row per person: the counter behind the gap-free per-person seq.
CREATE TABLE persons (
    person   INTEGER PRIMARY KEY REFERENCES users(uid) ON DELETE CASCADE,
    last_seq INTEGER NOT NULL DEFAULT 0
);

-- Every message once. (sender_person, client_id) makes a retried send idempotent.
CREATE TABLE messages (
    mid              INTEGER PRIMARY KEY AUTOINCREMENT,
    sender_person    INTEGER NOT NULL,
    client_id        TEXT NOT NULL,
    from_address     TEXT NOT NULL,
    to_address       TEXT NOT NULL,
    recipient_person INTEGER NOT NULL,
    sender_seq       INTEGER NOT NULL,
    recipient_seq    INTEGER NOT NULL,
    ts               INTEGER NOT NULL,
    body             TEXT NOT NULL,
    UNIQUE (sender_person, client_id)
);

-- Each person's event log. A message between two persons is in both logs.
CREATE TABLE events (
    person INTEGER NOT NULL REFERENCES persons(person) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    mid    INTEGER REFERENCES messages(mid),
    out    INTEGER NOT NULL DEFAULT 0,
    ts     INTEGER NOT NULL,
    PRIMARY KEY (person, seq)
) WITHOUT ROWID;
