-- Event webhooks (issue 16, item 1): events for the app's backend, written in the same
-- transaction as what they concern (only while --webhook-url is set), deleted once the
-- receiver answered 2xx. `event_id` is stable per event so a receiver can dedupe a resend
-- (a kill -9 between its 2xx and the delete). `created_at` starts the retry window
-- (`webhookretry` restarts it); `due_at` is when a message's grace period ends; `next_at` when
-- the next attempt may run. Dead rows stay until retried, listed by the `webhooks` op.
CREATE TABLE webhook_outbox (
    id         INTEGER PRIMARY KEY,
    event_id   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    person     INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    mid        INTEGER,
    data       TEXT,
    created_at INTEGER NOT NULL,
    due_at     INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    dead       INTEGER NOT NULL DEFAULT 0
);
-- The worker reads the oldest live rows; the `webhooks` op lists the newest dead ones.
CREATE INDEX webhook_outbox_dead ON webhook_outbox(dead, id);
