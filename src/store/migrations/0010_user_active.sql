-- Issue 16 item 7: the app's backend can disable a user (`useradd` with `user.active: false`).
-- A disabled user cannot log in and receives no messages; a disabled primary disables its whole
-- person. Existing users stay active.
ALTER TABLE users ADD COLUMN active INTEGER NOT NULL DEFAULT 1;
