//! The Federal Reserve's banking-day calendar, computed by rule (no typed-in
//! list of dates), for ACH effective and settlement dates.
//!
//! The Federal Reserve Banks close on eleven holidays. Holidays on a fixed
//! date that fall on a Sunday are observed on the Monday after; those that
//! fall on a Saturday are **not** observed at all (the Banks are open the
//! Friday before), unlike the federal government's own rule. Weekends are
//! never banking days.

use time::{Date, Duration, Month, Weekday};

/// Why the Federal Reserve Banks are closed on a weekday.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closure {
    pub date: Date,
    pub name: &'static str,
}

/// The year Juneteenth became a Federal Reserve holiday (first observed in 2022).
const JUNETEENTH_SINCE: i32 = 2022;

/// The `n`th (1-based) `weekday` of `month`, or the last one when `n` is 0.
fn nth_weekday(year: i32, month: Month, weekday: Weekday, n: u8) -> Option<Date> {
    let first = Date::from_calendar_date(year, month, 1).ok()?;
    let offset = (7 + weekday.number_days_from_monday() - first.weekday().number_days_from_monday()) % 7;
    let first_match = first.checked_add(Duration::days(i64::from(offset)))?;
    if n == 0 {
        let mut last = first_match;
        while let Some(next) = last.checked_add(Duration::days(7))
            && next.month() == month
        {
            last = next;
        }
        return Some(last);
    }
    let date = first_match.checked_add(Duration::days(7 * i64::from(n - 1)))?;
    (date.month() == month).then_some(date)
}

/// A fixed-date holiday as the Fed observes it: Sunday moves to Monday,
/// Saturday is not observed.
fn fixed(year: i32, month: Month, day: u8, name: &'static str) -> Option<Closure> {
    let date = Date::from_calendar_date(year, month, day).ok()?;
    match date.weekday() {
        Weekday::Saturday => None,
        Weekday::Sunday => Some(Closure { date: date.next_day()?, name }),
        _ => Some(Closure { date, name }),
    }
}

fn floating(year: i32, month: Month, weekday: Weekday, n: u8, name: &'static str) -> Option<Closure> {
    nth_weekday(year, month, weekday, n).map(|date| Closure { date, name })
}

