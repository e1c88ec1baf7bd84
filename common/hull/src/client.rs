//! The Hull REST client (connector settings, status, segments) and the firehose sender.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::HullError;
use super::firehose::{Batch, FirehoseEntry};
use domain::allowlist::HostAllowList;

/// The credentials of one connector instance on a Hull organization.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct HullCredentials {
    /// Connector (ship) id.
    pub id: String,
    /// Connector secret: signs firehose tokens and authenticates REST calls. Never logged.
    pub secret: String,
    /// Organization host, e.g. `abc123.hullapp.io` (`127.0.0.1:port` for a simulator).
    pub organization: String,
}

impl fmt::Debug for HullCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HullCredentials")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("organization", &self.organization)
            .finish()
    }
}

/// Settings of a [`HullClient`].
#[derive(Debug, Clone)]
pub struct HullClientConfig {
    /// `https` in production; `http` for a local simulator.
    pub protocol: String,
    /// Firehose URL override; default `{protocol}://firehose.<organization host minus its first
    /// label>/`.
    pub firehose_url: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Maximum entries per firehose request.
    pub flush_at: usize,
    /// The organizations this client may call (`HULL_ORGANIZATIONS`); a request for any other
    /// fails with [`HullError::InvalidConfig`] before anything is sent.
    pub organizations: HostAllowList,
}

impl Default for HullClientConfig {
    fn default() -> Self {
        HullClientConfig {
            protocol: "https".to_owned(),
            firehose_url: None,
            timeout: Duration::from_secs(10),
            flush_at: 50,
            organizations: HostAllowList::open(),
        }
    }
}

struct Inner {
    http: reqwest::Client,
    config: HullClientConfig,
}

