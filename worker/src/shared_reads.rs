//! Reads shared by the jobs a worker runs at once: one statement answers every job that asked
//! while the previous one was in flight.
//!
//! A job hands its read to the [`SharedReads`] task and waits for its answer. The task lets
//! the jobs that are ready to run go first (one yield, no timer), sends the reads that have
//! arrived by then in one statement and, while that runs, the next jobs' reads queue for the
//! one after. A read never waits for others to arrive (no linger), and every statement starts
//! after each job it answers asked, so an answer is never older than the job. Under load the
//! reads of the jobs in flight share a statement. A failed statement fails each job that
//! asked, with the same retryable error it would have met alone.
//!
//! Two kinds of read are shared this way: the outgoing jobs' first reads
//! (`crate::first_reads`) and the connector versions every job checks (`crate::tenant`).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use metrics::Histogram;
use tokio::sync::{mpsc, oneshot};

use common::store::StoreError;

/// Most reads in one statement.
const MAX_BATCH: usize = 128;

struct Ask<R, A> {
    read: R,
    answer: oneshot::Sender<Result<A, String>>,
}

/// The front of one kind of shared read.
pub struct SharedReads<R, A> {
    tx: mpsc::Sender<Ask<R, A>>,
    what: &'static str,
}

impl<R, A> Clone for SharedReads<R, A> {
    fn clone(&self) -> Self {
        SharedReads {
            tx: self.tx.clone(),
            what: self.what,
        }
    }
}

impl<R: Send + 'static, A: Send + 'static> SharedReads<R, A> {
    /// Starts the task that sends the reads (needs a Tokio runtime). `read_all` answers a
    /// batch of reads, one answer per read in their order; `what` names them in errors, and
    /// `batches` records the number of reads in each statement.
    pub fn spawn<F, Fut>(what: &'static str, batches: Histogram, read_all: F) -> Self
    where
        F: Fn(Vec<R>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<A>, StoreError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(rx, batches, read_all));
        SharedReads { tx, what }
    }

    /// Reads `read` with the reads of the other jobs in flight.
    pub async fn read(&self, read: R) -> Result<A, StoreError> {
        let stopped = || StoreError::Batch(format!("the shared {} have stopped", self.what));
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

async fn run<R, A, F, Fut>(mut rx: mpsc::Receiver<Ask<R, A>>, batches: Histogram, read_all: F)
where
    F: Fn(Vec<R>) -> Fut,
    Fut: Future<Output = Result<Vec<A>, StoreError>>,
{
    while let Some(first) = rx.recv().await {
        // Let the jobs that are ready to run reach their read too (the task woken by a read
        // would otherwise run before them, and send each read alone).
        tokio::task::yield_now().await;
        let mut asks = vec![first];
        while asks.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(ask) => asks.push(ask),
                Err(_) => break,
            }
        }
        batches.record(asks.len() as f64);
        let (reads, answers): (Vec<R>, Vec<_>) =
            asks.into_iter().map(|a| (a.read, a.answer)).unzip();
        let asked = answers.len();
        // A panic in one statement fails the jobs that asked, not every later read.
        let result = AssertUnwindSafe(read_all(reads))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(StoreError::Batch("the shared statement panicked".into())));
        match result {
            Ok(results) if results.len() == asked => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(Ok(result));
                }
            }
            Ok(results) => {
                let message = format!("{} answers to {asked} reads", results.len());
                for answer in answers {
                    let _ = answer.send(Err(message.clone()));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for answer in answers {
                    let _ = answer.send(Err(message.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A batch reader that doubles each read and records the size of each batch.
    fn doubling(batches: Arc<Mutex<Vec<usize>>>) -> SharedReads<u32, u64> {
        SharedReads::spawn("test reads", Histogram::noop(), move |reads: Vec<u32>| {
            let batches = batches.clone();
            async move {
                batches.lock().expect("lock").push(reads.len());
                tokio::task::yield_now().await;
                Ok(reads.into_iter().map(|r| u64::from(r) * 2).collect())
            }
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_reads_share_statements_and_each_gets_its_own_answer() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let reads = doubling(batches.clone());
        let answers = futures::future::join_all((0..50u32).map(|i| {
            let reads = reads.clone();
            async move { (i, reads.read(i).await.expect("answer")) }
        }))
        .await;
        for (i, answer) in answers {
            assert_eq!(answer, u64::from(i) * 2);
        }
        let batches = batches.lock().expect("lock").clone();
        assert_eq!(batches.iter().sum::<usize>(), 50);
        assert!(batches.len() < 5, "50 concurrent reads took {batches:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_read_is_sent_at_once_and_alone() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let reads = doubling(batches.clone());
        assert_eq!(reads.read(7).await.expect("answer"), 14);
        assert_eq!(reads.read(8).await.expect("answer"), 16);
        assert_eq!(*batches.lock().expect("lock"), vec![1, 1]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_statement_fails_every_read_that_shared_it() {
        let reads: SharedReads<u32, u32> =
            SharedReads::spawn("test reads", Histogram::noop(), |_reads: Vec<u32>| async {
                Err(StoreError::Batch("the database is away".into()))
            });
        let answers = futures::future::join_all((0..3u32).map(|i| {
            let reads = reads.clone();
            async move { reads.read(i).await }
        }))
        .await;
        for answer in answers {
            let e = answer.expect_err("failed");
            assert!(e.to_string().contains("the database is away"), "{e}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_statement_answering_the_wrong_number_of_reads_fails_them() {
        let reads: SharedReads<u32, u32> =
            SharedReads::spawn("test reads", Histogram::noop(), |_reads: Vec<u32>| async {
                Ok(Vec::new())
            });
        let e = reads.read(1).await.expect_err("no answer");
        assert!(e.to_string().contains("0 answers to 1 reads"), "{e}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_statement_that_panics_fails_its_reads_and_the_next_ones_are_served() {
        let reads: SharedReads<u32, u32> = SharedReads::spawn(
            "test reads",
            Histogram::noop(),
            |reads: Vec<u32>| async move {
                assert!(!reads.contains(&13), "unlucky");
                Ok(reads)
            },
        );
        let e = reads.read(13).await.expect_err("panicked");
        assert!(e.to_string().contains("panicked"), "{e}");
        assert_eq!(reads.read(7).await.expect("served"), 7);
    }
}
