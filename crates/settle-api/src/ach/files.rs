//! NACHA files: cut per FedACH window (by the scheduler, or on demand in the
//! sandbox), listed and downloaded; return and NOC files read back.
//!
//! A window is cut at most once per tenant: the file row's `lookup` is the
//! window (`2026-11-30T10:30`) under a unique index, so when several servers
//! run the scheduler, one file wins and the others write nothing. Payments
//! move to `submitted` in the same transaction as their file; a credit's hold
//! is posted right after.
//!
//! In the sandbox a `rails` fault makes the simulated bank misbehave here
//! (docs/sandbox.md): `fail` / `timeout` refuse a cut file before anything
//! is written (the payments stay pending, the window is tried again next
//! round), `duplicate` applies each settlement, return and NOC twice (the
//! second is refused by the payment's state or recognised as a duplicate),
//! `reorder` applies a return file's entries and a round's settlements last first.

use super::counterparties::{BankAccountRecord, NotificationOfChangeJson, bank_account_row, load_bank_account, open_account_number, seal_account_number};
use super::payments::{self, DishonoredReturnJson, PaymentDirection, PaymentJson, move_to, new_york_today, update, utc};
use super::{applied, conflict, decode, encode, unprocessable};
use crate::auth::require;
use crate::error::ApiError;
use crate::metrics::{ChangeLabels, EntryLabels, OutcomeLabels, WindowKindLabels};
use crate::pagination::{PageParams, page, parse_query};
use crate::path::IdPath;
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use settle_ach::nacha::{self, Direction, OutgoingEntry, SecCode};
use settle_ach::payment::PaymentStatus;
use settle_ach::returns::change_code;
use settle_ach::routing::RoutingNumber;
use settle_ach::window::{self, Window};
use settle_core::clock::Timestamp;
use settle_core::faults::FaultMode;
use settle_core::ids::AchFileId;
use settle_core::tenancy::{Principal, Scope, TenantId};
use settle_store::ach::{AchRow, AchTable, AchWrite};
use sha2::{Digest, Sha256};
use std::time::Duration;
use utoipa::ToSchema;

/// How often the scheduler looks for a window to cut and payments to settle.
pub const SCHEDULER_INTERVAL: Duration = Duration::from_secs(5);
/// Tenants served per scheduler round.
const MAX_TENANTS_PER_ROUND: i64 = 1_000;
/// Attempts at cutting one window when payments change under the cut.
const MAX_CUT_ATTEMPTS: usize = 3;
/// Files of one tenant read back to choose a file id modifier (36 a day at most).
const MODIFIER_LOOKBACK: i64 = 40;
/// A file's (and so each batch's) debit and credit totals are twelve digits.
const MAX_FILE_TOTAL_MINOR: i64 = 999_999_999_999;
/// New York hour after which a payment's effective date counts as settled.
pub const SETTLEMENT_HOUR_NEW_YORK: u8 = 18;

/// A NACHA file Settle sent or received.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct AchFileJson {
    #[schema(example = "achf_01jd3k3z7m8q9r0s1t2v3w4x5y")]
    pub id: String,
    #[schema(example = "ach_file")]
    pub object: String,
    /// `outgoing` (cut by Settle) or `incoming` (a return or NOC file).
    pub direction: String,
    /// The window it was cut for (`2026-11-30T10:30`, New York), `manual:…` for a sandbox cut, or the content's hash for an incoming file.
    pub window: String,
    pub file_id_modifier: String,
    pub entry_count: i64,
    pub total_debit: i64,
    pub total_credit: i64,
    /// The payments it carries (outgoing) or affected (incoming).
    pub payment_ids: Vec<String>,
    /// What an incoming file did, entry by entry.
    pub results: Vec<AchFileResultJson>,
    /// The next trace sequence after this file's (for the next file).
    pub next_trace_sequence: u32,
    pub created_at: String,
}

/// What one entry of an incoming file did.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct AchFileResultJson {
    /// The original entry's trace number.
    pub original_trace_number: String,
    /// `R01`… or `C01`…
    pub code: String,
    pub payment_id: Option<String>,
    /// `returned`, `changed`, `contested` (a contested dishonored return, R71–R77, of a dishonor Settle sent: the original return stands and was applied), `unmatched` (no payment has that trace number), `dishonored` (outside the code's return window: the payment is unchanged and the next file carries an `R68` dishonored return), `late` (outside its window, the payment's dishonor recorded already), `duplicate` (the same return or notification of change was applied already: nothing changed) or `refused` (the payment's state does not allow it).
    pub outcome: String,
}

#[derive(Serialize, Deserialize)]
struct AchFileRecord {
    #[serde(flatten)]
    json: AchFileJson,
    content: String,
}

