-- Per-entity leases replace the advisory lock that was held, with its transaction, across the
-- Close write and the firehose send. A lease is claimed and released in short statements; its
-- fence (a new number at every claim) makes a worker whose lease expired unable to commit.
CREATE SEQUENCE entity_lease_fence;
CREATE TABLE entity_leases (
    connector_id TEXT        NOT NULL,
    kind         TEXT        NOT NULL,
    hull_id      TEXT        NOT NULL,
    fence        BIGINT      NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (connector_id, kind, hull_id)
);

-- Only counts used it, and without statistics the planner picked it for the lookup by
-- (connector, kind, Hull id), scanning every row of a kind. The primary key serves both.
DROP INDEX sync_state_close_id;
