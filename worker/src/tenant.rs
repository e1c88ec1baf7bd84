//! The tenant of a job: its connector, parsed settings, Close API key and Hull credentials,
//! loaded once per job by outgoing and incoming jobs alike. A parked connector is refused here
//! (see `store::parking`), and the settings version read is noted for the parking race. A
//! tenant is loaded once per settings version and kept ([`TenantCache`]). The version checks
//! of the jobs in flight share a statement (`crate::shared_reads`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use common::closeio::ApiKey;
use common::hull::HullCredentials;
use common::mapping::Settings;
use common::store::{Connector, ConnectorVersion, Store};

use crate::shared_reads::SharedReads;
use crate::{Ctx, JobError};

/// The connector, its parsed settings and API key, as a job needs them.
pub struct Tenant {
    /// The connector as stored.
    pub connector: Connector,
    /// Its parsed settings.
    pub settings: Settings,
    /// Its Close API key.
    pub key: ApiKey,
    /// Its Hull credentials.
    pub creds: HullCredentials,
}

/// The tenants this process has loaded, each with the version it was loaded at: a job reads
/// only the connector's version row (no settings, metadata or secrets to transfer, decrypt and
/// parse) and reuses the loaded tenant while the version, the metadata's fetch time and the
/// parking are unchanged.
pub struct TenantCache {
    loaded: Mutex<HashMap<String, (ConnectorVersion, Arc<Tenant>)>>,
    versions: SharedReads<String, Option<ConnectorVersion>>,
}

impl TenantCache {
    /// An empty cache, and the task that reads the connector versions (needs a Tokio runtime).
    pub fn new(store: Store) -> TenantCache {
        let versions = SharedReads::spawn(
            "connector version checks",
            metrics::histogram!("worker_version_checks_batch"),
            move |ids: Vec<String>| {
                let store = store.clone();
                async move { store.connector_versions(&ids).await }
            },
        );
        TenantCache {
            loaded: Mutex::default(),
            versions,
        }
    }
}

/// Connectors kept at most; beyond, the cache starts again (a deployment has a few).
const MAX_CACHED: usize = 1024;

/// Loads the connector of a job and checks it can be used.
pub async fn tenant(ctx: &Ctx, connector_id: &str) -> Result<Arc<Tenant>, JobError> {
    let version = ctx
        .tenants
        .versions
        .read(connector_id.to_owned())
        .await?
        .ok_or_else(|| JobError::Permanent(format!("unknown connector {connector_id}")))?;
    crate::note_settings_version(version.settings_version);
    if let Some(reason) = &version.parked_reason {
        return Err(JobError::Parked(reason.clone()));
    }
    if let Some((seen, t)) = ctx.tenants.loaded.lock().get(connector_id) {
        if *seen == version {
            return Ok(t.clone());
        }
    }
    let connector = ctx
        .store
        .connector(connector_id)
        .await?
        .ok_or_else(|| JobError::Permanent(format!("unknown connector {connector_id}")))?;
    crate::note_settings_version(connector.settings_version);
    if let Some(reason) = &connector.parked_reason {
        return Err(JobError::Parked(reason.clone()));
    }
    let settings = Settings::from_private_settings(&connector.settings_with_key())
        .map_err(|e| JobError::Configuration(format!("invalid settings: {e}")))?;
    if !settings.has_valid_api_key() {
        return Err(JobError::Configuration(
            "No API key specified in the Settings.".into(),
        ));
    }
    let key = ApiKey::new(settings.api_key.clone().unwrap_or_default());
    let creds = common::clients::hull_credentials(&connector);
    let loaded = ConnectorVersion {
        settings_version: connector.settings_version,
        metadata_fetched_at: connector.metadata_fetched_at,
        parked_reason: None,
    };
    let t = Arc::new(Tenant {
        connector,
        settings,
        key,
        creds,
    });
    let mut cache = ctx.tenants.loaded.lock();
    if cache.len() >= MAX_CACHED {
        cache.clear();
    }
    cache.insert(connector_id.to_owned(), (loaded, t.clone()));
    Ok(t)
}
