//! `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant for the ACS scope, with a
//! client secret (form or HTTP Basic) or a federated client assertion. Checks run in Entra's
//! order as far as it shows: tenant, grant type, client id, scope, the client, its credential.
//! Roles are not checked here: Entra issues a token to any client, the resource authorizes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use jiff::Timestamp;
use serde_json::json;
use uuid::Uuid;

use super::access_token::{self, ClientAuth};
use super::assertion;
use super::clients::Client;
use super::oauth_error::{no_store, AadError};
use crate::context::Shared;
use crate::response::{self, Resp};
use crate::routes::percent_decode;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The scopes that name the ACS resource: the SDKs ask for the double-slash form.
const ACS_SCOPES: [&str; 2] = [
    "https://communication.azure.com//.default",
    "https://communication.azure.com/.default",
];
/// OpenID scopes MSAL may add; they do not change an app-only token.
const RESERVED_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];

/// A form body (`application/x-www-form-urlencoded`); the first value of a name wins.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let pairs = text
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k = percent_decode(&k.replace('+', " "))?;
                let v = percent_decode(&v.replace('+', " "))?;
                Some((k, v))
            })
            .collect();
        Self(pairs)
    }

    /// A non-empty parameter.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// `client_secret_basic`: `Authorization: Basic base64(urlencoded id ":" urlencoded secret)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((
        percent_decode(&id.replace('+', " "))?,
        percent_decode(&secret.replace('+', " "))?,
    ))
}

/// The client's credential, as presented.
enum Credential {
    Secret(String),
    Assertion(String),
}

/// Checks the scope parameter: exactly the ACS `.default` scope (plus OpenID scopes).
fn check_scope(scope: &str) -> Result<(), AadError> {
    let mut acs = false;
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if ACS_SCOPES.iter().any(|a| a.eq_ignore_ascii_case(s)) {
            acs = true;
        } else if RESERVED_SCOPES.contains(&s) {
        } else if !s.ends_with("/.default") {
            return Err(AadError::scope_not_default(s));
        } else {
            return Err(AadError::invalid_scope(s));
        }
    }
    if acs {
        Ok(())
    } else {
        Err(AadError::invalid_scope(scope))
    }
}

pub async fn handle(shared: &Shared, tenant: &str, headers: &HeaderMap, body: &Bytes) -> Resp {
    let entra = &shared.entra;
    let correlation = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok());
    match issue(shared, tenant, headers, body).await {
        Ok(resp) => {
            shared.stats.record_entra_token(None);
            resp
        }
        Err(e) => {
            tracing::debug!(
                error = e.error,
                code = e.code,
                "entra token request refused"
            );
            shared
                .stats
                .record_entra_token(Some((e.error, e.stats_key())));
            e.into_response(&entra.authority, correlation)
        }
    }
}

async fn issue(
    shared: &Shared,
    tenant: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Resp, AadError> {
    let entra = &shared.entra;
    if !entra.is_tenant(tenant) {
        return Err(AadError::tenant_not_found(tenant));
    }
    let form = Form::parse(body);
    let grant = form
        .get("grant_type")
        .ok_or_else(|| AadError::missing_parameter("grant_type"))?;
    if grant != "client_credentials" {
        return Err(AadError::unsupported_grant_type(grant));
    }
    let basic = basic_credentials(headers);
    let client_id = form
        .get("client_id")
        .map(str::to_string)
        .or_else(|| basic.as_ref().map(|(id, _)| id.clone()))
        .ok_or_else(|| AadError::missing_parameter("client_id"))?;
    let scope = form
        .get("scope")
        .ok_or_else(|| AadError::missing_parameter("scope"))?;
    check_scope(scope)?;
    let client: Client = Uuid::parse_str(&client_id)
        .ok()
        .and_then(|id| entra.lock_clients().get(id).cloned())
        .ok_or_else(|| AadError::app_not_found(&client_id, tenant))?;
    let secret = form
        .get("client_secret")
        .map(str::to_string)
        .or_else(|| basic.map(|(_, s)| s));
    let credential = match (secret, form.get("client_assertion")) {
        (Some(_), Some(_)) => return Err(AadError::two_credentials()),
        (None, None) => return Err(AadError::no_credential()),
        (Some(s), None) => Credential::Secret(s),
        (None, Some(a)) => Credential::Assertion(a.to_string()),
    };
    let now = Timestamp::now();
    let auth = match credential {
        Credential::Secret(secret) => {
            if !client.secret_matches(&secret) {
                return Err(AadError::invalid_secret(&client_id));
            }
            ClientAuth::Secret
        }
        Credential::Assertion(a) => {
            match form.get("client_assertion_type") {
                None => return Err(AadError::missing_parameter("client_assertion_type")),
                Some(JWT_BEARER) => {}
                Some(_) => return Err(AadError::unexpected_assertion_type()),
            }
            assertion::verify(&client, &a, entra.oidc(), entra.assertion_skew(), now).await?;
            ClientAuth::Assertion
        }
    };
    let (key, generated) = entra.key().await.map_err(|e| {
        tracing::warn!(error = %e, "entra signing key unavailable");
        AadError::server_error()
    })?;
    if generated {
        shared.persister.mark_dirty();
    }
    let lifetime = entra.token_lifetime_seconds();
    let token = access_token::mint(
        key,
        &entra.issuer(),
        entra.tenant_id,
        &client,
        auth,
        now,
        lifetime,
    )
    .map_err(|e| {
        tracing::warn!(error = %e, "entra token signing failed");
        AadError::server_error()
    })?;
    tracing::debug!(client_id = %client.client_id, "entra token issued");
    Ok(no_store(response::json(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_like_browsers_encode_them() {
        let f = Form::parse(
            b"a=1+2&b=x%2By&c=&a=ignored&scope=https%3A%2F%2Fcommunication.azure.com%2F%2F.default",
        );
        assert_eq!(f.get("a"), Some("1 2"));
        assert_eq!(f.get("b"), Some("x+y"));
        assert_eq!(f.get("c"), None);
        assert_eq!(
            f.get("scope"),
            Some("https://communication.azure.com//.default")
        );
    }

    #[test]
    fn only_the_acs_default_scope_is_served() {
        assert!(check_scope("https://communication.azure.com//.default").is_ok());
        assert!(check_scope("https://communication.azure.com/.default offline_access").is_ok());
        assert_eq!(
            check_scope("https://graph.microsoft.com/.default")
                .unwrap_err()
                .code,
            70011
        );
        assert_eq!(
            check_scope("https://communication.azure.com/user_impersonation")
                .unwrap_err()
                .code,
            1002012
        );
        assert_eq!(check_scope("openid").unwrap_err().code, 70011);
    }

    #[test]
    fn basic_credentials_are_url_decoded() {
        let mut h = HeaderMap::new();
        let raw = STANDARD.encode("id%3A1:s%2Bc~ret");
        h.insert(
            http::header::AUTHORIZATION,
            format!("Basic {raw}").parse().unwrap(),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("id:1".to_string(), "s+c~ret".to_string()))
        );
    }
}
