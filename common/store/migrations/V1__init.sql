-- Connectors: one row per Hull connector instance (tenant).
CREATE TABLE connectors (
    id                  TEXT PRIMARY KEY,
    organization        TEXT NOT NULL,
    secret_enc          BYTEA NOT NULL,
    private_settings    JSONB NOT NULL DEFAULT '{}'::jsonb,   -- without api_key
    api_key_enc         BYTEA,
    api_key_fingerprint TEXT,
    status              TEXT NOT NULL DEFAULT 'unknown',
    status_messages     JSONB NOT NULL DEFAULT '[]'::jsonb,
    status_checked_at   TIMESTAMPTZ,
    parked_reason       TEXT,
    metadata            JSONB,
    metadata_fetched_at TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Sync state per Hull entity: its Close id and the hash of the last body sent.
CREATE TABLE sync_state (
    connector_id    TEXT NOT NULL REFERENCES connectors(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('account', 'user')),
    hull_id         TEXT NOT NULL,
    close_id        TEXT,
    lead_id         TEXT,
    body_hash       TEXT,
    last_success_at TIMESTAMPTZ,
    failures        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_retry_at   TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (connector_id, kind, hull_id)
);
CREATE INDEX sync_state_close_id ON sync_state (connector_id, kind, close_id);

-- Jobs waiting for another attempt (scheduled) or for the connector's settings to be fixed (parked).
CREATE TABLE retries (
    id              UUID PRIMARY KEY,
    connector_id    TEXT NOT NULL,
    job_name        TEXT NOT NULL,
    entity_key      TEXT,
    envelope        JSONB NOT NULL,
    attempts        INTEGER NOT NULL,
    errors          JSONB NOT NULL DEFAULT '[]'::jsonb,
    last_error      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('scheduled', 'queued', 'parked')),
    next_attempt_at TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX retries_due ON retries (state, next_attempt_at);

-- Jobs that cannot succeed without a human: kept with every error, replayable.
CREATE TABLE dead_letters (
    id           UUID PRIMARY KEY,
    connector_id TEXT NOT NULL,
    job_name     TEXT NOT NULL,
    entity_key   TEXT,
    envelope     JSONB NOT NULL,
    attempts     INTEGER NOT NULL,
    errors       JSONB NOT NULL DEFAULT '[]'::jsonb,
    last_error   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    replayed_at  TIMESTAMPTZ
);
CREATE INDEX dead_letters_connector ON dead_letters (connector_id, created_at);
