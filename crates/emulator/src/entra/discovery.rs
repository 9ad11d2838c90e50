//! The documents MSAL and OIDC validators read: the tenant's OpenID configuration (v2.0), its
//! key set, and instance discovery (`/common/discovery/instance`), all naming the emulator's
//! authority (`--entra-host` when set). `common` and `organizations` get the multi-tenant
//! configuration, whose issuer holds the `{tenantid}` placeholder as Entra's does.

use http::StatusCode;
use serde_json::json;

use super::oauth_error::AadError;
use super::Entra;
use crate::context::Shared;
use crate::response::{self, Resp};
use crate::routes::query_param;

const MULTI_TENANT: [&str; 2] = ["common", "organizations"];

/// The tenant segment of documents: this tenant's id, or a multi-tenant alias.
fn tenant_segment(entra: &Entra, tenant: &str) -> Option<String> {
    if entra.is_tenant(tenant) {
        Some(entra.tenant_id.to_string())
    } else if MULTI_TENANT.contains(&tenant.to_ascii_lowercase().as_str()) {
        Some(tenant.to_ascii_lowercase())
    } else {
        None
    }
}

pub fn openid_configuration(entra: &Entra, tenant: &str) -> Resp {
    let Some(segment) = tenant_segment(entra, tenant) else {
        return AadError::invalid_tenant(tenant).into_response(&entra.authority, None);
    };
    let a = &entra.authority;
    let issuer_tenant = if entra.is_tenant(tenant) {
        segment.clone()
    } else {
        "{tenantid}".to_string()
    };
    response::json(
        StatusCode::OK,
        &json!({
            "token_endpoint": format!("{a}/{segment}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{a}/{segment}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("{a}/{issuer_tenant}/v2.0"),
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("{a}/{segment}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{a}/{segment}/oauth2/v2.0/devicecode"),
            "end_session_endpoint": format!("{a}/{segment}/oauth2/v2.0/logout"),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "azp", "ver"],
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
        }),
    )
}

pub async fn keys(shared: &Shared, tenant: &str) -> Resp {
    let entra = &shared.entra;
    if tenant_segment(entra, tenant).is_none() {
        return AadError::invalid_tenant(tenant).into_response(&entra.authority, None);
    }
    // Publishing the key set is a first use too: a validator may fetch it before any token.
    let key = match entra.key().await {
        Ok((key, generated)) => {
            if generated {
                shared.persister.mark_dirty();
            }
            key
        }
        Err(e) => {
            tracing::warn!(error = %e, "entra signing key unavailable");
            return AadError::server_error().into_response(&entra.authority, None);
        }
    };
    let issuer = entra.is_tenant(tenant).then(|| entra.issuer());
    response::json(
        StatusCode::OK,
        &json!({ "keys": [key.jwk(issuer.as_deref())] }),
    )
}

/// `scheme://host[:port]` of an absolute URL, lowercased.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| {
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            host.to_ascii_lowercase()
        )
    })
}

/// `GET /common/discovery/instance?api-version=1.1&authorization_endpoint=...`: known hosts are
/// the authority's and the emulator endpoint's; others are `invalid_instance`, as Entra
/// answers for a host it does not know.
pub fn instance(shared: &Shared, raw_query: &str) -> Resp {
    let entra = &shared.entra;
    let mut known: Vec<String> = [entra.authority.as_str(), shared.endpoint.as_str()]
        .into_iter()
        .filter_map(origin)
        .collect();
    known.dedup();
    let requested = query_param(raw_query, "authorization_endpoint");
    let (base, tenant) = match requested.as_deref() {
        None => (entra.authority.clone(), "common".to_string()),
        Some(url) => {
            let Some(o) = origin(url).filter(|o| known.contains(o)) else {
                return AadError::invalid_instance().into_response(&entra.authority, None);
            };
            let path = url.split_once("://").and_then(|(_, r)| r.split_once('/'));
            let tenant = path
                .and_then(|(_, p)| p.split('/').next())
                .filter(|t| !t.is_empty())
                .unwrap_or("common")
                .to_string();
            (o, tenant)
        }
    };
    let hosts: Vec<String> = known
        .iter()
        .filter_map(|o| o.split_once("://").map(|(_, h)| h.to_string()))
        .collect();
    let preferred = hosts.first().cloned().unwrap_or_default();
    response::json(
        StatusCode::OK,
        &json!({
            "tenant_discovery_endpoint": format!("{base}/{tenant}/v2.0/.well-known/openid-configuration"),
            "api-version": "1.1",
            "metadata": [{
                "preferred_network": preferred,
                "preferred_cache": preferred,
                "aliases": hosts,
            }],
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origins_keep_the_port_and_drop_the_path() {
        assert_eq!(
            origin("https://Login.Test:8443/t/oauth2/v2.0/authorize").as_deref(),
            Some("https://login.test:8443")
        );
        assert_eq!(origin("nope"), None);
    }
}
