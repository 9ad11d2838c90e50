//! The GA and preview Identity operations (create, issue, revoke, delete, get, Teams exchange):
//! body validation with the service's error shapes, state changes, and token minting. Also the
//! helpers the legacy surface (`legacy.rs`) shares; `server.rs` dispatches to both.

use http::StatusCode;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};

use super::api_version::{ApiVersion, Surface};
use super::auth::Caller;
use super::context::Shared;
use super::response::{self, format_instant, ApiError, Resp};
use super::store::LookupError;
use super::token::{self, Claims};
use acs_client::models::{
    AccessToken, CreateIdentityResponse, Identity, MAX_EXPIRES_IN_MINUTES, MIN_EXPIRES_IN_MINUTES,
};
use acs_client::{Scope, TokenString};

/// Default token lifetime when the client asks for none (24 h).
const DEFAULT_EXPIRES_IN_MINUTES: i64 = 1440;
/// Longest accepted `externalId`.
const MAX_EXTERNAL_ID_CHARS: usize = 256;

/// The request body as a JSON object; `None` for an empty body or `null`.
pub fn parse_body(body: &[u8]) -> Result<Option<Map<String, Value>>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(Value::Null) => Ok(None),
        Ok(_) => Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        )),
        Err(_) => Err(ApiError::bad_request("The request body is not valid JSON.")),
    }
}

/// A property by name, case-insensitively as ASP.NET binds it; `null` counts as absent.
pub fn field<'a>(map: Option<&'a Map<String, Value>>, name: &str) -> Option<&'a Value> {
    map?.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// `expiresInMinutes`, range-checked; ignored by api-versions that predate it.
fn expires_in_minutes(
    map: Option<&Map<String, Value>>,
    version: ApiVersion,
) -> Result<Option<i64>, ApiError> {
    if !version.custom_expiry {
        return Ok(None);
    }
    let Some(v) = field(map, "expiresInMinutes") else {
        return Ok(None);
    };
    let minutes = v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
            .map(|f| f as i64)
    });
    match minutes {
        Some(m) if (MIN_EXPIRES_IN_MINUTES..=MAX_EXPIRES_IN_MINUTES).contains(&m) => Ok(Some(m)),
        Some(m) => Err(ApiError::validation(
            "ExpiresInMinutes",
            format!(
                "ExpiresInMinutes value {m} is invalid. Value must be within the [{MIN_EXPIRES_IN_MINUTES}, {MAX_EXPIRES_IN_MINUTES}] interval."
            ),
        )),
        None => Err(ApiError::validation(
            "ExpiresInMinutes",
            format!("ExpiresInMinutes value {v} is invalid. Value must be an integer."),
        )),
    }
}

/// A JSON array of strings, or `None` if the value has another shape.
pub fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Checks scope names against the api-version's scope enum.
fn check_scopes(
    scopes: &[String],
    version: ApiVersion,
    target: &'static str,
) -> Result<(), ApiError> {
    for s in scopes {
        let known = match Scope::parse(s) {
            Some(Scope::Chat | Scope::Voip) => true,
            Some(_) => version.join_scopes,
            None => false,
        };
        if !known {
            return Err(ApiError::validation(
                target,
                format!("Invalid scopes - Scope '{s}' is not supported."),
            ));
        }
    }
    Ok(())
}

/// Maps a failed identity lookup to its (documented) response.
pub fn lookup_error(e: LookupError) -> ApiError {
    match e {
        LookupError::NotOwned => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "IdentityNotOwned",
            "Provided identity doesn't belong to the resource.",
        ),
        LookupError::Malformed => ApiError::validation(
            "id",
            "The identity id is not a valid Communication Services identity.",
        ),
        LookupError::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "IdentityNotFound",
            "The identity was not found.",
        ),
        LookupError::Deleted => ApiError::new(
            StatusCode::NOT_FOUND,
            "IdentityNotFound",
            "The identity has been deleted.",
        ),
    }
}

/// Issues a token for a live identity: takes the next sequence number under the store lock,
/// then signs outside it.
pub fn mint(
    shared: &Shared,
    id: &str,
    scopes: &[String],
    expires_in_minutes: Option<i64>,
    slot: Caller,
) -> Result<AccessToken, ApiError> {
    let now = Timestamp::now();
    let stamp = shared
        .lock_store()
        .issue(id, now, slot)
        .map_err(lookup_error)?;
    shared.persister.mark_dirty();
    let lifetime = match shared.token_lifetime_override() {
        Some(secs) => SignedDuration::from_secs(i64::try_from(secs).unwrap_or(i64::MAX / 2)),
        None => SignedDuration::from_mins(expires_in_minutes.unwrap_or(DEFAULT_EXPIRES_IN_MINUTES)),
    };
    let expires = now.saturating_add(lifetime).unwrap_or(now);
    let claims = Claims {
        pad: String::new(),
        skypeid: id.strip_prefix("8:").unwrap_or(id).to_string(),
        scp: token::scope_bits(scopes),
        csi: now.as_second().to_string(),
        iat: now.as_second(),
        exp: expires.as_second(),
        acs_scope: scopes.join(","),
        resource_id: shared.resource_id.to_string(),
        seq: stamp.seq,
        issued_at_ns: i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX),
        key_slot: stamp.key_slot.as_str().to_string(),
        key_generation: stamp.key_generation,
    };
    let jwt = token::mint(&shared.signing_key, claims).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "The emulator could not mint a token.",
        )
    })?;
    Ok(AccessToken {
        token: TokenString::new(jwt),
        expires_on: format_instant(expires),
    })
}

