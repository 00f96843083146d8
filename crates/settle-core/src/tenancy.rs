//! Tenancy: every resource belongs to one organization and one environment,
//! and a credential sees exactly one such pair.

use crate::ids::{ApiKeyId, OrgId};
use std::fmt;

/// `sandbox` behaves like `live` except that rails are simulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Environment {
    Sandbox,
    Live,
}

impl Environment {
    pub fn parse(text: &str) -> Option<Environment> {
        match text {
            "sandbox" => Some(Environment::Sandbox),
            "live" => Some(Environment::Live),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Sandbox => "sandbox",
            Environment::Live => "live",
        }
    }
}

/// The storage key of an (organization, environment) pair. Ledger rows carry
/// this small integer rather than two strings, which keeps indexes narrow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub i64);

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    LedgerRead,
    LedgerWrite,
    /// Bank statements, their matches and reports.
    ReconciliationRead,
    /// Importing statements and matching or unmatching lines by hand.
    ReconciliationWrite,
    /// `GET /v1/events`: what happened, for clients that poll.
    EventsRead,
    /// Webhook endpoints and their attempts, read.
    WebhooksRead,
    /// Webhook endpoints created, changed, rotated; events redelivered.
    WebhooksWrite,
    /// Customers, their KYC state, consents and screenings, personal fields masked.
    CustomersRead,
    /// Creating and changing customers, consents, verification and screening decisions.
    CustomersWrite,
    /// Deciding a pending KYC verification (`POST /v1/customers/{id}/kyc_decisions`):
    /// a reviewer's scope, apart from `customers:write`, so that the key that
    /// submits a customer cannot approve it.
    CustomersReview,
    /// Personal fields in clear (names, email, tax id, date of birth, address, documents).
    CustomersPiiRead,
    /// The audit trail of customer-side resources.
    AuditRead,
    /// Counterparties, payments and ACH files, read (account numbers as their last four digits).
    PaymentsRead,
    /// Creating counterparties and payments, canceling payments, importing return files.
    PaymentsWrite,
}

impl Scope {
    pub const ALL: [Scope; 14] = [
        Scope::LedgerRead,
        Scope::LedgerWrite,
        Scope::ReconciliationRead,
        Scope::ReconciliationWrite,
        Scope::EventsRead,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::CustomersRead,
        Scope::CustomersWrite,
        Scope::CustomersReview,
        Scope::CustomersPiiRead,
        Scope::AuditRead,
        Scope::PaymentsRead,
        Scope::PaymentsWrite,
    ];

    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "ledger:read" => Some(Scope::LedgerRead),
            "ledger:write" => Some(Scope::LedgerWrite),
            "reconciliation:read" => Some(Scope::ReconciliationRead),
            "reconciliation:write" => Some(Scope::ReconciliationWrite),
            "events:read" => Some(Scope::EventsRead),
            "webhooks:read" => Some(Scope::WebhooksRead),
            "webhooks:write" => Some(Scope::WebhooksWrite),
            "customers:read" => Some(Scope::CustomersRead),
            "customers:write" => Some(Scope::CustomersWrite),
            "customers:review" => Some(Scope::CustomersReview),
            "customers:pii:read" => Some(Scope::CustomersPiiRead),
            "audit:read" => Some(Scope::AuditRead),
            "payments:read" => Some(Scope::PaymentsRead),
            "payments:write" => Some(Scope::PaymentsWrite),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::LedgerRead => "ledger:read",
            Scope::LedgerWrite => "ledger:write",
            Scope::ReconciliationRead => "reconciliation:read",
            Scope::ReconciliationWrite => "reconciliation:write",
            Scope::EventsRead => "events:read",
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::CustomersRead => "customers:read",
            Scope::CustomersWrite => "customers:write",
            Scope::CustomersReview => "customers:review",
            Scope::CustomersPiiRead => "customers:pii:read",
            Scope::AuditRead => "audit:read",
            Scope::PaymentsRead => "payments:read",
            Scope::PaymentsWrite => "payments:write",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling: resolved from an API key once per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub key_id: ApiKeyId,
    pub org_id: OrgId,
    pub environment: Environment,
    pub tenant: TenantId,
    pub scopes: Vec<Scope>,
    /// The organization's pinned API version, used when a request names none.
    pub api_version: crate::api_version::ApiVersion,
    /// The key's own rate limit; `None`: the server's default.
    pub rate_limit: Option<RateLimit>,
}

/// A token bucket: `per_second` tokens flow in each second, at most `burst`
/// are held; a request takes one. Both are at least 1 and at most
/// [`RateLimit::MAX`], so the interval between tokens is a whole number of
/// microseconds of at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    per_second: u32,
    burst: u32,
}

impl RateLimit {
    /// The largest rate and burst a bucket may have (one token per microsecond).
    pub const MAX: u32 = 1_000_000;

    /// `None` when either value is 0 or above [`RateLimit::MAX`].
    pub const fn new(per_second: u32, burst: u32) -> Option<RateLimit> {
        if per_second >= 1 && per_second <= RateLimit::MAX && burst >= 1 && burst <= RateLimit::MAX { Some(RateLimit { per_second, burst }) } else { None }
    }

    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Microseconds between two tokens (rounded down, at least 1).
    pub fn interval_micros(&self) -> i64 {
        (1_000_000 / i64::from(self.per_second)).max(1)
    }
}

impl Principal {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}
