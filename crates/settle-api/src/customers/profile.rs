//! Customers themselves: create, read (masked without `customers:pii:read`),
//! list, patch, submit for verification, KYC history, and erasure.

use super::{Actor, Keyed, conflict, idempotency_record, json_response, key_fault, keyed, load_customer};
use crate::auth::{Scoped, require, scope};
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorType};
use crate::observe::{ClientIp, RequestId};
use crate::pagination::{page, parse_query};
use crate::path::IdPath;
use crate::state::AppState;
use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use settle_core::clock::Timestamp;
use settle_core::customers::geo::{Address, AddressInput};
use settle_core::customers::kyc::{self, Capability, Facts, KycStatus, RequirementError};
use settle_core::customers::tax_id::{TaxId, TaxIdType};
use settle_core::customers::{Invalid, contact, geo, names, tax_id};
use settle_core::ids::CustomerId;
use settle_core::metadata::Metadata;
use settle_core::tenancy::{Principal, Scope, TenantId};
use settle_store::customers::{CustomerEffects, CustomerRecord, DataKeyRecord, InsertCustomer, KycEventRecord};
use utoipa::{IntoParams, ToSchema};

// ---- wire shapes ----------------------------------------------------------

#[derive(Deserialize, ToSchema, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    /// ISO 3166-2 for US and CA (`CA` or `US-CA`); free text elsewhere.
    pub region: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[schema(example = "US")]
    pub country: Option<String>,
}

#[derive(Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct TaxIdRequest {
    /// `us_ssn`, `us_itin`, `us_ein` or `eu_vat` (with its country prefix).
    #[serde(rename = "type")]
    #[schema(example = "us_ssn")]
    pub kind: String,
    pub value: String,
}

/// The customer's fields; every one may arrive later (verification is incremental).
#[derive(Deserialize, ToSchema, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct CustomerFieldsRequest {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub legal_name: Option<String>,
    pub registration_number: Option<String>,
    pub incorporation_country: Option<String>,
    pub email: Option<String>,
    /// E.164, or national with the address's (or nationality's) country.
    pub phone: Option<String>,
    #[schema(format = Date)]
    pub date_of_birth: Option<String>,
    pub address: Option<AddressRequest>,
    pub tax_id: Option<TaxIdRequest>,
    pub nationality: Option<String>,
    pub external_id: Option<String>,
    #[serde(default, deserialize_with = "settle_core::metadata::deserialize_optional")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
}

/// A new customer: its type and any of its fields (see [`CustomerFieldsRequest`]).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomerRequest {
    /// `individual` or `business`.
    #[serde(rename = "type")]
    #[schema(example = "individual")]
    pub kind: String,
    /// Individuals only.
    pub given_name: Option<String>,
    /// Individuals only.
    pub family_name: Option<String>,
    /// Businesses only.
    pub legal_name: Option<String>,
    /// Businesses only.
    pub registration_number: Option<String>,
    /// Businesses only: ISO 3166-1 alpha-2.
    pub incorporation_country: Option<String>,
    pub email: Option<String>,
    /// E.164, or national with the address's (or nationality's) country.
    pub phone: Option<String>,
    /// Individuals only.
    #[schema(format = Date)]
    pub date_of_birth: Option<String>,
    pub address: Option<AddressRequest>,
    pub tax_id: Option<TaxIdRequest>,
    /// Individuals only: ISO 3166-1 alpha-2.
    pub nationality: Option<String>,
    /// Unique per environment: a retried create cannot make a second customer.
    pub external_id: Option<String>,
    #[serde(default, deserialize_with = "settle_core::metadata::deserialize_optional")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
}

impl CreateCustomerRequest {
    fn fields(&self) -> CustomerFieldsRequest {
        CustomerFieldsRequest {
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            legal_name: self.legal_name.clone(),
            registration_number: self.registration_number.clone(),
            incorporation_country: self.incorporation_country.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            date_of_birth: self.date_of_birth.clone(),
            address: self.address.clone(),
            tax_id: self.tax_id.clone(),
            nationality: self.nationality.clone(),
            external_id: self.external_id.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

/// The personal fields, as sealed under the customer's data key.
#[derive(Serialize, Deserialize, Clone, Default, PartialEq, Eq)]
pub struct Personal {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub legal_name: Option<String>,
    pub registration_number: Option<String>,
    pub incorporation_country: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub date_of_birth: Option<String>,
    pub address: Option<Address>,
    pub tax_id: Option<TaxId>,
    pub nationality: Option<String>,
}

impl std::fmt::Debug for Personal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Personal(<redacted>)")
    }
}

impl Personal {
    pub fn facts(&self, is_business: bool) -> Facts {
        Facts {
            is_business,
            names: if is_business { self.legal_name.is_some() } else { self.given_name.is_some() && self.family_name.is_some() },
            email: self.email.is_some(),
            phone: self.phone.is_some(),
            date_of_birth: self.date_of_birth.is_some(),
            address: self.address.is_some(),
            tax_id: self.tax_id.is_some(),
            nationality: self.nationality.is_some(),
            registration_number: self.registration_number.is_some(),
            incorporation_country: self.incorporation_country.is_some(),
        }
    }

    /// The names screening compares.
    pub fn screening_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(l) = &self.legal_name {
            out.push(l.clone());
        }
        let person: Vec<&str> = [self.given_name.as_deref(), self.family_name.as_deref()].into_iter().flatten().collect();
        if !person.is_empty() {
            out.push(person.join(" "));
        }
        out
    }
}

