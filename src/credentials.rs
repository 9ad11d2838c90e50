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

use crate::acs::{ConnectionString, ConnectionStringError};
use crate::api::{self, CredentialsRef};
use crate::config::DefaultCredentials;
use crate::entra::{AssertionSource, EntraTokens, Principal};

mod service;
mod workload_identity;
use crate::sealing::SealingKeyError;
use crate::secret::SealKey;
use crate::stores::Stores;
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
    pub seal: SealKey,
    /// These credentials are shared with other namespaces: the operator-wide default, or a
    /// ClusterCommunicationService's.
    pub operator_default: bool,
    /// The request budget of the service these credentials came from, if it sets one.
    pub requests_per_second: Option<u32>,
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

/// Why no usable credentials were found. Messages name the Secret and key, never the value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("endpoint host {host} is not an allowed ACS host ({allowed}); no request is sent there: fix the endpoint, or have the operator's administrator add the host (flag --allowed-endpoint-hosts, chart value acs.allowedEndpointHosts)")]
    EndpointNotAllowed { host: String, allowed: String },
    #[error("credentials Secret {namespace}/{name} not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("no credentials: set spec.credentials, create Secret {namespace}/acs-credentials with key connectionString, or label the namespace to use the operator's default credentials")]
    NoneConfigured { namespace: String },
    #[error("credentials Secret {namespace}/{name} has no key {key}")]
    KeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("credentials in Secret {namespace}/{name} key {key} are invalid")]
    Invalid {
        namespace: String,
        name: String,
        key: String,
        #[source]
        source: ConnectionStringError,
    },
    #[error("ServiceAccount {namespace}/{name} not found")]
    ServiceAccountNotFound { namespace: String, name: String },
    #[error("ServiceAccount {namespace}/{name} has not opted in to token requests: annotate it with communication.acs.dev/allow-token-request=\"true\" to let CommunicationUsers of this namespace use its workload identity")]
    TokenRequestNotAllowed { namespace: String, name: String },
    #[error("ServiceAccount {namespace}/{name} has no {annotation} annotation: set it to the Entra application's or managed identity's {what}")]
    ServiceAccountIncomplete {
        namespace: String,
        name: String,
        annotation: &'static str,
        what: &'static str,
    },
    #[error("{service} not found")]
    ServiceNotFound { service: String },
    #[error("{service} does not select namespace {namespace}: its namespaceSelector decides which namespaces may use it (ask the platform team that owns it)")]
    NamespaceNotSelected { service: String, namespace: String },
    #[error("{service} names endpoint {expected}, but the connection string in Secret {secret} is for {found}")]
    EndpointMismatch {
        service: String,
        secret: String,
        found: String,
        expected: String,
    },
    #[error("{service} uses operatorIdentity, but the operator has no workload identity of its own (chart value entra.operatorIdentity)")]
    NoOperatorIdentity { service: String },
    #[error(transparent)]
    Sealing(#[from] SealingKeyError),
    #[error("failed to read credentials")]
    Kube(#[source] kube::Error),
}

impl CredentialsError {
    /// Transient errors are retried with backoff; the others wait for a Secret change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Kube(_) | Self::Sealing(SealingKeyError::Kube(..))
        )
    }

    /// When to look again without a watch event: ServiceAccounts are not watched, so their
    /// annotations are read again after a minute.
    pub fn requeue(&self) -> std::time::Duration {
        match self {
            Self::ServiceAccountNotFound { .. }
            | Self::TokenRequestNotAllowed { .. }
            | Self::ServiceAccountIncomplete { .. } => std::time::Duration::from_secs(60),
            // Namespace labels are not watched either.
            Self::NamespaceNotSelected { .. } => UNWATCHED_TTL,
            _ => std::time::Duration::from_secs(300),
        }
    }

    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid { .. }
            | Self::KeyMissing { .. }
            | Self::EndpointMismatch { .. }
            | Self::ServiceAccountIncomplete { .. }
            | Self::Sealing(SealingKeyError::Unusable(_)) => {
                api::condition::reasons::CREDENTIALS_INVALID
            }
            Self::TokenRequestNotAllowed { .. } => {
                api::condition::reasons::TOKEN_REQUEST_NOT_ALLOWED
            }
            Self::Kube(_) | Self::Sealing(_) => api::condition::reasons::ACS_ERROR,
            Self::EndpointNotAllowed { .. } => api::condition::reasons::ENDPOINT_NOT_ALLOWED,
            Self::ServiceNotFound { .. } => api::condition::reasons::SERVICE_NOT_FOUND,
            Self::NamespaceNotSelected { .. } => api::condition::reasons::NAMESPACE_NOT_SELECTED,
            _ => api::condition::reasons::CREDENTIALS_NOT_FOUND,
        }
    }

    /// The full message including the cause (a parse error never holds the key).
    pub fn message(&self) -> String {
        match self {
            Self::Invalid { source, .. } => format!("{self}: {source}"),
            Self::Kube(e) | Self::Sealing(SealingKeyError::Kube(_, e)) => format!("{self}: {e}"),
            _ => self.to_string(),
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
}

/// How long what was read of a Secret gone from the cache is kept.
const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// How long facts without a watch (namespace labels, Secrets outside the watched namespaces)
/// are reused before they are read again.
pub const UNWATCHED_TTL: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Clone)]
struct CachedSecret {
    resource_version: String,
    fetched_at: std::time::Instant,
    /// When a sweep first found the Secret gone from the cache of Secrets.
    gone_since: Option<std::time::Instant>,
    keys: HashMap<String, Result<Arc<ConnectionString>, ConnectionStringError>>,
}

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
            opt_in: Arc::default(),
            entra,
            allowed: None,
            sweeps: Arc::default(),
            services: None,
            operator_namespace: "default".to_string(),
            ns_labels: Arc::default(),
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
        // Namespaces are not watched (namespaced RBAC grants only `get`), so an opt-in is
        // cached briefly: removing the label takes effect within UNWATCHED_TTL. A refusal is
        // not cached, so adding the label takes effect at the next reconcile.
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
            if opted {
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

    async fn read_secret(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Credentials, CredentialsError> {
        let source = CredentialsSource::Secret {
            namespace: namespace.to_string(),
            secret: name.to_string(),
            key: key.to_string(),
        };
        let cache_key = (namespace.to_string(), name.to_string());
        let current_rv = self
            .secrets
            .get(namespace, name)
            .and_then(|m| m.metadata.resource_version.clone());
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&cache_key).cloned())
            .filter(|c| match &current_rv {
                Some(rv) => *rv == c.resource_version,
                // A Secret outside the watched namespaces (the operator-wide default in
                // namespaced mode) has no watch to tell of changes: re-read it after a while.
                None => !self.secrets.covers(namespace) && c.fetched_at.elapsed() < UNWATCHED_TTL,
            });
        let entry = match cached {
            Some(c) => c,
            None => {
                let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
                    .get_opt(name)
                    .await
                    .map_err(CredentialsError::Kube)?
                    .ok_or_else(|| CredentialsError::SecretNotFound {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                    })?;
                let entry = parse_secret(&secret);
                if let Ok(mut c) = self.cache.lock() {
                    if self.sweeps.secrets.due(c.len()) {
                        self.sweep(&mut c);
                        self.sweeps.secrets.swept(c.len());
                    }
                    c.insert(cache_key, entry.clone());
                }
                entry
            }
        };
        match entry.keys.get(key) {
            Some(Ok(conn)) => Ok(Credentials {
                endpoint: conn.endpoint.clone(),
                seal: SealKey::access_key(&conn.access_key),
                auth: Auth::Key(conn.clone()),
                source,
                operator_default: false,
                requests_per_second: None,
            }),
            Some(Err(e)) => Err(CredentialsError::Invalid {
                namespace: namespace.to_string(),
                name: name.to_string(),
                key: key.to_string(),
                source: e.clone(),
            }),
            None => Err(CredentialsError::KeyMissing {
                namespace: namespace.to_string(),
                name: name.to_string(),
                key: key.to_string(),
            }),
        }
    }

    /// Drops what was read of Secrets gone from the cache of Secrets for [`FORGET_AFTER`]:
    /// their last known value serves a cleanup racing the Secret's deletion (a namespace
    /// being deleted), not more. Unwatched Secrets are never in that cache: theirs go
    /// [`FORGET_AFTER`] after a sweep first sees them, and are read again when needed.
    fn sweep(&self, c: &mut HashMap<(String, String), CachedSecret>) {
        let now = std::time::Instant::now();
        c.retain(|(ns, name), e| {
            if self.secrets.get(ns, name).is_some() {
                e.gone_since = None;
                return true;
            }
            let since = *e.gone_since.get_or_insert(now);
            now.duration_since(since) < FORGET_AFTER
        });
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

    /// Forgets what was read of a Secret, so the next resolve reads it again.
    pub fn invalidate(&self, namespace: &str, name: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(&(namespace.to_string(), name.to_string()));
        }
    }

    /// The operator-wide default Secret when no watch covers it (namespaced mode, the
    /// operator's namespace not watched): `None` when it is watched or not configured.
    pub fn unwatched_default(&self) -> Option<&DefaultCredentials> {
        self.default
            .as_ref()
            .filter(|d| !self.secrets.covers(&d.namespace))
    }

    /// Polls the unwatched default Secret's metadata every `period` and sends on `changed`
    /// when its resourceVersion moves (a key rotation), after dropping the cached value: its
    /// users and tokens then reconcile within one period instead of never.
    pub async fn poll_unwatched_default(
        self,
        changed: tokio::sync::broadcast::Sender<()>,
        period: std::time::Duration,
    ) {
        let Some(d) = self.unwatched_default().cloned() else {
            return;
        };
        let api = Api::<Secret>::namespaced(self.client.clone(), &d.namespace);
        let mut last: Option<Option<String>> = None;
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let rv = match api.get_metadata_opt(&d.name).await {
                Ok(m) => m.and_then(|m| m.metadata.resource_version),
                Err(e) => {
                    tracing::debug!(error = %e, "failed to read the default credentials Secret's metadata");
                    continue;
                }
            };
            if last.as_ref().is_some_and(|l| *l != rv) {
                tracing::info!(secret = %format!("{}/{}", d.namespace, d.name), "the default credentials changed");
                self.invalidate(&d.namespace, &d.name);
                let _ = changed.send(());
            }
            last = Some(rv);
        }
    }

    /// The last credentials seen for a Secret, even if it is gone now: lets a finalizer delete
    /// an identity while its namespace is being torn down and the Secret went first.
    pub fn last_known(&self, namespace: &str, name: &str, key: &str) -> Option<Credentials> {
        let known = self.last_known_any_endpoint(namespace, name, key)?;
        self.check_endpoint(known).ok()
    }

    fn last_known_any_endpoint(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Option<Credentials> {
        let c = self.cache.lock().ok()?;
        match c
            .get(&(namespace.to_string(), name.to_string()))?
            .keys
            .get(key)?
        {
            Ok(conn) => Some(Credentials {
                endpoint: conn.endpoint.clone(),
                seal: SealKey::access_key(&conn.access_key),
                auth: Auth::Key(conn.clone()),
                source: CredentialsSource::Secret {
                    namespace: namespace.to_string(),
                    secret: name.to_string(),
                    key: key.to_string(),
                },
                operator_default: false,
                requests_per_second: None,
            }),
            Err(_) => None,
        }
    }
}

