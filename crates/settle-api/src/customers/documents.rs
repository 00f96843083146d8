//! Documents a customer supplies (passport scans, proof of address):
//! uploaded as `multipart/form-data`, limited to [`MAX_DOCUMENT_BYTES`],
//! typed by their magic bytes (the client's `Content-Type` is not trusted),
//! sealed under the customer's data key (so erasure shreds them), and
//! readable only with `customers:pii:read`.
//!
//! The multipart reader is ours (a few dozen lines over a size-limited body)
//! rather than axum's `multipart` feature, which would pull `multer` and
//! `encoding_rs` into the build for one endpoint.

use super::profile::data_key;
use super::{Actor, Keyed, conflict, idempotency_record, json_response, keyed, load_customer};
use crate::auth::require;
use crate::error::{ApiError, ErrorType};
use crate::observe::{ClientIp, RequestId};
use crate::state::AppState;
use axum::Extension;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use settle_core::clock::Timestamp;
use settle_core::ids::{CustomerDocumentId, CustomerId};
use settle_core::tenancy::{Principal, Scope};
use settle_store::customers::DocumentRecord;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// The largest document we accept.
pub const MAX_DOCUMENT_BYTES: usize = 10 * 1024 * 1024;
/// The largest upload body: the document plus room for the form's other parts.
pub const MAX_UPLOAD_BYTES: usize = MAX_DOCUMENT_BYTES + 64 * 1024;
/// Parts a form may have.
const MAX_PARTS: usize = 8;
/// Kinds of documents.
pub const DOCUMENT_TYPES: &[&str] = &["passport", "national_id", "driving_licence", "proof_of_address", "company_registration", "other"];

/// An oversized upload up to this size is read and dropped before the 413.
const MAX_DRAIN_BYTES: usize = 32 * 1024 * 1024;

async fn drain(body: axum::body::Body) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen > MAX_DRAIN_BYTES {
            break;
        }
    }
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    pub name: String,
    pub filename: Option<String>,
    pub data: &'a [u8],
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `boundary` parameter of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut pieces = content_type.split(';');
    if !pieces.next()?.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    pieces.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        let v = v.trim().trim_matches('"');
        (k.trim().eq_ignore_ascii_case("boundary") && (1..=70).contains(&v.len()) && v.is_ascii()).then(|| v.to_owned())
    })
}

fn disposition_param(line: &str, key: &str) -> Option<String> {
    line.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Splits a `multipart/form-data` body into its parts (RFC 7578).
pub fn parse_multipart<'a>(boundary: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, &'static str> {
    let delimiter = format!("--{boundary}").into_bytes();
    let start = find(body, &delimiter).ok_or("the body has no multipart boundary")?;
    let mut rest = &body[start + delimiter.len()..];
    let mut parts = Vec::new();
    let next_delimiter = [b"\r\n".as_slice(), &delimiter].concat();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        rest = rest.strip_prefix(b"\r\n").ok_or("a multipart boundary is not followed by a line break")?;
        let head_end = find(rest, b"\r\n\r\n").ok_or("a multipart part has no end of headers")?;
        let head = std::str::from_utf8(&rest[..head_end]).map_err(|_| "multipart part headers are not UTF-8")?;
        let mut name = None;
        let mut filename = None;
        for line in head.split("\r\n") {
            if let Some((k, v)) = line.split_once(':')
                && k.trim().eq_ignore_ascii_case("content-disposition")
            {
                name = disposition_param(v, "name");
                filename = disposition_param(v, "filename");
            }
        }
        let body_start = head_end + 4;
        let data_len = find(&rest[body_start..], &next_delimiter).ok_or("a multipart part is not closed by the boundary")?;
        parts.push(Part { name: name.ok_or("a multipart part has no name")?, filename, data: &rest[body_start..body_start + data_len] });
        if parts.len() > MAX_PARTS {
            return Err("the form has too many parts");
        }
        rest = &rest[body_start + data_len + next_delimiter.len()..];
    }
}

/// The content type from the content's first bytes, for the formats we accept.
pub fn sniff(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else if data.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if data.starts_with(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]) {
        Some("image/png")
    } else if data.len() >= 12 && data.starts_with(b"RIFF") && &data[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// What `POST /v1/customers/{id}/documents` takes, as `multipart/form-data`.
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the form for the OpenAPI document; the handler reads parts")]
pub struct DocumentUpload {
    /// `passport`, `national_id`, `driving_licence`, `proof_of_address`, `company_registration` or `other`.
    #[schema(rename = "type")]
    kind: String,
    /// The file: PDF, JPEG, PNG or WebP (by its content), at most 10 MiB.
    #[schema(format = Binary, value_type = String)]
    file: Vec<u8>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = CustomerDocument)]
