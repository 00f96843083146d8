//! Customers: the people and businesses a fintech serves, and the rules for
//! the personal data that describes them (issue 6).
//!
//! Everything here is pure: parsing and normalizing what arrives at the
//! boundary ([`geo`], [`contact`], [`tax_id`], [`names`]), the KYC state
//! machine and the requirements it computes ([`kyc`]), and fuzzy name
//! matching for sanctions screening ([`matching`]). Storage, encryption
//! and HTTP live elsewhere; nothing here logs, so a value that fails to
//! parse never leaves this module except inside the caller's own error.

pub mod contact;
pub mod geo;
pub mod kyc;
pub mod matching;
pub mod names;
pub mod tax_id;

/// Why a value was refused. The message never repeats the value itself:
/// personal data must not travel into error bodies or logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
}

impl Invalid {
    pub fn new(message: impl Into<String>) -> Invalid {
        Invalid { message: message.into() }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Longest free-text field we accept (address lines, cities, names), in characters.
pub const MAX_TEXT_CHARS: usize = 200;

/// Trims, refuses control characters, bounds the length, and normalizes to
/// Unicode NFC (so that "é" typed two ways is stored and compared once).
pub fn clean_text(value: &str, max_chars: usize) -> Result<String, Invalid> {
    use unicode_normalization::UnicodeNormalization;
    let normalized: String = value.trim().nfc().collect();
    if normalized.is_empty() {
        return Err(Invalid::new("must not be empty"));
    }
    if normalized.chars().any(char::is_control) {
        return Err(Invalid::new("must not contain control characters"));
    }
    if normalized.chars().count() > max_chars {
        return Err(Invalid::new(format!("must be at most {max_chars} characters")));
    }
    // Runs of whitespace collapse to one space.
    Ok(normalized.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// An ISO 8601 calendar date (`YYYY-MM-DD`) that is not after `today` and
/// not before 1900-01-01 (a date of birth or of incorporation).
pub fn past_date(value: &str, today: time::Date) -> Result<time::Date, Invalid> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(value.trim(), &format).map_err(|_| Invalid::new("must be a date in ISO 8601 form, YYYY-MM-DD"))?;
    if date > today {
        return Err(Invalid::new("must not be in the future"));
    }
    if date.year() < 1900 {
        return Err(Invalid::new("must not be before 1900-01-01"));
    }
    Ok(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_collapsed_and_nfc() {
        assert_eq!(clean_text("  Jos\u{65}\u{301}   María ", 50), Ok(String::from("Jos\u{e9} María")));
        assert!(clean_text("a\u{0}b", 50).is_err());
        assert!(clean_text("   ", 50).is_err());
        assert!(clean_text("abcdef", 5).is_err());
    }

    #[test]
    fn dates_are_iso_and_in_the_past() {
        let today = time::macros::date!(2026 - 01 - 15);
        assert_eq!(past_date("1990-02-28", today), Ok(time::macros::date!(1990 - 02 - 28)));
        assert!(past_date("1990-02-30", today).is_err());
        assert!(past_date("2026-01-16", today).is_err());
        assert!(past_date("1899-12-31", today).is_err());
        assert!(past_date("28/02/1990", today).is_err());
    }
}
