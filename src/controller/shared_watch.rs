//! The shared caches' watches: one reflector per watched scope and kind, its event hooks, and
//! the tasks driving them (their health reported to [`super::watch_health`]).

use futures::{FutureExt, StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::reflector;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource};

use super::watch_health;
use crate::config::Config;

/// Strips what the operator never reads, so 5,000 cached objects stay small.
fn slim<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// One shared reflector per watched scope: the store, plus a stream per subscriber.
pub(super) struct Shared<K: Resource<DynamicType = ()> + Clone + 'static> {
    pub(super) stores: Vec<(Option<String>, reflector::Store<K>)>,
    pub(super) writers: Vec<reflector::store::Writer<K>>,
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    pub(super) fn new(scopes: &[Option<String>], buffer: usize) -> Self {
        let (stores, writers) = scopes
            .iter()
            .map(|scope| {
                let (r, w) = reflector::store_shared(buffer);
                ((scope.clone(), r), w)
            })
            .unzip();
        Self { stores, writers }
    }

    /// Spawns one watch per scope feeding its store and subscribers; the writers are consumed.
    /// `on_event(scope)` makes the event hook of each scope's watch, which sees an event
    /// before the store does (`Hook::BeforeStore`) or after (`Hook::AfterStore`: what the
    /// hook wakes reads the store as the event left it); `resource` names the kind in logs
    /// and metrics.
    pub(super) fn drive<F>(
        &mut self,
        client: &Client,
        scopes: &[Option<String>],
        config: &watcher::Config,
        (health, resource): (&watch_health::WatchHealth, &'static str),
        (hook, on_event): (Hook, impl Fn(Option<&str>) -> F),
    ) -> Vec<tokio::task::JoinHandle<()>>
    where
        F: FnMut(&watcher::Event<K>) + Send + 'static,
    {
        scopes
            .iter()
            .zip(std::mem::take(&mut self.writers))
            .map(|(scope, w)| {
                let mut tracker = health.track(resource);
                let events = watcher(api_for::<K>(client, scope), config.clone())
                    .default_backoff()
                    .modify(slim);
                let mut f = on_event(scope.as_deref());
                let stream = match hook {
                    Hook::BeforeStore => events
                        .inspect_ok(f)
                        .reflect_shared(w)
                        .for_each(move |r| {
                            tracker.observe(&r);
                            futures::future::ready(())
                        })
                        .boxed(),
                    Hook::AfterStore => events
                        .reflect_shared(w)
                        .for_each(move |r| {
                            if let Ok(e) = &r {
                                f(e);
                            }
                            tracker.observe(&r);
                            futures::future::ready(())
                        })
                        .boxed(),
                };
                tokio::spawn(stream)
            })
            .collect()
    }
}

/// When a watch's event hook sees an event, relative to its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hook {
    BeforeStore,
    AfterStore,
}

/// The watch tasks; dropping them (shutdown, or any early return) stops them on purpose.
pub(super) struct Drivers(
    pub(super) Vec<tokio::task::JoinHandle<()>>,
    pub(super) watch_health::WatchHealth,
);

impl Drop for Drivers {
    fn drop(&mut self) {
        self.1.stopping();
        for d in &self.0 {
            d.abort();
        }
    }
}

pub(super) fn scopes(config: &Config) -> Vec<Option<String>> {
    if config.watch_namespaces.is_empty() {
        vec![None]
    } else {
        config.watch_namespaces.iter().cloned().map(Some).collect()
    }
}

fn api_for<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Spawns the one watch of a cluster-scoped kind, feeding its shared store and subscribers.
pub(super) fn drive_cluster<K>(
    client: &Client,
    writer: reflector::store::Writer<K>,
    (health, resource): (&watch_health::WatchHealth, &'static str),
    on_event: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let mut tracker = health.track(resource);
    let mut on_event = on_event;
    // The hook sees each event after the store: what it wakes reads the store as it left it.
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(slim)
        .reflect_shared(writer)
        .for_each(move |r| {
            if let Ok(e) = &r {
                on_event(e);
            }
            tracker.observe(&r);
            futures::future::ready(())
        });
    tokio::spawn(stream)
}
