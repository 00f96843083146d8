//! Feature flag rollouts as operators set them. Written directly (they are
//! configuration, not ledger state); servers read them every second.

use crate::error::StoreError;
use crate::store::Store;
use rusqlite::OptionalExtension;
use settle_core::clock::Timestamp;
use settle_core::flags::Rollout;

/// One flag's stored rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagRecord {
    pub name: String,
    pub rollout: Rollout,
    pub updated_at: Timestamp,
}

fn record(name: String, percent: i64, orgs: &str, updated_at: i64) -> Result<FlagRecord, StoreError> {
    let percent = u8::try_from(percent).ok().filter(|p| *p <= 100).ok_or_else(|| StoreError::Corrupt(format!("flag {name}: percent {percent}")))?;
    let orgs: Vec<String> = serde_json::from_str(orgs).map_err(|e| StoreError::Corrupt(format!("flag {name}: orgs: {e}")))?;
    Ok(FlagRecord { name, rollout: Rollout { percent, orgs }, updated_at: Timestamp::from_micros(updated_at) })
}

fn orgs_json(rollout: &Rollout) -> Result<String, StoreError> {
    serde_json::to_string(&rollout.orgs).map_err(|e| StoreError::Other(e.to_string()))
}

const LIST: &str = "SELECT name, percent, orgs, updated_at FROM feature_flags ORDER BY name";
const SET_SQLITE: &str = "INSERT INTO feature_flags (name, percent, orgs, updated_at) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (name) DO UPDATE SET percent = excluded.percent, orgs = excluded.orgs, updated_at = excluded.updated_at";
const SET_POSTGRES: &str = "INSERT INTO feature_flags (name, percent, orgs, updated_at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (name) DO UPDATE SET percent = excluded.percent, orgs = excluded.orgs, updated_at = excluded.updated_at";

impl Store {
    /// Every stored rollout, by name.
    pub async fn feature_flags(&self) -> Result<Vec<FlagRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                s.read(|c| {
                    let mut stmt = c.prepare_cached(LIST)?;
                    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?)))?;
                    rows.map(|r| r.map_err(StoreError::from).and_then(|(n, p, o, u)| record(n, p, &o, u))).collect()
                })
                .await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let rows = client.query(LIST, &[]).await?;
                rows.iter().map(|r| record(r.try_get(0)?, i64::from(r.try_get::<_, i32>(1)?), &r.try_get::<_, String>(2)?, r.try_get(3)?)).collect()
            }
        }
    }

    /// Sets (or replaces) a flag's rollout.
    pub async fn set_feature_flag(&self, name: &str, rollout: &Rollout, now: Timestamp) -> Result<(), StoreError> {
        let (name, orgs, percent) = (name.to_owned(), orgs_json(rollout)?, rollout.percent);
        match self {
            Store::Sqlite(s) => {
                s.write(move |tx| {
                    tx.execute(SET_SQLITE, rusqlite::params![name, percent, orgs, now.micros()])?;
                    Ok(())
                })
                .await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                client.execute(SET_POSTGRES, &[&name, &i32::from(percent), &orgs, &now.micros()]).await?;
                Ok(())
            }
        }
    }

    /// Removes a flag's rollout, so its default applies again; false if none was set.
    pub async fn clear_feature_flag(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        match self {
            Store::Sqlite(s) => s.write(move |tx| Ok(tx.execute("DELETE FROM feature_flags WHERE name = ?1", [name])? > 0)).await,
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                Ok(client.execute("DELETE FROM feature_flags WHERE name = $1", &[&name]).await? > 0)
            }
        }
    }

    /// One flag's stored rollout.
    pub async fn feature_flag(&self, name: &str) -> Result<Option<FlagRecord>, StoreError> {
        let name = name.to_owned();
        match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let row = c
                        .prepare_cached("SELECT name, percent, orgs, updated_at FROM feature_flags WHERE name = ?1")?
                        .query_row([name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?)))
                        .optional()?;
                    row.map(|(n, p, o, u)| record(n, p, &o, u)).transpose()
                })
                .await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let row = client.query_opt("SELECT name, percent, orgs, updated_at FROM feature_flags WHERE name = $1", &[&name]).await?;
                row.map(|r| record(r.try_get(0)?, i64::from(r.try_get::<_, i32>(1)?), &r.try_get::<_, String>(2)?, r.try_get(3)?)).transpose()
            }
        }
    }
}
