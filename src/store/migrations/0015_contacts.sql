-- Persons that have exchanged a message, one row per pair (a < b): what `--presence contacts`
-- asks at every subscribe. Before, that was a scan of both persons' sent messages, so a
-- stranger's subscribe to a person with a million sent messages read a million rows (and a
-- device may name 50 addresses a second). The writer adds a pair with the first message
-- between them and skips the statement for pairs it knows (`sqlite/contacts.rs`). A pair stays
-- after retention removes the messages; it goes with either person.
CREATE TABLE contacts (
    a INTEGER NOT NULL REFERENCES persons(person) ON DELETE CASCADE,
    b INTEGER NOT NULL REFERENCES persons(person) ON DELETE CASCADE,
    PRIMARY KEY (a, b)
) WITHOUT ROWID;
-- The cascade when `b` is deleted looks rows up by it.
CREATE INDEX contacts_b ON contacts(b);
INSERT OR IGNORE INTO contacts (a, b)
SELECT DISTINCT min(m.sender_person, m.recipient_person), max(m.sender_person, m.recipient_person)
FROM messages m
WHERE m.sender_person != m.recipient_person
  AND EXISTS (SELECT 1 FROM persons p WHERE p.person = m.sender_person)
  AND EXISTS (SELECT 1 FROM persons p WHERE p.person = m.recipient_person);
