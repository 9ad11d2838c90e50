//! A stand-in for Microsoft Entra ID, enough for the ACS Identity API's Entra authentication:
//! one tenant per emulator, app registrations made through the admin API, the client-credentials
//! grant with a secret or a federated client assertion, the discovery documents MSAL reads, and
//! bearer-token checks (with the ACS data-plane roles) for the Identity API.
//!
//! Modules: `clients` (registrations and roles), `keys` (the tenant's RSA key), `access_token`
//! (mint and verify), `assertion` (federated credentials), `oidc` (fetching a federated issuer's
//! keys), `token_endpoint`, `discovery`, `bearer` (the Identity API's gate), `admin`
//! (`/_emulator/entra/...`), `oauth_error` (Entra's error shape).

mod access_token;
pub mod admin;
mod assertion;
pub mod bearer;
mod clients;
mod discovery;
mod keys;
mod oauth_error;
mod oidc;
mod token_endpoint;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use uuid::Uuid;

use crate::context::Shared;
use crate::response::Resp;

pub use clients::Client;
pub use keys::{EntraKey, KeyError};
pub use oidc::CaError;

/// Entra's default access-token lifetime for the emulator (Entra's own varies 60–90 minutes).
pub const DEFAULT_TOKEN_LIFETIME_SECONDS: u64 = 3600;

/// The durable part of the tenant, as loaded from (and written to) the state file.
#[derive(Debug)]
pub struct EntraState {
    pub tenant_id: Uuid,
    pub key: Option<EntraKey>,
    pub clients: Vec<Client>,
}

impl EntraState {
    pub fn fresh() -> Self {
        Self {
            tenant_id: Uuid::new_v4(),
            key: None,
            clients: Vec::new(),
        }
    }
}

/// The running tenant.
#[derive(Debug)]
pub struct Entra {
    pub tenant_id: Uuid,
    /// `https://host[:port]` that the discovery documents and the issuer name.
    pub authority: String,
    /// Made on first use (token request or key set), then kept in the state file.
    key: tokio::sync::OnceCell<EntraKey>,
    clients: Mutex<clients::Registry>,
    oidc: oidc::OidcFetcher,
    token_lifetime_seconds: AtomicU64,
    /// Accepted clock difference for assertion `exp`/`nbf`.
    assertion_skew: Duration,
}

/// The Entra route a path is, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntraPath {
    Token(String),
    OpenIdConfiguration(String),
    Keys(String),
    InstanceDiscovery,
}

/// Matches the raw path (no query) against the Entra routes. Identity API paths never match.
pub fn classify(raw_path: &str) -> Option<EntraPath> {
    let rest = raw_path.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    let tenant = |t: &str| crate::routes::percent_decode(t).filter(|t| !t.is_empty());
    match segments.as_slice() {
        ["common", "discovery", "instance"] => Some(EntraPath::InstanceDiscovery),
        [t, "oauth2", "v2.0", "token"] => tenant(t).map(EntraPath::Token),
        [t, "v2.0", ".well-known", "openid-configuration"] => {
            tenant(t).map(EntraPath::OpenIdConfiguration)
        }
        [t, "discovery", "v2.0", "keys"] | [t, "discovery", "keys"] => {
            tenant(t).map(EntraPath::Keys)
        }
        _ => None,
    }
}

impl Entra {
    pub fn new(
        state: EntraState,
        authority: String,
        oidc_ca_pems: &[String],
        token_lifetime_seconds: u64,
        assertion_skew: Duration,
    ) -> Result<Self, CaError> {
        Ok(Self {
            tenant_id: state.tenant_id,
            authority,
            key: state.key.map_or_else(tokio::sync::OnceCell::new, |k| {
                tokio::sync::OnceCell::new_with(Some(k))
            }),
            clients: Mutex::new(clients::Registry::new(state.clients)),
            oidc: oidc::OidcFetcher::new(oidc_ca_pems)?,
            token_lifetime_seconds: AtomicU64::new(token_lifetime_seconds),
            assertion_skew,
        })
    }

    /// `{authority}/{tenant}/v2.0`: the `iss` of every access token.
    pub fn issuer(&self) -> String {
        format!("{}/{}/v2.0", self.authority, self.tenant_id)
    }

    /// Whether `tenant` (from a path) names this tenant.
    pub fn is_tenant(&self, tenant: &str) -> bool {
        Uuid::parse_str(tenant).is_ok_and(|t| t == self.tenant_id)
    }

    /// The registry. Its critical sections are short and cannot leave it inconsistent.
    pub fn lock_clients(&self) -> MutexGuard<'_, clients::Registry> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key if one exists (nothing was ever signed without one).
    pub fn existing_key(&self) -> Option<&EntraKey> {
        self.key.get()
    }

    /// The key, generated off the async threads on first use. `true` when it was just made
    /// (so the state file needs writing).
    pub async fn key(&self) -> Result<(&EntraKey, bool), KeyError> {
        let existed = self.key.initialized();
        let key = self
            .key
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(EntraKey::generate)
                    .await
                    .map_err(|_| KeyError::Interrupted)?
            })
            .await?;
        Ok((key, !existed))
    }

    pub fn token_lifetime_seconds(&self) -> u64 {
        self.token_lifetime_seconds.load(Ordering::Relaxed)
    }

    pub fn set_token_lifetime_seconds(&self, seconds: u64) {
        self.token_lifetime_seconds
            .store(seconds, Ordering::Relaxed);
    }

    pub fn assertion_skew(&self) -> Duration {
        self.assertion_skew
    }

    pub fn oidc(&self) -> &oidc::OidcFetcher {
        &self.oidc
    }

    /// The durable part, for the state file.
    pub fn snapshot(&self) -> (Uuid, Option<Vec<u8>>, Vec<Client>) {
        (
            self.tenant_id,
            self.key.get().map(|k| k.pkcs1_der().to_vec()),
            self.lock_clients().list().to_vec(),
        )
    }
}

/// Answers one Entra request (no HMAC, no faults, no rate limits: it is another service).
pub async fn handle(
    shared: &Shared,
    path: EntraPath,
    method: &Method,
    raw_query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Resp {
    let entra = &shared.entra;
    let correlation = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok());
    match path {
        EntraPath::Token(tenant) => {
            if method != Method::POST {
                return oauth_error::AadError::method_not_allowed(method.as_str())
                    .into_response(&entra.authority, correlation);
            }
            token_endpoint::handle(shared, &tenant, headers, body).await
        }
        EntraPath::OpenIdConfiguration(tenant) => discovery::openid_configuration(entra, &tenant),
        EntraPath::Keys(tenant) => discovery::keys(shared, &tenant).await,
        EntraPath::InstanceDiscovery => discovery::instance(shared, raw_query),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_paths_are_told_apart_from_identity_paths() {
        assert_eq!(
            classify("/t1/oauth2/v2.0/token"),
            Some(EntraPath::Token("t1".into()))
        );
        assert_eq!(
            classify("/t1/v2.0/.well-known/openid-configuration"),
            Some(EntraPath::OpenIdConfiguration("t1".into()))
        );
        assert_eq!(
            classify("/t1/discovery/v2.0/keys"),
            Some(EntraPath::Keys("t1".into()))
        );
        assert_eq!(
            classify("/common/discovery/instance"),
            Some(EntraPath::InstanceDiscovery)
        );
        for identity in [
            "/identities",
            "/identities/x",
            "/identities/x/:issueAccessToken",
            "/teamsUser/:exchangeAccessToken",
            "//oauth2/v2.0/token",
        ] {
            assert_eq!(classify(identity), None, "{identity}");
        }
    }
}
