//! Feature flags: new behaviour rolled out to organizations in stages (a
//! list of organizations first, then a growing percentage of the rest) and
//! rolled back at once, without a deploy.
//!
//! Every flag the code reads is declared here with its default, so an
//! operator cannot set a flag nothing reads (a typo would otherwise roll out
//! nothing, silently). Which organizations fall inside a percentage is a
//! stable hash of the flag and the organization: raising the percentage only
//! adds organizations, and each flag splits them differently.

use sha2::{Digest, Sha256};

/// A flag the code reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagDefinition {
    pub name: &'static str,
    pub description: &'static str,
    /// Whether organizations have the behaviour while no rollout is set.
    pub default_on: bool,
}

/// Batches over the server's `--async-batch-threshold` run as operations
/// (`202 Accepted`, up to 10,000 transactions) instead of being refused.
pub const ASYNC_LARGE_BATCHES: FlagDefinition = FlagDefinition {
    name: "ledger.async_large_batches",
    description: "Batches over the async threshold answer 202 and run as operations; off: they are refused as too large (400).",
    default_on: true,
};

/// Every flag, for the CLI and for validation.
pub const FLAGS: &[FlagDefinition] = &[ASYNC_LARGE_BATCHES];

pub fn definition(name: &str) -> Option<&'static FlagDefinition> {
    FLAGS.iter().find(|f| f.name == name)
}

/// Who has a flag's behaviour: the listed organizations, and `percent` of all
/// the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// 0 to 100.
    pub percent: u8,
    /// Organization ids that have it whatever the percentage.
    pub orgs: Vec<String>,
}

impl Rollout {
    pub fn includes(&self, flag: &str, org_id: &str) -> bool {
        self.orgs.iter().any(|o| o == org_id) || bucket(flag, org_id) < u64::from(self.percent.min(100))
    }
}

/// The organization's place (0–99) in the flag's rollout order.
pub fn bucket(flag: &str, org_id: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(flag.as_bytes());
    hasher.update([0]);
    hasher.update(org_id.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % 100
}

/// Whether `org_id` has the behaviour of `flag`, given its rollout if one is set.
pub fn enabled(flag: &FlagDefinition, rollout: Option<&Rollout>, org_id: &str) -> bool {
    match rollout {
        None => flag.default_on,
        Some(r) => r.includes(flag.name, org_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orgs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("org_{i:026}")).collect()
    }

    #[test]
    fn the_default_holds_until_a_rollout_is_set() {
        assert!(enabled(&ASYNC_LARGE_BATCHES, None, "org_a"));
        let off = Rollout { percent: 0, orgs: Vec::new() };
        assert!(!enabled(&ASYNC_LARGE_BATCHES, Some(&off), "org_a"));
        let listed = Rollout { percent: 0, orgs: vec![String::from("org_a")] };
        assert!(enabled(&ASYNC_LARGE_BATCHES, Some(&listed), "org_a"));
        assert!(!enabled(&ASYNC_LARGE_BATCHES, Some(&listed), "org_b"));
        let all = Rollout { percent: 100, orgs: Vec::new() };
        assert!(orgs(200).iter().all(|o| enabled(&ASYNC_LARGE_BATCHES, Some(&all), o)));
    }

    #[test]
    fn a_percentage_takes_about_that_share_and_raising_it_only_adds() {
        let all = orgs(2000);
        let mut before: Vec<&String> = Vec::new();
        for percent in [0u8, 5, 25, 50, 90, 100] {
            let rollout = Rollout { percent, orgs: Vec::new() };
            let now: Vec<&String> = all.iter().filter(|o| rollout.includes("f", o)).collect();
            let share = now.len() * 100 / all.len();
            assert!(share.abs_diff(usize::from(percent)) <= 4, "{percent}% took {share}%");
            assert!(before.iter().all(|o| now.contains(o)), "raising to {percent}% dropped an organization");
            before = now;
        }
    }

    #[test]
    fn flags_split_organizations_differently() {
        let all = orgs(500);
        let a: Vec<u64> = all.iter().map(|o| bucket("a", o)).collect();
        let b: Vec<u64> = all.iter().map(|o| bucket("b", o)).collect();
        assert_ne!(a, b);
        assert!(FLAGS.iter().all(|f| definition(f.name) == Some(f)));
        assert_eq!(definition("no.such.flag"), None);
    }
}
