//! Credentials named by a CommunicationService or ClusterCommunicationService. A cluster
//! service is the tenant boundary: it serves only the namespaces its selector selects, read
//! from the namespace's labels (read, and reused for [`UNWATCHED_TTL`] or until the
//! namespaces' label watch sees them change).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};

use super::{Credentials, CredentialsError, CredentialsResolver, CredentialsSource, UNWATCHED_TTL};
use crate::api::service::{
    ClusterCommunicationService, CommunicationService, ServiceKey, ServiceKind, ServiceRef,
};
use crate::entra::{AssertionSource, Principal};
use crate::stores::Stores;

/// The cached service objects of both kinds.
#[derive(Clone)]
pub struct ServiceStores {
    pub namespaced: Stores<CommunicationService>,
    pub cluster: Store<ClusterCommunicationService>,
}

impl ServiceStores {
    /// Every cached service of both kinds, as views.
    pub fn views(&self, operator_namespace: &str) -> Vec<ServiceView> {
        let namespaced = self
            .namespaced
            .state()
            .into_iter()
            .filter_map(|o| ServiceView::of_namespaced(&o));
        let cluster = self
            .cluster
            .state()
            .into_iter()
            .filter_map(|o| ServiceView::of_cluster(&o, operator_namespace));
        namespaced.chain(cluster).collect()
    }
}

/// How a service authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAuth {
    ConnectionString {
        namespace: String,
        name: String,
        key: String,
    },
    WorkloadIdentity {
        namespace: String,
        service_account: String,
    },
    OperatorIdentity,
}

/// What both kinds say, in one shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    pub key: ServiceKey,
    pub endpoint: String,
    pub auth: ServiceAuth,
    /// The cluster kind's selector (`Some(None)`: a cluster service without one, which
    /// selects nothing); `None` for the namespaced kind.
    pub selector: Option<Option<LabelSelector>>,
    pub requests_per_second: Option<u32>,
}

impl ServiceView {
    pub fn of_namespaced(s: &CommunicationService) -> Option<Self> {
        let namespace = s.metadata.namespace.clone()?;
        let auth = match (&s.spec.connection_string, &s.spec.workload_identity) {
            (Some(c), _) => ServiceAuth::ConnectionString {
                namespace: namespace.clone(),
                name: c.secret_ref.name.clone(),
                key: c.secret_ref.key().to_string(),
            },
            (None, Some(w)) => ServiceAuth::WorkloadIdentity {
                namespace: namespace.clone(),
                service_account: w.service_account_ref.name.clone(),
            },
            // Refused at admission; an object from before the rule has no usable auth.
            (None, None) => return None,
        };
        Some(Self {
            key: ServiceKey {
                kind: ServiceKind::CommunicationService,
                namespace: Some(namespace),
                name: s.metadata.name.clone()?,
            },
            endpoint: s.spec.endpoint.trim_end_matches('/').to_string(),
            auth,
            selector: None,
            requests_per_second: s
                .spec
                .requests_per_second
                .and_then(|r| u32::try_from(r).ok()),
        })
    }

    /// `operator_namespace` holds a cluster service's Secret unless it names another.
    pub fn of_cluster(s: &ClusterCommunicationService, operator_namespace: &str) -> Option<Self> {
        let auth = match (&s.spec.connection_string, &s.spec.operator_identity) {
            (Some(c), _) => ServiceAuth::ConnectionString {
                namespace: c
                    .secret_ref
                    .namespace
                    .clone()
                    .unwrap_or_else(|| operator_namespace.to_string()),
                name: c.secret_ref.name.clone(),
                key: c.secret_ref.key().to_string(),
            },
            (None, Some(_)) => ServiceAuth::OperatorIdentity,
            (None, None) => return None,
        };
        Some(Self {
            key: ServiceKey {
                kind: ServiceKind::ClusterCommunicationService,
                namespace: None,
                name: s.metadata.name.clone()?,
            },
            endpoint: s.spec.endpoint.trim_end_matches('/').to_string(),
            auth,
            selector: Some(s.spec.namespace_selector.clone()),
            requests_per_second: s
                .spec
                .requests_per_second
                .and_then(|r| u32::try_from(r).ok()),
        })
    }

