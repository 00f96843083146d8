//! `/v1/counterparties`: who payments go to or come from, with their bank
//! accounts. Routing numbers are checked (ABA check digit); account numbers
//! are sealed under a per-bank-account data key wrapped by the customer
//! keyring's KEK, and only their last four characters are ever answered.

use super::{applied, decode, encode};
use crate::auth::{Scoped, require, scope};
use crate::body::JsonBody;
use crate::customers::keyring::DataKey;
use crate::customers::{idempotency_record, json_response, keyed};
use crate::error::ApiError;
use crate::pagination::{PageParams, page, parse_query};
use crate::path::IdPath;
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use settle_ach::routing::{RoutingNumber, RoutingNumberError};
use settle_core::ids::{BankAccountId, CounterpartyId};
use settle_core::metadata::Metadata;
use settle_core::tenancy::{Principal, Scope, TenantId};
use settle_store::ach::{AchRow, AchTable, AchWrite};
use utoipa::ToSchema;

/// Longest name or holder name, in characters.
const MAX_NAME_CHARS: usize = 140;
/// NACHA's DFI account number field is 17 characters.
const MAX_ACCOUNT_NUMBER_CHARS: usize = 17;
const MIN_ACCOUNT_NUMBER_CHARS: usize = 4;

#[derive(Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountTypeJson {
    Checking,
    Savings,
}

impl AccountTypeJson {
    pub fn nacha(self) -> settle_ach::nacha::AccountType {
        match self {
            AccountTypeJson::Checking => settle_ach::nacha::AccountType::Checking,
            AccountTypeJson::Savings => settle_ach::nacha::AccountType::Savings,
        }
    }
}

/// One bank account of a new counterparty.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BankAccountRequest {
    /// Nine digits with a valid ABA check digit.
    #[schema(example = "021000021")]
    pub routing_number: String,
    /// 4 to 17 letters, digits or hyphens. Stored encrypted; answered as its last four.
    #[schema(example = "000123456789")]
    pub account_number: String,
    pub account_type: AccountTypeJson,
    /// The account holder's name, 1 to 140 characters (the file keeps 22).
    pub holder_name: String,
    /// Verify it by prenote (a zero-dollar entry in the next file; default
    /// `false`), with the defaults of `POST …/bank_accounts/{id}/verify`.
    #[serde(default)]
    pub verify: bool,
}

/// `POST /v1/counterparties`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCounterpartyRequest {
    /// 1 to 140 characters.
    pub name: String,
    /// The customer this counterparty is (`cus_…`), if any.
    pub customer_id: Option<String>,
    /// 1 to 10 bank accounts.
    pub bank_accounts: Vec<BankAccountRequest>,
    #[serde(default, deserialize_with = "settle_core::metadata::deserialize_optional")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<Metadata>,
    /// Sandbox only: the test clock (`clock_…`) the prenotes of bank accounts
    /// with `verify` follow.
    pub test_clock: Option<String>,
}

/// A notification of change the receiving bank sent about this account.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct NotificationOfChangeJson {
    /// `C01`…`C14`.
    pub code: String,
    pub description: String,
    /// What was updated (`account_number`, `routing_number`, `account_type`), or nothing for codes recorded only.
    pub updated_fields: Vec<String>,
    /// The payment whose entry the bank corrected.
    pub payment_id: Option<String>,
    pub received_at: String,
}

/// A counterparty's bank account.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct BankAccountJson {
    #[schema(example = "ba_01jd3k3z7m8q9r0s1t2v3w4x5y")]
    pub id: String,
    #[schema(example = "bank_account")]
    pub object: String,
    pub counterparty_id: String,
    pub routing_number: String,
    /// The last four characters of the account number (the rest is never answered).
    pub account_number_last4: String,
    pub account_type: AccountTypeJson,
    pub holder_name: String,
    /// `active`; `disabled` after a return whose code disables it (R02, R03,
    /// R04…); `frozen` after R16 (account frozen, a compliance review is open).
    /// Only an active one takes payments.
    pub status: String,
    /// The return code that disabled or froze it.
    pub disabled_reason: Option<String>,
    pub notifications_of_change: Vec<NotificationOfChangeJson>,
    /// Its verification by prenote (`unverified` until one is asked for).
    #[serde(default)]
    pub verification: super::prenotes::BankAccountVerificationJson,
    pub created_at: String,
}

