-- The upload quota sums a person's uploads of the last 24 hours on every upload.
CREATE INDEX files_uploader ON files(uploader, created_at);
