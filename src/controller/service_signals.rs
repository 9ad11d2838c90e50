//! Which users a service change concerns. A service's spec or its Secret changing is
//! announced once, by key, on a broadcast; each controller turns a key into the objects of
//! its own scope that use that service (users, their tokens, or the service itself).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Resource, ResourceExt};
use tokio::sync::broadcast;

use super::wakeups::cluster_service_key;
use super::{watch_health, Context};
use crate::api::{ClusterCommunicationService, CommunicationUser, ServiceKey};
use crate::credentials::{label_selector_matches, ServiceStores};
use crate::relist::Relist;

/// A change of one service, or (`None`, after a lagging receiver lost some) of any.
pub type Changed = Option<ServiceKey>;

/// The event hook of a service kind's watch (after its store): announces a service created,
/// deleted, recreated or with a new generation (its own status writes are not changes). After
/// a relist it announces what the watch missed while down: services gone, new, or changed.
pub fn on_service_event<K: Resource + 'static>(
    tx: broadcast::Sender<ServiceKey>,
    key_of: fn(&K) -> Option<ServiceKey>,
) -> impl FnMut(&watcher::Event<K>) + Send + 'static {
    // What identifies a version of a service: its UID (a recreated service is a change) and
    // generation.
    let mut seen: HashMap<ServiceKey, (Option<String>, Option<i64>)> = HashMap::new();
    let mut relist = Relist::default();
    let mut listed_once = false;
    move |e| {
        if let Some(listed) = relist.on_event(e) {
            seen.retain(|k, _| {
                let gone = listed.stale(None, k.namespace.as_deref().unwrap_or_default(), &k.name);
                if gone {
                    let _ = tx.send(k.clone());
                }
                !gone
            });
            listed_once = true;
            return;
        }
        let (obj, initial) = match e {
            watcher::Event::Apply(o) => (o, false),
            // The first list is the start-up state; a later one may show what was missed.
            watcher::Event::InitApply(o) => (o, !listed_once),
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
        let version = (obj.meta().uid.clone(), obj.meta().generation);
        let changed = match seen.insert(k.clone(), version.clone()) {
            Some(before) => before != version,
            None => !initial,
        };
        if changed {
            let _ = tx.send(k);
        }
    }
}

/// The event hook of the credentials Secrets' watch (after its store): announces the
/// services whose Secret was created, changed or deleted (a key rotation), so their users
/// re-resolve; after a relist, also those whose Secret went or changed while it was down.
pub fn on_secret_event(
    tx: broadcast::Sender<ServiceKey>,
    services: ServiceStores,
    operator_namespace: String,
) -> impl FnMut(&watcher::Event<PartialObjectMeta<Secret>>) + Send + 'static {
    let mut versions: HashMap<(String, String), Option<String>> = HashMap::new();
    let mut relist = Relist::default();
    let mut listed_once = false;
    move |e| {
        let announce = |id: &(String, String)| {
            for v in services.views(&operator_namespace) {
                if v.secret() == Some((id.0.as_str(), id.1.as_str())) {
                    let _ = tx.send(v.key);
                }
            }
        };
        if let Some(listed) = relist.on_event(e) {
            versions.retain(|id, _| {
                let gone = listed.stale(None, &id.0, &id.1);
                if gone {
                    announce(id);
                }
                !gone
            });
            listed_once = true;
            return;
        }
        let (s, initial, deleted) = match e {
            watcher::Event::Apply(s) => (s, false, false),
            watcher::Event::InitApply(s) => (s, !listed_once, false),
            watcher::Event::Delete(s) => (s, false, true),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let id = (
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone().unwrap_or_default(),
        );
        let used = services
            .views(&operator_namespace)
            .iter()
            .any(|v| v.secret() == Some((id.0.as_str(), id.1.as_str())));
        if !used {
            // Only Secrets some service names are followed (a service created later reads
            // its Secret when it is reconciled).
            versions.remove(&id);
            return;
        }
        let rv = s.metadata.resource_version.clone();
        let changed = if deleted {
            versions.remove(&id);
            true
        } else {
            match versions.insert(id.clone(), rv.clone()) {
                Some(before) => before != rv,
                None => !initial,
            }
        };
        if changed {
            announce(&id);
        }
    }
}