    /// The Secret holding the connection string, if that is the auth.
    pub fn secret(&self) -> Option<(&str, &str)> {
        match &self.auth {
            ServiceAuth::ConnectionString {
                namespace, name, ..
            } => Some((namespace, name)),
            _ => None,
        }
    }
}

/// The last view of each service a user resolved through, and when.
pub(super) type LastViews = Arc<Mutex<HashMap<ServiceKey, (std::time::Instant, ServiceView)>>>;

/// Namespace labels read, and when.
pub(super) type NamespaceLabels =
    Arc<Mutex<HashMap<String, (std::time::Instant, BTreeMap<String, String>)>>>;

impl CredentialsResolver {
    /// Lets users reference service objects.
    pub fn with_services(mut self, services: ServiceStores, operator_namespace: &str) -> Self {
        self.services = Some(services);
        self.operator_namespace = operator_namespace.to_string();
        self
    }

    /// The service `key` names, from the cache.
    pub fn service(&self, key: &ServiceKey) -> Option<ServiceView> {
        let s = self.services.as_ref()?;
        match (&key.kind, &key.namespace) {
            (ServiceKind::CommunicationService, Some(ns)) => s
                .namespaced
                .get(ns, &key.name)
                .and_then(|o| ServiceView::of_namespaced(&o)),
            (ServiceKind::ClusterCommunicationService, _) => s
                .cluster
                .get(&ObjectRef::new(&key.name))
                .and_then(|o| ServiceView::of_cluster(&o, &self.operator_namespace)),
            _ => None,
        }
    }

    /// Every cached service (both kinds).
    pub fn services(&self) -> Vec<ServiceView> {
        self.services
            .as_ref()
            .map(|s| s.views(&self.operator_namespace))
            .unwrap_or_default()
    }

    /// The credentials of a user of `namespace` referencing `r`: refused when the service is
    /// missing, or is a cluster service that does not select `namespace`.
    pub async fn resolve_service_ref(
        &self,
        namespace: &str,
        r: &ServiceRef,
    ) -> Result<Credentials, CredentialsError> {
        let key = ServiceKey::of_ref(namespace, r);
        let view = self
            .service(&key)
            .ok_or_else(|| CredentialsError::ServiceNotFound {
                service: key.to_string(),
            })?;
        self.remember(&view);
        if let Some(selector) = &view.selector {
            if !self
                .namespace_selected(namespace, selector.as_ref())
                .await?
            {
                return Err(CredentialsError::NamespaceNotSelected {
                    service: key.to_string(),
                    namespace: namespace.to_string(),
                });
            }
        }
        let cluster = view.key.kind == ServiceKind::ClusterCommunicationService;
        let mut c = match self.service_credentials(&view).await {
            Ok(c) => c,
            // The tenant is not told the platform's Secret, key or hosts.
            Err(e) if cluster => {
                return Err(CredentialsError::ServiceUnusable {
                    service: key.to_string(),
                    source: Box::new(e),
                })
            }
            Err(e) => return Err(e),
        };
        // A cluster service's credentials are shared by other namespaces.
        c.operator_default = cluster;
        Ok(c)
    }

    /// Keeps the service's view, so a cleanup racing its deletion (a namespace being deleted
    /// takes its CommunicationServices first) still finds its Secret.
    fn remember(&self, view: &ServiceView) {
        let Ok(mut m) = self.last_views.lock() else {
            return;
        };
        let now = std::time::Instant::now();
        if self.sweeps.views.due(m.len()) {
            m.retain(|k, (at, _)| {
                now.duration_since(*at) < super::secrets::FORGET_AFTER || self.service(k).is_some()
            });
            self.sweeps.views.swept(m.len());
        }
        m.insert(view.key.clone(), (now, view.clone()));
    }

