//! The reconciles a controller runs at once, in two lanes: an object just applied and never
//! reconciled (a new application's user or token, someone waiting at `kubectl apply`) takes the
//! next free slot ahead of every other (a start's re-verification, a key rotation's wave of
//! re-issues, a large rollout past its first seconds), so it never waits behind a backlog of
//! thousands. The other lane is never starved: while it waits, it gets at least one slot in
//! [`FIRST_RUN`] + 1, so a stream of creations in one namespace cannot hold back renewals.
//! Each controller (one per watched namespace) has its own lanes, as many slots as its
//! `--concurrency`.
//!
//! kube-runtime's queue stays bounded at the same `--concurrency` (unbounded, it holds every
//! waiting object as running and scans them all at each step: quadratic at 20,000 tokens), so
//! a new object reaches its lane through [`express`] instead of behind that queue; [`claims`]
//! keeps the two ways in from reconciling one object at once.

pub mod claims;
pub mod express;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tokio::sync::oneshot;

use self::claims::{Claims, Key};
use super::Context;

/// What the lanes need to know of a kind.
pub trait Laned: Resource<DynamicType = ()> + Send + Sync + 'static {
    /// The finalizer the kind's reconcile adds first.
    const FINALIZER: &'static str;
    /// Reconciled at least once: a status, in the cache or written and not yet seen there.
    fn has_status(&self, ctx: &Context) -> bool;
    /// The object as the cache shows it now.
    fn cached(ctx: &Context, ns: &str, name: &str) -> Option<Arc<Self>>;
}

fn key_of<K: Resource>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Waits for the object's claim and a reconcile slot (a new object ahead of the others), then
/// reconciles it as the cache shows it by then (gone: nothing to do; its deletion was
/// reconciled or will be); the reconcile's body is built only once it has its slot.
pub async fn in_lane<K, E, Fut>(
    lanes: Arc<Lanes>,
    obj: Arc<K>,
    ctx: Arc<Context>,
    reconcile: impl FnOnce(Arc<K>, Arc<Context>) -> Fut,
) -> Result<Action, E>
where
    K: Laned,
    Fut: std::future::Future<Output = Result<Action, E>>,
{
    let (ns, name) = key_of(obj.as_ref());
    let _claim = lanes.claims.claim((ns.clone(), name.clone())).await;
    let lane = lane_of(obj.meta(), obj.has_status(&ctx), ctx.now(), lanes.started);
    let Some(_slot) = lanes.enter(lane).await else {
        return Ok(Action::await_change());
    };
    let Some(obj) = K::cached(&ctx, &ns, &name) else {
        return Ok(Action::await_change());
    };
    // Skipped: the finalizer's own event wakes it.
    run(&lanes.claims, (ns, name), obj, ctx, reconcile)
        .await
        .unwrap_or(Ok(Action::await_change()))
}

/// Reconciles `obj`, its claim and slot held, unless the previous run added its finalizer to
/// this very copy (`None`); both ways in (kube-runtime's queue and the express path) end here.
async fn run<K, E, Fut>(
    claims: &Claims,
    key: Key,
    obj: Arc<K>,
    ctx: Arc<Context>,
    reconcile: impl FnOnce(Arc<K>, Arc<Context>) -> Fut,
) -> Option<Result<Action, E>>
where
    K: Laned,
    Fut: std::future::Future<Output = Result<Action, E>>,
{
    if claims.finalizer_pending(&key, obj.meta(), K::FINALIZER) {
        return None;
    }
    let result = reconcile(obj.clone(), ctx).await;
    claims.ran(key, obj.meta(), K::FINALIZER, result.is_ok());
    Some(result)
}

/// Which lane an object waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Created in the last [`FRESH`], after this process started, no status yet.
    First,
    /// Everything else.
    Known,
}

/// How recently an object without a status must have been created to go first. A rollout of
/// thousands is first for its first seconds only: its objects then queue as a backlog, and an
/// object applied after them still goes first. Objects waiting for something else (a token
/// for its user) write no status, so age, not status alone, tells them apart. Objects created
/// before this process started are its start's backlog, however young.
pub const FRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// Slots the first lane may take in a row while the other waits.
const FIRST_RUN: u32 = 3;

/// The lane of an object with `meta`, with or without a status, at `now`, in a process that
/// started at `started`.
pub fn lane_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    has_status: bool,
    now: jiff::Timestamp,
    started: jiff::Timestamp,
) -> Lane {
    let fresh = meta.creation_timestamp.as_ref().is_some_and(|c| {
        c.0 >= started
            && now
                .duration_since(c.0)
                .try_into()
                .is_ok_and(|age: std::time::Duration| age <= FRESH)
    });
    if fresh && !has_status && meta.deletion_timestamp.is_none() {
        Lane::First
    } else {
        Lane::Known
    }
}