fn file_row(tenant: TenantId, record: &AchFileRecord, now: Timestamp) -> Result<AchRow, ApiError> {
    Ok(AchRow {
        id: record.json.id.clone(),
        tenant,
        status: record.json.direction.clone(),
        lookup: Some(record.json.window.clone()),
        external_id: None,
        version: 1,
        data: encode(record)?,
        created_at: now.micros(),
    })
}

fn yymmdd(date: time::Date) -> String {
    format!("{:02}{:02}{:02}", date.year().rem_euclid(100), u8::from(date.month()), date.day())
}

/// The trace sequence and file id modifier the tenant's next file takes.
async fn next_numbers(state: &AppState, tenant: TenantId, today: &str) -> Result<(u32, char), ApiError> {
    let recent = state.store.ach_in_status_newest(AchTable::Files, tenant, "outgoing", MODIFIER_LOOKBACK).await?;
    let files = recent.iter().map(|r| decode::<AchFileRecord>(&r.data).map(|f| f.json)).collect::<Result<Vec<_>, _>>()?;
    let sequence = files.first().map_or(1, |f| f.next_trace_sequence);
    let today_count = files.iter().filter(|f| f.created_at.starts_with(today)).count();
    let modifier = u32::try_from(today_count)
        .ok()
        .and_then(nacha::file_id_modifier)
        .ok_or_else(|| unprocessable("ach_file_limit_reached", "36 files were cut today already (file id modifiers A–Z, 0–9)"))?;
    Ok((sequence, modifier))
}

/// Where a cut happens: the window, and whose time and payments.
#[derive(Clone, Copy)]
pub struct CutAt<'a> {
    /// The window's unique key per tenant (`2026-11-30T10:30`, `manual:…`, `clock:…`).
    pub key: &'a str,
    pub date: time::Date,
    pub window: Window,
    /// The time of the cut: the real time, or a test clock's.
    pub at: Timestamp,
    /// Only the payments that follow this test clock (`None`: those that follow none).
    pub test_clock: Option<&'a str>,
}

/// Cuts one file for `tenant` in a window from its pending payments. `None`
/// when there is nothing to cut or the window was cut already.
pub async fn cut(state: &AppState, tenant: TenantId, place: CutAt<'_>) -> Result<Option<AchFileJson>, ApiError> {
    let window_key = place.key;
    for _ in 0..MAX_CUT_ATTEMPTS {
        if !state.store.ach_find(AchTable::Files, tenant, window_key.to_owned(), 1).await?.is_empty() {
            return Ok(None);
        }
        match cut_once(state, tenant, place).await {
            Err(e) if e.code == "payment_conflict" => continue,
            other => return other,
        }
    }
    Err(conflict("payment_conflict", "payments kept changing while the file was cut; try again"))
}

