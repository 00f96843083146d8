//! Compliance reviews the ACH rail opens by itself (issue 7): a return that
//! says the receiver did not authorize a debit (R05, R07, R10, R29) or that
//! the receiving account is frozen (R16) needs a person to look at the
//! customer, so the return opens a review — and, when the counterparty is a
//! customer, flags that customer — instead of leaving it to someone reading
//! return codes. The review row and its compliance audit records are written
//! in the same transaction as the return itself (`payments::apply_return`),
//! so a return is never recorded without its review, nor a review without
//! its audit.
//!
//! Reviews are read and closed here: a reviewer (scope `customers:review`)
//! closes one with a decision, `cleared` (nothing wrong: an R16 review's
//! frozen bank account is unfrozen) or `confirmed` (the suspicion stands:
//! the account stays frozen, the revoked authorization stays revoked). The
//! close, the unfreezing and their audit records are one transaction, with
//! a `compliance_review.closed` event (opening writes `compliance_review.opened`
//! in the return's transaction).

use crate::auth::{Scoped, require, scope};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::pagination::{page, parse_query};
use crate::path::IdPath;
use crate::state::AppState;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use settle_core::clock::Timestamp;
use settle_core::ids::{ComplianceReviewId, CustomerId};
use settle_core::tenancy::{Principal, Scope, TenantId};
use settle_store::ach::{AchRow, AchTable, AchWrite};
use settle_store::customers::AuditRecord;
use settle_store::events::NewEvent;
use utoipa::{IntoParams, ToSchema};

/// Reviews answered for one customer at most (`?customer_id=` is not paged).
const MAX_REVIEWS_PER_CUSTOMER: i64 = 100;

/// Why a review was opened.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReviewKind {
    /// A debit returned as unauthorized (R05, R07, R10, R29): the debit
    /// authorization was revoked; is the customer's activity legitimate?
    AchUnauthorizedReturn,
    /// A payment returned R16 (account frozen, often an OFAC match): the bank
    /// account was frozen; the customer needs screening by a person.
    AchAccountFrozen,
}

/// A compliance review: something a person has to look at.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
#[schema(as = ComplianceReview)]
pub struct ComplianceReviewJson {
    #[schema(example = "compliance_review")]
    pub object: String,
    #[schema(example = "crv_01jd3k3z7m8q9r0s1t2v3w4x5y")]
    pub id: String,
    /// `open`, or `closed` once a reviewer decided it.
    pub status: String,
    pub kind: ReviewKind,
    /// The customer flagged, when the counterparty is one.
    pub customer_id: Option<String>,
    pub counterparty_id: String,
    pub bank_account_id: String,
    /// The returned payment that opened it.
    pub payment_id: String,
    #[schema(example = "R16")]
    pub return_code: String,
    /// The return reason's description.
    pub reason: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Once closed: `cleared` or `confirmed`.
    #[serde(default)]
    pub decision: Option<String>,
    /// The reviewer's note, if any.
    #[serde(default)]
    pub note: Option<String>,
    /// Who closed it (the API key's id).
    #[serde(default)]
    pub closed_by: Option<String>,
    #[serde(default)]
    pub closed_at: Option<String>,
}

/// A new open review of `payment`'s return, with the compliance audit records
/// of its opening (`compliance_review.opened`) and, when there is a customer,
/// of the customer's flag (`customer.flagged`); the caller writes them with
/// the return, in one transaction. The review is dated on the payment's
/// clock (`at`, a test clock's time), the audit records when they happened (`now`).
pub fn open(
    state: &AppState,
    tenant: TenantId,
    kind: ReviewKind,
    payment: &super::payments::PaymentJson,
    customer_id: Option<String>,
    (code, description): (&str, &str),
    (at, now): (Timestamp, Timestamp),
) -> Result<(AchWrite, Vec<AuditRecord>, NewEvent), ApiError> {
    let review = ComplianceReviewJson {
        object: String::from("compliance_review"),
        id: state.ach.ids.compliance_review().to_string(),
        status: String::from("open"),
        kind,
        customer_id,
        counterparty_id: payment.counterparty_id.clone(),
        bank_account_id: payment.counterparty_bank_account_id.clone(),
        payment_id: payment.id.clone(),
        return_code: code.to_owned(),
        reason: description.to_owned(),
        created_at: at.to_rfc3339(),
        decision: None,
        note: None,
        closed_by: None,
        closed_at: None,
    };
    let actor = crate::customers::Actor::system(tenant, "settle-ach");
    let why = format!("ACH return {code} ({description}) of {}", payment.id);
    let mut audit = vec![actor.audit(&state.customers.ids, "compliance_review.opened", ("compliance_review", &review.id), Vec::new(), Some(why.clone()), now)];
    if let Some(customer) = review.customer_id.as_deref() {
        audit.push(actor.audit(&state.customers.ids, "customer.flagged", ("customer", customer), vec![String::from("compliance_reviews")], Some(why), now));
    }
    let row = AchRow {
        id: review.id.clone(),
        tenant,
        status: review.status.clone(),
        lookup: review.customer_id.clone(),
        external_id: None,
        version: 1,
        data: super::encode(&review)?,
        created_at: at.micros(),
    };
    let object = serde_json::to_value(&review).map_err(|e| ApiError::internal(&e))?;
    let event = super::new_event(state, tenant, String::from("compliance_review.opened"), (&review.id, 1), object, None, now)?;
    Ok((AchWrite::Insert(AchTable::ComplianceReviews, row), audit, event))
}

