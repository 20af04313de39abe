-- Operating the broker: an admin token, and the previous app token while a rotation's grace
-- period runs. Hashes only.
ALTER TABLE app ADD COLUMN admin_token_hash BLOB;
ALTER TABLE app ADD COLUMN prev_token_hash BLOB;
ALTER TABLE app ADD COLUMN prev_expires_at INTEGER;