    /// The last credentials seen for a user of `namespace` referencing `r`, even if the service
    /// or its Secret is gone now (for [`super::secrets::FORGET_AFTER`]): lets a finalizer
    /// delete an identity while its namespace is being torn down. Connection strings only.
    pub fn last_known_service(&self, namespace: &str, r: &ServiceRef) -> Option<Credentials> {
        let key = ServiceKey::of_ref(namespace, r);
        let view = match self.service(&key) {
            // A cluster service that is there decides by its selector, which refused.
            Some(v) if v.selector.is_some() => return None,
            Some(v) => v,
            None => {
                let m = self.last_views.lock().ok()?;
                m.get(&key)
                    .filter(|(at, _)| at.elapsed() < super::secrets::FORGET_AFTER)
                    .map(|(_, v)| v.clone())?
            }
        };
        match &view.auth {
            ServiceAuth::ConnectionString {
                namespace,
                name,
                key,
            } => self
                .last_known(namespace, name, key)
                .filter(|c| same_endpoint(&c.endpoint, &view.endpoint)),
            _ => None,
        }
    }

    /// The credentials a service names, if their endpoint is an allowed host.
    pub async fn service_credentials(
        &self,
        view: &ServiceView,
    ) -> Result<Credentials, CredentialsError> {
        let mut c = match &view.auth {
            ServiceAuth::ConnectionString {
                namespace,
                name,
                key,
            } => {
                let c = self.read_secret(namespace, name, key).await?;
                if !same_endpoint(&c.endpoint, &view.endpoint) {
                    return Err(CredentialsError::EndpointMismatch {
                        service: view.key.to_string(),
                        secret: format!("{namespace}/{name} key {key}"),
                        found: crate::endpoint_allow::host_only(&c.endpoint),
                        expected: crate::endpoint_allow::host_only(&view.endpoint),
                    });
                }
                c
            }
            ServiceAuth::WorkloadIdentity {
                namespace,
                service_account,
            } => {
                self.service_account(namespace, service_account, &view.endpoint)
                    .await?
            }
            ServiceAuth::OperatorIdentity => {
                let own = self
                    .entra
                    .as_ref()
                    .and_then(|e| e.config.own.as_ref().map(|own| (e, own)));
                let Some((entra, own)) = own else {
                    return Err(CredentialsError::NoOperatorIdentity {
                        service: view.key.to_string(),
                    });
                };
                let principal = Principal::new(
                    &entra.config.authority_host,
                    &own.tenant_id,
                    &own.client_id,
                    AssertionSource::File(own.token_file.clone()),
                );
                self.entra_credentials(
                    entra,
                    &view.endpoint,
                    principal,
                    CredentialsSource::OperatorIdentity,
                    false,
                )
                .await?
            }
        };
        c.budget = view
            .requests_per_second
            .map(|requests_per_second| super::ServiceBudget {
                service: view.key.to_string(),
                requests_per_second,
            });
        self.check_endpoint(c)
    }

    pub(super) fn labels_epoch(&self) -> u64 {
        self.labels_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The labels of `namespace` as last read, while fresh.
    pub fn known_namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.ns_labels
            .lock()
            .ok()?
            .get(namespace)
            .filter(|(at, _)| at.elapsed() < UNWATCHED_TTL)
            .map(|(_, l)| l.clone())
    }

