//! Incoming sync scheduling: full imports, incremental fetches and the upkeep of Close webhook
//! subscriptions.
//!
//! Each pass:
//! - abandons runs whose lease expired (a crashed or stuck run; the next run resumes from the
//!   connector's cursor);
//! - for every connector with a valid API key, not parked and without an active run, starts a
//!   **full import** when none has completed yet (or one was requested), otherwise an
//!   **incremental fetch** when one was requested (`/fetch`, the admin button, the CLI) or the
//!   connector's interval (`fetch_interval_minutes`, else `FETCH_INTERVAL_SECS`) has passed
//!   since its last run. Incremental fetches re-read the overlap window before the cursor.
//!   A run is a row of `fetch_runs` (at most one active per connector) plus one `FetchStart`
//!   job; the workers do the rest;
//! - makes sure every connector has one active Close webhook subscription pointing at
//!   `PUBLIC_URL` + `/webhooks/close/<connector id>` (created when missing or when the API key
//!   changed, re-activated when paused, completed when events are missing; subscriptions to
//!   another URL for the same connector are deleted).

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Map, Value};

use common::changes::{webhook_path, webhook_url, WEBHOOK_EVENTS};
use common::closeio::{ApiKey, CloseError};
use common::config;
use common::crypto::fingerprint;
use common::error::{Classify, ErrorClass};
use common::jobs::{Envelope, Job};
use common::mapping::Settings;
use common::store::{FetchCandidate, FetchKind, NewFetchRun, StoreError};

use crate::Scheduler;

/// How long accepted webhook event ids are kept (Close retries deliveries for 72 hours).
const WEBHOOK_EVENT_RETENTION_SECS: f64 = 4.0 * 86_400.0;

/// Configuration of the incoming sync scheduling.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchConfig {
    /// Seconds between incremental fetches of a connector (its fetch_interval_minutes setting
    /// wins)
    #[arg(env = "FETCH_INTERVAL_SECS", default_value = "300", value_parser = config::seconds)]
    pub interval: Duration,
    /// Seconds before the cursor an incremental fetch re-reads
    #[arg(env = "FETCH_OVERLAP_SECS", default_value = "300", value_parser = config::seconds)]
    pub overlap: Duration,
    /// Leads per Close search page (at most 200)
    #[arg(env = "FETCH_PAGE_SIZE", default_value = "200", value_parser = page_size)]
    pub page_size: i32,
    /// Time windows a full import (or a long incremental range) is split into, read in
    /// parallel by the workers
    #[arg(env = "FETCH_WINDOWS", default_value = "8", value_parser = config::positive::<i32>)]
    pub windows: i32,
    /// Incremental ranges longer than this many seconds are split into windows too
    #[arg(env = "FETCH_SPLIT_SECS", default_value = "3600", value_parser = config::seconds)]
    pub split_after: Duration,
    /// A fetch run without progress for this many seconds is abandoned
    #[arg(env = "FETCH_LEASE_SECS", default_value = "900", value_parser = config::seconds)]
    pub lease: Duration,
    /// Ingest's public base URL, where Close delivers webhooks (none: polling only)
    #[arg(env = "PUBLIC_URL", value_parser = config::http_url)]
    pub public_url: Option<String>,
    /// Seconds between checks of a connector's Close webhook subscription
    #[arg(env = "WEBHOOK_CHECK_SECS", default_value = "900", value_parser = config::seconds)]
    pub webhook_check: Duration,
}

/// `FETCH_PAGE_SIZE`: Close returns at most 200 results per search page.
fn page_size(raw: &str) -> Result<i32, String> {
    let size: i32 = config::positive(raw)?;
    if size > 200 {
        return Err("Close returns at most 200 results per search page".into());
    }
    Ok(size)
}

/// What one pass of the incoming scheduling did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// Full imports started.
    pub full_imports_started: usize,
    /// Incremental fetches started.
    pub incremental_started: usize,
    /// Runs abandoned because their lease expired.
    pub runs_expired: usize,
    /// Webhook subscriptions checked, repaired or created.
    pub webhooks_checked: usize,
}

impl FetchReport {
    /// Whether the pass did nothing.
    pub fn is_empty(&self) -> bool {
        *self == FetchReport::default()
    }
}

