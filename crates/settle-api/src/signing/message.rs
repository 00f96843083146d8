//! HTTP Message Signatures (RFC 9421) and `Content-Digest` (RFC 9530), as
//! pure functions over a request's parts: parse `Signature-Input` and
//! `Signature`, derive component values, build the signature base exactly as
//! RFC 9421 §2.5 says, and compute HMAC-SHA256. The request layer in
//! `signing` applies Settle's policy on top (which components, which
//! parameters, the clock window, nonces).

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sfv::{BareItem, Dictionary, FieldType, List, ListEntry, Parser};
use sha2::{Digest, Sha256, Sha512};

/// A request as signatures see it.
pub struct MessageView<'a> {
    pub method: &'a str,
    /// The path as received, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// One signature named in `Signature-Input`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureInput {
    pub label: String,
    /// Covered component identifiers, in order (`@method`, `content-digest`, …).
    pub components: Vec<String>,
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub nonce: Option<String>,
    pub keyid: Option<String>,
    pub alg: Option<String>,
    /// The value of the `@signature-params` line: the member re-serialized
    /// as RFC 8941 says (RFC 9421 §2.3).
    pub params_value: String,
}

/// Why a signature could not be used; the message is for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// The header at fault.
    pub header: &'static str,
    pub message: String,
}

fn malformed(header: &'static str, message: impl Into<String>) -> Malformed {
    Malformed { header, message: message.into() }
}

/// All lines of a header, joined as RFC 9110 §5.3 combines them.
pub fn combined(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for value in headers.get_all(name) {
        let text = value.to_str().ok()?.trim();
        match &mut out {
            None => out = Some(text.to_owned()),
            Some(o) => {
                o.push_str(", ");
                o.push_str(text);
            }
        }
    }
    out
}

/// Parses `Signature-Input` into its signatures, in order.
pub fn parse_signature_input(value: &str) -> Result<Vec<SignatureInput>, Malformed> {
    const H: &str = "Signature-Input";
    let dict: Dictionary = Parser::new(value).parse().map_err(|e| malformed(H, format!("Signature-Input is not an RFC 8941 dictionary: {e}")))?;
    let mut out = Vec::with_capacity(dict.len());
    for (label, entry) in &dict {
        let ListEntry::InnerList(list) = entry else {
            return Err(malformed(H, format!("Signature-Input member {} must be an inner list of components", label.as_str())));
        };
        let mut components = Vec::with_capacity(list.items.len());
        for item in &list.items {
            let Some(name) = item.bare_item.as_string() else {
                return Err(malformed(H, "every covered component must be a quoted string, such as \"@method\""));
            };
            if !item.params.is_empty() {
                return Err(malformed(H, format!("component parameters (as on \"{}\") are not supported", name.as_str())));
            }
            let name = name.as_str().to_owned();
            if components.contains(&name) {
                return Err(malformed(H, format!("component \"{name}\" is covered twice")));
            }
            components.push(name);
        }
        let mut input = SignatureInput {
            label: label.as_str().to_owned(),
            components,
            created: None,
            expires: None,
            nonce: None,
            keyid: None,
            alg: None,
            params_value: String::new(),
        };
        for (key, value) in &list.params {
            let integer = || value.as_integer().map(i64::from).ok_or_else(|| malformed(H, format!("parameter {} must be an integer", key.as_str())));
            let string =
                || value.as_string().map(|s| s.as_str().to_owned()).ok_or_else(|| malformed(H, format!("parameter {} must be a quoted string", key.as_str())));
            match key.as_str() {
                "created" => input.created = Some(integer()?),
                "expires" => input.expires = Some(integer()?),
                "nonce" => input.nonce = Some(string()?),
                "keyid" => input.keyid = Some(string()?),
                "alg" => input.alg = Some(string()?),
                // `tag` and parameters from later specs are covered by the
                // signature (they are in @signature-params) and otherwise ignored.
                _ => {}
            }
        }
        let single: List = vec![ListEntry::InnerList(list.clone())];
        input.params_value = single.serialize().ok_or_else(|| malformed(H, "Signature-Input member cannot be serialized"))?;
        out.push(input);
    }
    Ok(out)
}