/// What is stored: the object and its sealed account number.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct BankAccountRecord {
    #[serde(flatten)]
    pub json: BankAccountJson,
    pub kek_version: i64,
    /// The bank account's data key, wrapped by the keyring (base64).
    pub wrapped_key: String,
    /// The account number sealed under that data key (base64).
    pub sealed_account_number: String,
}

/// The counterparty as stored (its bank accounts are rows of their own).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CounterpartyRecord {
    pub id: String,
    pub name: String,
    pub customer_id: Option<String>,
    pub metadata: Metadata,
    pub created_at: String,
}

/// A counterparty with its bank accounts.
#[derive(Serialize, ToSchema)]
pub struct CounterpartyJson {
    #[schema(example = "cp_01jd3k3z7m8q9r0s1t2v3w4x5y")]
    pub id: String,
    #[schema(example = "counterparty")]
    pub object: String,
    pub name: String,
    pub customer_id: Option<String>,
    pub bank_accounts: Vec<BankAccountJson>,
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: Metadata,
    pub created_at: String,
}

fn checked_name(param: &str, text: &str) -> Result<String, ApiError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.chars().count() > MAX_NAME_CHARS || trimmed.chars().any(char::is_control) {
        return Err(ApiError::invalid(param, format!("{param} must be 1 to {MAX_NAME_CHARS} characters without control characters")));
    }
    Ok(trimmed.to_owned())
}

/// Checks a routing number; the error names the field, never the value.
pub fn routing_number(param: &str, text: &str) -> Result<RoutingNumber, ApiError> {
    RoutingNumber::parse(text).map_err(|e| match e {
        RoutingNumberError::Format => ApiError::invalid(param, format!("{param} must be exactly nine digits")),
        RoutingNumberError::CheckDigit => ApiError::invalid(param, format!("{param} fails the ABA check digit")),
    })
}

/// Checks an account number; the error names the field, never the value.
pub fn account_number(param: &str, text: &str) -> Result<String, ApiError> {
    let n = text.chars().count();
    if !(MIN_ACCOUNT_NUMBER_CHARS..=MAX_ACCOUNT_NUMBER_CHARS).contains(&n) || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ApiError::invalid(param, format!("{param} must be {MIN_ACCOUNT_NUMBER_CHARS} to {MAX_ACCOUNT_NUMBER_CHARS} letters, digits or hyphens")));
    }
    Ok(text.to_owned())
}

