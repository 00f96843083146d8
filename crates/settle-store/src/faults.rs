//! Sandbox faults (see `settle_core::faults`): written directly (they are
//! test configuration, not ledger state) and read by every server about once
//! a second, like feature flags.

use crate::error::StoreError;
use crate::store::Store;
use settle_core::clock::Timestamp;
use settle_core::faults::{Fault, FaultMode, FaultTarget, Probability};
use settle_core::tenancy::TenantId;

/// One tenant's fault, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    pub tenant: TenantId,
    pub fault: Fault,
}

type FaultRow = (i64, String, String, i64, Option<i64>, i64);

fn record((tenant, target, mode, percent, until, created_at): FaultRow) -> Result<FaultRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("fault of tenant {tenant}: {what}"));
    Ok(FaultRecord {
        tenant: TenantId(tenant),
        fault: Fault {
            target: FaultTarget::parse(&target).ok_or_else(|| corrupt(&format!("target {target:?}")))?,
            mode: FaultMode::parse(&mode).ok_or_else(|| corrupt(&format!("mode {mode:?}")))?,
            probability: Probability::new(percent).ok_or_else(|| corrupt(&format!("probability {percent}")))?,
            until: until.map(Timestamp::from_micros),
            created_at: Timestamp::from_micros(created_at),
        },
    })
}

const COLUMNS: &str = "tenant_id, target, mode, probability_percent, until_at, created_at";

fn active_sql(p: &str, one_tenant: bool) -> String {
    let tenant = if one_tenant { format!(" AND tenant_id = {p}2") } else { String::new() };
    format!("SELECT {COLUMNS} FROM faults WHERE (until_at IS NULL OR until_at > {p}1){tenant} ORDER BY tenant_id, target, mode")
}

const UPSERT: &str = "INSERT INTO faults (tenant_id, target, mode, probability_percent, until_at, created_at) VALUES (#1, #2, #3, #4, #5, #6)
     ON CONFLICT (tenant_id, target, mode) DO UPDATE SET probability_percent = excluded.probability_percent, until_at = excluded.until_at,
     created_at = excluded.created_at";
const PRUNE: &str = "DELETE FROM faults WHERE tenant_id = #1 AND until_at IS NOT NULL AND until_at <= #2";

fn sql(template: &str, p: &str) -> String {
    template.replace('#', p)
}

impl Store {
    /// The faults in force at `now`: every tenant's (`tenant: None`, what the
    /// servers cache), or one tenant's.
    pub async fn active_faults(&self, tenant: Option<TenantId>, now: Timestamp) -> Result<Vec<FaultRecord>, StoreError> {
        let rows: Vec<FaultRow> = match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let mut stmt = c.prepare_cached(&active_sql("?", tenant.is_some()))?;
                    let map = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?));
                    let rows = match tenant {
                        Some(t) => stmt.query_map(rusqlite::params![now.micros(), t.0], map)?.collect::<Result<Vec<_>, _>>()?,
                        None => stmt.query_map(rusqlite::params![now.micros()], map)?.collect::<Result<Vec<_>, _>>()?,
                    };
                    Ok(rows)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let rows = match tenant {
                    Some(t) => client.query(&active_sql("$", true), &[&now.micros(), &t.0]).await?,
                    None => client.query(&active_sql("$", false), &[&now.micros()]).await?,
                };
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, i64::from(r.try_get::<_, i32>(3)?), r.try_get(4)?, r.try_get(5)?)))
                    .collect::<Result<Vec<_>, StoreError>>()?
            }
        };
        rows.into_iter().map(record).collect()
    }

    /// Sets (or replaces) the tenant's fault for its target and mode, and
    /// forgets the tenant's faults that ended before `now`.
    pub async fn set_fault(&self, tenant: TenantId, fault: &Fault, now: Timestamp) -> Result<(), StoreError> {
        let (target, mode) = (fault.target.as_str(), fault.mode.as_str());
        let percent = i32::from(fault.probability.percent());
        let until = fault.until.map(Timestamp::micros);
        let created_at = fault.created_at.micros();
        match self {
            Store::Sqlite(s) => {
                s.write(move |tx| {
                    tx.execute(&sql(PRUNE, "?"), rusqlite::params![tenant.0, now.micros()])?;
                    tx.execute(&sql(UPSERT, "?"), rusqlite::params![tenant.0, target, mode, percent, until, created_at])?;
                    Ok(())
                })
                .await
            }
            Store::Postgres(p) => {
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                tx.execute(&sql(PRUNE, "$"), &[&tenant.0, &now.micros()]).await?;
                tx.execute(&sql(UPSERT, "$"), &[&tenant.0, &target, &mode, &percent, &until, &created_at]).await?;
                tx.commit().await?;
                Ok(())
            }
        }
    }

    /// Removes every fault of the tenant; returns how many rows went.
    pub async fn clear_faults(&self, tenant: TenantId) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.write(move |tx| Ok(tx.execute("DELETE FROM faults WHERE tenant_id = ?1", [tenant.0])? as u64)).await,
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                Ok(client.execute("DELETE FROM faults WHERE tenant_id = $1", &[&tenant.0]).await?)
            }
        }
    }
}
