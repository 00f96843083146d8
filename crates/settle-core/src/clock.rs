//! Time: an injected clock, and timestamps as integer microseconds (UTC).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Microseconds since the Unix epoch, UTC. Microseconds because the API
/// promises them and both SQLite and PostgreSQL store them exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Earliest instant the API accepts (1900-01-01T00:00:00Z).
const MIN_MICROS: i64 = -2_208_988_800_000_000;
/// Latest instant the API accepts (9999-12-31T23:59:59.999999Z).
const MAX_MICROS: i64 = 253_402_300_799_999_999;

thread_local! {
    /// The instant this thread wrote last, as text: a batch's response writes
    /// the same instant several times per transaction (created, effective,
    /// posted, and again on every entry).
    static LAST_RFC3339: std::cell::Cell<Option<(i64, [u8; 27])>> = const { std::cell::Cell::new(None) };
}

/// `text` is ASCII digits and separators, written above.
fn ascii_string(text: &[u8]) -> String {
    String::from_utf8_lossy(text).into_owned()
}

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (any offset) into UTC, rejecting instants outside
    /// years 1900..=9999 and sub-microsecond precision that would be lost.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let dt = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        let nanos = dt.unix_timestamp_nanos();
        if nanos % 1000 != 0 {
            return None;
        }
        let micros = i64::try_from(nanos / 1000).ok()?;
        (MIN_MICROS..=MAX_MICROS).contains(&micros).then_some(Timestamp(micros))
    }

    /// RFC 3339 in UTC with exactly six fractional digits, so that strings sort like instants.
    pub fn to_rfc3339(self) -> String {
        match self.rfc3339_fixed() {
            Some(text) => ascii_string(&text),
            None => self.rfc3339_formatted(),
        }
    }

    /// [`Timestamp::to_rfc3339`] appended to `out`, with no `String` made
    /// on the way: the batch renderer writes six per transfer.
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        match self.rfc3339_fixed() {
            Some(text) => out.extend_from_slice(&text),
            None => out.extend_from_slice(self.rfc3339_formatted().as_bytes()),
        }
    }

    /// The text of years 0 to 9999 (every instant this server makes or
    /// accepts), written digit by digit: every rendered object carries a few
    /// of these, and `format!` with seven padded fields cost several percent
    /// of a busy server's CPU. The last one is kept per thread, since a
    /// batch's objects share their times.
    fn rfc3339_fixed(self) -> Option<[u8; 27]> {
        if let Some((_, text)) = LAST_RFC3339.with(std::cell::Cell::get).filter(|(at, _)| *at == self.0) {
            return Some(text);
        }
        let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000).ok()?.to_offset(UtcOffset::UTC);
        let year = u32::try_from(dt.year()).ok().filter(|year| *year <= 9999)?;
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        put_digits(&mut text[0..4], year);
        put_digits(&mut text[5..7], u32::from(u8::from(dt.month())));
        put_digits(&mut text[8..10], u32::from(dt.day()));
        put_digits(&mut text[11..13], u32::from(dt.hour()));
        put_digits(&mut text[14..16], u32::from(dt.minute()));
        put_digits(&mut text[17..19], u32::from(dt.second()));
        put_digits(&mut text[20..26], dt.microsecond());
        LAST_RFC3339.with(|last| last.set(Some((self.0, text))));
        Some(text)
    }

    /// Instants outside what [`Timestamp::rfc3339_fixed`] writes.
    fn rfc3339_formatted(self) -> String {
        match OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000) {
            Ok(dt) => {
                let dt = dt.to_offset(UtcOffset::UTC);
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                    dt.year(),
                    u8::from(dt.month()),
                    dt.day(),
                    dt.hour(),
                    dt.minute(),
                    dt.second(),
                    dt.microsecond()
                )
            }
            Err(_) => String::from("invalid-timestamp"),
        }
    }

    pub fn plus_secs(self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1_000_000)))
    }
}

/// Writes `value`'s last `slot.len()` decimal digits into `slot`, zero-padded.
fn put_digits(slot: &mut [u8], mut value: u32) {
    for digit in slot.iter_mut().rev() {
        *digit = b'0' + u8::try_from(value % 10).unwrap_or(0);
        value /= 10;
    }
}

/// Where "now" comes from. Tests and sandbox test clocks move time by hand.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Timestamp(i64::try_from(nanos / 1000).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(start.micros())))
    }

    pub fn advance_secs(&self, secs: i64) {
        self.0.fetch_add(secs.saturating_mul(1_000_000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_times_are_the_text_of_to_rfc3339() {
        for micros in [
            0,
            1,
            -1,
            1_796_282_119_414_617,
            1_796_282_119_414_617,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            -62_167_219_200_000_000,
            -62_167_219_200_000_001,
            i64::MIN,
            i64::MAX,
        ] {
            let at = Timestamp::from_micros(micros);
            let mut out = b"x".to_vec();
            at.write_rfc3339(&mut out);
            assert_eq!(out, [b"x".as_slice(), at.to_rfc3339().as_bytes()].concat(), "{micros}");
        }
        assert_eq!(Timestamp::from_micros(1_796_282_119_414_617).to_rfc3339(), "2026-12-03T07:15:19.414617Z");
    }

    #[test]
    fn timestamps_round_trip_through_rfc3339_with_microseconds() {
        let t = Timestamp::parse_rfc3339("2026-11-25T10:11:12.345678+01:00");
        assert_eq!(t.map(Timestamp::to_rfc3339).as_deref(), Some("2026-11-25T09:11:12.345678Z"));
        assert_eq!(Timestamp::parse_rfc3339("2000-01-01T00:00:00Z").map(Timestamp::micros), Some(946_684_800_000_000));
    }

    #[test]
    fn the_digit_by_digit_rendering_matches_the_formatted_one_and_parses_back() {
        let formatted = |t: Timestamp| {
            let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.micros()) * 1000).map(|d| d.to_offset(UtcOffset::UTC));
            dt.map(|d| {
                format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", d.year(), u8::from(d.month()), d.day(), d.hour(), d.minute(), d.second(), d.microsecond())
            })
        };
        // From year 1 to 9999, with a step that visits every field's range.
        let (first, last) = (-62_135_596_800_000_000_i64, 253_402_300_799_999_999_i64);
        let mut micros = first;
        while micros <= last {
            let t = Timestamp(micros);
            assert_eq!(Ok(t.to_rfc3339()), formatted(t), "{micros}");
            micros += 1_234_567_890_123;
        }
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000000Z");
        // The thread's last instant is remembered: a repeat, and an instant after another, still read right.
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(Timestamp(i64::MIN).to_rfc3339(), "invalid-timestamp");
        assert_eq!(Timestamp(1).to_rfc3339(), "1970-01-01T00:00:00.000001Z");
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn out_of_range_and_too_precise_instants_are_refused() {
        assert!(Timestamp::parse_rfc3339("1800-01-01T00:00:00Z").is_none());
        assert!(Timestamp::parse_rfc3339("2026-01-01T00:00:00.0000001Z").is_none());
        assert!(Timestamp::parse_rfc3339("yesterday").is_none());
    }
}