/// The weekdays of `year` on which the Federal Reserve Banks are closed, in order.
pub fn closures(year: i32) -> Vec<Closure> {
    let mut days = vec![
        fixed(year, Month::January, 1, "New Year's Day"),
        floating(year, Month::January, Weekday::Monday, 3, "Birthday of Martin Luther King, Jr."),
        floating(year, Month::February, Weekday::Monday, 3, "Washington's Birthday"),
        floating(year, Month::May, Weekday::Monday, 0, "Memorial Day"),
        if year >= JUNETEENTH_SINCE { fixed(year, Month::June, 19, "Juneteenth National Independence Day") } else { None },
        fixed(year, Month::July, 4, "Independence Day"),
        floating(year, Month::September, Weekday::Monday, 1, "Labor Day"),
        floating(year, Month::October, Weekday::Monday, 2, "Columbus Day"),
        fixed(year, Month::November, 11, "Veterans Day"),
        floating(year, Month::November, Weekday::Thursday, 4, "Thanksgiving Day"),
        fixed(year, Month::December, 25, "Christmas Day"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    days.sort_by_key(|c| c.date);
    days
}

/// Whether the Federal Reserve Banks settle on `date`.
pub fn is_banking_day(date: Date) -> bool {
    !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday) && !closures(date.year()).iter().any(|c| c.date == date)
}

/// The first banking day strictly after `date`.
pub fn next_banking_day(date: Date) -> Option<Date> {
    let mut day = date.next_day()?;
    while !is_banking_day(day) {
        day = day.next_day()?;
    }
    Some(day)
}

/// The banking day `n` banking days after `date` (`n` = 0: `date` itself if it
/// is a banking day, else the next one).
pub fn add_banking_days(date: Date, n: u32) -> Option<Date> {
    let mut day = if is_banking_day(date) { date } else { next_banking_day(date)? };
    for _ in 0..n {
        day = next_banking_day(day)?;
    }
    Some(day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn listed(year: i32) -> Vec<String> {
        closures(year).iter().map(|c| format!("{} {}", c.date, c.name)).collect()
    }

    /// As the Federal Reserve publishes them (federalreserve.gov, "Holidays
    /// Observed by the Federal Reserve System"): Juneteenth and Christmas 2027
    /// fall on a Saturday and are not observed; Independence Day 2027 falls on
    /// a Sunday and is observed on Monday, July 5.
    #[test]
    fn closures_of_2027_match_the_feds_schedule() {
        assert_eq!(
            listed(2027),
            [
                "2027-01-01 New Year's Day",
                "2027-01-18 Birthday of Martin Luther King, Jr.",
                "2027-02-15 Washington's Birthday",
                "2027-05-31 Memorial Day",
                "2027-07-05 Independence Day",
                "2027-09-06 Labor Day",
                "2027-10-11 Columbus Day",
                "2027-11-11 Veterans Day",
                "2027-11-25 Thanksgiving Day",
            ]
        );
    }

    #[test]
    fn closures_of_2026_skip_a_saturday_independence_day() {
        let days: Vec<Date> = closures(2026).iter().map(|c| c.date).collect();
        assert_eq!(
            days,
            [
                date!(2026 - 01 - 01),
                date!(2026 - 01 - 19),
                date!(2026 - 02 - 16),
                date!(2026 - 05 - 25),
                date!(2026 - 06 - 19),
                date!(2026 - 09 - 07),
                date!(2026 - 10 - 12),
                date!(2026 - 11 - 11),
                date!(2026 - 11 - 26),
                date!(2026 - 12 - 25),
            ]
        );
        assert!(is_banking_day(date!(2026 - 07 - 03)), "the Fed is open the Friday before a Saturday holiday");
    }

    #[test]
    fn a_sunday_new_years_day_closes_the_monday_and_juneteenth_starts_in_2022() {
        assert_eq!(closures(2023)[0], Closure { date: date!(2023 - 01 - 02), name: "New Year's Day" });
        assert!(!listed(2021).iter().any(|l| l.contains("Juneteenth")));
        assert!(listed(2022).iter().any(|l| l.starts_with("2022-06-20 Juneteenth")), "June 19, 2022 was a Sunday");
    }

    #[test]
    fn banking_day_arithmetic_skips_weekends_and_closures() {
        // Thursday before Thanksgiving 2027 + 1 banking day is the Friday after.
        assert_eq!(add_banking_days(date!(2027 - 11 - 24), 1), Some(date!(2027 - 11 - 26)));
        // Friday July 2, 2027 + 1 skips the weekend and the observed Independence Day.
        assert_eq!(add_banking_days(date!(2027 - 07 - 02), 1), Some(date!(2027 - 07 - 06)));
        // A Saturday rolls to Monday before counting.
        assert_eq!(add_banking_days(date!(2027 - 03 - 06), 0), Some(date!(2027 - 03 - 08)));
        assert_eq!(add_banking_days(date!(2027 - 03 - 08), 2), Some(date!(2027 - 03 - 10)));
        assert!(!is_banking_day(date!(2027 - 12 - 25)), "a Saturday is never a banking day");
        assert!(is_banking_day(date!(2027 - 12 - 24)), "the Friday before a Saturday Christmas is open");
    }

    #[test]
    fn every_holiday_closes_one_weekday_unless_it_falls_on_a_saturday() {
        for year in 1990..=2100 {
            let days = closures(year);
            let fixed_dates = [(Month::January, 1), (Month::June, 19), (Month::July, 4), (Month::November, 11), (Month::December, 25)];
            let saturdays = fixed_dates
                .iter()
                .filter(|(m, _)| *m != Month::June || year >= JUNETEENTH_SINCE)
                .filter(|(m, d)| Date::from_calendar_date(year, *m, *d).is_ok_and(|date| date.weekday() == Weekday::Saturday))
                .count();
            let holidays = if year >= JUNETEENTH_SINCE { 11 } else { 10 };
            assert_eq!(days.len(), holidays - saturdays, "{year}");
            assert!(days.iter().all(|c| !matches!(c.date.weekday(), Weekday::Saturday | Weekday::Sunday)), "{year}");
            assert!(days.windows(2).all(|w| w[0].date < w[1].date), "{year}");
            assert!(days.iter().all(|c| c.date.year() == year), "{year}");
        }
    }
}
