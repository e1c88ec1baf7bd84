-- A new lead gathers the contacts of its users for NEW_LEAD_GATHER_SECS, so that one
-- POST /lead/ creates it with its contacts nested. The row is created by the first job of the
-- account (its own, or one of a user's) that finds no lead; users add their contact bodies
-- while it is not claimed; the job that holds the account's lease when it is due claims it
-- (freezing the list) and deletes it in the transaction that records the sync states.
CREATE TABLE pending_leads (
    connector_id TEXT        NOT NULL,
    account_key  TEXT        NOT NULL,
    due_at       TIMESTAMPTZ NOT NULL,
    claimed      BOOLEAN     NOT NULL DEFAULT false,
    -- When the job that tried to create it and found its tenant's budget busy comes back
    -- (booked in the budget): users wait for it instead of trying themselves.
    retry_at     TIMESTAMPTZ,
    -- When a lookup of the lead in Close last found nothing, kept only by a creator that was
    -- deferred right after it; the next claim takes it (and clears it), so a lookup result
    -- serves at most the one create that follows it.
    looked_up_at TIMESTAMPTZ,
    -- The identifier value that lookup searched for: the result serves only the same value.
    looked_up_value JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (connector_id, account_key)
);

CREATE TABLE pending_contacts (
    connector_id TEXT  NOT NULL,
    account_key  TEXT  NOT NULL,
    user_id      TEXT  NOT NULL,
    -- The contact body as the user's job maps it (its lead_id filled in at creation).
    body         JSONB NOT NULL,
    -- The user's claims, for the write-back to Hull.
    claims       JSONB NOT NULL,
    PRIMARY KEY (connector_id, account_key, user_id),
    FOREIGN KEY (connector_id, account_key) REFERENCES pending_leads ON DELETE CASCADE
);
