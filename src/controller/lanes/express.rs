//! The way in for an object just applied: kube-runtime's queue serves objects in the order they
//! came, behind any backlog, so each watch event and wake-up of a controller is also offered
//! here, and an object in the first lane (see [`super::lane_of`]) is reconciled from here as
//! soon as a slot frees, ahead of that queue. kube-runtime's own trigger for it still runs,
//! before or after this one (the claim keeps them apart), and schedules the next reconcile
//! (this path drops its result); a reconcile that fails here goes through the controller's
//! error policy as any other.
//!
//! The queue of offers is bounded and holds each object once: beyond [`QUEUE`] objects
//! waiting, a large rollout applied at once goes through kube-runtime's queue as before.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use super::claims::Key;
use super::{key_of, lane_of, run, Lane, Laned, Lanes};
use crate::controller::Context;

/// Objects waiting for the express path, at most.
pub const QUEUE: usize = 1024;

/// Offers objects to a controller's express path.
pub struct Offers<K> {
    tx: mpsc::Sender<Key>,
    /// The objects in the queue: an object offered again (its finalizer's event, a wake-up)
    /// while it waits keeps its place instead of taking a second one.
    queued: Arc<Mutex<HashSet<Key>>>,
    lanes: Arc<Lanes>,
    ctx: Arc<Context>,
    kind: PhantomData<fn(K)>,
}

impl<K> Clone for Offers<K> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            queued: self.queued.clone(),
            lanes: self.lanes.clone(),
            ctx: self.ctx.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Laned> Offers<K> {
    /// Queues `obj` for the express path if it is in the first lane; a full queue leaves it
    /// to kube-runtime's.
    pub fn offer(&self, obj: &K) {
        if !is_first(obj, &self.ctx, &self.lanes) {
            return;
        }
        let key = key_of(obj);
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        if !queued.insert(key.clone()) {
            tracing::trace!(namespace = %key.0, name = %key.1, "already queued for the express path");
        } else if self.tx.try_send(key.clone()).is_err() {
            queued.remove(&key);
            tracing::debug!(namespace = %key.0, name = %key.1, "express path full: left to the controller's queue");
        } else {
            tracing::trace!(namespace = %key.0, name = %key.1, "queued for the express path");
        }
    }

    /// [`Self::offer`] for the object `r` names, as the cache shows it.
    pub fn offer_ref(&self, r: &ObjectRef<K>) {
        let ns = r.namespace.as_deref().unwrap_or_default();
        if let Some(obj) = K::cached(&self.ctx, ns, &r.name) {
            self.offer(obj.as_ref());
        }
    }
}

fn is_first<K: Laned>(obj: &K, ctx: &Context, lanes: &Lanes) -> bool {
    lane_of(obj.meta(), obj.has_status(ctx), ctx.now(), lanes.started) == Lane::First
}

