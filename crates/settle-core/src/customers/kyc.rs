//! The KYC state machine and what each capability still needs.
//!
//! ```text
//! unverified ──submit──▶ pending ──decide──▶ verified | rejected | needs_more_info
//!      ▲                                                            │
//!      └────────── identity fields change after a decision ◀────────┘ (needs_more_info ──submit──▶ pending)
//! ```
//!
//! Requirements are computed, never stored: from which facts the customer
//! has, per capability (`ledger_hold`, `ach_debit`, `card_issuing`).
//! `currently_due` lists what `ledger_hold` and `ach_debit` still need
//! (they are what a submission is checked against), `eventually_due` what
//! `card_issuing` needs on top. A capability is `active` when the customer
//! is verified and has its facts, `pending` while a verification runs,
//! `suspended` while a sanctions screening is a potential or confirmed
//! match, and `inactive` otherwise.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KycStatus {
    Unverified,
    Pending,
    Verified,
    Rejected,
    NeedsMoreInfo,
}

impl KycStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KycStatus::Unverified => "unverified",
            KycStatus::Pending => "pending",
            KycStatus::Verified => "verified",
            KycStatus::Rejected => "rejected",
            KycStatus::NeedsMoreInfo => "needs_more_info",
        }
    }

    pub fn parse(text: &str) -> Option<KycStatus> {
        [KycStatus::Unverified, KycStatus::Pending, KycStatus::Verified, KycStatus::Rejected, KycStatus::NeedsMoreInfo].into_iter().find(|s| s.as_str() == text)
    }
}

/// The outcomes a reviewer (or the sandbox rules) may decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Verified,
    Rejected,
    NeedsMoreInfo,
}

impl Decision {
    pub fn parse(text: &str) -> Option<Decision> {
        match text {
            "verified" => Some(Decision::Verified),
            "rejected" => Some(Decision::Rejected),
            "needs_more_info" => Some(Decision::NeedsMoreInfo),
            _ => None,
        }
    }

    pub fn status(self) -> KycStatus {
        match self {
            Decision::Verified => KycStatus::Verified,
            Decision::Rejected => KycStatus::Rejected,
            Decision::NeedsMoreInfo => KycStatus::NeedsMoreInfo,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a customer in status {0} cannot be submitted for verification")]
    CannotSubmit(&'static str),
    #[error("only a pending verification can be decided (the customer is {0})")]
    NotPending(&'static str),
    #[error("requirements are still due: {0}")]
    RequirementsDue(String),
}

/// Submitting for verification: from `unverified` or `needs_more_info`,
/// once nothing is `currently_due`.
pub fn submit(from: KycStatus, requirements: &Requirements) -> Result<KycStatus, TransitionError> {
    match from {
        KycStatus::Unverified | KycStatus::NeedsMoreInfo if requirements.currently_due.is_empty() => Ok(KycStatus::Pending),
        KycStatus::Unverified | KycStatus::NeedsMoreInfo => Err(TransitionError::RequirementsDue(requirements.currently_due.join(", "))),
        other => Err(TransitionError::CannotSubmit(other.as_str())),
    }
}

/// Deciding a pending verification.
pub fn decide(from: KycStatus, decision: Decision) -> Result<KycStatus, TransitionError> {
    match from {
        KycStatus::Pending => Ok(decision.status()),
        other => Err(TransitionError::NotPending(other.as_str())),
    }
}

/// After a change of identity facts, a decision made on the old facts no
/// longer holds: `verified` and `needs_more_info` go back to `unverified`.
/// A rejection stands (a new customer must be created), and a pending
/// verification continues on the new facts.
pub fn after_identity_change(from: KycStatus) -> KycStatus {
    match from {
        KycStatus::Verified | KycStatus::NeedsMoreInfo => KycStatus::Unverified,
        other => other,
    }
}

/// Which facts a customer has (never the values: requirements need only presence).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub is_business: bool,
    pub names: bool,
    pub email: bool,
    pub phone: bool,
    pub date_of_birth: bool,
    pub address: bool,
    pub tax_id: bool,
    pub nationality: bool,
    pub registration_number: bool,
    pub incorporation_country: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    LedgerHold,
    AchDebit,
    CardIssuing,
}

impl Capability {
    pub const ALL: [Capability; 3] = [Capability::LedgerHold, Capability::AchDebit, Capability::CardIssuing];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::LedgerHold => "ledger_hold",
            Capability::AchDebit => "ach_debit",
            Capability::CardIssuing => "card_issuing",
        }
    }
}

/// The fields a capability needs, by wire name.
pub fn needs(capability: Capability, facts: &Facts) -> Vec<&'static str> {
    let mut fields: Vec<(&'static str, bool)> =
        if facts.is_business { vec![("legal_name", facts.names)] } else { vec![("given_name", facts.names), ("family_name", facts.names)] };
    if matches!(capability, Capability::AchDebit | Capability::CardIssuing) {
        fields.push(("address", facts.address));
        fields.push(("tax_id", facts.tax_id));
        if facts.is_business {
            fields.push(("registration_number", facts.registration_number));
            fields.push(("incorporation_country", facts.incorporation_country));
        } else {
            fields.push(("date_of_birth", facts.date_of_birth));
        }
    }
    if capability == Capability::CardIssuing {
        fields.push(("email", facts.email));
        fields.push(("phone", facts.phone));
        if !facts.is_business {
            fields.push(("nationality", facts.nationality));
        }
    }
    fields.into_iter().filter(|(_, present)| !present).map(|(name, _)| name).collect()
}

/// A reason a verification asks for more (`field` and a stable `code`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequirementError {
    pub field: String,
    pub code: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    pub currently_due: Vec<&'static str>,
    pub eventually_due: Vec<&'static str>,
    pub errors: Vec<RequirementError>,
}

