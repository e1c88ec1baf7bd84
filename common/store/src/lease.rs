//! Per-entity leases: two jobs on the same Hull entity never write to Close at the same time,
//! without holding a transaction or a pooled connection while they talk to Close or Hull.
//!
//! A lease is claimed with one statement (it succeeds when nobody holds it or the holder's
//! lease expired), renewed while the job runs, and released by the fenced commit of the sync
//! state: the commit checks, in the same short transaction, that the lease still carries the
//! fence this job got. A worker whose lease expired (it stalled, or lost its connection) cannot
//! commit; a worker that died leaves a lease that expires by itself.

use std::time::Duration;

use domain::jobs::EntityKind;
use uuid::Uuid;

use crate::prepared::Prepared;
use crate::{Store, StoreError, SyncState};

/// What an outgoing job reads first, before anything else about its entity: its sync state
/// unless another job holds its lease, and for a user its account's lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstRead {
    /// The connector.
    pub connector_id: String,
    /// The entity's kind.
    pub kind: EntityKind,
    /// The entity's sync-state key.
    pub hull_id: String,
    /// For a user: its account's sync-state key, whose lead id is read too.
    pub account_key: Option<String>,
}

impl FirstRead {
    /// An entity's state, unless its lease is held.
    pub fn entity(connector_id: &str, kind: EntityKind, hull_id: &str) -> FirstRead {
        FirstRead {
            connector_id: connector_id.to_owned(),
            kind,
            hull_id: hull_id.to_owned(),
            account_key: None,
        }
    }

    /// A user's contact state, unless its lease is held, and its account's lead.
    pub fn user_and_lead(connector_id: &str, user_id: &str, account_key: &str) -> FirstRead {
        FirstRead {
            account_key: Some(account_key.to_owned()),
            ..FirstRead::entity(connector_id, EntityKind::User, user_id)
        }
    }
}

/// The answer to a [`FirstRead`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstAnswer {
    /// The entity's sync state (empty when nothing is recorded); `None` while a lease on it is
    /// held.
    pub state: Option<SyncState>,
    /// The lead id recorded for the account asked about, if any.
    pub account_lead: Option<String>,
}

/// A claimed lease on one entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityLease {
    /// The connector.
    pub connector_id: String,
    /// Account or user.
    pub kind: EntityKind,
    /// The Hull id (or account key).
    pub hull_id: String,
    /// The number this claim got; a later claim gets a higher one.
    pub fence: i64,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The fenced commit of an entity, as CTEs for one statement (parameters: connector, kind,
/// Hull id, fence, close id, lead id, body hash): `held` gives the lease up only if it is
/// still this fence's and has not expired, and `committed` records the sync state only then
/// (one row when committed, none when the lease was lost). The statement adds its own CTEs
/// and final `SELECT`.
macro_rules! fenced_commit {
    () => {
        "WITH held AS (
           DELETE FROM entity_leases
           WHERE connector_id = $1 AND kind = $2 AND hull_id = $3 AND fence = $4
             AND expires_at > clock_timestamp()
           RETURNING 1),
         committed AS (
           INSERT INTO sync_state (connector_id, kind, hull_id, close_id, lead_id, body_hash, last_success_at, failures, last_error, next_retry_at)
           SELECT $1, $2, $3, $5, $6, $7, now(), 0, NULL, NULL WHERE EXISTS (SELECT 1 FROM held)
           ON CONFLICT (connector_id, kind, hull_id) DO UPDATE SET close_id = EXCLUDED.close_id, lead_id = EXCLUDED.lead_id,
             body_hash = EXCLUDED.body_hash, last_success_at = now(), failures = 0, last_error = NULL,
             next_retry_at = NULL, updated_at = now()
           RETURNING 1)"
    };
}

