//! The event catalog: every event type, what it means, and a JSON Schema
//! (draft 2020-12) of its event in each API version.
//!
//! Schemas are generated, not written: the object's schema is the API's own
//! (from the OpenAPI document, so it cannot drift from what `render` emits),
//! and an older version's is derived by running that version's response
//! transformations over the object's field names, the very code that
//! reshapes responses. `docs/events.md` is generated from here
//! ([`markdown`]); a test fails when it is stale, and another validates
//! every event the server emits against its schema.

use crate::versions::{self, json::Json};
use serde::Serialize;
use serde_json::{Map, Value, json};
use settle_core::api_version::ApiVersion;
use std::sync::OnceLock;
use utoipa::ToSchema;

/// One event type.
pub struct EventType {
    pub name: &'static str,
    /// The `object` of `data.object`.
    pub object: &'static str,
    /// The OpenAPI schema of `data.object`.
    schema: &'static str,
    /// Whether its events carry `data.previous_attributes`.
    pub is_update: bool,
    pub description: &'static str,
}

/// Every event type, in the order the docs list them.
pub static TYPES: &[EventType] = &[
    EventType {
        name: "ledger.account.created",
        object: "account",
        schema: "Account",
        is_update: false,
        description: "An account was opened. Its balances are zero; there is no event per balance change (read balances, or follow the transactions).",
    },
    EventType {
        name: "ledger.transaction.created",
        object: "transaction",
        schema: "Transaction",
        is_update: false,
        description: "A transaction was created, `posted` or `pending` (a hold). A batch creates one per transaction; a reversal creates one for the reversing transaction.",
    },
    EventType {
        name: "ledger.transaction.posted",
        object: "transaction",
        schema: "Transaction",
        is_update: true,
        description: "A pending transaction was posted (captured), possibly for less than it held. `previous_attributes` holds its pending state.",
    },
    EventType {
        name: "ledger.transaction.voided",
        object: "transaction",
        schema: "Transaction",
        is_update: true,
        description: "A pending transaction was voided, on request or because it expired (`void_reason`). `previous_attributes` holds its pending state.",
    },
    EventType {
        name: "ledger.transaction.reversed",
        object: "transaction",
        schema: "Transaction",
        is_update: true,
        description: "A posted transaction was reversed: `reversed_by` names the new, reversing transaction (which has its own `ledger.transaction.created`).",
    },
    EventType {
        name: "payment.created",
        object: "payment",
        schema: "Payment",
        is_update: false,
        description: "A payment was created (`pending`): its ledger hold (credit) or pending credit (debit) is in place.",
    },
    EventType {
        name: "payment.submitted",
        object: "payment",
        schema: "Payment",
        is_update: true,
        description: "A payment went into a NACHA file (`trace_number`, `ach_file_id`, `effective_date` are set); a credit's hold is posted.",
    },
    EventType {
        name: "payment.settled",
        object: "payment",
        schema: "Payment",
        is_update: true,
        description: "A payment settled on its effective date; a debit's money is posted to the ledger account.",
    },
    EventType {
        name: "payment.returned",
        object: "payment",
        schema: "Payment",
        is_update: true,
        description: "The receiving bank returned a payment (`return_code`, `return_reason`); its ledger effect is undone (`reversal_transaction_id`, or the pending credit voided).",
    },
    EventType {
        name: "payment.canceled",
        object: "payment",
        schema: "Payment",
        is_update: true,
        description: "A pending payment was canceled; its hold is voided.",
    },
    EventType {
        name: "payment.failed",
        object: "payment",
        schema: "Payment",
        is_update: true,
        description: "A pending payment could not be filed (its bank account was disabled meanwhile); its hold is voided.",
    },
    EventType {
        name: "payment.return_dishonored",
        object: "payment",
        schema: "Payment",
        is_update: true,
        description: "A late return of a payment was dishonored (R68, untimely) and the dishonored return went into a NACHA file: `dishonored_return` is `submitted` with its `ach_file_id` and `trace_number`; the payment keeps its status and money. `previous_attributes.dishonored_return.status` is `pending`.",
    },
    EventType {
        name: "payment.ledger_repaired",
        object: "payment",
        schema: "Payment",
        is_update: true,
        description: "A ledger effect refused after a payment moved (`ledger_issue`: a hold not voided or posted, a pending credit not posted, an availability hold not placed, a return not reversed) was applied by the repair sweep: the ledger agrees with the payment's status again, `ledger_issue` is cleared and the repair is appended to `ledger_repairs`. `previous_attributes.ledger_issue` holds the issue.",
    },
    EventType {
        name: "counterparty.bank_account.verification_updated",
        object: "bank_account",
        schema: "BankAccountJson",
        is_update: true,
        description: "A bank account's verification by prenote changed: `pending` (a prenote was asked for), `verified` (three banking days after the prenote settled, without a return), `failed` (the prenote was returned, `verification.return_code`, or could not be filed) or `unverified` again (the prenote was canceled). `previous_attributes.verification.status` holds the status before.",
    },
    EventType {
        name: "compliance_review.opened",
        object: "compliance_review",
        schema: "ComplianceReview",
        is_update: false,
        description: "The ACH rail opened a compliance review on a return: an unauthorized debit (R05, R07, R10, R11, R29, R37, R51; `kind: ach_unauthorized_return`) or a frozen account (R16; `ach_account_frozen`). Written in the return's transaction.",
    },
    EventType {
        name: "compliance_review.closed",
        object: "compliance_review",
        schema: "ComplianceReview",
        is_update: true,
        description: "A reviewer closed a compliance review (`decision`: `cleared` or `confirmed`); clearing an `ach_account_frozen` review unfroze its bank account. `previous_attributes.status` is `open`.",
    },
    EventType {
        name: "ach.return_rate.threshold_crossed",
        object: "ach_return_rates",
        schema: "AchReturnRates",
        is_update: true,
        description: "An originator's ACH debit return rate over a rolling 60 days crossed a NACHA threshold (unauthorized 0.5%, administrative 3%, overall 15%): `exceeded` lists the rates above theirs now, `previous_attributes.exceeded` those before. Once per crossing; again only after the rate went back under and crossed anew.",
    },
    EventType {
        name: "webhook_endpoint.disabled",
        object: "webhook_endpoint",
        schema: "WebhookEndpoint",
        is_update: true,
        description: "Settle disabled a webhook endpoint: it answered `410 Gone` (`disabled_reason: gone`) or failed for 5 days straight (`failing`). It is not sent to the endpoint it is about.",
    },
];