/// The fields a reviewer may ask a customer to provide or correct
/// (`needs_more_info`); each becomes `currently_due` until the customer is submitted again.
pub const REQUESTABLE_FIELDS: [&str; 7] = ["given_name", "family_name", "legal_name", "date_of_birth", "address", "tax_id", "registration_number"];

/// The requirements from the facts and the errors of the last decision.
pub fn requirements(facts: &Facts, errors: Vec<RequirementError>) -> Requirements {
    let mut currently_due = needs(Capability::AchDebit, facts);
    for field in &errors {
        let named = REQUESTABLE_FIELDS.iter().find(|f| **f == field.field);
        if let Some(f) = named
            && !currently_due.contains(f)
        {
            currently_due.push(f);
        }
    }
    let eventually_due = needs(Capability::CardIssuing, facts).into_iter().filter(|f| !currently_due.contains(f)).collect();
    Requirements { currently_due, eventually_due, errors }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapabilityStatus {
    Inactive,
    Pending,
    Active,
    Suspended,
}

impl CapabilityStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CapabilityStatus::Inactive => "inactive",
            CapabilityStatus::Pending => "pending",
            CapabilityStatus::Active => "active",
            CapabilityStatus::Suspended => "suspended",
        }
    }
}

/// One capability's status. `screening_blocks` is true while the latest
/// screening is a potential or confirmed match.
pub fn capability_status(capability: Capability, facts: &Facts, status: KycStatus, screening_blocks: bool) -> CapabilityStatus {
    if screening_blocks {
        return CapabilityStatus::Suspended;
    }
    let complete = needs(capability, facts).is_empty();
    match status {
        KycStatus::Verified if complete => CapabilityStatus::Active,
        KycStatus::Pending if complete => CapabilityStatus::Pending,
        _ => CapabilityStatus::Inactive,
    }
}

