//! `metadata`: a small map of strings an integrator hangs on an object.

use crate::limits::{MAX_METADATA_KEY_CHARS, MAX_METADATA_KEYS, MAX_METADATA_VALUE_CHARS};
use std::collections::BTreeMap;

/// Ordered so that it renders and hashes the same way every time.
pub type Metadata = BTreeMap<String, String>;

/// Why a metadata map was refused; the message names the bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata may hold at most {MAX_METADATA_KEYS} keys")]
    TooManyKeys,
    #[error("metadata keys must be 1 to {MAX_METADATA_KEY_CHARS} characters")]
    BadKey,
    #[error("metadata values may be at most {MAX_METADATA_VALUE_CHARS} characters")]
    ValueTooLong,
}

pub fn validate(metadata: &Metadata) -> Result<(), MetadataError> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(MetadataError::TooManyKeys);
    }
    for (key, value) in metadata {
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > MAX_METADATA_KEY_CHARS {
            return Err(MetadataError::BadKey);
        }
        if value.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(MetadataError::ValueTooLong);
        }
    }
    Ok(())
}
