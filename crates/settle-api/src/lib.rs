//! Settle's HTTP API: axum routers, extractors, the error envelope and
//! idempotency. Handlers are thin: parse, call the store or the engine,
//! render. No SQL lives here.

pub mod accounts;
pub mod ach;
pub mod api_versions;
pub mod auth;
pub mod body;
pub mod commands;
pub mod correlation;
pub mod customers;
pub mod deprecation;
pub mod error;
pub mod events;
pub mod faults;
pub mod feature_flags;
pub mod hygiene;
pub mod idempotency;
pub mod metrics;
pub mod middleware;
pub mod observe;
pub mod openapi;
pub mod operations;
pub mod pagination;
pub mod path;
pub mod rate_limit;
pub mod reconciliation;
pub mod render;
pub mod signing;
pub mod state;
pub mod test_helpers;
pub mod trace_context;
pub mod transactions;
pub mod versions;
pub mod webhooks;
pub mod wire;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use error::{ApiError, ErrorType};
pub use state::AppState;

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ready().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready", "database": state.store.backend_name()})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "unavailable"}))).into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorType::InvalidRequestError, "not_found", "no such endpoint")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorType::InvalidRequestError, "method_not_allowed", "this endpoint does not accept that method")
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi::serve_document))
        .route("/docs", get(openapi::serve_reference))
        .route("/v1/accounts", post(accounts::create).get(accounts::list))
        .route("/v1/accounts/{id}", get(accounts::get))
        .route("/v1/accounts/{id}/balances", get(accounts::balances))
        .route("/v1/accounts/{id}/entries", get(accounts::entries))
        .route("/v1/transactions", post(transactions::create).get(transactions::list))
        .route("/v1/transactions/batch", post(transactions::batch))
        .route("/v1/transactions/{id}", get(transactions::get))
        .route("/v1/transactions/{id}/post", post(transactions::post))
        .route("/v1/transactions/{id}/void", post(transactions::void))
        .route("/v1/transactions/{id}/reverse", post(transactions::reverse))
        .route("/v1/versions", get(api_versions::list))
        .route("/v1/operations", get(operations::list))
        .route("/v1/operations/{id}", get(operations::get))
        .route("/v1/reconciliation/statements", post(reconciliation::import_statement).get(reconciliation::list_statements))
        .route("/v1/reconciliation/statements/{id}", get(reconciliation::get_statement))
        .route("/v1/reconciliation/statements/{id}/lines", get(reconciliation::list_lines))
        .route("/v1/reconciliation/statements/{id}/report", get(reconciliation::statement_report))
        .route("/v1/reconciliation/lines/{id}/match", post(reconciliation::match_line))
        .route("/v1/reconciliation/lines/{id}/unmatch", post(reconciliation::unmatch_line))
        .route("/v1/reconciliation/reports/{date}", get(reconciliation::day_report))
        .route("/v1/events", get(events::list))
        .route("/v1/events/{id}", get(events::get))
        .route("/v1/events/{id}/redeliver", post(events::redeliver))
        .route("/v1/event_types", get(events::types))
        .route("/v1/webhook_endpoints", post(webhooks::create).get(webhooks::list))
        .route("/v1/webhook_endpoints/{id}", get(webhooks::get).patch(webhooks::update).delete(webhooks::delete))
        .route("/v1/webhook_endpoints/{id}/rotate_secret", post(webhooks::rotate_secret))
        .route("/v1/webhook_endpoints/{id}/attempts", get(webhooks::attempts))
        .route("/v1/webhook_endpoints/{id}/recover", post(webhooks::recover))
        .route("/v1/customers", post(customers::create).get(customers::list))
        .route("/v1/customers/{id}", get(customers::get).patch(customers::update))
        .route("/v1/customers/{id}/verify", post(customers::verify))
        .route("/v1/customers/{id}/kyc_events", get(customers::kyc_history))
        .route("/v1/customers/{id}/kyc_decisions", post(customers::profile::kyc_decision))
        .route("/v1/customers/{id}/personal_data", delete(customers::erase))
        .route("/v1/customers/{id}/consents", post(customers::consents::create).get(customers::consents::list))
        .route("/v1/customers/{id}/consents/{consent_id}/revoke", post(customers::consents::revoke))
        .route("/v1/customers/{id}/documents", post(customers::documents::upload).get(customers::documents::list))
        .route("/v1/customers/{id}/documents/{document_id}/content", get(customers::documents::content))
        .route("/v1/customers/{id}/accounts", post(customers::accounts::link).get(customers::accounts::list))
        .route("/v1/screenings", get(customers::screening::list))
        .route("/v1/screenings/{id}", get(customers::screening::get))
        .route("/v1/screenings/{id}/resolve", post(customers::screening::resolve))
        .route("/v1/audit_events", get(customers::audit::list))
        .route("/v1/test_helpers/customers/{id}/decide", axum::routing::any(customers::profile::decide))
        .route("/v1/counterparties", post(ach::counterparties::create).get(ach::counterparties::list))
        .route("/v1/counterparties/{id}", get(ach::counterparties::get))
        .route("/v1/counterparties/{id}/bank_accounts/{bank_account_id}/verify", post(ach::prenotes::verify))
        .route("/v1/payments", post(ach::payments::create).get(ach::payments::list))
        .route("/v1/payments/{id}", get(ach::payments::get))
        .route("/v1/payments/{id}/cancel", post(ach::payments::cancel))
        .route("/v1/payments/{id}/retry", post(ach::payments::retry))
        .route("/v1/ach/files", get(ach::files::list))
        .route("/v1/ach/files/{id}", get(ach::files::get))
        .route("/v1/ach/files/{id}/content", get(ach::files::content))
        .route("/v1/ach/return_files", post(ach::files::import))
        .route("/v1/ach/return_rates", get(ach::return_rates::get))
        .route("/v1/compliance_reviews", get(ach::reviews::list))
        .route("/v1/compliance_reviews/{id}", get(ach::reviews::get))
        .route("/v1/compliance_reviews/{id}/close", post(ach::reviews::close))
        .route("/v1/test_helpers/ach/cut", axum::routing::any(ach::files::simulate_cut))
        .route("/v1/test_helpers/payments/{id}/return", axum::routing::any(ach::payments::simulate_return))
        .route("/v1/test_helpers/payments/{id}/settle", axum::routing::any(ach::payments::simulate_settle))
        .route("/v1/test_helpers/payments/{id}/contest_dishonor", axum::routing::any(ach::payments::simulate_contest))
        .route("/v1/test_helpers/test_clocks", axum::routing::any(ach::test_clocks::create))
        .route("/v1/test_helpers/test_clocks/{id}", axum::routing::any(ach::test_clocks::get))
        .route("/v1/test_helpers/test_clocks/{id}/advance", axum::routing::any(ach::test_clocks::advance))
        .merge(test_helpers::router())
        .merge(faults::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One composed layer, not one `Router::layer` call per middleware:
        // each of those boxes every route again, so a request paid a boxed
        // clone of its route per layer. The first here is the outermost.
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::outer))
                .layer(hygiene::cors(&state))
                .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::inner)),
        )
        .with_state(state)
}
