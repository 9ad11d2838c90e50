//! The Identity API's gate for `Authorization: Bearer` requests, as the ACS gateway applies it:
//! the token must be a valid access token of this tenant for the ACS audience (else 401, the
//! same `Denied` as any authentication failure), and its principal must exist and hold one of
//! the data-plane roles on the resource right now (else 403 `AuthorizationFailed`).

use http::StatusCode;
use uuid::Uuid;

use super::access_token::{self, Invalid};
use crate::context::Shared;
use crate::response::{self, Resp};

/// Why a bearer request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: not a valid token of this tenant for ACS.
    Unauthenticated(Invalid),
    /// 403: a valid token whose principal is gone or holds no data-plane role.
    Forbidden {
        client_id: String,
        object_id: String,
    },
}

impl Refusal {
    pub fn into_response(self) -> Resp {
        match self {
            Refusal::Unauthenticated(_) => response::denied(),
            Refusal::Forbidden {
                client_id,
                object_id,
            } => response::error(
                StatusCode::FORBIDDEN,
                "AuthorizationFailed",
                &format!(
                    "The client '{client_id}' with object id '{object_id}' does not have authorization to perform this operation on the Communication Services resource. It needs the 'Contributor' or the 'Communication and Email Service Owner' role on the resource."
                ),
                None,
            ),
        }
    }
}

/// Authenticates and authorizes a bearer token for the Identity API.
pub fn check(shared: &Shared, token: &str) -> Result<(), Refusal> {
    let entra = &shared.entra;
    let outcome = authorize(shared, token);
    shared.stats.record_entra_bearer(match &outcome {
        Ok(()) => "accepted",
        Err(Refusal::Unauthenticated(_)) => "unauthenticated",
        Err(Refusal::Forbidden { .. }) => "forbidden",
    });
    if let Err(Refusal::Unauthenticated(reason)) = &outcome {
        tracing::debug!(%reason, tenant = %entra.tenant_id, "bearer token refused");
    }
    outcome
}

fn authorize(shared: &Shared, token: &str) -> Result<(), Refusal> {
    let entra = &shared.entra;
    let key = entra
        .existing_key()
        .ok_or(Refusal::Unauthenticated(Invalid::NoKey))?;
    let claims = access_token::verify(key, token, &entra.issuer(), entra.tenant_id)
        .map_err(Refusal::Unauthenticated)?;
    let forbidden = || Refusal::Forbidden {
        client_id: claims.appid.clone(),
        object_id: claims.oid.clone(),
    };
    let client_id = Uuid::parse_str(&claims.appid).map_err(|_| forbidden())?;
    let clients = entra.lock_clients();
    let client = clients.get(client_id).ok_or_else(forbidden)?;
    if client.object_id.to_string() != claims.oid || !client.is_authorized() {
        return Err(forbidden());
    }
    Ok(())
}