/// What the namespaces' label watch tells the credentials resolver.
pub trait NamespaceLabelCache: Send + 'static {
    /// The labels of `ns` as last read, if still in use.
    fn known(&self, ns: &str) -> Option<BTreeMap<String, String>>;
    /// `ns`'s labels changed: drop what was read; whether the default's opt-in flipped.
    fn changed(
        &self,
        ns: &str,
        before: &BTreeMap<String, String>,
        after: &BTreeMap<String, String>,
    ) -> bool;
}

impl NamespaceLabelCache for crate::credentials::CredentialsResolver {
    fn known(&self, ns: &str) -> Option<BTreeMap<String, String>> {
        self.known_namespace_labels(ns)
    }
    fn changed(
        &self,
        ns: &str,
        before: &BTreeMap<String, String>,
        after: &BTreeMap<String, String>,
    ) -> bool {
        self.namespace_labels_changed(ns, before, after)
    }
}

/// The event hook of the namespaces' label watch: a namespace whose labels change has what
/// the resolver read of them dropped, each cluster service whose selector selected it before
/// and not now (or the reverse) is announced on `services`, and a flip of the operator-wide
/// default's opt-in on `default`, so their users re-resolve at once instead of at their next
/// renewal. At a namespace's first sight, "before" is what the resolver last read, if anything.
pub fn on_namespace_event(
    (services, default): (broadcast::Sender<ServiceKey>, broadcast::Sender<()>),
    cluster: Store<ClusterCommunicationService>,
    cache: impl NamespaceLabelCache,
) -> impl FnMut(&watcher::Event<PartialObjectMeta<Namespace>>) + Send + 'static {
    let mut seen: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let mut relist = Relist::default();
    move |e| {
        if let Some(listed) = relist.on_event(e) {
            seen.retain(|name, _| !listed.stale(None, "", name));
            return;
        }
        let ns = match e {
            watcher::Event::Apply(ns) | watcher::Event::InitApply(ns) => ns,
            watcher::Event::Delete(ns) => {
                seen.remove(&ns.name_any());
                return;
            }
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let name = ns.name_any();
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        let Some(before) = seen
            .insert(name.clone(), labels.clone())
            .or_else(|| cache.known(&name))
        else {
            return;
        };
        if before == labels {
            return;
        }
        if cache.changed(&name, &before, &labels) {
            let _ = default.send(());
        }
        for service in cluster.state() {
            let selector = service.spec.namespace_selector.as_ref();
            let selects = |l: &BTreeMap<String, String>| {
                selector.is_some_and(|s| label_selector_matches(s, l))
            };
            if selects(&before) != selects(&labels) {
                if let Some(k) = cluster_service_key(&service) {
                    let _ = services.send(k);
                }
            }
        }
    }
}

/// The watches of the namespaces' labels, one per scope (a watched namespace's own, by name:
/// what the chart's namespaced RBAC allows), feeding [`on_namespace_event`]. They only make
/// label changes felt sooner (the resolver reads labels itself), so a failing one is logged
/// and counted but does not make the operator unready.
pub(super) fn watch_namespace_labels(
    ctx: &Arc<Context>,
    scopes: &[Option<String>],
    cluster: &Store<ClusterCommunicationService>,
    health: &watch_health::WatchHealth,
) -> Vec<tokio::task::JoinHandle<()>> {
    scopes
        .iter()
        .map(|scope| {
            let config = match scope {
                Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
                None => watcher::Config::default(),
            };
            let mut on_event = on_namespace_event(
                (ctx.service_changed.clone(), ctx.default_changed.clone()),
                cluster.clone(),
                ctx.credentials.clone(),
            );
            let mut tracker = health.track_advisory("Namespace");
            let api = Api::<PartialObjectMeta<Namespace>>::all(ctx.client.clone());
            tokio::spawn(watcher(api, config).default_backoff().for_each(move |r| {
                if let Ok(e) = &r {
                    on_event(e);
                }
                tracker.observe(&r);
                futures::future::ready(())
            }))
        })
        .collect()
}

