//! Verification of Close webhook deliveries (`close-sig-hash` / `close-sig-timestamp`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the lowercase hex HMAC-SHA256 of a delivery.
pub const SIGNATURE_HEADER: &str = "close-sig-hash";
/// Header carrying the unix-seconds timestamp of a delivery.
pub const TIMESTAMP_HEADER: &str = "close-sig-timestamp";

/// Checks a Close webhook signature: HMAC-SHA256 keyed with the *hex-decoded*
/// `signature_key`, over the timestamp string immediately followed by the raw body, compared in
/// constant time with the hex `close-sig-hash`. Any malformed input yields `false`.
pub fn verify_signature(
    signature_key_hex: &str,
    timestamp: &str,
    body: &[u8],
    sig_hash_hex: &str,
) -> bool {
    let Ok(key) = hex::decode(signature_key_hex.trim()) else {
        return false;
    };
    let Ok(expected) = hex::decode(sig_hash_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Why a webhook timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The header is not a unix-seconds integer.
    #[error("webhook timestamp {0:?} is not a unix time in seconds")]
    Malformed(String),
    /// The timestamp is further from `now` than the tolerance (a replay or a skewed clock).
    #[error("webhook timestamp is {skew_secs} s away from now (tolerance {tolerance_secs} s)")]
    OutOfTolerance {
        /// Absolute distance from now, in seconds.
        skew_secs: u64,
        /// The accepted distance, in seconds.
        tolerance_secs: u64,
    },
}

/// Accepts `ts` (unix seconds) when it is within `tolerance` of `now`, in either direction.
pub fn check_timestamp(
    ts: &str,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), TimestampError> {
    let secs: i64 = ts
        .trim()
        .parse()
        .map_err(|_| TimestampError::Malformed(ts.chars().take(40).collect()))?;
    let skew = now.timestamp().abs_diff(secs);
    if skew > tolerance.as_secs() {
        return Err(TimestampError::OutOfTolerance {
            skew_secs: skew,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    Ok(())
}

/// Computes the lowercase hex signature Close would send; used by simulators and tests.
pub fn sign(signature_key_hex: &str, timestamp: &str, body: &[u8]) -> Option<String> {
    let key = hex::decode(signature_key_hex.trim()).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(body);
    Some(hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "b9260244ef33625f9b4b26a27db08758cdd39478b852c73f2d33ab042eb8abb4";
    const TS: &str = "1557751596";
    const BODY: &str = r#"{"event": {"id": "ev_4YUAT9G7PQNYEX0V7HpiZa", "date_created": "2019-01-01T13:33:00.842000", "data": {"object_type": "activity.note", "action": "created", "note": "test content"}}, "subscription_id": "whsub_mBTylJxRXaBOXcuQmgUdmL"}"#;
    const HASH: &str = "e6cf27a55de463dc46d8b5c16d2afe74d766e8f0c9892422c93573521cd377ed";

    #[test]
    fn documented_test_vector() {
        assert_eq!(sign(KEY, TS, BODY.as_bytes()).as_deref(), Some(HASH));
        assert!(verify_signature(KEY, TS, BODY.as_bytes(), HASH));
        assert!(verify_signature(
            KEY,
            TS,
            BODY.as_bytes(),
            &HASH.to_uppercase()
        ));
    }

    #[test]
    fn tampering_is_rejected() {
        assert!(!verify_signature(KEY, "1557751597", BODY.as_bytes(), HASH));
        assert!(!verify_signature(KEY, TS, b"{}", HASH));
        assert!(!verify_signature(KEY, TS, BODY.as_bytes(), &HASH[..62]));
        assert!(!verify_signature(KEY, TS, BODY.as_bytes(), "zz"));
        assert!(!verify_signature("not hex", TS, BODY.as_bytes(), HASH));
    }

    #[test]
    fn timestamp_tolerance() {
        let now = DateTime::from_timestamp(1_557_751_596, 0).expect("valid");
        let tol = Duration::from_secs(300);
        assert_eq!(check_timestamp("1557751596", now, tol), Ok(()));
        assert_eq!(check_timestamp("1557751896", now, tol), Ok(()));
        assert!(matches!(
            check_timestamp("1557751000", now, tol),
            Err(TimestampError::OutOfTolerance { skew_secs: 596, .. })
        ));
        assert!(matches!(
            check_timestamp("abc", now, tol),
            Err(TimestampError::Malformed(_))
        ));
    }
}
