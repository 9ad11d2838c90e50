//! What this process wrote to each object, with the resourceVersion its write returned: the
//! one memory of "what I wrote that the cache may not show yet". Its owners differ only in
//! how long they keep an entry:
//! - token statuses, until the watch delivers the write: a reconcile that
//!   starts before then (another trigger woke the object) plans from what was written, not
//!   from the stale cached status, and finds nothing to do instead of writing again;
//! - a user's new identity, from before its write is sent (GA creation is not idempotent: a
//!   failed write must not lead to a second identity) until the cache shows an identity (a
//!   reconcile, or the tables' prune every 5 s; never forgotten on a resourceVersion alone: a
//!   relist's objects are not in the cache until the relist ends);
//! - token Secrets ([`super::own_writes`]), for as long as the watch shows the Secret at the
//!   version this process wrote, so that a reconcile needs no GET to know what it holds.
//!
//! Every entry goes when its object is deleted (the watch's event, or a relist that no longer
//! shows it).

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::ns_map::{NsMap, Version};

/// When a write happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// Sent, its answer not known yet (or the write failed): newer than any cached copy.
    Sending,
    /// The object's resourceVersion after the write, as the apiserver answered it.
    Version(Version),
}

/// What this process wrote, by namespace and name.
pub struct Written<V> {
    map: Mutex<NsMap<(At, V)>>,
}

impl<V> Default for Written<V> {
    fn default() -> Self {
        Self {
            map: Mutex::new(NsMap::default()),
        }
    }
}

/// A resourceVersion as a number, for ordering (see [`Version`]).
fn rv(s: Option<&str>) -> Option<u64> {
    s.and_then(crate::ns_map::canonical)
}

impl<V: Clone> Written<V> {
    fn map(&self) -> MutexGuard<'_, NsMap<(At, V)>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This process is about to write `value`: it counts as newer than any cached copy until
    /// [`Self::wrote`] or [`Self::forget`].
    pub fn sending(&self, ns: &str, name: &str, value: V) {
        self.map().insert(ns, name, (At::Sending, value));
    }

    /// This process wrote `value`; the object is now at `resource_version` (absent: nothing
    /// is remembered).
    pub fn wrote(&self, ns: &str, name: &str, resource_version: Option<&str>, value: V) {
        let mut map = self.map();
        match resource_version {
            Some(at) => {
                map.insert(ns, name, (At::Version(Version::new(at)), value));
            }
            None => {
                map.remove(ns, name);
            }
        }
    }

    /// What this process wrote, if the cached copy (at `cached_rv`) is older than that write.
    pub fn fresher(&self, ns: &str, name: &str, cached_rv: Option<&str>) -> Option<V> {
        match (self.map().get(ns, name), rv(cached_rv)) {
            (Some((At::Sending, v)), _) => Some(v.clone()),
            (Some((At::Version(at), v)), Some(cached))
                if at.number().is_some_and(|at| cached < at) =>
            {
                Some(v.clone())
            }
            _ => None,
        }
    }

    /// What this process wrote, if the object is still at exactly `resource_version`.
    pub fn at(&self, ns: &str, name: &str, resource_version: &Version) -> Option<V> {
        match self.map().get(ns, name) {
            Some((At::Version(v), value)) if v == resource_version => Some(value.clone()),
            _ => None,
        }
    }

