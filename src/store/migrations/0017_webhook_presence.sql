-- The status each person was last reported in by a `presence` webhook event. Connections end
-- with the process that held them, and so do its grace timers: without this, a receiver told
-- "online" before a restart (or a kill -9) would never hear "offline". At startup the persons
-- last reported online are reported offline (`outbox::presence_restart`).
CREATE TABLE webhook_presence (
    person INTEGER PRIMARY KEY REFERENCES persons(person) ON DELETE CASCADE,
    online INTEGER NOT NULL,
    ts     INTEGER NOT NULL
);
