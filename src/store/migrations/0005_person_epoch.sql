-- An epoch per person's log. A `since` is a position in one log: when a user moves into another
-- person (`token.linkto`), or an address is deleted and created again, the log it logs into is
-- another one, and its stored `since` must not be replayed there. New persons get a random
-- epoch when their log is created (`create_person`).
--
-- Existing persons keep the database's epoch, so devices upgraded in place still catch up;
-- where two of them could meet (a `linkto` moving one into the other), the target's epoch is
-- renewed at the move (`token_linkto`). `meta.epoch` is kept only as that legacy value.
ALTER TABLE persons ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
UPDATE persons SET epoch = (SELECT value FROM meta WHERE key = 'epoch');
