//! Decimal text to integer minor units, and back, digit by digit.
//!
//! Banks write amounts as `1234.56` (camt), `1234,56` (MT940) or `123456`
//! with implied decimals (BAI2). Each is read into `i64` minor units using
//! the currency's ISO 4217 exponent; a float never holds a value, so no
//! amount is ever rounded. Extra fraction digits are accepted only when they
//! are zeros (`10.500` EUR is 1050); `10.505` EUR is an error, not a rounding.

use settle_core::money::Currency;
use time::{Date, Month};

/// Parses an unsigned decimal with `separator` (`.` or `,`) as the decimal
/// mark. A trailing separator (`9,` in MT940) means no fraction digits.
pub fn parse_decimal(text: &str, currency: Currency, separator: char) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(String::from("the amount is empty"));
    }
    let (whole, fraction) = match text.split_once(separator) {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty() && fraction.is_empty() {
        return Err(format!("{text:?} is not an amount"));
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not an amount (digits and one {separator:?} expected)"));
    }
    let exponent = usize::from(currency.exponent());
    let (kept, dropped) = if fraction.len() > exponent { fraction.split_at(exponent) } else { (fraction, "") };
    if dropped.bytes().any(|b| b != b'0') {
        return Err(format!("{text:?} has more decimals than {currency} has ({exponent})"));
    }
    let overflow = || format!("{text:?} is too large");
    let mut minor: i64 = 0;
    for b in whole.bytes().chain(kept.bytes()).chain(std::iter::repeat_n(b'0', exponent - kept.len())) {
        minor = minor.checked_mul(10).and_then(|m| m.checked_add(i64::from(b - b'0'))).ok_or_else(overflow)?;
    }
    Ok(minor)
}

/// Parses an amount with implied decimals (BAI2): digits, optionally signed with `+` or `-`.
pub fn parse_implied(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not an amount (digits with an optional sign expected)"));
    }
    let mut minor: i64 = 0;
    for b in digits.bytes() {
        minor = minor.checked_mul(10).and_then(|m| m.checked_add(i64::from(b - b'0'))).ok_or_else(|| format!("{text:?} is too large"))?;
    }
    Ok(if negative { -minor } else { minor })
}

/// `123456` minor units of EUR as `1234.56`; of JPY as `123456`. For
/// people (reports, messages), never parsed back into arithmetic.
pub fn format_minor(minor: i64, currency: Currency) -> String {
    let exponent = u32::from(currency.exponent());
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{magnitude}");
    }
    let scale = 10u64.pow(exponent);
    format!("{sign}{}.{:0width$}", magnitude / scale, magnitude % scale, width = exponent as usize)
}

/// `YYMMDD` as SWIFT and BAI2 write it; years 00–79 are 20xx, 80–99 19xx.
pub fn parse_yymmdd(text: &str) -> Result<Date, String> {
    if text.len() != 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a YYMMDD date"));
    }
    let n = |r: std::ops::Range<usize>| text[r].parse::<u8>().unwrap_or(0);
    let yy = i32::from(n(0..2));
    let year = if yy < 80 { 2000 + yy } else { 1900 + yy };
    make_date(year, n(2..4), n(4..6)).ok_or_else(|| format!("{text:?} is not a calendar date"))
}

/// `YYYY-MM-DD`, or the date part of an ISO 8601 date-time.
pub fn parse_iso_date(text: &str) -> Result<Date, String> {
    let text = text.trim();
    let day = text.get(..10).ok_or_else(|| format!("{text:?} is not a YYYY-MM-DD date"))?;
    let b = day.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) || !digits(8..10) {
        return Err(format!("{text:?} is not a YYYY-MM-DD date"));
    }
    let year = day[0..4].parse::<i32>().unwrap_or(0);
    let month = day[5..7].parse::<u8>().unwrap_or(0);
    let dom = day[8..10].parse::<u8>().unwrap_or(0);
    make_date(year, month, dom).ok_or_else(|| format!("{text:?} is not a calendar date"))
}

pub(crate) fn make_date(year: i32, month: u8, day: u8) -> Option<Date> {
    Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap_or_else(|| panic!("{code}"))
    }

    #[test]
    fn decimals_are_read_with_the_currency_exponent() {
        assert_eq!(parse_decimal("3236,28", cur("EUR"), ','), Ok(323_628));
        assert_eq!(parse_decimal("9,", cur("EUR"), ','), Ok(900));
        assert_eq!(parse_decimal("11,8", cur("EUR"), ','), Ok(1180));
        assert_eq!(parse_decimal("000000001213,28", cur("EUR"), ','), Ok(121_328));
        assert_eq!(parse_decimal("2700", cur("JPY"), '.'), Ok(2700));
        assert_eq!(parse_decimal("1.234", cur("KWD"), '.'), Ok(1234));
        assert_eq!(parse_decimal("10.500", cur("EUR"), '.'), Ok(1050));
    }

    #[test]
    fn rounding_and_garbage_are_refused() {
        assert!(parse_decimal("10.505", cur("EUR"), '.').is_err());
        assert!(parse_decimal("1.5", cur("JPY"), '.').is_err());
        assert!(parse_decimal("1,000.00", cur("USD"), '.').is_err());
        assert!(parse_decimal("-5", cur("USD"), '.').is_err());
        assert!(parse_decimal("", cur("USD"), '.').is_err());
        assert!(parse_decimal(".", cur("USD"), '.').is_err());
        assert!(parse_decimal("1e5", cur("USD"), '.').is_err());
        assert!(parse_decimal("92233720368547758.08", cur("USD"), '.').is_err());
        assert_eq!(parse_decimal("92233720368547758.07", cur("USD"), '.'), Ok(i64::MAX));
    }

    #[test]
    fn implied_amounts_carry_their_sign() {
        assert_eq!(parse_implied("+000000000000"), Ok(0));
        assert_eq!(parse_implied("-1500"), Ok(-1500));
        assert_eq!(parse_implied("000000000208500"), Ok(208_500));
        assert!(parse_implied("12a").is_err());
        assert!(parse_implied("99999999999999999999").is_err());
    }

    #[test]
    fn minor_units_format_for_people() {
        assert_eq!(format_minor(-32_144, cur("EUR")), "-321.44");
        assert_eq!(format_minor(5, cur("USD")), "0.05");
        assert_eq!(format_minor(2700, cur("JPY")), "2700");
        assert_eq!(format_minor(i64::MIN, cur("USD")), "-92233720368547758.08");
    }

    #[test]
    fn dates_parse_and_impossible_ones_do_not() {
        assert_eq!(parse_yymmdd("110522").map(|d| d.to_string()), Ok(String::from("2011-05-22")));
        assert_eq!(parse_yymmdd("991231").map(|d| d.year()), Ok(1999));
        assert!(parse_yymmdd("110230").is_err());
        assert!(parse_yymmdd("11052").is_err());
        assert_eq!(parse_iso_date("2014-12-31T13:15:00+01:00").map(|d| d.to_string()), Ok(String::from("2014-12-31")));
        assert!(parse_iso_date("2014-13-01").is_err());
        assert!(parse_iso_date("20141201").is_err());
    }
}
