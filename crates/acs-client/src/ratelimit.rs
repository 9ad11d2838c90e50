//! A client-side token bucket shared by every ACS call to one resource, so that all
//! reconcilers together stay inside that resource's request budget (ACS throttles per
//! resource, not per caller; the operator keeps one bucket per endpoint).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Why a rate limit was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateLimitError {
    #[error("requests per second must be a positive finite number")]
    InvalidRate,
    #[error("burst must be at least 1")]
    InvalidBurst,
}

/// A token bucket: `burst` requests at once, refilled at `requests_per_second`. Clones share
/// the bucket.
///
/// Waiters reserve their slot when they arrive (the bucket may go negative), so they are served
/// in arrival order and none starves. A caller dropped while waiting keeps its reservation,
/// which costs at most one slot of throughput.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

struct State {
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    /// A full bucket of `burst` tokens refilled at `requests_per_second`.
    pub fn new(requests_per_second: f64, burst: u32) -> Result<Self, RateLimitError> {
        if !(requests_per_second.is_finite() && requests_per_second > 0.0) {
            return Err(RateLimitError::InvalidRate);
        }
        if burst == 0 {
            return Err(RateLimitError::InvalidBurst);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                rate: requests_per_second,
                burst: f64::from(burst),
                state: Mutex::new(State {
                    tokens: f64::from(burst),
                    refilled_at: Instant::now(),
                }),
            }),
        })
    }

    /// Waits until a request may be sent.
    pub async fn acquire(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes one token at `now` and returns how long the caller must wait before using it.
    fn reserve(&self, now: Instant) -> Duration {
        // The lock guards two numbers and is never held across an await; a poisoned lock
        // still holds consistent numbers, so keep using it.
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now.saturating_duration_since(state.refilled_at);
        state.tokens =
            (state.tokens + elapsed.as_secs_f64() * self.inner.rate).min(self.inner.burst);
        state.refilled_at = now.max(state.refilled_at);
        state.tokens -= 1.0;
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / self.inner.rate)
        }
    }

    /// Whether `other` draws on the same bucket (is a clone of this limiter).
    pub fn shares_bucket(&self, other: &RateLimiter) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub fn requests_per_second(&self) -> f64 {
        self.inner.rate
    }

    pub fn burst(&self) -> u32 {
        // `burst` was built from a u32.
        self.inner.burst as u32
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("requests_per_second", &self.inner.rate)
            .field("burst", &self.inner.burst)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn invalid_limits_are_rejected() {
        assert_eq!(
            RateLimiter::new(0.0, 1).unwrap_err(),
            RateLimitError::InvalidRate
        );
        assert_eq!(
            RateLimiter::new(-1.0, 1).unwrap_err(),
            RateLimitError::InvalidRate
        );
        assert_eq!(
            RateLimiter::new(f64::NAN, 1).unwrap_err(),
            RateLimitError::InvalidRate
        );
        assert_eq!(
            RateLimiter::new(f64::INFINITY, 1).unwrap_err(),
            RateLimitError::InvalidRate
        );
        assert_eq!(
            RateLimiter::new(1.0, 0).unwrap_err(),
            RateLimitError::InvalidBurst
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_at_once_and_the_rest_queue_at_the_rate() {
        let l = RateLimiter::new(10.0, 2).unwrap();
        let t0 = Instant::now();
        let waits: Vec<_> = (0..5).map(|_| ms(l.reserve(t0))).collect();
        assert_eq!(waits, [0, 0, 100, 200, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_up_to_the_burst_only() {
        let l = RateLimiter::new(10.0, 3).unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.reserve(t0), Duration::ZERO);
        }
        // An hour idle refills 3 tokens, not 36 000.
        let later = t0 + Duration::from_secs(3600);
        let waits: Vec<_> = (0..5).map(|_| ms(l.reserve(later))).collect();
        assert_eq!(waits, [0, 0, 0, 100, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_one_budget() {
        let a = RateLimiter::new(2.0, 1).unwrap();
        let b = a.clone();
        let t0 = Instant::now();
        a.acquire().await;
        b.acquire().await;
        a.acquire().await;
        assert_eq!(ms(Instant::now() - t0), 1000);
        assert_eq!(b.burst(), 1);
        assert!(a.shares_bucket(&b));
        assert!(!a.shares_bucket(&RateLimiter::new(2.0, 1).unwrap()));
        assert_eq!(b.requests_per_second(), 2.0);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_are_spread_at_the_rate() {
        let l = RateLimiter::new(5.0, 1).unwrap();
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    l.acquire().await;
                    Instant::now() - t0
                })
            })
            .collect();
        let mut done = Vec::new();
        for t in tasks {
            done.push(ms(t.await.unwrap()));
        }
        done.sort();
        assert_eq!(done, [0, 200, 400, 600]);
    }
}
