//! Sandbox test clocks (`/v1/test_helpers/test_clocks`): a frozen time that
//! the payments created with `test_clock` follow instead of the real clock.
//!
//! A clock only moves forward, and only when asked: `advance` walks from the
//! clock's time to the new one through every instant where something falls
//! due for its payments — each FedACH window on a banking day (a file is cut
//! under the key `clock:<id>:<date>T<hh:mm>`, so a window is never cut twice
//! even when an advance is repeated), the settlement hour, and each New York
//! midnight (a settled debit's availability hold is voided once its
//! `available_at` passes) — and runs it there, in order, before the request
//! answers. A test therefore runs a whole lifecycle in milliseconds with no
//! sleeps. The clock's new time is stored last, version-checked: an advance
//! that fails half-way leaves the clock where it was, and repeating it redoes
//! nothing twice (cuts are keyed by window, payment moves are guarded, a
//! void of a voided hold counts as done).
//!
//! The ledger keeps the real time: the transactions a test-clock payment
//! makes are stamped when they are made, and its availability hold carries no
//! ledger expiry (the advance voids it instead). Events carry the real time
//! too; the payment's `history`, `created_at` and `updated_at` carry the clock's.

use super::files::{self, CutAt, SETTLEMENT_HOUR_NEW_YORK};
use super::payments::{PaymentJson, new_york_instant, new_york_today, utc};
use super::{applied, conflict, decode, encode, submit_ledger, unprocessable};
use crate::auth::require;
use crate::body::JsonBody;
use crate::customers::{idempotency_record, json_response, keyed};
use crate::error::ApiError;
use crate::path::IdPath;
use crate::state::AppState;
use crate::test_helpers::{SandboxReader, SandboxWriter};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use settle_ach::payment::PaymentStatus;
use settle_core::clock::Timestamp;
use settle_core::ids::{TestClockId, TransactionId};
use settle_core::ledger::LedgerError;
use settle_core::tenancy::{Scope, TenantId};
use settle_store::ach::{AchRow, AchTable, AchWrite};
use settle_store::engine::{Command, CommandError};
use utoipa::ToSchema;

/// One advance moves a clock at most this far (the longest return window is
/// 60 days; a year covers every lifecycle and bounds the work of one request).
pub const MAX_ADVANCE_DAYS: i64 = 366;
/// A frozen time must lie in these years: the banking calendar and the NACHA
/// date fields (two-digit years) are meaningful there.
const MIN_YEAR: i32 = 2000;
const MAX_YEAR: i32 = 2099;

/// A sandbox test clock.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
#[schema(as = TestClock)]
pub struct TestClockJson {
    #[schema(example = "clock_01jd3k3z7m8q9r0s1t2v3w4x5y")]
    pub id: String,
    #[schema(example = "test_clock")]
    pub object: String,
    /// The clock's time: what its payments see as now.
    #[schema(example = "2027-03-01T14:00:00.000000Z")]
    pub frozen_time: String,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /v1/test_helpers/test_clocks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTestClockRequest {
    /// RFC 3339, years 2000 to 2099: the clock's starting time.
    #[schema(example = "2027-03-01T14:00:00Z")]
    pub frozen_time: String,
}

/// `POST /v1/test_helpers/test_clocks/{id}/advance`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceTestClockRequest {
    /// RFC 3339, not before the clock's time and at most 366 days after it.
    #[schema(example = "2027-03-02T23:00:00Z")]
    pub to: String,
}

fn frozen_time(param: &str, text: &str) -> Result<Timestamp, ApiError> {
    let t = Timestamp::parse_rfc3339(text)
        .filter(|t| (MIN_YEAR..=MAX_YEAR).contains(&utc(*t).year()))
        .ok_or_else(|| ApiError::invalid(param, format!("{param} must be an RFC 3339 time in the years {MIN_YEAR} to {MAX_YEAR}")))?;
    Ok(t)
}