async fn cut_once(state: &AppState, tenant: TenantId, place: CutAt<'_>) -> Result<Option<AchFileJson>, ApiError> {
    let CutAt { key: window_key, date: cut_date, window, at: now, test_clock } = place;
    let real_now = state.clock.now();
    let rows = state.store.ach_in_status(AchTable::Payments, tenant, PaymentStatus::Pending.as_str(), super::MAX_ENTRIES_PER_FILE).await?;
    let next_day = window::effective_date(cut_date, window, false, None);
    let (mut sequence, modifier) = next_numbers(state, tenant, &now.to_rfc3339()[..10]).await?;
    let first_sequence = sequence;
    let config = &state.ach.config;
    let mut entries = Vec::new();
    let mut chosen: Vec<(PaymentJson, AchRow)> = Vec::new();
    let mut failed: Vec<(PaymentJson, AchRow)> = Vec::new();
    let (mut credit_total, mut debit_total) = (0i64, 0i64);
    for row in rows {
        let mut p: PaymentJson = decode(&row.data)?;
        // A test clock's payments are cut only when their clock reaches a window.
        if p.test_clock.as_deref() != test_clock {
            continue;
        }
        let requested = p.effective_date.as_deref().map(|d| payments::date("effective_date", d)).transpose()?;
        // A payment wanted later than the next banking day waits for a later window.
        if let (Some(r), Some(next)) = (requested, next_day)
            && r > next
        {
            continue;
        }
        let Some(effective) = window::effective_date(cut_date, window, p.same_day, requested) else { continue };
        let (bank, _): (BankAccountRecord, AchRow) = load_bank_account(state, tenant, &p.counterparty_bank_account_id, "counterparty_bank_account_id").await?;
        if bank.json.status != "active" {
            move_to(
                &mut p,
                PaymentStatus::Failed,
                Some(format!("bank account disabled ({})", bank.json.disabled_reason.as_deref().unwrap_or("disabled"))),
                now,
            )?;
            failed.push((p, row));
            continue;
        }
        // A live entry to an account whose prenote was returned meanwhile is not sent.
        if !p.prenote && bank.json.verification.status == "failed" {
            move_to(&mut p, PaymentStatus::Failed, Some(String::from("bank account verification failed")), now)?;
            failed.push((p, row));
            continue;
        }
        // Money stops for a customer blocked by screening since the payment was made (a prenote moves none).
        if let Some(account) = p.ledger_account_id.as_deref() {
            let account = settle_core::ids::AccountId::parse(account).ok_or_else(|| ApiError::internal(&"a payment's account id is malformed"))?;
            if let Err(e) = crate::customers::accounts::refuse_blocked(state, tenant, &[&account]).await {
                if e.code != "customer_blocked" {
                    return Err(e);
                }
                move_to(&mut p, PaymentStatus::Failed, Some(String::from("customer blocked by sanctions screening")), now)?;
                failed.push((p, row));
                continue;
            }
        }
        // Control totals are twelve digits: a payment that would overflow them waits for the next file.
        let running = if p.direction == PaymentDirection::Credit { &mut credit_total } else { &mut debit_total };
        match running.checked_add(p.amount) {
            Some(total) if total <= MAX_FILE_TOTAL_MINOR => *running = total,
            _ => continue,
        }
        entries.push(outgoing_entry(state, tenant, &p, &bank, effective, sequence, None)?);
        p.trace_number = Some(nacha::trace_number(&config.originator.odfi, sequence));
        p.effective_date = Some(effective.to_string());
        sequence = (sequence % 9_999_999) + 1;
        chosen.push((p, row));
    }
    // Payments whose bank account was disabled or whose customer was blocked meanwhile fail (their holds are released).
    for (p, row) in &failed {
        applied(state.store.ach_apply(vec![update(tenant, p, row)?], vec![payments::event(state, tenant, p)?], None, real_now).await, || {
            conflict("payment_conflict", "changed")
        })?;
        if let Err(e) = payments::void_ledger(state, tenant, p).await {
            payments::record_ledger_issue(state, tenant, &p.id, format!("hold not voided: {}", payments::issue_of(&e))).await;
        }
    }
    // Dishonored returns waiting for a file go in their own batch.
    let mut dishonored: Vec<(DishonoredReturnJson, AchRow, PaymentJson, AchRow)> = Vec::new();
    let pending = state.store.ach_in_status(AchTable::DishonoredReturns, tenant, "pending", super::MAX_ENTRIES_PER_FILE).await?;
    for row in pending {
        let mut d: DishonoredReturnJson = decode(&row.data)?;
        if d.test_clock.as_deref() != test_clock {
            continue;
        }
        let (mut p, p_row) = payments::load(state, tenant, &d.payment_id).await?;
        let running = if p.direction == PaymentDirection::Credit { &mut credit_total } else { &mut debit_total };
        match running.checked_add(p.amount) {
            Some(total) if total <= MAX_FILE_TOTAL_MINOR => *running = total,
            _ => continue,
        }
        let (bank, _): (BankAccountRecord, AchRow) = load_bank_account(state, tenant, &p.counterparty_bank_account_id, "counterparty_bank_account_id").await?;
        let dishonor = nacha::Dishonor {
            dishonor_code: d.dishonor_code.clone(),
            original_trace_number: p.trace_number.clone().unwrap_or_default(),
            return_trace_number: d.return_trace_number.clone(),
            return_settlement_date: String::new(),
            return_reason_code: d.return_code.clone(),
        };
        let effective = next_day.unwrap_or(cut_date);
        entries.push(outgoing_entry(state, tenant, &p, &bank, effective, sequence, Some(dishonor))?);
        d.status = String::from("submitted");
        d.trace_number = Some(nacha::trace_number(&config.originator.odfi, sequence));
        p.dishonored_return = Some(d.clone());
        p.updated_at = now.to_rfc3339();
        sequence = (sequence % 9_999_999) + 1;
        dishonored.push((d, row, p, p_row));
    }
    if entries.is_empty() {
        return Ok(None);
    }
    // The simulated bank refuses the file: nothing is written, so the
    // payments stay pending and the next round (or cut) takes them once.
    let fired = state.faults.rails(state, tenant, &[FaultMode::Fail, FaultMode::Timeout]).await;
    if fired.fail || fired.timeout {
        let how = if fired.timeout { "did not answer (timeout)" } else { "refused it" };
        tracing::warn!(tenant = tenant.0, window = window_key, "sandbox rails fault: the simulated bank {how}; no file was cut");
        // A 409, not a 5xx: the refusal is the state the caller put the sandbox in, not a fault of ours.
        return Err(conflict(
            "ach_transmission_failed",
            format!("the simulated bank {how} (a sandbox rails fault); nothing was cut, the payments stay pending for the next cut"),
        ));
    }
    let local = window::new_york(utc(now));
    let created = (yymmdd(local.date()), format!("{:02}{:02}", local.hour(), local.minute()));
    let file = nacha::build_file(&config.originator, (&created.0, &created.1), modifier, &entries)
        .map_err(|e| ApiError::internal(&format!("building a NACHA file: {e}")))?;
    let id = state.ach.ids.ach_file().to_string();
    let json = AchFileJson {
        id: id.clone(),
        object: String::from("ach_file"),
        direction: String::from("outgoing"),
        window: window_key.to_owned(),
        file_id_modifier: modifier.to_string(),
        entry_count: i64::try_from(entries.len()).unwrap_or(i64::MAX),
        total_debit: file.control.total_debit_minor,
        total_credit: file.control.total_credit_minor,
        payment_ids: chosen.iter().map(|(p, _)| p.id.clone()).chain(dishonored.iter().map(|(d, ..)| d.payment_id.clone())).collect(),
        results: Vec::new(),
        next_trace_sequence: sequence,
        created_at: now.to_rfc3339(),
    };
    let record = AchFileRecord { json, content: file.write() };
    let mut writes = vec![AchWrite::Insert(AchTable::Files, file_row(tenant, &record, real_now)?)];
    let mut events = Vec::with_capacity(chosen.len());
    for (p, row) in &mut chosen {
        p.ach_file_id = Some(id.clone());
        move_to(p, PaymentStatus::Submitted, Some(format!("in file {id} (trace {})", p.trace_number.as_deref().unwrap_or(""))), now)?;
        writes.push(update(tenant, p, row)?);
        events.push(payments::event(state, tenant, p)?);
    }
    for (d, d_row, p, p_row) in &mut dishonored {
        d.ach_file_id = Some(id.clone());
        p.dishonored_return = Some(d.clone());
        writes.push(AchWrite::Update(AchTable::DishonoredReturns, payments::dishonor_row(tenant, d, d_row.version + 1, d_row.created_at)?));
        writes.push(update(tenant, p, p_row)?);
        events.push(payments::dishonor_event(state, tenant, p)?);
    }
    applied(state.store.ach_apply(writes, events, None, real_now).await, || conflict("payment_conflict", "a payment or the window changed during the cut"))?;
    tracing::info!(file_id = %id, entries = entries.len(), first_sequence, window = window_key, "cut an ACH file");
    count_cut(state, window_key, &chosen, dishonored.len());
    for (p, _) in &chosen {
        if p.direction == PaymentDirection::Credit
            && let Err(e) = payments::post_ledger(state, tenant, p).await
        {
            payments::record_ledger_issue(state, tenant, &p.id, format!("hold not posted: {}", payments::issue_of(&e))).await;
        }
    }
    // New debit entries lower the return rates: the monitor notices a rate back under its threshold.
    if debit_total > 0 {
        super::return_rates::evaluate_after_change(state, tenant).await;
    }
    Ok(Some(record.json))
}