#[derive(Serialize, ToSchema)]
pub struct AddressJson {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TaxIdJson {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Serialize, ToSchema)]
pub struct RequirementErrorJson {
    pub field: String,
    pub code: String,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct RequirementsJson {
    pub currently_due: Vec<String>,
    pub eventually_due: Vec<String>,
    pub errors: Vec<RequirementErrorJson>,
}

/// `inactive`, `pending`, `active` or `suspended`, per capability.
#[derive(Serialize, ToSchema)]
pub struct CapabilitiesJson {
    pub ledger_hold: String,
    pub ach_debit: String,
    pub card_issuing: String,
}

#[derive(Serialize, ToSchema)]
pub struct KycJson {
    /// `unverified`, `pending`, `verified`, `rejected` or `needs_more_info`.
    pub status: String,
    pub requirements: RequirementsJson,
    pub capabilities: CapabilitiesJson,
}

#[derive(Serialize, ToSchema)]
pub struct ScreeningSummaryJson {
    /// `not_screened`, `clear`, `potential_match`, `confirmed_match` or `false_positive`.
    pub status: String,
}

/// A customer. Without `customers:pii:read`, personal fields are masked
/// (`personal_data: "masked"`); after erasure they are gone (`"erased"`).
#[derive(Serialize, ToSchema)]
#[schema(as = Customer)]
pub struct CustomerJson {
    #[schema(value_type = String, example = "customer")]
    pub object: &'static str,
    #[schema(example = "cus_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `full`, `masked` or `erased`.
    pub personal_data: &'static str,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub legal_name: Option<String>,
    pub registration_number: Option<String>,
    pub incorporation_country: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    #[schema(format = Date)]
    pub date_of_birth: Option<String>,
    pub address: Option<AddressJson>,
    pub tax_id: Option<TaxIdJson>,
    pub tax_id_last4: Option<String>,
    pub nationality: Option<String>,
    pub external_id: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    pub kyc: KycJson,
    pub screening: ScreeningSummaryJson,
    pub version: i64,
    #[schema(format = DateTime)]
    pub erased_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = KycEvent)]
pub struct KycEventJson {
    #[schema(value_type = String, example = "kyc_event")]
    pub object: &'static str,
    pub id: String,
    pub from_status: String,
    pub to_status: String,
    /// `api_key`, `sandbox_rules`, `operator` or `system`.
    pub decided_by: String,
    /// The API key id, `cli` or `system`.
    pub actor: String,
    pub reason: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

// ---- parsing --------------------------------------------------------------

fn invalid(param: &str, e: Invalid) -> ApiError {
    ApiError::invalid(param, format!("{param} {}", e.message))
}

fn today(now: Timestamp) -> time::Date {
    time::OffsetDateTime::from_unix_timestamp(now.micros() / 1_000_000).map(|d| d.date()).unwrap_or(time::Date::MIN)
}

/// Applies `req` onto `p`; returns the names of the fields that changed.
pub fn apply_fields(p: &mut Personal, req: &CustomerFieldsRequest, is_business: bool, now: Timestamp) -> Result<Vec<String>, ApiError> {
    let mut changed = Vec::new();
    let only = |present: bool, name: &str, kind: &str| {
        if present { Err(ApiError::invalid(name, format!("{name} applies to {kind} customers only"))) } else { Ok(()) }
    };
    if is_business {
        only(req.given_name.is_some(), "given_name", "individual")?;
        only(req.family_name.is_some(), "family_name", "individual")?;
        only(req.date_of_birth.is_some(), "date_of_birth", "individual")?;
        only(req.nationality.is_some(), "nationality", "individual")?;
    } else {
        only(req.legal_name.is_some(), "legal_name", "business")?;
        only(req.registration_number.is_some(), "registration_number", "business")?;
        only(req.incorporation_country.is_some(), "incorporation_country", "business")?;
    }
    let mut set = |slot: &mut Option<String>, value: String, name: &str| {
        if slot.as_ref() != Some(&value) {
            *slot = Some(value);
            changed.push(name.to_owned());
        }
    };
    if let Some(v) = &req.given_name {
        set(&mut p.given_name, names::parse_name(v).map_err(|e| invalid("given_name", e))?, "given_name");
    }
    if let Some(v) = &req.family_name {
        set(&mut p.family_name, names::parse_name(v).map_err(|e| invalid("family_name", e))?, "family_name");
    }
    if let Some(v) = &req.legal_name {
        set(&mut p.legal_name, names::parse_name(v).map_err(|e| invalid("legal_name", e))?, "legal_name");
    }
    if let Some(v) = &req.registration_number {
        let cleaned = settle_core::customers::clean_text(v, 50).map_err(|e| invalid("registration_number", e))?;
        set(&mut p.registration_number, cleaned, "registration_number");
    }
    if let Some(v) = &req.incorporation_country {
        set(&mut p.incorporation_country, geo::parse_country(v).map_err(|e| invalid("incorporation_country", e))?, "incorporation_country");
    }
    if let Some(v) = &req.nationality {
        set(&mut p.nationality, geo::parse_country(v).map_err(|e| invalid("nationality", e))?, "nationality");
    }
    if let Some(v) = &req.email {
        set(&mut p.email, contact::parse_email(v).map_err(|e| invalid("email", e))?, "email");
    }
    if let Some(v) = &req.date_of_birth {
        let date = settle_core::customers::past_date(v, today(now)).map_err(|e| invalid("date_of_birth", e))?;
        set(&mut p.date_of_birth, date.to_string(), "date_of_birth");
    }
    if let Some(a) = &req.address {
        let input = AddressInput {
            line1: a.line1.as_deref(),
            line2: a.line2.as_deref(),
            city: a.city.as_deref(),
            region: a.region.as_deref(),
            postal_code: a.postal_code.as_deref(),
            country: a.country.as_deref(),
        };
        let address = geo::parse_address(&input).map_err(|(field, e)| invalid(&format!("address.{field}"), e))?;
        if p.address.as_ref() != Some(&address) {
            p.address = Some(address);
            changed.push(String::from("address"));
        }
    }
    if let Some(v) = &req.phone {
        let country = p.address.as_ref().map(|a| a.country.clone()).or_else(|| p.nationality.clone()).or_else(|| p.incorporation_country.clone());
        let phone = contact::parse_phone(v, country.as_deref()).map_err(|e| invalid("phone", e))?;
        if p.phone.as_ref() != Some(&phone) {
            p.phone = Some(phone);
            changed.push(String::from("phone"));
        }
    }
    if let Some(t) = &req.tax_id {
        let kind = TaxIdType::parse(&t.kind).ok_or_else(|| ApiError::invalid("tax_id.type", "tax_id.type must be us_ssn, us_itin, us_ein or eu_vat"))?;
        if is_business == matches!(kind, TaxIdType::UsSsn | TaxIdType::UsItin) {
            let want = if is_business { "a business needs us_ein or eu_vat" } else { "an individual needs us_ssn, us_itin or eu_vat" };
            if !(kind == TaxIdType::EuVat) {
                return Err(ApiError::invalid("tax_id.type", format!("tax_id.type does not fit the customer: {want}")));
            }
        }
        let parsed = tax_id::parse_tax_id(kind, &t.value).map_err(|e| invalid("tax_id.value", e))?;
        if p.tax_id.as_ref() != Some(&parsed) {
            p.tax_id = Some(parsed);
            changed.push(String::from("tax_id"));
        }
    }
    Ok(changed)
}

fn parse_metadata(m: &Metadata) -> Result<(), ApiError> {
    settle_core::metadata::validate(m).map_err(|e| ApiError::invalid("metadata", e.to_string()))
}

fn parse_external_id(v: &str) -> Result<String, ApiError> {
    let t = v.trim();
    if t.is_empty() || t.len() > 255 || t.chars().any(char::is_control) {
        return Err(ApiError::invalid("external_id", "external_id must be 1 to 255 characters without control characters"));
    }
    Ok(t.to_owned())
}

// ---- sealing and rendering -------------------------------------------------

/// Opens a customer's personal fields; `None` once erased.
pub(crate) async fn unseal(state: &AppState, c: &CustomerRecord) -> Result<Option<Personal>, ApiError> {
    let Some(sealed) = &c.personal else { return Ok(None) };
    let ring = state.customers.keyring()?;
    let key = state.store.customer_data_key(c.tenant, c.id.clone()).await?.ok_or_else(|| ApiError::internal(&"a customer's data key is missing"))?;
    let dek = ring.unwrap(c.tenant, &c.id, key.kek_version, &key.wrapped).map_err(|e| key_fault(&e))?;
    let bytes = dek.open(&c.id, sealed).map_err(|e| key_fault(&e))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| ApiError::internal(&e))
}

