//! List parameters: `limit` (1–100, default 10), `starting_after` /
//! `ending_before` (an object id), plus endpoint filters. Unknown parameters
//! are refused, so a typo never silently returns everything.

use crate::error::ApiError;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use settle_core::limits::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use settle_store::records::{Cursor, PageRequest};

/// Parses a query string into `T` with the offending parameter named on error.
pub fn parse_query<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    // No parameter may hold a NUL (`%00`): PostgreSQL's text cannot, and no id or filter value has one.
    if let Some((name, _)) = form_urlencoded::parse(raw.unwrap_or("").as_bytes()).find(|(k, v)| k.contains('\0') || v.contains('\0')) {
        let param = if name.contains('\0') { String::from("query") } else { name.into_owned() };
        return Err(ApiError::invalid(param.clone(), format!("{param} must not contain the NUL character (%00)")));
    }
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.unwrap_or("").as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(if path == "." { String::from("query") } else { path }, e.into_inner().to_string())
    })
}

/// Builds a page request from the common parameters; `id_ok` checks a cursor id's shape.
pub fn page(limit: Option<&str>, starting_after: Option<String>, ending_before: Option<String>, id_ok: impl Fn(&str) -> bool) -> Result<PageRequest, ApiError> {
    let limit = match limit {
        None => DEFAULT_PAGE_LIMIT,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => n,
            _ => return Err(ApiError::invalid("limit", format!("limit must be an integer from 1 to {MAX_PAGE_LIMIT}"))),
        },
    };
    let cursor = match (starting_after, ending_before) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("starting_after", "use either starting_after or ending_before, not both")),
        (Some(id), None) if id_ok(&id) => Cursor::After(id),
        (None, Some(id)) if id_ok(&id) => Cursor::Before(id),
        (Some(_), None) => return Err(ApiError::invalid("starting_after", "starting_after must be an id of this list's objects")),
        (None, Some(_)) => return Err(ApiError::invalid("ending_before", "ending_before must be an id of this list's objects")),
        (None, None) => Cursor::Start,
    };
    Ok(PageRequest { limit, cursor })
}

/// The query of a list with no filters of its own: a page size and a cursor.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Objects per page, 1 to 100 (default 10).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// An id from the previous page: the page after it.
    pub starting_after: Option<String>,
    /// An id from the next page: the page before it.
    pub ending_before: Option<String>,
}
