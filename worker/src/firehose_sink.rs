//! Batches Hull firehose writes across the jobs a worker runs concurrently.
//!
//! A job hands its entries to the [`FirehoseSink`] and waits for the outcome of the batch they
//! were sent in: the job commits its sync state only after Hull accepted its entries, exactly as
//! with one call per job, but concurrent jobs share firehose calls. A batch is sent when it
//! holds `max_batch` entries, or `linger` after its first entry arrived — unless a job of the
//! same connector that announced a write-back ([`FirehoseSink::expect`]) is still on its way:
//! then the batch waits for it, up to `max_linger`. A burst's creators, which the scheduler
//! brings back together and the budget serves one spacing apart, so share one call instead of
//! one each, while a lone write-back leaves after `linger` as before.
//!
//! When Hull refuses a shared batch for good (a 4xx), each job's entries are sent again on
//! their own, so one bad entry fails only its own job; a transient failure (5xx, timeout) is
//! every job's, and they retry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use common::error::{Classify, ErrorClass};
use common::hull::{FirehoseEntry, HullClient, HullCredentials, HullError};

struct Submit {
    creds: HullCredentials,
    entries: Vec<FirehoseEntry>,
    done: oneshot::Sender<Result<(), HullError>>,
}

enum Msg {
    Submit(Submit),
    /// An announced write-back was sent or given up: the open batch may be complete.
    Settled,
}

/// Write-backs announced and not yet sent, per connector.
type InFlight = Arc<Mutex<HashMap<String, usize>>>;

/// The batching front of the firehose.
#[derive(Clone)]
pub struct FirehoseSink {
    tx: mpsc::Sender<Msg>,
    in_flight: InFlight,
}

/// A write-back announced by a job on its way to the firehose ([`FirehoseSink::expect`]). The
/// open batch of its connector waits for it (up to the sink's `max_linger`) until it is sent
/// ([`Expected::send`]) or dropped (the job failed or was deferred first).
pub struct Expected {
    sink: FirehoseSink,
    connector_id: String,
}

impl Drop for Expected {
    fn drop(&mut self) {
        let settled = {
            let mut in_flight = self.sink.in_flight.lock();
            match in_flight.get_mut(&self.connector_id) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    in_flight.remove(&self.connector_id);
                    true
                }
            }
        };
        if settled {
            // The batcher only needs a nudge; when its channel is full it is busy anyway.
            let _ = self.sink.tx.try_send(Msg::Settled);
        }
    }
}

impl Expected {
    /// Sends `entries` in the connector's next batch (see [`FirehoseSink::send`]).
    pub async fn send(
        self,
        creds: &HullCredentials,
        entries: Vec<FirehoseEntry>,
    ) -> Result<(), HullError> {
        let wait = self.sink.submit(creds, entries).await;
        // Settled once its entries are in the batcher's queue, ahead of the nudge.
        drop(self);
        match wait {
            Some(wait) => wait.await.map_err(|_| stopped())?,
            None => Ok(()),
        }
    }
}

fn stopped() -> HullError {
    HullError::Transport("the firehose batcher has stopped".into())
}

impl FirehoseSink {
    /// Starts the batching task (needs a Tokio runtime).
    pub fn spawn(
        hull: HullClient,
        max_batch: usize,
        linger: Duration,
        max_linger: Duration,
    ) -> FirehoseSink {
        let (tx, rx) = mpsc::channel(1024);
        let in_flight = InFlight::default();
        let window = Window {
            max_batch: max_batch.max(1),
            linger,
            max_linger: max_linger.max(linger),
        };
        tokio::spawn(run(hull, rx, in_flight.clone(), window));
        FirehoseSink { tx, in_flight }
    }

    /// Announces a write-back of `connector_id` to come: batches of that connector wait for it.
    pub fn expect(&self, connector_id: &str) -> Expected {
        *self
            .in_flight
            .lock()
            .entry(connector_id.to_owned())
            .or_default() += 1;
        Expected {
            sink: self.clone(),
            connector_id: connector_id.to_owned(),
        }
    }

    /// Sends `entries` in the next batch; resolves when Hull accepted (or refused) that batch.
    pub async fn send(
        &self,
        creds: &HullCredentials,
        entries: Vec<FirehoseEntry>,
    ) -> Result<(), HullError> {
        match self.submit(creds, entries).await {
            Some(wait) => wait.await.map_err(|_| stopped())?,
            None => Ok(()),
        }
    }

    /// Queues `entries` for the batcher; `None` when there is nothing to send.
    async fn submit(
        &self,
        creds: &HullCredentials,
        entries: Vec<FirehoseEntry>,
    ) -> Option<oneshot::Receiver<Result<(), HullError>>> {
        if entries.is_empty() {
            return None;
        }
        let (done, wait) = oneshot::channel();
        let submit = Submit {
            creds: creds.clone(),
            entries,
            done,
        };
        if let Err(mpsc::error::SendError(Msg::Submit(s))) = self.tx.send(Msg::Submit(submit)).await
        {
            let _ = s.done.send(Err(stopped()));
        }
        Some(wait)
    }
}

/// When a batch leaves: at `max_batch` entries, `linger` after its first entry, or up to
/// `max_linger` after it while an announced write-back of its connectors is on its way.
#[derive(Clone, Copy)]
struct Window {
    max_batch: usize,
    linger: Duration,
    max_linger: Duration,
}

