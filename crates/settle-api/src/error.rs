//! The one error type at the HTTP edge. Every domain error maps to exactly
//! one stable code through an exhaustive `match`, so a new domain error
//! cannot silently become a 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use settle_core::ledger::LedgerError;
use settle_store::engine::CommandError;
use utoipa::ToSchema;

/// The `type` field: the family of the error, for clients that branch coarsely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
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
        let envelope = ErrorEnvelope {
            error: ErrorBody { kind: self.kind, code: self.code, message: &self.message, param: self.param.as_deref(), request_id: Some(request_id) },
        };
        serde_json::to_vec(&envelope).unwrap_or_else(|_| b"{\"error\":{\"type\":\"api_error\",\"code\":\"internal_error\"}}".to_vec())
    }

    /// The object used inside batch results (no request id: the batch response has one).
    pub fn item_json(&self) -> serde_json::Value {
        serde_json::json!({ "type": self.kind, "code": self.code, "message": self.message, "param": self.param })
    }
}

/// Every error response: `{"error": {...}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope<'a> {
    pub error: ErrorBody<'a>,
}

/// What went wrong, for programs (`type`, `code`, `param`) and for people (`message`).
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// Stable, machine-readable; branch on this.
    #[schema(value_type = String, example = "insufficient_funds")]
    pub code: &'a str,
    /// For people; may change wording between releases.
    #[schema(value_type = String)]
    pub message: &'a str,
    /// The request field or header at fault, when one is.
    #[schema(value_type = Option<String>, example = "entries[0].amount")]
    pub param: Option<&'a str>,
    /// The `Request-Id` of the response (absent on items inside a batch result).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub request_id: Option<&'a str>,
}

