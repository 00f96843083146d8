//! The `{id}` segment of a path, taken as text. Axum's own `Path` answers a
//! segment that is not UTF-8 with a plain-text 400; no such segment can name
//! an object, so it answers `not_found` in the error envelope instead.

use crate::error::ApiError;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(IdPath(id)),
            Err(_) => Err(ApiError::not_found("object")),
        }
    }
}
