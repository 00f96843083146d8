//! Account counters and history heads on SQLite: changed in memory, persisted
//! as an append-only stream, folded into the `accounts` table now and then.
//!
//! Why: with WAL and `synchronous=FULL` a commit costs about one page write
//! per page it dirtied, and updating account rows in place dirties one page
//! per account a batch touches — most of a commit's pages with 10,000
//! accounts, nearly two per transfer with 1,000,000. Instead, each engine
//! batch appends one `account_changes` row holding the new state of every
//! account it changed (an append touches a few pages at the end of the
//! file), and a checkpoint writes each account's latest state into its row
//! once, however many batches changed it since the last one.
//!
//! So an account's current state is its `accounts` row overlaid with the
//! newest change in the stream. Two ways to read it:
//! - [`Overlay`]: the writing process keeps every change since the last
//!   checkpoint in memory, tagged with the ledger-log sequence of its batch,
//!   and readers of that process use it. A reader only trusts it when it
//!   matches the reader's own snapshot (see [`View`]), else it retries.
//! - [`fold`]: any connection can replay the stream inside its snapshot
//!   (audits, other processes, the rare reader that lost its race).

use crate::error::StoreError;
use crate::history::Head;
use crate::rows::AccountRow;
use rusqlite::{Connection, OptionalExtension};
use settle_core::ids::{AccountId, TransactionId};
use settle_core::ledger::Counters;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, RwLock};
use std::time::Duration;

/// One account's state as the stream records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountChange {
    pub counters: Counters,
    pub version: i64,
    pub head: Head,
}

impl AccountChange {
    /// Puts this state on a row read from `accounts`.
    pub fn apply_to(&self, row: &mut AccountRow) {
        row.posted_debits = self.counters.posted_debits;
        row.posted_credits = self.counters.posted_credits;
        row.pending_debits = self.counters.pending_debits;
        row.pending_credits = self.counters.pending_credits;
        row.version = self.version;
    }
}

/// The format of a stream row's body; bumped if it ever changes.
const FORMAT: u8 = 1;

/// Encodes one batch's changes: a format byte, a count, then per account its
/// id, four counters, version, history length and head (lengths as one byte:
/// ids are short ASCII, checked here).
pub fn encode(changes: &[(&str, &AccountChange)]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(5 + changes.len() * 112);
    out.push(FORMAT);
    let count = u32::try_from(changes.len()).map_err(|_| StoreError::Other(String::from("too many account changes in one batch")))?;
    out.extend_from_slice(&count.to_le_bytes());
    for (id, change) in changes {
        put_text(&mut out, id)?;
        let c = &change.counters;
        for n in [c.posted_debits, c.posted_credits, c.pending_debits, c.pending_credits, change.version, change.head.length] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        put_text(&mut out, change.head.transaction.as_ref().map_or("", TransactionId::as_str))?;
    }
    Ok(out)
}

fn put_text(out: &mut Vec<u8>, text: &str) -> Result<(), StoreError> {
    let len = u8::try_from(text.len()).map_err(|_| StoreError::Other(format!("id too long for the account stream: {} bytes", text.len())))?;
    out.push(len);
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// Decodes a body written by [`encode`], calling `each` per account in order.
pub fn decode(body: &[u8], each: &mut dyn FnMut(String, AccountChange)) -> Result<(), StoreError> {
    let mut r = Reader { body, at: 0 };
    let format = r.take(1)?[0];
    if format != FORMAT {
        return Err(StoreError::Corrupt(format!("account change format {format}")));
    }
    let count = u32::from_le_bytes(r.array()?);
    for _ in 0..count {
        let id = r.text()?;
        let mut n = [0i64; 6];
        for slot in &mut n {
            *slot = i64::from_le_bytes(r.array()?);
        }
        let head = r.text()?;
        let counters = Counters { posted_debits: n[0], posted_credits: n[1], pending_debits: n[2], pending_credits: n[3] };
        each(id, AccountChange { counters, version: n[4], head: Head::from_row((!head.is_empty()).then_some(head), n[5]) });
    }
    if r.at != body.len() {
        return Err(StoreError::Corrupt(String::from("account change row has trailing bytes")));
    }
    Ok(())
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end =
            self.at.checked_add(n).filter(|end| *end <= self.body.len()).ok_or_else(|| StoreError::Corrupt(String::from("account change row is truncated")))?;
        let bytes = &self.body[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        self.take(N)?.try_into().map_err(|_| StoreError::Corrupt(String::from("account change row is truncated")))
    }

    fn text(&mut self) -> Result<String, StoreError> {
        let len = usize::from(self.take(1)?[0]);
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| StoreError::Corrupt(String::from("account change id is not UTF-8")))
    }
}

