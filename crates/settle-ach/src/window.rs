//! FedACH submission windows and effective dates.
//!
//! Settle cuts a file at each window, in America/New_York time, on Federal
//! Reserve banking days. The defaults follow the FedACH schedule: three
//! same-day windows (10:30, 14:45, 16:45) and the next-day window, which
//! Settle cuts at 02:15 (the FedACH next-day deadline). New York time is
//! computed by the US daylight-saving rule in force since 2007 (second Sunday
//! of March to the first Sunday of November, at 02:00 local), so the crate
//! needs no time zone database.

use settle_core::calendar;
use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset, Weekday};

/// A window: hour and minute, New York time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window {
    pub hour: u8,
    pub minute: u8,
    /// Same-day entries may go in this window (effective today).
    pub is_same_day: bool,
}

/// The FedACH default windows, in time order.
pub const DEFAULT_WINDOWS: [Window; 4] = [
    Window { hour: 2, minute: 15, is_same_day: false },
    Window { hour: 10, minute: 30, is_same_day: true },
    Window { hour: 14, minute: 45, is_same_day: true },
    Window { hour: 16, minute: 45, is_same_day: true },
];

/// The default per-payment cap on same-day entries: 1,000,000.00 USD.
pub const DEFAULT_SAME_DAY_LIMIT_MINOR: i64 = 100_000_000;

fn nth_sunday(year: i32, month: Month, n: u8) -> Option<Date> {
    let first = Date::from_calendar_date(year, month, 1).ok()?;
    let offset = (7 + 7 - first.weekday().number_days_from_sunday()) % 7;
    first.checked_add(Duration::days(i64::from(offset) + 7 * i64::from(n - 1)))
}

/// New York's offset from UTC at `utc`.
pub fn new_york_offset(utc: OffsetDateTime) -> UtcOffset {
    let standard = UtcOffset::from_hms(-5, 0, 0).unwrap_or(UtcOffset::UTC);
    let daylight = UtcOffset::from_hms(-4, 0, 0).unwrap_or(UtcOffset::UTC);
    let year = utc.year();
    let (Some(start), Some(end)) = (nth_sunday(year, Month::March, 2), nth_sunday(year, Month::November, 1)) else {
        return standard;
    };
    // 02:00 EST = 07:00 UTC starts daylight time; 02:00 EDT = 06:00 UTC ends it.
    let starts = PrimitiveDateTime::new(start, Time::from_hms(7, 0, 0).unwrap_or(Time::MIDNIGHT)).assume_utc();
    let ends = PrimitiveDateTime::new(end, Time::from_hms(6, 0, 0).unwrap_or(Time::MIDNIGHT)).assume_utc();
    if utc >= starts && utc < ends { daylight } else { standard }
}

/// `utc` as a New York wall-clock time.
pub fn new_york(utc: OffsetDateTime) -> PrimitiveDateTime {
    let local = utc.to_offset(new_york_offset(utc));
    PrimitiveDateTime::new(local.date(), local.time())
}

/// The most recent window at or before `utc` on a banking day, as its New
/// York date and the window; looks back at most two weeks.
pub fn latest_window(utc: OffsetDateTime, windows: &[Window]) -> Option<(Date, Window)> {
    let now = new_york(utc);
    let mut date = now.date();
    for _ in 0..14 {
        if calendar::is_banking_day(date) {
            let passed = windows
                .iter()
                .rev()
                .find(|w| date < now.date() || (u32::from(w.hour) * 60 + u32::from(w.minute)) <= (u32::from(now.hour()) * 60 + u32::from(now.minute())));
            if let Some(window) = passed {
                return Some((date, *window));
            }
        }
        date = date.previous_day()?;
    }
    None
}

/// The effective entry date of an entry cut in `window` on banking day
/// `cut_date`: same-day entries in a same-day window settle that day; the
/// rest settle on the next banking day. A requested later date is kept (a
/// requested earlier one cannot be honoured and is moved forward).
pub fn effective_date(cut_date: Date, window: Window, is_same_day: bool, requested: Option<Date>) -> Option<Date> {
    let earliest = if is_same_day && window.is_same_day { Some(cut_date) } else { calendar::next_banking_day(cut_date) }?;
    match requested {
        Some(date) if date > earliest => calendar::add_banking_days(date, 0),
        _ => Some(earliest),
    }
}

/// Whether `date` is a weekday the Fed is open (re-exported for callers
/// validating a requested effective date).
pub fn is_banking_day(date: Date) -> bool {
    calendar::is_banking_day(date) && !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn new_york_follows_daylight_saving_time() {
        assert_eq!(new_york(datetime!(2026-07-01 14:30 UTC)).hour(), 10);
        assert_eq!(new_york(datetime!(2026-12-01 15:30 UTC)).hour(), 10);
        // 2026-03-08 is the second Sunday of March; 2026-11-01 the first of November.
        assert_eq!(new_york_offset(datetime!(2026-03-08 06:59 UTC)).whole_hours(), -5);
        assert_eq!(new_york_offset(datetime!(2026-03-08 07:00 UTC)).whole_hours(), -4);
        assert_eq!(new_york_offset(datetime!(2026-11-01 05:59 UTC)).whole_hours(), -4);
        assert_eq!(new_york_offset(datetime!(2026-11-01 06:00 UTC)).whole_hours(), -5);
    }

    #[test]
    fn the_latest_window_skips_weekends_and_holidays() {
        // Monday 2026-11-30 15:31 UTC is 10:31 New York: the 10:30 window.
        let (date, window) = latest_window(datetime!(2026-11-30 15:31 UTC), &DEFAULT_WINDOWS).expect("window");
        assert_eq!((date.to_string().as_str(), window.hour, window.minute), ("2026-11-30", 10, 30));
        // 10:29 New York: the 02:15 window of that day.
        let (_, window) = latest_window(datetime!(2026-11-30 15:29 UTC), &DEFAULT_WINDOWS).expect("window");
        assert_eq!((window.hour, window.minute), (2, 15));
        // Sunday: the last window of Friday.
        let (date, window) = latest_window(datetime!(2026-11-29 15:00 UTC), &DEFAULT_WINDOWS).expect("window");
        assert_eq!((date.to_string().as_str(), window.hour), ("2026-11-27", 16));
    }

    #[test]
    fn effective_dates_land_on_banking_days() {
        let friday = Date::from_calendar_date(2026, Month::November, 27).expect("date");
        let same_day = DEFAULT_WINDOWS[1];
        assert_eq!(effective_date(friday, same_day, true, None), Some(friday));
        let monday = Date::from_calendar_date(2026, Month::November, 30).expect("date");
        assert_eq!(effective_date(friday, same_day, false, None), Some(monday));
        assert_eq!(effective_date(friday, DEFAULT_WINDOWS[0], true, None), Some(monday));
        // Christmas 2026 is a Friday: a later requested date moves to the next banking day.
        let christmas = Date::from_calendar_date(2026, Month::December, 25).expect("date");
        assert_eq!(effective_date(friday, same_day, false, Some(christmas)).map(|d| d.to_string()), Some("2026-12-28".to_string()));
    }
}
