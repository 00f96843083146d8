//! API versions are calendar dates (`YYYY-MM-DD`). This type only knows the
//! format; which dates are real versions is the API crate's registry.

use std::fmt;

/// A date naming an API version. Orders by date, so "older than" is `<`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiVersion(time::Date);

impl ApiVersion {
    /// For constants: `ApiVersion::from_date(time::macros::date!(2026-11-25))`.
    pub const fn from_date(date: time::Date) -> ApiVersion {
        ApiVersion(date)
    }

    /// Parses exactly `YYYY-MM-DD`, a real calendar date in years 2000–9999.
    pub fn parse(text: &str) -> Option<ApiVersion> {
        let b = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| b.get(range).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) || !digits(8..10) {
            return None;
        }
        let year: i32 = text.get(0..4)?.parse().ok()?;
        let month: u8 = text.get(5..7)?.parse().ok()?;
        let day: u8 = text.get(8..10)?.parse().ok()?;
        if year < 2000 {
            return None;
        }
        let date = time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
        Some(ApiVersion(date))
    }

    pub fn date(self) -> time::Date {
        self.0
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.0.year(), u8::from(self.0.month()), self.0.day())
    }
}

#[cfg(test)]
mod tests {
    use super::ApiVersion;

    #[test]
    fn parses_real_dates_only_in_the_exact_format() {
        let v = ApiVersion::parse("2026-11-25").map(|v| v.to_string());
        assert_eq!(v.as_deref(), Some("2026-11-25"));
        assert_eq!(ApiVersion::parse("2028-02-29").map(|v| v.to_string()).as_deref(), Some("2028-02-29"));
        for bad in [
            "2026-11-31",
            "2027-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-25",
            "2026/11/25",
            " 2026-11-25",
            "2026-11-25 ",
            "+026-11-25",
            "1999-01-01",
            "latest",
            "",
        ] {
            assert_eq!(ApiVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn orders_by_date() {
        assert!(ApiVersion::parse("2026-11-25") < ApiVersion::parse("2026-11-30"));
        assert!(ApiVersion::parse("2026-12-01") > ApiVersion::parse("2026-11-30"));
    }
}