fn last4(account_number: &str) -> String {
    let chars: Vec<char> = account_number.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// Seals `account_number` into `record` under a new data key.
pub fn seal_account_number(state: &AppState, tenant: TenantId, record: &mut BankAccountRecord, account_number: &str) -> Result<(), ApiError> {
    let ring = state.customers.keyring()?;
    let dek = DataKey::generate();
    let sealed = dek.seal(&record.json.id, account_number.as_bytes()).map_err(|e| crate::customers::key_fault(&e))?;
    let (version, wrapped) = ring.wrap(tenant, &record.json.id, &dek).map_err(|e| crate::customers::key_fault(&e))?;
    record.kek_version = version;
    record.wrapped_key = STANDARD.encode(wrapped);
    record.sealed_account_number = STANDARD.encode(sealed);
    record.json.account_number_last4 = last4(account_number);
    Ok(())
}

/// The account number in clear, for a file being cut (never logged, never answered).
pub fn open_account_number(state: &AppState, tenant: TenantId, record: &BankAccountRecord) -> Result<String, ApiError> {
    let ring = state.customers.keyring()?;
    let fault = |what: &str| ApiError::internal(&format!("bank account {}: {what}", record.json.id));
    let wrapped = STANDARD.decode(&record.wrapped_key).map_err(|_| fault("wrapped key is not base64"))?;
    let sealed = STANDARD.decode(&record.sealed_account_number).map_err(|_| fault("sealed number is not base64"))?;
    let dek = ring.unwrap(tenant, &record.json.id, record.kek_version, &wrapped).map_err(|e| crate::customers::key_fault(&e))?;
    let clear = dek.open(&record.json.id, &sealed).map_err(|e| crate::customers::key_fault(&e))?;
    String::from_utf8(clear).map_err(|_| fault("account number is not UTF-8"))
}

pub fn bank_account_row(tenant: TenantId, record: &BankAccountRecord, version: i64, created_at: i64) -> Result<AchRow, ApiError> {
    Ok(AchRow {
        id: record.json.id.clone(),
        tenant,
        status: record.json.status.clone(),
        lookup: Some(record.json.counterparty_id.clone()),
        external_id: None,
        version,
        data: encode(record)?,
        created_at,
    })
}

/// The tenant's bank account `id` with its row's version, or 404.
pub async fn load_bank_account(state: &AppState, tenant: TenantId, id: &str, param: &str) -> Result<(BankAccountRecord, AchRow), ApiError> {
    let missing = || ApiError::invalid(param, format!("{param} names no bank account of this environment"));
    if BankAccountId::parse(id).is_none() {
        return Err(missing());
    }
    let row = state.store.ach_get(AchTable::BankAccounts, tenant, id.to_owned()).await?.ok_or_else(missing)?;
    Ok((decode(&row.data)?, row))
}

async fn counterparty_json(state: &AppState, tenant: TenantId, record: CounterpartyRecord) -> Result<CounterpartyJson, ApiError> {
    let rows = state.store.ach_find(AchTable::BankAccounts, tenant, record.id.clone(), super::MAX_BANK_ACCOUNTS as i64).await?;
    let mut bank_accounts = rows.iter().map(|r| decode::<BankAccountRecord>(&r.data).map(|b| b.json)).collect::<Result<Vec<_>, _>>()?;
    bank_accounts.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(CounterpartyJson {
        id: record.id,
        object: String::from("counterparty"),
        name: record.name,
        customer_id: record.customer_id,
        bank_accounts,
        metadata: record.metadata,
        created_at: record.created_at,
    })
}

/// Creates a counterparty with its bank accounts.
#[utoipa::path(post, path = "/v1/counterparties", tag = "Payments", operation_id = "create_counterparty",
    params(crate::openapi::IdempotencyKey),
    request_body = CreateCounterpartyRequest,
    responses((status = 201, description = "The new counterparty.", body = CounterpartyJson)))]