/// Counts a cut file and its entries (`settle_ach_files_cut`, `settle_ach_entries_written`).
fn count_cut(state: &AppState, window_key: &str, chosen: &[(PaymentJson, AchRow)], dishonored: usize) {
    let kind = if window_key.starts_with("manual:") {
        "sandbox"
    } else if window_key.starts_with("clock:") {
        "test_clock"
    } else {
        "scheduled"
    };
    state.metrics.ach_files_cut.get_or_create(&WindowKindLabels { kind }).inc();
    let credits = chosen.iter().filter(|(p, _)| p.direction == PaymentDirection::Credit).count();
    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let entries = &state.metrics.ach_entries_written;
    entries.get_or_create(&EntryLabels { entry: "credit" }).inc_by(as_u64(credits));
    entries.get_or_create(&EntryLabels { entry: "debit" }).inc_by(as_u64(chosen.len() - credits));
    entries.get_or_create(&EntryLabels { entry: "dishonored_return" }).inc_by(as_u64(dishonored));
}

/// What a notification the simulated bank delivered a second time (a
/// `duplicate` rails fault) did: it must change nothing, so the payment's
/// state machine refuses it; anything else is logged for the rehearsal's reader.
pub fn redelivered(payment_id: &str, second: Result<PaymentJson, ApiError>) {
    match second {
        Err(e) if e.code == "payment_invalid_state" => {}
        Ok(_) => tracing::error!(payment_id, "a notification delivered twice changed the payment twice"),
        Err(e) => tracing::warn!(payment_id, code = e.code, "a notification delivered twice was refused unexpectedly"),
    }
}

