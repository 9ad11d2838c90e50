//! The admin routes of the Entra stand-in, under `/_emulator/entra/`: register a client
//! (`POST clients`), list them (`GET clients`), delete one (`DELETE clients/{id}`) and replace
//! its principal's roles (`PUT clients/{id}/roles`). The secret is shown once, in the answer
//! that creates it; it is never logged or listed.

use http::StatusCode;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::clients::{Client, FederatedCredential, NewClient, Role, DEFAULT_FEDERATED_AUDIENCE};
use crate::context::Shared;
use crate::response::{self, format_instant, ApiError, Resp};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateRequest {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    secret: bool,
    #[serde(default)]
    federated: Vec<FederatedRequest>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FederatedRequest {
    issuer: String,
    subject: String,
    #[serde(default)]
    audience: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesRequest {
    roles: Vec<String>,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}.")))
}

fn roles(names: &[String]) -> Result<Vec<Role>, ApiError> {
    names
        .iter()
        .map(|n| {
            Role::parse(n).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Unknown role {n:?}: use \"Contributor\" or \"Communication and Email Service Owner\"."
                ))
            })
        })
        .collect()
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NotFound", "No such Entra client.")
}

/// `path` is what follows `/_emulator/entra/`, without a trailing `/`.
pub fn handle(shared: &Shared, method: &str, path: &str, body: &[u8]) -> Resp {
    let segments: Vec<&str> = path.split('/').collect();
    let result = match (segments.as_slice(), method) {
        (["clients"], "GET") => Ok(list(shared)),
        (["clients"], "POST") => create(shared, body),
        (["clients"], _) => return response::method_not_allowed("GET, POST"),
        (["clients", id], "DELETE") => delete(shared, id),
        (["clients", _], _) => return response::method_not_allowed("DELETE"),
        (["clients", id, "roles"], "PUT") => set_roles(shared, id, body),
        (["clients", _, "roles"], _) => return response::method_not_allowed("PUT"),
        _ => {
            return response::error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "No such emulator admin route.",
                None,
            )
        }
    };
    result.unwrap_or_else(ApiError::into_response)
}

fn listed(c: &Client) -> Value {
    json!({
        "clientId": c.client_id,
        "objectId": c.object_id,
        "displayName": c.display_name,
        "hasSecret": c.secret_sha256.is_some(),
        "federated": c.federated,
        "roles": c.roles,
        "createdAt": format_instant(c.created_at),
    })
}

fn list(shared: &Shared) -> Resp {
    let entra = &shared.entra;
    let clients: Vec<Value> = entra.lock_clients().list().iter().map(listed).collect();
    response::json(
        StatusCode::OK,
        &json!({
            "tenantId": entra.tenant_id,
            "authority": entra.authority,
            "clients": clients,
        }),
    )
}

fn create(shared: &Shared, body: &[u8]) -> Result<Resp, ApiError> {
    let req: CreateRequest = parse(body)?;
    let roles = roles(&req.roles)?;
    let mut federated = Vec::with_capacity(req.federated.len());
    for f in req.federated {
        if f.issuer.is_empty() || f.subject.is_empty() {
            return Err(ApiError::bad_request(
                "A federated credential needs a non-empty issuer and subject.",
            ));
        }
        federated.push(FederatedCredential {
            issuer: f.issuer,
            subject: f.subject,
            audience: f
                .audience
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| DEFAULT_FEDERATED_AUDIENCE.to_string()),
        });
    }
    let entra = &shared.entra;
    let (client, secret) = entra.lock_clients().create(
        NewClient {
            display_name: req
                .display_name
                .unwrap_or_else(|| "emulated application".into()),
            secret: req.secret,
            federated,
            roles,
        },
        Timestamp::now(),
    );
    shared.persister.mark_dirty();
    tracing::info!(client_id = %client.client_id, roles = ?client.roles, "entra client registered");
    let mut answer = json!({
        "tenantId": entra.tenant_id,
        "clientId": client.client_id,
    });
    if let (Some(secret), Some(map)) = (secret, answer.as_object_mut()) {
        map.insert("clientSecret".into(), Value::from(secret));
    }
    Ok(response::json(StatusCode::CREATED, &answer))
}

fn client_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| not_found())
}

fn delete(shared: &Shared, id: &str) -> Result<Resp, ApiError> {
    let id = client_id(id)?;
    if !shared.entra.lock_clients().delete(id) {
        return Err(not_found());
    }
    shared.persister.mark_dirty();
    tracing::info!(client_id = %id, "entra client deleted");
    Ok(response::empty(StatusCode::NO_CONTENT))
}

fn set_roles(shared: &Shared, id: &str, body: &[u8]) -> Result<Resp, ApiError> {
    let id = client_id(id)?;
    let req: RolesRequest = parse(body)?;
    let roles = roles(&req.roles)?;
    let now_roles = shared
        .entra
        .lock_clients()
        .set_roles(id, roles)
        .map(|c| c.roles.clone())
        .ok_or_else(not_found)?;
    shared.persister.mark_dirty();
    tracing::info!(client_id = %id, roles = ?now_roles, "entra client roles replaced");
    Ok(response::json(
        StatusCode::OK,
        &json!({ "clientId": id, "roles": now_roles }),
    ))
}