fn parse_secret(secret: &Secret) -> CachedSecret {
    let mut keys = HashMap::new();
    let mut add = |k: &str, v: &[u8]| {
        let parsed = std::str::from_utf8(v)
            .map_err(|_| ConnectionStringError::MalformedSegment)
            .and_then(ConnectionString::parse)
            .map(Arc::new);
        keys.insert(k.to_string(), parsed);
    };
    for (k, v) in secret.data.iter().flatten() {
        add(k, &v.0);
    }
    for (k, v) in secret.string_data.iter().flatten() {
        add(k, v.as_bytes());
    }
    CachedSecret {
        gone_since: None,
        resource_version: secret.metadata.resource_version.clone().unwrap_or_default(),
        fetched_at: std::time::Instant::now(),
        keys,
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
    fn secret_keys_parse_independently_and_errors_hold_no_key() {
        let good = "endpoint=https://x/;accesskey=c2VjcmV0c2VjcmV0c2VjcmV0";
        let s = Secret {
            data: Some(BTreeMap::from([
                (
                    "primaryConnectionString".into(),
                    k8s_openapi::ByteString(good.as_bytes().to_vec()),
                ),
                (
                    "broken".into(),
                    k8s_openapi::ByteString(b"endpoint=https://x/;c2VjcmV0".to_vec()),
                ),
            ])),
            ..Secret::default()
        };
        let c = parse_secret(&s);
        assert!(c.keys["primaryConnectionString"].is_ok());
        let err = CredentialsError::Invalid {
            namespace: "ns".into(),
            name: "n".into(),
            key: "broken".into(),
            source: c.keys["broken"].clone().unwrap_err(),
        };
        assert!(!err.message().contains("c2VjcmV0"), "{}", err.message());
        assert_eq!(c.keys.len(), 2);
    }

    #[tokio::test]
    async fn what_was_read_of_a_secret_outlives_its_deletion_by_the_grace_only() {
        use kube::runtime::{reflector, watcher};
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let (store, mut writer) = reflector::store::<PartialObjectMeta<Secret>>();
        let mut live = PartialObjectMeta::<Secret>::default();
        live.metadata.namespace = Some("ns".into());
        live.metadata.name = Some("live".into());
        writer.apply_watcher_event(&watcher::Event::Apply(live));
        let r = CredentialsResolver::new(client, Stores::new(vec![(None, store)]), None, None);
        let mut c: HashMap<(String, String), CachedSecret> = ["live", "gone", "long-gone"]
            .into_iter()
            .map(|n| {
                (
                    ("ns".to_string(), n.to_string()),
                    parse_secret(&Secret::default()),
                )
            })
            .collect();
        let long_ago = std::time::Instant::now() - FORGET_AFTER - std::time::Duration::from_secs(1);
        c.get_mut(&("ns".into(), "long-gone".into()))
            .unwrap()
            .gone_since = Some(long_ago);
        // Read long ago but still there, or gone just now: kept (a cleanup racing the
        // deletion reads the last known key).
        c.get_mut(&("ns".into(), "live".into())).unwrap().fetched_at = long_ago;
        r.sweep(&mut c);
        let mut kept: Vec<&str> = c.keys().map(|(_, n)| n.as_str()).collect();
        kept.sort();
        assert_eq!(kept, ["gone", "live"]);
        assert!(c[&("ns".into(), "gone".into())].gone_since.is_some());
        assert!(c[&("ns".into(), "live".into())].gone_since.is_none());
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