/// The file entry of payment `p` to `bank`, effective `effective`: the
/// payment itself, or with `dishonor` the dishonor of its late return.
fn outgoing_entry(
    state: &AppState,
    tenant: TenantId,
    p: &PaymentJson,
    bank: &BankAccountRecord,
    effective: time::Date,
    sequence: u32,
    dishonor: Option<nacha::Dishonor>,
) -> Result<OutgoingEntry, ApiError> {
    let routing = RoutingNumber::parse(&bank.json.routing_number).map_err(|_| ApiError::internal(&"a stored routing number fails its check"))?;
    let sec = SecCode::parse(&p.sec_code).ok_or_else(|| ApiError::internal(&"a stored SEC code is unknown"))?;
    Ok(OutgoingEntry {
        direction: match p.direction {
            PaymentDirection::Credit => Direction::Credit,
            PaymentDirection::Debit => Direction::Debit,
        },
        account_type: bank.json.account_type.nacha(),
        routing_number: routing,
        account_number: open_account_number(state, tenant, bank)?,
        amount_minor: p.amount,
        individual_identification: p.id.trim_start_matches("pay_").chars().take(15).collect(),
        individual_name: bank.json.holder_name.clone(),
        sec_code: sec,
        company_entry_description: p.company_entry_description.clone(),
        effective_date: yymmdd(effective),
        addenda: if dishonor.is_some() { None } else { p.addenda.clone() },
        trace_sequence: sequence,
        prenote: p.prenote && dishonor.is_none(),
        dishonor,
    })
}

/// One scheduler round: cut the latest window for every tenant with pending
/// payments (once per window), settle submitted payments whose effective
/// date has passed its settlement hour, and re-apply the ledger effects
/// refused after their payment moved (`repairs`).
pub async fn tick(state: &AppState) -> Result<usize, ApiError> {
    let now = state.clock.now();
    let mut cut_count = 0;
    // Due automatic retries first, so that this round's window can carry them.
    for tenant in state.store.ach_tenants_in_status(AchTable::Retries, "due", MAX_TENANTS_PER_ROUND).await? {
        payments::retry_due(state, tenant, now, None).await?;
    }
    if let Some((date, w)) = window::latest_window(utc(now), &state.ach.config.windows) {
        let key = format!("{date}T{:02}:{:02}", w.hour, w.minute);
        let mut tenants = state.store.ach_tenants_in_status(AchTable::Payments, PaymentStatus::Pending.as_str(), MAX_TENANTS_PER_ROUND).await?;
        tenants.extend(state.store.ach_tenants_in_status(AchTable::DishonoredReturns, "pending", MAX_TENANTS_PER_ROUND).await?);
        tenants.sort_by_key(|t| t.0);
        tenants.dedup();
        for tenant in tenants {
            // One tenant's failure does not hold up the others; the next round retries it.
            match cut(state, tenant, CutAt { key: &key, date, window: w, at: now, test_clock: None }).await {
                Ok(Some(_)) => cut_count += 1,
                Ok(None) => {}
                Err(e) => tracing::warn!(tenant = tenant.0, code = e.code, message = %e.message, "cutting an ACH file failed"),
            }
        }
    }
    for tenant in state.store.ach_tenants_in_status(AchTable::Payments, PaymentStatus::Submitted.as_str(), MAX_TENANTS_PER_ROUND).await? {
        settle_due(state, tenant, now, None).await?;
    }
    // Prenotes settled long enough ago (or failed, or canceled): their bank accounts' verifications are decided.
    for tenant in state.store.ach_tenants_in_status(AchTable::Prenotes, "pending", MAX_TENANTS_PER_ROUND).await? {
        super::prenotes::decide_due(state, tenant, now, None).await?;
    }
    // Ledger effects refused after their payment moved: re-applied once their backoff is over.
    for tenant in state.store.ach_tenants_in_status(AchTable::LedgerRepairs, "open", MAX_TENANTS_PER_ROUND).await? {
        super::repairs::sweep(state, tenant, super::repairs::Sweep::Due).await?;
    }
    Ok(cut_count)
}

/// Settles the tenant's submitted payments that follow `test_clock` (none:
/// the real clock) whose effective date has reached its settlement hour at `at`.
pub async fn settle_due(state: &AppState, tenant: TenantId, at: Timestamp, test_clock: Option<&str>) -> Result<(), ApiError> {
    let local = window::new_york(utc(at));
    let mut due = Vec::new();
    for row in state.store.ach_in_status(AchTable::Payments, tenant, PaymentStatus::Submitted.as_str(), super::MAX_ENTRIES_PER_FILE).await? {
        let p: PaymentJson = decode(&row.data)?;
        if p.test_clock.as_deref() != test_clock {
            continue;
        }
        let Some(effective) = p.effective_date.as_deref().map(|d| payments::date("effective_date", d)).transpose()? else { continue };
        if local.date() > effective || (local.date() == effective && local.hour() >= SETTLEMENT_HOUR_NEW_YORK) {
            due.push(p.id);
        }
    }
    if due.is_empty() {
        return Ok(());
    }
    let fired = state.faults.rails(state, tenant, &[FaultMode::Duplicate, FaultMode::Reorder]).await;
    if fired.reorder {
        due.reverse();
    }
    for id in &due {
        match payments::settle(state, tenant, id, "settled on its effective date", Some(at)).await {
            Ok(_) => {}
            Err(e) if e.code == "payment_conflict" || e.code == "payment_invalid_state" => {}
            Err(e) => tracing::warn!(payment_id = %id, code = e.code, message = %e.message, "settling an ACH payment failed"),
        }
        if fired.duplicate {
            redelivered(id, payments::settle(state, tenant, id, "settled on its effective date", Some(at)).await);
        }
    }
    Ok(())
}