fn clock_row(tenant: TenantId, clock: &TestClockJson, version: i64, created_at: i64) -> Result<AchRow, ApiError> {
    Ok(AchRow { id: clock.id.clone(), tenant, status: String::from("ready"), lookup: None, external_id: None, version, data: encode(clock)?, created_at })
}

/// The tenant's test clock `id` with its row, or 404.
pub async fn load(state: &AppState, tenant: TenantId, id: &str) -> Result<(TestClockJson, AchRow), ApiError> {
    if TestClockId::parse(id).is_none() {
        return Err(ApiError::not_found("test clock"));
    }
    let row = state.store.ach_get(AchTable::TestClocks, tenant, id.to_owned()).await?.ok_or_else(|| ApiError::not_found("test clock"))?;
    Ok((decode(&row.data)?, row))
}

/// Now for something that follows `clock`: the clock's time, or the real time.
pub async fn now_of(state: &AppState, tenant: TenantId, clock: Option<&str>) -> Result<Timestamp, ApiError> {
    let Some(id) = clock else { return Ok(state.clock.now()) };
    let (clock, _) = load(state, tenant, id).await?;
    Timestamp::parse_rfc3339(&clock.frozen_time).ok_or_else(|| ApiError::internal(&"a test clock's time is malformed"))
}

/// Now for payment `p`: its test clock's time, or the real time.
pub async fn payment_now(state: &AppState, tenant: TenantId, p: &PaymentJson) -> Result<Timestamp, ApiError> {
    now_of(state, tenant, p.test_clock.as_deref()).await
}

/// Sandbox only: a new test clock, frozen at `frozen_time`.
#[utoipa::path(post, path = "/v1/test_helpers/test_clocks", tag = "Test helpers", operation_id = "create_test_clock",
    params(crate::openapi::IdempotencyKey),
    request_body = CreateTestClockRequest,
    responses((status = 201, description = "The new clock.", body = TestClockJson)))]
pub async fn create(
    State(state): State<AppState>,
    SandboxWriter(principal): SandboxWriter,
    headers: HeaderMap,
    body: JsonBody<CreateTestClockRequest>,
) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsWrite)?;
    let keyed = keyed(&state, &principal, &headers, "/v1/test_helpers/test_clocks", &body.canonical).await?;
    if let Some(replay) = keyed.replay {
        return Ok(replay);
    }
    let frozen = frozen_time("frozen_time", &body.value.frozen_time)?;
    let now = state.clock.now();
    let clock = TestClockJson {
        id: state.ach.ids.test_clock().to_string(),
        object: String::from("test_clock"),
        frozen_time: frozen.to_rfc3339(),
        created_at: now.to_rfc3339(),
        updated_at: now.to_rfc3339(),
    };
    let (response, bytes) = json_response(StatusCode::CREATED, &clock)?;
    let idempotency = idempotency_record(principal.tenant, keyed.key, StatusCode::CREATED, bytes, now);
    let insert = AchWrite::Insert(AchTable::TestClocks, clock_row(principal.tenant, &clock, 1, now.micros())?);
    applied(state.store.ach_apply(vec![insert], Vec::new(), idempotency, now).await, stale)?;
    Ok(response)
}

/// Sandbox only: a test clock.
#[utoipa::path(get, path = "/v1/test_helpers/test_clocks/{id}", tag = "Test helpers", operation_id = "get_test_clock",
    params(("id" = String, Path, description = "A test clock id (`clock_…`).")),
    responses((status = 200, description = "The clock.", body = TestClockJson)))]
pub async fn get(State(state): State<AppState>, SandboxReader(principal): SandboxReader, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsRead)?;
    Ok(axum::Json(load(&state, principal.tenant, &id).await?.0).into_response())
}

fn stale() -> ApiError {
    conflict("test_clock_conflict", "the test clock was advanced by another request meanwhile; read it and advance again")
}

