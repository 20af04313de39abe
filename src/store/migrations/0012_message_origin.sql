-- The device a message was sent from (issue 16, item 6): the sender person's other devices
-- show "sent from your laptop". Its device id is read from `users` when the log is read, so
-- one integer is all a send stores. Messages from before have none (no `origin`).
ALTER TABLE messages ADD COLUMN origin_uid INTEGER;
