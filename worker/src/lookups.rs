//! Lead lookups of concurrent jobs share Close searches. Before creating a lead, a job looks
//! it up by its identifier field; the lookups of one key and field that arrive within
//! `LOOKUP_LINGER_MS` of each other go out as one `POST /data/search/` with all their values
//! (at most [`MAX_VALUES`] per search), so a burst of new accounts costs a fraction of a search
//! each instead of one.
//!
//! The search answers lead ids only; a batch that matched anything reads those leads and gives
//! each job the leads whose field has its value. If a matched lead cannot be attributed that
//! way (Close compared the values differently), every job of the batch looks its own value up
//! again, alone: a lookup may cost more, but it never misses a lead, which would create a
//! duplicate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use common::closeio::{ApiKey, CloseClient, CloseError, EndpointGroup};
use common::store::{LeadLookupNote, Store};

/// Values per search at most.
pub const MAX_VALUES: usize = 100;

type Answer = Result<Vec<Value>, CloseError>;

struct Waiter {
    value: Value,
    tx: oneshot::Sender<Answer>,
}

struct Batch {
    key: ApiKey,
    field: String,
    limits: Option<common::closeio::Deferring>,
    waiters: Vec<Waiter>,
}

/// The shared lookups of one worker process.
#[derive(Clone)]
pub struct LeadLookups {
    close: CloseClient,
    linger: Duration,
    open: Arc<Mutex<HashMap<(String, String), Batch>>>,
}

impl LeadLookups {
    /// Lookups through `close`, gathered for `linger`.
    pub fn new(close: CloseClient, linger: Duration) -> LeadLookups {
        LeadLookups {
            close,
            linger,
            open: Arc::default(),
        }
    }

    /// The leads whose identifier `field` equals `value` (full lead objects).
    pub async fn find(&self, key: &ApiKey, field: &str, value: &Value) -> Answer {
        if self.linger.is_zero() {
            return self.close.find_leads(key, field, value).await;
        }
        // A job that would only be deferred at the search gives way before lingering.
        self.close.check_booked(key, EndpointGroup::Search)?;
        let (tx, rx) = oneshot::channel();
        let slot = (key.fingerprint(), field.to_owned());
        let waiter = Waiter {
            value: value.clone(),
            tx,
        };
        let first = {
            let mut open = self.open.lock();
            match open.get_mut(&slot) {
                Some(batch) => {
                    batch.waiters.push(waiter);
                    false
                }
                None => {
                    open.insert(
                        slot.clone(),
                        Batch {
                            key: key.clone(),
                            field: field.to_owned(),
                            // The search keeps the first job's budget limits (see `fairness`).
                            limits: common::closeio::budget::current(),
                            waiters: vec![waiter],
                        },
                    );
                    true
                }
            }
        };
        if first {
            // Its own task: a job that is cancelled must not strand the others.
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(me.linger).await;
                let batch = me.open.lock().remove(&slot);
                if let Some(batch) = batch {
                    match batch.limits.clone() {
                        Some(limits) => common::closeio::deferring(limits, me.run(batch)).await,
                        None => me.run(batch).await,
                    }
                }
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(CloseError::Transport(
                "a shared lead lookup was abandoned".into(),
            ))
        })
    }

    async fn run(&self, batch: Batch) {
        let Batch {
            key,
            field,
            waiters,
            ..
        } = batch;
        let mut waiters = waiters;
        while !waiters.is_empty() {
            let rest = waiters.split_off(waiters.len().min(MAX_VALUES));
            self.run_chunk(&key, &field, waiters).await;
            waiters = rest;
        }
    }

    async fn run_chunk(&self, key: &ApiKey, field: &str, waiters: Vec<Waiter>) {
        let mut values: Vec<Value> = Vec::with_capacity(waiters.len());
        for w in &waiters {
            if !values.contains(&w.value) {
                values.push(w.value.clone());
            }
        }
        metrics::histogram!("outgoing_lookup_batch_size").record(values.len() as f64);
        let found = match self.close.find_lead_ids(key, field, &values).await {
            Ok(ids) if ids.is_empty() => Ok(Vec::new()),
            Ok(ids) => self.close.get_leads(key, &ids).await,
            Err(e) => Err(e),
        };
        let leads = match found {
            Ok(leads) => leads,
            Err(e) => {
                for w in waiters {
                    let _ = w.tx.send(Err(e.clone()));
                }
                return;
            }
        };
        let attributed = leads
            .iter()
            .all(|l| values.iter().any(|v| field_value(l, field) == Some(v)));
        for w in waiters {
            let answer = if attributed {
                Ok(leads
                    .iter()
                    .filter(|l| field_value(l, field) == Some(&w.value))
                    .cloned()
                    .collect())
            } else {
                self.close.find_leads(key, field, &w.value).await
            };
            let _ = w.tx.send(answer);
        }
    }
}

