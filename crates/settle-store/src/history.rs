//! An account's history on SQLite: a chain through its transactions instead
//! of an index on `entries (account_id, …)`.
//!
//! Why: with WAL and `synchronous=FULL`, a commit costs about one page write
//! per page it dirtied, and an account-keyed index dirties one leaf page per
//! account a batch touches. The chain only appends: each transaction stores,
//! for every account it touches, the previous transaction of that account
//! and its position (`seq`, from 1) in the account's history; the account row
//! holds the newest one (`head_transaction_id`, `history_length`), and every
//! [`CHECKPOINT_EVERY`]-th position is recorded in `account_checkpoints` so a
//! walk towards newer transactions also costs a bounded number of steps.
//!
//! Chain order is creation order, which is id order while the clock does not
//! go back (ids are time-ordered ULIDs), so lists read the same as a walk of
//! an id index would. A cursor from outside the history is positioned by id.

use crate::error::StoreError;
use crate::sqlite::View;
use rusqlite::{Connection, OptionalExtension, params};
use settle_core::ids::{AccountId, TransactionId};
use settle_core::json_text;
use std::collections::BTreeMap;

/// Every how many positions an account's history records a checkpoint.
pub const CHECKPOINT_EVERY: i64 = 64;

/// Where one transaction sits in one account's history.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    /// The account's previous transaction, if any.
    pub prev: Option<String>,
    /// 1-based position in the account's history.
    pub seq: i64,
}

/// An account's newest transaction and how many it has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// An id, not text: the engine copies heads several times per transfer.
    pub transaction: Option<TransactionId>,
    pub length: i64,
}

impl Head {
    /// A head as a row stores it.
    pub fn from_row(transaction: Option<String>, length: i64) -> Head {
        Head { transaction: transaction.map(TransactionId::from_trusted), length }
    }

    fn transaction_text(&self) -> Option<String> {
        self.transaction.as_ref().map(|t| t.as_str().to_owned())
    }
}

/// Links of one transaction, by account id, as stored in `transactions.chain`.
pub type Links = BTreeMap<String, Link>;

fn parse_links(text: &str) -> Result<Links, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("transaction chain: {e}")))
}

