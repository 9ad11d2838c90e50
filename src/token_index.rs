//! CommunicationTokens by user and by Secret name, per namespace, fed by the tokens' watch
//! beside the reflector store. Finding a user's tokens or the other claimants of a Secret name
//! by scanning the store cost every reconcile a pass over every token of the namespace: at
//! 20,000 tokens that scan was most of the operator's CPU (`memcmp` at the top of a perf
//! profile) and made a cold start quadratic. Lookups return names; callers read the objects
//! from the store and re-check them, so an entry a moment ahead of (or behind) the store is
//! harmless.

use std::sync::{PoisonError, RwLock};

use kube::runtime::watcher;
use kube::ResourceExt;

use crate::api::CommunicationToken;
use crate::ns_map::NsMap;

/// Token names, sorted; most Secret names have one, so a first name takes no spare room.
type Names = Vec<Box<str>>;

#[derive(Default)]
struct Inner {
    by_user: NsMap<Names>,
    by_secret: NsMap<Names>,
    /// Token -> (user, Secret name when it is not the token's own name) as last indexed.
    keys: NsMap<(Box<str>, Option<Box<str>>)>,
}

fn add(map: &mut NsMap<Names>, ns: &str, key: &str, name: &str) {
    let names = map.get_or_insert_with(ns, key, Vec::new);
    if let Err(at) = names.binary_search_by(|n| n.as_ref().cmp(name)) {
        if names.is_empty() {
            names.reserve_exact(1);
        }
        names.insert(at, name.into());
    }
}

fn drop_name(map: &mut NsMap<Names>, ns: &str, key: &str, name: &str) {
    let Some(names) = map.get_mut(ns, key) else {
        return;
    };
    if let Ok(at) = names.binary_search_by(|n| n.as_ref().cmp(name)) {
        names.remove(at);
    }
    if names.is_empty() {
        map.remove(ns, key);
    }
}

impl Inner {
    fn unlink(&mut self, ns: &str, name: &str) {
        let Some((user, secret)) = self.keys.remove(ns, name) else {
            return;
        };
        drop_name(&mut self.by_user, ns, &user, name);
        drop_name(
            &mut self.by_secret,
            ns,
            secret.as_deref().unwrap_or(name),
            name,
        );
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
        let user = t.spec.user_ref.name.as_str();
        let secret = t.secret_name();
        let own = (secret != name).then_some(secret.as_str());
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner
            .keys
            .get(&ns, &name)
            .is_some_and(|(u, s)| u.as_ref() == user && s.as_deref() == own)
        {
            return;
        }
        inner.unlink(&ns, &name);
        add(&mut inner.by_user, &ns, user, &name);
        add(&mut inner.by_secret, &ns, &secret, &name);
        inner
            .keys
            .insert(&ns, &name, (user.into(), own.map(Into::into)));
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
        self.lookup(|i| i.by_user.get(ns, user))
    }

    /// Names of the tokens in `ns` whose Secret is named `secret`.
    pub fn claiming(&self, ns: &str, secret: &str) -> Vec<String> {
        self.lookup(|i| i.by_secret.get(ns, secret))
    }

    /// Drops the tokens of `scope` that a complete list of its watch did not show (deleted
    /// while the watch was down: no deletion event ever comes for them).
    pub fn retain_listed(&self, scope: Option<&str>, listed: &crate::relist::Listed) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let stale: Vec<(String, String)> = inner
            .keys
            .iter()
            .filter(|(ns, name, _)| listed.stale(scope, ns, name))
            .map(|(ns, name, _)| (ns.to_string(), name.to_string()))
            .collect();
        for (ns, name) in stale {
            inner.unlink(&ns, &name);
        }
    }

    /// Gives back the room of maps that emptied.
    pub fn shrink(&self) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.by_user.shrink();
        inner.by_secret.shrink();
        inner.keys.shrink();
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

    fn lookup(&self, f: impl Fn(&Inner) -> Option<&Names>) -> Vec<String> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        f(&inner)
            .map(|names| names.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default()
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
        assert!(!inner.by_secret.contains("a", "t1"));
        assert!(inner.by_user.get("b", "alice").is_some());
        drop(inner);
        // The last token of a user and of a Secret name takes its entries with it.
        ix.apply(&watcher::Event::Delete(token(
            "a",
            "t2",
            "alice",
            Some("own"),
        )));
        ix.apply(&watcher::Event::Delete(token("b", "t1", "alice", None)));
        let inner = ix.inner.read().unwrap();
        assert!(inner.keys.is_empty() && inner.by_user.is_empty() && inner.by_secret.is_empty());
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
