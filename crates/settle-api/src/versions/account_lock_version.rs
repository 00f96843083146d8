//! 2026-11-30: the account's `version` becomes `lock_version`, and the
//! transaction request's `expected_versions` becomes `expected_lock_versions`.
//!
//! Older shape, for clients on 2026-11-25:
//! - every account object (alone, in lists, anywhere in a response) says `version`;
//! - `POST /v1/transactions` and each item of `POST /v1/transactions/batch`
//!   take `expected_versions`, and refuse `expected_lock_versions` as the
//!   unknown field it was in that version;
//! - an error's `param` says `expected_versions` (also inside batch results).

use super::Change;
use super::json::Json;
use crate::error::ApiError;
use axum::http::Method;

const ACCOUNT_NEW: &str = "lock_version";
const ACCOUNT_OLD: &str = "version";
const REQUEST_NEW: &str = "expected_lock_versions";
const REQUEST_OLD: &str = "expected_versions";
const CREATE_TRANSACTION: &str = "/v1/transactions";
const BATCH: &str = "/v1/transactions/batch";

pub static CHANGE: Change = Change {
    id: "account_lock_version",
    summary: "The account's `version` is now `lock_version`; `expected_versions` is now `expected_lock_versions`.",
    description: "
The account object's `version` counts the changes made to the account, and a
transaction's `expected_versions` (`{account_id: version}`) makes the
transaction apply only if each named account is still at that count: it is an
optimistic lock (compare-and-set), the same idea as Rails' `lock_version`.

Now that the API itself has versions (`Settle-Version`, `GET /v1/versions`),
a field called `version` on an account, and a request field called
`expected_versions`, read as if they were about API versions. This version
names them for what they are for:

- account objects (`POST /v1/accounts`, `GET /v1/accounts/{id}`, the items of
  `GET /v1/accounts`) carry `lock_version` instead of `version`;
- `POST /v1/transactions` and each item of `POST /v1/transactions/batch`
  take `expected_lock_versions` instead of `expected_versions`;
- errors about it (`version_conflict`, and `invalid_request` or
  `account_not_found` on that field) name `expected_lock_versions` in `param`.

Values and behaviour are unchanged. In this version `expected_versions` is
still accepted as a deprecated alias of `expected_lock_versions` (so that a
client upgrading its reads first does not break its writes); it will be
refused by a later version, and sending both is a 400. To upgrade, rename the field where you
read it and where you send it, then send `Settle-Version: 2026-11-30` (or ask
your operator to move your organization's pin).
",
    downgrade_response,
    downgrade_param,
    touches_request,
    upgrade_request,
};

/// Error objects: the envelope's `error` and each failed batch item's `error`.
fn is_error_object(node: &Json) -> bool {
    ["type", "code", "message", "param"].iter().all(|k| node.contains_key(k))
}

fn downgrade_response(body: &mut Json) {
    body.walk_mut(&mut |node| {
        if node.get("object").and_then(Json::as_string).as_deref() == Some("account") {
            node.rename(ACCOUNT_NEW, ACCOUNT_OLD);
        }
        if is_error_object(node)
            && let Some(param) = node.get("param").and_then(Json::as_string)
            && let Some(old) = downgrade_param(&param)
            && let (Ok(value), Some(slot)) = (Json::string(&old), node.get_mut("param"))
        {
            *slot = value;
        }
    });
}

/// `expected_lock_versions`, `expected_lock_versions.<key>`, and the same
/// under `transactions[i].` (batch items); nothing else is renamed, so a
/// metadata key that happens to share the name is left alone.
fn downgrade_param(param: &str) -> Option<String> {
    let (prefix, rest) = match param.strip_prefix("transactions[").and_then(|r| r.split_once("].")) {
        Some((index, rest)) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => (&param[..param.len() - rest.len()], rest),
        _ => ("", param),
    };
    let tail = rest.strip_prefix(REQUEST_NEW)?;
    (tail.is_empty() || tail.starts_with('.')).then(|| format!("{prefix}{REQUEST_OLD}{tail}"))
}

fn touches_request(method: &Method, route: &str) -> bool {
    method == Method::POST && (route == CREATE_TRANSACTION || route == BATCH)
}

fn upgrade_one(prefix: &str, request: &mut Json) -> Result<bool, ApiError> {
    if request.contains_key(REQUEST_NEW) {
        return Err(ApiError::invalid(
            format!("{prefix}{REQUEST_NEW}"),
            format!(
                "unknown field `{REQUEST_NEW}`: in API version 2026-11-25 it is called `{REQUEST_OLD}` (send Settle-Version: 2026-11-30 to use the new name)"
            ),
        ));
    }
    Ok(request.rename(REQUEST_OLD, REQUEST_NEW))
}

fn upgrade_request(route: &str, body: &mut Json) -> Result<bool, ApiError> {
    match route {
        CREATE_TRANSACTION => upgrade_one("", body),
        BATCH => {
            let mut changed = false;
            if let Some(items) = body.get_mut("transactions").and_then(Json::items_mut) {
                for (i, item) in items.iter_mut().enumerate() {
                    changed |= upgrade_one(&format!("transactions[{i}]."), item)?;
                }
            }
            Ok(changed)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code: a panic is the failure report")]
mod tests {
    use super::*;

    #[test]
    fn params_are_renamed_only_where_the_field_is() {
        assert_eq!(downgrade_param("expected_lock_versions").as_deref(), Some("expected_versions"));
        assert_eq!(downgrade_param("expected_lock_versions.acct_x").as_deref(), Some("expected_versions.acct_x"));
        assert_eq!(downgrade_param("transactions[12].expected_lock_versions").as_deref(), Some("transactions[12].expected_versions"));
        for other in [
            "entries",
            "metadata.expected_lock_versions",
            "expected_lock_versionsx",
            "transactions[].expected_lock_versions",
            "transactions[x].expected_lock_versions",
        ] {
            assert_eq!(downgrade_param(other), None, "{other}");
        }
    }

    #[test]
    fn responses_rename_account_objects_and_error_params_only() {
        let mut body = Json::parse(
            r#"{"object":"list","data":[{"object":"account","id":"acct_1","lock_version":3,"metadata":{"lock_version":"x"}}],
                "error":{"type":"t","code":"c","message":"m","param":"expected_lock_versions"}}"#,
        )
        .unwrap();
        downgrade_response(&mut body);
        let text = String::from_utf8(body.to_bytes().unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"object":"list","data":[{"object":"account","id":"acct_1","version":3,"metadata":{"lock_version":"x"}}],"error":{"type":"t","code":"c","message":"m","param":"expected_versions"}}"#
        );
    }
}
