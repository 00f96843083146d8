//! Delimited text statements, read through a [`CsvProfile`] that says which
//! column holds what. Banks' CSV exports differ in everything (delimiter,
//! date order, decimal comma, one signed amount column or separate credit
//! and debit columns), so nothing is guessed: the profile is explicit, and
//! the default profile reads the layout documented in docs/reconciliation.md.

use crate::amount::{make_date, parse_decimal};
use crate::model::{Direction, Format, ParseError, Position, References, Statement, StatementLine};
use serde::Deserialize;
use settle_core::money::Currency;
use time::Date;

/// A column, by its header name (when the file has a header) or its 0-based index.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Column {
    Index(usize),
    Name(String),
}

/// How dates are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum DateFormat {
    #[default]
    #[serde(rename = "YYYY-MM-DD")]
    Iso,
    #[serde(rename = "DD/MM/YYYY")]
    DayMonthYearSlash,
    #[serde(rename = "MM/DD/YYYY")]
    MonthDayYearSlash,
    #[serde(rename = "DD.MM.YYYY")]
    DayMonthYearDot,
    #[serde(rename = "YYYYMMDD")]
    Compact,
}

/// Which columns hold what. Every field has a default, so `{}` reads the
/// documented default layout: a header row with `date`, `amount`
/// (signed, `.` decimals), `currency`, `reference`, `counterparty`, `description`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CsvProfile {
    /// One ASCII character; `,` by default.
    pub delimiter: char,
    pub has_header: bool,
    /// Lines to skip before the header (bank exports often start with a title block).
    pub skip_lines: usize,
    pub date_column: Column,
    pub date_format: DateFormat,
    pub value_date_column: Option<Column>,
    /// A signed amount (negative: money out). Ignored when `credit_column` and `debit_column` are set.
    pub amount_column: Option<Column>,
    pub credit_column: Option<Column>,
    pub debit_column: Option<Column>,
    /// `.` or `,`.
    pub decimal_separator: char,
    /// Digit-group separators to drop (`,` in `1,234.56`), none by default.
    pub thousands_separator: Option<char>,
    /// The statement's currency when no column gives it.
    pub currency: Option<String>,
    pub currency_column: Option<Column>,
    pub reference_column: Option<Column>,
    pub bank_reference_column: Option<Column>,
    pub end_to_end_id_column: Option<Column>,
    pub counterparty_column: Option<Column>,
    pub counterparty_account_column: Option<Column>,
    pub description_column: Option<Column>,
    /// The bank account the file is for (CSV exports rarely say).
    pub account: Option<String>,
}

impl Default for CsvProfile {
    fn default() -> Self {
        let named = |n: &str| Some(Column::Name(n.to_owned()));
        CsvProfile {
            delimiter: ',',
            has_header: true,
            skip_lines: 0,
            date_column: Column::Name(String::from("date")),
            date_format: DateFormat::Iso,
            value_date_column: None,
            amount_column: named("amount"),
            credit_column: None,
            debit_column: None,
            decimal_separator: '.',
            thousands_separator: None,
            currency: None,
            currency_column: named("currency"),
            reference_column: named("reference"),
            bank_reference_column: None,
            end_to_end_id_column: None,
            counterparty_column: named("counterparty"),
            counterparty_account_column: None,
            description_column: named("description"),
            account: None,
        }
    }
}

fn parse_date(text: &str, format: DateFormat) -> Option<Date> {
    let t = text.trim();
    let num = |s: &str| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<i32>().ok() } else { None };
    let split = |sep: char| {
        let parts: Vec<&str> = t.split(sep).collect();
        (parts.len() == 3).then(|| (parts[0], parts[1], parts[2]))
    };
    let (y, m, d) = match format {
        DateFormat::Iso => {
            let (y, m, d) = split('-')?;
            (num(y)?, num(m)?, num(d)?)
        }
        DateFormat::DayMonthYearSlash => {
            let (d, m, y) = split('/')?;
            (num(y)?, num(m)?, num(d)?)
        }
        DateFormat::MonthDayYearSlash => {
            let (m, d, y) = split('/')?;
            (num(y)?, num(m)?, num(d)?)
        }
        DateFormat::DayMonthYearDot => {
            let (d, m, y) = split('.')?;
            (num(y)?, num(m)?, num(d)?)
        }
        DateFormat::Compact => {
            if t.len() != 8 {
                return None;
            }
            (num(&t[0..4])?, num(&t[4..6])?, num(&t[6..8])?)
        }
    };
    if !(1900..=9999).contains(&y) {
        return None;
    }
    make_date(y, u8::try_from(m).ok()?, u8::try_from(d).ok()?)
}