pub struct Lanes {
    /// When these lanes were made (the process's start, to a second): objects created before
    /// are never first.
    pub started: jiff::Timestamp,
    /// Reconciles at once.
    pub slots: usize,
    claims: Arc<Claims>,
    state: Mutex<State>,
}

struct State {
    /// At shutdown: no slot is given any more.
    closed: bool,
    free: usize,
    /// Slots handed to the first lane in a row while the other waited.
    first_run: u32,
    first: VecDeque<oneshot::Sender<()>>,
    known: VecDeque<oneshot::Sender<()>>,
}

/// A reconcile's slot, given back when dropped.
pub struct Slot(Arc<Lanes>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A wait for a slot; a slot handed to a wait dropped before it took it goes to the next.
struct Waiting {
    rx: oneshot::Receiver<()>,
    lanes: Arc<Lanes>,
    taken: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.taken {
            self.rx.close();
            if self.rx.try_recv().is_ok() {
                self.lanes.release();
            }
        }
    }
}

impl Lanes {
    /// `slots` reconciles at once (at least one).
    pub fn new(slots: usize) -> Arc<Self> {
        // Whole seconds, as creation timestamps are: an object created in the second the
        // process started is not taken for the start's backlog.
        let now = jiff::Timestamp::now();
        Arc::new(Self {
            started: crate::rotation::whole_seconds(now),
            slots: slots.max(1),
            claims: Arc::default(),
            state: Mutex::new(State {
                closed: false,
                free: slots.max(1),
                first_run: 0,
                first: VecDeque::new(),
                known: VecDeque::new(),
            }),
        })
    }