/// What the sandbox decides on submission, from documented magic values
/// (docs/sandbox.md): the family name (or a business's legal name)
/// `Rejected` or the SSN `111-11-1111` reject; `Moreinfo` or the SSN
/// `222-22-2222` ask for more (an error on `date_of_birth` or `tax_id`);
/// `Pending` leaves the verification pending for a test helper to decide;
/// anything else is verified.
pub fn sandbox_decision(name: &str, tax_id: Option<&str>) -> Option<(Decision, Vec<RequirementError>, &'static str)> {
    let name = name.trim().to_lowercase();
    let error = |field: &str, code: &str, reason: &str| vec![RequirementError { field: field.into(), code: code.into(), reason: reason.into() }];
    if name == "rejected" || tax_id == Some("111111111") {
        return Some((Decision::Rejected, Vec::new(), "sandbox: magic value forces rejection"));
    }
    if tax_id == Some("222222222") {
        return Some((Decision::NeedsMoreInfo, error("tax_id", "tax_id_mismatch", "the tax id does not match the name"), "sandbox: magic tax id"));
    }
    if name == "moreinfo" {
        return Some((
            Decision::NeedsMoreInfo,
            error("date_of_birth", "date_of_birth_mismatch", "the date of birth does not match the records"),
            "sandbox: magic name asks for more information",
        ));
    }
    if name == "pending" {
        return None;
    }
    Some((Decision::Verified, Vec::new(), "sandbox: no magic value, verified"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_individual() -> Facts {
        Facts { names: true, email: true, phone: true, date_of_birth: true, address: true, tax_id: true, nationality: true, ..Facts::default() }
    }

    #[test]
    fn submission_needs_what_ach_debit_needs() {
        let partial = Facts { names: true, ..Facts::default() };
        let r = requirements(&partial, Vec::new());
        assert_eq!(r.currently_due, vec!["address", "tax_id", "date_of_birth"]);
        assert_eq!(r.eventually_due, vec!["email", "phone", "nationality"]);
        assert!(matches!(submit(KycStatus::Unverified, &r), Err(TransitionError::RequirementsDue(_))));
        let r = requirements(&full_individual(), Vec::new());
        assert_eq!(submit(KycStatus::Unverified, &r), Ok(KycStatus::Pending));
        assert_eq!(submit(KycStatus::NeedsMoreInfo, &r), Ok(KycStatus::Pending));
        assert!(submit(KycStatus::Verified, &r).is_err());
        assert!(submit(KycStatus::Rejected, &r).is_err());
    }

    #[test]
    fn only_pending_verifications_are_decided() {
        assert_eq!(decide(KycStatus::Pending, Decision::Verified), Ok(KycStatus::Verified));
        for s in [KycStatus::Unverified, KycStatus::Verified, KycStatus::Rejected, KycStatus::NeedsMoreInfo] {
            assert!(decide(s, Decision::Rejected).is_err());
        }
        assert_eq!(after_identity_change(KycStatus::Verified), KycStatus::Unverified);
        assert_eq!(after_identity_change(KycStatus::Rejected), KycStatus::Rejected);
    }

    #[test]
    fn capabilities_follow_status_facts_and_screening() {
        let f = full_individual();
        assert_eq!(capability_status(Capability::CardIssuing, &f, KycStatus::Verified, false), CapabilityStatus::Active);
        assert_eq!(capability_status(Capability::CardIssuing, &f, KycStatus::Verified, true), CapabilityStatus::Suspended);
        assert_eq!(capability_status(Capability::AchDebit, &f, KycStatus::Pending, false), CapabilityStatus::Pending);
        let no_phone = Facts { phone: false, ..f };
        assert_eq!(capability_status(Capability::CardIssuing, &no_phone, KycStatus::Verified, false), CapabilityStatus::Inactive);
        assert_eq!(capability_status(Capability::AchDebit, &no_phone, KycStatus::Verified, false), CapabilityStatus::Active);
    }

    #[test]
    fn sandbox_magic_values_decide_deterministically() {
        assert_eq!(sandbox_decision("Rejected", None).map(|d| d.0), Some(Decision::Rejected));
        assert_eq!(sandbox_decision("Doe", Some("111111111")).map(|d| d.0), Some(Decision::Rejected));
        assert_eq!(sandbox_decision("Moreinfo", None).map(|d| d.0), Some(Decision::NeedsMoreInfo));
        assert_eq!(sandbox_decision("Doe", Some("222222222")).map(|d| d.1[0].field.clone()), Some(String::from("tax_id")));
        assert_eq!(sandbox_decision("Pending", None), None);
        assert_eq!(sandbox_decision("Doe", Some("123456789")).map(|d| d.0), Some(Decision::Verified));
    }
}
