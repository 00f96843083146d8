//! PostgreSQL side of `crate::versioning`: organization pins and deprecation counts.

use super::{PgStore, get};
use crate::error::StoreError;
use crate::versioning::{self, DeprecationUsageRecord, DeprecationUse, OrganizationRecord};
use settle_core::api_version::ApiVersion;

impl PgStore {
    pub async fn organizations(&self) -> Result<Vec<OrganizationRecord>, StoreError> {
        let client = self.pool.get().await?;
        let found = client.query("SELECT id, name, api_version, created_at FROM organizations ORDER BY name", &[]).await?;
        found.iter().map(|r| versioning::organization(get(r, 0)?, get(r, 1)?, get::<String>(r, 2)?.as_str(), get(r, 3)?)).collect()
    }

    pub async fn set_organization_api_version(&self, name: &str, version: ApiVersion) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        Ok(client.execute("UPDATE organizations SET api_version = $2 WHERE name = $1", &[&name, &version.to_string()]).await? > 0)
    }

    /// One transaction per flush. Several servers add their own counts; the
    /// upsert makes the totals the sum of them all.
    pub async fn record_deprecation_uses(&self, uses: &[DeprecationUse]) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO deprecation_usage (key_id, deprecated, use_count, first_seen_at, last_seen_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (key_id, deprecated) DO UPDATE SET
                   use_count = deprecation_usage.use_count + excluded.use_count,
                   first_seen_at = LEAST(deprecation_usage.first_seen_at, excluded.first_seen_at),
                   last_seen_at = GREATEST(deprecation_usage.last_seen_at, excluded.last_seen_at)",
            )
            .await?;
        // A fixed order, so two servers flushing at once lock rows in the same order.
        let mut sorted: Vec<&DeprecationUse> = uses.iter().collect();
        sorted.sort_by(|a, b| (a.key_id.as_str(), &a.deprecated).cmp(&(b.key_id.as_str(), &b.deprecated)));
        for u in sorted {
            tx.execute(&stmt, &[&u.key_id.as_str(), &u.deprecated, &versioning::stored_count(u.count), &u.first_seen_at.micros(), &u.last_seen_at.micros()])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn deprecation_usage(&self) -> Result<Vec<DeprecationUsageRecord>, StoreError> {
        let client = self.pool.get().await?;
        let found = client.query(versioning::USAGE_REPORT_SQL, &[]).await?;
        found
            .iter()
            .map(|r| versioning::usage(get(r, 0)?, get(r, 1)?, get::<String>(r, 2)?.as_str(), get(r, 3)?, get(r, 4)?, get(r, 5)?, get(r, 6)?, get(r, 7)?))
            .collect()
    }
}