/// Sandbox only: moves the clock forward to `to`, running everything that
/// falls due for its payments on the way (cutoffs, settlements, hold
/// releases), after re-applying their ledger effects refused after a move.
#[utoipa::path(post, path = "/v1/test_helpers/test_clocks/{id}/advance", tag = "Test helpers", operation_id = "advance_test_clock",
    params(("id" = String, Path, description = "A test clock id (`clock_…`).")),
    request_body = AdvanceTestClockRequest,
    responses((status = 200, description = "The clock at its new time, everything due run.", body = TestClockJson)))]
pub async fn advance(
    State(state): State<AppState>,
    SandboxWriter(principal): SandboxWriter,
    IdPath(id): IdPath,
    body: JsonBody<AdvanceTestClockRequest>,
) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsWrite)?;
    let tenant = principal.tenant;
    let (mut clock, row) = load(&state, tenant, &id).await?;
    let from = Timestamp::parse_rfc3339(&clock.frozen_time).ok_or_else(|| ApiError::internal(&"a test clock's time is malformed"))?;
    let to = frozen_time("to", &body.value.to)?;
    if to < from {
        return Err(unprocessable("test_clock_backwards", format!("a test clock only moves forward; it is at {}", clock.frozen_time)).with_param("to"));
    }
    if to.micros() - from.micros() > MAX_ADVANCE_DAYS * 86_400_000_000 {
        return Err(ApiError::invalid("to", format!("one advance moves a test clock at most {MAX_ADVANCE_DAYS} days")));
    }
    // Ledger effects of the clock's payments refused after their move (the
    // cause may have been removed since the last advance): re-applied first,
    // at the clock's current time, so that what falls due next sees the ledger agree.
    super::repairs::sweep(&state, tenant, super::repairs::Sweep::Clock { id: &clock.id, at: from }).await?;
    let mut previous = from;
    for (at, window) in due_instants(from, to, &state.ach.config.windows) {
        run_due(&state, tenant, &clock.id, previous, at, window).await?;
        previous = at;
    }
    let now = state.clock.now();
    clock.frozen_time = to.to_rfc3339();
    clock.updated_at = now.to_rfc3339();
    let write = AchWrite::Update(AchTable::TestClocks, clock_row(tenant, &clock, row.version + 1, row.created_at)?);
    applied(state.store.ach_apply(vec![write], Vec::new(), None, now).await, stale)?;
    Ok(axum::Json(clock).into_response())
}

/// The instants in `(from, to]` where something may fall due, in order, with
/// the window to cut at each window instant; `to` itself comes last.
fn due_instants(from: Timestamp, to: Timestamp, windows: &[settle_ach::window::Window]) -> Vec<(Timestamp, Option<(time::Date, settle_ach::window::Window)>)> {
    let mut instants = Vec::new();
    let mut day = new_york_today(from);
    let last = new_york_today(to);
    while day <= last {
        instants.extend(new_york_instant(day, 0, 0).map(|t| (t, None)));
        if settle_core::calendar::is_banking_day(day) {
            for w in windows {
                instants.extend(new_york_instant(day, w.hour, w.minute).map(|t| (t, Some((day, *w)))));
            }
        }
        instants.extend(new_york_instant(day, SETTLEMENT_HOUR_NEW_YORK, 0).map(|t| (t, None)));
        match day.next_day() {
            Some(next) => day = next,
            None => break,
        }
    }
    instants.retain(|(t, _)| *t > from && *t <= to);
    instants.sort_by_key(|(t, _)| *t);
    instants.push((to, None));
    instants
}