/// The customer's data key (to seal new values under it).
pub(crate) async fn data_key(state: &AppState, tenant: TenantId, customer_id: &str) -> Result<Option<super::keyring::DataKey>, ApiError> {
    let ring = state.customers.keyring()?;
    let Some(key) = state.store.customer_data_key(tenant, customer_id.to_owned()).await? else { return Ok(None) };
    ring.unwrap(tenant, customer_id, key.kek_version, &key.wrapped).map(Some).map_err(|e| key_fault(&e))
}

fn seal_personal(dek: &super::keyring::DataKey, id: &str, p: &Personal) -> Result<Vec<u8>, ApiError> {
    let bytes = serde_json::to_vec(p).map_err(|e| ApiError::internal(&e))?;
    dek.seal(id, &bytes).map_err(|e| key_fault(&e))
}

fn indexes(state: &AppState, tenant: TenantId, p: &Personal) -> Result<(Option<String>, Option<String>), ApiError> {
    let ring = state.customers.keyring()?;
    let email = p.email.as_ref().map(|e| ring.blind_index(tenant, "email", &e.to_lowercase()));
    let tax = p.tax_id.as_ref().map(|t| ring.blind_index(tenant, "tax_id", &format!("{}:{}", t.kind.as_str(), t.value)));
    Ok((email, tax))
}

fn mask_name(name: &str) -> String {
    format!("{}***", name.chars().next().unwrap_or('*'))
}

fn rfc3339(micros: i64) -> String {
    Timestamp::from_micros(micros).to_rfc3339()
}

pub(crate) fn screening_blocks(status: &str) -> bool {
    matches!(status, "potential_match" | "confirmed_match")
}

