-- The request budget of each (Close API key, endpoint group), shared by every worker: GCRA
-- state (the next free slot, `tat`), the spacing learned from Close's RateLimit header and the
-- burst, and the end of a pause after a 429. A reservation is one UPDATE; nothing is held by a process.
CREATE TABLE close_budgets (
    key_fp      text        NOT NULL,
    grp         text        NOT NULL,
    spacing_us  bigint      NOT NULL CHECK (spacing_us > 0),
    burst       integer     NOT NULL DEFAULT 1 CHECK (burst > 0),
    tat         timestamptz NOT NULL,
    paused_until timestamptz NOT NULL DEFAULT '-infinity',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_fp, grp)
);
