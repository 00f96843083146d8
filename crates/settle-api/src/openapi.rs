//! The API's OpenAPI 3.1 document, generated from the handlers' annotations
//! and the wire types, plus the error codes each operation can answer (from
//! [`ERROR_CODES`]). Served at `GET /v1/openapi.json`, committed at
//! `docs/openapi.json`, and rendered for people at `GET /docs`.

use crate::error::{ERROR_CODES, ErrorCode};
use crate::{accounts, ach, api_versions, customers, events, faults, operations, reconciliation, render, test_helpers, transactions, webhooks, wire};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, OpenApi as Document, Ref, RefOr, Required, ResponseBuilder, Type};
use utoipa::{IntoParams, Modify, OpenApi};

/// The `Idempotency-Key` header every POST accepts.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// 1 to 255 printable ASCII characters. A retry with the same key and the
    /// same request returns the first outcome (with `Idempotent-Replayed: true`)
    /// and changes nothing; keys are kept at least 24 hours.
    #[param(rename = "Idempotency-Key", value_type = Option<String>, nullable = false, min_length = 1, max_length = 255, pattern = "^[\\x20-\\x7E]+$")]
    #[serde(rename = "Idempotency-Key")]
    pub key: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Settle API",
        description = "A double-entry ledger, served over HTTP. Amounts are integers in the currency's minor units. \
Authenticate with `Authorization: Bearer <secret>`; errors answer `{\"error\": {type, code, message, param, request_id}}` \
and every response carries `Request-Id`. See docs/api.md for the walkthrough.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        accounts::create,
        accounts::list,
        accounts::get,
        accounts::balances,
        accounts::entries,
        transactions::create,
        transactions::list,
        transactions::batch,
        transactions::get,
        transactions::post,
        transactions::void,
        transactions::reverse,
        operations::list,
        operations::get,
        reconciliation::import_statement,
        reconciliation::list_statements,
        reconciliation::get_statement,
        reconciliation::list_lines,
        reconciliation::statement_report,
        reconciliation::match_line,
        reconciliation::unmatch_line,
        reconciliation::day_report,
        customers::profile::create,
        customers::profile::list,
        customers::profile::get,
        customers::profile::update,
        customers::profile::verify,
        customers::profile::kyc_history,
        customers::profile::kyc_decision,
        customers::profile::erase,
        customers::consents::create,
        customers::consents::list,
        customers::consents::revoke,
        customers::accounts::link,
        customers::accounts::list,
        customers::documents::upload,
        customers::documents::list,
        customers::documents::content,
        customers::screening::list,
        customers::screening::get,
        customers::screening::resolve,
        customers::audit::list,
        test_helpers::fund,
        faults::doc_list,
        faults::doc_set,
        faults::doc_clear,
        ach::counterparties::create,
        ach::counterparties::list,
        ach::counterparties::get,
        ach::prenotes::verify,
        ach::payments::create,
        ach::payments::list,
        ach::payments::get,
        ach::payments::cancel,
        ach::payments::retry,
        ach::files::list,
        ach::files::get,
        ach::files::content,
        ach::files::import,
        ach::return_rates::get,
        ach::reviews::list,
        ach::reviews::get,
        ach::reviews::close,
        ach::files::simulate_cut,
        ach::payments::simulate_return,
        ach::payments::simulate_settle,
        ach::payments::simulate_contest,
        ach::test_clocks::create,
        ach::test_clocks::get,
        ach::test_clocks::advance,
        customers::profile::decide,
        api_versions::list,
        events::list,
        events::get,
        events::redeliver,
        events::types,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::update,
        webhooks::delete,
        webhooks::rotate_secret,
        webhooks::attempts,
        webhooks::recover,
    ),
    components(schemas(crate::error::ErrorEnvelope, crate::error::ErrorBody, wire::DirectionRequest, render::BatchItemJson, transactions::TransactionStatusFilter)),
    tags(
        (name = "Accounts", description = "Ledger accounts and their balances."),
        (name = "Transactions", description = "Balanced movements of money: posted, pending (holds), voided, reversed."),
        (name = "Operations", description = "Work accepted with `202 Accepted` (large batches, or `Prefer: respond-async`) and run in the background; see docs/async.md."),
        (name = "Reconciliation", description = "Bank statements (camt.053/054, MT940, BAI2, CSV) matched against the ledger, manual matches and reports; see docs/reconciliation.md."),
        (name = "Customers", description = "People and businesses, their KYC state, consents and personal data (masked without `customers:pii:read`); see docs/compliance.md."),
        (name = "Screenings", description = "Sanctions screenings of customers and their resolution; see docs/compliance.md."),
        (name = "Audit", description = "The hash-chained audit trail of customers, consents and screenings (`audit:read`)."),
        (name = "Payments", description = "The ACH rail: counterparties and their bank accounts, ACH credits and debits through the ledger, NACHA files, returns and notifications of change; see docs/ach.md."),
        (name = "Test helpers", description = "Sandbox keys only (live keys get 404): simulate the outside world; see docs/sandbox.md."),
        (name = "Events", description = "What happened, for clients that poll, and the catalog of event types; see docs/events.md."),
        (name = "Webhooks", description = "Endpoints that receive events, signed the Standard Webhooks way; see docs/webhooks.md."),
        (name = "Versions", description = "Date-based API versions (`Settle-Version`) and their changes; see docs/versioning.md."),
    ),
    modifiers(&Security, &Errors, &Links, &CommonHeaders),
)]
struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut text = document().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `GET /v1/openapi.json`: public, like the reference it describes.
pub async fn serve_document() -> Response {
    static BODY: OnceLock<String> = OnceLock::new();
    let body = BODY.get_or_init(document_json).as_str();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// `GET /docs`: the reference for people, rendered in the browser from the
/// document by a small script vendored in the binary (no CDN).
pub async fn serve_reference() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'")),
        ],
        include_str!("../assets/reference.html"),
    )
        .into_response()
}

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API key secret (`sk_sandbox_…` or `sk_live_…`), created by `settle keys create`. A key created with \
`--require-signature` must also sign every request: `Content-Digest` (RFC 9530) and `Signature-Input` / `Signature` \
(RFC 9421, HMAC-SHA256); see docs/signing.md.",
            ))
            .build();
        if let Some(components) = doc.components.as_mut() {
            components.add_security_scheme("api_key", SecurityScheme::Http(scheme));
        }
        doc.security = Some(vec![SecurityRequirement::new("api_key", Vec::<String>::new())]);
    }
}