/// The code of an error answered from a stored body (an engine outcome or an
/// idempotent replay), for the metrics; always one of [`ERROR_CODES`].
#[derive(Clone, Copy, Debug)]
pub struct AnsweredCode(pub &'static str);

impl AnsweredCode {
    /// The code inside an error body, if it is one of ours.
    pub fn of(body: &[u8]) -> Option<AnsweredCode> {
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            error: Inner<'a>,
        }
        #[derive(serde::Deserialize)]
        struct Inner<'a> {
            code: &'a str,
        }
        let envelope: Envelope<'_> = serde_json::from_slice(body).ok()?;
        ERROR_CODES.iter().find(|c| c.code == envelope.error.code).map(|c| AnsweredCode(c.code))
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
                LedgerError::VersionConflict { .. } => (StatusCode::CONFLICT, ConflictError, "version_conflict", Some("expected_lock_versions")),
                LedgerError::VersionForUntouchedAccount(_) => (StatusCode::BAD_REQUEST, InvalidRequestError, "invalid_request", Some("expected_lock_versions")),
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
            CommandError::CustomerBlocked(_) => (StatusCode::UNPROCESSABLE_ENTITY, Rule, "customer_blocked", Some("entries")),
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

/// One stable error code: what a client can branch on.
pub struct ErrorCode {
    pub code: &'static str,
    pub status: u16,
    pub kind: ErrorType,
    /// When it is answered, for the API reference.
    pub when: &'static str,
}

/// Every code the API answers. The API document lists, per operation, the
/// codes it can answer from this table; a test keeps the table and the
/// mapping above in step.
pub const ERROR_CODES: &[ErrorCode] = &[
    ErrorCode {
        code: "invalid_request",
        status: 400,
        kind: ErrorType::InvalidRequestError,
        when: "a parameter, header or body field is missing, malformed or out of range; `param` names it",
    },
    ErrorCode {
        code: "invalid_api_version",
        status: 400,
        kind: ErrorType::InvalidRequestError,
        when: "`Settle-Version` is not a date or not a version this server knows; nothing ran",
    },
    ErrorCode {
        code: "invalid_webhook_url",
        status: 400,
        kind: ErrorType::InvalidRequestError,
        when: "a webhook endpoint's `url` is malformed, not https:// in live, or names (or resolves to) a private, loopback or link-local address in live",
    },
    ErrorCode {
        code: "invalid_signature",
        status: 401,
        kind: ErrorType::AuthenticationError,
        when: "the key requires signed requests and the signature or Content-Digest is missing, malformed, wrong, stale or replayed; nothing ran",
    },
    ErrorCode {
        code: "invalid_api_key",
        status: 401,
        kind: ErrorType::AuthenticationError,
        when: "no API key, a malformed Authorization header, or an unknown or revoked key",
    },
    ErrorCode { code: "insufficient_scope", status: 403, kind: ErrorType::PermissionError, when: "the key lacks the scope this operation needs" },
    ErrorCode {
        code: "not_found",
        status: 404,
        kind: ErrorType::InvalidRequestError,
        when: "no such object in this organization and environment (or no such endpoint)",
    },
    ErrorCode { code: "method_not_allowed", status: 405, kind: ErrorType::InvalidRequestError, when: "the endpoint exists but not with this method" },
    ErrorCode {
        code: "idempotency_key_in_use",
        status: 409,
        kind: ErrorType::IdempotencyError,
        when: "a request with this Idempotency-Key is still running; retry shortly",
    },
    ErrorCode {
        code: "version_conflict",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "an account is not at the `lock_version` that `expected_lock_versions` names",
    },
    ErrorCode {
        code: "duplicate_external_id",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "the `external_id` is taken; the message names the existing object",
    },
    ErrorCode { code: "transaction_not_pending", status: 409, kind: ErrorType::ConflictError, when: "only a pending transaction can be posted or voided" },
    ErrorCode { code: "transaction_not_posted", status: 409, kind: ErrorType::ConflictError, when: "only a posted transaction can be reversed" },
    ErrorCode { code: "transaction_already_reversed", status: 409, kind: ErrorType::ConflictError, when: "the transaction has a reversal already" },
    ErrorCode {
        code: "batch_aborted",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "inside an atomic batch: another item failed, so this one was not applied",
    },
    ErrorCode {
        code: "request_too_large",
        status: 413,
        kind: ErrorType::InvalidRequestError,
        when: "the body is over the limit (1 MiB; 8 MiB for batches; 16 MiB for bank statements)",
    },
    ErrorCode {
        code: "transaction_already_matched",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "the transaction is already matched to a bank statement line; the message names it",
    },
    ErrorCode { code: "line_not_matched", status: 409, kind: ErrorType::ConflictError, when: "the bank statement line has no matches to remove" },
    ErrorCode {
        code: "reconciliation_conflict",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "the line's matches changed while the request was decided; nothing was written, read the line again and retry",
    },
    ErrorCode {
        code: "statement_invalid",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "the bank statement cannot be read, or its own totals disagree; `param` names the line or element (or `content`), nothing was imported",
    },
    ErrorCode {
        code: "reconciliation_account_mismatch",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "the transaction has no entry on the bank statement's ledger account",
    },
    ErrorCode {
        code: "customer_conflict",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "the customer changed while the request was decided; nothing was written, read it again and retry",
    },
    ErrorCode {
        code: "customer_erased",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "the customer's personal data was erased; it cannot be changed or used",
    },
    ErrorCode {
        code: "invalid_kyc_transition",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "the customer's KYC status does not allow this step (only unverified or needs_more_info customers are submitted; only pending ones decided)",
    },
    ErrorCode { code: "consent_already_revoked", status: 409, kind: ErrorType::ConflictError, when: "the consent was revoked already" },
    ErrorCode { code: "screening_not_resolvable", status: 409, kind: ErrorType::ConflictError, when: "only an unresolved potential match can be resolved" },
    ErrorCode {
        code: "account_already_linked",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "the ledger account belongs to a customer already; the message names it",
    },
    ErrorCode {
        code: "customer_not_found",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "the customer_id in the body names no customer of this organization and environment; nothing was written",
    },
    ErrorCode {
        code: "customer_blocked",
        status: 422,
        kind: ErrorType::LedgerError,
        when: "an account the transaction touches belongs to a customer blocked by an unresolved or confirmed sanctions match; nothing was written",
    },
    ErrorCode {
        code: "unsupported_document",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "the uploaded file is not a PDF, JPEG, PNG or WebP, judged by its content (the declared type is not trusted)",
    },
    ErrorCode {
        code: "verification_requirements_due",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "the customer lacks fields verification needs; the message lists `kyc.requirements.currently_due`",
    },
    ErrorCode {
        code: "request_headers_too_large",
        status: 431,
        kind: ErrorType::InvalidRequestError,
        when: "more than 64 headers, or more than 32 KiB of header names and values",
    },
    ErrorCode { code: "idempotency_key_reused", status: 422, kind: ErrorType::IdempotencyError, when: "the Idempotency-Key was used with a different request" },
    ErrorCode { code: "unbalanced_transaction", status: 422, kind: ErrorType::LedgerError, when: "debits and credits differ in some currency" },
    ErrorCode { code: "currency_mismatch", status: 422, kind: ErrorType::LedgerError, when: "an entry's currency is not its account's" },
    ErrorCode {
        code: "insufficient_funds",
        status: 422,
        kind: ErrorType::LedgerError,
        when: "the transaction would take an account below its `min_available_balance`",
    },
    ErrorCode { code: "account_not_found", status: 422, kind: ErrorType::LedgerError, when: "an account id inside the body names no account" },
    ErrorCode { code: "balance_overflow", status: 422, kind: ErrorType::LedgerError, when: "a balance would leave the 64-bit range" },
    ErrorCode { code: "amount_exceeds_hold", status: 422, kind: ErrorType::LedgerError, when: "posting more than the pending entry holds" },
    ErrorCode {
        code: "too_many_operations",
        status: 429,
        kind: ErrorType::InvalidRequestError,
        when: "the environment has 1,000 operations pending or running; nothing was accepted, retry after `Retry-After` seconds",
    },
    ErrorCode {
        code: "rate_limited",
        status: 429,
        kind: ErrorType::InvalidRequestError,
        when: "the key (or, without a valid key, the client address) is over its rate limit; retry after `Retry-After` seconds; nothing ran",
    },
    ErrorCode { code: "internal_error", status: 500, kind: ErrorType::ApiError, when: "a fault of ours; nothing is said about its cause" },
    ErrorCode {
        code: "service_unavailable",
        status: 503,
        kind: ErrorType::ApiError,
        when: "the database is unreachable, or a commit's outcome is unknown; retry with the same Idempotency-Key",
    },
    ErrorCode {
        code: "overloaded",
        status: 503,
        kind: ErrorType::ApiError,
        when: "the ledger engine's queue is full; nothing was queued, retry after `Retry-After` seconds",
    },
    ErrorCode {
        code: "request_timeout",
        status: 503,
        kind: ErrorType::ApiError,
        when: "the request took longer than the server's limit; a write may still commit, so retry with the same Idempotency-Key",
    },
    ErrorCode {
        code: "rate_limiter_unavailable",
        status: 503,
        kind: ErrorType::ApiError,
        when: "the shared rate limiter (Redis) is unreachable and the server is set to fail closed; nothing ran",
    },
    ErrorCode {
        code: "same_day_limit_exceeded",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "a same-day ACH payment is above the per-payment cap (1,000,000.00 USD by default); nothing was created",
    },
    ErrorCode {
        code: "bank_account_disabled",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "the counterparty's bank account was disabled by a return (its `disabled_reason` names the code); nothing was created",
    },
    ErrorCode {
        code: "bank_account_verification_pending",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "the bank account's prenote is not decided yet (live entries may follow three banking days after it settles), or a verification is asked for while one is pending; nothing was created",
    },
    ErrorCode {
        code: "bank_account_verification_failed",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "the bank account's prenote was returned or could not be filed (see its `verification`); verify it again before paying it; nothing was created",
    },
    ErrorCode {
        code: "debit_authorization_missing",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "a consumer debit (PPD, WEB, TEL) whose counterparty is not a customer with an active `ach_debit_authorization` consent; nothing was created",
    },
    ErrorCode {
        code: "payment_not_retryable",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "only a payment returned R01 or R09 may be originated again, at most twice within 180 days of the original",
    },
    ErrorCode {
        code: "return_window_elapsed",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "the return arrives after its code's window (2 banking days after settlement; 60 calendar days for unauthorized consumer debits); the payment is unchanged",
    },
    ErrorCode {
        code: "compliance_review_closed",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "the compliance review was closed already (or changed while it was being closed); nothing changed",
    },
    ErrorCode {
        code: "test_clock_backwards",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "a test clock only moves forward: `to` is before the clock's time; nothing ran",
    },
    ErrorCode {
        code: "test_clock_conflict",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "the test clock was advanced by another request meanwhile; what fell due ran once, read the clock and advance again",
    },
    ErrorCode {
        code: "payment_not_cancelable",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "the payment is already in a file (or finished); only a pending payment can be canceled",
    },
    ErrorCode {
        code: "payment_invalid_state",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "the payment's status does not allow this move (for example settling a pending payment, or returning a canceled one)",
    },
    ErrorCode {
        code: "payment_conflict",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "the payment changed while the request was decided; nothing was written, read it again and retry",
    },
    ErrorCode {
        code: "ach_file_invalid",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "the NACHA file cannot be read or its controls disagree; `param` names the line (`line 7`), nothing was applied",
    },
    ErrorCode {
        code: "ach_file_limit_reached",
        status: 422,
        kind: ErrorType::InvalidRequestError,
        when: "36 files were cut today already (file id modifiers A–Z, 0–9); the next window tomorrow takes the payments",
    },
    ErrorCode {
        code: "ach_transmission_failed",
        status: 409,
        kind: ErrorType::ConflictError,
        when: "sandbox only: a `rails` fault (`fail` or `timeout`) in force made the simulated bank refuse the file; nothing was cut, the payments stay pending for the next cut",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use settle_core::ids::{AccountId, TransactionId};

    fn listed(error: &ApiError) -> bool {
        ERROR_CODES.iter().any(|c| c.code == error.code && c.status == error.status.as_u16() && c.kind == error.kind)
    }

    #[test]
    fn every_command_error_maps_to_a_listed_code() {
        let account = AccountId::parse("acct_01jdx3q5g3n3n5v8y2w4h6k9m1");
        let txn = TransactionId::parse("ltx_01jdx3r0ab5c7d9e1f3g5h7j9k");
        let (Some(account), Some(txn), Some(usd)) = (account, txn, settle_core::money::Currency::parse("USD")) else { panic!("examples must parse") };
        let errors = [
            CommandError::Ledger(LedgerError::CurrencyMismatch { account: account.clone(), entry: usd, account_currency: usd }),
            CommandError::Ledger(LedgerError::Unbalanced { currency: usd, debits: 1, credits: 2 }),
            CommandError::Ledger(LedgerError::VersionConflict { account: account.clone(), expected: 1, actual: 2 }),
            CommandError::Ledger(LedgerError::AlreadyReversed { transaction: txn.clone(), reversal: txn.clone() }),
            CommandError::Ledger(LedgerError::AmountExceedsHold { account_id: account.clone(), direction: settle_core::ledger::Direction::Debit }),
            CommandError::DuplicateExternalId { existing: String::from("acct_x") },
            CommandError::Ledger(LedgerError::AccountNotFound(account.clone())),
            CommandError::Ledger(LedgerError::InsufficientFunds(account.clone())),
            CommandError::Ledger(LedgerError::BalanceOverflow(account.clone())),
            CommandError::Ledger(LedgerError::VersionForUntouchedAccount(account.clone())),
            CommandError::Ledger(LedgerError::TransactionNotPending(txn.clone())),
            CommandError::Ledger(LedgerError::TransactionNotPosted(txn.clone())),
            CommandError::Ledger(LedgerError::ExpiryNotInFuture),
            CommandError::TransactionNotFound(txn),
            CommandError::BatchAborted,
            CommandError::CustomerBlocked(account.clone()),
            CommandError::Unavailable,
            CommandError::OutcomeUnknown,
        ];
        for e in &errors {
            let api = ApiError::from(e);
            assert!(listed(&api), "{} ({}) is not in ERROR_CODES", api.code, api.status);
        }
        for e in [ApiError::unavailable(), ApiError::outcome_unknown(), ApiError::not_found("x"), ApiError::invalid("p", "m")] {
            assert!(listed(&e), "{} is not in ERROR_CODES", e.code);
        }
    }
}