    /// The watch delivered the object at `resource_version` (`None`: deleted): a write at or
    /// before it is in the cache now and is forgotten. A write still being sent is kept.
    pub fn caught_up(&self, ns: &str, name: &str, resource_version: Option<&str>) {
        let mut map = self.map();
        let done = match (map.get(ns, name), resource_version) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some((At::Sending, _)), Some(_)) => false,
            // A write whose version does not parse is never fresher: nothing to keep it for.
            (Some((At::Version(at), _)), Some(now)) => match (at.number(), rv(Some(now))) {
                (Some(at), Some(now)) => now >= at,
                (None, _) => true,
                (Some(_), None) => false,
            },
        };
        if done {
            map.remove(ns, name);
        }
    }

    /// Keeps the memory in step with one watch event of the objects.
    pub fn on_event<K: kube::Resource>(&self, event: &kube::runtime::watcher::Event<K>) {
        use kube::runtime::watcher::Event;
        let (o, rv) = match event {
            Event::Apply(o) | Event::InitApply(o) => (o, o.meta().resource_version.as_deref()),
            Event::Delete(o) => (o, None),
            Event::Init | Event::InitDone => return,
        };
        let meta = o.meta();
        self.caught_up(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            rv,
        );
    }

    pub fn contains(&self, ns: &str, name: &str) -> bool {
        self.map().contains(ns, name)
    }

    pub fn forget(&self, ns: &str, name: &str) {
        self.map().remove(ns, name);
    }

    /// Keeps only the objects `keep` says still exist.
    pub fn retain(&self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.map().retain(|ns, name, _| keep(ns, name));
    }

    /// Drops the writes to objects of `scope` a complete list of the watch did not show.
    pub fn retain_listed(&self, scope: Option<&str>, listed: &crate::relist::Listed) {
        self.retain(|ns, name| !listed.stale(scope, ns, name));
    }

    /// Gives back the room of a map that emptied.
    pub fn shrink(&self) {
        self.map().shrink();
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_counts_until_the_watch_delivers_it() {
        let m: Written<&str> = Written::default();
        assert_eq!(m.fresher("ns", "t", Some("10")), None);
        m.wrote("ns", "t", Some("12"), "issued");
        // The cache still shows resourceVersion 10: what was written is fresher.
        assert_eq!(m.fresher("ns", "t", Some("10")), Some("issued"));
        // A copy at or past the write is not stale.
        assert_eq!(m.fresher("ns", "t", Some("12")), None);
        // The watch delivering an older version keeps the entry; the write itself drops it.
        m.caught_up("ns", "t", Some("11"));
        assert_eq!(m.len(), 1);
        m.caught_up("ns", "t", Some("12"));
        assert_eq!(m.len(), 0);
        assert_eq!(m.fresher("ns", "t", Some("10")), None);
        // Deletion drops it; other objects are not affected; an unparseable version records
        // nothing.
        m.wrote("ns", "u", Some("20"), "u");
        assert_eq!(m.fresher("ns", "v", Some("1")), None);
        m.caught_up("ns", "u", None);
        assert_eq!(m.len(), 0);
        m.wrote("ns", "w", Some("x"), "w");
        assert_eq!(m.fresher("ns", "w", Some("1")), None);
        assert_eq!(
            m.at("ns", "w", &Version::new("x")),
            Some("w"),
            "equality needs no parsing"
        );
    }

    #[test]
    fn a_write_being_sent_is_fresher_than_any_copy_until_written_or_deleted() {
        let m: Written<&str> = Written::default();
        m.sending("ns", "u", "identity");
        assert_eq!(m.fresher("ns", "u", Some("99")), Some("identity"));
        assert_eq!(m.fresher("ns", "u", None), Some("identity"));
        // No delivered version catches up with a write whose answer is not known.
        m.caught_up("ns", "u", Some("1000"));
        assert!(m.contains("ns", "u"));
        // Its answer makes it an ordinary write.
        m.wrote("ns", "u", Some("7"), "identity");
        assert_eq!(m.fresher("ns", "u", Some("7")), None);
        m.sending("ns", "u", "again");
        m.caught_up("ns", "u", None);
        assert!(m.is_empty());
    }

    #[test]
    fn at_answers_only_for_the_exact_version_written() {
        let m: Written<u8> = Written::default();
        m.wrote("ns", "s", Some("5"), 1);
        assert_eq!(m.at("ns", "s", &Version::new("5")), Some(1));
        assert_eq!(m.at("ns", "s", &Version::new("6")), None);
        assert_eq!(m.at("ns", "s", &Version::new("x")), None);
        assert_eq!(m.at("ns", "s", &Version::new("05")), None);
        m.sending("ns", "s", 2);
        assert_eq!(m.at("ns", "s", &Version::new("5")), None);
        m.retain(|_, name| name != "s");
        assert!(m.is_empty());
    }
}