/// Codes every authenticated operation can answer.
const ALWAYS: &[&str] = &[
    "invalid_request",
    "invalid_api_version",
    "invalid_api_key",
    "invalid_signature",
    "insufficient_scope",
    "request_headers_too_large",
    "rate_limited",
    "internal_error",
    "service_unavailable",
    "request_timeout",
    "rate_limiter_unavailable",
];
/// Codes every write can answer on top: body limits and idempotency.
const WRITES: &[&str] = &["request_too_large", "idempotency_key_in_use", "idempotency_key_reused", "overloaded", "too_many_operations"];

/// The codes each operation can answer, besides [`ALWAYS`] (and [`WRITES`] for POSTs).
fn codes_of(operation_id: &str) -> &'static [&'static str] {
    match operation_id {
        "create_account" => &["duplicate_external_id", "customer_not_found"],
        "create_transaction" => &[
            "customer_blocked",
            "account_not_found",
            "currency_mismatch",
            "unbalanced_transaction",
            "insufficient_funds",
            "balance_overflow",
            "version_conflict",
            "duplicate_external_id",
        ],
        "post_transaction" => &[
            "not_found",
            "customer_blocked",
            "transaction_not_pending",
            "amount_exceeds_hold",
            "account_not_found",
            "currency_mismatch",
            "insufficient_funds",
            "balance_overflow",
        ],
        "void_transaction" => &["not_found", "transaction_not_pending"],
        "reverse_transaction" => {
            &["not_found", "customer_blocked", "transaction_not_posted", "transaction_already_reversed", "insufficient_funds", "balance_overflow"]
        }
        "get_account" | "get_account_balances" | "list_account_entries" | "get_transaction" | "get_operation" => &["not_found"],
        "fund_account" => &["not_found", "balance_overflow"],
        "list_faults" | "set_fault" | "clear_faults" => &["not_found"],
        "import_bank_statement" => &["statement_invalid", "account_not_found", "currency_mismatch"],
        "get_bank_statement" | "list_bank_statement_lines" | "get_bank_statement_report" => &["not_found"],
        "match_bank_statement_line" => {
            &["not_found", "transaction_not_posted", "transaction_already_matched", "reconciliation_account_mismatch", "reconciliation_conflict"]
        }
        "unmatch_bank_statement_line" => &["not_found", "line_not_matched", "reconciliation_conflict"],
        "get_event"
        | "redeliver_event"
        | "get_webhook_endpoint"
        | "delete_webhook_endpoint"
        | "rotate_webhook_endpoint_secret"
        | "list_webhook_endpoint_attempts"
        | "recover_webhook_endpoint" => &["not_found"],
        "create_webhook_endpoint" => &["invalid_webhook_url"],
        "update_webhook_endpoint" => &["not_found", "invalid_webhook_url"],
        "create_customer" => &["duplicate_external_id"],
        "get_customer" | "list_customer_kyc_events" | "get_screening" | "list_consents" => &["not_found"],
        "update_customer" => &["not_found", "duplicate_external_id", "customer_conflict", "customer_erased"],
        "verify_customer" => &["not_found", "verification_requirements_due", "invalid_kyc_transition", "customer_conflict", "customer_erased"],
        "decide_customer_verification" => &["not_found", "invalid_kyc_transition", "customer_conflict"],
        "create_kyc_decision" => &["not_found", "invalid_kyc_transition", "customer_conflict"],
        "erase_customer_personal_data" => &["not_found", "customer_conflict"],
        "create_consent" => &["not_found", "customer_erased"],
        "revoke_consent" => &["not_found", "consent_already_revoked"],
        "upload_customer_document" => &["not_found", "unsupported_document", "customer_erased"],
        "list_customer_documents" | "list_customer_accounts" => &["not_found"],
        "link_customer_account" => &["not_found", "account_not_found", "account_already_linked"],
        "get_customer_document_content" => &["not_found", "customer_erased"],
        "resolve_screening" => &["not_found", "screening_not_resolvable"],
        "create_counterparty" => &["payment_conflict"],
        "close_compliance_review" => &["not_found", "compliance_review_closed"],
        "verify_bank_account" => &["not_found", "bank_account_disabled", "bank_account_verification_pending", "payment_conflict"],
        "get_counterparty" | "get_payment" | "get_ach_file" | "get_ach_file_content" | "get_compliance_review" => &["not_found"],
        "create_payment" => &[
            "same_day_limit_exceeded",
            "bank_account_disabled",
            "bank_account_verification_pending",
            "bank_account_verification_failed",
            "debit_authorization_missing",
            "account_not_found",
            "currency_mismatch",
            "insufficient_funds",
            "balance_overflow",
            "customer_blocked",
            "duplicate_external_id",
            "payment_conflict",
        ],
        "cancel_payment" => &["not_found", "payment_not_cancelable", "payment_invalid_state", "payment_conflict"],
        "retry_payment" => &[
            "not_found",
            "payment_not_retryable",
            "bank_account_disabled",
            "bank_account_verification_pending",
            "bank_account_verification_failed",
            "debit_authorization_missing",
            "customer_blocked",
            "insufficient_funds",
            "balance_overflow",
            "payment_conflict",
        ],
        "import_ach_return_file" => &["ach_file_invalid", "payment_conflict"],
        "simulate_ach_cut" => &["not_found", "payment_conflict", "ach_file_limit_reached", "ach_transmission_failed"],
        "simulate_payment_return" => &["not_found", "payment_invalid_state", "payment_conflict", "return_window_elapsed"],
        "simulate_contested_dishonor" => &["not_found", "payment_invalid_state", "payment_conflict"],
        "simulate_payment_settlement" => &["not_found", "payment_invalid_state", "payment_conflict"],
        "create_test_clock" => &["not_found"],
        "get_test_clock" => &["not_found"],
        "advance_test_clock" => &["not_found", "test_clock_backwards", "test_clock_conflict", "payment_conflict", "ach_file_limit_reached"],
        _ => &[],
    }
}

