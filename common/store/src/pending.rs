//! New leads that gather the contacts of their users before they are created (see
//! `V8__pending_leads.sql`), so that one `POST /lead/` creates a lead with its contacts nested.
//! Every call is one statement or one short transaction: nothing is held across a Close call.

use std::time::Duration;

use serde_json::{Map, Value};

use domain::jobs::EntityKind;

use crate::lease::EntityLease;
use crate::prepared::Prepared;
use crate::{save_success, Store, StoreError, SyncState};

/// Where a gathering lead stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gathering {
    /// How long until it is due (zero when due).
    pub due_in: Duration,
    /// Whether a job has claimed it (its contact list is final).
    pub claimed: bool,
}

/// A user's contact waiting for its lead.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingContact {
    /// The Hull user id.
    pub user_id: String,
    /// The contact body (its `lead_id` a placeholder until the lead exists).
    pub body: Map<String, Value>,
    /// The user's claims, for the write-back to Hull.
    pub claims: Map<String, Value>,
}

/// A contact created nested in its lead, to record with the lead's sync state.
#[derive(Debug, Clone, PartialEq)]
pub struct NestedContact {
    /// The Hull user id.
    pub user_id: String,
    /// Its sync state (contact id, lead id, body hash).
    pub state: SyncState,
}

/// What claiming a gathering lead found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// No gathering lead (never started, or already created).
    None,
    /// Not due yet.
    NotDue(Duration),
    /// Claimed: the contacts to nest, in the order to send them.
    Contacts(Vec<PendingContact>),
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Store {
    /// Starts gathering for the account's new lead (due in `gather`), or reads where the
    /// existing gathering stands.
    pub async fn gather_lead(
        &self,
        connector_id: &str,
        account_key: &str,
        gather: Duration,
    ) -> Result<Gathering, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_one_p(
                // The no-op update returns the row another job inserted first (a plain
                // DO NOTHING would return nothing, and the row may be newer than this
                // statement's snapshot).
                "INSERT INTO pending_leads (connector_id, account_key, due_at)
                 VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
                 ON CONFLICT (connector_id, account_key) DO UPDATE SET due_at = pending_leads.due_at
                 RETURNING GREATEST(0, EXTRACT(EPOCH FROM due_at - clock_timestamp()))::float8, claimed",
                &[&connector_id, &account_key, &gather.as_secs_f64()],
            )
            .await?;
        Ok(Gathering {
            due_in: Duration::from_secs_f64(row.get::<_, f64>(0).max(0.0)),
            claimed: row.get(1),
        })
    }

    /// Adds (or replaces) a user's contact to the account's gathering lead; `false` when there
    /// is none or it was claimed already (the user's contact is then written on its own).
    pub async fn add_pending_contact(
        &self,
        connector_id: &str,
        account_key: &str,
        contact: &PendingContact,
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let open = tx
            .query_opt_p(
                "SELECT 1 FROM pending_leads
                 WHERE connector_id = $1 AND account_key = $2 AND NOT claimed FOR SHARE",
                &[&connector_id, &account_key],
            )
            .await?
            .is_some();
        if open {
            tx.execute_p(
                "INSERT INTO pending_contacts (connector_id, account_key, user_id, body, claims)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (connector_id, account_key, user_id)
                   DO UPDATE SET body = EXCLUDED.body, claims = EXCLUDED.claims",
                &[
                    &connector_id,
                    &account_key,
                    &contact.user_id,
                    &Value::Object(contact.body.clone()),
                    &Value::Object(contact.claims.clone()),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(open)
    }

    /// Claims the account's gathering lead when it is due (the caller holds the account's
    /// lease): no contact can be added after this. A claim left by a job that died is taken
    /// over by the next holder of the lease.
    pub async fn claim_pending_lead(
        &self,
        connector_id: &str,
        account_key: &str,
    ) -> Result<Claim, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt_p(
                "UPDATE pending_leads SET claimed = (due_at <= clock_timestamp()) OR claimed
                 WHERE connector_id = $1 AND account_key = $2
                 RETURNING claimed, GREATEST(0, EXTRACT(EPOCH FROM due_at - clock_timestamp()))::float8",
                &[&connector_id, &account_key],
            )
            .await?;
        let claim = match row {
            None => Claim::None,
            Some(r) if !r.get::<_, bool>(0) => {
                Claim::NotDue(Duration::from_secs_f64(r.get::<_, f64>(1).max(0.0)))
            }
            Some(_) => Claim::Contacts(
                tx.query_p(
                    "SELECT user_id, body, claims FROM pending_contacts
                     WHERE connector_id = $1 AND account_key = $2 ORDER BY user_id",
                    &[&connector_id, &account_key],
                )
                .await?
                .into_iter()
                .map(|r| PendingContact {
                    user_id: r.get(0),
                    body: object(r.get(1)),
                    claims: object(r.get(2)),
                })
                .collect(),
            ),
        };
        tx.commit().await?;
        Ok(claim)
    }

    /// [`Store::commit_entity`] for a lead created with nested contacts: in the same
    /// transaction, records the sync state of each nested contact's user and ends the
    /// account's gathering.
    pub async fn commit_lead_with_contacts(
        &self,
        lease: &EntityLease,
        state: &SyncState,
        nested: &[NestedContact],
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        crate::lease::commit_in(&tx, lease, state).await?;
        for n in nested {
            save_success(
                &tx,
                &lease.connector_id,
                EntityKind::User,
                &n.user_id,
                &n.state,
            )
            .await?;
        }
        tx.execute_p(
            "DELETE FROM pending_leads WHERE connector_id = $1 AND account_key = $2",
            &[&lease.connector_id, &lease.hull_id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
