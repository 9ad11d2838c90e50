//! The way in for an object just applied: kube-runtime's queue serves objects in the order they
//! came, behind any backlog, so each watch event and wake-up of a controller is also offered
//! here, and an object in the first lane (see [`super::lane_of`]) is reconciled from here as
//! soon as a slot frees, ahead of that queue. kube-runtime's own trigger for it still runs
//! later and finds nothing to do (its result, the next rotation, is scheduled there); a
//! reconcile that fails here goes through the controller's error policy as any other.
//!
//! The queue of offers is bounded: beyond [`QUEUE`] objects waiting, a large rollout applied
//! at once goes through kube-runtime's queue as before.

use std::marker::PhantomData;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use super::claims::Key;
use super::{key_of, lane_of, Lane, Laned, Lanes};
use crate::controller::Context;

/// Objects waiting for the express path, at most.
pub const QUEUE: usize = 1024;

/// Offers objects to a controller's express path.
pub struct Offers<K> {
    tx: mpsc::Sender<Key>,
    lanes: Arc<Lanes>,
    ctx: Arc<Context>,
    kind: PhantomData<fn(K)>,
}

impl<K> Clone for Offers<K> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
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
        if is_first(obj, &self.ctx, &self.lanes) {
            let _ = self.tx.try_send(key_of(obj));
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
    let offers = Offers {
        tx,
        lanes: lanes.clone(),
        ctx: ctx.clone(),
        kind: PhantomData,
    };
    let workers = lanes.slots;
    let keys = futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|key| (key, rx)) },
    );
    let serve = keys.for_each_concurrent(workers, move |(ns, name)| {
        let (lanes, ctx) = (lanes.clone(), ctx.clone());
        async move {
            let _claim = lanes.claims.claim((ns.clone(), name.clone())).await;
            // Served meanwhile (by kube-runtime's queue, or an earlier offer), or gone.
            let first = |ctx: &Context| {
                K::cached(ctx, &ns, &name).filter(|o| is_first(o.as_ref(), ctx, &lanes))
            };
            if first(&ctx).is_none() {
                return;
            }
            let Some(_slot) = lanes.enter(Lane::First).await else {
                return;
            };
            let Some(obj) = first(&ctx) else {
                return;
            };
            if let Err(e) = reconcile(obj.clone(), ctx.clone()).await {
                let _ = error_policy(obj, &e, ctx);
            }
        }
    });
    (offers, serve)
}
