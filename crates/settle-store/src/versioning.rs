//! What API versioning keeps in the database: each organization's pinned
//! API version, and how often each API key used something deprecated.
//! Both backends implement these in `sqlite/versioning.rs` and
//! `postgres/versioning.rs`.

use crate::error::StoreError;
use crate::store::Store;
use settle_core::api_version::ApiVersion;
use settle_core::clock::Timestamp;
use settle_core::ids::{ApiKeyId, OrgId};
use settle_core::tenancy::Environment;

/// An organization and the API version it is pinned to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganizationRecord {
    pub id: OrgId,
    pub name: String,
    pub api_version: ApiVersion,
    pub created_at: Timestamp,
}

/// Uses of one deprecated thing by one key, counted in memory since the last flush.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeprecationUse {
    pub key_id: ApiKeyId,
    /// What was deprecated, e.g. `version 2026-11-25` or `endpoint GET /v1/…`.
    pub deprecated: String,
    pub count: u64,
    pub first_seen_at: Timestamp,
    pub last_seen_at: Timestamp,
}

/// One line of the deprecation report: the stored totals with whose key it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeprecationUsageRecord {
    pub org_id: OrgId,
    pub org_name: String,
    pub environment: Environment,
    pub key_id: ApiKeyId,
    pub deprecated: String,
    pub count: i64,
    pub first_seen_at: Timestamp,
    pub last_seen_at: Timestamp,
}

impl Store {
    /// Every organization, by name.
    pub async fn organizations(&self) -> Result<Vec<OrganizationRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let s = s.clone();
                crate::blocking::run(move || s.organizations()).await
            }
            Store::Postgres(p) => p.organizations().await,
        }
    }

    /// Pins the organization `name` to `version`; `false` when there is no such organization.
    pub async fn set_organization_api_version(&self, name: &str, version: ApiVersion) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (s, name) = (s.clone(), name.to_owned());
                crate::blocking::run(move || s.set_organization_api_version(&name, version)).await
            }
            Store::Postgres(p) => p.set_organization_api_version(name, version).await,
        }
    }

    /// Adds counted uses to the stored totals, in one transaction.
    pub async fn record_deprecation_uses(&self, uses: Vec<DeprecationUse>) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        match self {
            Store::Sqlite(s) => {
                let s = s.clone();
                crate::blocking::run(move || s.record_deprecation_uses(&uses)).await
            }
            Store::Postgres(p) => p.record_deprecation_uses(&uses).await,
        }
    }

    /// Every stored total, most recently seen first.
    pub async fn deprecation_usage(&self) -> Result<Vec<DeprecationUsageRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let s = s.clone();
                crate::blocking::run(move || s.deprecation_usage()).await
            }
            Store::Postgres(p) => p.deprecation_usage().await,
        }
    }
}

pub(crate) fn organization(id: String, name: String, api_version: &str, created_at: i64) -> Result<OrganizationRecord, StoreError> {
    Ok(OrganizationRecord {
        id: OrgId::from_trusted(id),
        name,
        api_version: ApiVersion::parse(api_version).ok_or_else(|| StoreError::Corrupt(format!("api_version {api_version:?}")))?,
        created_at: Timestamp::from_micros(created_at),
    })
}

#[expect(clippy::too_many_arguments, reason = "one row's columns")]
pub(crate) fn usage(
    org_id: String,
    org_name: String,
    environment: &str,
    key_id: String,
    deprecated: String,
    count: i64,
    first_seen_at: i64,
    last_seen_at: i64,
) -> Result<DeprecationUsageRecord, StoreError> {
    Ok(DeprecationUsageRecord {
        org_id: OrgId::from_trusted(org_id),
        org_name,
        environment: Environment::parse(environment).ok_or_else(|| StoreError::Corrupt(format!("environment {environment:?}")))?,
        key_id: ApiKeyId::from_trusted(key_id),
        deprecated,
        count,
        first_seen_at: Timestamp::from_micros(first_seen_at),
        last_seen_at: Timestamp::from_micros(last_seen_at),
    })
}

/// A count as stored (the column is a signed 64-bit integer).
pub(crate) fn stored_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

pub(crate) const USAGE_REPORT_SQL: &str = "SELECT o.id, o.name, t.environment, u.key_id, u.deprecated, u.use_count, u.first_seen_at, u.last_seen_at
     FROM deprecation_usage u JOIN api_keys k ON k.id = u.key_id JOIN tenants t ON t.id = k.tenant_id JOIN organizations o ON o.id = t.org_id
     ORDER BY u.last_seen_at DESC, u.key_id, u.deprecated";
