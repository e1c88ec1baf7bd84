-- When the job for a window's `next_seq` page was last published: a stale or redelivered
-- job republishes it only when nobody did for a while, so duplicates never fork the chain.
ALTER TABLE fetch_windows ADD COLUMN next_published_at TIMESTAMPTZ;
