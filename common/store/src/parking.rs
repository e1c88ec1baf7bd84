//! The parking lifecycle of a connector, in one place.
//!
//! A configuration error (no or wrong Close API key, invalid settings, a Hull organization
//! that refuses us) parks the connector: `connectors.parked_reason` says why, its jobs wait in
//! `retries` with state `parked` (burning no attempt), and the fetch scheduler skips it
//! ([`PARKED_FILTER`]). A change of its settings or API key unparks it in the same transaction
//! that records the change ([`unpark_in`]): the parked jobs are scheduled at once.
//!
//! Parking a job is one transaction, and it loses no race with a fix: if the connector's
//! settings changed after the job read them (`connectors.settings_version` differs from the
//! version the job saw), the job is scheduled for another attempt now instead, and the
//! connector is not parked.

use crate::prepared::Prepared;
use chrono::Utc;
use deadpool_postgres::GenericClient;

use super::{Store, StoreError};
use domain::jobs::Envelope;

/// SQL condition (on `connectors c`) of the connectors that are not parked.
pub const PARKED_FILTER: &str = "c.parked_reason IS NULL";

/// What [`Store::park`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parking {
    /// The connector is parked (with its first reason) and the job waits for a fix.
    Parked,
    /// The settings changed while the job ran: it was scheduled for another attempt now.
    Rescheduled,
}

impl Store {
    /// Parks job `env`, which failed with a configuration error `reason`, and its connector
    /// (which keeps the reason it was first parked with). `seen` is the settings version the
    /// job read (`None`: it failed before reading them); see the module documentation.
    pub async fn park(
        &self,
        env: &Envelope,
        reason: &str,
        seen: Option<i64>,
    ) -> Result<Parking, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let current: Option<i64> = tx
            .query_opt_p(
                "SELECT settings_version FROM connectors WHERE id = $1 FOR UPDATE",
                &[&env.connector_id],
            )
            .await?
            .map(|r| r.get(0));
        let changed = matches!((seen, current), (Some(s), Some(c)) if s != c);
        let outcome = if changed {
            super::upsert_retry(&tx, env, reason, Utc::now(), false).await?;
            Parking::Rescheduled
        } else {
            tx.execute_p(
                "UPDATE connectors SET parked_reason = COALESCE(parked_reason, $2) WHERE id = $1",
                &[&env.connector_id, &reason],
            )
            .await?;
            super::upsert_retry(&tx, env, reason, Utc::now(), true).await?;
            Parking::Parked
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Parks a connector without a job (the scheduler's webhook upkeep); keeps an earlier
    /// reason.
    pub async fn park_connector(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE connectors SET parked_reason = COALESCE(parked_reason, $2) WHERE id = $1",
            &[&id, &reason],
        )
        .await?;
        Ok(())
    }
}

/// Unparks a connector whose settings or key just changed (inside that change's transaction):
/// its parked jobs are scheduled at once.
pub(super) async fn unpark_in(tx: &impl GenericClient, id: &str) -> Result<(), StoreError> {
    tx.execute_p(
        "UPDATE connectors SET parked_reason = NULL WHERE id = $1",
        &[&id],
    )
    .await?;
    tx.execute_p(
        "UPDATE retries SET state = 'scheduled', next_attempt_at = now(), updated_at = now()
         WHERE connector_id = $1 AND state = 'parked'",
        &[&id],
    )
    .await?;
    Ok(())
}