pub fn find(name: &str) -> Option<&'static EventType> {
    TYPES.iter().find(|t| t.name == name)
}

/// An event type in the catalog.
#[derive(Serialize, ToSchema, Clone)]
#[schema(as = EventType)]
pub struct EventTypeJson {
    #[schema(example = "event_type")]
    pub object: &'static str,
    #[serde(rename = "type")]
    #[schema(example = "ledger.transaction.posted")]
    pub kind: &'static str,
    pub description: &'static str,
    /// The `object` of `data.object`.
    #[schema(example = "transaction")]
    pub data_object: &'static str,
    /// A JSON Schema (draft 2020-12) of the whole event, per API version (`YYYY-MM-DD`).
    #[schema(value_type = Object)]
    pub schemas: Map<String, Value>,
}

/// The catalog, built once.
pub fn types_json() -> Vec<EventTypeJson> {
    static TYPES_JSON: OnceLock<Vec<EventTypeJson>> = OnceLock::new();
    TYPES_JSON
        .get_or_init(|| {
            TYPES
                .iter()
                .map(|t| EventTypeJson {
                    object: "event_type",
                    kind: t.name,
                    description: t.description,
                    data_object: t.object,
                    schemas: versions::VERSIONS.iter().map(|v| (v.version.to_string(), schema(t, v.version))).collect(),
                })
                .collect()
        })
        .clone()
}

/// The API's component schemas, as JSON.
fn components() -> &'static Map<String, Value> {
    static COMPONENTS: OnceLock<Map<String, Value>> = OnceLock::new();
    COMPONENTS.get_or_init(|| {
        let document = serde_json::to_value(crate::openapi::document()).unwrap_or(Value::Null);
        document["components"]["schemas"].as_object().cloned().unwrap_or_default()
    })
}

