//! NACHA files: 94-character records — file header (`1`), batch header (`5`),
//! entry detail (`6`), addenda (`7`), batch control (`8`), file control
//! (`9`) — blocked to a multiple of ten records with `9`-filled records.
//!
//! [`build_file`] writes an origination file from entries; [`parse`] reads any
//! file (origination, returns with addenda `99`, notifications of change with
//! addenda `98`) and checks every control total, reporting the 1-based line
//! of the first problem.
//!
//! Fidelity: alphanumeric fields are kept exactly as written (their padding
//! and justification included), numeric fields are parsed to numbers and
//! written zero-padded, so a parsed file writes back byte for byte. The only
//! normalizations: `\r\n` line endings become `\n`, and padding is always
//! written to the next multiple of ten records (extra `9` records past that
//! are dropped).

use std::fmt;

use crate::routing::RoutingNumber;

/// A record is 94 characters.
pub const RECORD_LEN: usize = 94;
/// Records per block.
pub const BLOCKING_FACTOR: usize = 10;
/// The largest file [`parse`] accepts: 10 MiB is about 110,000 records, more
/// than a day's return file for any originator Settle serves.
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
/// An entry's amount field is ten digits: $99,999,999.99.
pub const MAX_ENTRY_AMOUNT_MINOR: i64 = 9_999_999_999;
/// The entry hash keeps its low ten digits.
const ENTRY_HASH_MODULUS: u64 = 10_000_000_000;
/// Totals are twelve digits.
const MAX_TOTAL_MINOR: i64 = 999_999_999_999;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub header: FileHeader,
    pub batches: Vec<Batch>,
    pub control: FileControl,
    /// Whether the text ended with a newline after its last record.
    pub trailing_newline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    pub priority_code: u32,
    /// Ten characters as written (usually a space and a routing number).
    pub immediate_destination: String,
    pub immediate_origin: String,
    /// `YYMMDD`.
    pub creation_date: String,
    /// `HHMM`.
    pub creation_time: String,
    pub file_id_modifier: char,
    pub destination_name: String,
    pub origin_name: String,
    pub reference_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub header: BatchHeader,
    pub entries: Vec<Entry>,
    pub control: BatchControl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchHeader {
    pub service_class_code: u32,
    pub company_name: String,
    pub company_discretionary_data: String,
    pub company_identification: String,
    pub sec_code: String,
    pub company_entry_description: String,
    pub company_descriptive_date: String,
    /// `YYMMDD` as written (returns may carry placeholders such as `000101`).
    pub effective_entry_date: String,
    /// Julian settlement date, filled by the ACH operator.
    pub settlement_date: String,
    pub originator_status_code: char,
    pub odfi_identification: String,
    pub batch_number: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub transaction_code: u32,
    /// The receiving bank's routing number, first eight digits.
    pub rdfi_identification: String,
    pub check_digit: char,
    /// Seventeen characters as written. Personal data: never log it.
    pub dfi_account_number: String,
    pub amount_minor: i64,
    pub individual_identification: String,
    pub individual_name: String,
    pub discretionary_data: String,
    pub addenda_record_indicator: char,
    pub trace_number: String,
    pub addenda: Vec<Addenda>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addenda {
    /// Type `05`: payment related information.
    PaymentRelated { information: String, sequence_number: u32, entry_sequence_number: u32 },
    /// Type `99`: a return.
    Return(ReturnAddenda),
    /// Type `98`: a notification of change.
    Change(ChangeAddenda),
    /// Any other type, kept whole.
    Other { type_code: String, raw: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnAddenda {
    pub reason_code: String,
    pub original_trace_number: String,
    pub date_of_death: String,
    pub original_rdfi_identification: String,
    pub information: String,
    pub trace_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeAddenda {
    pub change_code: String,
    pub original_trace_number: String,
    pub reserved: String,
    pub original_rdfi_identification: String,
    pub corrected_data: String,
    pub reserved_2: String,
    pub trace_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchControl {
    pub service_class_code: u32,
    pub entry_addenda_count: u64,
    pub entry_hash: u64,
    pub total_debit_minor: i64,
    pub total_credit_minor: i64,
    pub company_identification: String,
    pub message_authentication_code: String,
    pub reserved: String,
    pub odfi_identification: String,
    pub batch_number: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileControl {
    pub batch_count: u64,
    pub block_count: u64,
    pub entry_addenda_count: u64,
    pub entry_hash: u64,
    pub total_debit_minor: i64,
    pub total_credit_minor: i64,
    pub reserved: String,
}

impl Entry {
    /// Debit codes end in 5–9 (27 debit, 26 return of a debit, 28 prenote…);
    /// credit codes in 0–4.
    pub fn is_debit(&self) -> bool {
        self.transaction_code % 10 >= 5
    }

    pub fn return_addenda(&self) -> Option<&ReturnAddenda> {
        self.addenda.iter().find_map(|a| match a {
            Addenda::Return(r) => Some(r),
            _ => None,
        })
    }

    pub fn change_addenda(&self) -> Option<&ChangeAddenda> {
        self.addenda.iter().find_map(|a| match a {
            Addenda::Change(c) => Some(c),
            _ => None,
        })
    }
}

/// Totals of a list of entries: what the controls must say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    entry_addenda_count: u64,
    entry_hash: u64,
    debit_minor: i64,
    credit_minor: i64,
}

impl Totals {
    fn add_entry(&mut self, entry: &Entry) -> Option<()> {
        self.entry_addenda_count = self.entry_addenda_count.checked_add(1 + entry.addenda.len() as u64)?;
        let rdfi: u64 = entry.rdfi_identification.trim().parse().ok()?;
        self.entry_hash = (self.entry_hash + rdfi) % ENTRY_HASH_MODULUS;
        if entry.is_debit() {
            self.debit_minor = self.debit_minor.checked_add(entry.amount_minor)?;
        } else {
            self.credit_minor = self.credit_minor.checked_add(entry.amount_minor)?;
        }
        Some(())
    }

    fn add(&mut self, other: Totals) -> Option<()> {
        self.entry_addenda_count = self.entry_addenda_count.checked_add(other.entry_addenda_count)?;
        self.entry_hash = (self.entry_hash + other.entry_hash) % ENTRY_HASH_MODULUS;
        self.debit_minor = self.debit_minor.checked_add(other.debit_minor)?;
        self.credit_minor = self.credit_minor.checked_add(other.credit_minor)?;
        Some(())
    }
}

// ---------------------------------------------------------------- writing

/// `text` left-justified in `width` characters: non-ASCII and control
/// characters become spaces, longer text is cut. Fields are fixed width.
pub fn alpha(text: &str, width: usize) -> String {
    let mut out: String = text.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { ' ' }).take(width).collect();
    while out.len() < width {
        out.push(' ');
    }
    out
}

/// `value` zero-padded to `width` digits, keeping the low digits if longer.
fn numeric(value: u64, width: usize) -> String {
    let text = format!("{value:0width$}");
    text[text.len() - width..].to_string()
}

fn amount(value: i64, width: usize) -> String {
    numeric(u64::try_from(value).unwrap_or(0), width)
}

impl File {
    /// The file as text, blocked with `9` records to a multiple of ten.
    pub fn write(&self) -> String {
        let mut records: Vec<String> = Vec::with_capacity(2 + self.batches.len() * 3);
        let h = &self.header;
        records.push(format!(
            "1{}{}{}{}{}{}094101{}{}{}",
            numeric(u64::from(h.priority_code), 2),
            alpha(&h.immediate_destination, 10),
            alpha(&h.immediate_origin, 10),
            alpha(&h.creation_date, 6),
            alpha(&h.creation_time, 4),
            h.file_id_modifier,
            alpha(&h.destination_name, 23),
            alpha(&h.origin_name, 23),
            alpha(&h.reference_code, 8),
        ));
        for batch in &self.batches {
            let b = &batch.header;
            records.push(format!(
                "5{}{}{}{}{}{}{}{}{}{}{}{}",
                numeric(u64::from(b.service_class_code), 3),
                alpha(&b.company_name, 16),
                alpha(&b.company_discretionary_data, 20),
                alpha(&b.company_identification, 10),
                alpha(&b.sec_code, 3),
                alpha(&b.company_entry_description, 10),
                alpha(&b.company_descriptive_date, 6),
                alpha(&b.effective_entry_date, 6),
                alpha(&b.settlement_date, 3),
                b.originator_status_code,
                alpha(&b.odfi_identification, 8),
                numeric(u64::from(b.batch_number), 7),
            ));
            for entry in &batch.entries {
                records.push(format!(
                    "6{}{}{}{}{}{}{}{}{}{}",
                    numeric(u64::from(entry.transaction_code), 2),
                    alpha(&entry.rdfi_identification, 8),
                    entry.check_digit,
                    alpha(&entry.dfi_account_number, 17),
                    amount(entry.amount_minor, 10),
                    alpha(&entry.individual_identification, 15),
                    alpha(&entry.individual_name, 22),
                    alpha(&entry.discretionary_data, 2),
                    entry.addenda_record_indicator,
                    alpha(&entry.trace_number, 15),
                ));
                for addenda in &entry.addenda {
                    records.push(match addenda {
                        Addenda::PaymentRelated { information, sequence_number, entry_sequence_number } => {
                            format!("705{}{}{}", alpha(information, 80), numeric(u64::from(*sequence_number), 4), numeric(u64::from(*entry_sequence_number), 7))
                        }
                        Addenda::Return(r) => format!(
                            "799{}{}{}{}{}{}",
                            alpha(&r.reason_code, 3),
                            alpha(&r.original_trace_number, 15),
                            alpha(&r.date_of_death, 6),
                            alpha(&r.original_rdfi_identification, 8),
                            alpha(&r.information, 44),
                            alpha(&r.trace_number, 15)
                        ),
                        Addenda::Change(c) => format!(
                            "798{}{}{}{}{}{}{}",
                            alpha(&c.change_code, 3),
                            alpha(&c.original_trace_number, 15),
                            alpha(&c.reserved, 6),
                            alpha(&c.original_rdfi_identification, 8),
                            alpha(&c.corrected_data, 29),
                            alpha(&c.reserved_2, 15),
                            alpha(&c.trace_number, 15)
                        ),
                        Addenda::Other { raw, .. } => alpha(raw, RECORD_LEN),
                    });
                }
            }
            let c = &batch.control;
            records.push(format!(
                "8{}{}{}{}{}{}{}{}{}{}",
                numeric(u64::from(c.service_class_code), 3),
                numeric(c.entry_addenda_count, 6),
                numeric(c.entry_hash, 10),
                amount(c.total_debit_minor, 12),
                amount(c.total_credit_minor, 12),
                alpha(&c.company_identification, 10),
                alpha(&c.message_authentication_code, 19),
                alpha(&c.reserved, 6),
                alpha(&c.odfi_identification, 8),
                numeric(u64::from(c.batch_number), 7),
            ));
        }
        let c = &self.control;
        records.push(format!(
            "9{}{}{}{}{}{}{}",
            numeric(c.batch_count, 6),
            numeric(c.block_count, 6),
            numeric(c.entry_addenda_count, 8),
            numeric(c.entry_hash, 10),
            amount(c.total_debit_minor, 12),
            amount(c.total_credit_minor, 12),
            alpha(&c.reserved, 39),
        ));
        while !records.len().is_multiple_of(BLOCKING_FACTOR) {
            records.push("9".repeat(RECORD_LEN));
        }
        let mut text = records.join("\n");
        if self.trailing_newline {
            text.push('\n');
        }
        text
    }

    /// Recomputes every batch control and the file control from the entries
    /// (after entries were changed, for example to answer a file with returns).
    /// Refuses totals that do not fit their fields.
    pub fn refresh_controls(&mut self) -> Result<(), BuildFileError> {
        let mut file_totals = Totals::default();
        for batch in &mut self.batches {
            let mut totals = Totals::default();
            for entry in &batch.entries {
                totals.add_entry(entry).ok_or(BuildFileError::TotalOverflow)?;
            }
            if totals.debit_minor > MAX_TOTAL_MINOR || totals.credit_minor > MAX_TOTAL_MINOR {
                return Err(BuildFileError::TotalOverflow);
            }
            batch.control.entry_addenda_count = totals.entry_addenda_count;
            batch.control.entry_hash = totals.entry_hash;
            batch.control.total_debit_minor = totals.debit_minor;
            batch.control.total_credit_minor = totals.credit_minor;
            file_totals.add(totals).ok_or(BuildFileError::TotalOverflow)?;
        }
        let records = 2 + self.batches.len() as u64 * 2 + file_totals.entry_addenda_count;
        self.control.batch_count = self.batches.len() as u64;
        self.control.block_count = records.div_ceil(BLOCKING_FACTOR as u64);
        self.control.entry_addenda_count = file_totals.entry_addenda_count;
        self.control.entry_hash = file_totals.entry_hash;
        self.control.total_debit_minor = file_totals.debit_minor;
        self.control.total_credit_minor = file_totals.credit_minor;
        Ok(())
    }

    /// A return file answering every entry of this (origination) file with
    /// `code`: what the receiving banks would send back if they refused all
    /// of it. Used by the sandbox and tests.
    pub fn returned_with(&self, code: &str) -> Result<File, BuildFileError> {
        let mut out = self.clone();
        for batch in &mut out.batches {
            for entry in &mut batch.entries {
                // A return's transaction code: 1 below the original's (22 → 21, 27 → 26).
                entry.transaction_code = entry.transaction_code.saturating_sub(1);
                entry.addenda_record_indicator = '1';
                entry.addenda = vec![Addenda::Return(ReturnAddenda {
                    reason_code: alpha(code, 3),
                    original_trace_number: entry.trace_number.clone(),
                    date_of_death: alpha("", 6),
                    original_rdfi_identification: entry.rdfi_identification.clone(),
                    information: alpha("", 44),
                    trace_number: entry.trace_number.clone(),
                })];
            }
        }
        out.refresh_controls()?;
        Ok(out)
    }

    /// Every entry with the batch it sits in.
    pub fn entries(&self) -> impl Iterator<Item = (&BatchHeader, &Entry)> {
        self.batches.iter().flat_map(|b| b.entries.iter().map(move |e| (&b.header, e)))
    }
}

// --------------------------------------------------------------- building

/// Standard Entry Class codes Settle originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecCode {
    Ppd,
    Ccd,
    Web,
    Tel,
}

impl SecCode {
    pub fn parse(text: &str) -> Option<SecCode> {
        match text {
            "PPD" => Some(SecCode::Ppd),
            "CCD" => Some(SecCode::Ccd),
            "WEB" => Some(SecCode::Web),
            "TEL" => Some(SecCode::Tel),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SecCode::Ppd => "PPD",
            SecCode::Ccd => "CCD",
            SecCode::Web => "WEB",
            SecCode::Tel => "TEL",
        }
    }

    /// Consumer codes (all but CCD): debits need the consumer's authorization.
    pub fn is_consumer(self) -> bool {
        !matches!(self, SecCode::Ccd)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Money leaves the originator to the receiver.
    Credit,
    /// Money is pulled from the receiver to the originator.
    Debit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountType {
    Checking,
    Savings,
}

/// The transaction code of a live entry.
pub fn transaction_code(direction: Direction, account_type: AccountType) -> u32 {
    match (account_type, direction) {
        (AccountType::Checking, Direction::Credit) => 22,
        (AccountType::Checking, Direction::Debit) => 27,
        (AccountType::Savings, Direction::Credit) => 32,
        (AccountType::Savings, Direction::Debit) => 37,
    }
}

/// The transaction code of a prenote (a zero-dollar entry that checks the
/// receiving account before live entries): one above the live entry's
/// (22 → 23, 27 → 28, 32 → 33, 37 → 38).
pub fn prenote_transaction_code(direction: Direction, account_type: AccountType) -> u32 {
    transaction_code(direction, account_type) + 1
}

/// Who sends the file: from the server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originator {
    /// The ACH operator or bank receiving the file (routing number).
    pub immediate_destination: RoutingNumber,
    pub immediate_destination_name: String,
    /// Usually the ODFI's routing number, or a 10-character company id.
    pub immediate_origin: String,
    pub immediate_origin_name: String,
    pub company_name: String,
    /// Ten characters, usually `1` + EIN.
    pub company_identification: String,
    /// The originating bank; its first eight digits start every trace number.
    pub odfi: RoutingNumber,
}

/// One payment to put in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEntry {
    pub direction: Direction,
    pub account_type: AccountType,
    pub routing_number: RoutingNumber,
    pub account_number: String,
    pub amount_minor: i64,
    /// The originator's reference for the receiver (15 characters are kept).
    pub individual_identification: String,
    pub individual_name: String,
    pub sec_code: SecCode,
    pub company_entry_description: String,
    /// `YYMMDD`.
    pub effective_date: String,
    pub addenda: Option<String>,
    /// The low seven digits of the trace number.
    pub trace_sequence: u32,
    /// A prenote: a zero-dollar entry with the prenote transaction code
    /// ([`prenote_transaction_code`]); its amount must be 0.
    pub prenote: bool,
    /// `Some`: this is not a payment but the dishonor of a return of the
    /// payment these fields describe (its own batch, the return's
    /// transaction code, a dishonored-return addenda `99`).
    pub dishonor: Option<Dishonor>,
}

/// A dishonored return (NACHA Operating Guidelines, dishonored returns): the
/// ODFI sends a return it must not accept back to the RDFI within five
/// banking days of the return's settlement, for example untimely (`R68`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dishonor {
    /// `R61`, `R67`, `R68`, `R69` or `R70`.
    pub dishonor_code: String,
    /// The original entry's trace number.
    pub original_trace_number: String,
    /// The return entry's trace number.
    pub return_trace_number: String,
    /// The return's settlement date as a Julian day (`DDD`), blank if unknown.
    pub return_settlement_date: String,
    /// The return's reason code (`R01`…); its two digits are written.
    pub return_reason_code: String,
}

impl Dishonor {
    /// The dishonored-return addenda's 44 characters between the original
    /// RDFI and the trace number: reserved (3), return trace number (15),
    /// return settlement date (3), return reason code digits (2), addenda
    /// information (21).
    pub fn information(&self) -> String {
        let reason = self.return_reason_code.trim().trim_start_matches('R');
        format!("{}{}{}{}{}", alpha("", 3), alpha(&self.return_trace_number, 15), alpha(&self.return_settlement_date, 3), alpha(reason, 2), alpha("", 21))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildFileError {
    #[error("entry {index}: the amount is negative or above 99,999,999.99, or a prenote's is not zero")]
    Amount { index: usize },
    #[error("a batch's totals exceed twelve digits")]
    TotalOverflow,
    #[error("a file holds at least one entry")]
    Empty,
}

/// The trace number of an entry: the ODFI's first eight digits and a
/// seven-digit sequence.
pub fn trace_number(odfi: &RoutingNumber, sequence: u32) -> String {
    format!("{}{}", odfi.identification(), numeric(u64::from(sequence), 7))
}

/// The `n`th (0-based) file of a day's file id modifier: `A`–`Z`, then `0`–`9`.
pub fn file_id_modifier(n: u32) -> Option<char> {
    match n {
        0..=25 => char::from_u32(u32::from(b'A') + n),
        26..=35 => char::from_u32(u32::from(b'0') + n - 26),
        _ => None,
    }
}

/// What entries of one batch share: SEC code, entry description, effective
/// date, and whether they are dishonored returns (never mixed with payments).
type BatchKey = (SecCode, String, String, bool);

/// Builds an origination file. Entries are grouped into batches by SEC code,
/// entry description and effective date (the company is the one originator),
/// in the order each group first appears; within a batch entries keep their
/// order, so trace numbers given in ascending order stay ascending.
/// `created` is `(YYMMDD, HHMM)`.
pub fn build_file(originator: &Originator, created: (&str, &str), modifier: char, entries: &[OutgoingEntry]) -> Result<File, BuildFileError> {
    if entries.is_empty() {
        return Err(BuildFileError::Empty);
    }
    let mut groups: Vec<(BatchKey, Vec<(usize, &OutgoingEntry)>)> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if entry.amount_minor < 0 || entry.amount_minor > MAX_ENTRY_AMOUNT_MINOR || (entry.prenote && entry.amount_minor != 0) {
            return Err(BuildFileError::Amount { index });
        }
        let key = (entry.sec_code, alpha(&entry.company_entry_description, 10), entry.effective_date.clone(), entry.dishonor.is_some());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push((index, entry)),
            None => groups.push((key, vec![(index, entry)])),
        }
    }
    let odfi_id = originator.odfi.identification();
    let mut batches = Vec::with_capacity(groups.len());
    let mut file_totals = Totals::default();
    for (batch_index, ((sec, description, effective, _), members)) in groups.into_iter().enumerate() {
        let batch_number = u32::try_from(batch_index + 1).map_err(|_| BuildFileError::TotalOverflow)?;
        let mut rows = Vec::with_capacity(members.len());
        let mut totals = Totals::default();
        for (_, e) in members {
            let trace = trace_number(&originator.odfi, e.trace_sequence);
            let (code, addenda): (u32, Vec<Addenda>) = match &e.dishonor {
                // A return's transaction code is one below the original's (22 → 21, 27 → 26).
                Some(d) => (
                    transaction_code(e.direction, e.account_type) - 1,
                    vec![Addenda::Return(ReturnAddenda {
                        reason_code: alpha(&d.dishonor_code, 3),
                        original_trace_number: alpha(&d.original_trace_number, 15),
                        date_of_death: alpha("", 6),
                        original_rdfi_identification: e.routing_number.identification(),
                        information: d.information(),
                        trace_number: trace.clone(),
                    })],
                ),
                None => (
                    if e.prenote { prenote_transaction_code(e.direction, e.account_type) } else { transaction_code(e.direction, e.account_type) },
                    e.addenda
                        .iter()
                        .map(|info| Addenda::PaymentRelated {
                            information: alpha(info, 80),
                            sequence_number: 1,
                            entry_sequence_number: e.trace_sequence % 10_000_000,
                        })
                        .collect(),
                ),
            };
            let entry = Entry {
                transaction_code: code,
                rdfi_identification: e.routing_number.identification(),
                check_digit: char::from(b'0' + e.routing_number.check()),
                dfi_account_number: alpha(&e.account_number, 17),
                amount_minor: e.amount_minor,
                individual_identification: alpha(&e.individual_identification, 15),
                individual_name: alpha(&e.individual_name, 22),
                discretionary_data: alpha("", 2),
                addenda_record_indicator: if addenda.is_empty() { '0' } else { '1' },
                trace_number: trace,
                addenda,
            };
            totals.add_entry(&entry).ok_or(BuildFileError::TotalOverflow)?;
            rows.push(entry);
        }
        if totals.debit_minor > MAX_TOTAL_MINOR || totals.credit_minor > MAX_TOTAL_MINOR {
            return Err(BuildFileError::TotalOverflow);
        }
        let service_class_code = match (rows.iter().any(Entry::is_debit), rows.iter().any(|e| !e.is_debit())) {
            (true, false) => 225,
            (false, true) => 220,
            _ => 200,
        };
        file_totals.add(totals).ok_or(BuildFileError::TotalOverflow)?;
        batches.push(Batch {
            header: BatchHeader {
                service_class_code,
                company_name: alpha(&originator.company_name, 16),
                company_discretionary_data: alpha("", 20),
                company_identification: alpha(&originator.company_identification, 10),
                sec_code: sec.as_str().to_string(),
                company_entry_description: description,
                company_descriptive_date: alpha("", 6),
                effective_entry_date: alpha(&effective, 6),
                settlement_date: alpha("", 3),
                originator_status_code: '1',
                odfi_identification: odfi_id.clone(),
                batch_number,
            },
            entries: rows,
            control: BatchControl {
                service_class_code,
                entry_addenda_count: totals.entry_addenda_count,
                entry_hash: totals.entry_hash,
                total_debit_minor: totals.debit_minor,
                total_credit_minor: totals.credit_minor,
                company_identification: alpha(&originator.company_identification, 10),
                message_authentication_code: alpha("", 19),
                reserved: alpha("", 6),
                odfi_identification: odfi_id.clone(),
                batch_number,
            },
        });
    }
    if file_totals.debit_minor > MAX_TOTAL_MINOR || file_totals.credit_minor > MAX_TOTAL_MINOR {
        return Err(BuildFileError::TotalOverflow);
    }
    let record_count = 2 + batches.len() as u64 * 2 + file_totals.entry_addenda_count;
    let block_count = record_count.div_ceil(BLOCKING_FACTOR as u64);
    Ok(File {
        header: FileHeader {
            priority_code: 1,
            immediate_destination: format!(" {}", originator.immediate_destination),
            immediate_origin: format!("{:>10}", alpha(&originator.immediate_origin, 10).trim_end()),
            creation_date: alpha(created.0, 6),
            creation_time: alpha(created.1, 4),
            file_id_modifier: modifier,
            destination_name: alpha(&originator.immediate_destination_name, 23),
            origin_name: alpha(&originator.immediate_origin_name, 23),
            reference_code: alpha("", 8),
        },
        control: FileControl {
            batch_count: batches.len() as u64,
            block_count,
            entry_addenda_count: file_totals.entry_addenda_count,
            entry_hash: file_totals.entry_hash,
            total_debit_minor: file_totals.debit_minor,
            total_credit_minor: file_totals.credit_minor,
            reserved: alpha("", 39),
        },
        batches,
        trailing_newline: true,
    })
}

// ---------------------------------------------------------------- parsing

/// Where and why a file was refused. `line` is 1-based; 0 for the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    pub line: usize,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    TooLarge,
    Empty,
    NotAscii,
    RecordLength { found: usize },
    UnexpectedRecord { found: char, expected: &'static str },
    InvalidField { field: &'static str },
    ControlMismatch { field: &'static str, expected: u64, found: u64 },
    MissingFileControl,
    BlankLine,
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseErrorKind::TooLarge => write!(f, "the file is larger than {MAX_FILE_BYTES} bytes"),
            ParseErrorKind::Empty => write!(f, "the file is empty"),
            ParseErrorKind::NotAscii => write!(f, "a record holds a character outside printable ASCII"),
            ParseErrorKind::RecordLength { found } => write!(f, "a record is {RECORD_LEN} characters, this one is {found}"),
            ParseErrorKind::UnexpectedRecord { found, expected } => write!(f, "record type {found} where {expected} was expected"),
            ParseErrorKind::InvalidField { field } => write!(f, "field {field} is not valid"),
            ParseErrorKind::ControlMismatch { field, expected, found } => write!(f, "{field} says {found} but the records add up to {expected}"),
            ParseErrorKind::MissingFileControl => write!(f, "the file ends without a file control record (9)"),
            ParseErrorKind::BlankLine => write!(f, "blank line"),
        }
    }
}

struct Record<'a> {
    line: usize,
    text: &'a str,
}

impl<'a> Record<'a> {
    fn field(&self, from: usize, to: usize) -> &'a str {
        // 1-based inclusive positions, as NACHA's tables give them.
        &self.text[from - 1..to]
    }

    fn string(&self, from: usize, to: usize) -> String {
        self.field(from, to).to_string()
    }

    fn number(&self, from: usize, to: usize, field: &'static str) -> Result<u64, ParseError> {
        let text = self.field(from, to);
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.error(ParseErrorKind::InvalidField { field }));
        }
        text.parse().map_err(|_| self.error(ParseErrorKind::InvalidField { field }))
    }

    fn small(&self, from: usize, to: usize, field: &'static str) -> Result<u32, ParseError> {
        let n = self.number(from, to, field)?;
        u32::try_from(n).map_err(|_| self.error(ParseErrorKind::InvalidField { field }))
    }

    fn money(&self, from: usize, to: usize, field: &'static str) -> Result<i64, ParseError> {
        let n = self.number(from, to, field)?;
        i64::try_from(n).map_err(|_| self.error(ParseErrorKind::InvalidField { field }))
    }

    fn char_at(&self, at: usize) -> char {
        char::from(self.text.as_bytes()[at - 1])
    }

    fn kind(&self) -> char {
        self.char_at(1)
    }

    fn error(&self, kind: ParseErrorKind) -> ParseError {
        ParseError { line: self.line, kind }
    }
}