/// The event hook of the users' watch: announces, on `usage`, the service of a user created,
/// deleted or with a spec not yet reconciled (a new `serviceRef`), or whose refusal by a
/// cluster service's selector (`NamespaceNotSelected`) began or ended, so the service's counts
/// follow. A user moved off a service is counted out at that service's next reconcile.
pub fn on_user_event(
    usage: broadcast::Sender<ServiceKey>,
) -> impl FnMut(&watcher::Event<CommunicationUser>) + Send + 'static {
    // The users refused now; a deletion or a relist that no longer shows them drops them.
    let mut refused: std::collections::HashSet<(String, String)> = Default::default();
    let mut relist = Relist::default();
    let mut listed_once = false;
    move |e| {
        if let Some(listed) = relist.on_event(e) {
            refused.retain(|(ns, name)| !listed.stale(None, ns, name));
            listed_once = true;
            return;
        }
        let (u, deleted) = match e {
            watcher::Event::Apply(u) | watcher::Event::InitApply(u) => (u, false),
            watcher::Event::Delete(u) => (u, true),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let ns = u.metadata.namespace.as_deref().unwrap_or_default();
        let id = (ns.to_string(), u.name_any());
        let refused_now = !deleted && refused_by_selector(u);
        let flipped = if refused_now {
            refused.insert(id)
        } else {
            refused.remove(&id)
        };
        let Some(r) = &u.spec.service_ref else { return };
        let unreconciled =
            u.status.as_ref().and_then(|s| s.observed_generation) != u.metadata.generation;
        // The first list is the start-up state; a later one may show a refusal that began or
        // ended while the watch was down.
        let initial = matches!(e, watcher::Event::InitApply(_)) && !listed_once;
        if deleted || (!initial && (unreconciled || flipped)) {
            let _ = usage.send(ServiceKey::of_ref(ns, r));
        }
    }
}

/// The user's status says a cluster service's selector does not select its namespace.
pub fn refused_by_selector(u: &CommunicationUser) -> bool {
    use crate::api::ConditionExt;
    u.status.as_ref().is_some_and(|s| {
        s.conditions
            .find(crate::api::condition::types::READY)
            .is_some_and(|c| c.reason == crate::api::condition::reasons::NAMESPACE_NOT_SELECTED)
    })
}

