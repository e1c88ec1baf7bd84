//! Batches Hull firehose writes across the jobs a worker runs concurrently.
//!
//! A job hands its entries to the [`FirehoseSink`] and waits for the outcome of the batch they
//! were sent in: the job commits its sync state only after Hull accepted its entries, exactly as
//! with one call per job, but concurrent jobs share firehose calls. A batch is sent when it
//! holds `max_batch` entries or `linger` after its first entry arrived. When Hull refuses a
//! shared batch for good (a 4xx), each job's entries are sent again on their own, so one bad
//! entry fails only its own job; a transient failure (5xx, timeout) is every job's, and they
//! retry.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use common::error::{Classify, ErrorClass};
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
            let count: usize = group.iter().map(|s| s.entries.len()).sum();
            metrics::histogram!("worker_firehose_batch_entries").record(count as f64);
            let result = hull
                .send_firehose_entries(&creds, group.iter().flat_map(|s| s.entries.iter()))
                .await;
            match result {
                Err(e) if group.len() > 1 && !matches!(e.class(), ErrorClass::Retryable { .. }) => {
                    // Find the job(s) at fault: each one's entries alone.
                    metrics::counter!("worker_firehose_batches_split_total").increment(1);
                    for s in group {
                        let own = hull.send_firehose_entries(&creds, &s.entries).await;
                        let _ = s.done.send(own);
                    }
                }
                result => {
                    for s in group {
                        let _ = s.done.send(result.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use serde_json::{json, Map, Value};

    /// A firehose that refuses (400) any batch holding the domain `bad.example.com`.
    async fn picky_firehose() -> String {
        let app = axum::Router::new().route(
            "/",
            post(|body: axum::body::Bytes| async move {
                let text = String::from_utf8_lossy(&body);
                if text.contains("bad.example.com") {
                    (axum::http::StatusCode::BAD_REQUEST, "invalid entry")
                } else {
                    (axum::http::StatusCode::OK, "ok")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/")
    }

    fn entry(domain: &str) -> FirehoseEntry {
        let claims: Map<String, Value> = json!({"domain": domain})
            .as_object()
            .cloned()
            .unwrap_or_default();
        // The claims travel inside the entry's token; the traits are plain in the body.
        let mut traits = Map::new();
        traits.insert("closeio/name".into(), Value::String(domain.into()));
        FirehoseEntry::traits_account(claims, traits).expect("entry")
    }

    #[tokio::test]
    async fn one_bad_entry_fails_only_its_own_job() {
        let hull = HullClient::new(common::hull::HullClientConfig {
            protocol: "http".into(),
            firehose_url: Some(picky_firehose().await),
            ..Default::default()
        })
        .expect("client");
        // A long linger: the three jobs share one batch.
        let sink = FirehoseSink::spawn(hull, 100, Duration::from_millis(300));
        let creds = HullCredentials {
            id: "c1".into(),
            secret: "s1".into(),
            organization: "org.hullapp.io".into(),
        };
        let (a, b, c) = tokio::join!(
            sink.send(&creds, vec![entry("good1.example.com")]),
            sink.send(&creds, vec![entry("bad.example.com")]),
            sink.send(&creds, vec![entry("good2.example.com")]),
        );
        assert!(a.is_ok(), "{a:?}");
        assert!(
            matches!(b, Err(HullError::Status { status: 400, .. })),
            "{b:?}"
        );
        assert!(c.is_ok(), "{c:?}");
    }
}
