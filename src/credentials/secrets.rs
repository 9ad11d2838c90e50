//! Connection strings read from Secrets: a Secret's data is read with a GET only when its
//! resourceVersion (known from a metadata-only watch) changed, and only the parsed keys are
//! kept; what was read of a Secret outlives its deletion briefly, for a cleanup racing it.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::UNWATCHED_TTL;
use super::{Auth, Credentials, CredentialsError, CredentialsResolver, CredentialsSource};
use crate::acs::{ConnectionString, ConnectionStringError};
use crate::config::DefaultCredentials;
use crate::secret::Seal;

/// How long what was read of a Secret gone from the cache is kept.
pub(super) const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// The reads of Secrets in progress, by namespace and name; an entry lives while a read of
/// it is awaited.
#[derive(Default, Clone)]
pub(super) struct Loads(Arc<std::sync::Mutex<HashMap<(String, String), Gate>>>);

type Gate = Arc<tokio::sync::Mutex<()>>;

/// A reconcile's hold on the gate of one Secret's read; the last one dropped removes it (a
/// cancelled reconcile included).
pub(super) struct Entered {
    loads: Loads,
    key: (String, String),
    gate: Option<Gate>,
}

impl Entered {
    pub(super) fn gate(&self) -> &tokio::sync::Mutex<()> {
        self.gate
            .as_deref()
            .unwrap_or_else(|| unreachable!("set until dropped"))
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let mut loads = self
            .loads
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Under the lock, where every clone is made: the last holder sees only the map's.
        drop(self.gate.take());
        if loads
            .get(&self.key)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            loads.remove(&self.key);
        }
    }
}

impl Loads {
    fn enter(&self, key: &(String, String)) -> Entered {
        let gate = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        Entered {
            loads: self.clone(),
            key: key.clone(),
            gate: Some(gate),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[derive(Clone)]
pub(super) struct CachedSecret {
    resource_version: String,
    fetched_at: std::time::Instant,
    /// When a sweep first found the Secret gone from the cache of Secrets.
    gone_since: Option<std::time::Instant>,
    keys: HashMap<String, Result<Arc<ConnectionString>, ConnectionStringError>>,
}

impl CredentialsResolver {
    pub(super) async fn read_secret(
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
        // `since`: an entry read after this instant is as fresh as a read of our own.
        let cached = |since: Option<std::time::Instant>| {
            self.cache
                .lock()
                .ok()
                .and_then(|c| c.get(&cache_key).cloned())
                .filter(|c| {
                    since.is_some_and(|s| c.fetched_at >= s)
                        || match &current_rv {
                            Some(rv) => *rv == c.resource_version,
                            // A Secret outside the watched namespaces (the operator-wide default
                            // in namespaced mode) has no watch to tell of changes: re-read it
                            // after a while.
                            None => {
                                !self.secrets.covers(namespace)
                                    && c.fetched_at.elapsed() < UNWATCHED_TTL
                            }
                        }
                })
        };
        let entry = match cached(None) {
            Some(c) => c,
            None => {
                let since = std::time::Instant::now();
                let entered = self.loads.enter(&cache_key);
                let _one_at_a_time = entered.gate().lock().await;
                match cached(Some(since)) {
                    Some(c) => c,
                    None => {
                        // Stamped before the request: a read sent before another reconcile's
                        // miss is not fresh enough for it.
                        let sent = std::time::Instant::now();
                        let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
                            .get_opt(name)
                            .await
                            .map_err(CredentialsError::Kube)?
                            .ok_or_else(|| CredentialsError::SecretNotFound {
                                namespace: namespace.to_string(),
                                name: name.to_string(),
                            })?;
                        let mut entry = parse_secret(&secret);
                        entry.fetched_at = sent;
                        if let Ok(mut c) = self.cache.lock() {
                            if self.sweeps.secrets.due(c.len()) {
                                self.sweep(&mut c);
                                self.sweeps.secrets.swept(c.len());
                            }
                            c.insert(cache_key.clone(), entry.clone());
                        }
                        entry
                    }
                }
            }
        };
        match entry.keys.get(key) {
            Some(Ok(conn)) => Ok(Credentials {
                endpoint: conn.endpoint.clone(),
                seal: Seal::access_key(&conn.access_key),
                auth: Auth::Key(conn.clone()),
                source,
                operator_default: false,
                budget: None,
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
                seal: Seal::access_key(&conn.access_key),
                auth: Auth::Key(conn.clone()),
                source: CredentialsSource::Secret {
                    namespace: namespace.to_string(),
                    secret: name.to_string(),
                    key: key.to_string(),
                },
                operator_default: false,
                budget: None,
            }),
            Err(_) => None,
        }
    }
}

pub(super) fn parse_secret(secret: &Secret) -> CachedSecret {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::Stores;
    use kube::api::PartialObjectMeta;
    use kube::Client;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn concurrent_reads_of_a_secret_share_one_gate_that_the_last_one_removes() {
        let loads = Loads::default();
        let key = ("ns".to_string(), "creds".to_string());
        let first = loads.enter(&key);
        let second = loads.enter(&key);
        assert!(
            std::ptr::eq(first.gate(), second.gate()),
            "one gate per Secret"
        );
        let other = loads.enter(&("ns".to_string(), "other".to_string()));
        assert!(!std::ptr::eq(first.gate(), other.gate()));
        let held = first.gate().lock().await;
        assert!(
            second.gate().try_lock().is_err(),
            "the second waits for the first read"
        );
        drop(held);
        drop(first);
        assert_eq!(loads.len(), 2, "a waiter still holds the gate");
        // A reconcile cancelled while it waits gives its hold back too.
        let cancelled = tokio::spawn({
            let loads = loads.clone();
            let key = key.clone();
            async move {
                let e = loads.enter(&key);
                let _g = e.gate().lock().await;
                std::future::pending::<()>().await;
            }
        });
        tokio::task::yield_now().await;
        cancelled.abort();
        let _ = cancelled.await;
        drop(second);
        drop(other);
        assert_eq!(loads.len(), 0, "nothing kept once no read is in progress");
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
}