/// A compliance review.
#[utoipa::path(get, path = "/v1/compliance_reviews/{id}", tag = "Customers", operation_id = "get_compliance_review",
    params(("id" = String, Path, description = "A review id (`crv_…`).")),
    responses((status = 200, description = "The review.", body = ComplianceReviewJson)))]
pub async fn get(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersRead)?;
    if ComplianceReviewId::parse(&id).is_none() {
        return Err(ApiError::not_found("compliance_review"));
    }
    let row = state.store.ach_get(AchTable::ComplianceReviews, principal.tenant, id).await?.ok_or_else(|| ApiError::not_found("compliance_review"))?;
    let review: ComplianceReviewJson = super::decode(&row.data)?;
    Ok(axum::Json(review).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReviewListParams {
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
    /// Only `open` or only `closed` reviews.
    pub status: Option<String>,
    /// Only this customer's reviews (`cus_…`): its flags, up to 100, not paged.
    pub customer_id: Option<String>,
}

/// Compliance reviews, newest first.
#[utoipa::path(get, path = "/v1/compliance_reviews", tag = "Customers", operation_id = "list_compliance_reviews",
    params(ReviewListParams),
    responses((status = 200, description = "A page of reviews.", body = inline(crate::render::ListJson<ComplianceReviewJson>))))]
pub async fn list(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersRead)?;
    let params: ReviewListParams = parse_query(query.as_deref())?;
    if let Some(status) = params.status.as_deref()
        && status != "open"
        && status != "closed"
    {
        return Err(ApiError::invalid("status", "status must be open or closed"));
    }
    let (rows, has_more) = match params.customer_id {
        Some(customer) => {
            if CustomerId::parse(&customer).is_none() {
                return Err(ApiError::invalid("customer_id", "customer_id must be a customer id (cus_…)"));
            }
            let mut rows = state.store.ach_find(AchTable::ComplianceReviews, principal.tenant, customer, MAX_REVIEWS_PER_CUSTOMER).await?;
            rows.retain(|r| params.status.as_deref().is_none_or(|s| r.status == s));
            (rows, false)
        }
        None => {
            let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| ComplianceReviewId::parse(id).is_some())?;
            let result = state.store.ach_list(AchTable::ComplianceReviews, principal.tenant, params.status, page).await?;
            (result.items, result.has_more)
        }
    };
    let items = rows.iter().map(|r| super::decode::<ComplianceReviewJson>(&r.data)).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(crate::render::list(items, has_more)).into_response())
}

/// Longest reviewer's note, in characters.
const MAX_NOTE_CHARS: usize = 1_000;

/// `POST /v1/compliance_reviews/{id}/close`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseReviewRequest {
    /// `cleared` (nothing wrong: an `ach_account_frozen` review's bank
    /// account is unfrozen) or `confirmed` (the suspicion stands; nothing is undone).
    #[schema(example = "cleared")]
    pub decision: String,
    /// Up to 1,000 characters, kept on the review and in the audit record.
    pub note: Option<String>,
}

