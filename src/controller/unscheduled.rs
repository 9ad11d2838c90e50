//! The per-object guard on unscheduled work. A token gets at most `limit` unscheduled
//! issuances that it causes itself (drift of its token value, the rotate annotation, a new
//! identity), and separately `limit` repairs, in any window; a user gets at most its own limit
//! of revocations. One more is deferred until the window allows it. Scheduled renewals, first
//! issuances and re-issues forced from outside the token (a revocation, a key change) are not
//! counted against the token: deferring them would leave a refused token in the Secret, so
//! their cause, the user's revocations, is what is bounded. This bounds the cost of any loop,
//! including one caused by a future bug, to a few ACS calls per window.
//!
//! Kept in memory: a restart forgets it, which costs at most one more window's worth.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the guard counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unscheduled {
    /// A new token issued for any reason but the first issuance or a renewal.
    Issue,
    /// The Secret rewritten with its same token.
    Repair,
    /// A user's revocation of all its tokens.
    Revocation,
}

impl Unscheduled {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Unscheduled::Issue => "issue",
            Unscheduled::Repair => "repair",
            Unscheduled::Revocation => "revocation",
        }
    }
}

/// Recent unscheduled actions per object UID.
#[derive(Default)]
pub struct UnscheduledLimit(Mutex<HashMap<(String, Unscheduled), VecDeque<Instant>>>);

impl UnscheduledLimit {
    /// `Ok` when one more `what` fits in `window` ending `now`; otherwise how long until it
    /// does.
    pub fn check(
        &self,
        uid: &str,
        what: Unscheduled,
        limit: u32,
        window: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        let Ok(mut m) = self.0.lock() else {
            return Ok(());
        };
        let Some(q) = m.get_mut(&(uid.to_string(), what)) else {
            return Ok(());
        };
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            q.pop_front();
        }
        if (q.len() as u32) < limit {
            return Ok(());
        }
        // The oldest of the last `limit` leaves the window first.
        let oldest = q[q.len() - limit as usize];
        Err((oldest + window).saturating_duration_since(now))
    }

    /// Records one `what` done at `now`.
    pub fn record(&self, uid: &str, what: Unscheduled, now: Instant) {
        if let Ok(mut m) = self.0.lock() {
            let q = m.entry((uid.to_string(), what)).or_default();
            q.push_back(now);
            // Only the last few matter; keep the queue short whatever the limit was.
            while q.len() > 64 {
                q.pop_front();
            }
        }
    }

    /// Entries (object and kind of work).
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the entries whose every record is older than `window` ending `now` (the longest
    /// window any check uses): they can no longer defer anything.
    pub fn prune(&self, window: Duration, now: Instant) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
            crate::alloc::shrink(&mut m);
        }
    }

    /// Forgets a deleted object.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|(u, _), _| u != uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fourth_unscheduled_issuance_in_a_window_waits_for_the_first_to_leave_it() {
        let g = UnscheduledLimit::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        for i in 0..3 {
            let t = t0 + Duration::from_secs(i * 10);
            assert_eq!(g.check("u", Unscheduled::Issue, 3, w, t), Ok(()));
            g.record("u", Unscheduled::Issue, t);
        }
        let t = t0 + Duration::from_secs(25);
        assert_eq!(
            g.check("u", Unscheduled::Issue, 3, w, t),
            Err(Duration::from_secs(35))
        );
        // Repairs and other objects have their own counts.
        assert_eq!(g.check("u", Unscheduled::Repair, 3, w, t), Ok(()));
        assert_eq!(g.check("v", Unscheduled::Issue, 3, w, t), Ok(()));
        // Once the first leaves the window, one more fits.
        assert_eq!(
            g.check("u", Unscheduled::Issue, 3, w, t0 + Duration::from_secs(60)),
            Ok(())
        );
        g.forget("u");
        assert_eq!(g.check("u", Unscheduled::Issue, 3, w, t), Ok(()));
    }

    #[test]
    fn entries_past_every_window_are_pruned() {
        let g = UnscheduledLimit::default();
        let t0 = Instant::now();
        g.record("old", Unscheduled::Issue, t0);
        g.record("new", Unscheduled::Revocation, t0 + Duration::from_secs(50));
        g.prune(Duration::from_secs(60), t0 + Duration::from_secs(70));
        assert_eq!(g.len(), 1);
        assert!(g
            .check(
                "new",
                Unscheduled::Revocation,
                1,
                Duration::from_secs(60),
                t0 + Duration::from_secs(70)
            )
            .is_err());
    }
}