fn check(record: &Record<'_>, field: &'static str, expected: u64, found: u64) -> Result<(), ParseError> {
    if expected == found { Ok(()) } else { Err(record.error(ParseErrorKind::ControlMismatch { field, expected, found })) }
}

fn money_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Parses a NACHA file and checks its structure and every control total.
pub fn parse(text: &str) -> Result<File, ParseError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(ParseError { line: 0, kind: ParseErrorKind::TooLarge });
    }
    let trailing_newline = text.ends_with('\n');
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.trim().is_empty() {
        return Err(ParseError { line: 0, kind: ParseErrorKind::Empty });
    }
    let mut records = Vec::new();
    for (index, raw) in body.split('\n').enumerate() {
        let line = index + 1;
        let text = raw.strip_suffix('\r').unwrap_or(raw);
        if text.is_empty() {
            return Err(ParseError { line, kind: ParseErrorKind::BlankLine });
        }
        if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(ParseError { line, kind: ParseErrorKind::NotAscii });
        }
        if text.len() != RECORD_LEN {
            return Err(ParseError { line, kind: ParseErrorKind::RecordLength { found: text.len() } });
        }
        records.push(Record { line, text });
    }
    let mut iter = records.iter().peekable();
    let first = iter.next().ok_or(ParseError { line: 0, kind: ParseErrorKind::Empty })?;
    if first.kind() != '1' {
        return Err(first.error(ParseErrorKind::UnexpectedRecord { found: first.kind(), expected: "a file header (1)" }));
    }
    let header = parse_file_header(first)?;
    let mut batches = Vec::new();
    let mut totals = Totals::default();
    let control = loop {
        let Some(record) = iter.next() else {
            return Err(ParseError { line: records.len(), kind: ParseErrorKind::MissingFileControl });
        };
        match record.kind() {
            '5' => {
                let batch = parse_batch(record, &mut iter)?;
                let mut batch_totals = Totals::default();
                for entry in &batch.entries {
                    batch_totals.add_entry(entry).ok_or(record.error(ParseErrorKind::InvalidField { field: "amount" }))?;
                }
                totals.add(batch_totals).ok_or(record.error(ParseErrorKind::InvalidField { field: "amount" }))?;
                batches.push(batch);
            }
            '9' => break (record, parse_file_control(record)?),
            found => return Err(record.error(ParseErrorKind::UnexpectedRecord { found, expected: "a batch header (5) or the file control (9)" })),
        }
    };
    let (control_record, control) = control;
    check(control_record, "batch count", batches.len() as u64, control.batch_count)?;
    check(control_record, "entry/addenda count", totals.entry_addenda_count, control.entry_addenda_count)?;
    check(control_record, "entry hash", totals.entry_hash, control.entry_hash)?;
    check(control_record, "total debit", money_u64(totals.debit_minor), money_u64(control.total_debit_minor))?;
    check(control_record, "total credit", money_u64(totals.credit_minor), money_u64(control.total_credit_minor))?;
    let records_before_padding = control_record.line as u64;
    check(control_record, "block count", records_before_padding.div_ceil(BLOCKING_FACTOR as u64), control.block_count)?;
    for padding in iter {
        if padding.text.bytes().any(|b| b != b'9') {
            return Err(padding.error(ParseErrorKind::UnexpectedRecord { found: padding.kind(), expected: "only 9-filled padding after the file control" }));
        }
    }
    Ok(File { header, batches, control, trailing_newline })
}

