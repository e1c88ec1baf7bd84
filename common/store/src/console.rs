//! What the ops console reads and does beyond the rest of the store: its sessions, the activity
//! of each connector, the Close budgets, recent errors, and the operator actions "retry now"
//! and "unpark".

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::prepared::Prepared;

/// A console session, found by the hash of its id.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    /// The session's anti-forgery token.
    pub csrf: String,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}

/// What a connector did recently.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Activity {
    /// Hull entities written to Close in the last 5 minutes.
    pub outgoing_last_5m: i64,
    /// Leads fetched from Close by fetch runs started in the last hour.
    pub incoming_last_hour: i64,
    /// Retries whose attempt is due now.
    pub retries_due: i64,
}

/// One (Close API key, endpoint group) budget, as the workers share it.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetRow {
    /// Fingerprint of the API key.
    pub key_fingerprint: String,
    /// The connectors using that key.
    pub connectors: Vec<String>,
    /// Endpoint group (`lead_write`, `search`, …).
    pub group: String,
    /// Requests per second the budget allows (learned from Close).
    pub limit_per_second: f64,
    /// How far ahead the budget is booked, in seconds (0: idle).
    pub booked_ahead_seconds: f64,
    /// Seconds left of a pause after a 429 (0: none).
    pub paused_for_seconds: f64,
    /// Requests served since the budget was created.
    pub requests: i64,
    /// Requests Close answered 429.
    pub rate_limited: i64,
    /// When Close last answered 429.
    pub last_rate_limited_at: Option<DateTime<Utc>>,
}

/// An entity whose last Close write failed.
#[derive(Debug, Clone, Serialize)]
pub struct EntityError {
    /// `account` or `user`.
    pub kind: String,
    /// Hull id.
    pub hull_id: String,
    /// Close id, when it has one.
    pub close_id: Option<String>,
    /// Failures in a row.
    pub failures: i32,
    /// The error.
    pub last_error: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The sync state of one entity, as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct EntityState {
    /// Close id (lead or contact), when it has one.
    pub close_id: Option<String>,
    /// The contact's lead.
    pub lead_id: Option<String>,
    /// Last successful write.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Failures in a row.
    pub failures: i32,
    /// Last error.
    pub last_error: Option<String>,
}

/// A connector's Close webhook subscription (without its signing key).
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionSummary {
    /// `whsub_…`
    pub subscription_id: String,
    /// Delivery URL.
    pub url: String,
    /// Whether it was made with the connector's current API key.
    pub current_key: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last upkeep.
    pub checked_at: DateTime<Utc>,
}

impl Store {
    /// Records a console session.
    pub async fn create_console_session(
        &self,
        id_hash: &[u8],
        csrf: &str,
        token_fp: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "INSERT INTO console_sessions (id_hash, csrf, token_fp, expires_at) VALUES ($1, $2, $3, $4)",
            &[&id_hash, &csrf, &token_fp, &expires_at],
        )
        .await?;
        // Expired sessions go at each login.
        c.execute_p("DELETE FROM console_sessions WHERE expires_at < now()", &[])
            .await?;
        Ok(())
    }

    /// The live session with this id hash, opened with the admin token of fingerprint
    /// `token_fp` (a session of an earlier token is not found).
    pub async fn console_session(
        &self,
        id_hash: &[u8],
        token_fp: &str,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let c = self.pool.get().await?;
        Ok(c.query_opt_p(
            "SELECT csrf, expires_at FROM console_sessions
                 WHERE id_hash = $1 AND token_fp = $2 AND expires_at > now()",
            &[&id_hash, &token_fp],
        )
        .await?
        .map(|r| ConsoleSession {
            csrf: r.get(0),
            expires_at: r.get(1),
        }))
    }

