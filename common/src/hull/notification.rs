//! Verification that a notification really comes from Hull (the smart-notifier signature).
//!
//! Checks, in order: the flag header, the signature version (`v1`), the three signature
//! headers, the body's `configuration`, the platform's public key (a pinned PEM, or fetched by
//! `POST`ing the signature to the key URL — only when the URL's host is allow-listed — and cached
//! per URL), then the RS256 signature with `jti == body.notification_id`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// Presence-flag header.
pub const FLAG_HEADER: &str = "x-hull-smart-notifier";
/// The RS256 JWT.
pub const SIGNATURE_HEADER: &str = "x-hull-smart-notifier-signature";
/// Signature version (`v1`).
pub const SIGNATURE_VERSION_HEADER: &str = "x-hull-smart-notifier-signature-version";
/// URL of the platform's public key.
pub const PUBLIC_KEY_URL_HEADER: &str = "x-hull-smart-notifier-signature-public-key-url";

const PEM_MARKER: &str = "-----BEGIN PUBLIC KEY-----";

/// Settings of a [`NotificationVerifier`].
#[derive(Debug, Clone, Default)]
pub struct VerifierConfig {
    /// Hosts (`host` or `host:port`; `*.domain` matches any subdomain) whose public-key URLs
    /// are trusted. A key URL on any other host is refused.
    pub allowed_key_hosts: Vec<String>,
    /// A PEM public key to use instead of fetching one.
    pub pinned_pem: Option<String>,
    /// Accept every notification without any check (tests and local demos only).
    pub skip_verification: bool,
}

/// Why a notification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The `x-hull-smart-notifier` header is missing.
    #[error("missing x-hull-smart-notifier header")]
    MissingFlagHeader,
    /// The signature version is not `v1`.
    #[error("unsupported signature version {0:?}")]
    UnsupportedSignatureVersion(String),
    /// One of the signature headers is missing.
    #[error("missing signature headers")]
    MissingSignatureHeaders,
    /// The body has no `configuration`.
    #[error("notification body has no configuration")]
    MissingConfiguration,
    /// The public-key URL's host is not in the allow-list.
    #[error("public key URL host not allowed: {0}")]
    KeyHostNotAllowed(String),
    /// The public key could not be fetched or is not a PEM public key.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// The signature does not verify, or its `jti` is not the notification id.
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
}

impl VerifyError {
    /// The Hull SDK error code (`MISSING_FLAG_HEADER`, `INVALID_SIGNATURE`...). A disallowed
    /// key host is reported as `INVALID_CERTIFICATE`.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingFlagHeader => "MISSING_FLAG_HEADER",
            VerifyError::UnsupportedSignatureVersion(_) => "UNSUPPORTED_SIGNATURE_VERSION",
            VerifyError::MissingSignatureHeaders => "MISSING_SIGNATURE_HEADERS",
            VerifyError::MissingConfiguration => "MISSING_CONFIGURATION",
            VerifyError::KeyHostNotAllowed(_) | VerifyError::InvalidCertificate(_) => {
                "INVALID_CERTIFICATE"
            }
            VerifyError::InvalidSignature(_) => "INVALID_SIGNATURE",
        }
    }

    /// A readable message.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// Verifies Hull notifications; cheap to clone (the key cache is shared).
#[derive(Clone)]
pub struct NotificationVerifier {
    config: Arc<VerifierConfig>,
    http: reqwest::Client,
    keys: Arc<Mutex<HashMap<String, DecodingKey>>>,
    pinned: Option<DecodingKey>,
}