/// A failure of the webhook upkeep of one connector.
#[derive(Debug, thiserror::Error)]
enum UpkeepError {
    #[error("Close: {0}")]
    Close(#[from] CloseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Close created webhook subscription {0} without a signature_key")]
    NoSignatureKey(String),
}

impl Classify for UpkeepError {
    fn class(&self) -> ErrorClass {
        match self {
            UpkeepError::Close(e) => e.class(),
            UpkeepError::Store(e) => e.class(),
            UpkeepError::NoSignatureKey(_) => ErrorClass::Retryable { after: None },
        }
    }
}

/// The parsed settings of a connector whose API key looks usable.
fn usable_settings(private_settings_with_key: &Value) -> Option<Settings> {
    Settings::from_private_settings(private_settings_with_key)
        .ok()
        .filter(Settings::has_valid_api_key)
}

impl Scheduler {
    /// Abandons expired runs, starts the fetches that are due and keeps webhook subscriptions
    /// in shape. Errors are logged; they do not stop the rest of the pass.
    pub async fn schedule_incoming(&self) -> FetchReport {
        let mut report = FetchReport::default();
        match self.store.expire_fetch_runs().await {
            Ok(expired) => {
                for (run, connector) in &expired {
                    tracing::warn!(connector = %connector, run = %run, "incoming.job.error: fetch run abandoned (lease expired); the next run resumes from the cursor");
                }
                report.runs_expired = expired.len();
            }
            Err(e) => tracing::warn!(error = %e, "could not expire fetch runs"),
        }
        match self.store.fetch_candidates().await {
            Ok(candidates) => {
                for candidate in candidates {
                    match self.start_fetch_if_due(&candidate).await {
                        Ok(Some(FetchKind::Full)) => report.full_imports_started += 1,
                        Ok(Some(FetchKind::Incremental)) => report.incremental_started += 1,
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(connector = %candidate.connector_id, error = %e, "could not start a fetch")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list connectors for fetches"),
        }
        report.webhooks_checked = self.upkeep_webhooks().await;
        report
    }

    async fn start_fetch_if_due(
        &self,
        candidate: &FetchCandidate,
    ) -> Result<Option<FetchKind>, anyhow::Error> {
        let cfg = &self.cfg.fetch;
        let Some(connector) = self.store.connector(&candidate.connector_id).await? else {
            return Ok(None);
        };
        let Some(settings) = usable_settings(&connector.settings_with_key()) else {
            return Ok(None);
        };
        let now = Utc::now();
        let full = candidate.full_import_completed_at.is_none() || candidate.full_import_requested;
        let interval = settings
            .fetch_interval_minutes
            .map(|m| Duration::from_secs(u64::from(m) * 60))
            .unwrap_or(cfg.interval);
        let interval = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
        let due = full
            || candidate.fetch_requested_at.is_some()
            || candidate
                .last_run_started_at
                .is_none_or(|t| now - t >= interval);
        if !due {
            return Ok(None);
        }
        let overlap = chrono::Duration::from_std(cfg.overlap).unwrap_or_default();
        let since = if full && candidate.full_import_requested {
            None
        } else {
            candidate.cursor.map(|c| c - overlap)
        };
        let kind = if full {
            FetchKind::Full
        } else {
            FetchKind::Incremental
        };
        let split_after =
            chrono::Duration::from_std(cfg.split_after).unwrap_or(chrono::Duration::MAX);
        let windows = match (kind, since) {
            (FetchKind::Incremental, Some(s)) if now - s <= split_after => 1,
            _ => cfg.windows,
        };
        let run = NewFetchRun {
            kind,
            since,
            until: now,
            page_size: cfg.page_size,
            windows,
            lease_secs: cfg.lease.as_secs_f64(),
        };
        let Some(run_id) = self
            .store
            .create_fetch_run(&candidate.connector_id, &run)
            .await?
        else {
            return Ok(None);
        };
        let env = Envelope::new(candidate.connector_id.clone(), Job::FetchStart { run_id });
        if let Err(e) = self.queue.publish_all(std::slice::from_ref(&env)).await {
            self.store
                .abandon_fetch_run(run_id, &format!("could not publish the first job: {e}"))
                .await?;
            return Err(e.into());
        }
        tracing::info!(connector = %candidate.connector_id, run = %run_id, kind = kind.as_str(),
            since = ?since.map(|s| s.to_rfc3339()), "fetch run scheduled");
        metrics::counter!("scheduler_fetch_runs_started_total", "kind" => kind.as_str())
            .increment(1);
        Ok(Some(kind))
    }

    /// Verifies (and repairs) the webhook subscriptions that are due; returns how many were
    /// handled. Does nothing without `PUBLIC_URL`.
    pub async fn upkeep_webhooks(&self) -> usize {
        let Some(public_url) = self.cfg.fetch.public_url.clone() else {
            return 0;
        };
        if let Err(e) = self
            .store
            .purge_webhook_events(WEBHOOK_EVENT_RETENTION_SECS)
            .await
        {
            tracing::warn!(error = %e, "could not purge old webhook events");
        }
        let ids = match self
            .store
            .connectors_due_for_webhooks(self.cfg.fetch.webhook_check.as_secs_f64())
            .await
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "could not list connectors for webhook upkeep");
                return 0;
            }
        };
        let mut handled = 0;
        for id in ids {
            match self.upkeep_webhook(&public_url, &id).await {
                Ok(true) => handled += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(connector = %id, error = %e, "connector.webhook.error");
                    if e.class() == ErrorClass::Configuration {
                        if let Err(pe) = self.store.park_connector(&id, &e.to_string()).await {
                            tracing::warn!(connector = %id, error = %pe, "could not park the connector");
                        }
                    }
                }
            }
        }
        handled
    }