/// The service of a token's user, for the token watch's hook: a token created (its first
/// event has no status) or deleted changes that service's count of tokens.
pub fn token_usage(
    users: &crate::stores::Stores<CommunicationUser>,
    t: &crate::api::CommunicationToken,
    deleted: bool,
) -> Option<ServiceKey> {
    if !deleted && t.status.is_some() {
        return None;
    }
    let ns = t.metadata.namespace.as_deref()?;
    let user = users.get(ns, &t.spec.user_ref.name)?;
    Some(ServiceKey::of_ref(ns, user.spec.service_ref.as_ref()?))
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    fn service(name: &str, selects: Option<&str>) -> ClusterCommunicationService {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "communication.acs.dev/v1alpha1",
            "kind": "ClusterCommunicationService",
            "metadata": {"name": name},
            "spec": {
                "endpoint": "https://r.communication.azure.com",
                "operatorIdentity": {},
                "namespaceSelector": selects.map(|t| serde_json::json!({"matchLabels": {"team": t}})),
            },
        }))
        .unwrap()
    }

    fn namespace(labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.name = Some("apps".into());
        ns.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        ns
    }

    #[test]
    fn a_label_change_announces_the_services_whose_selection_flips_and_forgets_the_labels() {
        let (store, mut writer) = reflector::store::<ClusterCommunicationService>();
        for s in [
            service("team-a", Some("a")),
            service("team-b", Some("b")),
            service("none", None),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(s));
        }
        let (tx, mut rx) = broadcast::channel(16);
        let (default_tx, mut default_rx) = broadcast::channel(16);
        let cache = Fake::default();
        let forgotten = cache.forgotten.clone();
        let known = cache.known.clone();
        let mut hook = on_namespace_event((tx, default_tx), store, cache);
        let mut announced = || {
            let mut names = Vec::new();
            while let Ok(k) = rx.try_recv() {
                names.push(k.name);
            }
            names.sort();
            names
        };
        // First sight, and the same labels again: no selection changed.
        hook(&watcher::Event::Apply(namespace(&[("team", "a")])));
        hook(&watcher::Event::Apply(namespace(&[("team", "a")])));
        assert!(announced().is_empty());
        // From team a to team b: both flip; the service without a selector never does.
        hook(&watcher::Event::Apply(namespace(&[("team", "b")])));
        assert_eq!(announced(), ["team-a", "team-b"]);
        // Another label only: no selection changed, yet the resolver re-reads the labels.
        hook(&watcher::Event::Apply(namespace(&[
            ("team", "b"),
            ("x", "y"),
        ])));
        assert!(announced().is_empty());
        assert_eq!(*forgotten.lock().unwrap(), ["apps", "apps"]);
        // The fake default opts in namespaces labelled x: that flip is announced once.
        assert!(default_rx.try_recv().is_ok());
        assert!(default_rx.try_recv().is_err());
        hook(&watcher::Event::Apply(namespace(&[("team", "b")])));
        assert!(default_rx.try_recv().is_ok(), "the opt-in flipped back");
        assert!(announced().is_empty());
        // Deleted: forgotten by the hook, so its next sight is a first one, compared with
        // what the resolver last read (nothing here: no announcement).
        hook(&watcher::Event::Delete(namespace(&[])));
        hook(&watcher::Event::Apply(namespace(&[("team", "a")])));
        assert!(announced().is_empty());
        // A first sight that differs from what the resolver read is a change.
        hook(&watcher::Event::Delete(namespace(&[])));
        *known.lock().unwrap() = Some(BTreeMap::from([("team".into(), "b".into())]));
        hook(&watcher::Event::Apply(namespace(&[("team", "a")])));
        assert_eq!(announced(), ["team-a", "team-b"]);
        assert_eq!(forgotten.lock().unwrap().len(), 4);
    }

    /// User `u` of cluster service `platform`, reconciled, its Ready reason `reason`.
    fn cluster_user(reason: &str) -> CommunicationUser {
        let mut u = crate::controller::fixtures::user("apps", "u");
        u.spec.service_ref = Some(crate::api::ServiceRef {
            kind: crate::api::ServiceKind::ClusterCommunicationService,
            name: "platform".into(),
        });
        let mut st = crate::api::CommunicationUserStatus {
            observed_generation: Some(1),
            ..Default::default()
        };
        crate::api::set_condition(
            &mut st.conditions,
            crate::api::condition::types::READY,
            reason != crate::api::condition::reasons::NAMESPACE_NOT_SELECTED,
            reason,
            "",
            Some(1),
            jiff::Timestamp::UNIX_EPOCH,
        );
        u.status = Some(st);
        u
    }

    #[test]
    fn a_users_count_is_announced_when_its_selector_refusal_begins_or_ends() {
        use crate::api::condition::reasons::{IDENTITY_READY, NAMESPACE_NOT_SELECTED};
        let (tx, mut rx) = broadcast::channel(16);
        let mut hook = on_user_event(tx);
        let mut sent = || std::iter::from_fn(|| rx.try_recv().ok()).count();
        // The start-up list says nothing; a reconciled user's own writes neither.
        hook(&watcher::Event::Init);
        hook(&watcher::Event::InitApply(cluster_user(
            NAMESPACE_NOT_SELECTED,
        )));
        hook(&watcher::Event::InitDone);
        hook(&watcher::Event::Apply(cluster_user(NAMESPACE_NOT_SELECTED)));
        assert_eq!(sent(), 0);
        // Served again, then refused again: each flip once.
        hook(&watcher::Event::Apply(cluster_user(IDENTITY_READY)));
        hook(&watcher::Event::Apply(cluster_user(IDENTITY_READY)));
        assert_eq!(sent(), 1);
        hook(&watcher::Event::Apply(cluster_user(NAMESPACE_NOT_SELECTED)));
        assert_eq!(sent(), 1);
        // A relist that shows it served (it flipped while the watch was down) is a flip too.
        hook(&watcher::Event::Init);
        hook(&watcher::Event::InitApply(cluster_user(IDENTITY_READY)));
        hook(&watcher::Event::InitDone);
        assert_eq!(sent(), 1);
        // Deleted: announced, and forgotten.
        hook(&watcher::Event::Delete(cluster_user(IDENTITY_READY)));
        assert_eq!(sent(), 1);
    }

    /// Remembers what it was told; its default opts in namespaces labelled `x`.
    #[derive(Default)]
    struct Fake {
        forgotten: Arc<std::sync::Mutex<Vec<String>>>,
        known: Arc<std::sync::Mutex<Option<BTreeMap<String, String>>>>,
    }

    impl NamespaceLabelCache for Fake {
        fn known(&self, _: &str) -> Option<BTreeMap<String, String>> {
            self.known.lock().unwrap().clone()
        }
        fn changed(
            &self,
            ns: &str,
            before: &BTreeMap<String, String>,
            after: &BTreeMap<String, String>,
        ) -> bool {
            self.forgotten.lock().unwrap().push(ns.to_string());
            before.contains_key("x") != after.contains_key("x")
        }
    }
}
