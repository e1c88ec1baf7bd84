//! The first reads of the outgoing jobs a worker runs at once, shared (see
//! `crate::shared_reads`).
//!
//! Every outgoing job starts by reading its entity's sync state (and, for a user, its account's
//! lead): an unchanged entity needs nothing else. Alone, each of those reads is a round trip
//! to Postgres and a wake-up of the worker; when Hull sends a burst of updates that change
//! nothing Close holds, those are most of what the worker does. Shared, the reads of the jobs
//! in flight go in one statement ([`Store::first_reads`]).

use common::store::{FirstAnswer, FirstRead, Store};

use crate::shared_reads::SharedReads;

/// The shared first reads (see [`Store::state_unless_leased`] and
/// [`Store::contact_state_and_lead`] for what is read).
pub type FirstReads = SharedReads<FirstRead, FirstAnswer>;

/// Starts the task that sends the first reads (needs a Tokio runtime).
pub fn spawn(store: Store) -> FirstReads {
    let batches = metrics::histogram!("worker_first_reads_batch");
    SharedReads::spawn("first reads", batches, move |reads| {
        let store = store.clone();
        async move { store.first_reads(&reads).await }
    })
}
