//! Fairness across tenants. Each connector has its own Close key and so its own budget; a job
//! whose tenant has no budget right now must not sit in one of the worker's places while
//! another tenant's work waits behind it in the queue.
//!
//! Every outgoing job runs under [`common::closeio::deferring`]: a request whose slot in the
//! key's shared budget is more than `WORKER_DEFER_AFTER_SECS` away reserves nothing and fails
//! at once with `BudgetBusy` (the Close client remembers how long the group is booked, so the
//! tenant's next requests fail without asking Postgres). The job is then *deferred*: its
//! return is booked on the budget's deferral lane (one spacing after the previous deferred
//! job, after the slots already reserved), it is recorded in `retries` with the same attempt
//! number, and acknowledged. It comes back about when the budget can serve it, and then runs
//! waiting for its slot in the booked group (up to [`booked_max_wait`]; further away, it is
//! deferred again, on the lane). Jobs that need no Close request (unchanged entities, users whose contact
//! was created with their lead) are never deferred.

use std::time::Duration;

use common::closeio::{CloseError, Deferring};
use common::jobs::Envelope;
use common::metadata::MetadataError;

use crate::{Ctx, JobError, Outcome};

/// How much earlier than its booked slot a deferred job is brought back: the time the
/// scheduler may take to republish it (`RETRY_POLL_MS`) and a worker to take it, so that it is
/// waiting when its slot comes instead of arriving after it (a slot that passes unused is
/// budget lost).
pub const RETURN_EARLY: Duration = Duration::from_millis(500);

/// The longest wait of a job that came back for its booked slot: it comes back
/// [`RETURN_EARLY`] before the slot, the scheduler and the queue may make it a little late or
/// early, and past that it is deferred again rather than waiting in a worker's place (a place
/// that waits for seconds holds up every tenant queued behind it).
pub fn booked_max_wait(defer_after: Duration) -> Duration {
    defer_after + 2 * RETURN_EARLY
}

/// Books the return of a job deferred because `group` of the key `key_fp` is busy; returns
/// how long to defer it. Every deferred job takes the next place on the group's deferral
/// lane, also one that came back for a booked slot and found it further away than it may
/// wait: the lane spreads the returns at the rate the budget serves them, where jobs that
/// merely waited for the slot to come near would all come back at once.
pub async fn book_return(
    ctx: &Ctx,
    key_fp: &str,
    group: &'static str,
) -> Result<Duration, JobError> {
    let slot_in = ctx.close.defer(key_fp, group).await?;
    Ok(slot_in.saturating_sub(RETURN_EARLY))
}

/// Runs an outgoing job so that a request whose slot in its tenant's Close budget is further
/// away than `WORKER_DEFER_AFTER_SECS` defers the job instead of waiting. A job that comes back
/// from a deferral waits for its slot in the group that was booked for it, and only there.
pub async fn fairly(
    ctx: &Ctx,
    env: &Envelope,
    job: impl std::future::Future<Output = Result<Outcome, JobError>>,
) -> Result<Outcome, JobError> {
    let limits = Deferring {
        max_wait: ctx.cfg.defer_after,
        booked_groups: env.booked_groups.clone(),
        booked_max_wait: booked_max_wait(ctx.cfg.defer_after),
    };
    common::closeio::deferring(limits, async {
        match job.await {
            Err(e) => match busy(&e) {
                Some((key_fp, group)) => {
                    let after = book_return(ctx, &key_fp, group).await?;
                    Err(JobError::Deferred {
                        after,
                        booked: Some(group),
                    })
                }
                None => Err(e),
            },
            ok => ok,
        }
    })
    .await
}

/// The key and group of a budget found busy, whether by a Close call of the job itself or by
/// the metadata refresh it needed.
fn busy(e: &JobError) -> Option<(String, &'static str)> {
    match e {
        JobError::Close(CloseError::BudgetBusy { key_fp, group, .. })
        | JobError::Metadata(MetadataError::Close(CloseError::BudgetBusy {
            key_fp, group, ..
        })) => Some((key_fp.clone(), group)),
        _ => None,
    }
}