impl std::fmt::Debug for NotificationVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationVerifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NotificationVerifier {
    /// Builds a verifier; fails when the pinned PEM is not an RSA public key.
    pub fn new(config: VerifierConfig) -> Result<Self, VerifyError> {
        let pinned = config
            .pinned_pem
            .as_deref()
            .map(decoding_key_from_pem)
            .transpose()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| VerifyError::InvalidCertificate(format!("HTTP client: {e}")))?;
        Ok(NotificationVerifier {
            config: Arc::new(config),
            http,
            keys: Arc::new(Mutex::new(HashMap::new())),
            pinned,
        })
    }

    /// Verifies one notification (headers and parsed JSON body).
    pub async fn verify(&self, headers: &HeaderMap, body: &Value) -> Result<(), VerifyError> {
        if self.config.skip_verification {
            return Ok(());
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if headers.get(FLAG_HEADER).is_none() {
            return Err(VerifyError::MissingFlagHeader);
        }
        match header(SIGNATURE_VERSION_HEADER) {
            Some("v1") => {}
            Some(other) => {
                return Err(VerifyError::UnsupportedSignatureVersion(
                    other.chars().take(20).collect(),
                ))
            }
            None => return Err(VerifyError::UnsupportedSignatureVersion(String::new())),
        }
        let (Some(signature), Some(key_url)) =
            (header(SIGNATURE_HEADER), header(PUBLIC_KEY_URL_HEADER))
        else {
            return Err(VerifyError::MissingSignatureHeaders);
        };
        if body.get("configuration").is_none_or(Value::is_null) {
            return Err(VerifyError::MissingConfiguration);
        }
        let key = match &self.pinned {
            Some(key) => key.clone(),
            None => self.fetch_key(key_url, signature).await?,
        };
        check_signature(signature, &key, body)
    }

    async fn fetch_key(&self, key_url: &str, signature: &str) -> Result<DecodingKey, VerifyError> {
        if let Some(key) = self.keys.lock().get(key_url) {
            return Ok(key.clone());
        }
        let url = url::Url::parse(key_url)
            .map_err(|e| VerifyError::InvalidCertificate(format!("bad public key URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || !self.host_allowed(&url) {
            return Err(VerifyError::KeyHostNotAllowed(authority(&url)));
        }
        let response = self
            .http
            .post(url)
            .body(signature.to_owned())
            .send()
            .await
            .map_err(|e| VerifyError::InvalidCertificate(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(VerifyError::InvalidCertificate(format!(
                "public key URL answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let text = response
            .text()
            .await
            .map_err(|e| VerifyError::InvalidCertificate(e.without_url().to_string()))?;
        let key = decoding_key_from_pem(&text)?;
        self.keys.lock().insert(key_url.to_owned(), key.clone());
        Ok(key)
    }

    fn host_allowed(&self, url: &url::Url) -> bool {
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let port = url.port_or_known_default();
        self.config.allowed_key_hosts.iter().any(|entry| {
            let entry = entry.trim().to_ascii_lowercase();
            let (entry_host, entry_port) = split_host_port(&entry);
            if entry_port.is_some() && entry_port != port {
                return false;
            }
            match entry_host.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => host == entry_host,
            }
        })
    }
}

/// Splits `host:port` (IPv6 in brackets allowed); a missing or unparsable port gives `None`.
fn split_host_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host, port);
        }
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

fn authority(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => url.as_str().chars().take(100).collect(),
    }
}

fn decoding_key_from_pem(pem: &str) -> Result<DecodingKey, VerifyError> {
    if !pem.contains(PEM_MARKER) {
        return Err(VerifyError::InvalidCertificate(
            "the public key is not a PEM public key".into(),
        ));
    }
    DecodingKey::from_rsa_pem(pem.trim().as_bytes())
        .map_err(|e| VerifyError::InvalidCertificate(format!("unusable public key: {e}")))
}

fn check_signature(signature: &str, key: &DecodingKey, body: &Value) -> Result<(), VerifyError> {
    let notification_id = body
        .get("notification_id")
        .and_then(Value::as_str)
        .ok_or_else(|| VerifyError::InvalidSignature("the body has no notification_id".into()))?;
    let mut validation = Validation::new(Algorithm::RS256);
    // Hull signatures carry no exp/aud requirement; exp and nbf are still enforced if present.
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Value>(signature, key, &validation)
        .map_err(|e| VerifyError::InvalidSignature(e.to_string()))?;
    match data.claims.get("jti").and_then(Value::as_str) {
        Some(jti) if jti == notification_id => Ok(()),
        Some(_) => Err(VerifyError::InvalidSignature(
            "jti does not match notification_id".into(),
        )),
        None => Err(VerifyError::InvalidSignature(
            "the signature has no jti".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parsing() {
        assert_eq!(split_host_port("hullapp.io"), ("hullapp.io", None));
        assert_eq!(split_host_port("127.0.0.1:8080"), ("127.0.0.1", Some(8080)));
        assert_eq!(split_host_port("[::1]:80"), ("::1", Some(80)));
    }

    #[test]
    fn allow_list_matching() {
        let v = NotificationVerifier::new(VerifierConfig {
            allowed_key_hosts: vec!["*.hullapp.io".into(), "127.0.0.1:4000".into()],
            ..VerifierConfig::default()
        })
        .expect("verifier");
        let ok = |u: &str| v.host_allowed(&url::Url::parse(u).expect("url"));
        assert!(ok("https://abc.hullapp.io/key"));
        assert!(!ok("https://hullapp.io.evil.com/key"));
        assert!(ok("http://127.0.0.1:4000/key"));
        assert!(!ok("http://127.0.0.1:4001/key"));
        assert!(!ok("https://evil.com/key"));
    }

    #[test]
    fn codes() {
        assert_eq!(VerifyError::MissingFlagHeader.code(), "MISSING_FLAG_HEADER");
        assert_eq!(
            VerifyError::KeyHostNotAllowed("x".into()).code(),
            "INVALID_CERTIFICATE"
        );
        assert!(VerifyError::KeyHostNotAllowed("evil.com".into())
            .message()
            .contains("not allowed"));
        assert!(NotificationVerifier::new(VerifierConfig {
            pinned_pem: Some("nope".into()),
            ..VerifierConfig::default()
        })
        .is_err());
    }
}
