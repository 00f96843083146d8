//! Long-running operations as rows: created with `202 Accepted`, claimed by a
//! worker under a lease, finished with the response the request would have
//! had synchronously.
//!
//! These rows are bookkeeping about requests, not ledger state, so they are
//! written here directly rather than through the engine; the ledger changes an
//! operation makes still go through the engine, under idempotency keys derived
//! from the operation id (see `settle-api`'s `operations` module).
//!
//! Claiming: the oldest operation that is `pending`, or `running` with an
//! expired lease (its worker died), becomes `running` with this worker's lease.
//! On PostgreSQL the candidate row is locked `FOR UPDATE SKIP LOCKED`, so
//! several servers share the work without waiting on each other; on SQLite
//! the write lock serializes claims.

use crate::error::StoreError;
use crate::records::{IdempotencyRecord, Page, PageRequest, StoredResponse};
use crate::store::Store;
use rusqlite::{OptionalExtension, params};
use settle_core::clock::Timestamp;
use settle_core::ids::{ApiKeyId, OperationId};
use settle_core::operations::OperationStatus;
use settle_core::tenancy::TenantId;

/// An operation to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOperation {
    pub id: OperationId,
    pub tenant: TenantId,
    pub api_key_id: ApiKeyId,
    pub kind: String,
    pub request_path: String,
    /// The request body, canonical JSON.
    pub request_body: Vec<u8>,
    pub request_id: String,
    pub total: i64,
    /// Transactions per chunk of a batch (see the migration).
    pub chunk_items: i64,
    pub correlation_id: Option<String>,
    pub created_at: Timestamp,
}

/// An operation as stored, without its request body (which can be megabytes
/// and only the worker needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationRecord {
    pub id: OperationId,
    pub tenant: TenantId,
    pub api_key_id: ApiKeyId,
    pub kind: String,
    pub status: OperationStatus,
    pub request_path: String,
    pub request_id: String,
    pub completed: i64,
    pub total: i64,
    pub chunk_items: i64,
    pub correlation_id: Option<String>,
    /// Once finished: what the request would have answered synchronously.
    pub response: Option<StoredResponse>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
    pub attempts: i64,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

/// An operation a worker now holds, with the request it must run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedOperation {
    pub record: OperationRecord,
    pub request_body: Vec<u8>,
}

/// What creating an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateOperation {
    Created,
    /// The idempotency key was taken meanwhile (a concurrent retry); nothing
    /// was created, and this is the record that holds the key.
    KeyTaken(IdempotencyRecord),
}

const COLUMNS: &str = "id, tenant_id, api_key_id, kind, status, request_path, request_id, completed, total, response_status, response_body, \
                       lease_owner, lease_expires_at, attempts, created_at, started_at, finished_at, updated_at, chunk_items, correlation_id";
/// The claimable rows; written so that both databases use `operations_open`.
const CLAIMABLE: &str = "status IN ('pending', 'running') AND (status = 'pending' OR lease_expires_at < ";

/// A row as both drivers read it.
struct OperationRow {
    id: String,
    tenant_id: i64,
    api_key_id: String,
    kind: String,
    status: String,
    request_path: String,
    request_id: String,
    completed: i64,
    total: i64,
    response_status: Option<i64>,
    response_body: Option<Vec<u8>>,
    lease_owner: Option<String>,
    lease_expires_at: Option<i64>,
    attempts: i64,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    updated_at: i64,
    chunk_items: i64,
    correlation_id: Option<String>,
}

