//! The `2020-07-20-preview2` surface of the old `azure-communication-administration` SDK:
//! create answers 200 `{id}`, tokens come from `POST /identities/{id}/token` with `{id, token,
//! expiresOn}`, and revocation is a merge-patch of `tokensValidFrom`.

use http::StatusCode;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use super::auth::Caller;
use super::context::Shared;
use super::handlers::{field, lookup_error, mint, parse_body, string_list};
use super::response::{self, ApiError, Resp};

#[derive(Serialize)]
struct LegacyIdentity {
    id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LegacyToken {
    id: String,
    token: String,
    expires_on: String,
}

pub fn create(shared: &Shared) -> Result<Resp, ApiError> {
    let (record, _) = shared.lock_store().create(None, Timestamp::now());
    shared.persister.mark_dirty();
    Ok(response::json(
        StatusCode::OK,
        &LegacyIdentity { id: record.id },
    ))
}

/// Scopes were free strings then (`pstn` existed), so any non-empty names are accepted.
pub fn issue(shared: &Shared, id: &str, slot: Caller, body: &[u8]) -> Result<Resp, ApiError> {
    let map = parse_body(body)?;
    let scopes = field(map.as_ref(), "scopes")
        .and_then(string_list)
        .filter(|s| !s.is_empty() && s.iter().all(|x| !x.is_empty()))
        .ok_or_else(|| {
            ApiError::validation("scopes", "Invalid scopes - Scopes field is required.")
        })?;
    let token = mint(shared, id, &scopes, None, slot)?;
    Ok(response::json(
        StatusCode::OK,
        &LegacyToken {
            id: id.to_string(),
            token: token.token.expose().to_string(),
            expires_on: token.expires_on,
        },
    ))
}

/// `{}` revokes every token issued so far (by sequence); `{"tokensValidFrom": t}` revokes
/// those issued before `t`.
pub fn revoke(shared: &Shared, id: &str, body: &[u8]) -> Result<Resp, ApiError> {
    let map = parse_body(body)?;
    let result = match field(map.as_ref(), "tokensValidFrom") {
        None => shared.lock_store().revoke(id),
        Some(Value::String(s)) => {
            let from: Timestamp = s.parse().map_err(|_| {
                ApiError::validation(
                    "tokensValidFrom",
                    "The tokensValidFrom field must be an RFC 3339 date-time.",
                )
            })?;
            shared.lock_store().set_tokens_valid_from(id, from)
        }
        Some(_) => {
            return Err(ApiError::validation(
                "tokensValidFrom",
                "The tokensValidFrom field must be an RFC 3339 date-time.",
            ))
        }
    };
    result.map_err(lookup_error)?;
    shared.persister.mark_dirty();
    Ok(response::empty(StatusCode::NO_CONTENT))
}