pub fn create(
    shared: &Shared,
    version: ApiVersion,
    slot: Caller,
    body: &[u8],
) -> Result<Resp, ApiError> {
    let map = parse_body(body)?;
    let map = map.as_ref();
    let scopes = match field(map, "createTokenWithScopes") {
        None => Vec::new(),
        Some(v) => string_list(v).ok_or_else(|| {
            ApiError::validation(
                "createTokenWithScopes",
                "The createTokenWithScopes field must be an array of scope names.",
            )
        })?,
    };
    let expires = expires_in_minutes(map, version)?;
    check_scopes(&scopes, version, "createTokenWithScopes")?;
    let external_id = if version.surface == Surface::Preview {
        match field(map, "externalId") {
            None => None,
            Some(Value::String(s)) if (1..=MAX_EXTERNAL_ID_CHARS).contains(&s.chars().count()) => {
                Some(s.clone())
            }
            Some(_) => {
                return Err(ApiError::validation(
                    "externalId",
                    "The externalId field must be a string of 1 to 256 characters.",
                ))
            }
        }
    } else {
        None
    };
    let (record, created) = shared
        .lock_store()
        .create(external_id.as_deref(), Timestamp::now());
    if created {
        shared.persister.mark_dirty();
    }
    let access_token = if scopes.is_empty() {
        None
    } else {
        Some(mint(shared, &record.id, &scopes, expires, slot)?)
    };
    let identity = Identity {
        id: record.id,
        external_id: record.external_id,
        last_token_issued_at: None,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(response::json(
        status,
        &CreateIdentityResponse {
            identity,
            access_token,
        },
    ))
}

pub fn issue(
    shared: &Shared,
    version: ApiVersion,
    id: &str,
    slot: Caller,
    body: &[u8],
) -> Result<Resp, ApiError> {
    let map = parse_body(body)?;
    let map = map.as_ref();
    let scopes = match field(map, "scopes") {
        None => {
            return Err(ApiError::validation(
                "Scopes",
                "Scopes: The Scopes field is required.",
            ))
        }
        Some(v) => string_list(v).ok_or_else(|| {
            ApiError::validation(
                "Scopes",
                "Scopes: The Scopes field must be an array of scope names.",
            )
        })?,
    };
    let expires = expires_in_minutes(map, version)?;
    if scopes.is_empty() {
        return Err(ApiError::validation(
            "scopes",
            "Invalid scopes - Scopes field is required.",
        ));
    }
    check_scopes(&scopes, version, "scopes")?;
    let token = mint(shared, id, &scopes, expires, slot)?;
    Ok(response::json(StatusCode::OK, &token))
}

pub fn revoke(shared: &Shared, id: &str) -> Result<Resp, ApiError> {
    shared.lock_store().revoke(id).map_err(lookup_error)?;
    shared.persister.mark_dirty();
    Ok(response::empty(StatusCode::NO_CONTENT))
}

pub fn delete(shared: &Shared, id: &str) -> Result<Resp, ApiError> {
    shared
        .lock_store()
        .delete(id, Timestamp::now())
        .map_err(lookup_error)?;
    shared.persister.mark_dirty();
    Ok(response::empty(StatusCode::NO_CONTENT))
}

pub fn get(shared: &Shared, id: &str) -> Result<Resp, ApiError> {
    let identity = {
        let store = shared.lock_store();
        let r = store.live(id).map_err(lookup_error)?;
        Identity {
            id: r.id.clone(),
            external_id: r.external_id.clone(),
            last_token_issued_at: r.last_token_issued_at.map(format_instant),
        }
    };
    Ok(response::json(StatusCode::OK, &identity))
}

/// The emulator cannot check Teams users' Entra tokens, so after the body checks every exchange
/// is the service's answer to an invalid token. An empty `token` is such a token, not a missing
/// one: the service answers it 401 too.
pub fn exchange(body: &[u8]) -> Result<Resp, ApiError> {
    let map = parse_body(body)?;
    for (name, target) in [("token", "Token"), ("appId", "AppId"), ("userId", "UserId")] {
        let present = field(map.as_ref(), name)
            .and_then(Value::as_str)
            .is_some_and(|s| name == "token" || !s.is_empty());
        if !present {
            return Err(ApiError::validation(
                target,
                format!("{target}: The {target} field is required."),
            ));
        }
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "InvalidAccessToken",
        "Provided access token is not valid.",
    ))
}
