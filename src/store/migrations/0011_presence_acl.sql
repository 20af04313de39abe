-- Who may subscribe to a person's presence, set by the app backend (`presence` op): per
-- watched person, other persons allowed (allow = 1) or denied (allow = 0). Persons are primary
-- uids, so a row leaves with either user (ON DELETE CASCADE).
-- IF NOT EXISTS: until this file is listed in the writer's MIGRATIONS, the store applies it at
-- open (sqlite/presence.rs, ensure_schema), and the same text must then be a no-op.
CREATE TABLE IF NOT EXISTS presence_acl (
    person INTEGER NOT NULL REFERENCES users(uid) ON DELETE CASCADE,
    other  INTEGER NOT NULL REFERENCES users(uid) ON DELETE CASCADE,
    allow  INTEGER NOT NULL CHECK (allow IN (0, 1)),
    PRIMARY KEY (person, other)
) WITHOUT ROWID;
-- The cascade when `other` is deleted looks rows up by it.
CREATE INDEX IF NOT EXISTS presence_acl_other ON presence_acl(other);
