//! Resolves the ACS credentials of a resource: its own reference (a connection string in a
//! Secret, or Entra workload identity through a ServiceAccount), else the namespace's
//! `acs-credentials` Secret, else the operator-wide default (a Secret, or the operator's own
//! workload identity) in namespaces that opted in. Secret data is read with a GET only when
//! the Secret's resourceVersion (known from a metadata-only watch) changed, so no Secret data
//! is cached beyond the parsed credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::Client;

use crate::acs::ConnectionString;
use crate::api::{self, CredentialsRef};
use crate::config::DefaultCredentials;
use crate::entra::{AssertionSource, EntraTokens, Principal};

mod error;
mod secrets;
mod service;
mod workload_identity;
use crate::secret::Seal;
use crate::stores::Stores;
pub use error::CredentialsError;
use secrets::CachedSecret;
pub use service::{label_selector_matches, ServiceAuth, ServiceStores, ServiceView};
pub use workload_identity::Entra;

/// The annotation by which a ServiceAccount lets CommunicationUsers of its namespace use its
/// workload identity (the operator requests tokens for it).
pub const ALLOW_TOKEN_REQUEST_ANNOTATION: &str = "communication.acs.dev/allow-token-request";

/// Where credentials were found, for conditions and events (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsSource {
    Secret {
        namespace: String,
        secret: String,
        key: String,
    },
    ServiceAccount {
        namespace: String,
        name: String,
    },
    /// The operator's own workload identity (the operator-wide default).
    OperatorIdentity,
}

impl std::fmt::Display for CredentialsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret {
                namespace,
                secret,
                key,
            } => write!(f, "Secret {namespace}/{secret} key {key}"),
            Self::ServiceAccount { namespace, name } => {
                write!(f, "workload identity of ServiceAccount {namespace}/{name}")
            }
            Self::OperatorIdentity => f.write_str("the operator's own workload identity"),
        }
    }
}

/// How calls are authorized.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A connection string's access key (HMAC).
    Key(Arc<ConnectionString>),
    /// Microsoft Entra ID tokens of this principal.
    Entra(Principal),
}

/// Resolved credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The ACS endpoint, without a trailing `/`.
    pub endpoint: String,
    pub auth: Auth,
    pub source: CredentialsSource,
    /// Seals token Secrets; its fingerprint names these credentials.
    pub seal: Seal,
    /// These credentials are shared with other namespaces: the operator-wide default, or a
    /// ClusterCommunicationService's.
    pub operator_default: bool,
    /// The request budget of the service these credentials came from, if it sets one.
    pub budget: Option<ServiceBudget>,
}

/// A service's own request budget, shared by every object that uses the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceBudget {
    /// The service (kind, namespace, name): budgets are never shared between services.
    pub service: String,
    pub requests_per_second: u32,
}

impl Credentials {
    /// Identifies the credentials without revealing them (key or principal, and endpoint).
    pub fn fingerprint(&self) -> &str {
        self.seal.fingerprint()
    }

    /// What a cached ACS client may be shared by: the fingerprint, and for Entra credentials
    /// the assertion source too (the same client id named in another namespace is another
    /// principal, with its own bearer tokens).
    pub fn client_key(&self) -> String {
        match &self.auth {
            Auth::Key(_) => self.fingerprint().to_string(),
            Auth::Entra(p) => format!("{}|{}", self.fingerprint(), p.source_key()),
        }
    }
}

/// Looks up and parses credentials, caching the parsed value per Secret resourceVersion.
#[derive(Clone)]
pub struct CredentialsResolver {
    client: Client,
    /// Metadata of the Secrets that may hold credentials (every Secret not written by us).
    secrets: Stores<PartialObjectMeta<Secret>>,
    default: Option<DefaultCredentials>,
    cache: Arc<Mutex<HashMap<(String, String), CachedSecret>>>,
    /// One read at a time per Secret: the reconciles that miss the cache together (a start,
    /// a new namespace's tokens) wait for the first one's read instead of each reading.
    loads: secrets::Loads,
    /// Namespaces seen opted in, and when.
    opt_in: Arc<Mutex<HashMap<String, std::time::Instant>>>,
    entra: Option<Entra>,
    /// The hosts credentials may name; `None` checks nothing (narrow unit tests only).
    allowed: Option<crate::endpoint_allow::AllowedHosts>,
    sweeps: Arc<Sweeps>,
    /// The service objects users may reference (none in narrow unit tests).
    services: Option<ServiceStores>,
    /// Holds a ClusterCommunicationService's Secret unless it names another namespace.
    operator_namespace: String,
    /// Namespace labels read for cluster services' selectors.
    ns_labels: service::NamespaceLabels,
    /// Moves whenever the namespaces' label watch reports a change: a label read in flight
    /// across it is not cached (it may predate the change).
    labels_epoch: Arc<std::sync::atomic::AtomicU64>,
    /// The last view of each service users resolved through (see `last_known_service`).
    last_views: service::LastViews,
}

