//! Per-object failure counts for `error_policy`: kube-runtime has no per-key backoff, so the
//! count lives in the Context and is reset by the next success.

use std::collections::HashMap;
use std::sync::Mutex;

/// Consecutive failures per object key (`namespace/name`).
#[derive(Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Records a failure and returns the new count.
    pub fn record(&self, key: &str) -> u32 {
        let Ok(mut m) = self.0.lock() else {
            return 1;
        };
        let n = m.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// The current count.
    pub fn get(&self, key: &str) -> u32 {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(key).copied())
            .unwrap_or(0)
    }

    /// Forgets the object's failures (after a success or its deletion).
    pub fn reset(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate_and_reset() {
        let f = Failures::default();
        assert_eq!(f.record("a/b"), 1);
        assert_eq!(f.record("a/b"), 2);
        assert_eq!(f.get("a/c"), 0);
        f.reset("a/b");
        assert_eq!(f.get("a/b"), 0);
    }
}
