//! Encryption at rest of connector secrets (the Close API key, webhook signature keys).
//!
//! AES-256-GCM with a random 96-bit nonce. The stored form is `version || nonce || ciphertext`
//! where `version` is 1. During a key rotation the previous key is still tried for decryption
//! (`ENCRYPTION_KEY_PREVIOUS`); `closeio-ctl rotate-key` re-encrypts every stored value.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;

/// Encryption failures; they never contain the plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The stored bytes are not in the expected format.
    #[error("stored secret is malformed")]
    Malformed,
    /// No configured key decrypts the value (wrong `ENCRYPTION_KEY`?).
    #[error("stored secret cannot be decrypted with the configured ENCRYPTION_KEY (or ENCRYPTION_KEY_PREVIOUS)")]
    WrongKey,
}

/// Encrypts and decrypts secrets with the configured keys.
#[derive(Clone)]
pub struct SecretBox {
    current: [u8; 32],
    previous: Option<[u8; 32]>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

impl SecretBox {
    /// A box with the current key and, during a rotation, the previous one.
    pub fn new(current: [u8; 32], previous: Option<[u8; 32]>) -> Self {
        SecretBox { current, previous }
    }

    /// Encrypts `plain` with the current key.
    pub fn seal(&self, plain: &str) -> Vec<u8> {
        let cipher = Aes256Gcm::new(&self.current.into());
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts a value sealed with the current or the previous key.
    pub fn open(&self, sealed: &[u8]) -> Result<String, CryptoError> {
        if sealed.len() < 1 + 12 + 16 || sealed[0] != VERSION {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ct) = sealed[1..].split_at(12);
        for key in std::iter::once(&self.current).chain(self.previous.iter()) {
            let cipher = Aes256Gcm::new(key.into());
            if let Ok(plain) = cipher.decrypt(Nonce::from_slice(nonce), ct) {
                return String::from_utf8(plain).map_err(|_| CryptoError::Malformed);
            }
        }
        Err(CryptoError::WrongKey)
    }

    /// Whether `sealed` was written with the current key (false: it needs re-encryption).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        if sealed.len() < 1 + 12 + 16 || sealed[0] != VERSION {
            return false;
        }
        let (nonce, ct) = sealed[1..].split_at(12);
        Aes256Gcm::new(&self.current.into())
            .decrypt(Nonce::from_slice(nonce), ct)
            .is_ok()
    }
}

/// Compares two secrets in constant time (their lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A short, non-reversible fingerprint of a secret, safe to log and compare.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rotation() {
        let old = SecretBox::new([1; 32], None);
        let sealed = old.seal("api_secret_key");
        assert_eq!(old.open(&sealed).unwrap(), "api_secret_key");
        assert!(!String::from_utf8_lossy(&sealed).contains("api_secret_key"));

        let rotated = SecretBox::new([2; 32], Some([1; 32]));
        assert_eq!(rotated.open(&sealed).unwrap(), "api_secret_key");
        assert!(!rotated.is_current(&sealed));
        assert!(rotated.is_current(&rotated.seal("x")));

        let other = SecretBox::new([3; 32], None);
        assert!(matches!(other.open(&sealed), Err(CryptoError::WrongKey)));
        assert!(matches!(other.open(b"short"), Err(CryptoError::Malformed)));
    }

    #[test]
    fn fingerprints_differ() {
        assert_ne!(fingerprint("a"), fingerprint("b"));
        assert_eq!(fingerprint("a").len(), 16);
    }
}
