//! A JSON tree that keeps what a version transformation must not change:
//! the order of an object's keys and the exact text of every number and
//! string (scalars stay raw). Parsing refuses duplicate keys, like the
//! strict body parser the handlers use.

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::fmt;

#[derive(Debug)]
pub enum Json {
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    /// A string, number, boolean or null, as written.
    Scalar(Box<RawValue>),
}

/// An object's members in order, values still raw; duplicate keys are an error.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Members, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut seen = HashSet::new();
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    members.push((key, map.next_value::<Box<RawValue>>()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

impl Json {
    /// Parses one JSON value (trailing data and duplicate keys are errors).
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_str(text)?;
        Json::from_raw(raw)
    }

    fn from_raw(raw: Box<RawValue>) -> Result<Json, serde_json::Error> {
        match raw.get().as_bytes().first() {
            Some(b'{') => {
                let Members(members) = serde_json::from_str(raw.get())?;
                Ok(Json::Object(members.into_iter().map(|(k, v)| Ok((k, Json::from_raw(v)?))).collect::<Result<_, serde_json::Error>>()?))
            }
            Some(b'[') => {
                let items: Vec<Box<RawValue>> = serde_json::from_str(raw.get())?;
                Ok(Json::Array(items.into_iter().map(Json::from_raw).collect::<Result<_, _>>()?))
            }
            _ => Ok(Json::Scalar(raw)),
        }
    }

    /// A string scalar holding `text`.
    pub fn string(text: &str) -> Result<Json, serde_json::Error> {
        Ok(Json::Scalar(RawValue::from_string(serde_json::to_string(text)?)?))
    }

    /// Compact JSON text.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::new();
        self.write(&mut out)?;
        Ok(out)
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Json::Scalar(raw) => out.extend_from_slice(raw.get().as_bytes()),
            Json::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out)?;
                }
                out.push(b']');
            }
            Json::Object(members) => {
                out.push(b'{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key)?;
                    out.push(b':');
                    value.write(out)?;
                }
                out.push(b'}');
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Object(members) => members.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Renames member `from` to `to` in place (same position); `true` when it existed.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        match self {
            Json::Object(members) => match members.iter_mut().find(|(k, _)| k == from) {
                Some((key, _)) => {
                    *key = to.to_owned();
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// The value of a string scalar.
    pub fn as_string(&self) -> Option<String> {
        match self {
            Json::Scalar(raw) if raw.get().starts_with('"') => serde_json::from_str(raw.get()).ok(),
            _ => None,
        }
    }

    pub fn items_mut(&mut self) -> Option<&mut Vec<Json>> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Calls `f` on this node and every node below it, parents first.
    pub fn walk_mut(&mut self, f: &mut dyn FnMut(&mut Json)) {
        f(self);
        match self {
            Json::Object(members) => members.iter_mut().for_each(|(_, v)| v.walk_mut(f)),
            Json::Array(items) => items.iter_mut().for_each(|v| v.walk_mut(f)),
            Json::Scalar(_) => {}
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code: a panic is the failure report")]
mod tests {
    use super::Json;

    #[test]
    fn round_trips_order_and_number_text_and_refuses_duplicates() {
        let text = r#"{"z":1,"a":[1.0,1e3,123456789012345678901234567890,"x\u00e9"],"m":{"k":null,"b":true}}"#;
        let json = Json::parse(text).unwrap();
        assert_eq!(String::from_utf8(json.to_bytes().unwrap()).unwrap(), text);
        assert!(Json::parse(r#"{"a":1,"b":{"c":1,"c":2}}"#).is_err());
        assert!(Json::parse(r#"{"a":1} x"#).is_err());
    }

    #[test]
    fn renames_in_place() {
        let mut json = Json::parse(r#"{"a":1,"version":2,"c":3}"#).unwrap();
        assert!(json.rename("version", "lock_version"));
        assert!(!json.rename("missing", "x"));
        assert_eq!(String::from_utf8(json.to_bytes().unwrap()).unwrap(), r#"{"a":1,"lock_version":2,"c":3}"#);
    }
}