    /// The namespaces' label watch saw `namespace`'s labels go from `before` to `after`: what
    /// was read of them is dropped (a read in flight is not cached), and the answer says
    /// whether the operator-wide default's opt-in flipped for it.
    pub fn namespace_labels_changed(
        &self,
        namespace: &str,
        before: &BTreeMap<String, String>,
        after: &BTreeMap<String, String>,
    ) -> bool {
        self.labels_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut m) = self.ns_labels.lock() {
            m.remove(namespace);
        }
        if let Ok(mut m) = self.opt_in.lock() {
            m.remove(namespace);
        }
        let entra_default = self.entra.as_ref().and_then(|e| e.default.as_ref());
        [
            self.default.as_ref().map(|d| d.namespace_selector.as_str()),
            entra_default.map(|d| d.namespace_selector.as_str()),
        ]
        .into_iter()
        .flatten()
        .any(|sel| super::selector_matches(sel, before) != super::selector_matches(sel, after))
    }

    /// Whether `selector` selects `namespace` (no selector selects nothing).
    async fn namespace_selected(
        &self,
        namespace: &str,
        selector: Option<&LabelSelector>,
    ) -> Result<bool, CredentialsError> {
        let Some(selector) = selector else {
            return Ok(false);
        };
        let known = self
            .ns_labels
            .lock()
            .ok()
            .and_then(|m| m.get(namespace).cloned())
            .filter(|(at, _)| at.elapsed() < UNWATCHED_TTL);
        let labels = match known {
            Some((_, labels)) => labels,
            None => {
                let epoch = self.labels_epoch();
                let ns = Api::<Namespace>::all(self.client.clone())
                    .get_metadata_opt(namespace)
                    .await
                    .map_err(CredentialsError::Kube)?;
                let labels = ns.and_then(|n| n.metadata.labels).unwrap_or_default();
                if let (Ok(mut m), true) = (self.ns_labels.lock(), self.labels_epoch() == epoch) {
                    if self.sweeps.labels.due(m.len()) {
                        m.retain(|_, (at, _)| at.elapsed() < UNWATCHED_TTL);
                        self.sweeps.labels.swept(m.len());
                    }
                    m.insert(
                        namespace.to_string(),
                        (std::time::Instant::now(), labels.clone()),
                    );
                }
                labels
            }
        };
        Ok(label_selector_matches(selector, &labels))
    }
}

/// The same endpoint: scheme and host compared without case, a trailing `/` ignored.
fn same_endpoint(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions` with `In`, `NotIn`,
/// `Exists`, `DoesNotExist`); `{}` matches everything. An unknown operator matches nothing.
pub fn label_selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    // As Kubernetes validates them: `In`/`NotIn` need values, `Exists`/`DoesNotExist` take
    // none. An invalid requirement matches nothing (never every namespace by accident).
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match (e.operator.as_str(), values.is_empty()) {
            ("In", false) => value.is_some_and(|v| values.contains(v)),
            ("NotIn", false) => value.is_none_or(|v| !values.contains(v)),
            ("Exists", true) => value.is_some(),
            ("DoesNotExist", true) => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn label_selectors_match_like_kubernetes() {
        let labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
        let req = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        };
        assert!(label_selector_matches(&LabelSelector::default(), &labels));
        assert!(label_selector_matches(
            &LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            &labels
        ));
        assert!(!label_selector_matches(
            &LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            &BTreeMap::new()
        ));
        assert!(label_selector_matches(&req("In", &["a", "b"]), &labels));
        assert!(!label_selector_matches(&req("In", &["b"]), &labels));
        assert!(label_selector_matches(&req("NotIn", &["b"]), &labels));
        assert!(label_selector_matches(
            &req("NotIn", &["b"]),
            &BTreeMap::new()
        ));
        assert!(label_selector_matches(&req("Exists", &[]), &labels));
        assert!(!label_selector_matches(&req("DoesNotExist", &[]), &labels));
        assert!(!label_selector_matches(&req("Bogus", &[]), &labels));
        // Invalid requirements select nothing, not everything.
        assert!(!label_selector_matches(&req("NotIn", &[]), &labels));
        assert!(!label_selector_matches(
            &req("NotIn", &[]),
            &BTreeMap::new()
        ));
        assert!(!label_selector_matches(&req("Exists", &["a"]), &labels));
        assert!(!label_selector_matches(&req("In", &[]), &labels));
    }

    #[test]
    fn endpoints_compare_without_case_or_trailing_slash() {
        assert!(same_endpoint(
            "https://Res.communication.azure.com/",
            "https://res.communication.azure.com"
        ));
        assert!(!same_endpoint(
            "https://other.communication.azure.com",
            "https://res.communication.azure.com"
        ));
    }
}
