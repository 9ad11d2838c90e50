//! The main stream of each controller passes only changes a reconcile must act on: a new
//! object, a new generation (spec), new annotations (rotate, revoke), a deletion or a
//! finalizer change. A reconcile's own status writes are dropped here, so they can never wake
//! the object again and bypass its back-off (a failing token once made 1,500 ACS calls a
//! minute that way). `kube::runtime::predicates` does the same for watcher streams; ours are
//! shared-store subscriptions of `Arc<K>`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::Resource;

/// What a change must touch to wake the object's reconcile.
fn fingerprint<K: Resource>(obj: &K) -> u64 {
    let m = obj.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.generation.hash(&mut h);
    m.annotations.hash(&mut h);
    m.deletion_timestamp.as_ref().map(|t| t.0).hash(&mut h);
    m.finalizers.hash(&mut h);
    h.finish()
}

/// Drops the events of `stream` that change nothing [`fingerprint`] covers. Entries are kept
/// per UID; a deleted object's entry is removed when its deletion is seen, and, since the
/// subscriber stream does not carry deletions, the entries of objects no longer in `live`
/// (the controller's store) are pruned whenever the map has doubled since the last prune, and
/// by [`ChangeFilters::prune`] (every few seconds), so an idle operator's map matches its store.
pub fn meaningful_changes<K>(
    stream: impl Stream<Item = Arc<K>> + Send + 'static,
    live: impl Fn() -> Vec<Arc<K>> + Send + Sync + 'static,
    filters: &ChangeFilters,
    table: &'static str,
) -> impl Stream<Item = Arc<K>> + Send + 'static
where
    K: Resource + Send + Sync + 'static,
{
    let filter = Arc::new(Filter {
        seen: Mutex::default(),
        live: Box::new(live),
    });
    filters.register(table, filter.clone());
    stream.filter(move |obj| {
        let pass = match (obj.meta().uid.clone(), filter.seen.lock()) {
            (Some(uid), Ok(mut seen)) => {
                let f = fingerprint(obj.as_ref());
                let changed = seen.map.insert(uid.clone(), f) != Some(f);
                // A terminating object without finalizers is about to go: forget it.
                if obj.meta().deletion_timestamp.is_some()
                    && obj.meta().finalizers.as_ref().is_none_or(Vec::is_empty)
                {
                    seen.map.remove(&uid);
                }
                if seen.map.len() > 2 * seen.after_prune + PRUNE_SLACK {
                    filter.prune_locked(&mut seen, Some(&uid));
                }
                changed
            }
            _ => true,
        };
        futures::future::ready(pass)
    })
}

/// Entries the map may hold beyond twice its size after the last prune.
const PRUNE_SLACK: usize = 64;

#[derive(Default)]
struct Seen {
    map: HashMap<String, u64>,
    after_prune: usize,
}

type Live<K> = Box<dyn Fn() -> Vec<Arc<K>> + Send + Sync>;

struct Filter<K> {
    seen: Mutex<Seen>,
    live: Live<K>,
}

impl<K: Resource> Filter<K> {
    /// Keeps the entries of live objects (and of `keep`, the object being filtered).
    fn prune_locked(&self, seen: &mut Seen, keep: Option<&str>) {
        let uids: std::collections::HashSet<String> = (self.live)()
            .iter()
            .filter_map(|o| o.meta().uid.clone())
            .collect();
        seen.map
            .retain(|u, _| uids.contains(u) || Some(u.as_str()) == keep);
        crate::alloc::shrink(&mut seen.map);
        seen.after_prune = seen.map.len();
    }
}

/// A filter's map, pruned and measured from outside its stream.
trait Prunable: Send + Sync {
    /// Prunes the entries of objects gone; returns the entries left.
    fn prune(&self) -> usize;
}

impl<K: Resource + Send + Sync> Prunable for Filter<K> {
    fn prune(&self) -> usize {
        let Ok(mut seen) = self.seen.lock() else {
            return 0;
        };
        if !seen.map.is_empty() {
            self.prune_locked(&mut seen, None);
        }
        seen.map.len()
    }
}

