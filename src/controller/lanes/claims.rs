//! One reconcile of an object at a time across a controller's two ways in: kube-runtime's own
//! queue (which never runs an object twice at once by itself) and the express path for objects
//! just applied (see [`super::express`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// An object of the controller's kind: namespace and name (each controller has its own).
pub type Key = (String, String);

/// The objects being reconciled, each with the wake-up of those waiting for it. An entry lives
/// only while its [`Claim`] does.
#[derive(Default)]
pub struct Claims {
    held: Mutex<HashMap<Key, Arc<Notify>>>,
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
}
