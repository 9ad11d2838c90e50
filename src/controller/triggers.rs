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
/// (the controller's store) are pruned whenever the map has doubled since the last prune.
pub fn meaningful_changes<K>(
    stream: impl Stream<Item = Arc<K>> + Send + 'static,
    live: impl Fn() -> Vec<Arc<K>> + Send + Sync + 'static,
) -> impl Stream<Item = Arc<K>> + Send + 'static
where
    K: Resource + Send + Sync + 'static,
{
    let seen: Arc<Mutex<Seen>> = Arc::default();
    stream.filter(move |obj| {
        let pass = match (obj.meta().uid.clone(), seen.lock()) {
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
                    let uids: std::collections::HashSet<String> =
                        live().iter().filter_map(|o| o.meta().uid.clone()).collect();
                    seen.map.retain(|u, _| uids.contains(u) || *u == uid);
                    seen.after_prune = seen.map.len();
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
        let passed = meaningful_changes(futures::stream::iter(events), Vec::new)
            .count()
            .await;
        assert_eq!(passed, 201);
        // With the objects live, nothing is pruned: the repeat is dropped.
        let live: Vec<_> = (0..200).map(with_uid).collect();
        let mut events: Vec<_> = (0..200).map(with_uid).collect();
        events.push(with_uid(0));
        let passed = meaningful_changes(futures::stream::iter(events), move || live.clone())
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
        let passed: Vec<_> = meaningful_changes(futures::stream::iter(events), Vec::new)
            .map(|u| (u.metadata.generation, u.metadata.annotations.is_some()))
            .collect()
            .await;
        assert_eq!(
            passed,
            vec![(Some(1), false), (Some(2), false), (Some(2), true)]
        );
    }
}
