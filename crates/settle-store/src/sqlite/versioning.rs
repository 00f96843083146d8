//! SQLite side of `crate::versioning`: organization pins and deprecation counts.

use super::SqliteStore;
use crate::error::StoreError;
use crate::versioning::{self, DeprecationUsageRecord, DeprecationUse, OrganizationRecord};
use rusqlite::params;
use settle_core::api_version::ApiVersion;

impl SqliteStore {
    pub fn organizations(&self) -> Result<Vec<OrganizationRecord>, StoreError> {
        self.read_blocking(|c| {
            let mut stmt = c.prepare_cached("SELECT id, name, api_version, created_at FROM organizations ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?)))?;
            rows.map(|r| r.map_err(StoreError::from).and_then(|(id, name, version, at)| versioning::organization(id, name, &version, at))).collect()
        })
    }

    pub fn set_organization_api_version(&self, name: &str, version: ApiVersion) -> Result<bool, StoreError> {
        self.write_blocking(|tx| Ok(tx.execute("UPDATE organizations SET api_version = ?2 WHERE name = ?1", params![name, version.to_string()])? > 0))
    }

    /// One short write transaction for a whole flush, never one per request:
    /// it competes with the engine for SQLite's single write lock.
    pub fn record_deprecation_uses(&self, uses: &[DeprecationUse]) -> Result<(), StoreError> {
        self.write_blocking(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO deprecation_usage (key_id, deprecated, use_count, first_seen_at, last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (key_id, deprecated) DO UPDATE SET
                   use_count = use_count + excluded.use_count,
                   first_seen_at = MIN(first_seen_at, excluded.first_seen_at),
                   last_seen_at = MAX(last_seen_at, excluded.last_seen_at)",
            )?;
            for u in uses {
                stmt.execute(params![u.key_id.as_str(), u.deprecated, versioning::stored_count(u.count), u.first_seen_at.micros(), u.last_seen_at.micros()])?;
            }
            Ok(())
        })
    }

    pub fn deprecation_usage(&self) -> Result<Vec<DeprecationUsageRecord>, StoreError> {
        self.read_blocking(|c| {
            let mut stmt = c.prepare_cached(versioning::USAGE_REPORT_SQL)?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?;
            rows.map(|r| {
                r.map_err(StoreError::from)
                    .and_then(|(org_id, org_name, env, key, what, count, first, last)| versioning::usage(org_id, org_name, &env, key, what, count, first, last))
            })
            .collect()
        })
    }
}