pub async fn create(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::PaymentsWrite>,
    headers: HeaderMap,
    body: JsonBody<CreateCounterpartyRequest>,
) -> Result<Response, ApiError> {
    let keyed = keyed(&state, &principal, &headers, "/v1/counterparties", &body.canonical).await?;
    if let Some(replay) = keyed.replay {
        return Ok(replay);
    }
    let req = body.value;
    let tenant = principal.tenant;
    let name = checked_name("name", &req.name)?;
    let metadata = crate::wire::metadata_of("metadata", req.metadata)?;
    if req.bank_accounts.is_empty() || req.bank_accounts.len() > super::MAX_BANK_ACCOUNTS {
        return Err(ApiError::invalid("bank_accounts", format!("a counterparty has 1 to {} bank accounts", super::MAX_BANK_ACCOUNTS)));
    }
    if let Some(customer) = &req.customer_id {
        let found = match settle_core::ids::CustomerId::parse(customer) {
            Some(_) => state.store.get_customer(tenant, customer.clone()).await?.is_some(),
            None => false,
        };
        if !found {
            return Err(ApiError::invalid("customer_id", "customer_id names no customer of this environment"));
        }
    }
    let prenote_terms = if req.bank_accounts.iter().any(|b| b.verify) {
        let ask = super::prenotes::VerifyBankAccountRequest { test_clock: req.test_clock.clone(), ..Default::default() };
        Some(super::prenotes::terms(&state, &principal, ask, req.customer_id.is_some(), "").await?)
    } else if req.test_clock.is_some() {
        return Err(ApiError::invalid("test_clock", "test_clock is for the prenotes of bank accounts with verify: true"));
    } else {
        None
    };
    let now = state.clock.now();
    let at = super::test_clocks::now_of(&state, tenant, req.test_clock.as_deref()).await?;
    let ids = &state.ach.ids;
    let id = ids.counterparty().to_string();
    let mut events = Vec::new();
    let mut writes = Vec::with_capacity(1 + req.bank_accounts.len());
    let mut accounts = Vec::with_capacity(req.bank_accounts.len());
    for (i, b) in req.bank_accounts.iter().enumerate() {
        let routing = routing_number(&format!("bank_accounts[{i}].routing_number"), &b.routing_number)?;
        let number = account_number(&format!("bank_accounts[{i}].account_number"), &b.account_number)?;
        let holder = checked_name(&format!("bank_accounts[{i}].holder_name"), &b.holder_name)?;
        let mut record = BankAccountRecord {
            json: BankAccountJson {
                id: ids.bank_account().to_string(),
                object: String::from("bank_account"),
                counterparty_id: id.clone(),
                routing_number: routing.to_string(),
                account_number_last4: String::new(),
                account_type: b.account_type,
                holder_name: holder,
                status: String::from("active"),
                disabled_reason: None,
                notifications_of_change: Vec::new(),
                verification: super::prenotes::BankAccountVerificationJson::default(),
                created_at: now.to_rfc3339(),
            },
            kek_version: 0,
            wrapped_key: String::new(),
            sealed_account_number: String::new(),
        };
        seal_account_number(&state, tenant, &mut record, &number)?;
        if let (true, Some(terms)) = (b.verify, &prenote_terms) {
            let (prenote, prenote_events) = super::prenotes::start(&state, tenant, &mut record, terms, (at, now))?;
            writes.extend(prenote);
            events.extend(prenote_events);
            events.push(super::prenotes::verification_event(&state, tenant, &record.json, "unverified", 1, now)?);
        }
        writes.push(AchWrite::Insert(AchTable::BankAccounts, bank_account_row(tenant, &record, 1, now.micros())?));
        accounts.push(record.json);
    }
    let record = CounterpartyRecord { id: id.clone(), name, customer_id: req.customer_id, metadata, created_at: now.to_rfc3339() };
    writes.push(AchWrite::Insert(
        AchTable::Counterparties,
        AchRow {
            id: id.clone(),
            tenant,
            status: String::from("active"),
            lookup: None,
            external_id: None,
            version: 1,
            data: encode(&record)?,
            created_at: now.micros(),
        },
    ));
    let json = CounterpartyJson {
        id,
        object: String::from("counterparty"),
        name: record.name,
        customer_id: record.customer_id,
        bank_accounts: accounts,
        metadata: record.metadata,
        created_at: record.created_at,
    };
    let (response, bytes) = json_response(StatusCode::CREATED, &json)?;
    let idempotency = idempotency_record(tenant, keyed.key, StatusCode::CREATED, bytes, now);
    applied(state.store.ach_apply(writes, events, idempotency, now).await, || {
        super::conflict("payment_conflict", "a concurrent request wrote the same key; retry")
    })?;
    Ok(response)
}

/// A counterparty with its bank accounts.
#[utoipa::path(get, path = "/v1/counterparties/{id}", tag = "Payments", operation_id = "get_counterparty",
    params(("id" = String, Path, description = "A counterparty id (`cp_…`).")),
    responses((status = 200, description = "The counterparty.", body = CounterpartyJson)))]
pub async fn get(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsRead)?;
    if CounterpartyId::parse(&id).is_none() {
        return Err(ApiError::not_found("counterparty"));
    }
    let row = state.store.ach_get(AchTable::Counterparties, principal.tenant, id).await?.ok_or_else(|| ApiError::not_found("counterparty"))?;
    let json = counterparty_json(&state, principal.tenant, decode(&row.data)?).await?;
    Ok(axum::Json(json).into_response())
}

/// Counterparties, newest first.
#[utoipa::path(get, path = "/v1/counterparties", tag = "Payments", operation_id = "list_counterparties",
    params(PageParams),
    responses((status = 200, description = "A page of counterparties.", body = inline(crate::render::ListJson<CounterpartyJson>))))]
pub async fn list(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsRead)?;
    let params: PageParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| CounterpartyId::parse(id).is_some())?;
    let result = state.store.ach_list(AchTable::Counterparties, principal.tenant, None, page).await?;
    let mut items = Vec::with_capacity(result.items.len());
    for row in &result.items {
        items.push(counterparty_json(&state, principal.tenant, decode(&row.data)?).await?);
    }
    Ok(axum::Json(crate::render::list(items, result.has_more)).into_response())
}