pub fn customer_json(c: &CustomerRecord, personal: Option<&Personal>, full: bool) -> CustomerJson {
    let is_business = c.kind == "business";
    let facts = personal.map(|p| p.facts(is_business)).unwrap_or(Facts { is_business, ..Facts::default() });
    let errors: Vec<RequirementError> = serde_json::from_str(&c.kyc_errors).unwrap_or_default();
    let status = KycStatus::parse(&c.kyc_status).unwrap_or(KycStatus::Unverified);
    let r = kyc::requirements(&facts, errors);
    let blocks = screening_blocks(&c.screening_status);
    let cap = |k: Capability| kyc::capability_status(k, &facts, status, blocks).as_str().to_owned();
    let kyc = KycJson {
        status: c.kyc_status.clone(),
        requirements: RequirementsJson {
            currently_due: r.currently_due.iter().map(|s| s.to_string()).collect(),
            eventually_due: r.eventually_due.iter().map(|s| s.to_string()).collect(),
            errors: r.errors.into_iter().map(|e| RequirementErrorJson { field: e.field, code: e.code, reason: e.reason }).collect(),
        },
        capabilities: CapabilitiesJson {
            ledger_hold: cap(Capability::LedgerHold),
            ach_debit: cap(Capability::AchDebit),
            card_issuing: cap(Capability::CardIssuing),
        },
    };
    let empty = Personal::default();
    let p = personal.unwrap_or(&empty);
    let personal_data = if personal.is_none() && c.erased_at.is_some() {
        "erased"
    } else if full {
        "full"
    } else {
        "masked"
    };
    let address = p.address.as_ref().map(|a| {
        if full {
            AddressJson {
                line1: Some(a.line1.clone()),
                line2: a.line2.clone(),
                city: Some(a.city.clone()),
                region: a.region.clone(),
                postal_code: a.postal_code.clone(),
                country: Some(a.country.clone()),
            }
        } else {
            AddressJson { line1: None, line2: None, city: None, region: None, postal_code: None, country: Some(a.country.clone()) }
        }
    });
    let mask = |v: &Option<String>, f: fn(&str) -> String| if full { v.clone() } else { v.as_deref().map(f) };
    CustomerJson {
        object: "customer",
        id: c.id.clone(),
        kind: c.kind.clone(),
        personal_data,
        given_name: mask(&p.given_name, mask_name),
        family_name: mask(&p.family_name, mask_name),
        legal_name: p.legal_name.clone(),
        registration_number: p.registration_number.clone(),
        incorporation_country: p.incorporation_country.clone(),
        email: mask(&p.email, contact::mask_email),
        phone: mask(&p.phone, contact::mask_phone),
        date_of_birth: if full { p.date_of_birth.clone() } else { None },
        address,
        tax_id: if full { p.tax_id.as_ref().map(|t| TaxIdJson { kind: t.kind.as_str().to_owned(), value: t.display() }) } else { None },
        tax_id_last4: p.tax_id.as_ref().map(TaxId::last4),
        nationality: if full { p.nationality.clone() } else { None },
        external_id: c.external_id.clone(),
        metadata: serde_json::from_str(&c.metadata).unwrap_or_default(),
        kyc,
        screening: ScreeningSummaryJson { status: c.screening_status.clone() },
        version: c.version,
        erased_at: c.erased_at.map(rfc3339),
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
    }
}

fn sees_pii(principal: &Principal) -> bool {
    principal.has_scope(Scope::CustomersPiiRead)
}

// ---- handlers -------------------------------------------------------------

#[expect(clippy::too_many_arguments, reason = "one history record's fields, named at each call")]
fn kyc_event(state: &AppState, customer_id: &str, from: &str, to: KycStatus, decided_by: &str, actor: &str, reason: &str, now: Timestamp) -> KycEventRecord {
    KycEventRecord {
        id: state.customers.ids.kyc_event().to_string(),
        customer_id: customer_id.to_owned(),
        from_status: from.to_owned(),
        to_status: to.as_str().to_owned(),
        decided_by: decided_by.to_owned(),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
        created_at: now.micros(),
    }
}

/// Creates a customer. Fields are normalized (see docs/compliance.md) and
/// the customer is screened against the loaded sanctions lists.
#[utoipa::path(post, path = "/v1/customers", tag = "Customers", operation_id = "create_customer",
    params(crate::openapi::IdempotencyKey),
    request_body = CreateCustomerRequest,
    responses((status = 201, description = "The new customer.", body = CustomerJson)))]
pub async fn create(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::CustomersWrite>,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    body: JsonBody<CreateCustomerRequest>,
) -> Result<Response, ApiError> {
    let Keyed { key, replay, _guard } = keyed(&state, &principal, &headers, "/v1/customers", &body.canonical).await?;
    if let Some(r) = replay {
        return Ok(r);
    }
    let ring = state.customers.keyring()?;
    let req = &body.value;
    let fields_req = req.fields();
    let is_business = match req.kind.as_str() {
        "individual" => false,
        "business" => true,
        _ => return Err(ApiError::invalid("type", "type must be individual or business")),
    };
    let now = state.clock.now();
    let mut personal = Personal::default();
    let mut fields = apply_fields(&mut personal, &fields_req, is_business, now)?;
    let metadata = fields_req.metadata.clone().unwrap_or_default();
    parse_metadata(&metadata)?;
    let external_id = fields_req.external_id.as_deref().map(parse_external_id).transpose()?;
    if external_id.is_some() {
        fields.push(String::from("external_id"));
    }
    let tenant = principal.tenant;
    let id = state.customers.ids.customer().to_string();
    let dek = super::keyring::DataKey::generate();
    let (kek_version, wrapped) = ring.wrap(tenant, &id, &dek).map_err(|e| key_fault(&e))?;
    let (email_index, tax_id_index) = indexes(&state, tenant, &personal)?;
    let screening = super::screening::screen(&state, tenant, &id, &personal, "create", now).await?;
    let actor = Actor::of(&principal, &request_id, &headers, client);
    let mut record = CustomerRecord {
        id: id.clone(),
        tenant,
        kind: req.kind.clone(),
        kyc_status: KycStatus::Unverified.as_str().to_owned(),
        kyc_errors: String::from("[]"),
        screening_status: screening.as_ref().map_or_else(|| String::from("not_screened"), |s| s.status.clone()),
        external_id,
        metadata: serde_json::to_string(&metadata).map_err(|e| ApiError::internal(&e))?,
        personal: Some(seal_personal(&dek, &id, &personal)?),
        email_index,
        tax_id_index,
        version: 1,
        erased_at: None,
        created_at: now.micros(),
        updated_at: now.micros(),
    };
    let mut audit = vec![actor.audit(&state.customers.ids, "customer.created", ("customer", &id), fields, None, now)];
    if let Some(s) = &screening {
        audit.push(actor.audit(
            &state.customers.ids,
            "screening.created",
            ("screening", &s.id),
            vec![String::from("status")],
            Some(format!("trigger create: {}", s.status)),
            now,
        ));
    }
    let (response, bytes) = json_response(StatusCode::CREATED, &customer_json(&record, Some(&personal), sees_pii(&principal)))?;
    let bytes = super::seal_body(Some((&id, &dek)), bytes)?;
    let effects = CustomerEffects { kyc_events: Vec::new(), screening, audit, idempotency: idempotency_record(tenant, key, StatusCode::CREATED, bytes, now) };
    let data_key = DataKeyRecord { customer_id: id.clone(), tenant, kek_version, wrapped };
    match state.store.insert_customer(record.clone(), data_key, effects).await? {
        InsertCustomer::Created => Ok(response),
        InsertCustomer::DuplicateExternalId(existing) => {
            record.id = existing.clone();
            Err(conflict("duplicate_external_id", format!("external_id belongs to customer {existing}")).with_param("external_id"))
        }
    }
}

