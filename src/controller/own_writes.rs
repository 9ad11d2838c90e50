//! What this process last wrote to each token Secret, checked against the resourceVersions
//! the token Secrets' metadata watch reports: while a Secret's resourceVersion is still the one
//! its write returned (and its token's spec and credentials are unchanged), the Secret holds
//! exactly what was written, so a reconcile that would only confirm it needs no GET. Anything
//! else (an edit, a deletion, another writer, a restart of the operator) reads it as before.
//! And once the watch has listed a scope, a token Secret it does not show (and this process did
//! not write) does not exist as ours with its label: a token never issued creates it without a
//! GET first. What was written is kept in [`Written`], the memory shared with the statuses.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::written::Written;
use crate::ns_map::{NsMap, Version};
use crate::secret::RecordedToken;

/// Kept per Secret: a few hundred bytes each.
#[derive(Default)]
pub struct OwnWrites {
    /// The resourceVersion the metadata watch last reported, by namespace and name.
    seen: Mutex<NsMap<Version>>,
    /// What this process wrote last (the record, for the token at its generation), kept
    /// until the Secret is deleted.
    wrote: Written<(Option<i64>, RecordedToken)>,
    /// The scopes (a namespace, or `None`: every namespace) the watch has listed at least once.
    listed: Mutex<HashSet<Option<String>>>,
    /// Bumped whenever a scope is listed, for reconciles waiting on the first list.
    listings: tokio::sync::watch::Sender<u64>,
    /// How long after the first wait reconciles stop waiting for a list that does not come.
    give_up_at: std::sync::OnceLock<tokio::time::Instant>,
}

