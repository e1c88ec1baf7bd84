//! The tenant of a job: its connector, parsed settings, Close API key and Hull credentials,
//! loaded once per job by outgoing and incoming jobs alike. A parked connector is refused here
//! (see `store::parking`), and the settings version read is noted for the parking race.

use common::closeio::ApiKey;
use common::hull::HullCredentials;
use common::mapping::Settings;
use common::store::Connector;

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

/// Loads the connector of a job and checks it can be used.
pub async fn tenant(ctx: &Ctx, connector_id: &str) -> Result<Tenant, JobError> {
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
    Ok(Tenant {
        connector,
        settings,
        key,
        creds,
    })
}
