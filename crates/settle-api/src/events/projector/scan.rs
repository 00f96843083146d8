//! The ledger log's records read in the one form this engine writes them
//! (`settle-store`'s `LogWriter`: no whitespace, fields in their declared
//! order, strings that need no escape), without serde.
//!
//! The projector reads every record once, and a batch's record holds a
//! thousand transactions with their legs: through serde_json, which skips
//! the legs a byte at a time, reading was about as costly as rendering and
//! storing the events (docs/benchmarks.md). Anything this reader does not
//! expect — another `op`, another order, an escape, a float, whitespace —
//! makes it answer `None`, and the projector reads the record with serde as
//! before, so what it accepts it reads exactly as serde would (a proptest
//! holds the two to each other).

use super::Fragment;
use settle_core::json_text;

/// The record's fragments, or `None` when it is not in the engine's form.
pub(super) fn fragments(content: &[u8]) -> Option<Vec<Fragment>> {
    // Checked once, whole: every string below starts and ends at an ASCII quote.
    let text = std::str::from_utf8(content).ok()?;
    let mut s = Scanner { text, bytes: content, at: 0 };
    s.expect(b"[")?;
    let mut out = Vec::new();
    loop {
        out.push(s.fragment()?);
        match s.next()? {
            b',' => {}
            b']' => break,
            _ => return None,
        }
    }
    (s.at == content.len()).then_some(out)
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn fragment(&mut self) -> Option<Fragment> {
        self.expect(br#"{"op":"#)?;
        let fragment = match self.string()? {
            "transaction_created" => {
                let id = self.member(br#","id":"#)?;
                self.expect(br#","tenant":"#)?;
                let tenant = self.integer()?;
                let status = self.member(br#","status":"#)?;
                self.expect(br#","entries":"#)?;
                self.entries()?;
                Fragment::TransactionCreated { id: id.to_owned(), tenant, status: status.to_owned() }
            }
            "transaction_changed" => {
                let id = self.member(br#","id":"#)?;
                let status = self.member(br#","status":"#)?;
                self.expect(br#","reversed_by":"#)?;
                let reversed_by = self.nullable_string()?;
                self.expect(br#","entries":"#)?;
                self.entries()?;
                Fragment::TransactionChanged { id: id.to_owned(), status: status.to_owned(), reversed_by: reversed_by.map(str::to_owned) }
            }
            "context" => {
                self.expect(br#","request_id":"#)?;
                let request_id = self.nullable_string()?;
                self.expect(br#","idempotency_key":"#)?;
                let idempotency_key = self.nullable_string()?;
                self.expect(br#","correlation_id":"#)?;
                let correlation_id = self.nullable_string()?;
                // Written when known; events do not name them.
                if self.accept(br#","actor":"#) {
                    self.string()?;
                }
                if self.accept(br#","client_ip":"#) {
                    self.string()?;
                }
                Fragment::Context {
                    request_id: request_id.map(str::to_owned),
                    idempotency_key: idempotency_key.map(str::to_owned),
                    correlation_id: correlation_id.map(str::to_owned),
                }
            }
            _ => return None,
        };
        self.expect(b"}")?;
        Some(fragment)
    }

    /// `name` (with its leading comma and colon) and a string.
    fn member(&mut self, name: &[u8]) -> Option<&'a str> {
        self.expect(name)?;
        self.string()
    }

    /// An array of legs, each an array of strings and integers, skipped.
    fn entries(&mut self) -> Option<()> {
        self.expect(b"[")?;
        if self.accept(b"]") {
            return Some(());
        }
        loop {
            self.expect(b"[")?;
            loop {
                if self.bytes.get(self.at) == Some(&b'"') {
                    self.string()?;
                } else {
                    self.integer()?;
                }
                match self.next()? {
                    b',' => {}
                    b']' => break,
                    _ => return None,
                }
            }
            match self.next()? {
                b',' => {}
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// A string with nothing escaped (and no control character, which JSON
    /// forbids unescaped): its text.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b"\"")?;
        let start = self.at;
        let end = start + json_text::plain_len(self.bytes.get(start..)?);
        if self.bytes.get(end) != Some(&b'"') {
            return None;
        }
        self.at = end + 1;
        self.text.get(start..end)
    }

    fn nullable_string(&mut self) -> Option<Option<&'a str>> {
        if self.accept(b"null") { Some(None) } else { self.string().map(Some) }
    }

    /// An integer as JSON writes it (`-?(0|[1-9][0-9]*)`) within `i64`,
    /// but not `-0`, which serde_json reads as a float.
    fn integer(&mut self) -> Option<i64> {
        let rest = self.bytes.get(self.at..)?;
        let sign = usize::from(rest.first() == Some(&b'-'));
        let digits = rest.get(sign..)?.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || (rest.get(sign) == Some(&b'0') && (digits > 1 || sign == 1)) {
            return None;
        }
        let value = self.text.get(self.at..self.at + sign + digits)?.parse().ok()?;
        self.at += sign + digits;
        Some(value)
    }

    fn next(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn accept(&mut self, literal: &[u8]) -> bool {
        self.expect(literal).is_some()
    }

    fn expect(&mut self, literal: &[u8]) -> Option<()> {
        let end = self.at.checked_add(literal.len())?;
        if self.bytes.get(self.at..end)? != literal {
            return None;
        }
        self.at = end;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::read_with_serde;
    use super::*;
    use proptest::prelude::*;
    use settle_core::clock::Timestamp;
    use settle_core::json_text::is_plain;
    use settle_store::events::LoggedChange;

    #[derive(Clone, Debug)]
    enum Value {
        Text(String),
        Integer(i64),
    }

    /// A fragment as the engine (or something else) might write it.
    #[derive(Clone, Debug)]
    enum Spec {
        Context { request: Option<String>, key: Option<String>, correlation: Option<String>, actor: Option<String>, ip: Option<String> },
        Created { id: String, tenant: i64, status: String, legs: Vec<Vec<Value>> },
        Changed { id: String, status: String, reversed_by: Option<String>, legs: Vec<Vec<Value>> },
        AccountCreated { id: String, tenant: i64 },
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![4 => "[a-z0-9_]{0,12}", 1 => "\\PC{0,6}", 1 => "[\\x00-\\x7f]{0,6}"]
    }

    fn legs() -> impl Strategy<Value = Vec<Vec<Value>>> {
        let value = prop_oneof![text().prop_map(Value::Text), any::<i64>().prop_map(Value::Integer)];
        prop::collection::vec(prop::collection::vec(value, 1..7), 0..3)
    }

    fn spec() -> impl Strategy<Value = Spec> {
        prop_oneof![
            (prop::option::of(text()), prop::option::of(text()), prop::option::of(text()), prop::option::of(text()), prop::option::of(text()))
                .prop_map(|(request, key, correlation, actor, ip)| Spec::Context { request, key, correlation, actor, ip }),
            (text(), any::<i64>(), text(), legs()).prop_map(|(id, tenant, status, legs)| Spec::Created { id, tenant, status, legs }),
            (text(), text(), prop::option::of(text()), legs()).prop_map(|(id, status, reversed_by, legs)| Spec::Changed { id, status, reversed_by, legs }),
            (text(), any::<i64>()).prop_map(|(id, tenant)| Spec::AccountCreated { id, tenant }),
        ]
    }

    fn json(text: &str) -> String {
        serde_json::to_string(text).unwrap_or_default()
    }

    fn nullable(text: &Option<String>) -> String {
        text.as_deref().map_or_else(|| String::from("null"), json)
    }

    fn legs_json(legs: &[Vec<Value>]) -> String {
        let leg = |values: &Vec<Value>| {
            let values: Vec<String> = values
                .iter()
                .map(|v| match v {
                    Value::Text(t) => json(t),
                    Value::Integer(i) => i.to_string(),
                })
                .collect();
            format!("[{}]", values.join(","))
        };
        format!("[{}]", legs.iter().map(leg).collect::<Vec<_>>().join(","))
    }

    /// The fragments in the engine's form (serde_json's, fields in order).
    fn record(specs: &[Spec]) -> String {
        let fragment = |spec: &Spec| match spec {
            Spec::Context { request, key, correlation, actor, ip } => {
                let mut out = format!(
                    r#"{{"op":"context","request_id":{},"idempotency_key":{},"correlation_id":{}"#,
                    nullable(request),
                    nullable(key),
                    nullable(correlation)
                );
                if let Some(actor) = actor {
                    out.push_str(&format!(r#","actor":{}"#, json(actor)));
                }
                if let Some(ip) = ip {
                    out.push_str(&format!(r#","client_ip":{}"#, json(ip)));
                }
                out + "}"
            }
            Spec::Created { id, tenant, status, legs } => {
                format!(r#"{{"op":"transaction_created","id":{},"tenant":{tenant},"status":{},"entries":{}}}"#, json(id), json(status), legs_json(legs))
            }
            Spec::Changed { id, status, reversed_by, legs } => format!(
                r#"{{"op":"transaction_changed","id":{},"status":{},"reversed_by":{},"entries":{}}}"#,
                json(id),
                json(status),
                nullable(reversed_by),
                legs_json(legs)
            ),
            Spec::AccountCreated { id, tenant } => format!(
                r#"{{"op":"account_created","id":{},"tenant":{tenant},"currency":"USD","normal_balance":"debit","min_available_balance":null}}"#,
                json(id)
            ),
        };
        format!("[{}]", specs.iter().map(fragment).collect::<Vec<_>>().join(","))
    }

    /// Whether the scanner must take `spec` itself (nothing escaped, an `op` it knows).
    fn plain(spec: &Spec) -> bool {
        let texts = |legs: &[Vec<Value>]| legs.iter().flatten().all(|v| matches!(v, Value::Text(t) if is_plain(t)) || matches!(v, Value::Integer(_)));
        match spec {
            Spec::Context { request, key, correlation, actor, ip } => [request, key, correlation, actor, ip].iter().all(|t| t.as_deref().is_none_or(is_plain)),
            Spec::Created { id, status, legs, .. } => is_plain(id) && is_plain(status) && texts(legs),
            Spec::Changed { id, status, reversed_by, legs } => is_plain(id) && is_plain(status) && reversed_by.as_deref().is_none_or(is_plain) && texts(legs),
            Spec::AccountCreated { .. } => false,
        }
    }

    fn serde_reads(content: &str) -> Vec<Fragment> {
        read_with_serde(&LoggedChange { seq: 1, content: content.as_bytes().to_vec(), created_at: Timestamp::from_micros(0) })
    }

    proptest! {
        #[test]
        fn what_the_scanner_reads_it_reads_as_serde_does(specs in prop::collection::vec(spec(), 1..5)) {
            let content = record(&specs);
            let scanned = fragments(content.as_bytes());
            if specs.iter().all(plain) {
                prop_assert!(scanned.is_some(), "the engine's own form must not need serde: {}", content);
            }
            if let Some(scanned) = scanned {
                prop_assert_eq!(scanned, serde_reads(&content));
            }
        }

        #[test]
        fn damaged_records_are_left_to_serde(specs in prop::collection::vec(spec(), 1..4), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let content = record(&specs).into_bytes();
            let at = cut.index(content.len());
            let mut damaged = content.clone();
            damaged[at] = byte;
            for candidate in [&content[..at], &damaged[..]] {
                if let Some(scanned) = fragments(candidate) {
                    prop_assert_eq!(scanned, serde_reads(&String::from_utf8_lossy(candidate)));
                }
            }
        }
    }

    #[test]
    fn forms_the_engine_does_not_write_go_to_serde() {
        for content in [
            r#"[{"op":"transaction_created", "id":"ltx_1","tenant":3,"status":"posted","entries":[]}]"#,
            r#"[{"op":"transaction_created","tenant":3,"id":"ltx_1","status":"posted","entries":[]}]"#,
            r#"[{"op":"transaction_created","id":"ltx_1","tenant":03,"status":"posted","entries":[]}]"#,
            r#"[{"op":"transaction_created","id":"ltx_1","tenant":3.0,"status":"posted","entries":[]}]"#,
            r#"[{"op":"transaction_created","id":"ltx_1","tenant":-0,"status":"posted","entries":[]}]"#,
            r#"[{"op":"transaction_created","id":"ltx_1","tenant":3,"status":"posted","entries":[["a",-0]]}]"#,
            r#"[{"op":"transaction_created","id":"ltx_1","tenant":9223372036854775808,"status":"posted","entries":[]}]"#,
            r#"[{"op":"transaction_created","id":"ltx_\u0031","tenant":3,"status":"posted","entries":[]}]"#,
            r#"[{"op":"transaction_created","id":"ltx_1","tenant":3,"status":"posted","entries":[[]]}]"#,
            r#"[{"op":"transaction_created","id":"ltx_1","tenant":3,"status":"posted","entries":[]}] "#,
            r#"[{"op":"transaction_created","id":"ltx_1","tenant":3,"status":"posted","entries":[]}"#,
            r#"[{"op":"account_created","id":"acct_1","tenant":3}]"#,
            "[]",
            "",
        ] {
            assert!(fragments(content.as_bytes()).is_none(), "{content}");
        }
        // serde_json reads `-0` as a float, so such a tenant is no tenant to it.
        assert!(serde_reads(r#"[{"op":"transaction_created","id":"ltx_1","tenant":-0,"status":"posted","entries":[]}]"#).is_empty());
        let engine = r#"[{"op":"context","request_id":"req_1","idempotency_key":null,"correlation_id":null,"actor":"key_1","client_ip":"127.0.0.1"},{"op":"transaction_created","id":"ltx_1","tenant":-3,"status":"posted","entries":[["ent_1h00","acct_1","debit",5,"USD","pending"],["ent_1h01","acct_2","credit",0,"USD","pending"]]}]"#;
        assert_eq!(fragments(engine.as_bytes()), Some(serde_reads(engine)));
    }
}