impl OperationRow {
    fn into_record(self) -> Result<OperationRecord, StoreError> {
        let status = OperationStatus::parse(&self.status).ok_or_else(|| StoreError::Corrupt(format!("operation status {:?}", self.status)))?;
        let response = match (self.response_status, self.response_body) {
            (Some(code), Some(body)) => {
                Some(StoredResponse { status: u16::try_from(code).map_err(|_| StoreError::Corrupt(format!("operation response status {code}")))?, body })
            }
            (None, None) => None,
            _ => return Err(StoreError::Corrupt(format!("operation {} has half a response", self.id))),
        };
        Ok(OperationRecord {
            id: OperationId::from_trusted(self.id),
            tenant: TenantId(self.tenant_id),
            api_key_id: ApiKeyId::from_trusted(self.api_key_id),
            kind: self.kind,
            status,
            request_path: self.request_path,
            request_id: self.request_id,
            completed: self.completed,
            total: self.total,
            chunk_items: self.chunk_items,
            correlation_id: self.correlation_id,
            response,
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at.map(Timestamp::from_micros),
            attempts: self.attempts,
            created_at: Timestamp::from_micros(self.created_at),
            started_at: self.started_at.map(Timestamp::from_micros),
            finished_at: self.finished_at.map(Timestamp::from_micros),
            updated_at: Timestamp::from_micros(self.updated_at),
        })
    }
}

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OperationRow> {
    Ok(OperationRow {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        api_key_id: r.get(2)?,
        kind: r.get(3)?,
        status: r.get(4)?,
        request_path: r.get(5)?,
        request_id: r.get(6)?,
        completed: r.get(7)?,
        total: r.get(8)?,
        response_status: r.get(9)?,
        response_body: r.get(10)?,
        lease_owner: r.get(11)?,
        lease_expires_at: r.get(12)?,
        attempts: r.get(13)?,
        created_at: r.get(14)?,
        started_at: r.get(15)?,
        finished_at: r.get(16)?,
        updated_at: r.get(17)?,
        chunk_items: r.get(18)?,
        correlation_id: r.get(19)?,
    })
}

fn pg_get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a tokio_postgres::Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index).map_err(|e| StoreError::Corrupt(format!("operations column {index}: {e}")))
}

fn pg_row(r: &tokio_postgres::Row) -> Result<OperationRow, StoreError> {
    Ok(OperationRow {
        id: pg_get(r, 0)?,
        tenant_id: pg_get(r, 1)?,
        api_key_id: pg_get(r, 2)?,
        kind: pg_get(r, 3)?,
        status: pg_get(r, 4)?,
        request_path: pg_get(r, 5)?,
        request_id: pg_get(r, 6)?,
        completed: pg_get(r, 7)?,
        total: pg_get(r, 8)?,
        response_status: pg_get(r, 9)?,
        response_body: pg_get(r, 10)?,
        lease_owner: pg_get(r, 11)?,
        lease_expires_at: pg_get(r, 12)?,
        attempts: pg_get(r, 13)?,
        created_at: pg_get(r, 14)?,
        started_at: pg_get(r, 15)?,
        finished_at: pg_get(r, 16)?,
        updated_at: pg_get(r, 17)?,
        chunk_items: pg_get(r, 18)?,
        correlation_id: pg_get(r, 19)?,
    })
}

