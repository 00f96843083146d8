//! The state machine of an ACH payment. The server stores the state and
//! applies the ledger effects; which moves are allowed is decided here.
//!
//! ```text
//! pending ──cut──▶ submitted ──settle──▶ settled
//!    │                 │                    │
//!    ├─cancel─▶ canceled                    │
//!    └─fail──▶ failed  └──────return────────┴──▶ returned
//! ```

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Created; its ledger hold is in place; waiting for the next file.
    Pending,
    /// In a file sent to the bank.
    Submitted,
    /// Settled on its effective date.
    Settled,
    /// The receiving bank returned it (a reason code says why).
    Returned,
    /// Canceled before submission.
    Canceled,
    /// Could not be submitted (for example its bank account was disabled meanwhile).
    Failed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Submitted => "submitted",
            PaymentStatus::Settled => "settled",
            PaymentStatus::Returned => "returned",
            PaymentStatus::Canceled => "canceled",
            PaymentStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<PaymentStatus> {
        [PaymentStatus::Pending, PaymentStatus::Submitted, PaymentStatus::Settled, PaymentStatus::Returned, PaymentStatus::Canceled, PaymentStatus::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// Whether a payment in `self` may move to `to`.
    pub fn can_move_to(self, to: PaymentStatus) -> bool {
        use PaymentStatus::{Canceled, Failed, Pending, Returned, Settled, Submitted};
        matches!(
            (self, to),
            (Pending, Submitted) | (Pending, Canceled) | (Pending, Failed) | (Submitted, Settled) | (Submitted, Returned) | (Settled, Returned)
        )
    }

    /// No move leaves these.
    pub fn is_final(self) -> bool {
        matches!(self, PaymentStatus::Returned | PaymentStatus::Canceled | PaymentStatus::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::PaymentStatus::*;

    #[test]
    fn only_the_drawn_moves_are_allowed() {
        assert!(Pending.can_move_to(Submitted));
        assert!(Pending.can_move_to(Canceled));
        assert!(!Submitted.can_move_to(Canceled), "a submitted payment is in the bank's hands");
        assert!(Settled.can_move_to(Returned));
        assert!(!Returned.can_move_to(Settled));
        for s in [Returned, Canceled, Failed] {
            assert!(s.is_final());
            for t in [Pending, Submitted, Settled, Returned, Canceled, Failed] {
                assert!(!s.can_move_to(t));
            }
        }
    }
}
