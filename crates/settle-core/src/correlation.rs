//! Correlation ids: a client's own name for a piece of work (an order, a
//! payout run) that it sends as `X-Correlation-Id`, or one the server makes
//! up when it sends none. It follows the request into every log line and is
//! stored on every object the request creates, so one id finds them all.

use std::fmt;

/// Longest correlation id accepted, in characters (all ASCII).
pub const MAX_CORRELATION_ID_CHARS: usize = 128;

/// Prefix of the ids the server generates.
pub const GENERATED_PREFIX: &str = "corr_";

/// 1–128 characters of `[A-Za-z0-9._:-]`: safe in headers, logs, URLs and
/// JSON without escaping.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(String);

impl CorrelationId {
    /// Accepts only a well-formed id.
    pub fn parse(text: &str) -> Option<CorrelationId> {
        let valid = !text.is_empty()
            && text.len() <= MAX_CORRELATION_ID_CHARS
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        valid.then(|| CorrelationId(text.to_owned()))
    }

    /// A fresh id, `corr_` and a ULID: unique, and sortable by time like other ids.
    pub fn generate() -> CorrelationId {
        CorrelationId(format!("{GENERATED_PREFIX}{}", ulid::Ulid::new().to_string().to_ascii_lowercase()))
    }

    /// Wraps a value read back from our own database.
    pub fn from_trusted(text: String) -> CorrelationId {
        CorrelationId(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_are_one_to_128_safe_characters() {
        for good in ["a", "order-1042", "batch:2026-01-05.run_7", &"x".repeat(128)] {
            assert_eq!(CorrelationId::parse(good).map(|c| c.0), Some(good.to_owned()));
        }
        for bad in ["", " ", "a b", "a/b", "é", "a\n", &"x".repeat(129)] {
            assert!(CorrelationId::parse(bad).is_none(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let (a, b) = (CorrelationId::generate(), CorrelationId::generate());
        assert!(a.as_str().starts_with(GENERATED_PREFIX));
        assert!(CorrelationId::parse(a.as_str()).is_some());
        assert_ne!(a, b);
    }
}
