-- Dead letters say what kind of error killed them (a short, bounded label such as
-- `close_bad_request`), so operators can group and filter by it, and keep the body last sent to
-- Close for the entity, shown beside the Hull entity and the Close object.
ALTER TABLE dead_letters ADD COLUMN error_class TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE dead_letters ADD COLUMN last_body JSONB;
CREATE INDEX dead_letters_created ON dead_letters (created_at);

-- What each (Close API key, endpoint group) budget served and how often Close answered 429,
-- for the ops console's budget table.
ALTER TABLE close_budgets ADD COLUMN requests BIGINT NOT NULL DEFAULT 0;
ALTER TABLE close_budgets ADD COLUMN rate_limited BIGINT NOT NULL DEFAULT 0;
ALTER TABLE close_budgets ADD COLUMN last_rate_limited_at TIMESTAMPTZ;

-- Ops console sessions. Only a hash of the session id is stored, so a reader of the database
-- cannot take over a session; `csrf` is the session's anti-forgery token; `token_fp` the
-- fingerprint of the admin token it logged in with (a new ADMIN_TOKEN ends every session).
CREATE TABLE console_sessions (
    id_hash    BYTEA PRIMARY KEY,
    csrf       TEXT NOT NULL,
    token_fp   TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
