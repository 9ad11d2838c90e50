//! One reconcile of an object at a time across a controller's two ways in: kube-runtime's own
//! queue (which never runs an object twice at once by itself) and the express path for objects
//! just applied (see [`super::express`]); and no run on the very copy whose finalizer the
//! previous run added (both ways in wake a new object, so the second would often find the
//! cache not yet showing the first one's patch and send it again, refused with a 422).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::Notify;

/// An object of the controller's kind: namespace and name (each controller has its own).
pub type Key = (String, String);

/// The objects being reconciled, each with the wake-up of those waiting for it. An entry lives
/// only while its [`Claim`] does.
#[derive(Default)]
pub struct Claims {
    held: Mutex<HashMap<Key, Arc<Notify>>>,
    /// Objects whose last run added the finalizer, with the resourceVersion that run read. The
    /// patch's own watch event wakes the object again; an entry goes at the next run.
    finalized: Mutex<HashMap<Key, String>>,
}

/// Entries of `finalized` at most: beyond, it starts again empty (an entry only spares a
/// refused patch, so losing one is harmless).
const FINALIZED_MAX: usize = 4096;

fn lacks(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.deletion_timestamp.is_none()
        && !meta
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// The right to reconcile one object, given back when dropped.
pub struct Claim {
    claims: Arc<Claims>,
    key: Key,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let notify = self
            .claims
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }
}

impl Claims {
    /// Waits until no other reconcile of `key` runs, and claims it.
    pub async fn claim(self: &Arc<Self>, key: Key) -> Claim {
        loop {
            let notify = {
                let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
                match held.get(&key) {
                    Some(n) => n.clone(),
                    None => {
                        held.insert(key.clone(), Arc::new(Notify::new()));
                        return Claim {
                            claims: self.clone(),
                            key,
                        };
                    }
                }
            };
            let woken = notify.notified();
            tokio::pin!(woken);
            // Registered before the holder is looked at again: a release in between wakes it.
            woken.as_mut().enable();
            if !self.is_held(&key, &notify) {
                continue;
            }
            woken.await;
        }
    }

    /// Whether a run on the copy `meta` would only repeat the previous run's finalizer patch:
    /// the same resourceVersion, still without `finalizer`.
    pub fn finalizer_pending(&self, key: &Key, meta: &ObjectMeta, finalizer: &str) -> bool {
        lacks(meta, finalizer)
            && meta.resource_version.as_ref().is_some_and(|rv| {
                self.finalized
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(key)
                    == Some(rv)
            })
    }

    /// Records a run on the copy `meta`: one that succeeded on a copy without `finalizer` added
    /// it (kube's finalizer helper does only that on such a copy).
    pub fn ran(&self, key: Key, meta: &ObjectMeta, finalizer: &str, ok: bool) {
        let mut finalized = self
            .finalized
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (&meta.resource_version, ok && lacks(meta, finalizer)) {
            (Some(rv), true) => {
                if finalized.len() >= FINALIZED_MAX {
                    finalized.clear();
                }
                finalized.insert(key, rv.clone());
            }
            _ => {
                finalized.remove(&key);
            }
        }
    }

    /// `key` is still held under the same claim as `notify`.
    fn is_held(&self, key: &Key, notify: &Arc<Notify>) -> bool {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .is_some_and(|n| Arc::ptr_eq(n, notify))
    }

    /// Objects claimed now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(name: &str) -> Key {
        ("ns".to_string(), name.to_string())
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_reconcile_of_an_object_waits_for_the_first_and_others_do_not() {
        let claims = Arc::new(Claims::default());
        let first = claims.claim(key("a")).await;
        let _other = tokio::time::timeout(Duration::from_secs(1), claims.claim(key("b")))
            .await
            .expect("another object waited");
        let second = tokio::spawn({
            let claims = claims.clone();
            async move { claims.claim(key("a")).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !second.is_finished(),
            "two reconciles of one object at once"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), second)
            .await
            .expect("the waiter was not woken")
            .unwrap();
        assert_eq!(claims.len(), 2);
        drop(second);
        drop(_other);
        assert_eq!(claims.len(), 0, "a claim outlived its reconcile");
    }

    #[test]
    fn a_copy_whose_finalizer_the_last_run_added_is_not_run_again() {
        const F: &str = "example.com/f";
        let claims = Claims::default();
        let meta = |rv: &str, finalizers: &[&str]| ObjectMeta {
            resource_version: Some(rv.into()),
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            ..Default::default()
        };
        let new = meta("1", &[]);
        assert!(!claims.finalizer_pending(&key("a"), &new, F));
        // A failed run added nothing.
        claims.ran(key("a"), &new, F, false);
        assert!(!claims.finalizer_pending(&key("a"), &new, F));
        claims.ran(key("a"), &new, F, true);
        assert!(
            claims.finalizer_pending(&key("a"), &new, F),
            "the same copy again"
        );
        assert!(
            !claims.finalizer_pending(&key("b"), &new, F),
            "another object"
        );
        assert!(
            !claims.finalizer_pending(&key("a"), &meta("2", &[]), F),
            "a newer copy"
        );
        let finalized = meta("2", &[F]);
        assert!(!claims.finalizer_pending(&key("a"), &finalized, F));
        claims.ran(key("a"), &finalized, F, true);
        assert!(
            claims.finalized.lock().unwrap().is_empty(),
            "the entry outlived its run"
        );
    }
}
