-- Trust boundary: how a connector was first recorded, the notification ids already accepted
-- (a replayed notification is a no-op) and a key check value for ENCRYPTION_KEY.

-- 'notification': from a signed notification (authoritative); 'query': confirmed by Hull's
-- REST API for query credentials on an allow-listed organization.
ALTER TABLE connectors
    ADD COLUMN registered_by TEXT NOT NULL DEFAULT 'notification'
        CHECK (registered_by IN ('notification', 'query'));

-- Bumped by every change of a connector's settings, key or credentials: a job that failed
-- with a configuration error parks the connector only if the version it read is current.
ALTER TABLE connectors ADD COLUMN settings_version BIGINT NOT NULL DEFAULT 0;

CREATE TABLE notifications_seen (
    notification_id TEXT PRIMARY KEY,
    connector_id    TEXT NOT NULL,
    seen_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX notifications_seen_at ON notifications_seen (seen_at);

-- One row: a known value sealed with ENCRYPTION_KEY, so a process started with another key
-- stops at once instead of failing on every stored secret later.
CREATE TABLE key_check (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    sealed     BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
