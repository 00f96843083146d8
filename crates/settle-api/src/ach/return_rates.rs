//! The originator's debit return rates over a rolling 60 days against
//! NACHA's thresholds (unauthorized 0.5%, administrative 3%, overall 15%),
//! read on demand (`GET /v1/ach/return_rates`) and watched by a monitor.
//!
//! The monitor evaluates the rates whenever they can change by an entry —
//! after a return is applied (a helper's, or once per imported return file)
//! and after a file with debits is cut — and remembers per tenant which
//! thresholds were exceeded (`ach_return_rate_alerts`, one row, version
//! checked). A threshold that is exceeded now and was not at the last
//! evaluation emits one `ach.return_rate.threshold_crossed` event, in the
//! transaction that records it, so two servers evaluating at once emit it
//! once; it is emitted again only after the rate went back under the
//! threshold and crossed it anew. Each evaluation also sets the
//! `settle_ach_return_rate_exceeded_bps` gauges (one per originator and rate
//! above its threshold, removed when back under) and counts crossings in
//! `settle_ach_return_rate_alerts`.

use super::payments::{PaymentDirection, PaymentJson};
use super::{decode, encode, new_event};
use crate::auth::require;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use settle_ach::returns::return_reason;
use settle_core::clock::Timestamp;
use settle_core::tenancy::{Principal, Scope, TenantId};
use settle_store::ach::{AchRow, AchTable, AchWrite, ApplyError};
use utoipa::ToSchema;

/// Days of the rolling window NACHA's return-rate thresholds look at.
pub const RETURN_RATE_WINDOW_DAYS: i64 = 60;
/// Payments read back at most to compute the rates (newest first).
const MAX_RATE_PAYMENTS: usize = 10_000;
/// NACHA's thresholds, in basis points of debit entries, by rate.
pub const THRESHOLDS_BPS: [(&str, i64); 3] = [("unauthorized", 50), ("administrative", 300), ("overall", 1_500)];
/// Attempts at recording an evaluation when another server records one meanwhile.
const MAX_RECORD_ATTEMPTS: usize = 3;
/// The events' object id: the rates are one object per tenant.
pub const OBJECT_ID: &str = "ach_return_rates";

/// The originator's debit return rates over the last 60 days.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
#[schema(as = AchReturnRates)]
pub struct ReturnRatesJson {
    #[schema(example = "ach_return_rates")]
    pub object: String,
    pub window_days: i64,
    pub since: String,
    /// Debit entries sent (submitted) in the window.
    pub debit_entries: i64,
    /// Unauthorized returns (R05, R07, R10, R11, R29, R51) of those entries.
    pub unauthorized_returns: i64,
    /// In basis points (1/100 of a percent); NACHA's threshold is 50 (0.5%).
    pub unauthorized_rate_bps: i64,
    /// Administrative returns (R02, R03, R04).
    pub administrative_returns: i64,
    /// Threshold 300 (3%).
    pub administrative_rate_bps: i64,
    /// Every return.
    pub overall_returns: i64,
    /// Threshold 1500 (15%).
    pub overall_rate_bps: i64,
    /// The rates above their threshold: `unauthorized`, `administrative`, `overall`.
    pub exceeded: Vec<String>,
    /// Whether more payments fell in the window than were counted (the newest 10,000 are).
    pub truncated: bool,
}

/// The tenant's rates at `now`.
pub async fn compute(state: &AppState, tenant: TenantId, now: Timestamp) -> Result<ReturnRatesJson, ApiError> {
    let since = now.plus_secs(-RETURN_RATE_WINDOW_DAYS * 86_400);
    let (mut entries, mut unauthorized, mut administrative, mut overall) = (0i64, 0i64, 0i64, 0i64);
    let mut cursor = settle_store::records::Cursor::Start;
    let mut seen = 0usize;
    let mut truncated = false;
    'pages: loop {
        let page = settle_store::records::PageRequest { limit: settle_core::limits::MAX_PAGE_LIMIT, cursor };
        let result = state.store.ach_list(AchTable::Payments, tenant, None, page).await?;
        for row in &result.items {
            seen += 1;
            if seen > MAX_RATE_PAYMENTS {
                truncated = true;
                break 'pages;
            }
            let p: PaymentJson = decode(&row.data)?;
            if Timestamp::parse_rfc3339(&p.created_at).is_some_and(|at| at < since) {
                break 'pages;
            }
            // Prenotes move no money and are not debit entries NACHA counts.
            if p.direction != PaymentDirection::Debit || p.trace_number.is_none() || p.prenote {
                continue;
            }
            entries += 1;
            if let Some(reason) = p.return_code.as_deref().and_then(return_reason) {
                overall += 1;
                if reason.is_unauthorized {
                    unauthorized += 1;
                }
                if matches!(reason.code, "R02" | "R03" | "R04") {
                    administrative += 1;
                }
            }
        }
        match (result.has_more, result.items.last()) {
            (true, Some(last)) => cursor = settle_store::records::Cursor::After(last.id.clone()),
            _ => break,
        }
    }
    let bps = |n: i64| if entries == 0 { 0 } else { n.saturating_mul(10_000) / entries };
    let rates = [bps(unauthorized), bps(administrative), bps(overall)];
    let exceeded = THRESHOLDS_BPS.iter().zip(rates).filter(|((_, limit), rate)| rate > limit).map(|((name, _), _)| (*name).to_owned()).collect();
    Ok(ReturnRatesJson {
        object: String::from("ach_return_rates"),
        window_days: RETURN_RATE_WINDOW_DAYS,
        since: since.to_rfc3339(),
        debit_entries: entries,
        unauthorized_returns: unauthorized,
        unauthorized_rate_bps: rates[0],
        administrative_returns: administrative,
        administrative_rate_bps: rates[1],
        overall_returns: overall,
        overall_rate_bps: rates[2],
        exceeded,
        truncated,
    })
}