/// A customer; personal fields masked unless the key has `customers:pii:read`.
#[utoipa::path(get, path = "/v1/customers/{id}", tag = "Customers", operation_id = "get_customer",
    params(("id" = String, Path, description = "A customer id (`cus_…`).")),
    responses((status = 200, description = "The customer.", body = CustomerJson)))]
pub async fn get(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersRead)?;
    let c = load_customer(&state, principal.tenant, &id).await?;
    let p = unseal(&state, &c).await?;
    Ok(axum::Json(customer_json(&c, p.as_ref(), sees_pii(&principal))).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CustomerListParams {
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
    /// Only customers with this email (matched through a blind index; needs `customers:pii:read`).
    pub email: Option<String>,
    /// Only customers with this tax id value (`us_ssn:123-45-6789` form: type, colon, value; needs `customers:pii:read`).
    pub tax_id: Option<String>,
}

/// Customers, newest first; lookups by email or tax id go through blind indexes.
#[utoipa::path(get, path = "/v1/customers", tag = "Customers", operation_id = "list_customers",
    params(CustomerListParams),
    responses((status = 200, description = "A page of customers.", body = inline(crate::render::ListJson<CustomerJson>))))]
pub async fn list(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersRead)?;
    let params: CustomerListParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| CustomerId::parse(id).is_some())?;
    let tenant = principal.tenant;
    let mut email_index = None;
    let mut tax_index = None;
    if params.email.is_some() || params.tax_id.is_some() {
        // Searching by a personal value reveals whether it belongs to a customer.
        require(&principal, Scope::CustomersPiiRead)?;
        let ring = state.customers.keyring()?;
        if let Some(e) = &params.email {
            let email = contact::parse_email(e).map_err(|e| invalid("email", e))?;
            email_index = Some(ring.blind_index(tenant, "email", &email.to_lowercase()));
        }
        if let Some(t) = &params.tax_id {
            let (kind, value) = t.split_once(':').ok_or_else(|| ApiError::invalid("tax_id", "tax_id must be type:value, such as us_ssn:123-45-6789"))?;
            let kind = TaxIdType::parse(kind).ok_or_else(|| ApiError::invalid("tax_id", "tax_id's type must be us_ssn, us_itin, us_ein or eu_vat"))?;
            let parsed = tax_id::parse_tax_id(kind, value).map_err(|e| invalid("tax_id", e))?;
            tax_index = Some(ring.blind_index(tenant, "tax_id", &format!("{}:{}", parsed.kind.as_str(), parsed.value)));
        }
    }
    let result = state.store.list_customers(tenant, email_index, tax_index, page).await?;
    let mut items = Vec::with_capacity(result.items.len());
    for c in &result.items {
        let p = unseal(&state, c).await?;
        items.push(customer_json(c, p.as_ref(), sees_pii(&principal)));
    }
    Ok(axum::Json(crate::render::list(items, result.has_more)).into_response())
}

/// Changes fields (absent fields stay as they are). A change of identity
/// fields after a KYC decision returns the customer to `unverified`, and
/// a change of names, date of birth or nationality screens again.
#[utoipa::path(patch, path = "/v1/customers/{id}", tag = "Customers", operation_id = "update_customer",
    params(("id" = String, Path, description = "A customer id (`cus_…`)."), crate::openapi::IdempotencyKey),
    request_body = CustomerFieldsRequest,
    responses((status = 200, description = "The customer after the change.", body = CustomerJson)))]