/// Claims the lease of an entity (connector, kind, Hull id) for `$4` seconds when nobody holds
/// it or its holder's lease expired; returns the new fence, no row while it is held. The fence
/// comes from `nextval` in `VALUES`, evaluated whether or not the claim succeeds, so after it
/// `currval('entity_lease_fence')` in the same session is the fence of this claim when there
/// is one (see `Store::claim_entity_reading`).
pub(crate) const CLAIM_ENTITY: &str =
    "INSERT INTO entity_leases (connector_id, kind, hull_id, fence, expires_at)
     VALUES ($1, $2, $3, nextval('entity_lease_fence'),
             clock_timestamp() + make_interval(secs => $4))
     ON CONFLICT (connector_id, kind, hull_id) DO UPDATE
       SET fence = nextval('entity_lease_fence'),
           expires_at = clock_timestamp() + make_interval(secs => $4)
       WHERE entity_leases.expires_at < clock_timestamp()
     RETURNING fence";

impl Store {
    /// Claims the lease of an entity for `ttl`; `None` while another job holds it.
    pub async fn claim_entity(
        &self,
        connector_id: &str,
        kind: EntityKind,
        hull_id: &str,
        ttl: Duration,
    ) -> Result<Option<EntityLease>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt_p(
                CLAIM_ENTITY,
                &[&connector_id, &kind.as_str(), &hull_id, &secs(ttl)],
            )
            .await?;
        Ok(row.map(|r| EntityLease {
            connector_id: connector_id.to_owned(),
            kind,
            hull_id: hull_id.to_owned(),
            fence: r.get(0),
        }))
    }

    /// Extends a lease still held; `false` when it was lost (expired and claimed by another).
    pub async fn renew_entity(
        &self,
        lease: &EntityLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let n = c
            .execute_p(
                "UPDATE entity_leases SET expires_at = clock_timestamp() + make_interval(secs => $5)
                 WHERE connector_id = $1 AND kind = $2 AND hull_id = $3 AND fence = $4",
                &[
                    &lease.connector_id,
                    &lease.kind.as_str(),
                    &lease.hull_id,
                    &lease.fence,
                    &secs(ttl),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Releases a lease without a commit (the job ended without writing).
    pub async fn release_entity(&self, lease: &EntityLease) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "DELETE FROM entity_leases
             WHERE connector_id = $1 AND kind = $2 AND hull_id = $3 AND fence = $4",
            &[
                &lease.connector_id,
                &lease.kind.as_str(),
                &lease.hull_id,
                &lease.fence,
            ],
        )
        .await?;
        Ok(())
    }

    /// The sync state of an entity if nobody holds its lease (one snapshot: a fenced commit
    /// gives the lease up and writes the state together, so this never sees the lease gone
    /// without the state it wrote); `None` while a lease is held. A job whose body matches
    /// this state has nothing to write and needs no lease: reading it is as if the job had
    /// claimed and released the lease at that instant. (One [`Store::first_reads`].)
    pub async fn state_unless_leased(
        &self,
        connector_id: &str,
        kind: EntityKind,
        hull_id: &str,
    ) -> Result<Option<SyncState>, StoreError> {
        let read = FirstRead::entity(connector_id, kind, hull_id);
        Ok(self.first_read(read).await?.state)
    }

    /// What a user's job reads first: the lead id recorded for its account (`account_key`)
    /// and its contact's sync state as [`Store::state_unless_leased`] reads it. (One
    /// [`Store::first_reads`].)
    pub async fn contact_state_and_lead(
        &self,
        connector_id: &str,
        user_id: &str,
        account_key: &str,
    ) -> Result<(Option<SyncState>, Option<String>), StoreError> {
        let read = FirstRead::user_and_lead(connector_id, user_id, account_key);
        let answer = self.first_read(read).await?;
        Ok((answer.state, answer.account_lead))
    }

    async fn first_read(&self, read: FirstRead) -> Result<FirstAnswer, StoreError> {
        let mut answers = self.first_reads(std::slice::from_ref(&read)).await?;
        answers
            .pop()
            .ok_or_else(|| StoreError::Batch("the first read returned no row".into()))
    }

    /// The first reads of several jobs in one statement, answered in the order asked (see
    /// [`FirstRead`]). Each entity's state and its account's lead are found through the
    /// primary key of `sync_state`, one probe per read (the subqueries are `LATERAL ...
    /// LIMIT 1`, which the planner cannot turn into a join over the whole table, whatever its
    /// statistics say).
    pub async fn first_reads(&self, reads: &[FirstRead]) -> Result<Vec<FirstAnswer>, StoreError> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let connectors: Vec<&str> = reads.iter().map(|r| r.connector_id.as_str()).collect();
        let kinds: Vec<&str> = reads.iter().map(|r| r.kind.as_str()).collect();
        let ids: Vec<&str> = reads.iter().map(|r| r.hull_id.as_str()).collect();
        let accounts: Vec<Option<&str>> = reads.iter().map(|r| r.account_key.as_deref()).collect();
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                "SELECT s.close_id, s.lead_id, s.body_hash, s.failures,
                        EXISTS (SELECT 1 FROM entity_leases l
                                WHERE l.connector_id = r.cid AND l.kind = r.kind AND l.hull_id = r.hull_id
                                  AND l.expires_at > clock_timestamp()),
                        a.close_id
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                      WITH ORDINALITY AS r(cid, kind, hull_id, account_key, i)
                 LEFT JOIN LATERAL (SELECT close_id, lead_id, body_hash, failures FROM sync_state
                                    WHERE connector_id = r.cid AND kind = r.kind AND hull_id = r.hull_id
                                    LIMIT 1) s ON true
                 LEFT JOIN LATERAL (SELECT close_id FROM sync_state
                                    WHERE connector_id = r.cid AND kind = 'account' AND hull_id = r.account_key
                                    LIMIT 1) a ON true
                 ORDER BY r.i",
                &[&connectors, &kinds, &ids, &accounts],
            )
            .await?;
        if rows.len() != reads.len() {
            return Err(StoreError::Batch(format!(
                "{} first reads answered with {} rows",
                reads.len(),
                rows.len()
            )));
        }
        Ok(rows
            .iter()
            .map(|row| FirstAnswer {
                state: unless_leased(row),
                account_lead: row.get(5),
            })
            .collect())
    }

    /// Records a successful write and releases the lease, in one statement, only if
    /// the lease is still this job's and has not expired; otherwise [`StoreError::LeaseLost`]
    /// and nothing is written.
    pub async fn commit_entity(
        &self,
        lease: &EntityLease,
        state: &SyncState,
    ) -> Result<(), StoreError> {
        self.commit_entity_finishing(lease, state, None).await
    }

    /// [`Store::commit_entity`] that also deletes `retry_row`, the `retries` row of the job
    /// that commits, when this commit is that job's last write (the job then has nothing left
    /// to clear when it ends): one statement instead of two.
    pub async fn commit_entity_finishing(
        &self,
        lease: &EntityLease,
        state: &SyncState,
        retry_row: Option<Uuid>,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        let saved = c
            .execute_p(
                concat!(
                    fenced_commit!(),
                    ", finished AS (
                       DELETE FROM retries WHERE id = $8 AND EXISTS (SELECT 1 FROM held))
                     SELECT 1 FROM committed"
                ),
                &[
                    &lease.connector_id,
                    &lease.kind.as_str(),
                    &lease.hull_id,
                    &lease.fence,
                    &state.close_id,
                    &state.lead_id,
                    &state.body_hash,
                    &retry_row,
                ],
            )
            .await?;
        if saved != 1 {
            return Err(StoreError::LeaseLost {
                entity: format!("{}/{}", lease.kind.as_str(), lease.hull_id),
            });
        }
        Ok(())
    }
}

/// The state in the first columns of `row` (close id, lead id, hash, failures, whether a
/// lease is held); `None` while the lease is held.
fn unless_leased(row: &tokio_postgres::Row) -> Option<SyncState> {
    if row.get::<_, bool>(4) {
        return None;
    }
    Some(SyncState {
        close_id: row.get(0),
        lead_id: row.get(1),
        body_hash: row.get(2),
        failures: row.get::<_, Option<i32>>(3).unwrap_or_default(),
    })
}
