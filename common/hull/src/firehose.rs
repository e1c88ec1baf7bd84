//! Firehose entries and their per-entry identity tokens.

use chrono::{DateTime, Utc};
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;
use serde_json::{Map, Value};

use super::client::HullCredentials;
use super::error::HullError;

/// Claim keys Hull accepts to identify a user.
pub const USER_CLAIM_KEYS: &[&str] = &["id", "email", "external_id", "anonymous_id"];
/// Claim keys Hull accepts to identify an account.
pub const ACCOUNT_CLAIM_KEYS: &[&str] = &["id", "domain", "external_id", "anonymous_id"];

/// Which entity an entry applies to (`io.hull.subjectType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectType {
    /// A user.
    User,
    /// An account.
    Account,
}

impl SubjectType {
    /// The claim value.
    pub fn as_str(&self) -> &'static str {
        match self {
            SubjectType::User => "user",
            SubjectType::Account => "account",
        }
    }
}

/// One firehose entry (currently `traits`), with the identity it applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct FirehoseEntry {
    /// Entry type, e.g. `traits`.
    pub entry_type: &'static str,
    /// The entry body (traits).
    pub body: Map<String, Value>,
    /// Filtered user claims (`io.hull.asUser`).
    pub user_claims: Option<Map<String, Value>>,
    /// Filtered account claims (`io.hull.asAccount`).
    pub account_claims: Option<Map<String, Value>>,
    /// The entity the entry applies to.
    pub subject_type: SubjectType,
    /// Client time of the entry.
    pub timestamp: DateTime<Utc>,
}

impl FirehoseEntry {
    /// Traits for the account identified by `account_claims`.
    pub fn traits_account(
        account_claims: Map<String, Value>,
        traits: Map<String, Value>,
    ) -> Result<Self, HullError> {
        Ok(FirehoseEntry {
            entry_type: "traits",
            body: traits,
            user_claims: None,
            account_claims: Some(filter_claims(
                &account_claims,
                ACCOUNT_CLAIM_KEYS,
                "account",
            )?),
            subject_type: SubjectType::Account,
            timestamp: Utc::now(),
        })
    }

    /// Traits for the user identified by `user_claims`.
    pub fn traits_user(
        user_claims: Map<String, Value>,
        traits: Map<String, Value>,
    ) -> Result<Self, HullError> {
        Ok(FirehoseEntry {
            entry_type: "traits",
            body: traits,
            user_claims: Some(filter_claims(&user_claims, USER_CLAIM_KEYS, "user")?),
            account_claims: None,
            subject_type: SubjectType::User,
            timestamp: Utc::now(),
        })
    }

    /// Links a user to an account: empty traits, both claims, subject `account`.
    pub fn link_user_to_account(
        user_claims: Map<String, Value>,
        account_claims: Map<String, Value>,
    ) -> Result<Self, HullError> {
        Ok(FirehoseEntry {
            entry_type: "traits",
            body: Map::new(),
            user_claims: Some(filter_claims(&user_claims, USER_CLAIM_KEYS, "user")?),
            account_claims: Some(filter_claims(
                &account_claims,
                ACCOUNT_CLAIM_KEYS,
                "account",
            )?),
            subject_type: SubjectType::Account,
            timestamp: Utc::now(),
        })
    }

    /// The JWT claims of this entry for the connector `issuer`, issued at `iat` (unix s).
    pub fn token_claims(&self, issuer: &str, iat: i64) -> Value {
        let mut claims = Map::new();
        claims.insert("iss".into(), Value::String(issuer.to_owned()));
        claims.insert("iat".into(), Value::from(iat));
        if let Some(user) = &self.user_claims {
            claims.insert("io.hull.asUser".into(), Value::Object(user.clone()));
        }
        if let Some(account) = &self.account_claims {
            claims.insert("io.hull.asAccount".into(), Value::Object(account.clone()));
        }
        claims.insert(
            "io.hull.subjectType".into(),
            Value::String(self.subject_type.as_str().to_owned()),
        );
        Value::Object(claims)
    }

    /// The HS256 token (signed with the connector secret) identifying this entry.
    pub fn token(&self, creds: &HullCredentials) -> Result<String, HullError> {
        let claims = self.token_claims(&creds.id, Utc::now().timestamp());
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(creds.secret.as_bytes()),
        )
        .map_err(|e| HullError::InvalidClaims(format!("cannot sign the entry token: {e}")))
    }

    /// The entry as sent inside a firehose batch.
    /// The entry as an item of a firehose batch, signed for `creds`; borrows the body.
    pub(crate) fn batch_item(&self, creds: &HullCredentials) -> Result<BatchItem<'_>, HullError> {
        Ok(BatchItem {
            entry_type: self.entry_type,
            body: &self.body,
            headers: BatchItemHeaders {
                token: self.token(creds)?,
            },
            timestamp: self
                .timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }
}