impl Store {
    /// Creates an operation and, when the request carried an
    /// `Idempotency-Key`, its idempotency record (the `202` answer) in the
    /// same database transaction: a retry either finds both or neither.
    pub async fn create_operation(&self, new: NewOperation, idempotency: Option<IdempotencyRecord>) -> Result<CreateOperation, StoreError> {
        let key = idempotency.as_ref().map(|r| (r.tenant, r.key.clone()));
        let result = match self {
            Store::Sqlite(s) => {
                s.write(move |tx| {
                        tx.execute(
                            "INSERT INTO operations (id, tenant_id, api_key_id, kind, status, request_path, request_body, request_id, total, created_at, updated_at,
                                                     chunk_items, correlation_id)
                             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11)",
                            params![
                                new.id.as_str(),
                                new.tenant.0,
                                new.api_key_id.as_str(),
                                new.kind,
                                new.request_path,
                                new.request_body,
                                new.request_id,
                                new.total,
                                new.created_at.micros(),
                                new.chunk_items,
                                new.correlation_id
                            ],
                        )?;
                        if let Some(r) = &idempotency {
                            tx.execute(
                                "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                params![r.tenant.0, r.key, r.fingerprint, r.response.status, r.response.body, r.created_at.micros()],
                            )?;
                        }
                        Ok(())
                })
                .await
            }
            Store::Postgres(p) => {
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                tx.execute(
                    "INSERT INTO operations (id, tenant_id, api_key_id, kind, status, request_path, request_body, request_id, total, created_at, updated_at,
                                             chunk_items, correlation_id)
                     VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $9, $10, $11)",
                    &[
                        &new.id.as_str(),
                        &new.tenant.0,
                        &new.api_key_id.as_str(),
                        &new.kind,
                        &new.request_path,
                        &new.request_body,
                        &new.request_id,
                        &new.total,
                        &new.created_at.micros(),
                        &new.chunk_items,
                        &new.correlation_id,
                    ],
                )
                .await?;
                if let Some(r) = &idempotency {
                    tx.execute(
                        "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                        &[&r.tenant.0, &r.key, &r.fingerprint, &i64::from(r.response.status), &r.response.body, &r.created_at.micros()],
                    )
                    .await?;
                }
                tx.commit().await.map_err(StoreError::from)
            }
        };
        match (result, key) {
            (Ok(()), _) => Ok(CreateOperation::Created),
            // The key's row appeared since the caller looked: a concurrent
            // request with the same key won. Answer with what it stored.
            (Err(StoreError::Conflict(cause)), Some((tenant, key))) => match self.find_idempotency(tenant, key).await? {
                Some(record) => Ok(CreateOperation::KeyTaken(record)),
                None => Err(StoreError::Conflict(cause)),
            },
            (Err(e), _) => Err(e),
        }
    }

    /// How many of the tenant's operations are `pending` or `running`.
    pub async fn count_open_operations(&self, tenant: TenantId) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM operations WHERE status IN ('pending', 'running') AND tenant_id = ";
        match self {
            Store::Sqlite(s) => s.read(move |c| Ok(c.prepare_cached(&format!("{SQL}?1"))?.query_row([tenant.0], |r| r.get(0))?)).await,
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let stmt = client.prepare_cached(&format!("{SQL}$1")).await?;
                pg_get(&client.query_one(&stmt, &[&tenant.0]).await?, 0)
            }
        }
    }

    /// The tenant's operation `id`, or `None` (another tenant's is `None` too).
    pub async fn get_operation(&self, tenant: TenantId, id: OperationId) -> Result<Option<OperationRecord>, StoreError> {
        let row = match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let mut stmt = c.prepare_cached(&format!("SELECT {COLUMNS} FROM operations WHERE id = ?1 AND tenant_id = ?2"))?;
                    Ok(stmt.query_row(params![id.as_str(), tenant.0], sqlite_row).optional()?)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let stmt = client.prepare_cached(&format!("SELECT {COLUMNS} FROM operations WHERE id = $1 AND tenant_id = $2")).await?;
                client.query_opt(&stmt, &[&id.as_str(), &tenant.0]).await?.as_ref().map(pg_row).transpose()?
            }
        };
        row.map(OperationRow::into_record).transpose()
    }

    /// A page of the tenant's operations, newest first.
    pub async fn list_operations(&self, tenant: TenantId, page: PageRequest) -> Result<Page<OperationRecord>, StoreError> {
        let (descending, bound) = page.cursor.keyset_start(false);
        let (cmp, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        let limit = i64::from(page.limit) + 1;
        let rows = match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let sql = format!("SELECT {COLUMNS} FROM operations WHERE tenant_id = ?1 AND id {cmp} ?2 ORDER BY id {order} LIMIT ?3");
                    let mut stmt = c.prepare_cached(&sql)?;
                    let rows = stmt.query_map(params![tenant.0, bound, limit], sqlite_row)?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let sql = format!("SELECT {COLUMNS} FROM operations WHERE tenant_id = $1 AND id {cmp} $2 ORDER BY id {order} LIMIT $3");
                let stmt = client.prepare_cached(&sql).await?;
                client.query(&stmt, &[&tenant.0, &bound, &limit]).await?.iter().map(pg_row).collect::<Result<Vec<_>, _>>()?
            }
        };
        let records = rows.into_iter().map(OperationRow::into_record).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(records, &page))
    }

    /// Takes the oldest claimable operation for `owner` until `lease_until`:
    /// a `pending` one, or a `running` one whose lease expired before `now`.
    pub async fn claim_operation(&self, owner: &str, now: Timestamp, lease_until: Timestamp) -> Result<Option<ClaimedOperation>, StoreError> {
        let owner = owner.to_owned();
        let found = match self {
            Store::Sqlite(s) => {
                // A cheap look on a pooled reader first, so an idle worker
                // never takes the write lock.
                let any = s
                    .read(move |c| {
                        let sql = format!("SELECT 1 FROM operations WHERE {CLAIMABLE}?1) LIMIT 1");
                        Ok(c.prepare_cached(&sql)?.query_row([now.micros()], |_| Ok(())).optional()?.is_some())
                    })
                    .await?;
                if !any {
                    return Ok(None);
                }
                s.write(move |tx| {
                    let sql = format!(
                        "UPDATE operations SET status = 'running', lease_owner = ?1, lease_expires_at = ?2, attempts = attempts + 1,
                               started_at = COALESCE(started_at, ?3), updated_at = ?3
                             WHERE id = (SELECT id FROM operations WHERE {CLAIMABLE}?3) ORDER BY id LIMIT 1)
                             RETURNING {COLUMNS}, request_body"
                    );
                    let mut stmt = tx.prepare(&sql)?;
                    let row =
                        stmt.query_row(params![owner, lease_until.micros(), now.micros()], |r| Ok((sqlite_row(r)?, r.get::<_, Vec<u8>>(20)?))).optional()?;
                    Ok(row)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let sql = format!(
                    "UPDATE operations SET status = 'running', lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1,
                       started_at = COALESCE(started_at, $3), updated_at = $3
                     WHERE id = (SELECT id FROM operations WHERE {CLAIMABLE}$3) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING {COLUMNS}, request_body"
                );
                let stmt = client.prepare_cached(&sql).await?;
                match client.query_opt(&stmt, &[&owner, &lease_until.micros(), &now.micros()]).await? {
                    Some(r) => Some((pg_row(&r)?, pg_get::<Vec<u8>>(&r, 20)?)),
                    None => None,
                }
            }
        };
        found.map(|(row, request_body)| Ok(ClaimedOperation { record: row.into_record()?, request_body })).transpose()
    }

    /// Records progress and extends the lease; `false` when `owner` no longer
    /// holds the operation (its lease expired and another worker took it).
    pub async fn renew_operation(&self, id: &OperationId, owner: &str, completed: i64, now: Timestamp, lease_until: Timestamp) -> Result<bool, StoreError> {
        let (id, owner) = (id.as_str().to_owned(), owner.to_owned());
        let updated = match self {
            Store::Sqlite(s) => {
                s.write(move |tx| {
                    let sql = format!("UPDATE operations SET completed = ?3, lease_expires_at = ?4, updated_at = ?5 WHERE {HELD_SQLITE}");
                    Ok(tx.execute(&sql, params![id, owner, completed, lease_until.micros(), now.micros()])? as u64)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let sql = format!("UPDATE operations SET completed = $3, lease_expires_at = $4, updated_at = $5 WHERE {HELD_PG}");
                client.execute(&sql, &[&id, &owner, &completed, &lease_until.micros(), &now.micros()]).await?
            }
        };
        Ok(updated == 1)
    }

    /// Stores the final answer; `false` when `owner` no longer holds the operation.
    pub async fn finish_operation(&self, id: &OperationId, owner: &str, completed: i64, response: StoredResponse, now: Timestamp) -> Result<bool, StoreError> {
        let (id, owner) = (id.as_str().to_owned(), owner.to_owned());
        let status = OperationStatus::from_http_status(response.status).as_str();
        let code = i64::from(response.status);
        let updated = match self {
            Store::Sqlite(s) => {
                s.write(move |tx| {
                    let sql = format!(
                        "UPDATE operations SET status = ?3, completed = ?4, response_status = ?5, response_body = ?6, finished_at = ?7, updated_at = ?7,
                               lease_owner = NULL, lease_expires_at = NULL WHERE {HELD_SQLITE}"
                    );
                    Ok(tx.execute(&sql, params![id, owner, status, completed, code, response.body, now.micros()])? as u64)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let sql = format!(
                    "UPDATE operations SET status = $3, completed = $4, response_status = $5, response_body = $6, finished_at = $7, updated_at = $7,
                       lease_owner = NULL, lease_expires_at = NULL WHERE {HELD_PG}"
                );
                client.execute(&sql, &[&id, &owner, &status, &completed, &code, &response.body, &now.micros()]).await?
            }
        };
        Ok(updated == 1)
    }

    /// Gives an operation back (`pending`, no lease) so that the next worker,
    /// here or on another server, starts it at once; used on shutdown.
    pub async fn release_operation(&self, id: &OperationId, owner: &str, now: Timestamp) -> Result<bool, StoreError> {
        let (id, owner) = (id.as_str().to_owned(), owner.to_owned());
        let updated = match self {
            Store::Sqlite(s) => {
                s.write(move |tx| {
                    let sql =
                        format!("UPDATE operations SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = ?3 WHERE {HELD_SQLITE}");
                    Ok(tx.execute(&sql, params![id, owner, now.micros()])? as u64)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let sql = format!("UPDATE operations SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = $3 WHERE {HELD_PG}");
                client.execute(&sql, &[&id, &owner, &now.micros()]).await?
            }
        };
        Ok(updated == 1)
    }
}

/// The row a worker still holds: the first two parameters are its id and the worker.
const HELD_SQLITE: &str = "id = ?1 AND lease_owner = ?2 AND status = 'running'";
const HELD_PG: &str = "id = $1 AND lease_owner = $2 AND status = 'running'";
