-- Who may subscribe to a person's presence, set by the app backend (`presence` op): per
-- watched person, other persons allowed (allow = 1) or denied (allow = 0). Persons are primary
-- uids, so a row leaves with either user (ON DELETE CASCADE).
CREATE TABLE presence_acl (
    person INTEGER NOT NULL REFERENCES users(uid) ON DELETE CASCADE,
    other  INTEGER NOT NULL REFERENCES users(uid) ON DELETE CASCADE,
    allow  INTEGER NOT NULL CHECK (allow IN (0, 1)),
    PRIMARY KEY (person, other)
) WITHOUT ROWID;
-- The cascade when `other` is deleted looks rows up by it.
CREATE INDEX presence_acl_other ON presence_acl(other);
