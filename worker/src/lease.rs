//! The lease a job holds on the entity it writes (see `store::lease`): claimed before the sync
//! state is read, renewed in the background while Close and Hull are called, and given up by
//! the fenced commit, by [`HeldLease::release`], or — if the job fails or panics — when it is
//! dropped. No Postgres connection is held in between.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use common::jobs::EntityKind;
use common::store::{EntityLease, Store, StoreError, SyncState};

use crate::{Ctx, JobError};

/// A lease held by this job.
pub struct HeldLease {
    store: Store,
    lease: Option<EntityLease>,
    renewal: CancellationToken,
}

/// Claims the lease of an entity, waiting while another job holds it (polling, with growing
/// pauses, for up to twice the lease time), and reads its sync state under the lease — for a
/// new account (`pending_lead`: how fresh a lookup must be to serve its create), claiming its
/// gathering lead too — in the same round trip (`Store::claim_entity_reading`). A job that
/// still finds it held is retried later without burning an attempt.
pub async fn hold(
    ctx: &Ctx,
    connector_id: &str,
    kind: EntityKind,
    hull_id: &str,
    pending_lead: Option<Duration>,
) -> Result<(HeldLease, SyncState, Option<common::store::Claim>), JobError> {
    let ttl = ctx.cfg.lease;
    let deadline = tokio::time::Instant::now() + ttl * 2;
    let mut pause = Duration::from_millis(10);
    let (lease, state, claim) = loop {
        if let Some(held) = ctx
            .store
            .claim_entity_reading(connector_id, kind, hull_id, ttl, pending_lead)
            .await?
        {
            break held;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(JobError::Later {
                reason: format!(
                    "{}/{hull_id} is being written by another job",
                    kind.as_str()
                ),
                after: ttl,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    };
    let renewal = CancellationToken::new();
    tokio::spawn(renew(
        ctx.store.clone(),
        lease.clone(),
        ttl,
        renewal.clone(),
    ));
    Ok((
        HeldLease {
            store: ctx.store.clone(),
            lease: Some(lease),
            renewal,
        },
        state,
        claim,
    ))
}

/// Extends the lease every third of its time until cancelled or lost.
async fn renew(store: Store, lease: EntityLease, ttl: Duration, stop: CancellationToken) {
    let every = ttl / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match store.renew_entity(&lease, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(entity = %lease.hull_id, "entity lease lost; this job will not commit");
                return;
            }
            // Keep trying: a short database hiccup must not lose the lease.
            Err(e) => {
                tracing::warn!(entity = %lease.hull_id, error = %e, "could not renew an entity lease")
            }
        }
    }
}

impl HeldLease {
    /// Records the sync state and gives the lease up (fenced: fails with
    /// [`StoreError::LeaseLost`] if it expired and was taken over), deleting `retry_row` (the
    /// job's own, when this is its last write) in the same statement.
    pub async fn commit(
        mut self,
        state: &SyncState,
        retry_row: Option<uuid::Uuid>,
    ) -> Result<(), StoreError> {
        self.renewal.cancel();
        let lease = self.lease.take().expect("a held lease");
        self.store
            .commit_entity_finishing(&lease, state, retry_row)
            .await
    }

    /// [`HeldLease::commit`] for a new lead: also records the sync states of the contacts
    /// created nested in it, ends the account's gathering and deletes the scheduled returns
    /// of the users' jobs it finished, in the same statement. Returns how many it finished.
    pub async fn commit_lead_with_contacts(
        mut self,
        state: &SyncState,
        nested: &[common::store::NestedContact],
        retry_row: Option<uuid::Uuid>,
    ) -> Result<u64, StoreError> {
        self.renewal.cancel();
        let lease = self.lease.take().expect("a held lease");
        self.store
            .commit_lead_with_contacts(&lease, state, nested, retry_row)
            .await
    }

    /// Gives the lease up without writing.
    pub async fn release(mut self) -> Result<(), StoreError> {
        self.renewal.cancel();
        let lease = self.lease.take().expect("a held lease");
        self.store.release_entity(&lease).await
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewal.cancel();
        if let Some(lease) = self.lease.take() {
            // The job failed (or panicked) with the lease held: give it up now rather than let
            // the next attempt wait for it to expire.
            let store = self.store.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = store.release_entity(&lease).await;
                });
            }
        }
    }
}
