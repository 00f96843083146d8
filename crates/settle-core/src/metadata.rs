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

/// Reads an optional `metadata` map (absent or `null`: `None`), refusing a
/// key given twice: serde's maps keep the last one silently, while the rest
/// of a request body refuses duplicate fields. For request fields, with
/// `#[serde(default, deserialize_with = "…")]`.
pub fn deserialize_optional<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Metadata>, D::Error> {
    use serde::de::{Error, MapAccess, Visitor};
    use std::fmt;

    struct Unique;
    impl<'de> Visitor<'de> for Unique {
        type Value = Metadata;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings to strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Metadata, A::Error> {
            let mut map = Metadata::new();
            while let Some((key, value)) = access.next_entry::<String, String>()? {
                if map.contains_key(&key) {
                    return Err(A::Error::custom(format!("duplicate metadata key `{key}`")));
                }
                map.insert(key, value);
            }
            Ok(map)
        }
    }

    struct Optional;
    impl<'de> Visitor<'de> for Optional {
        type Value = Option<Metadata>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings to strings, or null")
        }
        fn visit_none<E: Error>(self) -> Result<Option<Metadata>, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Option<Metadata>, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Option<Metadata>, D::Error> {
            deserializer.deserialize_map(Unique).map(Some)
        }
    }

    deserializer.deserialize_option(Optional)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Body {
        #[serde(default, deserialize_with = "deserialize_optional")]
        metadata: Option<Metadata>,
    }

    fn parse(text: &str) -> Result<Option<Metadata>, String> {
        serde_json::from_str::<Body>(text).map(|b| b.metadata).map_err(|e| e.to_string())
    }

    #[test]
    fn a_key_given_twice_is_refused_and_absent_or_null_is_none() {
        assert_eq!(parse(r#"{"metadata":{"a":"1","b":"2"}}"#), Ok(Some(Metadata::from([("a".into(), "1".into()), ("b".into(), "2".into())]))));
        let refused = parse(r#"{"metadata":{"a":"1","a":"2"}}"#).expect_err("a key given twice");
        assert!(refused.contains("duplicate metadata key `a`"), "{refused}");
        assert_eq!(parse("{}"), Ok(None));
        assert_eq!(parse(r#"{"metadata":null}"#), Ok(None));
        assert!(parse(r#"{"metadata":{"a":1}}"#).is_err());
        assert!(parse(r#"{"metadata":["a"]}"#).is_err());
    }
}
