//! The one error type at the HTTP edge. Every domain error maps to exactly
//! one stable code through an exhaustive `match`, so a new domain error
//! cannot silently become a 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use settle_core::ledger::LedgerError;
use settle_store::engine::CommandError;

/// The `type` field: the family of the error, for clients that branch coarsely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequestError,
    AuthenticationError,
    PermissionError,
    IdempotencyError,
    ConflictError,
    LedgerError,
    ApiError,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorType,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorType, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, code, message: message.into(), param: None }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequestError, "invalid_request", message).with_param(param)
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorType::InvalidRequestError, "not_found", format!("no such {what}"))
    }

    /// A fault of ours. The cause is logged here, once; the body says nothing internal.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::ApiError,
            "internal_error",
            "something went wrong on our side; nothing was changed unless a later read shows it",
        )
    }

    /// The database failed mid-commit: the change may have been written. A
    /// retry with the same Idempotency-Key answers what actually happened.
    pub fn outcome_unknown() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::ApiError,
            "service_unavailable",
            "the ledger database failed while committing, so this change may or may not have been written; retry with the same Idempotency-Key to learn which",
        )
    }

    /// The engine's queue is full: the command was never queued, so nothing
    /// ran. Sent with `Retry-After` (see `hygiene::unavailable_now`).
    pub fn overloaded() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::ApiError,
            "overloaded",
            "the ledger is busy and did not take this request, so nothing was written; retry after the Retry-After delay with the same Idempotency-Key",
        )
    }

    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::ApiError,
            "service_unavailable",
            "the ledger is temporarily unavailable; nothing was written, retry with the same Idempotency-Key",
        )
    }

    pub fn body(&self, request_id: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Body<'a>,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "type")]
            kind: ErrorType,
            code: &'a str,
            message: &'a str,
            param: Option<&'a str>,
            request_id: &'a str,
        }
        let envelope = Envelope { error: Body { kind: self.kind, code: self.code, message: &self.message, param: self.param.as_deref(), request_id } };
        serde_json::to_vec(&envelope).unwrap_or_else(|_| b"{\"error\":{\"type\":\"api_error\",\"code\":\"internal_error\"}}".to_vec())
    }

    /// The object used inside batch results (no request id: the batch response has one).
    pub fn item_json(&self) -> serde_json::Value {
        serde_json::json!({ "type": self.kind, "code": self.code, "message": self.message, "param": self.param })
    }
}

/// Carried on an error response until the request-id layer writes the body,
/// so that every error body, wherever it was raised, names its request.
#[derive(Clone, Debug)]
pub struct PendingErrorBody(pub ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(PendingErrorBody(self));
        response
    }
}

impl From<settle_store::StoreError> for ApiError {
    fn from(e: settle_store::StoreError) -> ApiError {
        match e {
            settle_store::StoreError::Unavailable(cause) => {
                tracing::error!(error = %cause, "database unavailable");
                ApiError::unavailable()
            }
            other => ApiError::internal(&other),
        }
    }
}

impl From<&CommandError> for ApiError {
    fn from(e: &CommandError) -> ApiError {
        use ErrorType::{ConflictError, InvalidRequestError, LedgerError as Rule};
        let msg = e.to_string();
        let (status, kind, code, param) = match e {
            CommandError::Ledger(l) => match l {
                LedgerError::AccountNotFound(_) => (StatusCode::UNPROCESSABLE_ENTITY, Rule, "account_not_found", Some("entries")),
                LedgerError::CurrencyMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, Rule, "currency_mismatch", Some("entries")),
                LedgerError::Unbalanced { .. } => (StatusCode::UNPROCESSABLE_ENTITY, Rule, "unbalanced_transaction", Some("entries")),
                LedgerError::InsufficientFunds(_) => (StatusCode::UNPROCESSABLE_ENTITY, Rule, "insufficient_funds", None),
                LedgerError::VersionConflict { .. } => (StatusCode::CONFLICT, ConflictError, "version_conflict", Some("expected_versions")),
                LedgerError::VersionForUntouchedAccount(_) => (StatusCode::BAD_REQUEST, InvalidRequestError, "invalid_request", Some("expected_versions")),
                LedgerError::BalanceOverflow(_) => (StatusCode::UNPROCESSABLE_ENTITY, Rule, "balance_overflow", None),
                LedgerError::TransactionNotPending(_) => (StatusCode::CONFLICT, ConflictError, "transaction_not_pending", None),
                LedgerError::TransactionNotPosted(_) => (StatusCode::CONFLICT, ConflictError, "transaction_not_posted", None),
                LedgerError::AlreadyReversed { .. } => (StatusCode::CONFLICT, ConflictError, "transaction_already_reversed", None),
                LedgerError::AmountExceedsHold { .. } => (StatusCode::UNPROCESSABLE_ENTITY, Rule, "amount_exceeds_hold", Some("entries")),
                LedgerError::ExpiryNotInFuture => (StatusCode::BAD_REQUEST, InvalidRequestError, "invalid_request", Some("expires_at")),
                LedgerError::Invariant(_) => return ApiError::internal(e),
            },
            CommandError::TransactionNotFound(_) => return ApiError::not_found("transaction"),
            CommandError::DuplicateExternalId { .. } => (StatusCode::CONFLICT, ConflictError, "duplicate_external_id", Some("external_id")),
            CommandError::BatchAborted => (StatusCode::CONFLICT, ConflictError, "batch_aborted", None),
            CommandError::Unavailable => return ApiError::unavailable(),
            CommandError::OutcomeUnknown => return ApiError::outcome_unknown(),
        };
        let error = ApiError::new(status, kind, code, msg);
        match param {
            Some(p) => error.with_param(p),
            None => error,
        }
    }
}
