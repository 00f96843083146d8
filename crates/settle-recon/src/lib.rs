//! Bank statements, read and reconciled: parsers for ISO 20022 camt.053 /
//! camt.054, SWIFT MT940, BAI2 and a configurable CSV, all producing one
//! normalized [`Statement`], and the [`matcher`] that pairs statement lines
//! with ledger transactions.
//!
//! Everything here is pure: text in, values or a typed error out. No file,
//! network or database access, so every parser can be fed arbitrary bytes
//! by tests (and by fuzzers) and the same code serves the HTTP API and the CLI.
//!
//! Money never passes through a float: amounts are read digit by digit into
//! `i64` minor units with the currency's ISO 4217 exponent, with checked
//! arithmetic; too many decimals or an overflow is an error, never a rounding.

pub mod amount;
pub mod bai2;
pub mod camt;
pub mod csv;
pub mod matcher;
mod model;
pub mod mt940;

pub use model::{Direction, Format, ParseError, Position, References, Statement, StatementLine};
pub use settle_core::money::Currency;

/// The largest statement file accepted, in bytes. Real daily statements are
/// kilobytes to a few megabytes; the bound keeps one upload from pinning a
/// server's memory (the HTTP route uses the same number as its body limit).
pub const MAX_STATEMENT_BYTES: usize = 10 * 1024 * 1024;
/// Lines in one statement. A busy collection account sees tens of thousands
/// of movements a day; beyond this the file should be split.
pub const MAX_STATEMENT_LINES: usize = 100_000;

/// Parses `content` in `format`. CSV needs a profile (see [`csv::CsvProfile`]);
/// the other formats ignore it.
pub fn parse(format: Format, content: &str, csv_profile: Option<&csv::CsvProfile>) -> Result<Statement, ParseError> {
    if content.len() > MAX_STATEMENT_BYTES {
        return Err(ParseError::TooLarge { limit_bytes: MAX_STATEMENT_BYTES });
    }
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    if content.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let statement = match format {
        Format::Camt053 | Format::Camt054 => camt::parse(format, content)?,
        Format::Mt940 => mt940::parse(content)?,
        Format::Bai2 => bai2::parse(content)?,
        Format::Csv => csv::parse(content, csv_profile.unwrap_or(&csv::CsvProfile::default()))?,
    };
    if statement.lines.len() > MAX_STATEMENT_LINES {
        return Err(ParseError::Invalid {
            at: Position::Line(0),
            message: format!("the statement has {} lines; at most {MAX_STATEMENT_LINES} are accepted, split the file", statement.lines.len()),
        });
    }
    Ok(statement)
}
