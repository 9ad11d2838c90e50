//! Reflector stores over one or several watched namespaces, read as one. Shared by the
//! controllers and the credentials resolver, so neither imports the other.
//!
//! A reflector store belongs to one watch; watching a list of namespaces (namespaced RBAC)
//! takes one watch per namespace, so lookups dispatch on the object's namespace.

use std::sync::Arc;

use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;

/// One store per watched scope: `None` is every namespace.
pub struct Stores<K: Resource<DynamicType = ()> + Clone + 'static> {
    scopes: Vec<(Option<String>, Store<K>)>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Stores<K> {
    fn clone(&self) -> Self {
        Self {
            scopes: self.scopes.clone(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Stores<K> {
    pub fn new(scopes: Vec<(Option<String>, Store<K>)>) -> Self {
        Self { scopes }
    }

    fn store_for(&self, namespace: Option<&str>) -> Option<&Store<K>> {
        self.scopes
            .iter()
            .find(|(ns, _)| ns.is_none() || ns.as_deref() == namespace)
            .map(|(_, s)| s)
    }

    /// True when some store watches `namespace`.
    pub fn covers(&self, namespace: &str) -> bool {
        self.store_for(Some(namespace)).is_some()
    }

    /// The store of exactly this scope, for a controller's main stream.
    pub fn store_for_scope(&self, scope: Option<&str>) -> Option<Store<K>> {
        self.scopes
            .iter()
            .find(|(ns, _)| ns.as_deref() == scope)
            .map(|(_, s)| s.clone())
    }

    /// The cached object named `name` in `namespace`.
    /// Every cached object of every scope.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.scopes.iter().flat_map(|(_, s)| s.state()).collect()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.store_for(Some(namespace))?
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// Every cached object in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.store_for(Some(namespace))
            .map(|s| {
                s.state()
                    .into_iter()
                    .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cached objects in `namespace` that match `predicate`. The predicate runs under the
    /// store's read lock and only matches are cloned: a reconcile of one of 5,000 tokens looking
    /// for its siblings must not copy all 5,000 (it dominated the operator's CPU profile).
    pub fn in_namespace_where(
        &self,
        namespace: &str,
        predicate: impl Fn(&K) -> bool,
    ) -> Vec<Arc<K>> {
        self.store_for(Some(namespace))
            .map(|s| {
                s.state_filter(|o| o.meta().namespace.as_deref() == Some(namespace) && predicate(o))
            })
            .unwrap_or_default()
    }

    /// Every cached object.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.scopes.iter().flat_map(|(_, s)| s.state()).collect()
    }

    /// Every cached object matching `predicate` (run under the store's read lock).
    pub fn all_where(&self, predicate: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.scopes
            .iter()
            .flat_map(|(_, s)| s.state_filter(|o| predicate(o)))
            .collect()
    }

    /// Waits until every store has its initial list.
    pub async fn wait_until_ready(&self) -> bool {
        for (_, s) in &self.scopes {
            if s.wait_until_ready().await.is_err() {
                return false;
            }
        }
        true
    }
}