pub async fn update(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::CustomersWrite>,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<CustomerFieldsRequest>,
) -> Result<Response, ApiError> {
    let Keyed { key, replay, _guard } = keyed(&state, &principal, &headers, &format!("PATCH /v1/customers/{id}"), &body.canonical).await?;
    if let Some(r) = replay {
        return Ok(r);
    }
    let now = state.clock.now();
    let before = load_customer(&state, principal.tenant, &id).await?;
    if before.erased_at.is_some() {
        return Err(conflict("customer_erased", "this customer's personal data was erased; it cannot be changed"));
    }
    let mut personal = unseal(&state, &before).await?.unwrap_or_default();
    let is_business = before.kind == "business";
    let mut fields = apply_fields(&mut personal, &body.value, is_business, now)?;
    let mut after = before.clone();
    if let Some(m) = &body.value.metadata {
        parse_metadata(m)?;
        let text = serde_json::to_string(m).map_err(|e| ApiError::internal(&e))?;
        if text != after.metadata {
            after.metadata = text;
            fields.push(String::from("metadata"));
        }
    }
    if let Some(e) = &body.value.external_id {
        let e = parse_external_id(e)?;
        if after.external_id.as_ref() != Some(&e) {
            after.external_id = Some(e);
            fields.push(String::from("external_id"));
        }
    }
    let actor = Actor::of(&principal, &request_id, &headers, client);
    let mut effects = CustomerEffects::default();
    let dek = data_key(&state, after.tenant, &after.id).await?.ok_or_else(|| ApiError::internal(&"a customer's data key is missing"))?;
    if !fields.is_empty() {
        after.personal = Some(seal_personal(&dek, &after.id, &personal)?);
        (after.email_index, after.tax_id_index) = indexes(&state, after.tenant, &personal)?;
        // Errors about a field are answered by changing it.
        let mut errors: Vec<RequirementError> = serde_json::from_str(&after.kyc_errors).unwrap_or_default();
        errors.retain(|e| !fields.contains(&e.field));
        after.kyc_errors = serde_json::to_string(&errors).map_err(|e| ApiError::internal(&e))?;
        let identity = ["given_name", "family_name", "legal_name", "date_of_birth", "tax_id", "address", "registration_number", "nationality"];
        if fields.iter().any(|f| identity.contains(&f.as_str())) {
            let from = KycStatus::parse(&before.kyc_status).unwrap_or(KycStatus::Unverified);
            let to = kyc::after_identity_change(from);
            if to != from {
                after.kyc_status = to.as_str().to_owned();
                effects.kyc_events.push(kyc_event(
                    &state,
                    &after.id,
                    from.as_str(),
                    to,
                    "system",
                    &actor.actor,
                    &format!("identity fields changed: {}", fields.join(", ")),
                    now,
                ));
            }
        }
        let rescreen = ["given_name", "family_name", "legal_name", "date_of_birth", "nationality", "address"];
        if fields.iter().any(|f| rescreen.contains(&f.as_str())) {
            effects.screening = super::screening::screen(&state, after.tenant, &after.id, &personal, "update", now).await?;
            if let Some(s) = &effects.screening {
                after.screening_status = s.status.clone();
                effects.audit.push(actor.audit(
                    &state.customers.ids,
                    "screening.created",
                    ("screening", &s.id),
                    vec![String::from("status")],
                    Some(format!("trigger update: {}", s.status)),
                    now,
                ));
            }
        }
        after.version += 1;
        after.updated_at = now.micros();
        effects.audit.insert(0, actor.audit(&state.customers.ids, "customer.updated", ("customer", &after.id), fields, None, now));
    }
    let (response, bytes) = json_response(StatusCode::OK, &customer_json(&after, Some(&personal), sees_pii(&principal)))?;
    if effects.audit.is_empty() {
        return Ok(response);
    }
    let bytes = super::seal_body(Some((&after.id, &dek)), bytes)?;
    effects.idempotency = idempotency_record(after.tenant, key, StatusCode::OK, bytes, now);
    if !state.store.update_customer(after.clone(), before.version, effects).await? {
        if let Some(e) = &after.external_id
            && let Some(other) = state.store.customer_by_external_id(after.tenant, e.clone()).await?.filter(|o| o.id != after.id)
        {
            return Err(conflict("duplicate_external_id", format!("external_id belongs to customer {}", other.id)).with_param("external_id"));
        }
        return Err(conflict("customer_conflict", "the customer changed while this request was being decided; read it again and retry"));
    }
    if before.screening_status != after.screening_status {
        // Whether its accounts may move money just changed.
        state.customers.blocked.invalidate(after.tenant);
    }
    Ok(response)
}

/// Submits the customer for verification. In the sandbox, documented magic
/// values decide at once (docs/sandbox.md); elsewhere it stays `pending`.
#[utoipa::path(post, path = "/v1/customers/{id}/verify", tag = "Customers", operation_id = "verify_customer",
    params(("id" = String, Path, description = "A customer id (`cus_…`)."), crate::openapi::IdempotencyKey),
    responses((status = 200, description = "The customer with its new KYC status.", body = CustomerJson)))]
pub async fn verify(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::CustomersWrite>,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<EmptyRequest>,
) -> Result<Response, ApiError> {
    let Keyed { key, replay, _guard } = keyed(&state, &principal, &headers, &format!("/v1/customers/{id}/verify"), &body.canonical).await?;
    if let Some(r) = replay {
        return Ok(r);
    }
    let now = state.clock.now();
    let before = load_customer(&state, principal.tenant, &id).await?;
    let personal = unseal(&state, &before).await?.ok_or_else(|| conflict("customer_erased", "this customer's personal data was erased"))?;
    let facts = personal.facts(before.kind == "business");
    let errors: Vec<RequirementError> = serde_json::from_str(&before.kyc_errors).unwrap_or_default();
    let from = KycStatus::parse(&before.kyc_status).unwrap_or(KycStatus::Unverified);
    let requirements = kyc::requirements(&facts, errors);
    let pending = kyc::submit(from, &requirements).map_err(|e| match e {
        kyc::TransitionError::RequirementsDue(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::InvalidRequestError, "verification_requirements_due", e.to_string())
                .with_param("kyc.requirements.currently_due")
        }
        other => conflict("invalid_kyc_transition", other.to_string()),
    })?;
    let actor = Actor::of(&principal, &request_id, &headers, client);
    let mut after = before.clone();
    let mut effects = CustomerEffects::default();
    effects.kyc_events.push(kyc_event(&state, &id, from.as_str(), pending, "api_key", &actor.actor, "submitted for verification", now));
    after.kyc_status = pending.as_str().to_owned();
    after.kyc_errors = String::from("[]");
    effects.audit.push(actor.audit(&state.customers.ids, "customer.verification_submitted", ("customer", &id), vec![String::from("kyc.status")], None, now));
    if principal.environment == settle_core::tenancy::Environment::Sandbox {
        let name = if before.kind == "business" { personal.legal_name.clone() } else { personal.family_name.clone() };
        let tax = personal.tax_id.as_ref().map(|t| t.value.clone());
        if let Some((decision, errors, reason)) = kyc::sandbox_decision(name.as_deref().unwrap_or(""), tax.as_deref()) {
            let decided = kyc::decide(pending, decision).map_err(|e| ApiError::internal(&e))?;
            effects.kyc_events.push(kyc_event(&state, &id, pending.as_str(), decided, "sandbox_rules", "sandbox", reason, now));
            effects.audit.push(Actor::system(after.tenant, "sandbox").audit(
                &state.customers.ids,
                "customer.kyc_decided",
                ("customer", &id),
                vec![String::from("kyc.status")],
                Some(reason.to_owned()),
                now,
            ));
            after.kyc_status = decided.as_str().to_owned();
            after.kyc_errors = serde_json::to_string(&errors).map_err(|e| ApiError::internal(&e))?;
        }
    }
    after.version += 1;
    after.updated_at = now.micros();
    finish(&state, &principal, before.version, after, Some(&personal), effects, key, now).await
}

