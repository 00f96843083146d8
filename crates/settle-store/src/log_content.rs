//! How a ledger log record's content is stored: its JSON as is, or, from
//! [`PACK_FROM`] bytes on, compressed with LZ4 behind a marker.
//!
//! Why: a batch of 1,000 transfers logs about 300 KB of JSON, a fifth of
//! everything a transfer writes on SQLite, and SQLite writes every byte twice
//! (the WAL, then the checkpoint into the database file). On disk that volume
//! is what bounds a batched load. The ids and keys the JSON repeats compress
//! about six times, at a fraction of a microsecond per transfer.
//!
//! The chain hashes the JSON, never the stored form: a record verifies the
//! same whichever way it is kept, records written before this stay as they
//! are, and every reader unpacks first ([`unpack`]; in SQL on SQLite,
//! `settle_log_json(content)`). PostgreSQL keeps the JSON: it compresses
//! large values itself.

use crate::error::StoreError;
use std::borrow::Cow;

/// What a packed content starts with. JSON never starts with a NUL byte.
const MARKER: &[u8] = b"\0lz4";
/// Contents shorter than this are stored as they are: one transfer's record
/// (about 600 bytes) compresses little and would pay the compressor's setup.
pub const PACK_FROM: usize = 4096;
/// The largest content a packed record may claim to hold. A record holds one
/// request's changes (a body of at most 1 MiB): anything near this is damage,
/// and must not make a reader allocate gigabytes.
const MAX_UNPACKED: usize = 256 << 20;

/// The form to store `content` in.
pub fn pack(content: &[u8]) -> Cow<'_, [u8]> {
    if content.len() < PACK_FROM || content.len() > MAX_UNPACKED {
        return Cow::Borrowed(content);
    }
    let Ok(length) = u32::try_from(content.len()) else { return Cow::Borrowed(content) };
    let mut packed = Vec::with_capacity(MARKER.len() + 4 + lz4_flex::block::get_maximum_output_size(content.len()));
    packed.extend_from_slice(MARKER);
    packed.extend_from_slice(&length.to_le_bytes());
    let header = packed.len();
    packed.resize(packed.capacity(), 0);
    match lz4_flex::block::compress_into(content, &mut packed[header..]) {
        Ok(written) if header + written < content.len() => {
            packed.truncate(header + written);
            Cow::Owned(packed)
        }
        _ => Cow::Borrowed(content),
    }
}

/// Whether `stored` is in packed form.
pub fn is_packed(stored: &[u8]) -> bool {
    stored.starts_with(MARKER)
}

/// The JSON content of a stored record, whichever form it is in.
pub fn unpack(stored: &[u8]) -> Result<Cow<'_, [u8]>, StoreError> {
    let Some(rest) = stored.strip_prefix(MARKER) else { return Ok(Cow::Borrowed(stored)) };
    let damaged = |why: &str| StoreError::Corrupt(format!("packed ledger log content: {why}"));
    let (length, block) = rest.split_first_chunk::<4>().ok_or_else(|| damaged("no length"))?;
    let length = usize::try_from(u32::from_le_bytes(*length)).map_err(|_| damaged("length"))?;
    // LZ4 expands a block at most about 255 times: a length beyond that is
    // damage, refused before a reader allocates it.
    if length > MAX_UNPACKED || length > block.len().saturating_mul(255).saturating_add(16) {
        return Err(damaged("claims more than it may hold"));
    }
    let mut content = vec![0; length];
    match lz4_flex::block::decompress_into(block, &mut content) {
        Ok(written) if written == length => Ok(Cow::Owned(content)),
        Ok(_) => Err(damaged("shorter than its length")),
        Err(e) => Err(damaged(&e.to_string())),
    }
}

/// The JSON of record `seq` for a reader that owns the stored bytes (no
/// copy when not packed) and must go on past a damaged record: one that
/// cannot be unpacked is logged and read as stored, so it fails the reader's
/// own checks (the chain's hash in `audit verify`, the projector's parse) as
/// any damaged record does, instead of stopping every read after it.
pub fn readable(seq: i64, stored: Vec<u8>) -> Vec<u8> {
    if !is_packed(&stored) {
        return stored;
    }
    match unpack(&stored) {
        Ok(json) => json.into_owned(),
        Err(error) => {
            tracing::error!(seq, %error, "a ledger log record cannot be unpacked; read as stored");
            stored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A content like a batch's: many transfers, ids sharing prefixes.
    fn batch_content(transfers: usize) -> Vec<u8> {
        let mut json = String::from(r#"[{"op":"context","request_id":"req_1","actor":"key_01"}"#);
        for i in 0..transfers {
            json.push_str(&format!(
                r#",{{"op":"transaction_created","id":"ltx_01m8vehdq0qsfd8r6ank3{i:06}","tenant":1,"status":"posted","entries":[["ent_{i}p00","acct_01m8vehc9abk5mq{:06}","debit",{i},"USD","posted"]]}}"#,
                i * 7919 % 10_000
            ));
        }
        json.push(']');
        json.into_bytes()
    }

    #[test]
    fn a_large_content_is_packed_smaller_and_unpacks_to_itself() {
        let content = batch_content(1_000);
        let packed = pack(&content);
        assert!(is_packed(&packed));
        assert!(packed.len() * 3 < content.len(), "{} of {} bytes", packed.len(), content.len());
        assert_eq!(unpack(&packed).expect("unpacks").as_ref(), content.as_slice());
        assert_eq!(readable(1, packed.into_owned()), content);
    }

    #[test]
    fn a_small_content_and_one_stored_before_packing_pass_unchanged() {
        let small = batch_content(1);
        assert!(small.len() < PACK_FROM);
        assert!(matches!(pack(&small), Cow::Borrowed(b) if b == small.as_slice()));
        assert!(matches!(unpack(&small).expect("plain"), Cow::Borrowed(b) if b == small.as_slice()));
        assert_eq!(readable(1, small.clone()), small);
    }

    #[test]
    fn damaged_packed_content_is_an_error_not_a_panic() {
        let packed = pack(&batch_content(200)).into_owned();
        for cut in 0..packed.len() {
            assert!(unpack(&packed[..cut]).is_err() || cut < MARKER.len(), "cut at {cut}");
        }
        let mut claims_too_much = packed.clone();
        claims_too_much[MARKER.len()..MARKER.len() + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(unpack(&claims_too_much).is_err());
        let mut claims_less = packed.clone();
        claims_less[MARKER.len()..MARKER.len() + 4].copy_from_slice(&10u32.to_le_bytes());
        assert!(unpack(&claims_less).is_err());
        // A damaged record reads as stored, to fail the reader's own checks.
        assert_eq!(readable(7, claims_less.clone()), claims_less);
        let mut flipped = packed;
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        // A flipped byte may still decode (to other bytes: the chain's hash
        // then fails), but never panics.
        let _ = unpack(&flipped);
    }
}
