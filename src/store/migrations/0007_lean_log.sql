-- Indexes only retention read, maintained on every send: a send wrote a B-tree entry into each
-- (`events_ts` twice, once per log). Retention now walks each person's log by seq and the
-- messages by mid instead (`log::prune_step`). `events_mid` stays: pruning messages and files
-- asks per message whether any event still holds it.
DROP INDEX IF EXISTS events_ts;
DROP INDEX IF EXISTS messages_ts;