    /// Ends a console session.
    pub async fn delete_console_session(&self, id_hash: &[u8]) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "DELETE FROM console_sessions WHERE id_hash = $1",
            &[&id_hash],
        )
        .await?;
        Ok(())
    }

    /// Recent activity of every connector, by connector id.
    pub async fn activity(
        &self,
    ) -> Result<std::collections::HashMap<String, Activity>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                "SELECT c.id,
                   (SELECT count(*) FROM sync_state s
                     WHERE s.connector_id = c.id AND s.last_success_at >= now() - interval '5 minutes'),
                   (SELECT COALESCE(sum(r.leads_imported), 0)::bigint FROM fetch_runs r
                     WHERE r.connector_id = c.id AND r.started_at >= now() - interval '1 hour'),
                   (SELECT count(*) FROM retries q
                     WHERE q.connector_id = c.id AND q.state = 'scheduled' AND q.next_attempt_at <= now())
                 FROM connectors c",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    Activity {
                        outgoing_last_5m: r.get(1),
                        incoming_last_hour: r.get(2),
                        retries_due: r.get(3),
                    },
                )
            })
            .collect())
    }

    /// Every Close budget, with the connectors whose key it is.
    pub async fn budgets(&self) -> Result<Vec<BudgetRow>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                "SELECT b.key_fp, b.grp, b.spacing_us,
                        GREATEST(0, EXTRACT(EPOCH FROM b.tat - clock_timestamp()))::float8,
                        CASE WHEN b.paused_until = '-infinity' THEN 0
                             ELSE GREATEST(0, EXTRACT(EPOCH FROM b.paused_until - clock_timestamp()))::float8 END,
                        b.requests, b.rate_limited, b.last_rate_limited_at,
                        COALESCE((SELECT array_agg(c.id ORDER BY c.id) FROM connectors c
                                  WHERE c.api_key_fingerprint = b.key_fp), '{}')
                 FROM close_budgets b ORDER BY b.key_fp, b.grp",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let spacing_us: i64 = r.get(2);
                BudgetRow {
                    key_fingerprint: r.get(0),
                    group: r.get(1),
                    limit_per_second: 1e6 / spacing_us.max(1) as f64,
                    booked_ahead_seconds: r.get(3),
                    paused_for_seconds: r.get(4),
                    requests: r.get(5),
                    rate_limited: r.get(6),
                    last_rate_limited_at: r.get(7),
                    connectors: r.get(8),
                }
            })
            .collect())
    }

    /// The entities of a connector whose last write failed, most recent first.
    pub async fn entity_errors(
        &self,
        connector_id: &str,
        limit: i64,
    ) -> Result<Vec<EntityError>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                "SELECT kind, hull_id, close_id, failures, last_error, updated_at FROM sync_state
                 WHERE connector_id = $1 AND failures > 0 AND last_error IS NOT NULL
                 ORDER BY updated_at DESC LIMIT $2",
                &[&connector_id, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| EntityError {
                kind: r.get(0),
                hull_id: r.get(1),
                close_id: r.get(2),
                failures: r.get(3),
                last_error: r.get(4),
                at: r.get(5),
            })
            .collect())
    }

    /// The sync state of one entity (`kind` is `account` or `user`).
    pub async fn entity_state(
        &self,
        connector_id: &str,
        kind: &str,
        hull_id: &str,
    ) -> Result<Option<EntityState>, StoreError> {
        let c = self.pool.get().await?;
        Ok(c.query_opt_p(
            "SELECT close_id, lead_id, last_success_at, failures, last_error FROM sync_state
                 WHERE connector_id = $1 AND kind = $2 AND hull_id = $3",
            &[&connector_id, &kind, &hull_id],
        )
        .await?
        .map(|r| EntityState {
            close_id: r.get(0),
            lead_id: r.get(1),
            last_success_at: r.get(2),
            failures: r.get(3),
            last_error: r.get(4),
        }))
    }

    /// The connector's webhook subscription, if it has one.
    pub async fn subscription_summary(
        &self,
        connector_id: &str,
    ) -> Result<Option<SubscriptionSummary>, StoreError> {
        let c = self.pool.get().await?;
        Ok(c.query_opt_p(
            "SELECT w.subscription_id, w.url,
                        w.api_key_fingerprint IS NOT DISTINCT FROM c.api_key_fingerprint,
                        w.created_at, w.checked_at
                 FROM webhook_subscriptions w JOIN connectors c ON c.id = w.connector_id
                 WHERE w.connector_id = $1",
            &[&connector_id],
        )
        .await?
        .map(|r| SubscriptionSummary {
            subscription_id: r.get(0),
            url: r.get(1),
            current_key: r.get(2),
            created_at: r.get(3),
            checked_at: r.get(4),
        }))
    }

    /// Makes a scheduled or parked retry due now (the scheduler republishes it on its next
    /// pass); whether there was such a retry. A retry already queued is left alone.
    pub async fn retry_now(&self, id: Uuid) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        Ok(c.execute_p(
            "UPDATE retries SET state = 'scheduled', next_attempt_at = now(), updated_at = now()
             WHERE id = $1 AND state IN ('scheduled', 'parked')",
            &[&id],
        )
        .await?
            > 0)
    }

    /// Unparks a connector by hand (its parked jobs are scheduled now); whether it was parked.
    pub async fn unpark(&self, connector_id: &str) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let parked = tx
            .query_opt_p(
                "SELECT 1 FROM connectors WHERE id = $1 AND parked_reason IS NOT NULL FOR UPDATE",
                &[&connector_id],
            )
            .await?
            .is_some();
        if parked {
            super::parking::unpark_in(&tx, connector_id).await?;
        }
        tx.commit().await?;
        Ok(parked)
    }
}