fn parse_file_header(r: &Record<'_>) -> Result<FileHeader, ParseError> {
    if r.field(35, 37) != "094" {
        return Err(r.error(ParseErrorKind::InvalidField { field: "record size" }));
    }
    if r.field(38, 39) != "10" {
        return Err(r.error(ParseErrorKind::InvalidField { field: "blocking factor" }));
    }
    if r.field(40, 40) != "1" {
        return Err(r.error(ParseErrorKind::InvalidField { field: "format code" }));
    }
    let modifier = r.char_at(34);
    if !modifier.is_ascii_uppercase() && !modifier.is_ascii_digit() {
        return Err(r.error(ParseErrorKind::InvalidField { field: "file id modifier" }));
    }
    Ok(FileHeader {
        priority_code: r.small(2, 3, "priority code")?,
        immediate_destination: r.string(4, 13),
        immediate_origin: r.string(14, 23),
        creation_date: r.string(24, 29),
        creation_time: r.string(30, 33),
        file_id_modifier: modifier,
        destination_name: r.string(41, 63),
        origin_name: r.string(64, 86),
        reference_code: r.string(87, 94),
    })
}

fn parse_batch<'a, 'b>(first: &Record<'a>, iter: &mut std::iter::Peekable<std::slice::Iter<'b, Record<'a>>>) -> Result<Batch, ParseError> {
    let header = BatchHeader {
        service_class_code: r_service_class(first)?,
        company_name: first.string(5, 20),
        company_discretionary_data: first.string(21, 40),
        company_identification: first.string(41, 50),
        sec_code: first.string(51, 53),
        company_entry_description: first.string(54, 63),
        company_descriptive_date: first.string(64, 69),
        effective_entry_date: first.string(70, 75),
        settlement_date: first.string(76, 78),
        originator_status_code: first.char_at(79),
        odfi_identification: first.string(80, 87),
        batch_number: first.small(88, 94, "batch number")?,
    };
    let mut entries: Vec<Entry> = Vec::new();
    loop {
        let Some(record) = iter.next() else {
            return Err(first.error(ParseErrorKind::UnexpectedRecord { found: '5', expected: "a batch closed by its batch control (8)" }));
        };
        match record.kind() {
            '6' => entries.push(parse_entry(record)?),
            '7' => {
                let Some(entry) = entries.last_mut() else {
                    return Err(record.error(ParseErrorKind::UnexpectedRecord { found: '7', expected: "an entry detail (6) before its addenda" }));
                };
                if entry.addenda_record_indicator != '1' {
                    return Err(record.error(ParseErrorKind::UnexpectedRecord { found: '7', expected: "no addenda (the entry's addenda indicator is 0)" }));
                }
                entry.addenda.push(parse_addenda(record)?);
            }
            '8' => {
                let control = parse_batch_control(record)?;
                let mut totals = Totals::default();
                for entry in &entries {
                    totals.add_entry(entry).ok_or(record.error(ParseErrorKind::InvalidField { field: "amount" }))?;
                }
                check(record, "service class code", u64::from(header.service_class_code), u64::from(control.service_class_code))?;
                check(record, "entry/addenda count", totals.entry_addenda_count, control.entry_addenda_count)?;
                check(record, "entry hash", totals.entry_hash, control.entry_hash)?;
                check(record, "total debit", money_u64(totals.debit_minor), money_u64(control.total_debit_minor))?;
                check(record, "total credit", money_u64(totals.credit_minor), money_u64(control.total_credit_minor))?;
                check(record, "batch number", u64::from(header.batch_number), u64::from(control.batch_number))?;
                return Ok(Batch { header, entries, control });
            }
            found => return Err(record.error(ParseErrorKind::UnexpectedRecord { found, expected: "an entry (6), addenda (7) or batch control (8)" })),
        }
    }
}

