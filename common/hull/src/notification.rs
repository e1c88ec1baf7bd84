//! Verification that a notification really comes from Hull (the smart-notifier signature).
//!
//! [`NotificationVerifier::verify_token`] works on the headers alone, so a forged or unsigned
//! request is refused before its body is read or parsed. It checks, in order: the flag header,
//! the signature version (`v1`), the three signature headers, the token's shape (an RS256 JWT
//! with `jti` and an unexpired `exp`: decoded without the key, so a malformed token causes no
//! outbound request), the platform's public key (a pinned PEM, or fetched by `POST`ing the
//! signature to the key URL — only when the URL's host is allow-listed, never following a
//! redirect — and kept in a bounded LRU cache), then the RS256 signature and `exp` (with
//! [`EXP_LEEWAY_SECS`] of leeway). The caller then binds the token to the body with
//! [`VerifiedToken::check_body`]: `jti == notification_id`, and `iss` (when the token has one)
//! equal to `configuration.organization`.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lru::LruCache;
use parking_lot::Mutex;
use reqwest::header::HeaderMap;
use serde_json::Value;

use domain::allowlist::HostAllowList;

/// Presence-flag header.
pub const FLAG_HEADER: &str = "x-hull-smart-notifier";
/// The RS256 JWT.
pub const SIGNATURE_HEADER: &str = "x-hull-smart-notifier-signature";
/// Signature version (`v1`).
pub const SIGNATURE_VERSION_HEADER: &str = "x-hull-smart-notifier-signature-version";
/// URL of the platform's public key.
pub const PUBLIC_KEY_URL_HEADER: &str = "x-hull-smart-notifier-signature-public-key-url";
/// Clock skew tolerated on `exp`.
pub const EXP_LEEWAY_SECS: u64 = 60;
/// Public keys kept in the cache (distinct key URLs).
pub const KEY_CACHE_SIZE: usize = 32;
/// Largest public-key answer read.
const MAX_KEY_BYTES: usize = 16 * 1024;
/// Longest signature header accepted.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Key fetches at once (a burst of tokens naming new key URLs waits here).
const KEY_FETCHES: usize = 4;
/// How long a key URL that could not be used is not tried again.
const FAILED_KEY_TTL: Duration = Duration::from_secs(30);

const PEM_MARKER: &str = "-----BEGIN PUBLIC KEY-----";

/// Settings of a [`NotificationVerifier`].
#[derive(Debug, Clone, Default)]
pub struct VerifierConfig {
    /// Hosts whose public-key URLs are trusted (`HULL_KEY_HOSTS`). A key URL on any other
    /// host is refused without a request.
    pub allowed_key_hosts: HostAllowList,
    /// A PEM public key to use instead of fetching one.
    pub pinned_pem: Option<String>,
    /// Accept every notification without any check (tests and local demos only).
    pub skip_verification: bool,
    /// Refuse `http://` key URLs (on outside local mode): a key fetched in clear text could
    /// be replaced on the way.
    pub require_https: bool,
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
    /// The signature does not verify, has expired, or does not match the body.
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

/// What a verified signature proves: Hull signed notification `jti`, until `exp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The notification id the token was issued for (`None` with verification skipped).
    pub jti: Option<String>,
    /// The issuing organization, when the token names one.
    pub iss: Option<String>,
    /// When the token expires (seconds since the epoch).
    pub exp: Option<i64>,
    /// Whether the signature was really checked (false with `SKIP_SIGNATURE_VERIFICATION`).
    pub verified: bool,
}