/// Closes an open review with a decision (audited; a cleared R16 review unfreezes its bank account).
#[utoipa::path(post, path = "/v1/compliance_reviews/{id}/close", tag = "Customers", operation_id = "close_compliance_review",
    params(("id" = String, Path, description = "A review id (`crv_…`)."), crate::openapi::IdempotencyKey),
    request_body = CloseReviewRequest,
    responses((status = 200, description = "The closed review.", body = ComplianceReviewJson)))]
pub async fn close(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::CustomersReview>,
    Extension(request_id): Extension<crate::observe::RequestId>,
    client: crate::observe::ClientIp,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<CloseReviewRequest>,
) -> Result<Response, ApiError> {
    let path = format!("/v1/compliance_reviews/{id}/close");
    let keyed = crate::customers::keyed(&state, &principal, &headers, &path, &body.canonical).await?;
    if let Some(replay) = keyed.replay {
        return Ok(replay);
    }
    let tenant = principal.tenant;
    let req = body.value;
    if req.decision != "cleared" && req.decision != "confirmed" {
        return Err(ApiError::invalid("decision", "decision must be cleared or confirmed"));
    }
    let note = match req.note {
        Some(n) if n.chars().count() > MAX_NOTE_CHARS || n.chars().any(|c| c.is_control() && c != '\n') => {
            return Err(ApiError::invalid("note", format!("note must be at most {MAX_NOTE_CHARS} characters without control characters")));
        }
        other => other,
    };
    if ComplianceReviewId::parse(&id).is_none() {
        return Err(ApiError::not_found("compliance_review"));
    }
    let row = state.store.ach_get(AchTable::ComplianceReviews, tenant, id.clone()).await?.ok_or_else(|| ApiError::not_found("compliance_review"))?;
    let mut review: ComplianceReviewJson = super::decode(&row.data)?;
    if review.status != "open" {
        return Err(super::conflict("compliance_review_closed", format!("the review was closed already ({})", review.decision.as_deref().unwrap_or(""))));
    }
    let now = state.clock.now();
    let actor = crate::customers::Actor::of(&principal, &request_id, &headers, client);
    review.status = String::from("closed");
    review.decision = Some(req.decision.clone());
    review.note = note.clone();
    review.closed_by = Some(actor.actor.clone());
    review.closed_at = Some(now.to_rfc3339());
    let why = match &note {
        Some(n) => format!("{}: {n}", req.decision),
        None => req.decision.clone(),
    };
    let mut audit = vec![actor.audit(
        &state.customers.ids,
        "compliance_review.closed",
        ("compliance_review", &review.id),
        vec![String::from("status"), String::from("decision")],
        Some(why.clone()),
        now,
    )];
    let mut writes = vec![AchWrite::Update(
        AchTable::ComplianceReviews,
        AchRow { status: review.status.clone(), version: row.version + 1, data: super::encode(&review)?, ..row },
    )];
    // A cleared frozen-account review unfreezes the bank account it froze.
    if review.kind == ReviewKind::AchAccountFrozen && req.decision == "cleared" {
        let (mut bank, bank_row) = super::counterparties::load_bank_account(&state, tenant, &review.bank_account_id, "bank_account_id").await?;
        if bank.json.status == "frozen" {
            bank.json.status = String::from("active");
            bank.json.disabled_reason = None;
            writes.push(AchWrite::Update(
                AchTable::BankAccounts,
                super::counterparties::bank_account_row(tenant, &bank, bank_row.version + 1, bank_row.created_at)?,
            ));
            audit.push(actor.audit(
                &state.customers.ids,
                "bank_account.unfrozen",
                ("bank_account", &bank.json.id),
                vec![String::from("status")],
                Some(format!("compliance review {} cleared", review.id)),
                now,
            ));
        }
    }
    let object = serde_json::to_value(&review).map_err(|e| ApiError::internal(&e))?;
    let sequence = row.version + 1;
    let event = super::new_event(
        &state,
        tenant,
        String::from("compliance_review.closed"),
        (&review.id, sequence),
        object,
        Some(serde_json::json!({"status": "open"})),
        now,
    )?;
    let (response, bytes) = crate::customers::json_response(StatusCode::OK, &review)?;
    let idempotency = crate::customers::idempotency_record(tenant, keyed.key, StatusCode::OK, bytes, now);
    super::applied(state.store.ach_apply_audited(writes, vec![event], audit, idempotency, now).await, || {
        super::conflict("compliance_review_closed", "the review or its bank account changed meanwhile; read it again")
    })?;
    Ok(response)
}