/// Replays the whole stream, as seen by `conn`'s snapshot: the newest state
/// of every account changed since the last checkpoint.
pub fn fold(conn: &Connection) -> Result<HashMap<String, AccountChange>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT body FROM account_changes ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let mut out = HashMap::new();
    while let Some(row) = rows.next()? {
        let body = row.get_ref(0)?.as_blob().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        decode(body, &mut |id, change| {
            out.insert(id, change);
        })?;
    }
    Ok(out)
}

/// Appends one batch's changes to the stream.
pub fn append(conn: &Connection, changes: &[(&str, &AccountChange)]) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO account_changes (body) VALUES (?1)")?.execute([encode(changes)?])?;
    Ok(())
}

/// An account's current state as `conn`'s snapshot has it (its row
/// overlaid with the stream), replaying the whole stream: for operators and
/// tests, not for hot paths.
pub fn current(conn: &Connection, account: &str) -> Result<Option<AccountChange>, StoreError> {
    if let Some(change) = fold(conn)?.remove(account) {
        return Ok(Some(change));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT posted_debits, posted_credits, pending_debits, pending_credits, version, head_transaction_id, history_length FROM accounts WHERE id = ?1",
    )?;
    Ok(stmt
        .query_row([account], |r| {
            Ok(AccountChange {
                counters: Counters { posted_debits: r.get(0)?, posted_credits: r.get(1)?, pending_debits: r.get(2)?, pending_credits: r.get(3)? },
                version: r.get(4)?,
                head: Head::from_row(r.get(5)?, r.get(6)?),
            })
        })
        .optional()?)
}

/// The ledger-log sequence that the `accounts` rows are current as of.
pub fn checkpointed_through(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.prepare_cached("SELECT log_seq FROM account_checkpoint WHERE id = 1")?.query_row([], |r| r.get(0)).optional()?.unwrap_or(0))
}

/// The newest ledger-log sequence visible to `conn`.
pub fn log_head(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM ledger_log")?.query_row([], |r| r.get(0))?)
}

