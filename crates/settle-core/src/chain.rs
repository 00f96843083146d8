//! The tamper-evident ledger log: each record's hash covers the previous
//! record's hash, its sequence number and its content, so changing, removing
//! or reordering any record breaks every hash after it.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// The "previous hash" of the first record.
pub const GENESIS: Hash = [0; 32];

/// The hash of record `seq` with `content`, chained to `prev`.
pub fn link(prev: &Hash, seq: i64, content: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update((content.len() as u64).to_be_bytes());
    hasher.update(content);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_change_to_a_record_changes_its_link() {
        let a = link(&GENESIS, 1, b"{\"x\":1}");
        assert_ne!(a, link(&GENESIS, 2, b"{\"x\":1}"));
        assert_ne!(a, link(&GENESIS, 1, b"{\"x\":2}"));
        assert_ne!(link(&a, 2, b"y"), link(&GENESIS, 2, b"y"));
        assert_eq!(a, link(&GENESIS, 1, b"{\"x\":1}"));
    }
}