fn r_service_class(r: &Record<'_>) -> Result<u32, ParseError> {
    let code = r.small(2, 4, "service class code")?;
    if !matches!(code, 200 | 220 | 225 | 280) {
        return Err(r.error(ParseErrorKind::InvalidField { field: "service class code" }));
    }
    Ok(code)
}

fn parse_entry(r: &Record<'_>) -> Result<Entry, ParseError> {
    let rdfi = r.field(4, 11);
    if !rdfi.bytes().all(|b| b.is_ascii_digit()) {
        return Err(r.error(ParseErrorKind::InvalidField { field: "receiving DFI identification" }));
    }
    let indicator = r.char_at(79);
    if indicator != '0' && indicator != '1' {
        return Err(r.error(ParseErrorKind::InvalidField { field: "addenda record indicator" }));
    }
    Ok(Entry {
        transaction_code: r.small(2, 3, "transaction code")?,
        rdfi_identification: rdfi.to_string(),
        check_digit: r.char_at(12),
        dfi_account_number: r.string(13, 29),
        amount_minor: r.money(30, 39, "amount")?,
        individual_identification: r.string(40, 54),
        individual_name: r.string(55, 76),
        discretionary_data: r.string(77, 78),
        addenda_record_indicator: indicator,
        trace_number: r.string(80, 94),
        addenda: Vec::new(),
    })
}