/// Lookups of new leads made in the background while they gather (see
/// `outgoing::new_lead`): each one joins the shared searches, and the values that found no
/// lead are recorded on their gatherings (`Store::note_lead_lookups`) in one statement per
/// connector and linger window, so a burst of new accounts costs a few searches and a few
/// statements, not one of each per account.
#[derive(Clone)]
pub struct EarlyLookups {
    lookups: LeadLookups,
    notes: mpsc::Sender<Note>,
}

/// A lookup that found no lead, to record on its account's gathering.
struct Note {
    connector_id: String,
    account_key: String,
    at: DateTime<Utc>,
    value: Value,
}

/// Notes recorded in one statement at most.
const MAX_NOTES: usize = 1000;

impl EarlyLookups {
    /// Early lookups through `lookups`, their notes written to `store` every `linger`.
    pub fn spawn(lookups: LeadLookups, store: Store, linger: Duration) -> EarlyLookups {
        let (notes, rx) = mpsc::channel(MAX_NOTES * 4);
        tokio::spawn(record_notes(
            store,
            rx,
            linger.max(Duration::from_millis(1)),
        ));
        EarlyLookups { lookups, notes }
    }

    /// Starts the lookup of `value` in `field` for the account's new lead and returns at once.
    /// A lookup that found a lead or failed records nothing: the creator then looks the lead
    /// up itself.
    pub fn start(
        &self,
        key: ApiKey,
        field: String,
        value: Value,
        connector_id: String,
        account_key: String,
    ) {
        let me = self.clone();
        // Its own task, without the job's budget limits: it holds no worker place, so it
        // waits for its slot in the search group rather than being dropped when a burst's
        // lookups need more than the next `WORKER_DEFER_AFTER_SECS` of that group's budget
        // (the creators would then each search on their own).
        tokio::spawn(async move {
            let at = Utc::now();
            let found = me.lookups.find(&key, &field, &value).await;
            let outcome = match found {
                Ok(leads) if leads.is_empty() => {
                    let note = Note {
                        connector_id,
                        account_key,
                        at,
                        value,
                    };
                    match me.notes.try_send(note) {
                        Ok(()) => "none_found",
                        Err(_) => "dropped",
                    }
                }
                Ok(_) => "found",
                Err(CloseError::BudgetBusy { .. }) => "busy",
                Err(e) => {
                    tracing::debug!(connector = %connector_id, account_id = %account_key, error = %e,
                        "a new lead's early lookup failed; its creator looks it up");
                    "error"
                }
            };
            metrics::counter!("worker_early_lookups_total", "outcome" => outcome).increment(1);
        });
    }
}

async fn record_notes(store: Store, mut rx: mpsc::Receiver<Note>, linger: Duration) {
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + linger;
        let mut notes = vec![first];
        while notes.len() < MAX_NOTES {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(n)) => notes.push(n),
                Ok(None) | Err(_) => break,
            }
        }
        notes.sort_by(|a, b| a.connector_id.cmp(&b.connector_id));
        for group in notes.chunk_by(|a, b| a.connector_id == b.connector_id) {
            let connector_id = &group[0].connector_id;
            let found: Vec<LeadLookupNote<'_>> = group
                .iter()
                .map(|n| LeadLookupNote {
                    account_key: &n.account_key,
                    at: n.at,
                    value: &n.value,
                })
                .collect();
            if let Err(e) = store.note_lead_lookups(connector_id, &found).await {
                tracing::warn!(connector = %connector_id, notes = found.len(), error = %e,
                    "could not record new leads' early lookups; their creators look them up");
            }
        }
    }
}

/// A lead's value of an identifier field (`url`, `name`, `description`, `custom.<id>`).
fn field_value<'a>(lead: &'a Value, field: &str) -> Option<&'a Value> {
    lead.get(field).filter(|v| !v.is_null()).or_else(|| {
        let id = field.strip_prefix("custom.")?;
        lead.get("custom")?.get(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_values_of_regular_and_custom_fields() {
        let lead = json!({"url": "acme.com", "custom.cf_1": "x", "custom": {"cf_2": "y"}});
        assert_eq!(field_value(&lead, "url"), Some(&json!("acme.com")));
        assert_eq!(field_value(&lead, "custom.cf_1"), Some(&json!("x")));
        assert_eq!(field_value(&lead, "custom.cf_2"), Some(&json!("y")));
        assert_eq!(field_value(&lead, "name"), None);
    }
}