/// The originator's debit return rates over a rolling 60 days, against NACHA's
/// thresholds (unauthorized 0.5%, administrative 3%, overall 15%).
#[utoipa::path(get, path = "/v1/ach/return_rates", tag = "Payments", operation_id = "get_ach_return_rates",
    responses((status = 200, description = "The rates.", body = ReturnRatesJson)))]
pub async fn get(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsRead)?;
    Ok(axum::Json(compute(&state, principal.tenant, state.clock.now()).await?).into_response())
}

/// What the monitor remembers of a tenant between evaluations.
#[derive(Serialize, Deserialize, Default)]
struct AlertRecord {
    /// The thresholds exceeded at the last evaluation.
    exceeded: Vec<String>,
    /// Crossings so far: the sequence of the events.
    crossings: i64,
    updated_at: String,
}

/// Evaluates the tenant's rates: sets the gauges, and records a crossing
/// (with its event) when a threshold is exceeded that was not before.
pub async fn evaluate(state: &AppState, tenant: TenantId) -> Result<(), ApiError> {
    let now = state.clock.now();
    let rates = compute(state, tenant, now).await?;
    let tenant_label = tenant.0.to_string();
    // Only rates above their threshold are exported, so the labels stay as
    // few as the originators in trouble (what an alert rule looks for).
    for ((name, limit), bps) in THRESHOLDS_BPS.iter().zip([rates.unauthorized_rate_bps, rates.administrative_rate_bps, rates.overall_rate_bps]) {
        let labels = crate::metrics::ReturnRateLabels { tenant: tenant_label.clone(), rate: name };
        if bps > *limit {
            state.metrics.ach_return_rate_exceeded_bps.get_or_create(&labels).set(bps);
        } else {
            state.metrics.ach_return_rate_exceeded_bps.remove(&labels);
        }
    }
    let id = format!("{OBJECT_ID}_{}", tenant.0);
    for _ in 0..MAX_RECORD_ATTEMPTS {
        let row = state.store.ach_get(AchTable::ReturnRateAlerts, tenant, id.clone()).await?;
        let previous: AlertRecord = match &row {
            Some(r) => decode(&r.data)?,
            None => AlertRecord::default(),
        };
        if previous.exceeded == rates.exceeded {
            return Ok(());
        }
        let crossed: Vec<&'static str> = THRESHOLDS_BPS
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| rates.exceeded.iter().any(|e| e == name) && !previous.exceeded.iter().any(|e| e == name))
            .collect();
        let record =
            AlertRecord { exceeded: rates.exceeded.clone(), crossings: previous.crossings + i64::from(!crossed.is_empty()), updated_at: now.to_rfc3339() };
        let fresh = |version: i64, created_at: i64| -> Result<AchRow, ApiError> {
            Ok(AchRow {
                id: id.clone(),
                tenant,
                status: String::from("evaluated"),
                lookup: None,
                external_id: None,
                version,
                data: encode(&record)?,
                created_at,
            })
        };
        let write = match &row {
            Some(r) => AchWrite::Update(AchTable::ReturnRateAlerts, fresh(r.version + 1, r.created_at)?),
            None => AchWrite::Insert(AchTable::ReturnRateAlerts, fresh(1, now.micros())?),
        };
        let mut events = Vec::new();
        if !crossed.is_empty() {
            let object = serde_json::to_value(&rates).map_err(|e| ApiError::internal(&e))?;
            let previous_attributes = serde_json::json!({"exceeded": previous.exceeded});
            events.push(new_event(
                state,
                tenant,
                String::from("ach.return_rate.threshold_crossed"),
                (OBJECT_ID, record.crossings),
                object,
                Some(previous_attributes),
                now,
            )?);
        }
        match state.store.ach_apply(vec![write], events, None, now).await {
            Ok(()) => {
                for name in &crossed {
                    state.metrics.ach_return_rate_alerts.get_or_create(&crate::metrics::RateLabels { rate: name }).inc();
                    tracing::warn!(tenant = tenant.0, rate = *name, "an ACH return rate crossed its NACHA threshold");
                }
                return Ok(());
            }
            // Another server recorded an evaluation meanwhile (an insert that lost counts too): read it and decide again.
            Err(ApplyError::Stale) => continue,
            Err(ApplyError::Store(e)) => return Err(ApiError::from(e)),
        }
    }
    Ok(())
}

/// [`evaluate`] after a change that already happened: a failure is logged,
/// never reported to the caller whose change it was.
pub async fn evaluate_after_change(state: &AppState, tenant: TenantId) {
    if let Err(e) = evaluate(state, tenant).await {
        tracing::warn!(tenant = tenant.0, code = e.code, message = %e.message, "evaluating the ACH return rates failed; the next return or cut evaluates again");
    }
}
