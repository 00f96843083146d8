//! Store errors, classified so the engine can decide between retrying a
//! batch, failing it, and reporting the database unavailable.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A concurrent writer holds what we need (deadlock, serialization
    /// failure, unique key being inserted by another server): retry the batch.
    #[error("conflict with a concurrent writer: {0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// COMMIT failed in a way that does not say whether it took effect (the
    /// connection dropped mid-commit): never retried, or a write could land twice.
    #[error("commit outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match &e {
            rusqlite::Error::SqliteFailure(code, _) => match code.code {
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => StoreError::Conflict(e.to_string()),
                rusqlite::ErrorCode::ConstraintViolation => StoreError::Conflict(e.to_string()),
                rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure => {
                    StoreError::Unavailable(e.to_string())
                }
                _ => StoreError::Other(e.to_string()),
            },
            rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Other(e.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::UNIQUE_VIOLATION => {
                StoreError::Conflict(e.to_string())
            }
            Some(_) => StoreError::Other(e.to_string()),
            None if e.is_closed() => StoreError::Unavailable(e.to_string()),
            None => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        StoreError::Unavailable(e.to_string())
    }
}
