//! The first reads of the outgoing jobs a worker runs at once, shared: one statement answers
//! every job that asked while the previous one was in flight.
//!
//! Every outgoing job starts by reading its entity's sync state (and, for a user, its account's
//! lead): an unchanged entity needs nothing else. Alone, each of those reads is a round trip
//! to Postgres and a wake-up of the worker; when Hull sends a burst of updates that change
//! nothing Close holds, those are most of what the worker does. A job hands its read to the
//! [`FirstReads`] task and waits for its answer. The task lets the jobs that are ready to run
//! go first (one yield, no timer), sends the reads that have arrived by then in one statement
//! ([`Store::first_reads`]) and, while that runs, the next jobs' reads queue for the one
//! after: a read never waits for others to arrive (no linger), and under load the reads of
//! the jobs in flight share a statement. A failed statement fails each job that asked,
//! with the same retryable error it would have met alone.

use tokio::sync::{mpsc, oneshot};

use common::store::{FirstAnswer, FirstRead, Store, StoreError};

/// Most reads in one statement.
const MAX_BATCH: usize = 128;

struct Ask {
    read: FirstRead,
    answer: oneshot::Sender<Result<FirstAnswer, String>>,
}

/// The front of the shared first reads.
#[derive(Clone)]
pub struct FirstReads {
    tx: mpsc::Sender<Ask>,
}

impl FirstReads {
    /// Starts the task that sends the reads (needs a Tokio runtime).
    pub fn spawn(store: Store) -> FirstReads {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(store, rx));
        FirstReads { tx }
    }

    /// Reads `read` with the reads of the other jobs in flight (see
    /// [`Store::state_unless_leased`] and [`Store::contact_state_and_lead`] for what is read).
    pub async fn read(&self, read: FirstRead) -> Result<FirstAnswer, StoreError> {
        let stopped = || StoreError::Batch("the shared first reads have stopped".into());
        let (answer, wait) = oneshot::channel();
        self.tx
            .send(Ask { read, answer })
            .await
            .map_err(|_| stopped())?;
        wait.await
            .map_err(|_| stopped())?
            .map_err(StoreError::Batch)
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Ask>) {
    while let Some(first) = rx.recv().await {
        // Let the jobs that are ready to run reach their first read too (the task woken by a
        // read would otherwise run before them, and send each read alone).
        tokio::task::yield_now().await;
        let mut asks = vec![first];
        while asks.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(ask) => asks.push(ask),
                Err(_) => break,
            }
        }
        metrics::histogram!("worker_first_reads_batch").record(asks.len() as f64);
        let reads: Vec<FirstRead> = asks.iter().map(|a| a.read.clone()).collect();
        match store.first_reads(&reads).await {
            Ok(answers) => {
                for (ask, answer) in asks.into_iter().zip(answers) {
                    let _ = ask.answer.send(Ok(answer));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for ask in asks {
                    let _ = ask.answer.send(Err(message.clone()));
                }
            }
        }
    }
}
