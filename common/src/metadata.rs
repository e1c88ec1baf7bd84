//! Close metadata (lead statuses, lead and contact custom fields) cached per connector in
//! Postgres, refreshed by the scheduler and on demand when missing or stale. Nothing fetches
//! it per message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::closeio::{ApiKey, CloseClient, CloseError, CustomFieldObject};
use crate::mapping::CloseMetadata;
use crate::store::{Connector, Store, StoreError};

/// Metadata older than this is refreshed on the next use.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Why metadata could not be had.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The connector has no API key.
    #[error("no Close API key is configured")]
    NoApiKey,
    /// Close refused or failed.
    #[error("Close: {0}")]
    Close(#[from] CloseError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::Classify for MetadataError {
    fn class(&self) -> crate::error::ErrorClass {
        match self {
            MetadataError::NoApiKey => crate::error::ErrorClass::Configuration,
            MetadataError::Close(e) => e.class(),
            MetadataError::Store(e) => e.class(),
        }
    }
}

/// Fetches every status and custom field from Close (all pages).
pub async fn fetch(close: &CloseClient, key: &ApiKey) -> Result<CloseMetadata, CloseError> {
    let statuses = close.lead_statuses(key).await?;
    let lead_fields = close.custom_fields(key, CustomFieldObject::Lead).await?;
    let contact_fields = close.custom_fields(key, CustomFieldObject::Contact).await?;
    Ok(CloseMetadata {
        lead_statuses: statuses,
        lead_custom_fields: lead_fields,
        contact_custom_fields: contact_fields,
    })
}

/// Fetches and stores fresh metadata for a connector.
pub async fn refresh(
    store: &Store,
    close: &CloseClient,
    connector: &Connector,
) -> Result<CloseMetadata, MetadataError> {
    let key = connector
        .api_key
        .as_deref()
        .ok_or(MetadataError::NoApiKey)?;
    let meta = fetch(close, &ApiKey::new(key)).await?;
    let value = serde_json::to_value(&meta).unwrap_or_default();
    store.set_metadata(&connector.id, &value).await?;
    tracing::info!(connector = %connector.id, statuses = meta.lead_statuses.len(),
        lead_fields = meta.lead_custom_fields.len(), contact_fields = meta.contact_custom_fields.len(),
        "connector.metadata.refreshed");
    Ok(meta)
}

/// The cached metadata of a connector, refreshed when absent or older than `ttl`.
pub async fn get(
    store: &Store,
    close: &CloseClient,
    connector: &Connector,
    ttl: Duration,
) -> Result<CloseMetadata, MetadataError> {
    if connector
        .metadata_fetched_at
        .is_some_and(|at| is_fresh(at, ttl))
    {
        if let Some(meta) = connector
            .metadata
            .as_ref()
            .and_then(|m| serde_json::from_value(m.clone()).ok())
        {
            return Ok(meta);
        }
    }
    refresh(store, close, connector).await
}

/// Whether metadata fetched at `at` is younger than `ttl` (a time in the future counts as fresh).
fn is_fresh(at: DateTime<Utc>, ttl: Duration) -> bool {
    (Utc::now() - at)
        .to_std()
        .map(|age| age < ttl)
        .unwrap_or(true)
}

/// When the metadata was fetched, and the metadata parsed.
type Parsed = (DateTime<Utc>, Arc<CloseMetadata>);

/// Close metadata kept in memory per connector, for a process that needs it on every job (the
/// worker): parsed once per version of the stored metadata rather than once per job, and
/// fetched from Close by one job at a time per connector (single flight) when missing or stale,
/// however many jobs need it at once.
#[derive(Clone, Default)]
pub struct MetadataCache {
    parsed: Arc<parking_lot::Mutex<HashMap<String, Parsed>>>,
    flights: Arc<parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl MetadataCache {
    /// An empty cache.
    pub fn new() -> MetadataCache {
        MetadataCache::default()
    }

    /// The metadata of `connector` (as loaded for this job), refreshed when older than `ttl`.
    pub async fn get(
        &self,
        store: &Store,
        close: &CloseClient,
        connector: &Connector,
        ttl: Duration,
    ) -> Result<Arc<CloseMetadata>, MetadataError> {
        let is_fresh = |at: DateTime<Utc>| is_fresh(at, ttl);
        // The parsed copy, unless the stored metadata is newer (the scheduler refreshed it).
        let stored_at = connector.metadata_fetched_at;
        if let Some(hit) = self.cached(&connector.id, |at| {
            is_fresh(at) && stored_at.is_none_or(|stored| stored <= at)
        }) {
            return Ok(hit);
        }
        if let (Some(at), Some(value)) = (connector.metadata_fetched_at, &connector.metadata) {
            if is_fresh(at) {
                if let Ok(meta) = serde_json::from_value::<CloseMetadata>(value.clone()) {
                    return Ok(self.keep(&connector.id, at, meta));
                }
            }
        }
        // Stale or missing: one job per connector fetches, the others wait for its result.
        let flight = self
            .flights
            .lock()
            .entry(connector.id.clone())
            .or_default()
            .clone();
        let _turn = flight.lock().await;
        if let Some(hit) = self.cached(&connector.id, is_fresh) {
            return Ok(hit);
        }
        let meta = refresh(store, close, connector).await?;
        Ok(self.keep(&connector.id, Utc::now(), meta))
    }

    fn cached(
        &self,
        connector_id: &str,
        is_fresh: impl Fn(DateTime<Utc>) -> bool,
    ) -> Option<Arc<CloseMetadata>> {
        self.parsed
            .lock()
            .get(connector_id)
            .filter(|(at, _)| is_fresh(*at))
            .map(|(_, m)| m.clone())
    }

    fn keep(
        &self,
        connector_id: &str,
        at: DateTime<Utc>,
        meta: CloseMetadata,
    ) -> Arc<CloseMetadata> {
        let meta = Arc::new(meta);
        self.parsed
            .lock()
            .insert(connector_id.to_owned(), (at, meta.clone()));
        meta
    }
}
