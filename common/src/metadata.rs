//! Close metadata (lead statuses, lead and contact custom fields) cached per connector in
//! Postgres, refreshed by the scheduler and on demand when missing or stale. Nothing fetches
//! it per message.

use std::time::Duration;

use chrono::Utc;

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
    let fresh = connector
        .metadata_fetched_at
        .map(|t| {
            (Utc::now() - t)
                .to_std()
                .map(|age| age < ttl)
                .unwrap_or(true)
        })
        .unwrap_or(false);
    if fresh {
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