/// `schema` with every `$ref` to a component replaced by that component.
fn inline(schema: &Value, depth: usize) -> Value {
    match schema {
        Value::Object(map) => {
            if let Some(name) = map.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/"))
                && depth < 16
            {
                return inline(components().get(name).unwrap_or(&Value::Bool(true)), depth + 1);
            }
            Value::Object(map.iter().map(|(k, v)| (k.clone(), inline(v, depth))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| inline(v, depth)).collect()),
        other => other.clone(),
    }
}

/// The name a field of `object` has in `version`, by the version layer's own
/// transformations (`None`: the field does not exist there).
fn field_in(object: &str, field: &str, version: ApiVersion) -> Option<String> {
    if field == "object" {
        return Some(field.to_owned());
    }
    let instance = json!({ "object": object, field: null });
    let mut tree = Json::parse(&instance.to_string()).ok()?;
    for change in versions::changes_after(version) {
        (change.downgrade_response)(&mut tree);
    }
    let back: Value = serde_json::from_slice(&tree.to_bytes().ok()?).ok()?;
    back.as_object()?.keys().find(|k| k.as_str() != "object").cloned()
}

/// The object's schema in `version`: the newest one with its fields renamed
/// (or dropped) as that version's responses rename (or drop) them.
fn object_schema(t: &EventType, version: ApiVersion) -> Value {
    let mut schema = inline(components().get(t.schema).unwrap_or(&Value::Bool(true)), 0);
    if let Some(map) = schema.as_object_mut() {
        let renamed = |name: &str| field_in(t.object, name, version);
        if let Some(Value::Object(properties)) = map.remove("properties") {
            map.insert(String::from("properties"), Value::Object(properties.into_iter().filter_map(|(k, v)| renamed(&k).map(|n| (n, v))).collect()));
        }
        if let Some(Value::Array(required)) = map.remove("required") {
            map.insert(String::from("required"), Value::Array(required.iter().filter_map(|k| k.as_str().and_then(renamed)).map(Value::String).collect()));
        }
        map.insert(String::from("additionalProperties"), Value::Bool(false));
        // Only this type's objects: its `object` is that word.
        if let Some(Value::Object(properties)) = map.get_mut("properties") {
            properties.insert(String::from("object"), json!({ "const": t.object }));
        }
    }
    schema
}

/// The JSON Schema of an event of type `t` rendered in `version`.
pub fn schema(t: &EventType, version: ApiVersion) -> Value {
    let object = object_schema(t, version);
    let mut data = json!({
        "type": "object",
        "required": ["object"],
        "properties": { "object": object },
        "additionalProperties": false,
    });
    if t.is_update {
        data["required"] = json!(["object", "previous_attributes"]);
        data["properties"]["previous_attributes"] = json!({
            "type": "object",
            "description": "The previous values of the fields of data.object that changed.",
        });
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": t.name,
        "type": "object",
        "required": ["object", "id", "type", "api_version", "created_at", "data", "request", "correlation_id", "sequence"],
        "properties": {
            "object": { "const": "event" },
            "id": { "type": "string", "pattern": "^evt_[0-7][0-9a-hjkmnp-tv-z]{25}$" },
            "type": { "const": t.name },
            "api_version": { "const": version.to_string() },
            "created_at": { "type": "string", "format": "date-time" },
            "data": data,
            "request": {
                "type": "object",
                "required": ["id", "idempotency_key"],
                "properties": {
                    "id": { "type": ["string", "null"] },
                    "idempotency_key": { "type": ["string", "null"] },
                },
                "additionalProperties": false,
            },
            "correlation_id": { "type": ["string", "null"] },
            "sequence": { "type": "integer", "minimum": 1 },
        },
        "additionalProperties": false,
    })
}

/// `docs/events.md`, generated from [`TYPES`].
pub fn markdown() -> String {
    let mut out = String::from(
        "# Event types\n\n\
         <!-- Generated from crates/settle-api/src/events/catalog.rs by `settle events catalog`; do not edit. -->\n\n\
         Every event Settle emits, as `GET /v1/events` lists it and webhooks deliver it\n\
         (how to receive them: [webhooks.md](webhooks.md)). `GET /v1/event_types` serves the\n\
         same catalog with a JSON Schema of each type in every API version; below is the\n\
         schema in the newest version. Every event has the same envelope:\n\n\
         | field | what |\n|---|---|\n\
         | `object` | `\"event\"` |\n\
         | `id` | `evt_…`; sorts like `created_at`; the `webhook-id` of its deliveries |\n\
         | `type` | one of the types below |\n\
         | `api_version` | the version `data.object` is rendered in (the endpoint's, or the request's) |\n\
         | `created_at` | when the change happened (RFC 3339, microseconds) |\n\
         | `data.object` | the object as it was right after the change (not as it is now) |\n\
         | `data.previous_attributes` | on updates: the previous values of the fields that changed |\n\
         | `request` | `{id, idempotency_key}` of the request that caused it (`null`s when Settle did it, e.g. an expiry) |\n\
         | `correlation_id` | the `X-Correlation-Id` of that request |\n\
         | `sequence` | 1, 2, 3… per object: order one object's events by it |\n",
    );
    out.push_str("\n| type | data.object | description |\n|---|---|---|\n");
    for t in TYPES {
        out.push_str(&format!("| [`{0}`](#{1}) | `{2}` | {3} |\n", t.name, t.name.replace('.', ""), t.object, t.description));
    }
    for t in TYPES {
        let schema = serde_json::to_string_pretty(&schema(t, versions::NEWEST)).unwrap_or_default();
        out.push_str(&format!("\n## {}\n\n{}\n\n```json\n{schema}\n```\n", t.name, t.description));
    }
    out
}
