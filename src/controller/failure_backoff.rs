//! Per-object failure state: kube-runtime has no per-key backoff (kube-rs/kube#1916), so the
//! count lives in the Context, keyed by kind as well as namespace and name.
//!
//! The count alone is not enough: a failing object can be woken by many things besides its
//! requeue (a sibling's status, a credentials Secret, its user), and each wake-up would make
//! another ACS call. So a failure also records until when the object must wait and the inputs
//! it failed with; [`FailureBackoff::try_attempt`] tells a reconcile to skip its ACS call while that
//! back-off runs, unless the inputs changed (a new spec, a new key, a new identity), which
//! deserves one prompt attempt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    retry_at: Option<Instant>,
    inputs: u64,
}

/// Consecutive failures per object key (`Kind/namespace/name`).
#[derive(Default)]
pub struct FailureBackoff(Mutex<HashMap<String, Entry>>);

impl FailureBackoff {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> Option<T> {
        self.0.lock().ok().map(|mut m| f(&mut m))
    }

    /// Before an ACS call: `Some(wait)` while the object failed with these same `inputs` and
    /// its back-off has not run out (no call now); otherwise `None`, and the attempt is tied
    /// to `inputs`. Other inputs than the last failure's get one prompt attempt, but keep the
    /// count: the object is still failing, so that attempt is a single request (no client
    /// retries) and a next failure backs off from where it was. Otherwise every edit or new
    /// rotate-annotation value of a failing object would buy a fresh, retried attempt.
    pub fn try_attempt(&self, key: &str, inputs: u64, now: Instant) -> Option<Duration> {
        self.with(|m| {
            let e = m.entry(key.to_string()).or_insert(Entry {
                count: 0,
                retry_at: None,
                inputs,
            });
            if e.inputs != inputs {
                e.retry_at = None;
                e.inputs = inputs;
                return None;
            }
            e.retry_at
                .and_then(|at| at.checked_duration_since(now))
                .filter(|d| !d.is_zero())
        })
        .flatten()
    }

    /// Objects with failure state.
    pub fn len(&self) -> usize {
        self.with(|m| m.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the entries whose key `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.with(|m| {
            m.retain(|k, _| keep(k));
            crate::alloc::shrink(m);
        });
    }

    /// Records a failure and returns the new count.
    pub fn record(&self, key: &str) -> u32 {
        self.with(|m| {
            let e = m.entry(key.to_string()).or_insert(Entry {
                count: 0,
                retry_at: None,
                inputs: 0,
            });
            e.count = e.count.saturating_add(1);
            e.count
        })
        .unwrap_or(1)
    }

    /// Sets when the object may try again (the back-off chosen for its last failure).
    pub fn retry_at(&self, key: &str, at: Instant) {
        self.with(|m| {
            if let Some(e) = m.get_mut(key) {
                e.retry_at = Some(at);
            }
        });
    }

    /// The current count.
    pub fn get(&self, key: &str) -> u32 {
        self.with(|m| m.get(key).map_or(0, |e| e.count))
            .unwrap_or(0)
    }

    /// Forgets the object's failures (after a success or its deletion).
    pub fn reset(&self, key: &str) {
        self.with(|m| m.remove(key));
    }
}

/// A stable hash of the values a failed attempt depended on.
pub fn inputs_hash(parts: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate_and_reset() {
        let f = FailureBackoff::default();
        assert_eq!(f.record("Kind/a/b"), 1);
        assert_eq!(f.record("Kind/a/b"), 2);
        assert_eq!(f.get("Kind/a/c"), 0);
        f.reset("Kind/a/b");
        assert_eq!(f.get("Kind/a/b"), 0);
    }

    #[test]
    fn a_failed_object_is_held_until_its_backoff_runs_out_unless_its_inputs_change() {
        let f = FailureBackoff::default();
        let t0 = Instant::now();
        assert_eq!(f.try_attempt("k", 7, t0), None, "no failure yet");
        f.record("k");
        f.retry_at("k", t0 + Duration::from_secs(10));
        assert_eq!(
            f.try_attempt("k", 7, t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(f.try_attempt("k", 7, t0 + Duration::from_secs(10)), None);
        // Same inputs again: still held at an earlier instant.
        assert!(f.try_attempt("k", 7, t0 + Duration::from_secs(1)).is_some());
        // New inputs: one prompt attempt; still failing, so the count stays.
        assert_eq!(f.try_attempt("k", 8, t0 + Duration::from_secs(1)), None);
        assert_eq!(f.get("k"), 1);
    }

    #[test]
    fn kinds_do_not_share_counts() {
        let f = FailureBackoff::default();
        f.record("CommunicationUser/ns/x");
        assert_eq!(f.get("CommunicationToken/ns/x"), 0);
    }
}