/// Runs what is due at `at` for the clock's payments: automatic retries,
/// the window's cut, the settlements, and the release of availability holds whose `available_at`
/// fell in `(previous, at]`.
async fn run_due(
    state: &AppState,
    tenant: TenantId,
    clock: &str,
    previous: Timestamp,
    at: Timestamp,
    window: Option<(time::Date, settle_ach::window::Window)>,
) -> Result<(), ApiError> {
    super::payments::retry_due(state, tenant, at, Some(clock)).await?;
    if let Some((date, w)) = window {
        let key = format!("clock:{clock}:{date}T{:02}:{:02}", w.hour, w.minute);
        // A sandbox rails fault refused the file: its payments wait for the clock's next window.
        match files::cut(state, tenant, CutAt { key: &key, date, window: w, at, test_clock: Some(clock) }).await {
            Err(e) if e.code == "ach_transmission_failed" => {}
            other => {
                other?;
            }
        }
    }
    files::settle_due(state, tenant, at, Some(clock)).await?;
    super::prenotes::decide_due(state, tenant, at, Some(clock)).await?;
    if new_york_today(previous) != new_york_today(at) || window.is_none() {
        release_holds(state, tenant, clock, previous, at).await?;
    }
    Ok(())
}

/// Voids the availability holds of the clock's settled debits whose
/// `available_at` lies in `(previous, at]`: on the real clock the ledger
/// expires them by itself; on a test clock the advance does.
async fn release_holds(state: &AppState, tenant: TenantId, clock: &str, previous: Timestamp, at: Timestamp) -> Result<(), ApiError> {
    let settled = state.store.ach_in_status(AchTable::Payments, tenant, PaymentStatus::Settled.as_str(), super::MAX_ENTRIES_PER_FILE).await?;
    for row in settled {
        let p: PaymentJson = decode(&row.data)?;
        if p.test_clock.as_deref() != Some(clock) {
            continue;
        }
        let Some(available_at) = p.available_at.as_deref().and_then(Timestamp::parse_rfc3339) else { continue };
        if available_at <= previous || available_at > at {
            continue;
        }
        let Some(hold) = p.availability_hold_transaction_id.as_deref().and_then(TransactionId::parse) else { continue };
        match submit_ledger(state, tenant, Command::VoidTransaction { id: hold }).await {
            Ok(_) | Err(super::LedgerRefusal::Refused(CommandError::Ledger(LedgerError::TransactionNotPending(_)))) => {}
            Err(e) => return Err(e.into_api()),
        }
    }
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code: a panic is the failure report")]
mod tests {
    use super::*;

    #[test]
    fn due_instants_cover_each_window_and_settlement_hour_in_order_and_end_at_the_target() {
        // Friday 2027-03-05 09:00 New York (14:00 UTC) to Monday 2027-03-08 19:00 New York (00:00 UTC Tuesday).
        let from = Timestamp::parse_rfc3339("2027-03-05T14:00:00Z").unwrap();
        let to = Timestamp::parse_rfc3339("2027-03-09T00:00:00Z").unwrap();
        let instants = due_instants(from, to, &settle_ach::window::DEFAULT_WINDOWS);
        let windows: Vec<String> = instants.iter().filter_map(|(_, w)| w.map(|(d, w)| format!("{d}T{:02}:{:02}", w.hour, w.minute))).collect();
        // Friday's three same-day windows, none on the weekend, all four on Monday.
        assert_eq!(
            windows,
            ["2027-03-05T10:30", "2027-03-05T14:45", "2027-03-05T16:45", "2027-03-08T02:15", "2027-03-08T10:30", "2027-03-08T14:45", "2027-03-08T16:45"]
        );
        assert!(instants.windows(2).all(|p| p[0].0 <= p[1].0), "in time order");
        assert_eq!(instants.last().map(|(t, _)| *t), Some(to));
        assert!(instants.iter().all(|(t, _)| *t > from && *t <= to));
        // Four midnights and four settlement hours between them (Sat, Sun, Mon midnights; Fri..Mon 18:00).
        assert_eq!(instants.iter().filter(|(_, w)| w.is_none()).count(), 3 + 4 + 1);
    }
}
