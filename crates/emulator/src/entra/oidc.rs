//! Fetching a federated issuer's signing keys as Entra does: `{issuer}/.well-known/openid-
//! configuration`, its `issuer` checked against the assertion's, then its `jwks_uri`. HTTPS
//! only, trusting the public roots plus any extra CA (`--oidc-ca-cert`, e.g. the cluster CA of
//! a Kubernetes apiserver). Keys are cached per issuer and refetched when a `kid` is unknown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;
use serde_json::Value;

/// How long fetched keys are used before they are fetched again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// An unknown `kid` refetches the keys, but not more often than this per issuer.
const REFETCH_AFTER: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Discovery documents and key sets are small; anything larger is refused.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Why an issuer's keys could not be had; the text goes into an AADSTS50166 description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("The issuer '{0}' is not an https URL.")]
    NotHttps(String),
    #[error("Could not fetch the OpenID configuration of '{0}'.")]
    Discovery(String),
    #[error("The OpenID configuration of '{0}' names another issuer.")]
    IssuerMismatch(String),
    #[error("Could not fetch the JSON web key set of '{0}'.")]
    Jwks(String),
}

/// An extra CA could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("an OIDC CA certificate is not usable PEM")]
    Pem(#[source] reqwest::Error),
    #[error("an OIDC CA file holds no PEM certificate")]
    Empty,
    #[error("failed to build the OIDC HTTP client")]
    Client(#[source] reqwest::Error),
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

struct Cached {
    fetched: Instant,
    keys: Arc<Vec<Jwk>>,
}

/// The fetcher and its per-issuer key cache.
pub struct OidcFetcher {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for OidcFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcFetcher").finish_non_exhaustive()
    }
}

impl OidcFetcher {
    /// A fetcher that also trusts the CA certificates in `extra_ca_pems`.
    pub fn new(extra_ca_pems: &[String]) -> Result<Self, CaError> {
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3));
        for pem in extra_ca_pems {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(CaError::Pem)?;
            if certs.is_empty() {
                return Err(CaError::Empty);
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: builder.build().map_err(CaError::Client)?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The issuer's keys; with `refresh`, fetched again unless they were just fetched.
    pub async fn keys(&self, issuer: &str, refresh: bool) -> Result<Arc<Vec<Jwk>>, FetchError> {
        if let Some(cached) = self.cached(issuer, refresh) {
            return Ok(cached);
        }
        let keys = Arc::new(self.fetch(issuer).await?);
        self.lock().insert(
            issuer.to_string(),
            Cached {
                fetched: Instant::now(),
                keys: keys.clone(),
            },
        );
        Ok(keys)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, issuer: &str, refresh: bool) -> Option<Arc<Vec<Jwk>>> {
        let cache = self.lock();
        let entry = cache.get(issuer)?;
        let age = entry.fetched.elapsed();
        let fresh = if refresh {
            age < REFETCH_AFTER
        } else {
            age < CACHE_TTL
        };
        fresh.then(|| entry.keys.clone())
    }

    async fn fetch(&self, issuer: &str) -> Result<Vec<Jwk>, FetchError> {
        if !issuer.starts_with("https://") {
            return Err(FetchError::NotHttps(issuer.to_string()));
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self
            .get_json(&url)
            .await
            .ok_or_else(|| FetchError::Discovery(issuer.to_string()))?;
        if discovery.issuer != issuer {
            return Err(FetchError::IssuerMismatch(issuer.to_string()));
        }
        let jwks: Value = self
            .get_json(&discovery.jwks_uri)
            .await
            .ok_or_else(|| FetchError::Jwks(issuer.to_string()))?;
        let entries = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| FetchError::Jwks(issuer.to_string()))?;
        // One entry of a kind jsonwebtoken does not know must not hide the others.
        let keys: Vec<Jwk> = entries
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .collect();
        tracing::debug!(%issuer, keys = keys.len(), "oidc keys fetched");
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Option<T> {
        let resp = match self.http.get(url).send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%url, error = %e, "oidc fetch failed");
                return None;
            }
        };
        if !resp.status().is_success() {
            tracing::debug!(%url, status = %resp.status(), "oidc fetch refused");
            return None;
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            tracing::debug!(%url, "oidc document too large");
            return None;
        }
        let bytes = match resp.bytes().await {
            Ok(b) if b.len() <= MAX_DOCUMENT_BYTES => b,
            Ok(_) => {
                tracing::debug!(%url, "oidc document too large");
                return None;
            }
            Err(e) => {
                tracing::debug!(%url, error = %e, "oidc document unreadable");
                return None;
            }
        };
        let parsed = serde_json::from_slice(&bytes);
        if let Err(e) = &parsed {
            tracing::debug!(%url, error = %e, "oidc document is not the expected JSON");
        }
        parsed.ok()
    }
}