impl VerifiedToken {
    /// Binds the token to a body: its `jti` must be the body's `notification_id`, and its
    /// `iss` (if any) the body's `configuration.organization`.
    pub fn check_body(
        &self,
        notification_id: Option<&str>,
        organization: Option<&str>,
    ) -> Result<(), VerifyError> {
        if !self.verified {
            return Ok(());
        }
        let Some(notification_id) = notification_id else {
            return Err(VerifyError::InvalidSignature(
                "the body has no notification_id".into(),
            ));
        };
        if self.jti.as_deref() != Some(notification_id) {
            return Err(VerifyError::InvalidSignature(
                "jti does not match notification_id".into(),
            ));
        }
        if let (Some(iss), Some(org)) = (&self.iss, organization) {
            if !iss.trim().eq_ignore_ascii_case(org.trim()) {
                return Err(VerifyError::InvalidSignature(
                    "iss does not match configuration.organization".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Verifies Hull notifications; cheap to clone (the key cache is shared).
#[derive(Clone)]
pub struct NotificationVerifier {
    config: Arc<VerifierConfig>,
    http: reqwest::Client,
    keys: Arc<Mutex<LruCache<String, DecodingKey>>>,
    failed: Arc<Mutex<LruCache<String, std::time::Instant>>>,
    fetches: Arc<tokio::sync::Semaphore>,
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
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| VerifyError::InvalidCertificate(format!("HTTP client: {e}")))?;
        let size = NonZeroUsize::new(KEY_CACHE_SIZE).unwrap_or(NonZeroUsize::MIN);
        Ok(NotificationVerifier {
            config: Arc::new(config),
            http,
            keys: Arc::new(Mutex::new(LruCache::new(size))),
            failed: Arc::new(Mutex::new(LruCache::new(size))),
            fetches: Arc::new(tokio::sync::Semaphore::new(KEY_FETCHES)),
            pinned,
        })
    }

    /// Whether verification is switched off (`SKIP_SIGNATURE_VERIFICATION`).
    pub fn skips(&self) -> bool {
        self.config.skip_verification
    }

    /// Verifies one notification (headers and parsed JSON body): [`Self::verify_token`] then
    /// [`VerifiedToken::check_body`].
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        body: &Value,
    ) -> Result<VerifiedToken, VerifyError> {
        if !self.config.skip_verification {
            check_headers(headers)?;
            if body.get("configuration").is_none_or(Value::is_null) {
                return Err(VerifyError::MissingConfiguration);
            }
        }
        let token = self.verify_token(headers).await?;
        token.check_body(
            body.get("notification_id").and_then(Value::as_str),
            body.pointer("/configuration/organization")
                .and_then(Value::as_str),
        )?;
        Ok(token)
    }

    /// Verifies the signature headers alone: the body need not have been read.
    pub async fn verify_token(&self, headers: &HeaderMap) -> Result<VerifiedToken, VerifyError> {
        if self.config.skip_verification {
            return Ok(VerifiedToken {
                jti: None,
                iss: None,
                exp: None,
                verified: false,
            });
        }
        let (signature, key_url) = check_headers(headers)?;
        precheck(signature)?;
        let key = match &self.pinned {
            Some(key) => key.clone(),
            None => self.fetch_key(key_url, signature).await?,
        };
        check_signature(signature, &key)
    }

    async fn fetch_key(&self, key_url: &str, signature: &str) -> Result<DecodingKey, VerifyError> {
        if let Some(key) = self.keys.lock().get(key_url) {
            return Ok(key.clone());
        }
        let url = url::Url::parse(key_url)
            .map_err(|_| VerifyError::InvalidCertificate("bad public key URL".into()))?;
        if !self.config.allowed_key_hosts.allows_url(&url)
            || (self.config.require_https && url.scheme() != "https")
        {
            return Err(VerifyError::KeyHostNotAllowed(authority(&url)));
        }
        if self
            .failed
            .lock()
            .get(key_url)
            .is_some_and(|at| at.elapsed() < FAILED_KEY_TTL)
        {
            return Err(unusable_key());
        }
        let _permit = self.fetches.acquire().await.map_err(|_| unusable_key())?;
        if let Some(key) = self.keys.lock().get(key_url) {
            return Ok(key.clone());
        }
        match self.download_key(url, signature).await {
            Ok(key) => {
                self.keys.lock().put(key_url.to_owned(), key.clone());
                Ok(key)
            }
            Err(detail) => {
                // The detail stays in the log: the caller learns nothing about the key host.
                tracing::warn!(key_url, error = %detail, "could not fetch the notification public key");
                self.failed
                    .lock()
                    .put(key_url.to_owned(), std::time::Instant::now());
                Err(unusable_key())
            }
        }
    }

    async fn download_key(&self, url: url::Url, signature: &str) -> Result<DecodingKey, String> {
        let response = self
            .http
            .post(url)
            .body(signature.to_owned())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        let text = read_capped(response, MAX_KEY_BYTES)
            .await
            .map_err(|e| e.message())?;
        decoding_key_from_pem(&text).map_err(|e| e.message())
    }
}

/// The one error for a key that could not be fetched or used.
fn unusable_key() -> VerifyError {
    VerifyError::InvalidCertificate(
        "the public key could not be fetched or is not a PEM public key".into(),
    )
}

/// The flag, version and signature headers; returns the signature and the key URL.
fn check_headers(headers: &HeaderMap) -> Result<(&str, &str), VerifyError> {
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
    match (header(SIGNATURE_HEADER), header(PUBLIC_KEY_URL_HEADER)) {
        (Some(signature), Some(key_url)) => Ok((signature, key_url)),
        _ => Err(VerifyError::MissingSignatureHeaders),
    }
}

/// Reads at most `cap` bytes of a response as text.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<String, VerifyError> {
    let mut buf = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| VerifyError::InvalidCertificate(e.without_url().to_string()))?
    {
        if buf.len() + chunk.len() > cap {
            return Err(VerifyError::InvalidCertificate(
                "the public key answer is too large".into(),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf)
        .map_err(|_| VerifyError::InvalidCertificate("the public key is not text".into()))
}

/// Checks what can be checked without the key: an RS256 JWT whose unverified claims carry a
/// `jti` and an `exp` that has not passed. A token that fails here never causes a key fetch.
fn precheck(signature: &str) -> Result<(), VerifyError> {
    if signature.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::InvalidSignature(
            "the signature is too long".into(),
        ));
    }
    let header = jsonwebtoken::decode_header(signature)
        .map_err(|e| VerifyError::InvalidSignature(format!("malformed token: {e}")))?;
    if header.alg != Algorithm::RS256 {
        return Err(VerifyError::InvalidSignature(format!(
            "algorithm {:?} is not RS256",
            header.alg
        )));
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.insecure_disable_signature_validation();
    configure(&mut validation);
    let data =
        jsonwebtoken::decode::<Value>(signature, &DecodingKey::from_secret(&[]), &validation)
            .map_err(|e| VerifyError::InvalidSignature(e.to_string()))?;
    claims_jti(&data.claims).map(|_| ())
}

fn configure(validation: &mut Validation) {
    validation.set_required_spec_claims(&["exp"]);
    validation.leeway = EXP_LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_aud = false;
}

fn claims_jti(claims: &Value) -> Result<String, VerifyError> {
    match claims.get("jti").and_then(Value::as_str) {
        Some(jti) if !jti.is_empty() => Ok(jti.to_owned()),
        _ => Err(VerifyError::InvalidSignature(
            "the signature has no jti".into(),
        )),
    }
}

fn authority(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => url.scheme().to_owned(),
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

fn check_signature(signature: &str, key: &DecodingKey) -> Result<VerifiedToken, VerifyError> {
    let mut validation = Validation::new(Algorithm::RS256);
    configure(&mut validation);
    let data = jsonwebtoken::decode::<Value>(signature, key, &validation)
        .map_err(|e| VerifyError::InvalidSignature(e.to_string()))?;
    let jti = claims_jti(&data.claims)?;
    let iss = data
        .claims
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let exp = data.claims.get("exp").and_then(Value::as_i64);
    Ok(VerifiedToken {
        jti: Some(jti),
        iss,
        exp,
        verified: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prechecked_without_a_key() {
        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let now = chrono::Utc::now().timestamp();
        let token =
            |header: Value, claims: Value| format!("{}.{}.c2ln", b64(&header), b64(&claims));
        let rs = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        assert!(precheck(&token(
            rs.clone(),
            serde_json::json!({"jti": "n1", "exp": now + 60})
        ))
        .is_ok());
        let refused = [
            "not-a-jwt".to_string(),
            token(
                serde_json::json!({"alg": "HS256"}),
                serde_json::json!({"jti": "n1", "exp": now + 60}),
            ),
            token(rs.clone(), serde_json::json!({"jti": "n1"})),
            token(rs.clone(), serde_json::json!({"exp": now + 60})),
            token(
                rs.clone(),
                serde_json::json!({"jti": "n1", "exp": now - 3600}),
            ),
            "a".repeat(MAX_TOKEN_BYTES + 1),
        ];
        for t in refused {
            assert_eq!(
                precheck(&t).unwrap_err().code(),
                "INVALID_SIGNATURE",
                "{t:.60}"
            );
        }
    }

    #[test]
    fn tokens_bind_to_the_body() {
        let t = VerifiedToken {
            jti: Some("n1".into()),
            iss: Some("acme.hullapp.io".into()),
            exp: None,
            verified: true,
        };
        assert!(t.check_body(Some("n1"), Some("ACME.hullapp.io")).is_ok());
        assert!(t.check_body(Some("n2"), Some("acme.hullapp.io")).is_err());
        assert!(t.check_body(None, Some("acme.hullapp.io")).is_err());
        assert!(t.check_body(Some("n1"), Some("evil.com")).is_err());
        let no_iss = VerifiedToken {
            iss: None,
            ..t.clone()
        };
        assert!(no_iss.check_body(Some("n1"), Some("evil.com")).is_ok());
        let skipped = VerifiedToken {
            jti: None,
            iss: None,
            exp: None,
            verified: false,
        };
        assert!(skipped.check_body(None, None).is_ok());
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
