//! Fault injection for the sandbox: an organization rehearses failure by
//! asking the simulated world to misbehave for a while — webhook deliveries
//! that time out, fail, arrive twice or out of order, and a simulated bank
//! (the ACH rail) that refuses files and repeats or reorders its
//! notifications — and proves that its integration rides through (retries,
//! idempotency, per-object `sequence`).
//!
//! Pure: what a fault is, when it is in force and whether it fires for one
//! delivery. Storing faults, reading them on every server and applying them
//! live elsewhere (`settle-store/src/faults.rs`, `settle-api/src/faults.rs`,
//! the delivery worker). Faults never apply to live environments: the API
//! refuses to set them there and the worker looks for them in sandboxes only.

use crate::clock::Timestamp;

/// The longest a fault may be set for (`duration_secs`, or `until` from now):
/// a forgotten fault must not outlive a rehearsal by months.
pub const MAX_FAULT_DURATION_SECS: i64 = 30 * 24 * 3600;

/// Faults one tenant may hold at once (one per target and mode).
pub const MAX_FAULTS_PER_TENANT: usize = 16;

/// What misbehaves: webhook deliveries, or the simulated payment rails
/// (ACH today; later rails read the same faults with the same modes). What
/// each mode means for a rail is that rail's to define (docs/sandbox.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultTarget {
    Webhooks,
    Rails,
}

impl FaultTarget {
    pub const ALL: &'static [FaultTarget] = &[FaultTarget::Webhooks, FaultTarget::Rails];

    pub fn parse(text: &str) -> Option<FaultTarget> {
        FaultTarget::ALL.iter().copied().find(|t| t.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultTarget::Webhooks => "webhooks",
            FaultTarget::Rails => "rails",
        }
    }
}

/// How it misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultMode {
    /// The attempt is recorded as timed out; nothing is sent.
    Timeout,
    /// The attempt is recorded as failed with a synthetic `503`; nothing is sent.
    Fail,
    /// The delivery is sent twice, with the same `webhook-id`.
    Duplicate,
    /// A claimed batch is sent newest event first, one after the other.
    Reorder,
}

impl FaultMode {
    pub const ALL: &'static [FaultMode] = &[FaultMode::Timeout, FaultMode::Fail, FaultMode::Duplicate, FaultMode::Reorder];

    pub fn parse(text: &str) -> Option<FaultMode> {
        FaultMode::ALL.iter().copied().find(|m| m.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultMode::Timeout => "timeout",
            FaultMode::Fail => "fail",
            FaultMode::Duplicate => "duplicate",
            FaultMode::Reorder => "reorder",
        }
    }
}

/// A chance in whole percent, 0 to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probability(u8);

impl Probability {
    pub const ALWAYS: Probability = Probability(100);

    pub fn new(percent: i64) -> Option<Probability> {
        u8::try_from(percent).ok().filter(|p| *p <= 100).map(Probability)
    }

    pub fn percent(self) -> u8 {
        self.0
    }

    /// Whether it fires for `roll`, a uniform draw from 0 to 99.
    pub fn fires(self, roll: u8) -> bool {
        roll < self.0
    }
}

/// One fault a tenant set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub target: FaultTarget,
    pub mode: FaultMode,
    pub probability: Probability,
    /// When it ends (exclusive); `None`: until it is deleted.
    pub until: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl Fault {
    /// Whether it is in force at `now` (the injected clock's, so tests and
    /// sandbox test clocks end faults by moving time).
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// Why a requested end is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultEndError {
    NotInFuture,
    TooFar,
}

/// Checks a requested end against `now`: after it, and at most
/// [`MAX_FAULT_DURATION_SECS`] away.
pub fn check_until(until: Timestamp, now: Timestamp) -> Result<Timestamp, FaultEndError> {
    if until <= now {
        return Err(FaultEndError::NotInFuture);
    }
    if until.micros().saturating_sub(now.micros()) > MAX_FAULT_DURATION_SECS.saturating_mul(1_000_000) {
        return Err(FaultEndError::TooFar);
    }
    Ok(until)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mode in FaultMode::ALL {
            assert_eq!(FaultMode::parse(mode.as_str()), Some(*mode));
        }
        for target in FaultTarget::ALL {
            assert_eq!(FaultTarget::parse(target.as_str()), Some(*target));
        }
        assert_eq!(FaultTarget::parse("rails"), Some(FaultTarget::Rails));
        assert_eq!(FaultTarget::parse("email"), None);
        assert_eq!(FaultMode::parse("explode"), None);
    }

    #[test]
    fn probability_is_a_percentage_and_fires_that_often() {
        assert_eq!(Probability::new(101), None);
        assert_eq!(Probability::new(-1), None);
        let never = Probability::new(0).map(|p| (0..100).filter(|r| p.fires(*r)).count());
        assert_eq!(never, Some(0));
        assert_eq!((0..100).filter(|r| Probability::ALWAYS.fires(*r)).count(), 100);
        assert_eq!(Probability::new(30).map(|p| (0..100).filter(|r| p.fires(*r)).count()), Some(30));
    }

    #[test]
    fn a_fault_ends_at_its_until_and_ends_are_bounded() {
        let now = Timestamp::from_micros(1_000_000_000);
        let fault =
            Fault { target: FaultTarget::Webhooks, mode: FaultMode::Fail, probability: Probability::ALWAYS, until: Some(now.plus_secs(60)), created_at: now };
        assert!(fault.is_active(now));
        assert!(fault.is_active(now.plus_secs(59)));
        assert!(!fault.is_active(now.plus_secs(60)));
        assert!(Fault { until: None, ..fault }.is_active(now.plus_secs(1_000_000)));
        assert_eq!(check_until(now, now), Err(FaultEndError::NotInFuture));
        assert_eq!(check_until(now.plus_secs(MAX_FAULT_DURATION_SECS + 1), now), Err(FaultEndError::TooFar));
        assert_eq!(check_until(now.plus_secs(5), now), Ok(now.plus_secs(5)));
    }
}