/// The signature bytes for `label` in the `Signature` header.
pub fn signature_bytes(value: &str, label: &str) -> Result<Vec<u8>, Malformed> {
    const H: &str = "Signature";
    let dict: Dictionary = Parser::new(value).parse().map_err(|e| malformed(H, format!("Signature is not an RFC 8941 dictionary: {e}")))?;
    let entry = dict.iter().find(|(k, _)| k.as_str() == label).map(|(_, v)| v).ok_or_else(|| malformed(H, format!("Signature has no member {label}")))?;
    match entry {
        ListEntry::Item(item) => match &item.bare_item {
            BareItem::ByteSequence(bytes) => Ok(bytes.clone()),
            _ => Err(malformed(H, format!("Signature member {label} must be a byte sequence (:base64:)"))),
        },
        ListEntry::InnerList(_) => Err(malformed(H, format!("Signature member {label} must be a byte sequence (:base64:)"))),
    }
}

/// The value of one covered component (RFC 9421 §2.1 and §2.2).
pub fn component_value(name: &str, view: &MessageView<'_>) -> Result<String, Malformed> {
    const H: &str = "Signature-Input";
    match name {
        "@method" => Ok(view.method.to_owned()),
        "@path" => Ok(if view.path.is_empty() { String::from("/") } else { view.path.to_owned() }),
        "@query" => Ok(format!("?{}", view.query.unwrap_or(""))),
        "@authority" => {
            combined(view.headers, "host").map(|h| h.to_ascii_lowercase()).ok_or_else(|| malformed(H, "\"@authority\" is covered but the request has no Host"))
        }
        derived if derived.starts_with('@') => {
            Err(malformed(H, format!("derived component \"{derived}\" is not supported; use @method, @path, @query or @authority")))
        }
        field => {
            if field.is_empty() || !field.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')) {
                return Err(malformed(H, format!("component \"{field}\" is not a lower-case header field name")));
            }
            combined(view.headers, field).ok_or_else(|| malformed(H, format!("component \"{field}\" is covered but the request has no {field} header")))
        }
    }
}

/// The signature base (RFC 9421 §2.5): one line per covered component, then
/// the `@signature-params` line, joined with `\n`, no trailing newline.
pub fn signature_base(input: &SignatureInput, view: &MessageView<'_>) -> Result<String, Malformed> {
    let mut base = String::new();
    for name in &input.components {
        let value = component_value(name, view)?;
        base.push('"');
        base.push_str(name);
        base.push_str("\": ");
        base.push_str(&value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&input.params_value);
    Ok(base)
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Compares `signature` with HMAC-SHA256(`key`, `message`) in constant time.
pub fn verify_hmac_sha256(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            mac.verify_slice(signature).is_ok()
        }
        Err(_) => false,
    }
}

/// `sha-256=:<base64>:` of `body`: the `Content-Digest` a client sends.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

