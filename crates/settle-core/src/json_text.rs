//! Text written into JSON by hand: the renderers and the SQLite store write
//! ids, times and enum names straight into JSON strings, several per
//! transfer, and only text that needs escaping goes through serde_json.

/// Whether serde_json writes every byte of `s` unchanged inside a JSON
/// string: nothing below 0x20, no `"` and no `\`. Eight bytes are checked at
/// a time (bit tricks on a `u64`): the byte-by-byte loop this replaces was
/// about a tenth of the HTTP workers' CPU in a batched run (rendering a
/// batch's answer) and 2 % of the engine's (docs/benchmarks.md).
pub fn is_plain(s: &str) -> bool {
    let mut words = s.as_bytes().chunks_exact(8);
    let mut flagged = 0u64;
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let v = u64::from_le_bytes(eight);
        flagged |= special(v);
    }
    flagged == 0 && words.remainder().iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// How many bytes at the start of `bytes` JSON keeps as they are inside a
/// string: the index of the first `"`, `\` or control byte, or the length.
/// What a reader scans to find where a string ends, eight bytes at a time.
pub fn plain_len(bytes: &[u8]) -> usize {
    let mut words = bytes.chunks_exact(8);
    let mut done = 0;
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let v = u64::from_le_bytes(eight);
        let flagged = special(v);
        if flagged != 0 {
            // The lowest flag is always a byte that matched (a borrow only
            // runs upwards from one), so it is the first such byte.
            return done + (flagged.trailing_zeros() / 8) as usize;
        }
        done += 8;
    }
    done + words.remainder().iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\').unwrap_or(words.remainder().len())
}

/// Non-zero when a byte of `v` is one JSON escapes inside a string (below
/// 0x20, `"`, `\`); the lowest flag (bit 7 of a byte) marks the first such
/// byte, while flags above it may come from a borrow.
fn special(v: u64) -> u64 {
    below(v, 0x20) | below(v ^ (ONES * u64::from(b'"')), 1) | below(v ^ (ONES * u64::from(b'\\')), 1)
}

/// Non-zero when some byte of `v` is below `n` (`n` at most 0x80). A byte at
/// 0x80 or above never sets it, and a borrow only starts at a byte that is
/// below `n`, so the answer is exact for the word as a whole.
fn below(v: u64, n: u8) -> u64 {
    v.wrapping_sub(ONES * u64::from(n)) & !v & (ONES * 0x80)
}

/// `s` as a JSON string, appended to `out`.
pub fn push_str(out: &mut String, s: &str) {
    if is_plain(s) {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(s).to_string());
    }
}

/// `name` as a JSON string, for names from a fixed set of plain ASCII
/// (statuses, directions, legs, currency codes): nothing to check or escape.
pub fn push_name(out: &mut String, name: &str) {
    debug_assert!(is_plain(name), "{name:?} is not a plain name");
    out.reserve(name.len() + 2);
    out.push('"');
    out.push_str(name);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn plain_text_is_exactly_what_serde_json_leaves_unescaped(s in "\\PC*|[\\x00-\\x7f]{0,40}|[a-z0-9_]{0,40}[\\x00-\\x1f\"\\\\\\x7f-\\u{ff}][a-z0-9_]{0,40}") {
            let escaped = serde_json::to_string(&s).unwrap_or_default();
            prop_assert_eq!(is_plain(&s), escaped == format!("\"{s}\""));
            let mut out = String::new();
            push_str(&mut out, &s);
            prop_assert_eq!(out, escaped);
        }
    }

    proptest! {
        #[test]
        fn the_plain_length_is_where_the_first_special_byte_is(bytes in prop::collection::vec(prop_oneof![4 => 0x20u8..0x7f, 1 => any::<u8>()], 0..40)) {
            let expected = bytes.iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\').unwrap_or(bytes.len());
            prop_assert_eq!(plain_len(&bytes), expected);
        }
    }

    #[test]
    fn ids_times_and_names_are_plain_and_quotes_backslashes_and_controls_are_not() {
        for s in ["acct_01m8xc3x7s19vxwvtgqdh9psj3", "2026-12-03T07:15:19.414617Z", "posted", "", "café"] {
            assert!(is_plain(s), "{s}");
        }
        for s in ["a\"b", "a\\b", "a\nb", "\u{1}", "tab\there"] {
            assert!(!is_plain(s), "{s:?}");
        }
    }
}