/// Client of the Hull platform. Cheap to clone.
#[derive(Clone)]
pub struct HullClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for HullClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HullClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl HullClient {
    /// Builds a client.
    pub fn new(config: HullClientConfig) -> Result<Self, HullError> {
        if config.flush_at == 0 {
            return Err(HullError::InvalidConfig(
                "flush_at must be at least 1".into(),
            ));
        }
        if !matches!(config.protocol.as_str(), "http" | "https") {
            return Err(HullError::InvalidConfig(format!(
                "protocol must be http or https, got {:?}",
                config.protocol
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("closeio-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HullError::InvalidConfig(format!("HTTP client: {e}")))?;
        Ok(HullClient {
            inner: Arc::new(Inner { http, config }),
        })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &HullClientConfig {
        &self.inner.config
    }

    /// `GET /api/v1/app`: the calling connector, with its settings.
    pub async fn get_app(&self, creds: &HullCredentials) -> Result<Value, HullError> {
        self.rest(creds, Method::GET, "app", None).await
    }

    /// `PUT /api/v1/{id}` with `{"private_settings": …}`. Hull *replaces* the private settings,
    /// so pass the complete, merged object.
    pub async fn put_settings(
        &self,
        creds: &HullCredentials,
        private_settings: &Map<String, Value>,
    ) -> Result<Value, HullError> {
        let body = json!({ "private_settings": private_settings });
        let path = creds.id.clone();
        self.rest(creds, Method::PUT, &path, Some(&body)).await
    }

    /// `PUT /api/v1/{id}/status` with `{"status", "messages"}`; `status` is `ok`, `warning`,
    /// `error` or `setupRequired`.
    pub async fn put_status(
        &self,
        creds: &HullCredentials,
        status: &str,
        messages: &[String],
    ) -> Result<(), HullError> {
        let body = json!({ "status": status, "messages": messages });
        let path = format!("{}/status", creds.id);
        self.rest(creds, Method::PUT, &path, Some(&body))
            .await
            .map(drop)
    }

    /// `GET /api/v1/users_segments?shipId={id}`.
    pub async fn users_segments(&self, creds: &HullCredentials) -> Result<Vec<Value>, HullError> {
        self.segments(creds, "users_segments").await
    }

    /// `GET /api/v1/accounts_segments?shipId={id}`.
    pub async fn accounts_segments(
        &self,
        creds: &HullCredentials,
    ) -> Result<Vec<Value>, HullError> {
        self.segments(creds, "accounts_segments").await
    }

    async fn segments(&self, creds: &HullCredentials, path: &str) -> Result<Vec<Value>, HullError> {
        let path = format!("{path}?shipId={}", url_encode(&creds.id));
        match self.rest(creds, Method::GET, &path, None).await? {
            Value::Array(items) => Ok(items),
            other => Err(HullError::Decode(format!(
                "expected a list of segments, got {}",
                type_name(&other)
            ))),
        }
    }

    /// The firehose URL for `creds`' organization.
    pub fn firehose_url(&self, creds: &HullCredentials) -> Result<String, HullError> {
        if let Some(url) = &self.inner.config.firehose_url {
            return Ok(url.clone());
        }
        let host = creds.organization.trim().trim_end_matches('/');
        match host.split_once('.') {
            Some((_, domain)) if !domain.is_empty() => Ok(format!(
                "{}://firehose.{domain}/",
                self.inner.config.protocol
            )),
            _ => Err(HullError::InvalidConfig(format!(
                "cannot derive the firehose host from organization {host:?}; set firehose_url"
            ))),
        }
    }

    /// Sends `entries` to the firehose in batches of at most `flush_at`. Returns `Ok` only when
    /// every batch was accepted (2xx); on the first failure the remaining batches are not sent.
    pub async fn send_firehose(
        &self,
        creds: &HullCredentials,
        entries: Vec<FirehoseEntry>,
    ) -> Result<(), HullError> {
        self.send_firehose_entries(creds, &entries).await
    }

    /// [`Self::send_firehose`] of borrowed entries (the caller keeps them, e.g. to resend a
    /// part of a refused batch).
    pub async fn send_firehose_entries<'a>(
        &self,
        creds: &HullCredentials,
        entries: impl IntoIterator<Item = &'a FirehoseEntry>,
    ) -> Result<(), HullError> {
        // Each batch is signed and serialised when it is sent, straight from the entries.
        let entries: Vec<&FirehoseEntry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(());
        }
        let url = self.firehose_url(creds)?;
        for chunk in entries.chunks(self.inner.config.flush_at) {
            let items = chunk
                .iter()
                .map(|e| e.batch_item(creds))
                .collect::<Result<Vec<_>, _>>()?;
            let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let body = Batch {
                batch: &items,
                timestamp: &now,
                sent_at: &now,
            };
            self.send(creds, Method::POST, &url, Some(&body), "firehose")
                .await?;
        }
        Ok(())
    }

    async fn rest(
        &self,
        creds: &HullCredentials,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, HullError> {
        let url = format!(
            "{}://{}/api/v1/{}",
            self.inner.config.protocol,
            creds.organization.trim().trim_end_matches('/'),
            path
        );
        self.send(creds, method, &url, body, "rest").await
    }

    async fn send<B: serde::Serialize + ?Sized>(
        &self,
        creds: &HullCredentials,
        method: Method,
        url: &str,
        body: Option<&B>,
        kind: &'static str,
    ) -> Result<Value, HullError> {
        self.inner
            .config
            .organizations
            .check_organization(&creds.organization)
            .map_err(|e| HullError::InvalidConfig(e.to_string()))?;
        let mut request = self
            .inner
            .http
            .request(method.clone(), url)
            .header("Hull-App-Id", &creds.id)
            .header("Hull-Access-Token", &creds.secret)
            .header("Hull-Organization", &creds.organization);
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = Instant::now();
        let result = async {
            let response = request.send().await.map_err(HullError::from_reqwest)?;
            let status = response.status().as_u16();
            let text = response.text().await.map_err(HullError::from_reqwest)?;
            Ok::<_, HullError>((status, text))
        }
        .await;
        let elapsed = started.elapsed();
        let status_label = match &result {
            Ok((status, _)) => status.to_string(),
            Err(HullError::Timeout) => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        metrics::counter!("hull_requests_total", "kind" => kind, "status" => status_label.clone())
            .increment(1);
        metrics::histogram!("hull_request_duration_seconds", "kind" => kind)
            .record(elapsed.as_secs_f64());
        tracing::debug!(
            method = %method,
            kind,
            status = %status_label,
            duration_ms = elapsed.as_millis() as u64,
            "hull.api.call"
        );
        let (status, text) = result?;
        if !(200..300).contains(&status) {
            return Err(HullError::from_status(status, &text));
        }
        if kind == "firehose" || text.trim().is_empty() {
            // The firehose answers `ok` or similar; its body is not used.
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| HullError::Decode(e.to_string()))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(org: &str) -> HullCredentials {
        HullCredentials {
            id: "ship1".into(),
            secret: "s3cret".into(),
            organization: org.into(),
        }
    }

    #[test]
    fn secret_is_redacted() {
        assert!(!format!("{:?}", creds("a.hullapp.io")).contains("s3cret"));
    }

    #[test]
    fn firehose_url_derivation() {
        let client = HullClient::new(HullClientConfig::default()).expect("client");
        assert_eq!(
            client
                .firehose_url(&creds("abc123.hullapp.io"))
                .expect("url"),
            "https://firehose.hullapp.io/"
        );
        assert!(client.firehose_url(&creds("localhost")).is_err());
        let client = HullClient::new(HullClientConfig {
            firehose_url: Some("http://127.0.0.1:9/firehose".into()),
            ..HullClientConfig::default()
        })
        .expect("client");
        assert_eq!(
            client.firehose_url(&creds("localhost")).expect("url"),
            "http://127.0.0.1:9/firehose"
        );
        assert!(HullClient::new(HullClientConfig {
            flush_at: 0,
            ..HullClientConfig::default()
        })
        .is_err());
    }
}