/// A controller's express path: the [`Offers`] for its watches, and the future that serves
/// them (as many at once as the lanes have slots), which ends once every `Offers` is dropped.
pub fn express<K, E, Fut>(
    lanes: Arc<Lanes>,
    ctx: Arc<Context>,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
    error_policy: fn(Arc<K>, &E, Arc<Context>) -> Action,
) -> (Offers<K>, impl std::future::Future<Output = ()> + Send)
where
    K: Laned,
    E: Send + 'static,
    Fut: std::future::Future<Output = Result<Action, E>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Key>(QUEUE);
    let queued: Arc<Mutex<HashSet<Key>>> = Arc::default();
    let offers = Offers {
        tx,
        queued: queued.clone(),
        lanes: lanes.clone(),
        ctx: ctx.clone(),
        kind: PhantomData,
    };
    let workers = lanes.slots;
    // An object leaves `queued` as a worker takes it: an offer from then on (its finalizer's
    // event while this run adds it) queues it again.
    let keys = futures::stream::unfold(rx, move |mut rx| {
        let queued = queued.clone();
        async move {
            let key = rx.recv().await?;
            queued
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            Some((key, rx))
        }
    });
    let serve = keys.for_each_concurrent(workers, move |(ns, name)| {
        let (lanes, ctx) = (lanes.clone(), ctx.clone());
        async move {
            // Served meanwhile (by kube-runtime's queue, or an earlier offer), or gone: looked
            // at before waiting for the claim, so that no worker waits for nothing, and after.
            let first = |ctx: &Context| {
                K::cached(ctx, &ns, &name).filter(|o| is_first(o.as_ref(), ctx, &lanes))
            };
            let skip = |why: &str| tracing::trace!(namespace = %ns, name = %name, why, "express path: nothing to do");
            if first(&ctx).is_none() {
                return skip("not new");
            }
            let _claim = lanes.claims.claim((ns.clone(), name.clone())).await;
            if first(&ctx).is_none() {
                return skip("reconciled meanwhile");
            }
            let Some(_slot) = lanes.enter(Lane::First).await else {
                return skip("shutting down");
            };
            let Some(obj) = first(&ctx) else {
                return skip("reconciled meanwhile");
            };
            tracing::trace!(namespace = %ns, name = %name, "express path: its turn");
            let key = (ns.clone(), name.clone());
            match run(&lanes.claims, key, obj.clone(), ctx.clone(), reconcile).await {
                None => skip("its finalizer's event is on its way"),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = error_policy(obj, &e, ctx);
                }
            }
        }
    });
    (offers, serve)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kube::ResourceExt;

    // The test kind: a ConfigMap whose data stands for a status, in a cache of its own.
    static CACHE: Mutex<Vec<ConfigMap>> = Mutex::new(Vec::new());
    static RECONCILED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    // The two tests share the statics above: one at a time.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    impl Laned for ConfigMap {
        const FINALIZER: &'static str = "example.com/test";

        fn has_status(&self, _: &Context) -> bool {
            self.data.is_some()
        }

        fn cached(_: &Context, ns: &str, name: &str) -> Option<Arc<Self>> {
            let cache = CACHE.lock().unwrap();
            cache
                .iter()
                .find(|c| c.metadata.namespace.as_deref() == Some(ns) && c.name_any() == name)
                .cloned()
                .map(Arc::new)
        }
    }

    fn object(name: &str, age_secs: i64) -> ConfigMap {
        let created = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(age_secs);
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                creation_timestamp: Some(Time(created)),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Records the reconcile and writes the "status" into the cache, except on the first run of
    /// `twice` (a run that only adds a finalizer).
    async fn reconcile(obj: Arc<ConfigMap>, _: Arc<Context>) -> Result<Action, std::io::Error> {
        let name = obj.name_any();
        let runs = {
            let mut r = RECONCILED.lock().unwrap();
            r.push(name.clone());
            r.iter().filter(|n| **n == name).count()
        };
        if name == "twice" && runs == 1 {
            return Ok(Action::await_change());
        }
        let mut cache = CACHE.lock().unwrap();
        if let Some(c) = cache.iter_mut().find(|c| c.name_any() == name) {
            c.data = Some(BTreeMap::from([("done".to_string(), "yes".to_string())]));
        }
        Ok(Action::await_change())
    }

    fn error_policy(_: Arc<ConfigMap>, _: &std::io::Error, _: Arc<Context>) -> Action {
        Action::await_change()
    }

    async fn until(what: &str, done: impl Fn(&[String]) -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done(&RECONCILED.lock().unwrap()) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: {:?}", RECONCILED.lock().unwrap()));
    }

    /// Drops the offers, waits for the path to end with them, and returns the runs, sorted.
    async fn ended(offers: Offers<ConfigMap>, serve: tokio::task::JoinHandle<()>) -> Vec<String> {
        drop(offers);
        tokio::time::timeout(Duration::from_secs(10), serve)
            .await
            .expect("the express path outlived its offers")
            .unwrap();
        let mut runs = RECONCILED.lock().unwrap().clone();
        runs.sort();
        runs
    }

    #[tokio::test]
    async fn only_new_objects_are_served_each_offer_once_and_the_path_ends_with_its_offers() {
        let _serial = SERIAL.lock().await;
        RECONCILED.lock().unwrap().clear();
        let (ctx, _api) = Context::test();
        // Objects created in the second the lanes start count as after it.
        let lanes = Lanes::new(1);
        *CACHE.lock().unwrap() = vec![object("new", 0), object("twice", 0), object("old", 3600)];
        let (offers, serve) = express::<ConfigMap, _, _>(lanes, ctx, reconcile, error_policy);
        let serve = tokio::spawn(serve);
        let [new, twice, old] = <[ConfigMap; 3]>::try_from(CACHE.lock().unwrap().clone()).unwrap();
        // Offered three times (its creation, a wake-up, another) before it is served: once.
        for _ in 0..3 {
            offers.offer(&new);
        }
        offers.offer(&old);
        offers.offer_ref(&ObjectRef::new("old").within("ns"));
        offers.offer_ref(&ObjectRef::new("gone").within("ns"));
        until("the new object served", |r| r.contains(&"new".to_string())).await;
        // Its first run left it new (a finalizer added): the event of that change, offered after
        // the run took it off the queue, is served again.
        offers.offer(&twice);
        until("the first run", |r| r.iter().any(|n| n == "twice")).await;
        offers.offer(&twice);
        until("the second run", |r| {
            r.iter().filter(|n| *n == "twice").count() == 2
        })
        .await;
        // Served: an offer of a stale copy finds nothing to do.
        offers.offer(&new);
        let queued = offers.queued.clone();
        assert_eq!(ended(offers, serve).await, ["new", "twice", "twice"]);
        assert!(queued.lock().unwrap().is_empty(), "an object stayed queued");
    }

    #[tokio::test]
    async fn a_full_queue_leaves_the_object_to_the_controller_and_a_later_offer_queues_it() {
        let _serial = SERIAL.lock().await;
        RECONCILED.lock().unwrap().clear();
        let (ctx, _api) = Context::test();
        let lanes = Lanes::new(2);
        let names: Vec<String> = (0..=QUEUE).map(|i| format!("new-{i}")).collect();
        *CACHE.lock().unwrap() = names.iter().map(|n| object(n, 0)).collect();
        let objects = CACHE.lock().unwrap().clone();
        let (offers, serve) = express::<ConfigMap, _, _>(lanes, ctx, reconcile, error_policy);
        // Nothing serves yet: the queue fills, and the object past it is left out, not held
        // as queued (an offer would then never queue it again).
        for o in &objects {
            offers.offer(o);
        }
        let overflow = key_of(objects.last().unwrap());
        {
            let queued = offers.queued.lock().unwrap();
            assert_eq!(queued.len(), QUEUE);
            assert!(
                !queued.contains(&overflow),
                "the object past a full queue stayed queued"
            );
        }
        let serve = tokio::spawn(serve);
        until("the queue served", |r| r.len() == QUEUE).await;
        // Left to kube-runtime's queue (not running here), it is still new: offered again, it
        // is served, once.
        offers.offer(objects.last().unwrap());
        until("the object past the full queue", |r| {
            r.contains(&overflow.1)
        })
        .await;
        let mut expected = names.clone();
        expected.sort();
        assert_eq!(
            ended(offers, serve).await,
            expected,
            "each object served once"
        );
    }
}
