//! The `{id}` segment of a path, taken as text. Axum's own `Path` answers a
//! segment that is not UTF-8 with a plain-text 400; no such segment can name
//! an object, so it answers `not_found` in the error envelope instead; so
//! does a segment with a NUL (`%00`).

use crate::error::ApiError;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            // No object's id holds a NUL (and PostgreSQL's text cannot).
            Ok(Path(id)) if !id.contains('\0') => Ok(IdPath(id)),
            _ => Err(ApiError::not_found("object")),
        }
    }
}