fn operations(doc: &mut Document) -> impl Iterator<Item = (bool, &mut Operation)> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [(false, item.get.as_mut()), (true, item.post.as_mut()), (true, item.put.as_mut()), (true, item.delete.as_mut()), (true, item.patch.as_mut())]
            .into_iter()
            .filter_map(|(write, op)| op.map(|op| (write, op)))
    })
}

/// Adds, to every operation, one response per error status it can answer,
/// listing its codes, with an example of each.
struct Errors;

impl Modify for Errors {
    fn modify(&self, doc: &mut Document) {
        for (write, op) in operations(doc) {
            let id = op.operation_id.clone().unwrap_or_default();
            let mut by_status: BTreeMap<u16, Vec<&ErrorCode>> = BTreeMap::new();
            let listed = ALWAYS.iter().chain(if write { WRITES } else { &[] }).chain(codes_of(&id));
            for code in listed {
                if let Some(c) = ERROR_CODES.iter().find(|c| c.code == *code) {
                    let codes = by_status.entry(c.status).or_default();
                    if !codes.iter().any(|k| k.code == c.code) {
                        codes.push(c);
                    }
                }
            }
            for (status, codes) in by_status {
                let description = codes.iter().map(|c| format!("`{}`: {}", c.code, c.when)).collect::<Vec<_>>().join("; ");
                let examples = codes.iter().map(|c| {
                    let value = serde_json::json!({"error": {"type": c.kind, "code": c.code, "message": c.when, "param": null, "request_id": "req_18f3a2c4b5d600000001"}});
                    (c.code, ExampleBuilder::new().summary(c.code).value(Some(value)).build())
                });
                let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorEnvelope"))).examples_from_iter(examples).build();
                let response = ResponseBuilder::new().description(description).content("application/json", content).build();
                op.responses.responses.insert(status.to_string(), RefOr::T(response));
            }
        }
    }
}