/// When a credential cache drops its useless entries: at an insertion, once it holds 256, and
/// after each sweep once it has doubled (so a large live cache is not swept at every miss).
#[derive(Debug)]
pub(crate) struct SweepAt(std::sync::atomic::AtomicUsize);

impl Default for SweepAt {
    fn default() -> Self {
        Self(std::sync::atomic::AtomicUsize::new(256))
    }
}

impl SweepAt {
    pub(crate) fn due(&self, len: usize) -> bool {
        len >= self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn swept(&self, len: usize) {
        self.0
            .store((2 * len).max(256), std::sync::atomic::Ordering::Relaxed);
    }
}

/// The sweep thresholds of the three credential caches.
#[derive(Debug, Default)]
pub(crate) struct Sweeps {
    secrets: SweepAt,
    namespaces: SweepAt,
    pub(crate) accounts: SweepAt,
    labels: SweepAt,
    views: SweepAt,
}

/// How long facts without a watch (namespace labels, Secrets outside the watched namespaces)
/// are reused before they are read again.
pub const UNWATCHED_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl CredentialsResolver {
    pub fn new(
        client: Client,
        secrets: Stores<PartialObjectMeta<Secret>>,
        default: Option<DefaultCredentials>,
        entra: Option<Entra>,
    ) -> Self {
        Self {
            client,
            secrets,
            default,
            cache: Arc::default(),
            loads: secrets::Loads::default(),
            opt_in: Arc::default(),
            entra,
            allowed: None,
            sweeps: Arc::default(),
            services: None,
            operator_namespace: "default".to_string(),
            ns_labels: Arc::default(),
            labels_epoch: Arc::default(),
            last_views: Arc::default(),
        }
    }

    /// The Entra token cache, when Entra credentials are enabled.
    pub fn entra_tokens(&self) -> Option<&EntraTokens> {
        self.entra.as_ref().map(|e| &e.tokens)
    }

    /// Resolves the credentials of a resource in `namespace` with an optional reference.
    /// Refuses credentials whose endpoint is not an allowed host (see [`crate::endpoint_allow`]).
    pub fn with_allowed_hosts(mut self, allowed: crate::endpoint_allow::AllowedHosts) -> Self {
        self.allowed = Some(allowed);
        self
    }

    fn check_endpoint(&self, c: Credentials) -> Result<Credentials, CredentialsError> {
        match &self.allowed {
            Some(a) if !a.permits(&c.endpoint) => Err(CredentialsError::EndpointNotAllowed {
                host: crate::endpoint_allow::host_only(&c.endpoint),
                allowed: a.describe(),
            }),
            _ => Ok(c),
        }
    }

    /// The credentials of a CommunicationUser of `namespace`: its service, else its own
    /// reference and the older fallbacks.
    pub async fn resolve_user(
        &self,
        namespace: &str,
        spec: &api::CommunicationUserSpec,
    ) -> Result<Credentials, CredentialsError> {
        match &spec.service_ref {
            Some(r) => self.resolve_service_ref(namespace, r).await,
            None => self.resolve(namespace, spec.credentials.as_ref()).await,
        }
    }

    /// The credentials for a resource of `namespace`, if their endpoint is an allowed host.
    pub async fn resolve(
        &self,
        namespace: &str,
        reference: Option<&CredentialsRef>,
    ) -> Result<Credentials, CredentialsError> {
        let c = self.resolve_any_endpoint(namespace, reference).await?;
        self.check_endpoint(c)
    }

    async fn resolve_any_endpoint(
        &self,
        namespace: &str,
        reference: Option<&CredentialsRef>,
    ) -> Result<Credentials, CredentialsError> {
        if let Some(r) = reference {
            if let Some((name, key)) = r.secret() {
                return self.read_secret(namespace, name, key).await;
            }
            if let (Some(endpoint), Some(wi)) = (&r.endpoint, &r.workload_identity) {
                return self
                    .service_account(namespace, &wi.service_account_name, endpoint)
                    .await;
            }
        }
        if self.exists(namespace, api::DEFAULT_CREDENTIALS_SECRET) {
            return self
                .read_secret(
                    namespace,
                    api::DEFAULT_CREDENTIALS_SECRET,
                    api::DEFAULT_CREDENTIALS_KEY,
                )
                .await;
        }
        if let Some(d) = &self.default {
            if self
                .namespace_opted_in(namespace, &d.namespace_selector)
                .await?
            {
                let mut c = self.read_secret(&d.namespace, &d.name, &d.key).await?;
                c.operator_default = d.namespace != namespace;
                return Ok(c);
            }
        }
        if let Some(entra) = &self.entra {
            if let (Some(d), Some(own)) = (&entra.default, &entra.config.own) {
                if self
                    .namespace_opted_in(namespace, &d.namespace_selector)
                    .await?
                {
                    let principal = Principal::new(
                        &entra.config.authority_host,
                        &own.tenant_id,
                        &own.client_id,
                        AssertionSource::File(own.token_file.clone()),
                    );
                    return self
                        .entra_credentials(
                            entra,
                            &d.endpoint,
                            principal,
                            CredentialsSource::OperatorIdentity,
                            true,
                        )
                        .await;
                }
            }
        }
        Err(CredentialsError::NoneConfigured {
            namespace: namespace.to_string(),
        })
    }

    fn exists(&self, namespace: &str, name: &str) -> bool {
        self.secrets.get(namespace, name).is_some()
    }

    /// Whether a watch follows the Secrets of `namespace` (their changes are announced).
    pub fn watches_secrets_of(&self, namespace: &str) -> bool {
        self.secrets.covers(namespace)
    }

    /// The cached metadata of a Secret that may hold credentials, if it exists in a watched
    /// namespace.
    pub fn secret_meta(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<PartialObjectMeta<Secret>>> {
        self.secrets.get(namespace, name)
    }

    async fn namespace_opted_in(
        &self,
        namespace: &str,
        selector: &str,
    ) -> Result<bool, CredentialsError> {
        // An opt-in is cached briefly: the namespaces' label watch drops it when the labels
        // change (and wakes the default's users when the opt-in flips); else removing the
        // label takes effect within UNWATCHED_TTL. A refusal is not cached.
        let epoch = self.labels_epoch();
        let seen = self
            .opt_in
            .lock()
            .ok()
            .and_then(|m| m.get(namespace).copied());
        if seen.is_some_and(|at| at.elapsed() < UNWATCHED_TTL) {
            return Ok(true);
        }
        let ns = Api::<Namespace>::all(self.client.clone())
            .get_metadata_opt(namespace)
            .await
            .map_err(CredentialsError::Kube)?;
        let labels = ns.and_then(|n| n.metadata.labels).unwrap_or_default();
        let opted = selector_matches(selector, &labels);
        if let Ok(mut m) = self.opt_in.lock() {
            if opted && self.labels_epoch() == epoch {
                // Expired entries are worth nothing (namespaces deleted leave theirs).
                if self.sweeps.namespaces.due(m.len()) {
                    m.retain(|_, at| at.elapsed() < UNWATCHED_TTL);
                    self.sweeps.namespaces.swept(m.len());
                }
                m.insert(namespace.to_string(), std::time::Instant::now());
            } else {
                m.remove(namespace);
            }
        }
        Ok(opted)
    }

    /// Entries of the credential caches: Secrets read, namespaces seen opted in,
    /// ServiceAccounts found usable.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let len = |m: Option<usize>| m.unwrap_or_default();
        (
            len(self.cache.lock().ok().map(|m| m.len())),
            len(self.opt_in.lock().ok().map(|m| m.len())),
            len(self
                .entra
                .as_ref()
                .and_then(|e| e.accounts.lock().ok().map(|m| m.len()))),
        )
    }
}

/// Equality-based label selector matching (`a=b,c!=d,e`), enough for an opt-in selector.
pub fn selector_matches(
    selector: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|req| {
            if let Some((k, v)) = req.split_once("!=") {
                labels.get(k.trim()).map(String::as_str) != Some(v.trim())
            } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                labels.get(k.trim()).map(String::as_str) == Some(v.trim())
            } else if let Some(k) = req.strip_prefix('!') {
                !labels.contains_key(k.trim())
            } else {
                labels.contains_key(req)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn selectors_match_like_kubernetes_equality_selectors() {
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        assert!(selector_matches("a=1", &labels));
        assert!(selector_matches("a==1", &labels));
        assert!(!selector_matches("a=2", &labels));
        assert!(selector_matches("a!=2", &labels));
        assert!(selector_matches("a", &labels));
        assert!(!selector_matches("b", &labels));
        assert!(selector_matches("!b", &labels));
        assert!(selector_matches("a=1, !b", &labels));
    }

    #[test]
    fn a_cache_is_swept_from_256_entries_and_then_each_time_it_doubles() {
        let s = SweepAt::default();
        assert!(!s.due(255));
        assert!(s.due(256));
        s.swept(200);
        assert!(!s.due(399));
        assert!(s.due(400));
        s.swept(10);
        assert!(s.due(256));
    }
}