impl Window {
    /// The batch's deadline, given when it opened and whether a batch-mate is on its way.
    fn deadline(&self, opened: Instant, mate_on_its_way: bool) -> Instant {
        opened
            + if mate_on_its_way {
                self.max_linger
            } else {
                self.linger
            }
    }
}

async fn run(hull: HullClient, mut rx: mpsc::Receiver<Msg>, in_flight: InFlight, window: Window) {
    while let Some(msg) = rx.recv().await {
        let Msg::Submit(first) = msg else { continue };
        let opened = Instant::now();
        let mut count = first.entries.len();
        let mut pending = vec![first];
        while count < window.max_batch {
            let mate_on_its_way = {
                let in_flight = in_flight.lock();
                pending
                    .iter()
                    .any(|s| in_flight.contains_key(s.creds.id.as_str()))
            };
            let deadline = window.deadline(opened, mate_on_its_way);
            if Instant::now() >= deadline {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Msg::Submit(s))) => {
                    count += s.entries.len();
                    pending.push(s);
                }
                // Look again: the batch may be complete, or a mate may have been announced.
                Ok(Some(Msg::Settled)) | Err(_) => {}
                Ok(None) => break,
            }
        }
        send_batch(&hull, pending).await;
    }
}

/// One firehose call per connector (entries are signed with its secret).
async fn send_batch(hull: &HullClient, mut pending: Vec<Submit>) {
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
        serve(app).await
    }

    /// Serves `app` on a loopback port; returns its URL.
    async fn serve(app: axum::Router) -> String {
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

    /// A firehose that records the number of entries of each call it receives.
    async fn counting_firehose() -> (String, Arc<Mutex<Vec<usize>>>) {
        let calls: Arc<Mutex<Vec<usize>>> = Arc::default();
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/",
            post(move |body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let n = v["batch"].as_array().map_or(0, Vec::len);
                    seen.lock().push(n);
                    "ok"
                }
            }),
        );
        (serve(app).await, calls)
    }

    fn creds(id: &str) -> HullCredentials {
        HullCredentials {
            id: id.into(),
            secret: "s1".into(),
            organization: "org.hullapp.io".into(),
        }
    }

    /// A sink whose batches leave 10 ms after their first entry, or wait up to a minute for
    /// an announced write-back: a test that hung on one fails at its timeout.
    async fn sink_waiting_for_mates() -> (FirehoseSink, Arc<Mutex<Vec<usize>>>) {
        let (url, calls) = counting_firehose().await;
        let hull = HullClient::new(common::hull::HullClientConfig {
            protocol: "http".into(),
            firehose_url: Some(url),
            ..Default::default()
        })
        .expect("client");
        let sink = FirehoseSink::spawn(
            hull,
            100,
            Duration::from_millis(10),
            Duration::from_secs(60),
        );
        (sink, calls)
    }

    const GUARD: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn a_batch_waits_for_the_write_backs_announced_on_its_connector() {
        let (sink, calls) = sink_waiting_for_mates().await;
        let c1 = creds("c1");
        let (first, second) = (sink.expect("c1"), sink.expect("c1"));
        let early = first.send(&c1, vec![entry("one.example.com")]);
        // The second write-back comes well after the linger: its Close write was slower.
        let late = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            second.send(&c1, vec![entry("two.example.com")]).await
        };
        let (a, b) = tokio::time::timeout(GUARD, async { tokio::join!(early, late) })
            .await
            .expect("the batch left");
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        assert_eq!(*calls.lock(), vec![2], "one call with both entries");
    }

    #[tokio::test]
    async fn a_write_back_given_up_releases_the_batch_waiting_for_it() {
        let (sink, calls) = sink_waiting_for_mates().await;
        let c1 = creds("c1");
        let (sent, given_up) = (sink.expect("c1"), sink.expect("c1"));
        let send = sent.send(&c1, vec![entry("one.example.com")]);
        // The other job fails (or is deferred) before its write-back.
        let give_up = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(given_up);
        };
        let (a, ()) = tokio::time::timeout(GUARD, async { tokio::join!(send, give_up) })
            .await
            .expect("the batch left once its mate gave up");
        assert!(a.is_ok(), "{a:?}");
        assert_eq!(*calls.lock(), vec![1]);
    }

    #[tokio::test]
    async fn a_write_back_announced_on_another_connector_holds_no_batch() {
        let (sink, calls) = sink_waiting_for_mates().await;
        let _other = sink.expect("c2");
        let sent = tokio::time::timeout(
            GUARD,
            sink.expect("c1")
                .send(&creds("c1"), vec![entry("one.example.com")]),
        )
        .await
        .expect("the batch left without waiting for the other connector");
        assert!(sent.is_ok(), "{sent:?}");
        // A job that writes nothing back (`send` of nothing) sends no call either.
        let nothing = sink.send(&creds("c1"), Vec::new()).await;
        assert!(nothing.is_ok());
        assert_eq!(*calls.lock(), vec![1]);
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
        let sink = FirehoseSink::spawn(
            hull,
            100,
            Duration::from_millis(300),
            Duration::from_millis(300),
        );
        let creds = creds("c1");
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
