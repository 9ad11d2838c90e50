//! The admin API under `/_emulator/` (no HMAC; loopback peers only unless allowed): identity
//! listing, token validation as a downstream service judges it, stats, fault injection, key
//! regeneration, runtime configuration and health; `/_emulator/entra/...` goes to the Entra
//! stand-in's admin routes (`entra::admin`). Documented in `docs/emulator.md`.

use std::net::SocketAddr;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::KeySlot;
use super::body;
use super::context::Shared;
use super::faults::FaultConfig;
use super::limits::RateLimits;
use super::persist::generate_access_key;
use super::response::{self, format_instant, ApiError, Resp};
use super::store::{IdentityRecord, Verdict};
use super::token::{self, TokenError};
use acs_client::{AccessKey, ConnectionString};

/// Every admin path and the methods it answers.
const ROUTES: &[(&str, &str)] = &[
    ("/health", "GET"),
    ("/identities", "GET"),
    ("/validate", "POST"),
    ("/stats", "GET"),
    ("/stats/reset", "POST"),
    ("/faults", "GET, PUT, DELETE"),
    ("/keys/regenerate", "POST"),
    ("/config", "GET, PUT"),
];

pub async fn handle(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    if !shared.admin_allow_remote && !peer.ip().to_canonical().is_loopback() {
        return response::error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "The emulator admin API answers loopback clients only (see --admin-allow-remote).",
            None,
        );
    }
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path()
        .strip_prefix("/_emulator")
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    let Ok(body) = body::read(req.into_body()).await else {
        return bad_request("The request body could not be read or is too large.");
    };
    if let Some(rest) = path.strip_prefix("/entra/") {
        return super::entra::admin::handle(shared, &method, rest, &body);
    }
    let Some((_, allowed)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        return response::error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "No such emulator admin route.",
            None,
        );
    };
    match (method.as_str(), path.as_str()) {
        ("GET", "/health") => health(shared),
        ("GET", "/identities") => identities(shared),
        ("POST", "/validate") => validate(shared, &body),
        ("GET", "/stats") => response::json(StatusCode::OK, &shared.stats.snapshot()),
        ("POST", "/stats/reset") => {
            shared.stats.reset();
            response::empty(StatusCode::NO_CONTENT)
        }
        ("GET", "/faults") => response::json(StatusCode::OK, &shared.faults.get()),
        ("PUT", "/faults") => put_faults(shared, &body),
        ("DELETE", "/faults") => {
            shared.faults.set(FaultConfig::default());
            response::empty(StatusCode::NO_CONTENT)
        }
        ("POST", "/keys/regenerate") => regenerate(shared, &body),
        ("GET", "/config") => config(shared),
        ("PUT", "/config") => put_config(shared, &body),
        _ => response::method_not_allowed(allowed),
    }
}

fn bad_request(message: &str) -> Resp {
    response::error(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}.")))
}

fn health(shared: &Shared) -> Resp {
    let count = shared.lock_store().len();
    response::json(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "endpoint": shared.endpoint,
            "resourceId": shared.resource_id,
            "tokenKeyId": shared.signing_key.kid(),
            "identities": count,
            "entraTenantId": shared.entra.tenant_id,
            "entraAuthority": shared.entra.authority,
            "entraKeyId": shared.entra.existing_key().map(|k| k.kid()),
        }),
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedIdentity {
    id: String,
    external_id: Option<String>,
    deleted: bool,
    created_at: String,
    deleted_at: Option<String>,
    last_token_issued_at: Option<String>,
    tokens_valid_from: Option<String>,
    tokens_issued: u64,
    revocations: u64,
}

impl From<&IdentityRecord> for ListedIdentity {
    fn from(r: &IdentityRecord) -> Self {
        Self {
            id: r.id.clone(),
            external_id: r.external_id.clone(),
            deleted: r.is_deleted(),
            created_at: format_instant(r.created_at),
            deleted_at: r.deleted_at.map(format_instant),
            last_token_issued_at: r.last_token_issued_at.map(format_instant),
            tokens_valid_from: r.tokens_valid_from.map(format_instant),
            tokens_issued: r.tokens_issued,
            revocations: r.revocations,
        }
    }
}