/// Runs [`tick`] every [`SCHEDULER_INTERVAL`] until the task is aborted.
pub fn spawn_scheduler(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(SCHEDULER_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(e) = tick(&state).await {
                tracing::warn!(code = e.code, message = %e.message, "ACH scheduler round failed; next round retries");
            }
        }
    })
}

/// Sandbox only: cuts a file now from every pending payment, as if a window
/// closed (payments that follow a test clock wait for their clock).
#[utoipa::path(post, path = "/v1/test_helpers/ach/cut", tag = "Test helpers", operation_id = "simulate_ach_cut",
    request_body = crate::wire::EmptyRequest,
    responses((status = 200, description = "The file cut (none when no payment was pending).", body = inline(crate::render::ListJson<AchFileJson>))))]
pub async fn simulate_cut(
    State(state): State<AppState>,
    crate::test_helpers::SandboxWriter(principal): crate::test_helpers::SandboxWriter,
    _body: crate::body::JsonBody<crate::wire::EmptyRequest>,
) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsWrite)?;
    let now = state.clock.now();
    let today = new_york_today(now);
    let date = if settle_core::calendar::is_banking_day(today) { Some(today) } else { settle_core::calendar::next_banking_day(today) };
    let date = date.ok_or_else(|| ApiError::internal(&"no banking day ahead"))?;
    let local = window::new_york(utc(now));
    let w = Window { hour: local.hour(), minute: local.minute(), is_same_day: true };
    let key = format!("manual:{}", state.ach.ids.ach_file());
    let place = CutAt { key: &key, date, window: w, at: now, test_clock: None };
    let files: Vec<AchFileJson> = cut(&state, principal.tenant, place).await?.into_iter().collect();
    Ok(axum::Json(crate::render::list(files, false)).into_response())
}

async fn load_file(state: &AppState, tenant: TenantId, id: &str) -> Result<AchFileRecord, ApiError> {
    if AchFileId::parse(id).is_none() {
        return Err(ApiError::not_found("ACH file"));
    }
    let row = state.store.ach_get(AchTable::Files, tenant, id.to_owned()).await?.ok_or_else(|| ApiError::not_found("ACH file"))?;
    decode(&row.data)
}

/// NACHA files, newest first.
#[utoipa::path(get, path = "/v1/ach/files", tag = "Payments", operation_id = "list_ach_files",
    params(PageParams),
    responses((status = 200, description = "A page of files.", body = inline(crate::render::ListJson<AchFileJson>))))]
pub async fn list(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsRead)?;
    let params: PageParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| AchFileId::parse(id).is_some())?;
    let result = state.store.ach_list(AchTable::Files, principal.tenant, None, page).await?;
    let items = result.items.iter().map(|r| decode::<AchFileRecord>(&r.data).map(|f| f.json)).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(crate::render::list(items, result.has_more)).into_response())
}

/// A NACHA file's summary.
#[utoipa::path(get, path = "/v1/ach/files/{id}", tag = "Payments", operation_id = "get_ach_file",
    params(("id" = String, Path, description = "A file id (`achf_…`).")),
    responses((status = 200, description = "The file.", body = AchFileJson)))]
pub async fn get(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsRead)?;
    Ok(axum::Json(load_file(&state, principal.tenant, &id).await?.json).into_response())
}

/// The file itself, as sent to (or received from) the bank.
#[utoipa::path(get, path = "/v1/ach/files/{id}/content", tag = "Payments", operation_id = "get_ach_file_content",
    params(("id" = String, Path, description = "A file id (`achf_…`).")),
    responses((status = 200, description = "94-character NACHA records.", content_type = "text/plain", body = String)))]
pub async fn content(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsRead)?;
    let record = load_file(&state, principal.tenant, &id).await?;
    let mut response = record.content.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=us-ascii"));
    Ok(response)
}

