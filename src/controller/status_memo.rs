//! The status this process last wrote to each object, with the resourceVersion its write
//! returned, until the watch delivers that write. A reconcile can start before then (another
//! trigger, such as the Secret the same reconcile created, wakes the object first); planned
//! from the stale cached status, it would find "nothing recorded yet" and write a status again.
//! Planned from what was written, it finds nothing to do.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

type Key = (String, String);

/// resourceVersions are opaque to clients, but the apiserver's etcd3 storage issues them as
/// increasing integers; one that does not parse disables the memo for that write.
fn rv(s: Option<&str>) -> Option<u64> {
    s.and_then(|s| s.parse().ok())
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

/// Holds only writes the watch has not delivered yet: a few in flight per reconcile.
pub struct StatusMemo<S> {
    wrote: Mutex<HashMap<Key, (u64, S)>>,
}

impl<S> Default for StatusMemo<S> {
    fn default() -> Self {
        Self {
            wrote: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: Clone> StatusMemo<S> {
    /// What this process wrote, if the cached copy (at `cached_rv`) is older than that write.
    pub fn fresher(&self, ns: &str, name: &str, cached_rv: Option<&str>) -> Option<S> {
        let wrote = self.wrote.lock().unwrap_or_else(PoisonError::into_inner);
        match (wrote.get(&key(ns, name)), rv(cached_rv)) {
            (Some((at, s)), Some(cached_at)) if cached_at < *at => Some(s.clone()),
            _ => None,
        }
    }

    /// This process wrote `status`; the object is now at `resource_version`.
    pub fn wrote(&self, ns: &str, name: &str, resource_version: Option<&str>, status: S) {
        let mut wrote = self.wrote.lock().unwrap_or_else(PoisonError::into_inner);
        match rv(resource_version) {
            Some(at) => {
                wrote.insert(key(ns, name), (at, status));
            }
            None => {
                wrote.remove(&key(ns, name));
            }
        }
    }

    /// The watch delivered the object at `resource_version` (`None`: deleted): a write at or
    /// before it is in the cache now.
    pub fn seen(&self, ns: &str, name: &str, resource_version: Option<&str>) {
        let mut wrote = self.wrote.lock().unwrap_or_else(PoisonError::into_inner);
        let k = key(ns, name);
        let caught_up = match (wrote.get(&k), rv(resource_version)) {
            (None, _) => false,
            (Some((at, _)), Some(now)) => now >= *at,
            (Some(_), None) => true,
        };
        if caught_up {
            wrote.remove(&k);
        }
    }

    /// Keeps the memo in step with one watch event of the objects.
    pub fn on_event<K: kube::Resource>(&self, event: &kube::runtime::watcher::Event<K>) {
        use kube::runtime::watcher::Event;
        let (o, rv) = match event {
            Event::Apply(o) | Event::InitApply(o) => (o, o.meta().resource_version.as_deref()),
            Event::Delete(o) => (o, None),
            Event::Init | Event::InitDone => return,
        };
        let meta = o.meta();
        self.seen(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            rv,
        );
    }

    /// Gives back the room of a map that emptied.
    pub fn shrink(&self) {
        crate::alloc::shrink(&mut self.wrote.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Drops the writes to objects of `scope` a complete list of the watch did not show.
    pub fn retain_listed(&self, scope: Option<&str>, listed: &crate::relist::Listed) {
        self.wrote
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(ns, name), _| !listed.stale(scope, ns, name));
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes not yet delivered by the watch.
    pub fn len(&self) -> usize {
        self.wrote
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_counts_until_the_watch_delivers_it() {
        let m: StatusMemo<&str> = StatusMemo::default();
        assert_eq!(m.fresher("ns", "t", Some("10")), None);
        m.wrote("ns", "t", Some("12"), "issued");
        // The cache still shows resourceVersion 10: what was written is fresher.
        assert_eq!(m.fresher("ns", "t", Some("10")), Some("issued"));
        // A copy at or past the write is not stale.
        assert_eq!(m.fresher("ns", "t", Some("12")), None);
        // The watch delivering an older version keeps the entry; the write itself drops it.
        m.seen("ns", "t", Some("11"));
        assert_eq!(m.len(), 1);
        m.seen("ns", "t", Some("12"));
        assert_eq!(m.len(), 0);
        assert_eq!(m.fresher("ns", "t", Some("10")), None);
        // Deletion drops it; other objects are not affected; an unparseable version records
        // nothing.
        m.wrote("ns", "u", Some("20"), "u");
        assert_eq!(m.fresher("ns", "v", Some("1")), None);
        m.seen("ns", "u", None);
        assert_eq!(m.len(), 0);
        m.wrote("ns", "w", Some("x"), "w");
        assert_eq!(m.fresher("ns", "w", Some("1")), None);
    }
}
