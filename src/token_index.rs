//! CommunicationTokens by user and by Secret name, per namespace, fed by the tokens' watch
//! beside the reflector store. Finding a user's tokens or the other claimants of a Secret name
//! by scanning the store cost every reconcile a pass over every token of the namespace: at
//! 20,000 tokens that scan was most of the operator's CPU (`memcmp` at the top of a perf
//! profile) and made a cold start quadratic. Lookups return names; callers read the objects
//! from the store and re-check them, so an entry a moment ahead of (or behind) the store is
//! harmless.

use std::collections::{HashMap, HashSet};
use std::sync::{PoisonError, RwLock};

use kube::runtime::watcher;
use kube::ResourceExt;

use crate::api::CommunicationToken;

type Key = (String, String);

#[derive(Default)]
struct Inner {
    by_user: HashMap<Key, HashSet<String>>,
    by_secret: HashMap<Key, HashSet<String>>,
    /// (namespace, name) -> (user, Secret name) as last indexed.
    keys: HashMap<Key, (String, String)>,
}

impl Inner {
    fn unlink(&mut self, ns: &str, name: &str) {
        let Some((user, secret)) = self.keys.remove(&(ns.to_string(), name.to_string())) else {
            return;
        };
        for (map, k) in [
            (&mut self.by_user, (ns.to_string(), user)),
            (&mut self.by_secret, (ns.to_string(), secret)),
        ] {
            if let Some(set) = map.get_mut(&k) {
                set.remove(name);
                if set.is_empty() {
                    map.remove(&k);
                }
            }
        }
    }
}

#[derive(Default)]
pub struct TokenIndex {
    inner: RwLock<Inner>,
}

impl TokenIndex {
    pub fn upsert(&self, t: &CommunicationToken) {
        let ns = t.namespace().unwrap_or_default();
        let name = t.name_any();
        let user = t.spec.user_ref.name.clone();
        let secret = t.secret_name();
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.keys.get(&(ns.clone(), name.clone())) == Some(&(user.clone(), secret.clone())) {
            return;
        }
        inner.unlink(&ns, &name);
        inner
            .by_user
            .entry((ns.clone(), user.clone()))
            .or_default()
            .insert(name.clone());
        inner
            .by_secret
            .entry((ns.clone(), secret.clone()))
            .or_default()
            .insert(name.clone());
        inner.keys.insert((ns, name), (user, secret));
    }

    pub fn remove(&self, t: &CommunicationToken) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.unlink(&t.namespace().unwrap_or_default(), &t.name_any());
    }

    /// Keeps the index in step with one watch event.
    pub fn apply(&self, event: &watcher::Event<CommunicationToken>) {
        match event {
            watcher::Event::Apply(t) | watcher::Event::InitApply(t) => self.upsert(t),
            watcher::Event::Delete(t) => self.remove(t),
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    /// Names of the tokens of `user` in `ns`.
    pub fn of_user(&self, ns: &str, user: &str) -> Vec<String> {
        self.lookup(|i| i.by_user.get(&(ns.to_string(), user.to_string())).cloned())
    }

    /// Names of the tokens in `ns` whose Secret is named `secret`.
    pub fn claiming(&self, ns: &str, secret: &str) -> Vec<String> {
        self.lookup(|i| {
            i.by_secret
                .get(&(ns.to_string(), secret.to_string()))
                .cloned()
        })
    }

    /// Drops the tokens of `scope` that a complete list of its watch did not show (deleted
    /// while the watch was down: no deletion event ever comes for them).
    pub fn retain_listed(&self, scope: Option<&str>, listed: &crate::relist::Listed) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let stale: Vec<Key> = inner
            .keys
            .keys()
            .filter(|(ns, name)| listed.stale(scope, ns, name))
            .cloned()
            .collect();
        for (ns, name) in stale {
            inner.unlink(&ns, &name);
        }
    }

    /// Gives back the room of maps that emptied.
    pub fn shrink(&self) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        crate::alloc::shrink(&mut inner.by_user);
        crate::alloc::shrink(&mut inner.by_secret);
        crate::alloc::shrink(&mut inner.keys);
    }

    /// Tokens indexed.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, f: impl Fn(&Inner) -> Option<HashSet<String>>) -> Vec<String> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<String> = f(&inner).unwrap_or_default().into_iter().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CommunicationTokenSpec, UserRef};

    fn token(ns: &str, name: &str, user: &str, secret: Option<&str>) -> CommunicationToken {
        let mut t = CommunicationToken::new(
            name,
            CommunicationTokenSpec {
                user_ref: UserRef { name: user.into() },
                secret_name: secret.map(str::to_string),
                ..serde_json::from_value(serde_json::json!({"userRef": {"name": user}})).unwrap()
            },
        );
        t.metadata.namespace = Some(ns.into());
        t
    }

    #[test]
    fn tokens_are_found_by_user_and_by_secret_name_and_follow_changes() {
        let ix = TokenIndex::default();
        ix.apply(&watcher::Event::InitApply(token("a", "t1", "alice", None)));
        ix.apply(&watcher::Event::Apply(token(
            "a",
            "t2",
            "alice",
            Some("t1"),
        )));
        ix.apply(&watcher::Event::Apply(token("b", "t1", "alice", None)));
        assert_eq!(ix.of_user("a", "alice"), ["t1", "t2"]);
        assert_eq!(ix.of_user("b", "alice"), ["t1"]);
        assert_eq!(ix.claiming("a", "t1"), ["t1", "t2"]);
        assert!(ix.of_user("a", "bob").is_empty());
        // A changed Secret name moves the token; a deletion removes it.
        ix.apply(&watcher::Event::Apply(token(
            "a",
            "t2",
            "alice",
            Some("own"),
        )));
        assert_eq!(ix.claiming("a", "t1"), ["t1"]);
        assert_eq!(ix.claiming("a", "own"), ["t2"]);
        ix.apply(&watcher::Event::Delete(token("a", "t1", "alice", None)));
        assert_eq!(ix.of_user("a", "alice"), ["t2"]);
        assert!(ix.claiming("a", "t1").is_empty());
        let inner = ix.inner.read().unwrap();
        assert_eq!(inner.keys.len(), 2);
        assert!(!inner.by_secret.contains_key(&("a".into(), "t1".into())));
    }

    #[test]
    fn a_relist_drops_the_tokens_deleted_while_the_watch_was_down() {
        let ix = TokenIndex::default();
        ix.apply(&watcher::Event::Apply(token("a", "kept", "alice", None)));
        ix.apply(&watcher::Event::Apply(token("a", "gone", "alice", None)));
        ix.apply(&watcher::Event::Apply(token("b", "other", "alice", None)));
        let mut relist = crate::relist::Relist::default();
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(token("a", "kept", "alice", None)),
        ] {
            assert!(relist.on_event(&e).is_none());
        }
        let listed = relist
            .on_event::<CommunicationToken>(&watcher::Event::InitDone)
            .unwrap();
        // The watch of namespace a: b's token is another watch's.
        ix.retain_listed(Some("a"), &listed);
        assert_eq!(ix.of_user("a", "alice"), ["kept"]);
        assert!(ix.claiming("a", "gone").is_empty());
        assert_eq!(ix.len(), 2);
        ix.retain_listed(None, &listed);
        assert_eq!(ix.len(), 1);
    }
}