/// Applies a notification of change to the payment's bank account: its
/// outcome, `changed`, `refused` (an unknown code) or `duplicate` (this
/// payment's notification with this code was applied already).
async fn apply_change(state: &AppState, tenant: TenantId, p: &PaymentJson, change: &nacha::ChangeAddenda) -> Result<&'static str, ApiError> {
    let code = change.change_code.trim();
    let Some(known) = change_code(code) else { return Ok("refused") };
    let (mut bank, row): (BankAccountRecord, AchRow) =
        load_bank_account(state, tenant, &p.counterparty_bank_account_id, "counterparty_bank_account_id").await?;
    if bank.json.notifications_of_change.iter().any(|n| n.code == known.code && n.payment_id.as_deref() == Some(p.id.as_str())) {
        return Ok("duplicate");
    }
    let data = change.corrected_data.trim();
    let mut fields = Vec::new();
    let account_ok = |text: &str| super::counterparties::account_number("corrected_data", text).ok();
    match code {
        "C01" | "C06" => {
            let number = data.get(..17).unwrap_or(data).trim();
            if let Some(n) = account_ok(number) {
                seal_account_number(state, tenant, &mut bank, &n)?;
                fields.push(String::from("account_number"));
            }
        }
        "C02" => {
            if let Ok(r) = RoutingNumber::parse(data.get(..9).unwrap_or(data)) {
                bank.json.routing_number = r.to_string();
                fields.push(String::from("routing_number"));
            }
        }
        "C03" | "C07" => {
            let routing = data.get(..9).map(RoutingNumber::parse);
            let number = data.get(9..).map(str::trim).and_then(|rest| account_ok(rest.get(..17.min(rest.len())).unwrap_or("")));
            if let (Some(Ok(r)), Some(n)) = (routing, number) {
                bank.json.routing_number = r.to_string();
                seal_account_number(state, tenant, &mut bank, &n)?;
                fields.extend([String::from("routing_number"), String::from("account_number")]);
            }
        }
        _ => {}
    }
    if matches!(code, "C05" | "C06" | "C07") {
        // The corrected transaction code is the last two characters that matter: 2x checking, 3x savings.
        let tx = if code == "C05" { data.get(..2) } else { data.trim_end().get(data.trim_end().len().saturating_sub(2)..) };
        match tx.and_then(|t| t.chars().next()) {
            Some('2') => {
                bank.json.account_type = super::counterparties::AccountTypeJson::Checking;
                fields.push(String::from("account_type"));
            }
            Some('3') => {
                bank.json.account_type = super::counterparties::AccountTypeJson::Savings;
                fields.push(String::from("account_type"));
            }
            _ => {}
        }
    }
    let now = state.clock.now();
    bank.json.notifications_of_change.push(NotificationOfChangeJson {
        code: known.code.to_owned(),
        description: known.description.to_owned(),
        updated_fields: fields,
        payment_id: Some(p.id.clone()),
        received_at: now.to_rfc3339(),
    });
    applied(
        state
            .store
            .ach_apply(vec![AchWrite::Update(AchTable::BankAccounts, bank_account_row(tenant, &bank, row.version + 1, row.created_at)?)], Vec::new(), None, now)
            .await,
        || conflict("payment_conflict", "the bank account changed while the notification was applied; import the file again"),
    )?;
    state.metrics.ach_notifications_of_change.get_or_create(&ChangeLabels { code: known.code }).inc();
    Ok("changed")
}