    async fn upkeep_webhook(
        &self,
        public_url: &str,
        connector_id: &str,
    ) -> Result<bool, UpkeepError> {
        let Some(connector) = self.store.connector(connector_id).await? else {
            return Ok(false);
        };
        let Some(settings) = usable_settings(&connector.settings_with_key()) else {
            return Ok(false);
        };
        let raw_key = settings.api_key.clone().unwrap_or_default();
        let key = ApiKey::new(raw_key.clone());
        let key_fp = fingerprint(&raw_key);
        let expected = webhook_url(public_url, connector_id);
        let marker = webhook_path(connector_id);
        let stored = self.store.webhook_subscription(connector_id).await?;
        let mut keep = None;
        for sub in self.close.list_webhooks(&key).await? {
            if !sub.url.ends_with(&marker) {
                continue;
            }
            let ours = keep.is_none()
                && sub.url == expected
                && stored.as_ref().is_some_and(|s| {
                    s.subscription_id == sub.id
                        && s.api_key_fingerprint.as_deref() == Some(key_fp.as_str())
                });
            if ours {
                keep = Some(sub);
                continue;
            }
            match self.close.delete_webhook(&key, &sub.id).await {
                Ok(()) | Err(CloseError::NotFound { .. }) => {
                    tracing::info!(connector = connector_id, subscription = %sub.id, url = %sub.url, "stale Close webhook subscription deleted")
                }
                Err(e) => return Err(e.into()),
            }
        }
        match keep {
            Some(sub) => {
                let mut patch = Map::new();
                if sub.status.as_deref() == Some("paused") {
                    patch.insert("status".into(), json!("active"));
                }
                let complete = WEBHOOK_EVENTS.iter().all(|(o, a)| {
                    sub.events
                        .iter()
                        .any(|e| e.object_type == *o && e.action == *a)
                });
                if !complete {
                    let events: Vec<Value> = WEBHOOK_EVENTS
                        .iter()
                        .map(|(o, a)| json!({"object_type": o, "action": a}))
                        .collect();
                    patch.insert("events".into(), Value::Array(events));
                }
                if !patch.is_empty() {
                    self.close.update_webhook(&key, &sub.id, &patch).await?;
                    tracing::info!(connector = connector_id, subscription = %sub.id, repaired = ?patch.keys().collect::<Vec<_>>(),
                        "Close webhook subscription repaired");
                }
                self.store.touch_webhook_subscription(connector_id).await?;
            }
            None => {
                let sub = self
                    .close
                    .create_webhook(&key, &expected, WEBHOOK_EVENTS)
                    .await?;
                let Some(signature_key) = sub.signature_key.clone() else {
                    // Unverifiable deliveries are useless: remove it and try again later.
                    let _ = self.close.delete_webhook(&key, &sub.id).await;
                    return Err(UpkeepError::NoSignatureKey(sub.id));
                };
                self.store
                    .save_webhook_subscription(
                        connector_id,
                        &sub.id,
                        &expected,
                        &signature_key,
                        &key_fp,
                    )
                    .await?;
                tracing::info!(connector = connector_id, subscription = %sub.id, url = %expected, "Close webhook subscription created");
            }
        }
        Ok(true)
    }
}
