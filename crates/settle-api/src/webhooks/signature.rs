//! Standard Webhooks signatures (<https://www.standardwebhooks.com>):
//! `webhook-signature: v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`,
//! keyed with the base64-decoded part of a `whsec_…` secret. During a
//! rotation's overlap a delivery carries one signature per secret,
//! space-separated, so a receiver holding either verifies it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::{RngCore, TryRngCore};
use sha2::Sha256;

/// Prefix of a webhook signing secret, as receivers' libraries expect it.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret.
const SECRET_BYTES: usize = 32;
/// Receivers refuse timestamps further than this from their clock (the spec's
/// recommended tolerance); [`verify`] applies it too.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// A webhook secret's key bytes. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// 32 random bytes from the operating system's generator.
    pub fn generate() -> WebhookSecret {
        let mut bytes = vec![0u8; SECRET_BYTES];
        if rand::rngs::OsRng.try_fill_bytes(&mut bytes).is_err() {
            // ThreadRng is a CSPRNG seeded from the OS too.
            rand::rng().fill_bytes(&mut bytes);
        }
        WebhookSecret(bytes)
    }

    /// `whsec_<base64>` (the prefix is optional, as in the reference libraries).
    pub fn parse(text: &str) -> Option<WebhookSecret> {
        let body = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        STANDARD.decode(body).ok().filter(|b| !b.is_empty()).map(WebhookSecret)
    }

    /// The secret as shown once to its owner: `whsec_` and base64.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> WebhookSecret {
        WebhookSecret(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `v1,<base64 signature>` of one delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length; this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return Vec::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

/// The `webhook-signature` header for `secrets` (the current one first).
pub fn header(secrets: &[&WebhookSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// Why a delivery does not verify.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the timestamp is more than {TOLERANCE_SECS} seconds away from now")]
    Stale,
    #[error("no signature in the header matches")]
    NoMatch,
}

/// Checks a delivery as a receiver would (`settle listen` forwards only what
/// verifies, and the tests use it): a fresh timestamp and one matching
/// `v1` signature among the space-separated ones, compared in constant time.
pub fn verify(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8], header: &str, now_secs: i64) -> Result<(), VerifyError> {
    if (now_secs - timestamp).abs() > TOLERANCE_SECS {
        return Err(VerifyError::Stale);
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.bytes()) else {
        return Err(VerifyError::NoMatch);
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    for candidate in header.split(' ') {
        let Some(encoded) = candidate.strip_prefix("v1,") else { continue };
        let Ok(bytes) = STANDARD.decode(encoded) else { continue };
        if mac.clone().verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code: a panic is the failure report")]
mod tests {
    use super::*;

    /// The specification's vectors (a copy of `../shared/vectors/standard-webhooks.json`).
    #[test]
    fn the_specifications_signature_vectors_pass() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/standard-webhooks.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let vectors = file["vectors"].as_array().unwrap();
        assert!(!vectors.is_empty());
        for v in vectors {
            let secret = WebhookSecret::parse(v["secret"].as_str().unwrap()).unwrap();
            let (id, timestamp, payload) = (v["id"].as_str().unwrap(), v["timestamp"].as_i64().unwrap(), v["payload"].as_str().unwrap());
            let expected = v["signature"].as_str().unwrap();
            assert_eq!(secret.sign(id, timestamp, payload.as_bytes()), expected, "vector {id}");
            assert_eq!(verify(&secret, id, timestamp, payload.as_bytes(), expected, timestamp + 10), Ok(()));
            let tampered = format!("{payload} ");
            assert_eq!(verify(&secret, id, timestamp, tampered.as_bytes(), expected, timestamp), Err(VerifyError::NoMatch));
            assert_eq!(verify(&secret, id, timestamp, payload.as_bytes(), expected, timestamp + TOLERANCE_SECS + 1), Err(VerifyError::Stale));
        }
    }

    #[test]
    fn a_rotation_header_verifies_with_either_secret() {
        let (old, new) = (WebhookSecret::generate(), WebhookSecret::generate());
        let header = header(&[&new, &old], "evt_1", 1_700_000_000, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        for s in [&old, &new] {
            assert_eq!(verify(s, "evt_1", 1_700_000_000, b"{}", &header, 1_700_000_000), Ok(()));
        }
        assert_eq!(verify(&WebhookSecret::generate(), "evt_1", 1_700_000_000, b"{}", &header, 1_700_000_000), Err(VerifyError::NoMatch));
    }

    #[test]
    fn secrets_are_32_random_bytes_shown_as_whsec_base64_and_never_in_debug() {
        let s = WebhookSecret::generate();
        assert_eq!(s.bytes().len(), 32);
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(&s.expose()), Some(s.clone()));
        assert!(!format!("{s:?}").contains(&s.expose()[6..]));
        assert_ne!(WebhookSecret::generate(), s);
    }
}
