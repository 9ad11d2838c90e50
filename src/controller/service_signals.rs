//! Which users a service change concerns. A service's spec or its Secret changing is
//! announced once, by key, on a broadcast; each controller turns a key into the objects of
//! its own scope that use that service (users, their tokens, or the service itself).

use std::collections::HashMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::Resource;
use tokio::sync::broadcast;

use super::Context;
use crate::api::{CommunicationUser, ServiceKey};
use crate::credentials::ServiceStores;

/// A change of one service, or (`None`, after a lagging receiver lost some) of any.
pub type Changed = Option<ServiceKey>;

/// The event hook of a service kind's watch: announces a service created, deleted, or with a
/// new generation (its own status writes are not changes), and after a relist, a generation
/// that moved while the watch was down.
pub fn on_service_event<K: Resource + 'static>(
    tx: broadcast::Sender<ServiceKey>,
    key_of: fn(&K) -> Option<ServiceKey>,
) -> impl FnMut(&watcher::Event<K>) + Send + 'static {
    let mut seen: HashMap<ServiceKey, Option<i64>> = HashMap::new();
    move |e| {
        let (obj, listed) = match e {
            watcher::Event::Apply(o) => (o, false),
            watcher::Event::InitApply(o) => (o, true),
            watcher::Event::Delete(o) => {
                if let Some(k) = key_of(o) {
                    seen.remove(&k);
                    let _ = tx.send(k);
                }
                return;
            }
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let Some(k) = key_of(obj) else { return };
        let generation = obj.meta().generation;
        let before = seen.insert(k.clone(), generation);
        let changed = match before {
            Some(g) => g != generation,
            None => !listed,
        };
        if changed {
            let _ = tx.send(k);
        }
    }
}

/// The event hook of the credentials Secrets' watch: announces the services whose Secret
/// was created, changed or deleted (a key rotation), so their users re-resolve.
pub fn on_secret_event(
    tx: broadcast::Sender<ServiceKey>,
    services: ServiceStores,
    operator_namespace: String,
) -> impl FnMut(&watcher::Event<PartialObjectMeta<Secret>>) + Send + 'static {
    let mut versions: HashMap<(String, String), Option<String>> = HashMap::new();
    move |e| {
        let (s, listed, deleted) = match e {
            watcher::Event::Apply(s) => (s, false, false),
            watcher::Event::InitApply(s) => (s, true, false),
            watcher::Event::Delete(s) => (s, false, true),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let id = (
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone().unwrap_or_default(),
        );
        let keys: Vec<ServiceKey> = services
            .views(&operator_namespace)
            .into_iter()
            .filter(|v| v.secret() == Some((id.0.as_str(), id.1.as_str())))
            .map(|v| v.key)
            .collect();
        if keys.is_empty() {
            versions.remove(&id);
            return;
        }
        let rv = s.metadata.resource_version.clone();
        let before = if deleted {
            versions.remove(&id)
        } else {
            versions.insert(id, rv.clone())
        };
        let changed = deleted
            || match before {
                Some(b) => b != rv,
                None => !listed,
            };
        if changed {
            for k in keys {
                let _ = tx.send(k);
            }
        }
    }
}

/// The service changes sent on `rx`.
pub fn changes(
    rx: broadcast::Receiver<ServiceKey>,
) -> impl Stream<Item = Changed> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(k) => Some((Some(k), rx)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some((None, rx)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// Wake-ups of one controller's objects: the users of `scope` using a changed service (or,
/// through `map`, their tokens).
pub fn user_wakeups<K, F>(
    ctx: &Arc<Context>,
    scope: &Option<String>,
    rx: broadcast::Receiver<ServiceKey>,
    map: F,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
    F: Fn(&Context, Vec<ObjectRef<CommunicationUser>>) -> Vec<ObjectRef<K>> + Send + Sync + 'static,
{
    let ctx = ctx.clone();
    let scope = scope.clone();
    changes(rx).flat_map(move |changed| {
        let users = match &changed {
            Some(key) => super::service::users_of_service(&ctx, key, scope.as_deref()),
            // Some announcements were lost: every user of a service in scope.
            None => ctx
                .users
                .all_where(|u| {
                    u.spec.service_ref.is_some()
                        && scope
                            .as_deref()
                            .is_none_or(|s| u.metadata.namespace.as_deref() == Some(s))
                })
                .iter()
                .map(|u| ObjectRef::from_obj(u.as_ref()))
                .collect(),
        };
        futures::stream::iter(map(&ctx, users))
    })
}

/// Wake-ups of the service objects themselves (their Secret moved), of one kind.
pub fn service_wakeups<K>(
    ctx: &Arc<Context>,
    rx: broadcast::Receiver<ServiceKey>,
    to_ref: fn(&ServiceKey) -> Option<ObjectRef<K>>,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
{
    let ctx = ctx.clone();
    changes(rx).flat_map(move |changed| {
        let refs: Vec<ObjectRef<K>> = match changed {
            Some(k) => to_ref(&k).into_iter().collect(),
            None => ctx
                .credentials
                .services()
                .iter()
                .filter_map(|v| to_ref(&v.key))
                .collect(),
        };
        futures::stream::iter(refs)
    })
}