/// The first and the last row of the stream, `(0, 0)` when it is empty.
pub fn stream_bounds(conn: &Connection) -> Result<(i64, i64), StoreError> {
    Ok(conn.query_row("SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM account_changes", [], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// Writes `changes` (in id order, so each page is visited once) into their
/// `accounts` rows, inside the caller's write transaction. The stream keeps
/// them: an account's row may then be newer than the checkpoint, never
/// newer than the stream's newest change for it, which readers prefer.
pub fn write_rows(tx: &Connection, changes: &[(&str, &AccountChange)]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE accounts SET posted_debits = ?2, posted_credits = ?3, pending_debits = ?4, pending_credits = ?5, version = ?6,
         head_transaction_id = ?7, history_length = ?8 WHERE id = ?1",
    )?;
    // Bound in place: with a million accounts this loop is the checkpoint.
    for (id, change) in changes {
        let c = &change.counters;
        stmt.raw_bind_parameter(1, *id)?;
        stmt.raw_bind_parameter(2, c.posted_debits)?;
        stmt.raw_bind_parameter(3, c.posted_credits)?;
        stmt.raw_bind_parameter(4, c.pending_debits)?;
        stmt.raw_bind_parameter(5, c.pending_credits)?;
        stmt.raw_bind_parameter(6, change.version)?;
        stmt.raw_bind_parameter(7, change.head.transaction.as_ref().map(TransactionId::as_str))?;
        stmt.raw_bind_parameter(8, change.head.length)?;
        stmt.raw_execute()?;
    }
    Ok(())
}

/// Ends a checkpoint whose rows are written: drops the stream rows up to
/// `last_row` (what it folded; later rows hold later changes) and records
/// that the `accounts` rows are current as of log sequence `through`.
pub fn finish_checkpoint(tx: &Connection, last_row: i64, through: i64) -> Result<(), StoreError> {
    tx.execute("DELETE FROM account_changes WHERE seq <= ?1", [last_row])?;
    tx.execute("INSERT INTO account_checkpoint (id, log_seq) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET log_seq = excluded.log_seq", [through])?;
    Ok(())
}

/// Changes since the last checkpoint, kept by the process whose engine made
/// them, for that process's readers.
#[derive(Debug, Default)]
pub struct Overlay {
    state: RwLock<OverlayState>,
    /// Signalled on every publish: a reader whose snapshot already sees a
    /// commit waits here for the engine to publish it (it does right after
    /// COMMIT), not replaying the stream.
    publishes: (Mutex<()>, Condvar),
}

#[derive(Debug, Default)]
struct OverlayState {
    /// False until an engine of this process has loaded the stream: readers
    /// then replay the stream themselves.
    live: bool,
    /// The log sequence of the newest batch published here.
    published: i64,
    /// Changes pruned by a checkpoint are only in `accounts` rows as of this
    /// log sequence; an older snapshot must not read those rows.
    pruned_through: i64,
    /// Per account: the log sequence of the batch that set it, and the state.
    changes: foldhash::HashMap<AccountId, (i64, AccountChange)>,
}

impl Overlay {
    /// Replaces everything with the stream as just folded by the writer
    /// (on start, or after another connection wrote).
    pub fn reset(&self, folded: &HashMap<String, AccountChange>, log_head: i64, checkpointed_through: i64) {
        if let Ok(mut s) = self.state.write() {
            s.live = true;
            s.published = log_head;
            s.pruned_through = checkpointed_through;
            s.changes = folded.iter().map(|(id, c)| (AccountId::from_trusted(id.clone()), (log_head, c.clone()))).collect();
        }
        self.signal();
    }

    /// Readers replay the stream themselves until the next [`Overlay::reset`]
    /// (the writer lost track of what it committed).
    pub fn invalidate(&self) {
        if let Ok(mut s) = self.state.write() {
            s.live = false;
            s.changes.clear();
        }
    }

    /// Publishes a committed batch whose newest log record is `log_seq`.
    pub fn publish(&self, log_seq: i64, changes: Vec<(AccountId, AccountChange)>) {
        if let Ok(mut s) = self.state.write() {
            s.published = s.published.max(log_seq);
            for (id, change) in changes {
                s.changes.insert(id, (log_seq, change));
            }
        }
        self.signal();
    }

    /// Wakes the waiting readers. Taking the mutex first means a reader that
    /// checked `published` before this publish is already waiting.
    fn signal(&self) {
        drop(self.publishes.0.lock());
        self.publishes.1.notify_all();
    }

    /// Waits until a batch as new as `log_seq` is published, at most
    /// `timeout`; false if it was not (another process wrote: the engine
    /// loads the stream again at its next batch).
    pub fn wait_published(&self, log_seq: i64, timeout: Duration) -> bool {
        let caught_up = || self.state.read().is_ok_and(|s| s.published >= log_seq);
        let Ok(guard) = self.publishes.0.lock() else { return false };
        self.publishes.1.wait_timeout_while(guard, timeout, |_| !caught_up()).is_ok() && caught_up()
    }

    /// After a checkpoint through `log_seq` committed: the rows hold it all.
    pub fn pruned(&self, log_seq: i64) {
        if let Ok(mut s) = self.state.write() {
            s.changes.retain(|_, (tag, _)| *tag > log_seq);
            s.pruned_through = s.pruned_through.max(log_seq);
        }
    }

    /// The current state of `account` if it changed since the last
    /// checkpoint, for the writer (which is never behind its own overlay).
    pub fn current(&self, account: &str) -> Option<AccountChange> {
        self.state.read().ok()?.changes.get(account).map(|(_, c)| c.clone())
    }

    /// The log sequence of the newest batch published.
    pub fn published(&self) -> i64 {
        self.state.read().map(|s| s.published).unwrap_or(0)
    }

    /// How many accounts changed since the last checkpoint.
    pub fn len(&self) -> usize {
        self.state.read().map(|s| s.changes.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of every account changed since the last checkpoint, in
    /// order: what a checkpoint will write. A poisoned lock is an error: an
    /// empty list would have emptied the stream with no row written.
    pub fn ids(&self) -> Result<Vec<AccountId>, StoreError> {
        let state = self.state.read().map_err(|_| StoreError::Other(String::from("the account overlay was poisoned")))?;
        let mut ids: Vec<AccountId> = state.changes.keys().cloned().collect();
        drop(state);
        ids.sort_unstable();
        Ok(ids)
    }

    /// Runs `write` on the current state of `ids` (those still held), for
    /// a checkpoint, under the read lock rather than on a copy. Readers go
    /// on meanwhile; only the engine, which is the one running this, ever
    /// takes the write lock. The count is how many were held.
    pub fn with_changes(&self, ids: &[AccountId], write: impl FnOnce(&[(&str, &AccountChange)]) -> Result<(), StoreError>) -> Result<usize, StoreError> {
        let state = self.state.read().map_err(|_| StoreError::Other(String::from("the account overlay was poisoned")))?;
        let changes: Vec<(&str, &AccountChange)> = ids.iter().filter_map(|id| state.changes.get(id).map(|(_, c)| (id.as_str(), c))).collect();
        write(&changes)?;
        Ok(changes.len())
    }
}

/// Why a read transaction got no [`View::Overlay`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoView {
    /// No engine of this process keeps the overlay: replay the stream.
    NotLive,
    /// Read again once the overlay has published this log sequence.
    Behind(i64),
    /// Read again at once, with a newer snapshot.
    Retry,
}

/// How one read transaction sees accounts' current state.
pub enum View<'o> {
    /// The overlay matches this snapshot: `log_head` and `checkpointed` are
    /// what the snapshot sees.
    Overlay { overlay: &'o Overlay, log_head: i64, checkpointed: i64, stale: std::cell::Cell<bool> },
    /// The stream as replayed inside this snapshot.
    Folded(HashMap<String, AccountChange>),
}

impl<'o> View<'o> {
    /// The overlay's view for a read transaction just opened on `conn`, or
    /// why there is none.
    pub fn open(conn: &Connection, overlay: &'o Overlay) -> Result<Result<View<'o>, NoView>, StoreError> {
        let (live, published, pruned_through) = match overlay.state.read() {
            Ok(s) => (s.live, s.published, s.pruned_through),
            Err(_) => (false, 0, 0),
        };
        if !live {
            return Ok(Err(NoView::NotLive));
        }
        let log_head = log_head(conn)?;
        // A commit the overlay has not been told of yet…
        if log_head > published {
            return Ok(Err(NoView::Behind(log_head)));
        }
        // …or a snapshot from before a checkpoint whose pruned changes it would then miss.
        let checkpointed = checkpointed_through(conn)?;
        if checkpointed < pruned_through {
            return Ok(Err(NoView::Retry));
        }
        Ok(Ok(View::Overlay { overlay, log_head, checkpointed, stale: std::cell::Cell::new(false) }))
    }

    /// The replayed stream, for readers that scan everything (audits).
    pub fn folded(conn: &Connection) -> Result<View<'static>, StoreError> {
        Ok(View::Folded(fold(conn)?))
    }

    /// The current state of `account`, if it changed since the last
    /// checkpoint (else its row holds it).
    pub fn get(&self, account: &str) -> Option<AccountChange> {
        match self {
            View::Folded(map) => map.get(account).cloned(),
            View::Overlay { overlay, log_head, checkpointed, stale } => {
                let s = overlay.state.read().ok()?;
                if s.pruned_through > *checkpointed {
                    // A checkpoint committed after this snapshot and pruned
                    // changes its rows may not hold yet: the read starts again.
                    stale.set(true);
                }
                let (tag, change) = s.changes.get(account)?;
                if tag > log_head {
                    // Changed after this snapshot was taken: the read starts again.
                    stale.set(true);
                }
                Some(change.clone())
            }
        }
    }

    /// Whether anything read through this view was newer than the snapshot.
    pub fn is_stale(&self) -> bool {
        matches!(self, View::Overlay { stale, .. } if stale.get())
    }

    /// `row` as of this view.
    pub fn account(&self, mut row: AccountRow) -> AccountRow {
        if let Some(change) = self.get(&row.id) {
            change.apply_to(&mut row);
        }
        row
    }

    /// The history head of `account`, given the one its row holds.
    pub fn head(&self, account: &str, stored: Head) -> Head {
        self.get(account).map_or(stored, |c| c.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_decodes_to_what_was_encoded() {
        let a = AccountChange {
            counters: Counters { posted_debits: 1, posted_credits: i64::MAX, pending_debits: 0, pending_credits: 7 },
            version: 42,
            head: Head::from_row(Some(String::from("ltx_01JABCDEFGHJKMNPQRSTVWXYZ0")), 9),
        };
        let b = AccountChange::default();
        let body = encode(&[("acct_a", &a), ("acct_b", &b)]).expect("encodes");
        let mut out = Vec::new();
        decode(&body, &mut |id, c| out.push((id, c))).expect("decodes");
        assert_eq!(out, vec![(String::from("acct_a"), a), (String::from("acct_b"), b)]);
    }

    #[test]
    fn damaged_bodies_are_errors_not_panics() {
        let body = encode(&[("acct_a", &AccountChange::default())]).expect("encodes");
        for cut in 0..body.len() {
            assert!(decode(&body[..cut], &mut |_, _| {}).is_err(), "truncated at {cut}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode(&longer, &mut |_, _| {}).is_err());
        let mut other_format = body;
        other_format[0] = 9;
        assert!(decode(&other_format, &mut |_, _| {}).is_err());
    }

    /// The tables a [`View`] looks at, with log records 1 and 2.
    fn log_with_two_records() -> Connection {
        let conn = Connection::open_in_memory().expect("opens");
        conn.execute_batch(
            "CREATE TABLE ledger_log (seq INTEGER PRIMARY KEY);
             CREATE TABLE account_changes (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
             CREATE TABLE account_checkpoint (id INTEGER PRIMARY KEY, log_seq INTEGER NOT NULL);
             INSERT INTO ledger_log (seq) VALUES (1), (2);",
        )
        .expect("schema");
        conn
    }

    #[test]
    fn a_reader_behind_the_overlay_or_a_checkpoint_is_told_to_retry() {
        let conn = log_with_two_records();
        let overlay = Overlay::default();
        let why = |overlay: &Overlay| View::open(&conn, overlay).expect("opens").err();
        // Not live: the stream must be replayed.
        assert_eq!(why(&overlay), Some(NoView::NotLive));
        overlay.reset(&HashMap::new(), 1, 0);
        // The snapshot sees log record 2, the overlay only 1: the reader
        // waits for it, and is woken by its publication.
        assert_eq!(why(&overlay), Some(NoView::Behind(2)));
        assert!(!overlay.wait_published(2, std::time::Duration::from_millis(1)));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| overlay.wait_published(2, std::time::Duration::from_secs(10)));
            overlay.publish(2, Vec::new());
            assert!(waiter.join().expect("joins"));
        });
        overlay.publish(2, vec![(AccountId::from_trusted(String::from("acct_a")), AccountChange { version: 1, ..AccountChange::default() })]);
        let view = View::open(&conn, &overlay).expect("opens").expect("current");
        assert_eq!(view.get("acct_a").map(|c| c.version), Some(1));
        assert!(!view.is_stale());
        // A change published after this snapshot makes it stale.
        overlay.publish(3, vec![(AccountId::from_trusted(String::from("acct_a")), AccountChange { version: 2, ..AccountChange::default() })]);
        assert_eq!(view.get("acct_a").map(|c| c.version), Some(2));
        assert!(view.is_stale());
        // A checkpoint this snapshot does not see, once its changes are pruned.
        conn.execute("INSERT INTO ledger_log (seq) VALUES (3)", []).expect("log");
        overlay.pruned(3);
        assert_eq!(why(&overlay), Some(NoView::Retry));
        conn.execute("INSERT INTO account_checkpoint (id, log_seq) VALUES (1, 3)", []).expect("checkpoint");
        assert!(View::open(&conn, &overlay).expect("opens").is_ok());
    }

    /// The race fixed in `7e6ab8c`: a reader opened its snapshot before a
    /// checkpoint's last slice committed, and the checkpoint pruned the
    /// overlay while the reader was still reading. An account whose change
    /// was pruned is no longer in the overlay, and the reader's snapshot
    /// still has its row from before the checkpoint (the wallet paid 1 read
    /// 0): the read must be marked stale even though the account it asked
    /// for has no overlay entry at all.
    #[test]
    fn a_checkpoint_pruning_after_a_snapshot_opened_makes_its_reads_stale() {
        let conn = log_with_two_records();
        let overlay = Overlay::default();
        overlay.reset(&HashMap::new(), 2, 0);
        overlay.publish(2, vec![(AccountId::from_trusted(String::from("acct_paid")), AccountChange { version: 1, ..AccountChange::default() })]);
        let view = View::open(&conn, &overlay).expect("opens").expect("current");
        // Before the checkpoint: the change is there and the read is good.
        assert_eq!(view.get("acct_paid").map(|c| c.version), Some(1));
        assert!(!view.is_stale());
        // The checkpoint through 2 commits (not in this snapshot) and prunes.
        overlay.pruned(2);
        assert_eq!(view.get("acct_paid"), None, "the pruned change is gone from the overlay");
        assert!(view.is_stale(), "a read missing a pruned change must start again");
        // A snapshot opened now that still predates the checkpoint is refused outright.
        let other = View::open(&conn, &overlay).expect("opens");
        assert_eq!(other.err(), Some(NoView::Retry), "a new snapshot that still predates the checkpoint is refused");
        conn.execute("INSERT INTO account_checkpoint (id, log_seq) VALUES (1, 2)", []).expect("checkpoint");
        let fresh = View::open(&conn, &overlay).expect("opens").expect("sees the checkpoint");
        assert_eq!(fresh.get("acct_paid"), None);
        assert!(!fresh.is_stale(), "a snapshot that sees the checkpoint reads the row");
    }
}