/// Headers every operation takes and every response carries: request ids,
/// API versions, deprecation notices, correlation ids and trace context.
struct CommonHeaders;

fn string_header(description: &str) -> RefOr<utoipa::openapi::Header> {
    RefOr::T(HeaderBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String))).description(Some(description)).build())
}

impl Modify for CommonHeaders {
    fn modify(&self, doc: &mut Document) {
        // The document's version is the API version whose shapes it describes.
        doc.info.version = crate::versions::NEWEST.to_string();
        let response_headers = [
            ("Request-Id", "This request's id; quote it when asking for help."),
            ("Settle-Version", "The API version the response is rendered in (`YYYY-MM-DD`)."),
            ("X-Correlation-Id", "The request's correlation id: the one it sent, or one generated for it."),
            ("traceparent", "W3C trace context: the caller's trace id (or a new one) and this server's span id."),
            ("Deprecation", "On a deprecated version or endpoint: `@<unix seconds>` when it was deprecated (RFC 9745)."),
            ("Sunset", "On a deprecated version or endpoint with a removal date: that date (RFC 8594)."),
            ("Link", "On a deprecated version or endpoint: where to read about it (`rel=\"deprecation\"`)."),
            ("RateLimit-Policy", "The key's (or client address's) quota: `\"api_key\";q=<burst>;w=<seconds>` (draft-ietf-httpapi-ratelimit-headers)."),
            ("RateLimit", "What is left of it: `\"api_key\";r=<remaining>;t=<seconds until full>`."),
            ("Retry-After", "On 429 and some 503s: seconds to wait before retrying."),
        ];
        if let Some(components) = doc.components.as_mut() {
            for (name, description) in response_headers {
                components.headers.insert(name.to_owned(), string_header(description));
            }
        }
        let request_headers = [
            (
                "Settle-Version",
                "The API version to use (`YYYY-MM-DD`); default: the organization's pinned version. This document describes the newest \
version; older ones (`GET /v1/versions`, docs/api-changelog.md) are accepted too and differ as their changes say.",
                None,
            ),
            (
                "X-Correlation-Id",
                "Your id tying this request to others (1 to 128 of `A-Z a-z 0-9 . _ : -`); stored on what the request creates.",
                Some("^[A-Za-z0-9._:-]{1,128}$"),
            ),
            ("traceparent", "W3C trace context; honoured when valid, ignored otherwise.", None),
        ];
        for (write, op) in operations(doc) {
            if write {
                let accepted = ResponseBuilder::new()
                    .description("Accepted to run in the background (sent with `Prefer: respond-async`, or a batch over the server's threshold): poll the operation at `Location`.")
                    .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("Operation"))).build())
                    .header("Location", HeaderBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String))).description(Some("`/v1/operations/{id}`")).build())
                    .header("Preference-Applied", HeaderBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String))).description(Some("`respond-async` when the client asked for it")).build())
                    .build();
                op.responses.responses.insert(String::from("202"), RefOr::T(accepted));
                let prefer = ParameterBuilder::new()
                    .name("Prefer")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some("`respond-async` (RFC 7240): answer `202 Accepted` at once and run the request as an operation."))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["respond-async"]))))
                    .build();
                op.parameters.get_or_insert_with(Vec::new).push(RefOr::T(prefer));
            }
            for response in op.responses.responses.values_mut() {
                if let RefOr::T(r) = response {
                    for (name, _) in response_headers {
                        r.headers.insert(name.to_owned(), RefOr::Ref(Ref::new(format!("#/components/headers/{name}"))));
                    }
                }
            }
            let parameters = op.parameters.get_or_insert_with(Vec::new);
            for (name, description, pattern) in request_headers {
                let mut schema = ObjectBuilder::new().schema_type(Type::String).pattern(pattern);
                if name == "Settle-Version" {
                    schema = schema.enum_values(Some([crate::versions::NEWEST.to_string()]));
                }
                let parameter = ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(description))
                    .schema(Some(schema))
                    .build();
                parameters.push(RefOr::T(parameter));
            }
        }
    }
}

