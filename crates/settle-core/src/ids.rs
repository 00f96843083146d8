//! Prefixed, time-sortable, unguessable identifiers (`acct_…`, `ltx_…`).
//!
//! Inside each id is a ULID: 48 bits of milliseconds then 80 random bits,
//! written in lower-case Crockford base32, so ids sort by creation time
//! (which keyset pagination relies on) and cannot be enumerated.

use std::fmt;
use std::sync::{Arc, Mutex};

/// An id's text, shared: the engine copies account and transaction ids into
/// every entry, delta, map key and row it makes, and a `String` clone (an
/// allocation and a copy) was about a seventh of the engine thread's time in
/// a batched profile; an `Arc` clone is a reference count.
type Text = Arc<str>;

const ULID_CHARS: usize = 26;
const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// `prefix` then `ulid` in lowercase Crockford base32, with one allocation
/// (the `Arc`): the engine makes ids for every transfer, and the text form
/// through `Ulid::to_string` and `to_ascii_lowercase` cost three more.
fn prefixed_ulid(prefix: &str, ulid: ulid::Ulid) -> Text {
    const MAX_PREFIX: usize = 8;
    let mut text = [0u8; MAX_PREFIX + ULID_CHARS];
    if prefix.len() <= MAX_PREFIX {
        let (head, rest) = text.split_at_mut(prefix.len());
        head.copy_from_slice(prefix.as_bytes());
        // 26 characters of 5 bits: the first takes the top 3 bits of 128.
        for (i, place) in rest.iter_mut().take(ULID_CHARS).enumerate() {
            *place = CROCKFORD[((ulid.0 >> (125 - 5 * i)) & 31) as usize];
        }
        if let Some(Ok(text)) = text.get(..prefix.len() + ULID_CHARS).map(std::str::from_utf8) {
            return Text::from(text);
        }
    }
    Text::from(format!("{prefix}{}", ulid.to_string().to_ascii_lowercase()))
}

/// The value of a ULID body as [`prefixed_ulid`] writes it (lowercase), or `None`.
fn ulid_value(body: &str) -> Option<u128> {
    const DIGITS: [u8; 128] = {
        let mut table = [u8::MAX; 128];
        let mut i = 0;
        while i < CROCKFORD.len() {
            table[CROCKFORD[i] as usize] = i as u8;
            i += 1;
        }
        table
    };
    if !is_ulid_body(body) {
        return None;
    }
    Some(body.bytes().fold(0u128, |value, b| (value << 5) | u128::from(DIGITS[usize::from(b & 127)])))
}

