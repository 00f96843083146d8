//! The one shape every format is read into, and the parsers' one error type.

use settle_core::money::Currency;
use sha2::{Digest, Sha256};
use std::fmt;
use time::Date;

/// A statement file format this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// ISO 20022 BankToCustomerStatement (end of day).
    Camt053,
    /// ISO 20022 BankToCustomerDebitCreditNotification (intraday, no balances).
    Camt054,
    /// SWIFT MT940 customer statement.
    Mt940,
    /// BAI2 (ANSI X9.121) cash management balance reporting.
    Bai2,
    /// Delimited text, read through a [`crate::csv::CsvProfile`].
    Csv,
}

impl Format {
    pub const ALL: [Format; 5] = [Format::Camt053, Format::Camt054, Format::Mt940, Format::Bai2, Format::Csv];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Camt053 => "camt.053",
            Format::Camt054 => "camt.054",
            Format::Mt940 => "mt940",
            Format::Bai2 => "bai2",
            Format::Csv => "csv",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == text)
    }
}

/// Which way money moved on the bank account, as the bank reports it:
/// `Credit` is money in, `Debit` money out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Credit,
    Debit,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Credit => "credit",
            Direction::Debit => "debit",
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "credit" => Some(Direction::Credit),
            "debit" => Some(Direction::Debit),
            _ => None,
        }
    }
}

/// The identifiers a bank reports for one movement. Which one carries the
/// payer's reference varies by bank and rail, so the matcher tries them all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct References {
    /// Set by the payment's originator and carried end to end (ISO 20022 `EndToEndId`).
    pub end_to_end_id: Option<String>,
    /// The bank's own reference (`AcctSvcrRef`, MT940 `//` reference, BAI2 bank reference).
    pub bank_reference: Option<String>,
    /// The account owner's reference (MT940 customer reference, BAI2 customer
    /// reference, camt creditor reference or instruction id).
    pub customer_reference: Option<String>,
}

impl References {
    /// The references that are set, in a fixed order.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        [&self.end_to_end_id, &self.bank_reference, &self.customer_reference].into_iter().filter_map(|r| r.as_deref())
    }
}

/// Where in the file something is: a 1-based line for the line-based
/// formats, an element path (`/Document/BkToCstmrStmt/Stmt[1]/Ntry[2]/Amt`)
/// for XML. Error messages and stored lines carry it so a person can find
/// the spot in the bank's file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Position {
    Line(usize),
    Element(String),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Element(path) => write!(f, "element {path}"),
        }
    }
}

/// One movement on the bank account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementLine {
    pub booking_date: Date,
    pub value_date: Option<Date>,
    /// Signed minor units: positive for a credit (money in), negative for a debit.
    pub amount_minor: i64,
    pub currency: Currency,
    pub direction: Direction,
    pub references: References,
    pub counterparty_name: Option<String>,
    pub counterparty_account: Option<String>,
    pub description: Option<String>,
    pub position: Position,
}

/// A bank statement (or notification) in normalized form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub format: Format,
    /// The bank's identifier of the statement (MT940 `:20:`, camt `Stmt/Id`), when it gives one.
    pub statement_id: Option<String>,
    /// The bank account: IBAN or the bank's account number, as the file writes it.
    pub account: String,
    pub currency: Currency,
    /// Signed minor units (positive: in credit, money held at the bank).
    pub opening_balance_minor: Option<i64>,
    pub closing_balance_minor: Option<i64>,
    pub period_start: Option<Date>,
    pub period_end: Option<Date>,
    pub lines: Vec<StatementLine>,
}

impl Statement {
    /// SHA-256 (hex) of a canonical form of the content: the fields that
    /// mean something to an accountant, each length-prefixed, and never the
    /// file's layout (whitespace, line endings, element order of optional
    /// parts, positions). The same statement sent twice, even re-encoded,
    /// has one fingerprint, which is what import dedup keys on.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |text: &str| {
            h.update((text.len() as u64).to_be_bytes());
            h.update(text.as_bytes());
        };
        let opt = |v: Option<i64>| v.map_or_else(|| String::from("-"), |v| v.to_string());
        let date = |d: Option<Date>| d.map_or_else(|| String::from("-"), |d| d.to_string());
        field("settle-statement-v1");
        field(self.format.as_str());
        field(self.statement_id.as_deref().unwrap_or("-"));
        field(&self.account);
        field(self.currency.code());
        field(&opt(self.opening_balance_minor));
        field(&opt(self.closing_balance_minor));
        field(&date(self.period_start));
        field(&date(self.period_end));
        field(&self.lines.len().to_string());
        for l in &self.lines {
            field(&l.booking_date.to_string());
            field(&date(l.value_date));
            field(&l.amount_minor.to_string());
            field(l.currency.code());
            for r in [
                &l.references.end_to_end_id,
                &l.references.bank_reference,
                &l.references.customer_reference,
                &l.counterparty_name,
                &l.counterparty_account,
                &l.description,
            ] {
                field(r.as_deref().unwrap_or("-"));
            }
        }
        hex::encode(h.finalize())
    }

    /// Sum of credits and sum of debits (both as positive numbers), checked.
    pub fn totals(&self) -> Option<(i64, i64)> {
        let mut credits: i64 = 0;
        let mut debits: i64 = 0;
        for l in &self.lines {
            if l.amount_minor >= 0 {
                credits = credits.checked_add(l.amount_minor)?;
            } else {
                debits = debits.checked_add(l.amount_minor.checked_neg()?)?;
            }
        }
        Some((credits, debits))
    }
}

/// Why a statement could not be read. Every variant says where (`at`), so
/// the API can answer `422 statement_invalid` naming the line or element.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The file is not well-formed in its format (bad XML, a record of the
    /// wrong shape, a missing mandatory field).
    #[error("{at}: {message}")]
    Invalid { at: Position, message: String },
    /// A field is present but its value is wrong (a date, an amount, a currency).
    #[error("{at}: {field}: {message}")]
    InvalidField { at: Position, field: &'static str, message: String },
    /// The file reads, but its own controls disagree: balances that do not
    /// add up, trailer totals or record counts that do not match.
    #[error("{at}: {message}")]
    Inconsistent { at: Position, message: String },
    /// Valid in the format, but something this importer does not handle.
    #[error("{at}: {message}")]
    Unsupported { at: Position, message: String },
    #[error("the file is empty")]
    Empty,
    #[error("the file is larger than {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
}

impl ParseError {
    /// Where the error is, when it is somewhere.
    pub fn position(&self) -> Option<&Position> {
        match self {
            ParseError::Invalid { at, .. } | ParseError::InvalidField { at, .. } | ParseError::Inconsistent { at, .. } | ParseError::Unsupported { at, .. } => {
                Some(at)
            }
            ParseError::Empty | ParseError::TooLarge { .. } => None,
        }
    }

    pub(crate) fn invalid(at: Position, message: impl Into<String>) -> ParseError {
        ParseError::Invalid { at, message: message.into() }
    }

    pub(crate) fn field(at: Position, field: &'static str, message: impl Into<String>) -> ParseError {
        ParseError::InvalidField { at, field, message: message.into() }
    }
}
