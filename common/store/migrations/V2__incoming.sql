-- Incoming sync (Close → Hull): per-connector cursor, fetch runs split into windows,
-- Close webhook subscriptions and the ids of webhook events already accepted.

-- One row per connector: where the incoming sync stands.
CREATE TABLE incoming_state (
    connector_id             TEXT PRIMARY KEY REFERENCES connectors(id) ON DELETE CASCADE,
    -- Every lead updated before this instant is in Hull (advances only after Hull accepted it).
    cursor                   TIMESTAMPTZ,
    full_import_completed_at TIMESTAMPTZ,
    -- When the last run was started.
    last_run_started_at      TIMESTAMPTZ,
    -- A fetch asked for by Hull's schedule, the admin button or the CLI, not yet started.
    fetch_requested_at       TIMESTAMPTZ,
    full_import_requested    BOOLEAN NOT NULL DEFAULT false,
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A fetch run: a full import or an incremental fetch of leads updated in [since, until).
CREATE TABLE fetch_runs (
    id               UUID PRIMARY KEY,
    connector_id     TEXT NOT NULL REFERENCES connectors(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL CHECK (kind IN ('full', 'incremental')),
    state            TEXT NOT NULL CHECK (state IN ('planning', 'running', 'completed', 'abandoned', 'failed')),
    since            TIMESTAMPTZ,
    until            TIMESTAMPTZ NOT NULL,
    page_size        INTEGER NOT NULL,
    windows          INTEGER NOT NULL,
    lease_secs       DOUBLE PRECISION NOT NULL,
    lease_until      TIMESTAMPTZ NOT NULL,
    pages_done       INTEGER NOT NULL DEFAULT 0,
    leads_imported   BIGINT NOT NULL DEFAULT 0,
    contacts_imported BIGINT NOT NULL DEFAULT 0,
    events_applied   BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    started_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at      TIMESTAMPTZ
);
-- Runs of one connector never overlap: at most one active run per connector.
CREATE UNIQUE INDEX fetch_runs_one_active ON fetch_runs (connector_id) WHERE state IN ('planning', 'running');
CREATE INDEX fetch_runs_connector ON fetch_runs (connector_id, started_at DESC);

-- A time window of a run, read page by page (keyset on date_updated) by a chain of jobs.
CREATE TABLE fetch_windows (
    run_id      UUID NOT NULL REFERENCES fetch_runs(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    since       TIMESTAMPTZ,
    until       TIMESTAMPTZ NOT NULL,
    -- Sequence number of the next page job; a job with another number is stale.
    next_seq    INTEGER NOT NULL DEFAULT 0,
    -- date_updated of the last lead of the last committed page (the next page starts there).
    progress    TIMESTAMPTZ,
    -- Leads at exactly `progress` already written (skipped when re-read).
    skip_ids    JSONB NOT NULL DEFAULT '[]'::jsonb,
    done        BOOLEAN NOT NULL DEFAULT false,
    pages_done  INTEGER NOT NULL DEFAULT 0,
    leads       BIGINT NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, idx)
);

-- The Close webhook subscription of each connector; the signing key is encrypted.
CREATE TABLE webhook_subscriptions (
    connector_id        TEXT PRIMARY KEY REFERENCES connectors(id) ON DELETE CASCADE,
    subscription_id     TEXT NOT NULL,
    url                 TEXT NOT NULL,
    signature_key_enc   BYTEA NOT NULL,
    -- Fingerprint of the API key the subscription was made with.
    api_key_fingerprint TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    checked_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Webhook events accepted (replays and duplicate deliveries are dropped).
CREATE TABLE webhook_events (
    connector_id TEXT NOT NULL,
    event_key    TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (connector_id, event_key)
);
CREATE INDEX webhook_events_received ON webhook_events (received_at);