    /// Waits for a slot in `lane`; `None` once the lanes are closed (shutdown: the controller
    /// waits for the reconciles it started, which must then not be the whole backlog).
    pub async fn enter(self: &Arc<Self>, lane: Lane) -> Option<Slot> {
        let rx = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if s.closed {
                return None;
            }
            // Waiters exist only while no slot is free.
            if s.free > 0 {
                s.free -= 1;
                return Some(Slot(self.clone()));
            }
            let (tx, rx) = oneshot::channel();
            match lane {
                Lane::First => s.first.push_back(tx),
                Lane::Known => s.known.push_back(tx),
            }
            rx
        };
        let mut waiting = Waiting {
            rx,
            lanes: self.clone(),
            taken: false,
        };
        // A sender dropped unanswered: the lanes closed.
        let handed = (&mut waiting.rx).await.is_ok();
        waiting.taken = true;
        handed.then(|| Slot(self.clone()))
    }

    /// Shutdown: the waiting reconciles return without reconciling, and none starts any more.
    pub fn close(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.closed = true;
        s.first.clear();
        s.known.clear();
    }

    /// Hands a slot to the next waiter: the first lane's before the other's, but the other's
    /// after [`FIRST_RUN`] first-lane slots in a row.
    fn release(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let known_turn = s.known.front().is_some() && s.first_run >= FIRST_RUN;
            let next = match (known_turn, s.first.is_empty()) {
                (false, false) => {
                    if !s.known.is_empty() {
                        s.first_run += 1;
                    }
                    s.first.pop_front()
                }
                _ => {
                    s.first_run = 0;
                    s.known.pop_front()
                }
            };
            let Some(tx) = next else {
                s.free += 1;
                break;
            };
            if tx.send(()).is_ok() {
                break;
            }
        }
    }

    /// A controller's shutdown signal that first closes these lanes: the reconciles waiting for
    /// a slot then return at once, and only those running finish.
    pub fn closing_on<F>(
        self: &Arc<Self>,
        shutdown: F,
    ) -> impl std::future::Future<Output = ()> + Send + Sync + 'static
    where
        F: std::future::Future<Output = ()> + Send + Sync + 'static,
    {
        let lanes = self.clone();
        async move {
            shutdown.await;
            lanes.close();
        }
    }

    /// Reconciles waiting, in each lane.
    #[cfg(test)]
    fn waiting(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (s.first.len(), s.known.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lanes(slots: usize) -> Arc<Lanes> {
        Lanes::new(slots)
    }

    /// Starts a waiter that records its name once it has a slot, and holds the slot until
    /// told to let go.
    fn waiter(
        l: &Arc<Lanes>,
        lane: Lane,
        name: &'static str,
        order: &Arc<Mutex<Vec<&'static str>>>,
    ) -> (tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
        let (done, hold) = oneshot::channel::<()>();
        let l = l.clone();
        let order = order.clone();
        let task = tokio::spawn(async move {
            let _slot = l.enter(lane).await.unwrap();
            order.lock().unwrap().push(name);
            let _ = hold.await;
        });
        (task, done)
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_object_takes_the_next_slot_ahead_of_the_backlog() {
        let l = lanes(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (running, free_running) = waiter(&l, Lane::Known, "running", &order);
        settle().await;
        let mut backlog = Vec::new();
        for name in ["known-1", "known-2", "known-3"] {
            backlog.push(waiter(&l, Lane::Known, name, &order));
            settle().await;
        }
        let (new, free_new) = waiter(&l, Lane::First, "new", &order);
        settle().await;
        assert_eq!(l.waiting(), (1, 3));
        free_running.send(()).unwrap();
        running.await.unwrap();
        settle().await;
        assert_eq!(*order.lock().unwrap(), ["running", "new"]);
        free_new.send(()).unwrap();
        new.await.unwrap();
        for (task, free) in backlog {
            settle().await;
            free.send(()).unwrap();
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["running", "new", "known-1", "known-2", "known-3"],
            "the backlog keeps its order"
        );
        assert_eq!(l.waiting(), (0, 0));
        // Every slot is back: as many enter at once as there are slots.
        let a = l.enter(Lane::Known).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), l.enter(Lane::First))
                .await
                .is_err(),
            "one slot only"
        );
        drop(a);
        let b = l.enter(Lane::First).await.unwrap();
        // Shutdown: a waiter and a newcomer both get no slot.
        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.enter(Lane::Known).await.is_some() }
        });
        settle().await;
        l.close();
        assert!(!waiting.await.unwrap(), "a waiter got a slot after close");
        assert!(l.enter(Lane::First).await.is_none());
        drop(b);
        assert_eq!(l.waiting(), (0, 0));
    }

    #[test]
    fn only_an_object_just_created_without_a_status_goes_first() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let started = jiff::Timestamp::from_second(1_000_000 - 60).unwrap();
        let lane_of = |m: &ObjectMeta, has_status: bool, now| lane_of(m, has_status, now, started);
        let created = |secs_ago: i64| ObjectMeta {
            creation_timestamp: Some(Time(
                jiff::Timestamp::from_second(1_000_000 - secs_ago).unwrap(),
            )),
            ..Default::default()
        };
        assert_eq!(lane_of(&created(0), false, now), Lane::First);
        assert_eq!(lane_of(&created(10), false, now), Lane::First);
        assert_eq!(lane_of(&created(11), false, now), Lane::Known, "a backlog");
        assert_eq!(lane_of(&created(1), true, now), Lane::Known, "reconciled");
        // Clock skew: created "in the future" by the apiserver's clock.
        assert_eq!(lane_of(&created(-5), false, now), Lane::Known);
        let mut deleting = created(1);
        deleting.deletion_timestamp = deleting.creation_timestamp.clone();
        assert_eq!(lane_of(&deleting, false, now), Lane::Known);
        assert_eq!(lane_of(&ObjectMeta::default(), false, now), Lane::Known);
        // Applied before the process started: its start's backlog.
        let later = jiff::Timestamp::from_second(1_000_000 - 55).unwrap();
        assert_eq!(lane_of(&created(61), false, later), Lane::Known);
        assert_eq!(lane_of(&created(58), false, later), Lane::First);
    }

    #[tokio::test(start_paused = true)]
    async fn the_other_lane_gets_a_slot_after_three_new_objects_in_a_row() {
        let l = lanes(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut holders = std::collections::HashMap::new();
        holders.insert("running", waiter(&l, Lane::Known, "running", &order));
        settle().await;
        holders.insert("renewal", waiter(&l, Lane::Known, "renewal", &order));
        settle().await;
        for name in ["new-1", "new-2", "new-3", "new-4", "new-5"] {
            holders.insert(name, waiter(&l, Lane::First, name, &order));
            settle().await;
        }
        // Whoever holds the slot lets go, until every waiter had it.
        while !holders.is_empty() {
            let held = *order.lock().unwrap().last().unwrap();
            let (task, free) = holders.remove(held).unwrap();
            free.send(()).unwrap();
            task.await.unwrap();
            settle().await;
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["running", "new-1", "new-2", "new-3", "renewal", "new-4", "new-5"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_handed_to_a_wait_dropped_before_it_took_it_goes_to_the_next() {
        let l = lanes(1);
        let held = l.enter(Lane::Known).await.unwrap();
        let mut gave_up = Box::pin(l.enter(Lane::First));
        assert!(futures::poll!(&mut gave_up).is_pending());
        drop(held); // handed to `gave_up`, which never polls again
        drop(gave_up);
        let _again = tokio::time::timeout(Duration::from_secs(1), l.enter(Lane::Known))
            .await
            .expect("the slot was lost")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_given_up_loses_no_slot() {
        let l = lanes(1);
        let held = l.enter(Lane::Known).await.unwrap();
        // A waiter dropped while it waits (and one whose slot was handed but not taken).
        let gave_up = tokio::time::timeout(Duration::from_secs(1), l.enter(Lane::First)).await;
        assert!(gave_up.is_err());
        assert_eq!(l.waiting(), (1, 0), "its sender is still queued");
        drop(held);
        // The queued sender's receiver is gone: the slot passes it by and stays free.
        let _again = tokio::time::timeout(Duration::from_secs(1), l.enter(Lane::Known))
            .await
            .expect("the slot was lost");
        assert_eq!(l.waiting(), (0, 0));
    }
}
