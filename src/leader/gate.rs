//! Whether this replica may write right now: the fence every apiserver write and every ACS
//! mutation passes. Leadership is valid until `renew_deadline` after the instant the last
//! successful acquire or renew request was *started*, measured on the monotonic clock. Others
//! start their takeover clock only after they read that write and wait a whole lease duration
//! (longer than the renew deadline), so a write that passes the gate happens before any other
//! candidate can lead. A process frozen (SIGSTOP, a VM pause) past the deadline finds, at its
//! very first check after resuming, that the clock moved on: the check refuses.
//!
//! What no check can fence: a request that passed the gate and was on its way to the wire when
//! the process froze is sent when it resumes. The README's leader-election section states
//! this residual window.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// A cheap, cloneable handle on this replica's right to write. Clones share the state.
#[derive(Clone, Debug)]
pub struct LeaderGate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    validity: Mutex<Validity>,
    /// Turns true at the first refused write and stays true: the process must stop.
    refused: watch::Sender<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validity {
    /// No leader election: this process is the only writer.
    Always,
    /// Leadership is valid until this instant; `None`: not (or no longer) the leader.
    Until(Option<Instant>),
}

impl LeaderGate {
    /// The gate of a process without leader election: every write passes.
    pub fn always_open() -> Self {
        Self::with(Validity::Always)
    }

    /// A gate that refuses until leadership is acquired (see [`LeaderGate::renewed`]).
    pub fn closed() -> Self {
        Self::with(Validity::Until(None))
    }

    fn with(validity: Validity) -> Self {
        let (refused, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                validity: Mutex::new(validity),
                refused,
            }),
        }
    }

    fn validity(&self) -> MutexGuard<'_, Validity> {
        // Only a Copy value is ever stored under this lock, so a poisoned lock is consistent.
        self.inner
            .validity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a write may be sent now. No side effect; see [`LeaderGate::admit`].
    pub fn is_valid(&self) -> bool {
        self.is_valid_at(Instant::now())
    }

    fn is_valid_at(&self, now: Instant) -> bool {
        match *self.validity() {
            Validity::Always => true,
            Validity::Until(until) => until.is_some_and(|until| now < until),
        }
    }

    /// Checks before a write to `target` (`kubernetes`, `acs`). A refusal is logged once and
    /// reported to [`LeaderGate::refusals`], so the process stops its controllers and exits.
    pub fn admit(&self, target: &'static str) -> bool {
        if self.is_valid() {
            return true;
        }
        let first = !self.inner.refused.send_replace(true);
        if first {
            tracing::error!(
                target_api = target,
                "refusing writes: leadership is not valid (no renewal within the renew deadline, or lost); stopping"
            );
        }
        false
    }

    /// Turns true once a write was refused.
    pub fn refusals(&self) -> watch::Receiver<bool> {
        self.inner.refused.subscribe()
    }

    /// Records a successful acquire or renew whose request was started at `started`:
    /// leadership is valid until `started + renew_deadline`.
    pub(crate) fn renewed(&self, started: Instant, renew_deadline: Duration) {
        let mut validity = self.validity();
        if let Validity::Until(until) = &mut *validity {
            let new = started + renew_deadline;
            // Attempts never overlap, but never move the end backwards anyway.
            *until = Some(until.map_or(new, |old| old.max(new)));
        }
    }

    /// Leadership is lost or given up: refuse from now on.
    pub(crate) fn revoke(&self) {
        let mut validity = self.validity();
        if let Validity::Until(until) = &mut *validity {
            *until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    #[test]
    fn without_leader_election_every_write_passes() {
        let gate = LeaderGate::always_open();
        gate.revoke();
        assert!(gate.is_valid());
        assert!(gate.admit("kubernetes"));
        assert!(!*gate.refusals().borrow());
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_is_valid_until_the_renew_deadline_after_the_request_started() {
        let gate = LeaderGate::closed();
        assert!(!gate.is_valid(), "closed before the first acquire");
        let started = Instant::now();
        tokio::time::advance(Duration::from_millis(300)).await;
        gate.renewed(started, DEADLINE);
        assert!(gate.is_valid_at(started + DEADLINE - Duration::from_millis(1)));
        assert!(!gate.is_valid_at(started + DEADLINE));
        // A later renewal extends it; an older one reported late never shortens it.
        gate.renewed(started + Duration::from_secs(2), DEADLINE);
        gate.renewed(started, DEADLINE);
        assert!(gate.is_valid_at(started + DEADLINE + Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_frozen_past_the_deadline_refuses_its_first_write_after_resuming() {
        let gate = LeaderGate::closed();
        gate.renewed(Instant::now(), DEADLINE);
        let mut refusals = gate.refusals();
        assert!(gate.admit("acs"));
        // SIGSTOP: nothing runs, but the monotonic clock moves on.
        tokio::time::advance(DEADLINE + Duration::from_secs(5)).await;
        assert!(!gate.admit("kubernetes"));
        assert!(*refusals.borrow_and_update());
        // It stays refused (and reported) for every later write.
        assert!(!gate.admit("acs"));
        assert!(*gate.refusals().borrow());
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoked_gate_refuses_at_once_and_clones_share_it() {
        let gate = LeaderGate::closed();
        gate.renewed(Instant::now(), DEADLINE);
        let clone = gate.clone();
        assert!(clone.is_valid());
        gate.revoke();
        assert!(!clone.is_valid());
        assert!(!clone.admit("kubernetes"));
        assert!(*gate.refusals().borrow());
    }
}