fn identities(shared: &Shared) -> Resp {
    let list: Vec<ListedIdentity> = shared.lock_store().list().map(Into::into).collect();
    response::json(StatusCode::OK, &json!({ "identities": list }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateRequest {
    token: String,
}

fn validate(shared: &Shared, body: &[u8]) -> Resp {
    let req: ValidateRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let claims = match token::decode(&shared.signing_key, &req.token) {
        Ok(c) => c,
        Err(e) => {
            let reason = match e {
                TokenError::BadSignature => "badSignature",
                TokenError::Malformed | TokenError::Unpaddable => "malformed",
            };
            return response::json(StatusCode::OK, &json!({"valid": false, "reason": reason}));
        }
    };
    let verdict = shared.lock_store().judge(&claims, Timestamp::now());
    response::json(
        StatusCode::OK,
        &json!({
            "valid": verdict == Verdict::Valid,
            "reason": verdict.reason(),
            "id": claims.identity_id(),
            "scopes": claims.acs_scope.split(',').filter(|s| !s.is_empty()).collect::<Vec<_>>(),
            "expiresAt": claims.exp,
            "sequence": claims.seq,
            "keySlot": claims.key_slot,
            "keyGeneration": claims.key_generation,
        }),
    )
}

fn put_faults(shared: &Shared, body: &[u8]) -> Resp {
    let config: FaultConfig = match parse(body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Err(msg) = config.validate() {
        return bad_request(&msg);
    }
    shared.faults.set(config.clone());
    response::json(StatusCode::OK, &config)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegenerateRequest {
    key: String,
    /// A specific new key (standard base64) instead of a random one.
    #[serde(default)]
    value: Option<String>,
}

fn regenerate(shared: &Shared, body: &[u8]) -> Resp {
    let req: RegenerateRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(slot) = KeySlot::parse(&req.key) else {
        return bad_request("key must be \"primary\" or \"secondary\".");
    };
    let new_key = match req.value.as_deref().map(AccessKey::from_base64) {
        None => generate_access_key(),
        Some(Ok(k)) => k,
        Some(Err(_)) => return bad_request("value is not a usable base64 key."),
    };
    let generation = shared.lock_store().regenerate_key(slot, new_key.clone());
    shared.persister.mark_dirty();
    tracing::info!(key = slot.as_str(), generation, "access key regenerated");
    let connection_string = ConnectionString {
        endpoint: shared.endpoint.clone(),
        access_key: new_key,
    }
    .render();
    response::json(
        StatusCode::OK,
        &json!({
            "key": slot.as_str(),
            "generation": generation,
            "connectionString": connection_string,
        }),
    )
}

fn config(shared: &Shared) -> Resp {
    response::json(
        StatusCode::OK,
        &json!({
            "tokenLifetimeSeconds": shared.token_lifetime_override(),
            "rateLimits": shared.limiter.limits(),
            "clockSkewSeconds": shared.clock_skew.as_secs(),
            "entraTokenLifetimeSeconds": shared.entra.token_lifetime_seconds(),
        }),
    )
}

/// Applies `tokenLifetimeSeconds` (null clears), `rateLimits` (`"default"`, `"off"`, or an
/// object whose present classes replace the current ones, null meaning unlimited),
/// `rateLimitScale` (applied last) and `entraTokenLifetimeSeconds`.
fn put_config(shared: &Shared, body: &[u8]) -> Resp {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return bad_request("The body must be a JSON object.");
    };
    let known = [
        "tokenLifetimeSeconds",
        "rateLimits",
        "rateLimitScale",
        "entraTokenLifetimeSeconds",
    ];
    if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return bad_request(&format!("Unknown configuration field {k:?}."));
    }
    let lifetime = match map.get("tokenLifetimeSeconds") {
        None => shared.token_lifetime_override(),
        Some(Value::Null) => None,
        Some(v) => match v.as_u64().filter(|n| *n >= 1) {
            Some(n) => Some(n),
            None => return bad_request("tokenLifetimeSeconds must be a positive integer or null."),
        },
    };
    let entra_lifetime = match map.get("entraTokenLifetimeSeconds") {
        None => shared.entra.token_lifetime_seconds(),
        Some(v) => match v.as_u64().filter(|n| *n >= 1) {
            Some(n) => n,
            None => return bad_request("entraTokenLifetimeSeconds must be a positive integer."),
        },
    };
    let mut limits = shared.limiter.limits();
    match map.get("rateLimits") {
        None => {}
        Some(Value::String(s)) if s == "default" => limits = RateLimits::service_defaults(),
        Some(Value::String(s)) if s == "off" => limits = RateLimits::off(),
        Some(Value::Object(classes)) => {
            for (name, value) in classes {
                let Some(class) = super::limits::LimitClass::ALL
                    .into_iter()
                    .find(|c| c.as_str() == name)
                else {
                    return bad_request(&format!("Unknown rate-limit class {name:?}."));
                };
                match serde_json::from_value(value.clone()) {
                    Ok(limit) => limits.set(class, limit),
                    Err(_) => {
                        return bad_request(
                            "A rate limit is null or {\"max\": n, \"windowSeconds\": s}.",
                        )
                    }
                }
            }
        }
        Some(_) => {
            return bad_request("rateLimits is \"default\", \"off\" or an object of classes.")
        }
    }
    if let Some(v) = map.get("rateLimitScale") {
        match v.as_f64().filter(|f| f.is_finite() && *f > 0.0) {
            Some(f) => limits = limits.scaled(f),
            None => return bad_request("rateLimitScale must be a positive number."),
        }
    }
    if let Err(msg) = limits.validate() {
        return bad_request(&msg);
    }
    shared.set_token_lifetime_override(lifetime);
    shared.entra.set_token_lifetime_seconds(entra_lifetime);
    shared.limiter.set_limits(limits);
    config(shared)
}