fn parse_addenda(r: &Record<'_>) -> Result<Addenda, ParseError> {
    Ok(match r.field(2, 3) {
        "05" => Addenda::PaymentRelated {
            information: r.string(4, 83),
            sequence_number: r.small(84, 87, "addenda sequence number")?,
            entry_sequence_number: r.small(88, 94, "entry detail sequence number")?,
        },
        "99" => Addenda::Return(ReturnAddenda {
            reason_code: r.string(4, 6),
            original_trace_number: r.string(7, 21),
            date_of_death: r.string(22, 27),
            original_rdfi_identification: r.string(28, 35),
            information: r.string(36, 79),
            trace_number: r.string(80, 94),
        }),
        "98" => Addenda::Change(ChangeAddenda {
            change_code: r.string(4, 6),
            original_trace_number: r.string(7, 21),
            reserved: r.string(22, 27),
            original_rdfi_identification: r.string(28, 35),
            corrected_data: r.string(36, 64),
            reserved_2: r.string(65, 79),
            trace_number: r.string(80, 94),
        }),
        other => Addenda::Other { type_code: other.to_string(), raw: r.text.to_string() },
    })
}

fn parse_batch_control(r: &Record<'_>) -> Result<BatchControl, ParseError> {
    Ok(BatchControl {
        service_class_code: r_service_class(r)?,
        entry_addenda_count: r.number(5, 10, "entry/addenda count")?,
        entry_hash: r.number(11, 20, "entry hash")?,
        total_debit_minor: r.money(21, 32, "total debit")?,
        total_credit_minor: r.money(33, 44, "total credit")?,
        company_identification: r.string(45, 54),
        message_authentication_code: r.string(55, 73),
        reserved: r.string(74, 79),
        odfi_identification: r.string(80, 87),
        batch_number: r.small(88, 94, "batch number")?,
    })
}

fn parse_file_control(r: &Record<'_>) -> Result<FileControl, ParseError> {
    Ok(FileControl {
        batch_count: r.number(2, 7, "batch count")?,
        block_count: r.number(8, 13, "block count")?,
        entry_addenda_count: r.number(14, 21, "entry/addenda count")?,
        entry_hash: r.number(22, 31, "entry hash")?,
        total_debit_minor: r.money(32, 43, "total debit")?,
        total_credit_minor: r.money(44, 55, "total credit")?,
        reserved: r.string(56, 94),
    })
}