/// Every change filter of the process, by table name.
#[derive(Default)]
pub struct ChangeFilters(Mutex<Vec<(&'static str, Arc<dyn Prunable>)>>);

impl ChangeFilters {
    fn register(&self, table: &'static str, f: Arc<dyn Prunable>) {
        if let Ok(mut v) = self.0.lock() {
            v.push((table, f));
        }
    }

    /// Prunes every filter; returns the entries left per table (filters of one table summed).
    pub fn prune(&self) -> Vec<(&'static str, usize)> {
        let filters: Vec<_> = match self.0.lock() {
            Ok(v) => v.clone(),
            Err(_) => return Vec::new(),
        };
        let mut sizes: Vec<(&'static str, usize)> = Vec::new();
        for (table, f) in filters {
            let n = f.prune();
            match sizes.iter_mut().find(|(t, _)| *t == table) {
                Some((_, total)) => *total += n,
                None => sizes.push((table, n)),
            }
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CommunicationUser, CommunicationUserSpec, CommunicationUserStatus};

    fn user(
        generation: i64,
        annotation: Option<&str>,
        status_epoch: i64,
    ) -> Arc<CommunicationUser> {
        let mut u = CommunicationUser::new("u", CommunicationUserSpec::default());
        u.metadata.uid = Some("uid".into());
        u.metadata.generation = Some(generation);
        u.metadata.annotations = annotation
            .map(|a| [("communication.acs.dev/revoke".to_string(), a.to_string())].into());
        u.status = Some(CommunicationUserStatus {
            observed_generation: Some(status_epoch),
            ..Default::default()
        });
        Arc::new(u)
    }

    #[tokio::test]
    async fn entries_of_objects_gone_from_the_store_are_pruned() {
        let with_uid = |uid: usize| {
            let mut u = (*user(1, None, 0)).clone();
            u.metadata.uid = Some(format!("uid-{uid}"));
            Arc::new(u)
        };
        // 200 objects seen once, none of them live any more, then the first one again with
        // the same fingerprint: its entry was pruned, so it passes (without the prune it would
        // have been dropped as unchanged, and every entry kept forever).
        let mut events: Vec<_> = (0..200).map(with_uid).collect();
        events.push(with_uid(0));
        let passed = meaningful_changes(
            futures::stream::iter(events),
            Vec::new,
            &ChangeFilters::default(),
            "t",
        )
        .count()
        .await;
        assert_eq!(passed, 201);
        // With the objects live, nothing is pruned: the repeat is dropped.
        let live: Vec<_> = (0..200).map(with_uid).collect();
        let mut events: Vec<_> = (0..200).map(with_uid).collect();
        events.push(with_uid(0));
        let passed = meaningful_changes(
            futures::stream::iter(events),
            move || live.clone(),
            &ChangeFilters::default(),
            "t",
        )
        .count()
        .await;
        assert_eq!(passed, 200);
    }

    #[tokio::test]
    async fn status_only_changes_are_dropped_and_spec_or_annotation_changes_pass() {
        let events = vec![
            user(1, None, 0),
            user(1, None, 1),      // status write: dropped
            user(1, None, 2),      // status write: dropped
            user(2, None, 2),      // spec change
            user(2, Some("x"), 2), // annotation
            user(2, Some("x"), 3), // status write: dropped
        ];
        let passed: Vec<_> = meaningful_changes(
            futures::stream::iter(events),
            Vec::new,
            &ChangeFilters::default(),
            "t",
        )
        .map(|u| (u.metadata.generation, u.metadata.annotations.is_some()))
        .collect()
        .await;
        assert_eq!(
            passed,
            vec![(Some(1), false), (Some(2), false), (Some(2), true)]
        );
    }

    #[tokio::test]
    async fn an_idle_filter_is_pruned_to_its_live_objects() {
        let filters = ChangeFilters::default();
        let live: Arc<Mutex<Vec<Arc<CommunicationUser>>>> = Arc::default();
        let events: Vec<_> = (0..3)
            .map(|i| {
                let mut u = (*user(1, None, 0)).clone();
                u.metadata.uid = Some(format!("uid-{i}"));
                Arc::new(u)
            })
            .collect();
        live.lock().unwrap().push(events[0].clone());
        let l = live.clone();
        let passed = meaningful_changes(
            futures::stream::iter(events),
            move || l.lock().unwrap().clone(),
            &filters,
            "users",
        )
        .count()
        .await;
        assert_eq!(passed, 3);
        // Two of the three are gone from the store (their deletions never reach the stream).
        assert_eq!(filters.prune(), vec![("users", 1)]);
        live.lock().unwrap().clear();
        assert_eq!(filters.prune(), vec![("users", 0)]);
    }
}