/// How long a restarted process's reconciles wait, in all, for the Secrets' first list before
/// they read Secrets as if nothing were known.
const FIRST_LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl OwnWrites {
    fn seen(&self) -> MutexGuard<'_, NsMap<Version>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The watch reports a Secret at `resource_version` (`None`: deleted).
    pub fn observed(&self, ns: &str, name: &str, resource_version: Option<&str>) {
        let mut seen = self.seen();
        match resource_version {
            Some(rv) => {
                seen.insert(ns, name, Version::new(rv));
            }
            None => {
                seen.remove(ns, name);
                self.forget(ns, name);
            }
        }
    }

    /// This process wrote `record` into the Secret, which is now at `resource_version`, for
    /// the token at `generation`.
    pub fn wrote(
        &self,
        ns: &str,
        name: &str,
        resource_version: &str,
        generation: Option<i64>,
        record: RecordedToken,
    ) {
        self.wrote
            .wrote(ns, name, Some(resource_version), (generation, record));
    }

    /// What the Secret holds, and its resourceVersion, when the watch shows it unchanged since
    /// this process wrote it for the token at `generation`.
    pub fn unchanged(
        &self,
        ns: &str,
        name: &str,
        generation: Option<i64>,
    ) -> Option<(RecordedToken, String)> {
        let seen = self.seen().get(ns, name).cloned()?;
        let (written_for, record) = self.wrote.at(ns, name, &seen)?;
        (written_for == generation).then(|| (record, seen.to_string()))
    }

    /// Drops the Secrets of `scope` a complete list of the watch did not show.
    pub fn retain_listed(&self, scope: Option<&str>, listed: &crate::relist::Listed) {
        self.seen()
            .retain(|ns, name, _| !listed.stale(scope, ns, name));
        self.wrote.retain_listed(scope, listed);
    }

    /// The watch has listed `scope` (`None`: every namespace).
    pub fn mark_listed(&self, scope: Option<&str>) {
        self.listed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(scope.map(str::to_string));
        self.listings.send_modify(|n| *n += 1);
    }

    fn is_listed(&self, ns: &str) -> bool {
        let listed = self
            .listed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        listed.contains(&None) || listed.contains(&Some(ns.to_string()))
    }

    /// The resourceVersion the watch shows for Secret `ns`/`name`, once it has listed `ns`:
    /// a reconcile right after a start waits for that first list (at most `FIRST_LIST_WAIT`
    /// after the first such wait, for all of them together) rather than read the Secret.
    pub async fn seen_after_list(&self, ns: &str, name: &str) -> Option<String> {
        if !self.is_listed(ns) {
            let until = *self
                .give_up_at
                .get_or_init(|| tokio::time::Instant::now() + FIRST_LIST_WAIT);
            let mut rx = self.listings.subscribe();
            let listed = tokio::time::timeout_at(until, rx.wait_for(|_| self.is_listed(ns)));
            if !matches!(listed.await, Ok(Ok(_))) {
                return None;
            }
        }
        self.seen().get(ns, name).map(Version::to_string)
    }

    /// Whether token Secret `ns`/`name` is known not to exist as ours: its namespace has been
    /// listed, the watch shows no such Secret and this process has not written one (a write
    /// the watch has not delivered yet). A Secret of that name that is not ours (no label) is
    /// not in the watch: creating over it gets a 409, the conflict path.
    pub fn known_absent(&self, ns: &str, name: &str) -> bool {
        if !self.is_listed(ns) {
            return false;
        }
        !self.seen().contains(ns, name) && !self.wrote.contains(ns, name)
    }

    /// Gives back the room of maps that emptied.
    pub fn shrink(&self) {
        self.seen().shrink();
        self.wrote.shrink();
    }

    /// Secrets whose resourceVersion is known, and Secrets whose last write is remembered.
    pub fn len(&self) -> (usize, usize) {
        (self.seen().len(), self.wrote.len())
    }

    /// Forgets what was written (the Secret is gone or no longer ours to trust).
    pub fn forget(&self, ns: &str, name: &str) {
        self.wrote.forget(ns, name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acs::Scope;
    use jiff::Timestamp;

    fn record() -> RecordedToken {
        RecordedToken {
            expires_on: Timestamp::from_second(1_700_003_600).unwrap(),
            issued_at: Timestamp::from_second(1_700_000_000).unwrap(),
            user_id: "8:acs:r_u".into(),
            scopes: vec![Scope::Voip],
            expires_in_minutes: 60,
            revocation_epoch: 0,
            key_fingerprint: "f".into(),
            revision: 1,
        }
    }

    #[test]
    fn only_a_secret_the_watch_shows_at_the_written_version_is_trusted() {
        let w = OwnWrites::default();
        assert_eq!(w.unchanged("ns", "s", Some(1)), None);
        w.wrote("ns", "s", "5", Some(1), record());
        // The watch has not delivered our write yet.
        w.observed("ns", "s", Some("4"));
        assert_eq!(w.unchanged("ns", "s", Some(1)), None);
        w.observed("ns", "s", Some("5"));
        assert_eq!(
            w.unchanged("ns", "s", Some(1)),
            Some((record(), "5".into()))
        );
        // Another spec (a template change may mean drift): read it.
        assert_eq!(w.unchanged("ns", "s", Some(2)), None);
        // Edited by someone else.
        w.observed("ns", "s", Some("6"));
        assert_eq!(w.unchanged("ns", "s", Some(1)), None);
        // Deleted and recreated at the same version string: never trusted again.
        w.wrote("ns", "s", "7", Some(1), record());
        w.observed("ns", "s", None);
        w.observed("ns", "s", Some("7"));
        assert_eq!(w.unchanged("ns", "s", Some(1)), None);
    }

    #[test]
    fn a_relist_drops_the_secrets_deleted_while_the_watch_was_down() {
        use k8s_openapi::api::core::v1::Secret;
        use kube::api::PartialObjectMeta;
        use kube::runtime::watcher::Event;
        let w = OwnWrites::default();
        for name in ["kept", "gone"] {
            w.observed("ns", name, Some("5"));
            w.wrote("ns", name, "5", Some(1), record());
        }
        w.observed("other", "s", Some("5"));
        let mut meta = PartialObjectMeta::<Secret>::default();
        meta.metadata.namespace = Some("ns".into());
        meta.metadata.name = Some("kept".into());
        let mut relist = crate::relist::Relist::default();
        relist.on_event::<PartialObjectMeta<Secret>>(&Event::Init);
        relist.on_event(&Event::InitApply(meta));
        let listed = relist
            .on_event::<PartialObjectMeta<Secret>>(&Event::InitDone)
            .unwrap();
        w.retain_listed(Some("ns"), &listed);
        assert_eq!(w.len(), (2, 1));
        assert_eq!(
            w.unchanged("ns", "kept", Some(1)),
            Some((record(), "5".into()))
        );
        assert_eq!(w.unchanged("ns", "gone", Some(1)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_after_a_start_waits_for_the_first_list_and_not_forever() {
        let w = std::sync::Arc::new(OwnWrites::default());
        let waiting = tokio::spawn({
            let w = w.clone();
            async move { w.seen_after_list("a", "web").await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "answered before the list");
        w.observed("a", "web", Some("5"));
        w.mark_listed(Some("a"));
        assert_eq!(waiting.await.unwrap(), Some("5".into()));
        assert_eq!(w.seen_after_list("a", "other").await, None);
        // A namespace never listed: the wait ends at the common deadline, then none waits.
        let started = tokio::time::Instant::now();
        let gave_up = tokio::time::timeout(FIRST_LIST_WAIT * 2, w.seen_after_list("b", "web"));
        assert_eq!(gave_up.await, Ok(None), "waited past its deadline");
        assert!(started.elapsed() <= FIRST_LIST_WAIT);
        let again = tokio::time::Instant::now();
        assert_eq!(w.seen_after_list("b", "web").await, None);
        assert_eq!(again.elapsed(), std::time::Duration::ZERO);
    }

    #[test]
    fn a_secret_is_known_absent_only_in_a_listed_scope_not_seen_and_not_written() {
        let w = OwnWrites::default();
        // Before the watch listed the namespace: unknown, read it.
        assert!(!w.known_absent("a", "web"));
        w.mark_listed(Some("a"));
        assert!(w.known_absent("a", "web"));
        assert!(!w.known_absent("b", "web"), "namespace b is not listed");
        // Seen by the watch: exists.
        w.observed("a", "web", Some("5"));
        assert!(!w.known_absent("a", "web"));
        // Deleted: absent again.
        w.observed("a", "web", None);
        assert!(w.known_absent("a", "web"));
        // Written by this process, not delivered by the watch yet: exists.
        w.wrote("a", "web", "7", Some(1), record());
        assert!(!w.known_absent("a", "web"));
        // Every namespace listed.
        w.mark_listed(None);
        assert!(w.known_absent("b", "api"));
    }
}