/// Writes `after` with its effects and answers with it.
#[expect(clippy::too_many_arguments, reason = "one write's parts, passed once")]
async fn finish(
    state: &AppState,
    principal: &Principal,
    expected_version: i64,
    after: CustomerRecord,
    personal: Option<&Personal>,
    mut effects: CustomerEffects,
    key: Option<(String, String)>,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let (response, bytes) = json_response(StatusCode::OK, &customer_json(&after, personal, sees_pii(principal)))?;
    if key.is_some() {
        let dek = data_key(state, after.tenant, &after.id).await?;
        let bytes = super::seal_body(dek.as_ref().map(|d| (after.id.as_str(), d)), bytes)?;
        effects.idempotency = idempotency_record(after.tenant, key, StatusCode::OK, bytes, now);
    }
    if !state.store.update_customer(after, expected_version, effects).await? {
        return Err(conflict("customer_conflict", "the customer changed while this request was being decided; read it again and retry"));
    }
    Ok(response)
}

/// No fields: the body may be empty or `{}`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

/// `POST /v1/test_helpers/customers/{id}/decide`: a reviewer's decision on a pending verification.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    /// `verified`, `rejected` or `needs_more_info`.
    pub decision: String,
    /// Why, for the history and the audit (1 to 500 characters).
    pub reason: String,
    /// For `needs_more_info`: the field that needs attention.
    pub field: Option<String>,
}

/// Decides a pending verification (sandbox keys only: the stand-in for a
/// KYC provider's answer). Live and sandbox reviewers use
/// `POST /v1/customers/{id}/kyc_decisions`; this helper runs the same decision.
#[utoipa::path(post, path = "/v1/test_helpers/customers/{id}/decide", tag = "Test helpers", operation_id = "decide_customer_verification",
    params(("id" = String, Path, description = "A customer id (`cus_…`)."), crate::openapi::IdempotencyKey),
    request_body = DecideRequest,
    responses((status = 200, description = "The customer with its new KYC status.", body = CustomerJson)))]
pub async fn decide(
    State(state): State<AppState>,
    crate::test_helpers::SandboxWriter(principal): crate::test_helpers::SandboxWriter,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<DecideRequest>,
) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersWrite)?;
    let Keyed { key, replay, _guard } = keyed(&state, &principal, &headers, &format!("/v1/test_helpers/customers/{id}/decide"), &body.canonical).await?;
    if let Some(r) = replay {
        return Ok(r);
    }
    let decision =
        kyc::Decision::parse(&body.value.decision).ok_or_else(|| ApiError::invalid("decision", "decision must be verified, rejected or needs_more_info"))?;
    let reason = super::reason_of(&body.value.reason, "reason")?;
    let fields = match decision {
        kyc::Decision::NeedsMoreInfo => body.value.field.clone().into_iter().collect(),
        _ => Vec::new(),
    };
    let actor = Actor::of(&principal, &request_id, &headers, client);
    decide_pending(&state, &principal, &actor, &id, decision, reason, fields, key).await
}

/// `POST /v1/customers/{id}/kyc_decisions`: a reviewer's decision.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KycDecisionRequest {
    /// `verified`, `rejected` or `needs_more_info`.
    #[schema(example = "verified")]
    pub outcome: String,
    /// Why, for the KYC history and the audit trail (1 to 500 characters;
    /// say what was checked, never copy personal values into it).
    #[schema(example = "passport and proof of address checked against the application")]
    pub reason: String,
    /// For `needs_more_info` only: the fields the customer must provide or
    /// correct (`given_name`, `family_name`, `legal_name`, `date_of_birth`,
    /// `address`, `tax_id`, `registration_number`), at most one each.
    pub requirements: Option<Vec<String>>,
}

/// Records a reviewer's decision on a pending verification, in live and in
/// the sandbox: who decided (the API key) and why are kept in the KYC
/// history and the compliance audit trail. Needs the `customers:review`
/// scope, which `customers:write` does not imply, so that the key that
/// submits a customer's data cannot also approve it.
#[utoipa::path(post, path = "/v1/customers/{id}/kyc_decisions", tag = "Customers", operation_id = "create_kyc_decision",
    params(("id" = String, Path, description = "A customer id (`cus_…`)."), crate::openapi::IdempotencyKey),
    request_body = KycDecisionRequest,
    responses((status = 200, description = "The customer with its new KYC status.", body = CustomerJson)))]
