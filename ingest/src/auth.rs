//! Authentication of the calls that carry a connector's credentials in the query
//! (`organization`, `ship` or `id`, `secret`): `/batch`, `/status`, the settings option
//! sources, `/fetch`, `/admin`.
//!
//! - The organization must be a bare `host[:port]` on `HULL_ORGANIZATIONS`; nothing else is
//!   ever contacted.
//! - A known connector: the secret must match (compared in constant time) and the
//!   organization must be the recorded one.
//! - An unknown connector: Hull's REST API on that (allow-listed) organization must confirm
//!   the credentials; the connector is then recorded as `registered_by = 'query'`. A later
//!   verified notification always overwrites it (see `notify`), so nobody can lock a
//!   connector out by registering it first.
//! - Every refusal is the same 401 with the same text: no remote answer is reflected and an
//!   unreachable organization looks like a refusing one.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use common::hull::HullCredentials;
use common::store::Connector;

use crate::App;

/// The one answer to every refused credential.
pub const DENIED: &str = "unknown connector or wrong credentials";

/// The 401 every refusal gets.
pub fn denied() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"error": DENIED}))).into_response()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "database unavailable"})),
    )
        .into_response()
}

/// Whether a connector id has the shape Hull gives them (24 hex digits, or at least a short
/// token of letters, digits, `-` and `_`).
fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Authenticates a call by its query credentials; see the module documentation.
pub async fn authenticate(app: &App, q: &HashMap<String, String>) -> Result<Connector, Response> {
    let id = q
        .get("ship")
        .or_else(|| q.get("id"))
        .filter(|s| !s.is_empty());
    let (Some(id), Some(secret), Some(org)) = (id, q.get("secret"), q.get("organization")) else {
        return Err(denied());
    };
    if !plausible_id(id) || secret.is_empty() || secret.len() > 256 {
        return Err(denied());
    }
    let organization = match app.cfg.common.hull_organizations.check_organization(org) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(connector = %id, reason = %e, "query credentials refused");
            metrics::counter!("ingest_rejections_total", "reason" => "organization").increment(1);
            return Err(denied());
        }
    };
    match app.store.check_secret(id, secret).await {
        Ok(Some(true)) => {}
        Ok(Some(false)) => {
            metrics::counter!("ingest_rejections_total", "reason" => "secret").increment(1);
            return Err(denied());
        }
        Ok(None) => {
            let creds = HullCredentials {
                id: id.clone(),
                secret: secret.clone(),
                organization: organization.clone(),
            };
            let remote = match app.hull.get_app(&creds).await {
                Ok(r) => r,
                Err(e) => {
                    // Logged for the operator, never answered to the caller.
                    tracing::warn!(connector = %id, %organization, error = %e, "Hull did not confirm query credentials");
                    metrics::counter!("ingest_rejections_total", "reason" => "unconfirmed")
                        .increment(1);
                    return Err(denied());
                }
            };
            if remote
                .get("id")
                .and_then(|v| v.as_str())
                .is_some_and(|rid| rid != id)
            {
                metrics::counter!("ingest_rejections_total", "reason" => "unconfirmed")
                    .increment(1);
                return Err(denied());
            }
            let settings = remote
                .get("private_settings")
                .filter(|v| v.is_object())
                .cloned()
                .unwrap_or_else(|| json!({}));
            if app
                .store
                .record_confirmed_connector(id, &organization, secret, &settings)
                .await
                .is_err()
            {
                return Err(unavailable());
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not check a connector secret");
            return Err(unavailable());
        }
    }
    match app.store.connector(id).await {
        Ok(Some(c)) if c.organization.eq_ignore_ascii_case(&organization) => Ok(c),
        Ok(Some(_)) => {
            metrics::counter!("ingest_rejections_total", "reason" => "organization").increment(1);
            Err(denied())
        }
        Ok(None) => Err(denied()),
        Err(_) => Err(unavailable()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids() {
        assert!(super::plausible_id("5c092905c36af496c700012e"));
        assert!(!super::plausible_id(""));
        assert!(!super::plausible_id("../admin"));
        assert!(!super::plausible_id(&"a".repeat(65)));
    }
}