/// One item of a firehose batch (serialised straight from the entry, without copying it).
#[derive(Debug, Serialize)]
pub(crate) struct BatchItem<'a> {
    #[serde(rename = "type")]
    entry_type: &'a str,
    body: &'a Map<String, Value>,
    headers: BatchItemHeaders,
    timestamp: String,
}

#[derive(Debug, Serialize)]
struct BatchItemHeaders {
    #[serde(rename = "Hull-Access-Token")]
    token: String,
}

/// A firehose request body: `{batch, timestamp, sentAt}`.
#[derive(Debug, Serialize)]
pub(crate) struct Batch<'a> {
    pub(crate) batch: &'a [BatchItem<'a>],
    pub(crate) timestamp: &'a str,
    #[serde(rename = "sentAt")]
    pub(crate) sent_at: &'a str,
}

/// Keeps only the `allowed` claim keys with a usable value (non-null, non-empty string); fails
/// when none is left.
pub fn filter_claims(
    claims: &Map<String, Value>,
    allowed: &[&str],
    what: &str,
) -> Result<Map<String, Value>, HullError> {
    let filtered: Map<String, Value> = claims
        .iter()
        .filter(|(k, _)| allowed.contains(&k.as_str()))
        .filter(|(_, v)| match v {
            Value::Null => false,
            Value::String(s) => !s.trim().is_empty(),
            _ => true,
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if filtered.is_empty() {
        return Err(HullError::InvalidClaims(format!(
            "no valid {what} identifier (expected one of {})",
            allowed.join(", ")
        )));
    }
    Ok(filtered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn creds() -> HullCredentials {
        HullCredentials {
            id: "ship1".into(),
            secret: "s3cret".into(),
            organization: "abc.hullapp.io".into(),
        }
    }

    fn decoded(token: &str, secret: &str) -> Value {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        decode::<Value>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .expect("valid token")
        .claims
    }

    #[test]
    fn claims_are_filtered() {
        let f = filter_claims(
            &map(json!({"email": "a@b.com", "domain": "x.com", "name": "n", "id": null, "external_id": ""})),
            USER_CLAIM_KEYS,
            "user",
        )
        .expect("ok");
        assert_eq!(Value::Object(f), json!({"email": "a@b.com"}));
        let f = filter_claims(
            &map(json!({"domain": "x.com", "email": "a"})),
            ACCOUNT_CLAIM_KEYS,
            "account",
        )
        .expect("ok");
        assert_eq!(Value::Object(f), json!({"domain": "x.com"}));
        assert!(matches!(
            FirehoseEntry::traits_user(map(json!({"domain": "x.com"})), Map::new()),
            Err(HullError::InvalidClaims(_))
        ));
    }

    #[test]
    fn user_token_claims_shape() {
        let entry = FirehoseEntry::traits_user(
            map(json!({"email": "a@b.com", "anonymous_id": "closeio:cont_1", "bogus": 1})),
            map(json!({"closeio/name": "Gob"})),
        )
        .expect("entry");
        let claims = decoded(&entry.token(&creds()).expect("token"), "s3cret");
        assert_eq!(claims["iss"], json!("ship1"));
        assert!(claims["iat"].is_i64());
        assert_eq!(
            claims["io.hull.asUser"],
            json!({"email": "a@b.com", "anonymous_id": "closeio:cont_1"})
        );
        assert_eq!(claims["io.hull.subjectType"], json!("user"));
        assert!(claims.get("io.hull.asAccount").is_none());
        let item = serde_json::to_value(entry.batch_item(&creds()).expect("item")).expect("json");
        assert_eq!(item["type"], json!("traits"));
        assert_eq!(item["body"], json!({"closeio/name": "Gob"}));
        assert!(item["headers"]["Hull-Access-Token"].is_string());
        assert!(item["timestamp"].is_string());
    }

    #[test]
    fn link_token_has_both_claims_and_account_subject() {
        let entry = FirehoseEntry::link_user_to_account(
            map(json!({"email": "a@b.com"})),
            map(json!({"domain": "bar.com"})),
        )
        .expect("entry");
        assert!(entry.body.is_empty());
        let claims = decoded(&entry.token(&creds()).expect("token"), "s3cret");
        assert_eq!(claims["io.hull.asUser"], json!({"email": "a@b.com"}));
        assert_eq!(claims["io.hull.asAccount"], json!({"domain": "bar.com"}));
        assert_eq!(claims["io.hull.subjectType"], json!("account"));

        let account = FirehoseEntry::traits_account(map(json!({"domain": "bar.com"})), Map::new())
            .expect("entry");
        let claims = decoded(&account.token(&creds()).expect("token"), "s3cret");
        assert_eq!(claims["io.hull.subjectType"], json!("account"));
        assert!(claims.get("io.hull.asUser").is_none());
    }
}