pub struct DocumentJson {
    #[schema(value_type = String, example = "customer_document")]
    pub object: &'static str,
    #[schema(example = "cdoc_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    pub id: String,
    pub customer_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Sniffed from the content.
    pub content_type: String,
    pub size_bytes: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
}

fn document_json(d: &DocumentRecord) -> DocumentJson {
    DocumentJson {
        object: "customer_document",
        id: d.id.clone(),
        customer_id: d.customer_id.clone(),
        kind: d.document_type.clone(),
        content_type: d.content_type.clone(),
        size_bytes: d.size_bytes,
        created_at: Timestamp::from_micros(d.created_at).to_rfc3339(),
    }
}

fn unsupported(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::InvalidRequestError, "unsupported_document", message).with_param("file")
}

/// Uploads a document. Its type comes from its content, not from the request.
#[utoipa::path(post, path = "/v1/customers/{id}/documents", tag = "Customers", operation_id = "upload_customer_document",
    params(("id" = String, Path, description = "A customer id (`cus_…`)."), crate::openapi::IdempotencyKey),
    request_body(content = DocumentUpload, content_type = "multipart/form-data"),
    responses((status = 201, description = "The document (without its content).", body = DocumentJson)))]
pub async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    crate::path::IdPath(id): crate::path::IdPath,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersWrite)?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::InvalidRequestError,
            "request_too_large",
            format!("documents are limited to {MAX_DOCUMENT_BYTES} bytes"),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_UPLOAD_BYTES) {
        // Read (and drop) a moderately oversized body before answering, so the
        // client reads the 413 instead of a reset connection (as `body` does).
        if declared.is_some_and(|n| n <= MAX_DRAIN_BYTES) {
            drain(body).await;
        }
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_UPLOAD_BYTES).await.map_err(|e| crate::body::unreadable(e, too_large))?;
    let digest = Sha256::digest(&bytes).to_vec();
    let Keyed { key, replay, _guard } = keyed(&state, &principal, &headers, &format!("/v1/customers/{id}/documents"), &digest).await?;
    if let Some(r) = replay {
        return Ok(r);
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = boundary(content_type).ok_or_else(|| ApiError::invalid("Content-Type", "the body must be multipart/form-data with a boundary"))?;
    let parts = parse_multipart(&boundary, &bytes).map_err(|m| ApiError::invalid("body", m))?;
    let kind = parts.iter().find(|p| p.name == "type").and_then(|p| std::str::from_utf8(p.data).ok()).map(str::trim).unwrap_or("");
    let kind =
        DOCUMENT_TYPES.iter().find(|t| **t == kind).ok_or_else(|| ApiError::invalid("type", format!("type must be one of {}", DOCUMENT_TYPES.join(", "))))?;
    let file = parts.iter().find(|p| p.name == "file").ok_or_else(|| ApiError::invalid("file", "the form has no file part"))?;
    if file.data.is_empty() {
        return Err(ApiError::invalid("file", "the file is empty"));
    }
    if file.data.len() > MAX_DOCUMENT_BYTES {
        return Err(too_large());
    }
    let sniffed = sniff(file.data).ok_or_else(|| unsupported("the file is not a PDF, JPEG, PNG or WebP (judged by its content)"))?;
    let customer = load_customer(&state, principal.tenant, &id).await?;
    let dek = data_key(&state, customer.tenant, &customer.id).await?.ok_or_else(|| conflict("customer_erased", "this customer's personal data was erased"))?;
    let now = state.clock.now();
    let doc_id = state.customers.ids.customer_document().to_string();
    let sealed = dek.seal(&format!("document:{doc_id}"), file.data).map_err(|e| super::key_fault(&e))?;
    let actor = Actor::of(&principal, &request_id, &headers, client);
    let record = DocumentRecord {
        id: doc_id.clone(),
        tenant: customer.tenant,
        customer_id: customer.id.clone(),
        document_type: (*kind).to_owned(),
        content_type: sniffed.to_owned(),
        size_bytes: file.data.len() as i64,
        sealed: Some(sealed),
        actor: actor.actor.clone(),
        created_at: now.micros(),
    };
    let (response, body) = json_response(StatusCode::CREATED, &document_json(&record))?;
    let audit = vec![actor.audit(&state.customers.ids, "document.uploaded", ("customer_document", &doc_id), vec![String::from("type")], None, now)];
    state.store.insert_customer_document(record, audit, idempotency_record(customer.tenant, key, StatusCode::CREATED, body, now)).await?;
    Ok(response)
}