/// Reads a return / NOC file and applies each entry; the file is stored
/// once (a second import of the same bytes answers the first result).
pub async fn import_return_file(state: &AppState, tenant: TenantId, text: &str) -> Result<(StatusCode, AchFileJson), ApiError> {
    let file = nacha::parse(text).map_err(|e| {
        count_return_file(state, "rejected");
        let param = if e.line == 0 { String::from("content") } else { format!("line {}", e.line) };
        unprocessable("ach_file_invalid", e.to_string()).with_param(param)
    })?;
    let hash = format!("incoming:{}", hex::encode(Sha256::digest(text.as_bytes())));
    if let Some(row) = state.store.ach_find(AchTable::Files, tenant, hash.clone(), 1).await?.into_iter().next() {
        count_return_file(state, "replayed");
        return Ok((StatusCode::OK, decode::<AchFileRecord>(&row.data)?.json));
    }
    let now = state.clock.now();
    let mut results = Vec::new();
    let mut payment_ids = Vec::new();
    // The simulated bank's notifications, as a sandbox rails fault delivers them:
    // last first (`reorder`), each twice (`duplicate`); results list them as applied.
    let fired = state.faults.rails(state, tenant, &[FaultMode::Duplicate, FaultMode::Reorder]).await;
    let mut delivered: Vec<&nacha::Entry> = file.entries().map(|(_, entry)| entry).collect();
    if fired.reorder {
        delivered.reverse();
    }
    if fired.duplicate {
        delivered = delivered.into_iter().flat_map(|entry| [entry, entry]).collect();
    }
    for entry in delivered {
        let (code, original) = if let Some(r) = entry.return_addenda() {
            (r.reason_code.trim().to_owned(), r.original_trace_number.trim().to_owned())
        } else if let Some(c) = entry.change_addenda() {
            (c.change_code.trim().to_owned(), c.original_trace_number.trim().to_owned())
        } else {
            continue;
        };
        let found = state.store.ach_find(AchTable::Payments, tenant, original.clone(), 1).await?.into_iter().next();
        let Some(row) = found else {
            results.push(AchFileResultJson { original_trace_number: original, code, payment_id: None, outcome: String::from("unmatched") });
            continue;
        };
        let p: PaymentJson = decode(&row.data)?;
        let outcome = if let Some(c) = entry.change_addenda() {
            apply_change(state, tenant, &p, c).await?
        } else if payments::is_contested_dishonor_code(&code) {
            // The receiving bank contests our dishonor (R71–R77): the original return stands.
            if p.dishonored_return.as_ref().is_some_and(|d| d.contested_code.as_deref() == Some(code.as_str())) {
                "duplicate"
            } else {
                match payments::apply_contested_dishonor(state, tenant, &p.id, &code, "return file").await {
                    Ok(_) => "contested",
                    Err(e) if e.code == "payment_invalid_state" || e.code == "invalid_request" => "refused",
                    Err(e) => return Err(e),
                }
            }
        } else if p.status == PaymentStatus::Returned && p.return_code.as_deref() == Some(code.as_str()) {
            // The same return again (a bank's repeat, or a sandbox `duplicate` fault): nothing to do.
            "duplicate"
        } else {
            match payments::apply_return(state, tenant, &p.id, &code, "return file").await {
                Ok(_) => "returned",
                // Refused as untimely: dishonored (R68) in the next file, once per payment.
                Err(e) if e.code == "return_window_elapsed" => {
                    let outcome = if payments::record_dishonor(state, tenant, &p.id, &code, entry.trace_number.trim()).await? { "dishonored" } else { "late" };
                    state.metrics.ach_untimely_returns.get_or_create(&OutcomeLabels { outcome }).inc();
                    outcome
                }
                Err(e) if e.code == "payment_invalid_state" || e.code == "invalid_request" => "refused",
                Err(e) => return Err(e),
            }
        };
        payment_ids.push(p.id.clone());
        results.push(AchFileResultJson { original_trace_number: original, code, payment_id: Some(p.id), outcome: outcome.to_owned() });
    }
    if results.iter().any(|r| r.outcome == "returned" || r.outcome == "contested") {
        super::return_rates::evaluate_after_change(state, tenant).await;
    }
    let json = AchFileJson {
        id: state.ach.ids.ach_file().to_string(),
        object: String::from("ach_file"),
        direction: String::from("incoming"),
        window: hash,
        file_id_modifier: file.header.file_id_modifier.to_string(),
        entry_count: i64::try_from(file.entries().count()).unwrap_or(i64::MAX),
        total_debit: file.control.total_debit_minor,
        total_credit: file.control.total_credit_minor,
        payment_ids,
        results,
        next_trace_sequence: 0,
        created_at: now.to_rfc3339(),
    };
    let record = AchFileRecord { json, content: text.to_owned() };
    match state.store.ach_apply(vec![AchWrite::Insert(AchTable::Files, file_row(tenant, &record, now)?)], Vec::new(), None, now).await {
        Ok(()) => {
            count_return_file(state, "imported");
            Ok((StatusCode::CREATED, record.json))
        }
        // Imported concurrently: the entries were applied once (payment moves are guarded); answer the stored import.
        Err(settle_store::ach::ApplyError::Stale) => {
            match state.store.ach_find(AchTable::Files, tenant, record.json.window.clone(), 1).await?.into_iter().next() {
                Some(row) => Ok((StatusCode::OK, decode::<AchFileRecord>(&row.data)?.json)),
                None => Err(conflict("payment_conflict", "the file was imported concurrently; import it again")),
            }
        }
        Err(settle_store::ach::ApplyError::Store(e)) => Err(ApiError::from(e)),
    }
}

/// Counts a return / NOC file received (`settle_ach_return_files`).
fn count_return_file(state: &AppState, outcome: &'static str) {
    state.metrics.ach_return_files.get_or_create(&OutcomeLabels { outcome }).inc();
}

/// Imports a return / notification-of-change file from the bank (the NACHA text as the body).
#[utoipa::path(post, path = "/v1/ach/return_files", tag = "Payments", operation_id = "import_ach_return_file",
    request_body(content = String, content_type = "text/plain", description = "A NACHA file with return (addenda 99) and NOC (addenda 98) entries."),
    responses((status = 201, description = "The file and what each entry did.", body = AchFileJson),
              (status = 200, description = "The same file was imported before: the first import's result.", body = AchFileJson)))]
pub async fn import(State(state): State<AppState>, principal: Principal, body: axum::body::Bytes) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsWrite)?;
    if body.len() > nacha::MAX_FILE_BYTES {
        count_return_file(&state, "rejected");
        return Err(unprocessable("ach_file_invalid", "the file is too large").with_param("content"));
    }
    let text = std::str::from_utf8(&body).map_err(|_| {
        count_return_file(&state, "rejected");
        unprocessable("ach_file_invalid", "the file is not ASCII text").with_param("content")
    })?;
    let (status, json) = import_return_file(&state, principal.tenant, text).await?;
    Ok((status, axum::Json(json)).into_response())
}