/// Links from a created object to what can be done with it next, so that
/// clients (and stateful fuzzers) can follow the API's own paths.
struct Links;

impl Modify for Links {
    fn modify(&self, doc: &mut Document) {
        let follow: &[(&str, &str, &[&str])] = &[
            ("create_account", "201", &["get_account", "get_account_balances", "list_account_entries"]),
            ("create_transaction", "201", &["get_transaction", "post_transaction", "void_transaction", "reverse_transaction"]),
            ("reverse_transaction", "201", &["get_transaction"]),
        ];
        for (_, op) in operations(doc) {
            let id = op.operation_id.clone().unwrap_or_default();
            for (from, status, targets) in follow {
                if id != *from {
                    continue;
                }
                if let Some(RefOr::T(response)) = op.responses.responses.get_mut(*status) {
                    for target in *targets {
                        let link = LinkBuilder::new().operation_id(*target).parameter("id", "$response.body#/id").build();
                        response.links.insert((*target).to_owned(), RefOr::T(link));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_code_exists() {
        let ids =
            ["create_account", "create_transaction", "create_transaction_batch", "post_transaction", "void_transaction", "reverse_transaction", "get_account"];
        for code in ALWAYS.iter().chain(WRITES).chain(ids.iter().flat_map(|id| codes_of(id).iter())) {
            assert!(ERROR_CODES.iter().any(|c| c.code == *code), "{code} is not in ERROR_CODES");
        }
    }
}