/// The customer's documents (metadata; no content).
#[utoipa::path(get, path = "/v1/customers/{id}/documents", tag = "Customers", operation_id = "list_customer_documents",
    params(("id" = String, Path, description = "A customer id (`cus_…`).")),
    responses((status = 200, description = "The documents.", body = inline(crate::render::ListJson<DocumentJson>))))]
pub async fn list(State(state): State<AppState>, principal: Principal, crate::path::IdPath(id): crate::path::IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersRead)?;
    let customer = load_customer(&state, principal.tenant, &id).await?;
    let docs = state.store.list_customer_documents(customer.tenant, customer.id).await?;
    Ok(axum::Json(crate::render::list(docs.iter().map(document_json).collect(), false)).into_response())
}

/// `{customer_id}/documents/{document_id}` in a path.
pub struct DocumentPath(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for DocumentPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(Path((a, b))) => Ok(DocumentPath(a, b)),
            Err(_) => Err(ApiError::not_found("document")),
        }
    }
}

/// A document's content, as uploaded (needs `customers:pii:read`).
#[utoipa::path(get, path = "/v1/customers/{id}/documents/{document_id}/content", tag = "Customers", operation_id = "get_customer_document_content",
    params(("id" = String, Path, description = "A customer id (`cus_…`)."), ("document_id" = String, Path, description = "A document id (`cdoc_…`).")),
    responses((status = 200, description = "The file, with its sniffed content type.", content_type = "application/octet-stream", body = Vec<u8>)))]
pub async fn content(State(state): State<AppState>, principal: Principal, DocumentPath(customer_id, doc_id): DocumentPath) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersRead)?;
    require(&principal, Scope::CustomersPiiRead)?;
    if CustomerId::parse(&customer_id).is_none() || CustomerDocumentId::parse(&doc_id).is_none() {
        return Err(ApiError::not_found("document"));
    }
    let doc =
        state.store.customer_document_content(principal.tenant, customer_id.clone(), doc_id.clone()).await?.ok_or_else(|| ApiError::not_found("document"))?;
    let dek = data_key(&state, principal.tenant, &customer_id).await?.ok_or_else(|| conflict("customer_erased", "this customer's personal data was erased"))?;
    let data = dek.open(&format!("document:{doc_id}"), doc.sealed.as_deref().unwrap_or_default()).map_err(|e| super::key_fault(&e))?;
    let mut response = (StatusCode::OK, data).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(sniff_static(&doc.content_type)));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn sniff_static(stored: &str) -> &'static str {
    ["application/pdf", "image/jpeg", "image/png", "image/webp"].into_iter().find(|t| *t == stored).unwrap_or("application/octet-stream")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_form_is_split_into_its_parts() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\npassport\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.pdf\"\r\nContent-Type: text/plain\r\n\r\n%PDF-1.7\r\n--fake\r\n--XyZ--\r\n";
        let parts = parse_multipart("XyZ", body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].name.as_str(), parts[0].data), ("type", b"passport".as_slice()));
        assert_eq!((parts[1].filename.as_deref(), parts[1].data), (Some("p.pdf"), b"%PDF-1.7\r\n--fake".as_slice()));
        assert_eq!(sniff(parts[1].data), Some("application/pdf"), "the declared text/plain is ignored");
        assert_eq!(boundary("multipart/form-data; boundary=\"XyZ\"").as_deref(), Some("XyZ"));
        assert_eq!(boundary("application/json"), None);
        assert!(parse_multipart("XyZ", b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end").is_err());
        assert_eq!(sniff(b"MZ\x90\x00"), None);
    }

    proptest! {
        #[test]
        fn multipart_parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..400), b in "[a-zA-Z0-9]{1,10}") {
            let _ = parse_multipart(&b, &body);
            let framed = [format!("--{b}\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n").as_bytes(), &body, format!("\r\n--{b}--").as_bytes()].concat();
            let parsed = parse_multipart(&b, &framed);
            if !body.windows(b.len() + 4).any(|w| w.starts_with(b"\r\n--")) {
                prop_assert_eq!(parsed.map(|p| p.len()), Ok(1));
            }
            let _ = sniff(&body);
        }
    }
}