pub async fn kyc_decision(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::CustomersReview>,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<KycDecisionRequest>,
) -> Result<Response, ApiError> {
    let Keyed { key, replay, _guard } = keyed(&state, &principal, &headers, &format!("/v1/customers/{id}/kyc_decisions"), &body.canonical).await?;
    if let Some(r) = replay {
        return Ok(r);
    }
    let decision =
        kyc::Decision::parse(&body.value.outcome).ok_or_else(|| ApiError::invalid("outcome", "outcome must be verified, rejected or needs_more_info"))?;
    let reason = super::reason_of(&body.value.reason, "reason")?;
    let fields = match (decision, body.value.requirements.clone()) {
        (_, None) => Vec::new(),
        (kyc::Decision::NeedsMoreInfo, Some(fields)) => {
            let mut seen = Vec::with_capacity(fields.len());
            for field in fields {
                if !kyc::REQUESTABLE_FIELDS.contains(&field.as_str()) || seen.contains(&field) {
                    return Err(ApiError::invalid("requirements", format!("requirements lists each of {} at most once", kyc::REQUESTABLE_FIELDS.join(", "))));
                }
                seen.push(field);
            }
            seen
        }
        (_, Some(_)) => return Err(ApiError::invalid("requirements", "requirements are given only with the outcome needs_more_info")),
    };
    let actor = Actor::of(&principal, &request_id, &headers, client);
    decide_pending(&state, &principal, &actor, &id, decision, reason, fields, key).await
}

/// Applies a decision to a pending verification: the customer's new status
/// (409 `invalid_kyc_transition` unless it is `pending`), a KYC history
/// record naming the deciding key and the reason, and a
/// `customer.kyc_decided` audit record, in one transaction.
#[expect(clippy::too_many_arguments, reason = "one decision's parts, passed once")]
async fn decide_pending(
    state: &AppState,
    principal: &Principal,
    actor: &Actor,
    id: &str,
    decision: kyc::Decision,
    reason: String,
    fields: Vec<String>,
    key: Option<(String, String)>,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let before = load_customer(state, principal.tenant, id).await?;
    let from = KycStatus::parse(&before.kyc_status).unwrap_or(KycStatus::Unverified);
    let to = kyc::decide(from, decision).map_err(|e| conflict("invalid_kyc_transition", e.to_string()))?;
    let mut after = before.clone();
    after.kyc_status = to.as_str().to_owned();
    let errors: Vec<RequirementError> =
        fields.into_iter().map(|field| RequirementError { field, code: String::from("more_info_requested"), reason: reason.clone() }).collect();
    after.kyc_errors = serde_json::to_string(&errors).map_err(|e| ApiError::internal(&e))?;
    after.version += 1;
    after.updated_at = now.micros();
    let effects = CustomerEffects {
        kyc_events: vec![kyc_event(state, id, from.as_str(), to, "operator", &actor.actor, &reason, now)],
        audit: vec![actor.audit(&state.customers.ids, "customer.kyc_decided", ("customer", id), vec![String::from("kyc.status")], Some(reason.clone()), now)],
        ..CustomerEffects::default()
    };
    let personal = unseal(state, &before).await?;
    finish(state, principal, before.version, after, personal.as_ref(), effects, key, now).await
}

/// The customer's KYC status changes, oldest first: who or what decided, and why.
#[utoipa::path(get, path = "/v1/customers/{id}/kyc_events", tag = "Customers", operation_id = "list_customer_kyc_events",
    params(("id" = String, Path, description = "A customer id (`cus_…`).")),
    responses((status = 200, description = "The history.", body = inline(crate::render::ListJson<KycEventJson>))))]
pub async fn kyc_history(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersRead)?;
    let c = load_customer(&state, principal.tenant, &id).await?;
    let events = state.store.kyc_events(c.tenant, c.id).await?;
    let items: Vec<KycEventJson> = events
        .into_iter()
        .map(|e| KycEventJson {
            object: "kyc_event",
            id: e.id,
            from_status: e.from_status,
            to_status: e.to_status,
            decided_by: e.decided_by,
            actor: e.actor,
            reason: e.reason,
            created_at: rfc3339(e.created_at),
        })
        .collect();
    Ok(axum::Json(crate::render::list(items, false)).into_response())
}

/// Erases the customer's personal data by destroying its data key
/// (crypto-shredding). The customer id, KYC history, screenings, consents'
/// facts and the audit trail remain; nothing personal can be read again.
#[utoipa::path(delete, path = "/v1/customers/{id}/personal_data", tag = "Customers", operation_id = "erase_customer_personal_data",
    params(("id" = String, Path, description = "A customer id (`cus_…`)."), crate::openapi::IdempotencyKey),
    responses((status = 200, description = "The customer after erasure.", body = CustomerJson)))]
pub async fn erase(
    State(state): State<AppState>,
    principal: Principal,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersWrite)?;
    let Keyed { key, replay, _guard } = keyed(&state, &principal, &headers, &format!("DELETE /v1/customers/{id}/personal_data"), b"").await?;
    if let Some(r) = replay {
        return Ok(r);
    }
    let now = state.clock.now();
    let before = load_customer(&state, principal.tenant, &id).await?;
    if before.erased_at.is_some() {
        return Ok(axum::Json(customer_json(&before, None, sees_pii(&principal))).into_response());
    }
    let actor = Actor::of(&principal, &request_id, &headers, client);
    let mut after = before.clone();
    after.personal = None;
    after.email_index = None;
    after.tax_id_index = None;
    after.erased_at = Some(now.micros());
    after.version += 1;
    after.updated_at = now.micros();
    let (response, bytes) = json_response(StatusCode::OK, &customer_json(&after, None, sees_pii(&principal)))?;
    let effects = CustomerEffects {
        audit: vec![actor.audit(&state.customers.ids, "customer.personal_data_erased", ("customer", &id), vec![String::from("personal_data")], None, now)],
        idempotency: idempotency_record(after.tenant, key, StatusCode::OK, bytes, now),
        ..CustomerEffects::default()
    };
    if !state.store.erase_customer(after, before.version, effects).await? {
        return Err(conflict("customer_conflict", "the customer changed while this request was being decided; read it again and retry"));
    }
    Ok(response)
}
