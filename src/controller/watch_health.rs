//! Health of the operator's watches. A watch error is retried with backoff by the watcher
//! itself; while a watch fails its cache is stale, so the operator logs the error, counts it
//! (`watch_errors_total`) and reports not ready (`/readyz`, `watches_failing`) until the watch
//! delivers an event again or stays quiet for [`crate::server::QUIET_RECOVERY`] (a restarted watch delivers
//! nothing until something changes). A watch whose task ends (it never should; a panic would)
//! stays failing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kube::runtime::watcher;
use tracing::{debug, error, info, warn};

use crate::metrics::Metrics;
use crate::server::{Readiness, WatchState};

/// Shared by every watch of the process.
#[derive(Clone)]
pub struct WatchHealth {
    readiness: Readiness,
    metrics: Arc<Metrics>,
    /// Set at shutdown: watches ended by it are not failures.
    stopping: Arc<AtomicBool>,
}

impl WatchHealth {
    pub fn new(readiness: Readiness, metrics: Arc<Metrics>) -> Self {
        Self {
            readiness,
            metrics,
            stopping: Arc::default(),
        }
    }

    /// The tracker of one watch, named `resource` in logs and metrics.
    pub fn track(&self, resource: &'static str) -> WatchTracker {
        WatchTracker {
            state: self.readiness.watch(),
            metrics: self.metrics.clone(),
            stopping: self.stopping.clone(),
            resource,
        }
    }

    /// The tracker of a watch that only makes changes felt sooner: logged and counted like any,
    /// but never part of readiness.
    pub fn track_advisory(&self, resource: &'static str) -> WatchTracker {
        WatchTracker {
            state: Arc::default(),
            metrics: self.metrics.clone(),
            stopping: self.stopping.clone(),
            resource,
        }
    }

    /// The process is stopping its watches on purpose.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

/// Follows one watch: owned by the task that drives it, so its end is seen when dropped.
pub struct WatchTracker {
    state: Arc<WatchState>,
    metrics: Arc<Metrics>,
    stopping: Arc<AtomicBool>,
    resource: &'static str,
}

impl WatchTracker {
    /// Feeds one item of the watch stream.
    pub fn observe<T>(&mut self, item: &Result<T, watcher::Error>) {
        match item {
            // The watch's resourceVersion expired (410 Gone): routine, the watcher lists again
            // at once. Not a failure.
            Err(watcher::Error::WatchError(s)) if s.code == 410 => {
                debug!(resource = self.resource, "watch expired; listing again");
            }
            Err(e) => {
                warn!(resource = self.resource, error = %e, "watch failed; retrying with backoff");
                self.metrics.runtime.watch_error(self.resource);
                self.state.failed(Instant::now());
            }
            Ok(_) => {
                if self.state.delivered() {
                    info!(resource = self.resource, "watch recovered");
                }
            }
        }
    }
}

impl Drop for WatchTracker {
    fn drop(&mut self) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        error!(
            resource = self.resource,
            "watch ended; its cache no longer follows the cluster"
        );
        self.state.ended();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::QUIET_RECOVERY;

    #[test]
    fn a_failing_or_ended_watch_makes_the_operator_not_ready_and_is_counted() {
        let readiness = Readiness::default();
        readiness.set_ready(true);
        let metrics = Arc::new(Metrics::new());
        let health = WatchHealth::new(readiness.clone(), metrics.clone());
        let mut a = health.track("CommunicationToken");
        let mut b = health.track("Secret/tokens");
        let ok: Result<(), watcher::Error> = Ok(());
        let err = || -> Result<(), watcher::Error> { Err(watcher::Error::NoResourceVersion) };
        let gone = || -> Result<(), watcher::Error> {
            Err(watcher::Error::WatchError(Box::new(kube::core::Status {
                code: 410,
                ..Default::default()
            })))
        };
        a.observe(&ok);
        // An expired watch is not a failure.
        a.observe(&gone());
        assert!(readiness.is_ready());
        a.observe(&err());
        a.observe(&err());
        b.observe(&err());
        assert!(!readiness.is_ready());
        assert_eq!(readiness.failing_watches(Instant::now()), 2);
        assert!(metrics.encode().contains(
            "acs_identity_operator_watch_errors_total{resource=\"CommunicationToken\"} 2"
        ));
        // Recovering takes every failing watch's next event, or a quiet period without errors
        // (a restarted watch delivers nothing until something changes).
        a.observe(&ok);
        assert!(!readiness.is_ready());
        assert_eq!(
            readiness.failing_watches(Instant::now() + QUIET_RECOVERY),
            0
        );
        b.observe(&ok);
        assert!(readiness.is_ready());
        // A watch whose task ends stays failing, however long after.
        drop(a);
        assert!(!readiness.is_ready());
        assert_eq!(
            readiness.failing_watches(Instant::now() + QUIET_RECOVERY),
            1
        );
        // Ended by shutdown: not a failure.
        health.stopping();
        drop(b);
        assert_eq!(readiness.failing_watches(Instant::now()), 1);
    }
}
