//! What a watch's (re)list showed. A watch that restarts lists its objects again instead of
//! replaying the deletions it missed, so a table fed by watch events must, at the end of each
//! list, drop the entries of its scope the list did not show (the reflector's store does the
//! same by swapping itself wholesale). Without this, every object deleted while a watch was
//! down stayed in the tables for the life of the process.

use std::collections::HashSet;

use kube::runtime::watcher::Event;
use kube::Resource;

/// Namespace and name.
pub type Key = (String, String);

/// Follows one watch's events; keeps the keys of a list in progress.
#[derive(Debug, Default)]
pub struct Relist {
    listing: Option<HashSet<Key>>,
}

impl Relist {
    /// Feeds one event; at the end of a list, returns the keys it showed.
    pub fn on_event<K: Resource>(&mut self, event: &Event<K>) -> Option<Listed> {
        match event {
            Event::Init => {
                self.listing = Some(HashSet::new());
                None
            }
            Event::InitApply(o) => {
                if let Some(l) = self.listing.as_mut() {
                    let m = o.meta();
                    l.insert((
                        m.namespace.clone().unwrap_or_default(),
                        m.name.clone().unwrap_or_default(),
                    ));
                }
                None
            }
            Event::InitDone => self.listing.take().map(|keys| Listed { keys }),
            Event::Apply(_) | Event::Delete(_) => None,
        }
    }
}

/// The objects one complete list showed.
#[derive(Debug)]
pub struct Listed {
    keys: HashSet<Key>,
}

impl Listed {
    /// Whether an entry for `ns`/`name` is stale: inside the watch's `scope` (a namespace;
    /// `None`: every namespace) and not listed.
    pub fn stale(&self, scope: Option<&str>, ns: &str, name: &str) -> bool {
        scope.is_none_or(|s| s == ns) && !self.keys.contains(&(ns.to_string(), name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cm(ns: &str, name: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.namespace = Some(ns.into());
        c.metadata.name = Some(name.into());
        c
    }

    #[test]
    fn a_complete_list_names_the_stale_entries_of_its_scope_only() {
        let mut r = Relist::default();
        // Events outside a list, and a list's end without its start, name nothing.
        assert!(r.on_event(&Event::Apply(cm("a", "x"))).is_none());
        assert!(r.on_event::<ConfigMap>(&Event::InitDone).is_none());
        assert!(r.on_event::<ConfigMap>(&Event::Init).is_none());
        assert!(r.on_event(&Event::InitApply(cm("a", "kept"))).is_none());
        let listed = r.on_event::<ConfigMap>(&Event::InitDone).expect("a list");
        assert!(!listed.stale(Some("a"), "a", "kept"));
        assert!(listed.stale(Some("a"), "a", "gone"));
        // Another namespace's watch lists it: not this one's to judge.
        assert!(!listed.stale(Some("a"), "b", "gone"));
        assert!(listed.stale(None, "b", "gone"));
        // The list is consumed: the next end without a start names nothing.
        assert!(r.on_event::<ConfigMap>(&Event::InitDone).is_none());
    }
}
