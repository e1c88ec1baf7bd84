//! Batches Hull firehose writes across the jobs a worker runs concurrently.
//!
//! A job hands its entries to the [`FirehoseSink`] and waits for the outcome of the batch they
//! were sent in: the job commits its sync state only after Hull accepted its entries, exactly as
//! with one call per job, but concurrent jobs share firehose calls. A batch is sent when it
//! holds `max_batch` entries or `linger` after its first entry arrived.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use common::hull::{FirehoseEntry, HullClient, HullCredentials, HullError};

struct Submit {
    creds: HullCredentials,
    entries: Vec<FirehoseEntry>,
    done: oneshot::Sender<Result<(), HullError>>,
}

/// The batching front of the firehose.
#[derive(Clone)]
pub struct FirehoseSink {
    tx: mpsc::Sender<Submit>,
}

impl FirehoseSink {
    /// Starts the batching task (needs a Tokio runtime).
    pub fn spawn(hull: HullClient, max_batch: usize, linger: Duration) -> FirehoseSink {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(hull, rx, max_batch.max(1), linger));
        FirehoseSink { tx }
    }

    /// Sends `entries` in the next batch; resolves when Hull accepted (or refused) that batch.
    pub async fn send(
        &self,
        creds: &HullCredentials,
        entries: Vec<FirehoseEntry>,
    ) -> Result<(), HullError> {
        if entries.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Submit {
                creds: creds.clone(),
                entries,
                done,
            })
            .await
            .map_err(|_| HullError::Transport("the firehose batcher has stopped".into()))?;
        wait.await
            .map_err(|_| HullError::Transport("the firehose batcher has stopped".into()))?
    }
}

async fn run(hull: HullClient, mut rx: mpsc::Receiver<Submit>, max_batch: usize, linger: Duration) {
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + linger;
        let mut count = first.entries.len();
        let mut pending = vec![first];
        while count < max_batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => {
                    count += s.entries.len();
                    pending.push(s);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // One firehose call per connector (entries are signed with its secret).
        while !pending.is_empty() {
            let id = pending[0].creds.id.clone();
            let (group, rest): (Vec<Submit>, Vec<Submit>) =
                pending.into_iter().partition(|s| s.creds.id == id);
            pending = rest;
            let creds = group[0].creds.clone();
            let mut entries = Vec::new();
            let mut waiters = Vec::with_capacity(group.len());
            for s in group {
                entries.extend(s.entries);
                waiters.push(s.done);
            }
            metrics::histogram!("worker_firehose_batch_entries").record(entries.len() as f64);
            let result = hull.send_firehose(&creds, entries).await;
            for w in waiters {
                let _ = w.send(result.clone());
            }
        }
    }
}