/// Whether `body` is 26 lowercase Crockford digits within 128 bits. Every id
/// in a request is checked, two or more per transfer: every byte is looked
/// at with no early exit, so the compiler checks many at a time.
fn is_ulid_body(body: &str) -> bool {
    let crockford = |b: u8| b.is_ascii_digit() | (b.is_ascii_lowercase() & (b != b'i') & (b != b'l') & (b != b'o') & (b != b'u'));
    body.len() == ULID_CHARS && body.bytes().fold(true, |ok, b| ok & crockford(b)) && body.as_bytes()[0] <= b'7'
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Text);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Accepts only a well-formed id of this kind; anything else is "not found" to callers.
            pub fn parse(text: &str) -> Option<$name> {
                let body = text.strip_prefix($prefix)?;
                is_ulid_body(body).then(|| $name(Text::from(text)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Wraps a value read back from our own database.
            pub fn from_trusted(text: String) -> $name {
                $name(Text::from(text))
            }
        }

        /// Maps keyed by an id can be searched with its text (a row's, a URL's).
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A ledger account.
    AccountId, "acct_");
prefixed_id!(
    /// A ledger transaction.
    TransactionId, "ltx_");
prefixed_id!(
    /// An organization (tenant root).
    OrgId, "org_");
prefixed_id!(
    /// An API key (not its secret).
    ApiKeyId, "key_");
prefixed_id!(
    /// A long-running operation (`202 Accepted`, polled at `/v1/operations/{id}`).
    OperationId, "op_");
prefixed_id!(
    /// An imported bank statement (reconciliation).
    BankStatementId, "bst_");
prefixed_id!(
    /// One line of an imported bank statement.
    BankStatementLineId, "bsl_");
prefixed_id!(
    /// A link between a statement line and a ledger transaction.
    BankMatchId, "bmt_");
prefixed_id!(
    /// A manual reconciliation action, as audited.
    BankReconciliationActionId, "bra_");
prefixed_id!(
    /// An event: something that happened, as integrators learn of it (`/v1/events`, webhooks).
    EventId, "evt_");
prefixed_id!(
    /// A webhook endpoint: a URL that receives events.
    WebhookEndpointId, "we_");
prefixed_id!(
    /// One attempt at delivering an event to a webhook endpoint.
    WebhookAttemptId, "wha_");

impl EventId {
    /// The id of the `index`-th event projected from ledger log record `seq`
    /// written at `at`: a ULID whose time is the change's (so ids sort like
    /// `created_at` and a time filter is an id range) and whose other 80 bits
    /// are the log position (so a re-projection makes the same ids, and the
    /// events of one instant sort in log order). Unguessable it is not; every
    /// read is filtered by tenant, so guessing one gains nothing.
    pub fn for_log(at: crate::clock::Timestamp, seq: i64, index: usize) -> EventId {
        let millis = u64::try_from(at.micros().max(0) / 1000).unwrap_or(0);
        let low = (u128::from(seq.max(0) as u64) << 16) | (index.min(usize::from(u16::MAX)) as u128);
        EventId(prefixed_ulid(EventId::PREFIX, ulid::Ulid::from_parts(millis, low)))
    }

    /// The smallest event id of the millisecond `at` falls in: events created
    /// at or after `at` have ids at or above it.
    pub fn floor_of(at: crate::clock::Timestamp) -> String {
        let millis = u64::try_from(at.micros().max(0) / 1000).unwrap_or(0);
        prefixed_ulid(EventId::PREFIX, ulid::Ulid::from_parts(millis, 0)).to_string()
    }

    /// The id as a number (its ULID): the next events of a log record have
    /// the next numbers, which is how a run of events stored as one row names
    /// its members ([`EventId::from_value`]).
    pub fn value(&self) -> Option<u128> {
        self.as_str().strip_prefix(EventId::PREFIX).and_then(ulid_value)
    }

    /// The event id of ULID `value` ([`EventId::value`]'s inverse).
    pub fn from_value(value: u128) -> EventId {
        EventId(prefixed_ulid(EventId::PREFIX, ulid::Ulid(value)))
    }

    /// Whether this is the id of the event after `previous` in the same log
    /// record (its index one more, within the index's 16 bits).
    pub fn follows(&self, previous: &EventId) -> bool {
        matches!((previous.value(), self.value()), (Some(a), Some(b)) if a & 0xFFFF != 0xFFFF && b == a + 1)
    }
}

prefixed_id!(
    /// A customer: a person or a business the fintech serves (issue 6).
    CustomerId, "cus_");
prefixed_id!(
    /// A document a customer supplied (stored encrypted).
    CustomerDocumentId, "cdoc_");
prefixed_id!(
    /// A consent a customer granted (immutable; revocation is another record).
    ConsentId, "cns_");
prefixed_id!(
    /// The revocation of a consent.
    ConsentRevocationId, "cnr_");
prefixed_id!(
    /// One sanctions screening of a customer against the loaded lists.
    ScreeningId, "scr_");
prefixed_id!(
    /// One loaded snapshot of a sanctions list or watchlist.
    SanctionsListId, "sls_");
prefixed_id!(
    /// One KYC status change of a customer, with who decided and why.
    KycEventId, "kev_");
prefixed_id!(
    /// One audit record of a change to a customer-side resource.
    AuditEventId, "aev_");

/// One leg of a transaction. Its id is the transaction's ULID followed by
/// the entry's two-digit position, so an entry sorts with its transaction and
/// the entries of one transaction are one contiguous key range.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(Text);

impl EntryId {
    pub const PREFIX: &'static str = "ent_";

    /// The id of the entry at `position` (0-based, < 100) of a transaction.
    pub fn for_transaction(transaction: &TransactionId, position: usize, posted_leg: bool) -> EntryId {
        let body = &transaction.as_str()[TransactionId::PREFIX.len()..];
        // Pending legs are numbered 00..99, posted legs p0..p99 so both can coexist.
        let leg = if posted_leg { 'p' } else { 'h' };
        // Built by hand: two per transfer, and `format!` showed in the
        // engine's profile. Positions under 100 (all but huge transactions)
        // are written on the stack, so the id costs one allocation (the
        // `Arc`), not a `String` copied into it.
        if position < 100 && body.len() == ULID_CHARS {
            let mut text = [0u8; Self::PREFIX.len() + ULID_CHARS + 3];
            let (prefix, rest) = text.split_at_mut(Self::PREFIX.len());
            prefix.copy_from_slice(Self::PREFIX.as_bytes());
            let (ulid, suffix) = rest.split_at_mut(ULID_CHARS);
            ulid.copy_from_slice(body.as_bytes());
            suffix.copy_from_slice(&[leg as u8, b'0' + (position / 10) as u8, b'0' + (position % 10) as u8]);
            if let Ok(text) = std::str::from_utf8(&text) {
                return EntryId(Text::from(text));
            }
        }
        let mut text = String::with_capacity(Self::PREFIX.len() + body.len() + 4);
        text.push_str(Self::PREFIX);
        text.push_str(body);
        text.push(leg);
        if position < 100 {
            text.push(char::from(b'0' + (position / 10) as u8));
            text.push(char::from(b'0' + (position % 10) as u8));
        } else {
            text.push_str(&position.to_string());
        }
        EntryId(Text::from(text))
    }

    pub fn parse(text: &str) -> Option<EntryId> {
        let body = text.strip_prefix(Self::PREFIX)?;
        if body.len() != ULID_CHARS + 3 || !body.is_ascii() {
            return None;
        }
        let (ulid, rest) = body.split_at(ULID_CHARS);
        let (leg, pos) = rest.split_at(1);
        (is_ulid_body(ulid) && (leg == "h" || leg == "p") && pos.bytes().all(|b| b.is_ascii_digit())).then(|| EntryId(Text::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_trusted(text: String) -> EntryId {
        EntryId(Text::from(text))
    }

    /// The first and one-past-last possible entry ids of a transaction: a key range.
    pub fn range_of(transaction: &TransactionId) -> (String, String) {
        let body = &transaction.as_str()[TransactionId::PREFIX.len()..];
        (format!("{}{}", Self::PREFIX, body), format!("{}{}~", Self::PREFIX, body))
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

prefixed_id!(
    /// An ACH counterparty (issue 7).
    CounterpartyId, "cp_");
prefixed_id!(
    /// A counterparty's bank account.
    BankAccountId, "ba_");
prefixed_id!(
    /// A payment on a rail.
    PaymentId, "pay_");
prefixed_id!(
    /// A NACHA file Settle cut (or imported).
    AchFileId, "achf_");
prefixed_id!(
    /// A sandbox test clock: a frozen time that payments created with it follow.
    TestClockId, "clock_");
prefixed_id!(
    /// A compliance review a person has to look at (opened by the ACH rail on
    /// an unauthorized or frozen-account return).
    ComplianceReviewId, "crv_");

/// Makes new ids. Monotonic within a process: two ids made in the same
/// millisecond still sort in creation order.
pub struct IdGenerator {
    inner: Mutex<ulid::Generator>,
}

impl Default for IdGenerator {
    fn default() -> Self {
        IdGenerator { inner: Mutex::new(ulid::Generator::new()) }
    }
}

impl IdGenerator {
    fn next(&self, prefix: &str) -> Text {
        let ulid = {
            let mut generator = match self.inner.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            // The generator only fails when 2^80 ids are made in one millisecond;
            // a fresh random ULID is then still unique with overwhelming odds.
            generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
        };
        prefixed_ulid(prefix, ulid)
    }

    pub fn account(&self) -> AccountId {
        AccountId(self.next(AccountId::PREFIX))
    }

    pub fn transaction(&self) -> TransactionId {
        TransactionId(self.next(TransactionId::PREFIX))
    }

    pub fn org(&self) -> OrgId {
        OrgId(self.next(OrgId::PREFIX))
    }

    pub fn api_key(&self) -> ApiKeyId {
        ApiKeyId(self.next(ApiKeyId::PREFIX))
    }

    pub fn operation(&self) -> OperationId {
        OperationId(self.next(OperationId::PREFIX))
    }

    pub fn bank_statement(&self) -> BankStatementId {
        BankStatementId(self.next(BankStatementId::PREFIX))
    }

    pub fn bank_statement_line(&self) -> BankStatementLineId {
        BankStatementLineId(self.next(BankStatementLineId::PREFIX))
    }

    pub fn bank_match(&self) -> BankMatchId {
        BankMatchId(self.next(BankMatchId::PREFIX))
    }

    pub fn bank_reconciliation_action(&self) -> BankReconciliationActionId {
        BankReconciliationActionId(self.next(BankReconciliationActionId::PREFIX))
    }

    pub fn event(&self) -> EventId {
        EventId(self.next(EventId::PREFIX))
    }

    pub fn webhook_endpoint(&self) -> WebhookEndpointId {
        WebhookEndpointId(self.next(WebhookEndpointId::PREFIX))
    }

    pub fn webhook_attempt(&self) -> WebhookAttemptId {
        WebhookAttemptId(self.next(WebhookAttemptId::PREFIX))
    }

    pub fn customer(&self) -> CustomerId {
        CustomerId(self.next(CustomerId::PREFIX))
    }

    pub fn customer_document(&self) -> CustomerDocumentId {
        CustomerDocumentId(self.next(CustomerDocumentId::PREFIX))
    }

    pub fn consent(&self) -> ConsentId {
        ConsentId(self.next(ConsentId::PREFIX))
    }

    pub fn consent_revocation(&self) -> ConsentRevocationId {
        ConsentRevocationId(self.next(ConsentRevocationId::PREFIX))
    }

    pub fn screening(&self) -> ScreeningId {
        ScreeningId(self.next(ScreeningId::PREFIX))
    }

    pub fn sanctions_list(&self) -> SanctionsListId {
        SanctionsListId(self.next(SanctionsListId::PREFIX))
    }

    pub fn kyc_event(&self) -> KycEventId {
        KycEventId(self.next(KycEventId::PREFIX))
    }

    pub fn counterparty(&self) -> CounterpartyId {
        CounterpartyId(self.next(CounterpartyId::PREFIX))
    }

    pub fn bank_account(&self) -> BankAccountId {
        BankAccountId(self.next(BankAccountId::PREFIX))
    }

    pub fn payment(&self) -> PaymentId {
        PaymentId(self.next(PaymentId::PREFIX))
    }

    pub fn ach_file(&self) -> AchFileId {
        AchFileId(self.next(AchFileId::PREFIX))
    }

    pub fn test_clock(&self) -> TestClockId {
        TestClockId(self.next(TestClockId::PREFIX))
    }

    pub fn compliance_review(&self) -> ComplianceReviewId {
        ComplianceReviewId(self.next(ComplianceReviewId::PREFIX))
    }

    pub fn audit_event(&self) -> AuditEventId {
        AuditEventId(self.next(AuditEventId::PREFIX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ulid_body_takes_exactly_the_lowercase_crockford_digits() {
        let valid = "01m8xc3x7s19vxwvtgqdh9psj3";
        for b in 0..=u8::MAX {
            let mut body = valid.as_bytes().to_vec();
            body[9] = b;
            let accepted = std::str::from_utf8(&body).is_ok_and(is_ulid_body);
            assert_eq!(accepted, CROCKFORD.contains(&b), "byte {b:#04x}");
        }
        assert!(is_ulid_body(valid) && is_ulid_body("7zzzzzzzzzzzzzzzzzzzzzzzzz"));
        assert!(!is_ulid_body("8zzzzzzzzzzzzzzzzzzzzzzzzz") && !is_ulid_body("01m8xc3x7s19vxwvtgqdh9psj") && !is_ulid_body("01M8XC3X7S19VXWVTGQDH9PSJ3"));
    }

    #[test]
    fn the_ids_after_an_event_are_its_records_next_indexes() {
        let at = crate::clock::Timestamp::from_micros(1_796_323_558_998_520);
        let first = EventId::for_log(at, 77, 3);
        let value = first.value().expect("an event id");
        for n in [0, 1, 2, 500] {
            assert_eq!(EventId::from_value(value + n as u128), EventId::for_log(at, 77, 3 + n), "{n}");
        }
        assert_eq!(EventId::from_trusted(String::from("evt_x")).value(), None);
        for index in [0, 1, 31, 32, 1023, 1024, usize::from(u16::MAX) - 1, usize::from(u16::MAX)] {
            let id = EventId::for_log(at, 77, index);
            let next = EventId::for_log(at, 77, index + 1);
            assert_eq!(next.follows(&id), index < usize::from(u16::MAX), "{index}: the index would carry into the record's seq");
            assert!(!id.follows(&id) && !id.follows(&next));
        }
        assert!(!EventId::for_log(at, 78, 0).follows(&EventId::for_log(at, 77, 0)), "another record");
        assert!(!EventId::from_trusted(String::from("evt_x")).follows(&first));
        assert_eq!(first.value().map(EventId::from_value), Some(first.clone()));
    }

    /// Our encoding is the `ulid` crate's text, lowercased, at the edges and between.
    #[test]
    fn prefixed_ulids_read_as_the_ulid_crate_writes_them() {
        let mut values = vec![0u128, 1, 31, 32, u128::MAX, u128::MAX >> 3, 1u128 << 125, (1u128 << 125) - 1];
        values.extend((0..200).map(|_| ulid::Ulid::new().0));
        for value in values {
            let ulid = ulid::Ulid(value);
            for prefix in ["ltx_", "clock_", "averylongprefix_"] {
                assert_eq!(&*prefixed_ulid(prefix, ulid), format!("{prefix}{}", ulid.to_string().to_ascii_lowercase()), "{value}");
            }
        }
        let made = IdGenerator::default().transaction();
        assert!(TransactionId::parse(made.as_str()).is_some(), "{made}");
    }

    #[test]
    fn ids_are_prefixed_and_sort_in_creation_order() {
        let ids = IdGenerator::default();
        let made: Vec<TransactionId> = (0..1000).map(|_| ids.transaction()).collect();
        assert!(made.windows(2).all(|w| w[0] < w[1]));
        assert!(made[0].as_str().starts_with("ltx_"));
        assert_eq!(TransactionId::parse(made[0].as_str()).as_ref(), Some(&made[0]));
    }

    #[test]
    fn malformed_ids_do_not_parse() {
        assert!(AccountId::parse("acct_doesnotexist").is_none());
        assert!(AccountId::parse("ltx_01arz3ndektsv4rrffq69g5fav").is_none());
        assert!(AccountId::parse("acct_01ARZ3NDEKTSV4RRFFQ69G5FAV").is_none());
        // Letters outside Crockford's alphabet (i, l, o, u) and non-ASCII bytes.
        for body in [
            "01arz3ndektsv4rrffq69g5fai",
            "01arz3ndektsv4rrffq69g5fal",
            "01arz3ndektsv4rrffq69g5fao",
            "01arz3ndektsv4rrffq69g5fau",
            "01arz3ndektsv4rrffq69g5f\u{e9}",
        ] {
            assert!(AccountId::parse(&format!("acct_{body}")).is_none(), "{body}");
        }
        assert!(AccountId::parse("acct_01arz3ndektsv4rrffq69g5fav").is_some());
    }

    #[test]
    fn entry_ids_sort_inside_their_transaction_range() {
        let ids = IdGenerator::default();
        let tx = ids.transaction();
        let (lo, hi) = EntryId::range_of(&tx);
        for (pos, posted) in [(0, false), (99, false), (0, true), (42, true)] {
            let e = EntryId::for_transaction(&tx, pos, posted);
            assert!(lo.as_str() <= e.as_str() && e.as_str() < hi.as_str());
            assert_eq!(EntryId::parse(e.as_str()).as_ref(), Some(&e));
        }
        assert_eq!(EntryId::for_transaction(&tx, 7, true).as_str(), format!("ent_{}p07", &tx.as_str()[4..]));
        assert_eq!(EntryId::for_transaction(&tx, 100, false).as_str(), format!("ent_{}h100", &tx.as_str()[4..]));
        let next = ids.transaction();
        assert!(EntryId::for_transaction(&next, 0, false).as_str() > hi.as_str());
    }
}