/// A signed decimal: an optional leading `-` or `+`, or parentheses for a negative.
fn parse_signed(text: &str, currency: Currency, profile: &CsvProfile) -> Result<i64, String> {
    let mut t: String = text.trim().to_owned();
    if let Some(sep) = profile.thousands_separator {
        t.retain(|c| c != sep);
    }
    let (negative, digits) = if let Some(inner) = t.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        (true, inner.to_owned())
    } else if let Some(rest) = t.strip_prefix('-') {
        (true, rest.to_owned())
    } else if let Some(rest) = t.strip_prefix('+') {
        (false, rest.to_owned())
    } else {
        (false, t)
    };
    let minor = parse_decimal(&digits, currency, profile.decimal_separator)?;
    Ok(if negative { -minor } else { minor })
}

pub fn parse(content: &str, profile: &CsvProfile) -> Result<Statement, ParseError> {
    if !profile.delimiter.is_ascii() || !matches!(profile.decimal_separator, '.' | ',') {
        return Err(ParseError::invalid(Position::Line(0), "csv_profile: the delimiter must be one ASCII character and the decimal separator . or ,"));
    }
    let skipped: usize = content.split_inclusive('\n').take(profile.skip_lines).map(str::len).sum();
    let body = &content[skipped.min(content.len())..];
    let first_line = profile.skip_lines + 1;
    let mut reader = ::csv::ReaderBuilder::new().delimiter(profile.delimiter as u8).has_headers(profile.has_header).flexible(true).from_reader(body.as_bytes());
    let headers: Vec<String> = if profile.has_header {
        reader
            .headers()
            .map_err(|e| ParseError::invalid(Position::Line(first_line), format!("unreadable header: {e}")))?
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect()
    } else {
        Vec::new()
    };
    let resolve = |column: &Column, name: &'static str| -> Result<usize, ParseError> {
        match column {
            Column::Index(i) => Ok(*i),
            Column::Name(n) => headers
                .iter()
                .position(|h| *h == n.to_ascii_lowercase())
                .ok_or_else(|| ParseError::field(Position::Line(first_line), name, format!("no column {n:?} in the header ({})", headers.join(", ")))),
        }
    };
    let optional = |column: &Option<Column>, name: &'static str| -> Result<Option<usize>, ParseError> {
        match column {
            None => Ok(None),
            // Default names that the header lacks are simply absent; an explicitly configured one must exist.
            Some(c) => match resolve(c, name) {
                Ok(i) => Ok(Some(i)),
                Err(_) if CsvProfile::default().is_default_column(c) => Ok(None),
                Err(e) => Err(e),
            },
        }
    };
    let date_col = resolve(&profile.date_column, "date")?;
    let value_col = optional(&profile.value_date_column, "value_date")?;
    let split_cols = match (&profile.credit_column, &profile.debit_column) {
        (Some(c), Some(d)) => Some((resolve(c, "credit")?, resolve(d, "debit")?)),
        _ => None,
    };
    let amount_col = match (&split_cols, &profile.amount_column) {
        (Some(_), _) => None,
        (None, Some(a)) => Some(resolve(a, "amount")?),
        (None, None) => return Err(ParseError::invalid(Position::Line(0), "csv_profile: set amount_column, or both credit_column and debit_column")),
    };
    let currency_col = optional(&profile.currency_column, "currency")?;
    let fixed_currency = match &profile.currency {
        Some(code) => {
            Some(Currency::parse(code).ok_or_else(|| ParseError::invalid(Position::Line(0), format!("csv_profile: {code:?} is not an ISO 4217 currency")))?)
        }
        None => None,
    };
    let reference_col = optional(&profile.reference_column, "reference")?;
    let bank_reference_col = optional(&profile.bank_reference_column, "bank_reference")?;
    let e2e_col = optional(&profile.end_to_end_id_column, "end_to_end_id")?;
    let counterparty_col = optional(&profile.counterparty_column, "counterparty")?;
    let counterparty_account_col = optional(&profile.counterparty_account_column, "counterparty_account")?;
    let description_col = optional(&profile.description_column, "description")?;

    let mut currency: Option<Currency> = fixed_currency;
    let mut lines = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(first_line, |p| p.line() as usize + profile.skip_lines);
            ParseError::invalid(Position::Line(line), format!("unreadable CSV: {e}"))
        })?;
        let line_no = record.position().map_or(0, |p| p.line() as usize) + profile.skip_lines;
        let at = Position::Line(line_no);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let cell = |i: usize| record.get(i).map(str::trim).unwrap_or("");
        let text = |i: Option<usize>| i.map(cell).filter(|t| !t.is_empty()).map(str::to_owned);
        let line_currency = match currency_col.map(cell).filter(|c| !c.is_empty()) {
            Some(code) => Currency::parse(code).ok_or_else(|| ParseError::field(at.clone(), "currency", format!("{code:?} is not an ISO 4217 currency")))?,
            None => fixed_currency.ok_or_else(|| ParseError::field(at.clone(), "currency", "no currency column value and no currency in the profile"))?,
        };
        match currency {
            Some(c) if c != line_currency => return Err(ParseError::field(at, "currency", format!("{line_currency} differs from the statement's {c}"))),
            _ => currency = Some(line_currency),
        }
        let booking_date = parse_date(cell(date_col), profile.date_format)
            .ok_or_else(|| ParseError::field(at.clone(), "date", format!("{:?} is not a date in the profile's format", cell(date_col))))?;
        let value_date = match value_col.map(cell).filter(|c| !c.is_empty()) {
            Some(v) => Some(parse_date(v, profile.date_format).ok_or_else(|| ParseError::field(at.clone(), "value_date", format!("{v:?} is not a date")))?),
            None => None,
        };
        let amount = match (split_cols, amount_col) {
            (Some((c, d)), _) => {
                let credit = if cell(c).is_empty() {
                    0
                } else {
                    parse_signed(cell(c), line_currency, profile).map_err(|m| ParseError::field(at.clone(), "credit", m))?.abs()
                };
                let debit = if cell(d).is_empty() {
                    0
                } else {
                    parse_signed(cell(d), line_currency, profile).map_err(|m| ParseError::field(at.clone(), "debit", m))?.abs()
                };
                if credit != 0 && debit != 0 {
                    return Err(ParseError::field(at, "amount", "both the credit and the debit column are set"));
                }
                credit - debit
            }
            (None, Some(a)) => parse_signed(cell(a), line_currency, profile).map_err(|m| ParseError::field(at.clone(), "amount", m))?,
            (None, None) => 0,
        };
        lines.push(StatementLine {
            booking_date,
            value_date,
            amount_minor: amount,
            currency: line_currency,
            direction: if amount < 0 { Direction::Debit } else { Direction::Credit },
            references: References { end_to_end_id: text(e2e_col), bank_reference: text(bank_reference_col), customer_reference: text(reference_col) },
            counterparty_name: text(counterparty_col),
            counterparty_account: text(counterparty_account_col),
            description: text(description_col),
            position: at,
        });
    }
    let currency = currency.ok_or_else(|| ParseError::invalid(Position::Line(first_line), "no lines and no currency"))?;
    Ok(Statement {
        format: Format::Csv,
        statement_id: None,
        account: profile.account.clone().unwrap_or_else(|| String::from("csv")),
        currency,
        opening_balance_minor: None,
        closing_balance_minor: None,
        period_start: lines.iter().map(|l| l.booking_date).min(),
        period_end: lines.iter().map(|l| l.booking_date).max(),
        lines,
    })
}

impl CsvProfile {
    /// Whether `column` is one the default profile names (so a file may lack it).
    fn is_default_column(&self, column: &Column) -> bool {
        let defaults = [&self.amount_column, &self.currency_column, &self.reference_column, &self.counterparty_column, &self.description_column];
        defaults.iter().any(|d| d.as_ref() == Some(column))
    }
}