/// Checks `Content-Digest` against the exact body bytes: `sha-256` must be
/// present and match; a `sha-512` member, if sent, must match too; other
/// algorithms are ignored (RFC 9530 §2).
pub fn check_content_digest(value: &str, body: &[u8]) -> Result<(), Malformed> {
    const H: &str = "Content-Digest";
    let dict: Dictionary = Parser::new(value).parse().map_err(|e| malformed(H, format!("Content-Digest is not an RFC 8941 dictionary: {e}")))?;
    let bytes_of = |name: &str| -> Result<Option<Vec<u8>>, Malformed> {
        match dict.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v) {
            None => Ok(None),
            Some(ListEntry::Item(item)) => match &item.bare_item {
                BareItem::ByteSequence(b) => Ok(Some(b.clone())),
                _ => Err(malformed(H, format!("Content-Digest member {name} must be a byte sequence (:base64:)"))),
            },
            Some(ListEntry::InnerList(_)) => Err(malformed(H, format!("Content-Digest member {name} must be a byte sequence (:base64:)"))),
        }
    };
    let sha256 = bytes_of("sha-256")?.ok_or_else(|| malformed(H, "Content-Digest must carry a sha-256 member"))?;
    if sha256.as_slice() != Sha256::digest(body).as_slice() {
        return Err(malformed(H, "Content-Digest sha-256 does not match the request body"));
    }
    if let Some(sha512) = bytes_of("sha-512")?
        && sha512.as_slice() != Sha512::digest(body).as_slice()
    {
        return Err(malformed(H, "Content-Digest sha-512 does not match the request body"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// The shared secret of RFC 9421 Appendix B.1.5 ("test-shared-secret").
    const RFC_SHARED_SECRET: &str = "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";

    /// The test request of RFC 9421 Appendix B.2 (its headers).
    fn rfc_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("example.com"));
        h.insert("date", HeaderValue::from_static("Tue, 20 Apr 2021 02:07:55 GMT"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert(
            "content-digest",
            HeaderValue::from_static("sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"),
        );
        h.insert("content-length", HeaderValue::from_static("18"));
        h
    }

    #[test]
    fn rfc_9421_b_2_5_hmac_sha256_example_verifies() {
        let headers = rfc_headers();
        let view = MessageView { method: "POST", path: "/foo", query: Some("param=Value&Pet=dog"), headers: &headers };
        let inputs = parse_signature_input(r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#);
        let inputs = inputs.unwrap_or_default();
        assert_eq!(inputs.len(), 1);
        let input = &inputs[0];
        assert_eq!(input.label, "sig-b25");
        assert_eq!(input.created, Some(1_618_884_473));
        assert_eq!(input.keyid.as_deref(), Some("test-shared-secret"));
        let base = signature_base(input, &view);
        assert_eq!(
            base.as_deref(),
            Ok(concat!(
                "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
                "\"@authority\": example.com\n",
                "\"content-type\": application/json\n",
                "\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\"",
            ))
        );
        let key = STANDARD.decode(RFC_SHARED_SECRET).unwrap_or_default();
        let signature = signature_bytes("sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:", "sig-b25").unwrap_or_default();
        let base = base.unwrap_or_default();
        assert_eq!(STANDARD.encode(hmac_sha256(&key, base.as_bytes())), "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=");
        assert!(verify_hmac_sha256(&key, base.as_bytes(), &signature));
        assert!(!verify_hmac_sha256(&key, format!("{base} ").as_bytes(), &signature));
    }

    #[test]
    fn rfc_content_digests_of_the_test_body_match() {
        let body = br#"{"hello": "world"}"#;
        // RFC 9421 Appendix B.2's sha-512 and RFC 9530's sha-256 of this body.
        let headers = rfc_headers();
        let sha512 = combined(&headers, "content-digest").unwrap_or_default();
        let both = format!("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, {sha512}");
        assert_eq!(content_digest(body), "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:");
        assert_eq!(check_content_digest(&both, body), Ok(()));
        assert_eq!(check_content_digest(&sha512, body).map_err(|e| e.message), Err(String::from("Content-Digest must carry a sha-256 member")));
        assert!(check_content_digest(&both, br#"{"hello": "world!"}"#).is_err());
    }

    #[test]
    fn signature_params_are_reserialized_canonically() {
        let inputs = parse_signature_input(r#"sig1=( "@method"   "@path" );keyid="k";created=1"#).unwrap_or_default();
        assert_eq!(inputs.first().map(|i| i.params_value.as_str()), Some(r#"("@method" "@path");keyid="k";created=1"#));
    }

    #[test]
    fn malformed_inputs_are_refused() {
        for bad in [r#"sig1="@method""#, r#"sig1=(@method)"#, r#"sig1=("@method";req)"#, r#"sig1=("@method" "@method")"#, r#"sig1=("a");created="1""#, "(("] {
            assert!(parse_signature_input(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
