//! The connector status check (`/status`, and the scheduler every 30 minutes).
//!
//! Same messages as the original connector, with its bugs fixed: the API key is checked against
//! Close with `GET /me/`, an error is never downgraded to a warning, and the mappings are
//! checked against the Close custom fields.

use serde::Serialize;

use crate::closeio::{ApiKey, CloseClient, CloseError};
use crate::mapping::{CloseMetadata, Settings};
use crate::store::Connector;

/// The result pushed to Hull (`PUT /api/v1/<id>/status`) and answered by `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// `ok`, `warning` or `error`.
    pub status: String,
    /// Human-readable messages.
    pub messages: Vec<String>,
}

/// The original's message when no API key is configured.
pub const NO_API_KEY: &str = "Cannot communicate with API because no API key is configured.";
/// The original's message when no account segment is whitelisted.
pub const NO_SEGMENTS: &str =
    "No data will be sent from Hull to close.io due to missing segments configuration.";

#[derive(PartialEq, PartialOrd, Clone, Copy)]
enum Level {
    Ok,
    Warning,
    Error,
}

struct Builder {
    level: Level,
    messages: Vec<String>,
}

impl Builder {
    fn add(&mut self, level: Level, msg: impl Into<String>) {
        if level > self.level {
            self.level = level;
        }
        self.messages.push(msg.into());
    }
}

/// Runs every check. `metadata` is the cached metadata, if any (used to check mappings).
pub async fn check(
    close: &CloseClient,
    connector: &Connector,
    metadata: Option<&CloseMetadata>,
) -> StatusReport {
    let mut b = Builder {
        level: Level::Ok,
        messages: vec![],
    };
    let settings = match Settings::from_private_settings(&connector.settings_with_key()) {
        Ok(s) => s,
        Err(e) => {
            b.add(
                Level::Error,
                format!("The connector settings are invalid: {e}"),
            );
            return finish(b);
        }
    };
    if !settings.has_valid_api_key() {
        b.add(Level::Error, NO_API_KEY);
    } else if let Some(key) = settings.api_key.as_deref() {
        match close.me(&ApiKey::new(key)).await {
            Ok(_) => {}
            Err(CloseError::Unauthorized) => b.add(
                Level::Error,
                "Close rejected the API key (401 Unauthorized): check the key in the settings.",
            ),
            Err(e) => b.add(
                Level::Error,
                format!("Cannot reach the Close API to check the API key: {e}"),
            ),
        }
    }
    if settings.synchronized_account_segments.is_empty() {
        b.add(Level::Warning, NO_SEGMENTS);
    }
    if let Some(meta) = metadata {
        check_mappings(&mut b, &settings, meta);
    }
    if let Some(reason) = &connector.parked_reason {
        b.add(
            Level::Error,
            format!("Synchronisation is paused until the settings are fixed: {reason}"),
        );
    }
    finish(b)
}

fn check_mappings(b: &mut Builder, s: &Settings, meta: &CloseMetadata) {
    let known =
        |field: &str, fields: &[crate::mapping::CustomField]| match field.strip_prefix("custom.") {
            Some(id) => fields.iter().any(|f| f.id == id),
            None => true,
        };
    for m in &s.lead_attributes_outbound {
        if !known(&m.closeio_field_name, &meta.lead_custom_fields) {
            b.add(Level::Warning, format!(
                "Leads Data Mapping sends '{}' to '{}', which is not a custom field of this Close organization.",
                m.hull_field_name, m.closeio_field_name
            ));
        }
    }
    for f in &s.lead_attributes_inbound {
        if !known(f, &meta.lead_custom_fields) {
            b.add(Level::Warning, format!(
                "Leads Data Mapping reads '{f}', which is not a custom field of this Close organization."
            ));
        }
    }
    if let Some(id) = s.lead_status.status_id() {
        if meta.status_label(id).is_none() {
            b.add(Level::Warning, format!(
                "The lead status '{id}' chosen for new leads does not exist in Close; new leads would be rejected."
            ));
        }
    }
}

fn finish(b: Builder) -> StatusReport {
    let status = match b.level {
        Level::Ok => "ok",
        Level::Warning => "warning",
        Level::Error => "error",
    };
    StatusReport {
        status: status.into(),
        messages: b.messages,
    }
}

/// Runs the status check of `connector`, records it and pushes it to Hull (what `/status` and
/// the scheduler's periodic check both do). A failed push is logged, not fatal.
pub async fn check_and_publish(
    store: &crate::store::Store,
    close: &CloseClient,
    hull: &crate::hull::HullClient,
    connector: &Connector,
    metadata: Option<&CloseMetadata>,
) -> Result<StatusReport, crate::store::StoreError> {
    let report = check(close, connector, metadata).await;
    store
        .set_status(&connector.id, &report.status, &report.messages)
        .await?;
    if let Err(e) = hull
        .put_status(
            &crate::clients::hull_credentials(connector),
            &report.status,
            &report.messages,
        )
        .await
    {
        tracing::warn!(connector = %connector.id, error = %e, "could not push the status to Hull");
    }
    tracing::info!(connector = %connector.id, status = %report.status, messages = ?report.messages, "connector.status");
    Ok(report)
}