/// Extends the heads in `heads` with a new transaction touching `accounts`
/// (each once), returning its links as stored in `transactions.chain` — the
/// JSON of [`Links`], written here directly because the engine does this for
/// every transfer — and noting the checkpoints it reaches.
pub fn append<'a>(
    heads: &mut foldhash::HashMap<AccountId, Head>,
    transaction: &TransactionId,
    accounts: impl Iterator<Item = &'a AccountId>,
    checkpoints: &mut Vec<(AccountId, i64, TransactionId)>,
) -> Result<String, StoreError> {
    let mut touched: Vec<&AccountId> = accounts.collect();
    // The order of a `Links` map, so the text is the same as serializing one.
    touched.sort_unstable();
    touched.dedup();
    // A link is about 85 bytes (two ids, a length, the punctuation).
    let mut json = String::with_capacity(2 + touched.len() * 96);
    json.push('{');
    for (i, account) in touched.into_iter().enumerate() {
        let head = heads.get_mut(account).ok_or_else(|| StoreError::Other(format!("history head of {account} was not loaded")))?;
        let seq = head.length.checked_add(1).ok_or_else(|| StoreError::Corrupt(String::from("history length overflow")))?;
        let prev = head.transaction.replace(transaction.clone());
        head.length = seq;
        if seq % CHECKPOINT_EVERY == 0 {
            checkpoints.push((account.clone(), seq, transaction.clone()));
        }
        if i > 0 {
            json.push(',');
        }
        json_text::push_str(&mut json, account.as_str());
        json.push_str(r#":{"prev":"#);
        match &prev {
            Some(p) => json_text::push_str(&mut json, p.as_str()),
            None => json.push_str("null"),
        }
        json.push_str(r#","seq":"#);
        json.push_str(itoa::Buffer::new().format(seq));
        json.push('}');
    }
    json.push('}');
    Ok(json)
}

/// An account's history as walked from its head, for the audit.
#[derive(Debug)]
pub struct Walked {
    pub account: String,
    /// `history_length` as stored on the account.
    pub length: i64,
    /// Transaction ids newest first, as far as the walk got.
    pub transactions: Vec<String>,
    /// Why the walk stopped early, if it did.
    pub broken: Option<String>,
}

/// Walks every account's history from its head.
pub fn walk_all(conn: &Connection, view: &View<'_>) -> Result<Vec<Walked>, StoreError> {
    let mut stmt = conn.prepare("SELECT id, tenant_id FROM accounts ORDER BY id")?;
    let accounts: Vec<(String, i64)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(accounts.len());
    for (account, tenant) in &accounts {
        let Some(history) = History::of(conn, account, *tenant, view)? else { continue };
        let mut transactions = Vec::new();
        // A chain that loops would never end: no walk is longer than the stored length.
        let limit = usize::try_from(history.head.length).unwrap_or(0);
        let mut problem: Option<String> = None;
        let mut expected_seq = history.head.length;
        let mut checkpoints: Vec<(i64, String)> = Vec::new();
        let walked = history.walk_links(history.head.transaction_text(), &mut |id, link| {
            if transactions.len() == limit {
                problem = Some(format!("is longer than its stored length {limit}"));
                return Ok(false);
            }
            if link.seq != expected_seq {
                problem = Some(format!("gives {id} position {} where {expected_seq} was due", link.seq));
                return Ok(false);
            }
            if link.seq % CHECKPOINT_EVERY == 0 {
                checkpoints.push((link.seq, id.to_owned()));
            }
            expected_seq -= 1;
            transactions.push(id.to_owned());
            Ok(true)
        });
        let mut broken = match walked {
            Err(StoreError::Corrupt(reason)) => Some(reason),
            Err(e) => return Err(e),
            Ok(()) => problem,
        };
        if broken.is_none() {
            let mut stmt = conn.prepare_cached("SELECT seq, transaction_id FROM account_checkpoints WHERE account_id = ?1 ORDER BY seq DESC")?;
            let stored: Vec<(i64, String)> = stmt.query_map([account], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            if stored != checkpoints {
                broken = Some(String::from("has checkpoints that differ from its links"));
            }
        }
        out.push(Walked { account: account.clone(), length: history.head.length, transactions, broken });
    }
    Ok(out)
}

/// Reads an account's history.
pub struct History<'c> {
    conn: &'c Connection,
    account: &'c str,
    head: Head,
}

impl<'c> History<'c> {
    /// The history of `account` if it belongs to `tenant`, with its head as
    /// `view` sees it (the row's, or a newer one not yet checkpointed).
    pub fn of(conn: &'c Connection, account: &'c str, tenant: i64, view: &View<'_>) -> Result<Option<History<'c>>, StoreError> {
        let mut stmt = conn.prepare_cached("SELECT head_transaction_id, history_length FROM accounts WHERE id = ?1 AND tenant_id = ?2")?;
        let head = stmt.query_row(params![account, tenant], |r| Ok(Head::from_row(r.get(0)?, r.get(1)?))).optional()?;
        Ok(head.map(|head| History { conn, account, head: view.head(account, head) }))
    }

    /// This account's link in `transaction`, or `None` if it does not touch the account.
    fn link(&self, transaction: &str) -> Result<Option<Link>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT chain FROM transactions WHERE id = ?1")?;
        let Some(text) = stmt.query_row([transaction], |r| r.get::<_, String>(0)).optional()? else { return Ok(None) };
        Ok(parse_links(&text)?.remove(self.account))
    }

    /// Calls `visit` with transaction ids, newest first, until it returns false.
    pub fn walk_back(&self, visit: &mut dyn FnMut(&str) -> Result<bool, StoreError>) -> Result<(), StoreError> {
        self.walk_from(self.head.transaction_text(), visit)
    }

    /// Like [`History::walk_back`], starting at `from` (inclusive; `None`: nothing).
    fn walk_from(&self, from: Option<String>, visit: &mut dyn FnMut(&str) -> Result<bool, StoreError>) -> Result<(), StoreError> {
        self.walk_links(from, &mut |id, _| visit(id))
    }

    /// Like [`History::walk_from`], also showing each transaction's link.
    fn walk_links(&self, from: Option<String>, visit: &mut dyn FnMut(&str, &Link) -> Result<bool, StoreError>) -> Result<(), StoreError> {
        let mut next = from;
        while let Some(id) = next {
            let link = self.link(&id)?.ok_or_else(|| StoreError::Corrupt(format!("{id} is in the history of {} but has no link to it", self.account)))?;
            if !visit(&id, &link)? {
                return Ok(());
            }
            next = link.prev;
        }
        Ok(())
    }

    /// Where to resume after a cursor transaction: the transaction itself
    /// with its position when it is in this history, else the newest
    /// transaction older than it (found by walking: ids sort like the chain).
    fn locate(&self, cursor: &str) -> Result<Located, StoreError> {
        if let Some(link) = self.link(cursor)? {
            return Ok(Located::Member(link));
        }
        // Not in this history: position by id. The newest checkpoint older than
        // the cursor bounds the walk to the checkpoint stride above it.
        let mut stmt =
            self.conn.prepare_cached("SELECT seq FROM account_checkpoints WHERE account_id = ?1 AND transaction_id < ?2 ORDER BY seq DESC LIMIT 1")?;
        let below: i64 = stmt.query_row(params![self.account, cursor], |r| r.get(0)).optional()?.unwrap_or(0);
        let (_, top) = match self.head.transaction {
            None => return Ok(Located::Before(None)),
            Some(_) => self.at_or_above(below + CHECKPOINT_EVERY)?,
        };
        let mut found = None;
        self.walk_from(Some(top), &mut |id| {
            if id < cursor {
                found = Some(id.to_owned());
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(Located::Before(found))
    }

    /// Transaction ids older than `cursor`, newest first, to `visit`.
    pub fn older_than(&self, cursor: &str, visit: &mut dyn FnMut(&str) -> Result<bool, StoreError>) -> Result<(), StoreError> {
        match self.locate(cursor)? {
            Located::Member(link) => self.walk_from(link.prev, visit),
            Located::Before(start) => self.walk_from(start, visit),
        }
    }

    /// Transaction ids newer than `cursor`, oldest first, to `visit`. Reads
    /// at most [`CHECKPOINT_EVERY`] more transactions than it visits.
    pub fn newer_than(&self, cursor: &str, visit: &mut dyn FnMut(&str) -> Result<bool, StoreError>) -> Result<(), StoreError> {
        let mut after = match self.locate(cursor)? {
            Located::Member(link) => link.seq,
            // Not in this history: the newer ones start right above the newest older one.
            Located::Before(None) => 0,
            Located::Before(Some(id)) => self.link(&id)?.map_or(0, |l| l.seq),
        };
        let mut stride = 16;
        while after < self.head.length {
            // The nearest checkpoint at or above the window's top, else the head.
            let (top_seq, top) = self.at_or_above(after + stride)?;
            let mut window = Vec::new();
            let mut seq = top_seq;
            self.walk_from(Some(top), &mut |id| {
                if seq <= after {
                    return Ok(false);
                }
                window.push(id.to_owned());
                seq -= 1;
                Ok(true)
            })?;
            for id in window.iter().rev() {
                if !visit(id)? {
                    return Ok(());
                }
            }
            after = top_seq;
            stride = stride.saturating_mul(2);
        }
        Ok(())
    }

    fn at_or_above(&self, seq: i64) -> Result<(i64, String), StoreError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT seq, transaction_id FROM account_checkpoints WHERE account_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT 1")?;
        if let Some(found) = stmt.query_row(params![self.account, seq], |r| Ok((r.get(0)?, r.get(1)?))).optional()? {
            return Ok(found);
        }
        let head = self.head.transaction_text().ok_or_else(|| StoreError::Corrupt(format!("account {} has history but no head", self.account)))?;
        Ok((self.head.length, head))
    }
}

enum Located {
    Member(Link),
    Before(Option<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text written directly is what serializing the same `Links` gave,
    /// so chains written before and after read alike.
    #[test]
    fn appended_links_are_the_json_of_their_links() {
        let acct = |text: &str| AccountId::from_trusted(String::from(text));
        let ltx = |text: &str| TransactionId::from_trusted(String::from(text));
        let mut heads = foldhash::HashMap::default();
        heads.insert(acct("acct_b"), Head::from_row(Some(String::from("ltx_1")), 63));
        heads.insert(acct("acct_a"), Head::default());
        heads.insert(acct("acct \"odd\""), Head { transaction: None, length: 5 });
        let mut checkpoints = Vec::new();
        let touched = [acct("acct_b"), acct("acct_a"), acct("acct_b"), acct("acct \"odd\"")];
        let text = append(&mut heads, &ltx("ltx_2"), touched.iter(), &mut checkpoints).expect("heads are loaded");
        let mut expected = Links::new();
        expected.insert(String::from("acct_a"), Link { prev: None, seq: 1 });
        expected.insert(String::from("acct_b"), Link { prev: Some(String::from("ltx_1")), seq: 64 });
        expected.insert(String::from("acct \"odd\""), Link { prev: None, seq: 6 });
        assert_eq!(text, serde_json::to_string(&expected).expect("serializes"));
        assert_eq!(parse_links(&text).expect("parses"), expected);
        assert_eq!(checkpoints, vec![(acct("acct_b"), 64, ltx("ltx_2"))]);
        assert_eq!(heads.get("acct_b"), Some(&Head::from_row(Some(String::from("ltx_2")), 64)));
        assert!(append(&mut heads, &ltx("ltx_3"), [acct("acct_missing")].iter(), &mut checkpoints).is_err());
    }
}
