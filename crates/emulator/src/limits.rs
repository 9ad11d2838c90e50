//! Per-resource rate limits (§10 of the reference) as sliding windows: a request is admitted
//! when fewer than `max` requests of its class were admitted in the last `window`; otherwise the
//! caller learns how long until the oldest one leaves the window (the `Retry-After`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The operations that share one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LimitClass {
    /// Create identity (GA, preview and legacy; with or without a token).
    Create,
    /// Delete identity.
    Delete,
    /// Issue token.
    Issue,
    /// Revoke tokens.
    Revoke,
    /// Teams user token exchange.
    Exchange,
}

impl LimitClass {
    pub const ALL: [LimitClass; 5] = [
        LimitClass::Create,
        LimitClass::Delete,
        LimitClass::Issue,
        LimitClass::Revoke,
        LimitClass::Exchange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitClass::Create => "create",
            LimitClass::Delete => "delete",
            LimitClass::Issue => "issue",
            LimitClass::Revoke => "revoke",
            LimitClass::Exchange => "exchange",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// At most `max` requests per `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limit {
    pub max: u32,
    pub window_seconds: f64,
}

impl Limit {
    pub const fn new(max: u32, window_seconds: f64) -> Self {
        Self {
            max,
            window_seconds,
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs_f64(self.window_seconds)
    }
}

/// One optional limit per class (`None`: unlimited).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    #[serde(default)]
    pub create: Option<Limit>,
    #[serde(default)]
    pub delete: Option<Limit>,
    #[serde(default)]
    pub issue: Option<Limit>,
    #[serde(default)]
    pub revoke: Option<Limit>,
    #[serde(default)]
    pub exchange: Option<Limit>,
}

impl RateLimits {
    /// The current documented per-resource limits.
    pub fn service_defaults() -> Self {
        Self {
            create: Some(Limit::new(1000, 30.0)),
            delete: Some(Limit::new(500, 30.0)),
            issue: Some(Limit::new(1000, 30.0)),
            revoke: Some(Limit::new(500, 30.0)),
            exchange: Some(Limit::new(500, 30.0)),
        }
    }

    /// No limits at all.
    pub fn off() -> Self {
        Self::default()
    }

    /// Every `max` multiplied by `factor` (at least 1).
    pub fn scaled(mut self, factor: f64) -> Self {
        for class in LimitClass::ALL {
            if let Some(limit) = self.get(class) {
                let max = (f64::from(limit.max) * factor)
                    .round()
                    .clamp(1.0, f64::from(u32::MAX));
                // Truncation is intended: `max` was clamped into u32's range above.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                self.set(class, Some(Limit::new(max as u32, limit.window_seconds)));
            }
        }
        self
    }

    pub fn get(&self, class: LimitClass) -> Option<Limit> {
        match class {
            LimitClass::Create => self.create,
            LimitClass::Delete => self.delete,
            LimitClass::Issue => self.issue,
            LimitClass::Revoke => self.revoke,
            LimitClass::Exchange => self.exchange,
        }
    }

    pub fn set(&mut self, class: LimitClass, limit: Option<Limit>) {
        let slot = match class {
            LimitClass::Create => &mut self.create,
            LimitClass::Delete => &mut self.delete,
            LimitClass::Issue => &mut self.issue,
            LimitClass::Revoke => &mut self.revoke,
            LimitClass::Exchange => &mut self.exchange,
        };
        *slot = limit;
    }

    /// Rejects a zero `max` or a window that is not a positive number of seconds.
    pub fn validate(&self) -> Result<(), String> {
        for class in LimitClass::ALL {
            if let Some(l) = self.get(class) {
                if l.max == 0 {
                    return Err(format!(
                        "rate limit {} must allow at least one request",
                        class.as_str()
                    ));
                }
                if !(l.window_seconds.is_finite()
                    && l.window_seconds > 0.0
                    && l.window_seconds < 1e9)
                {
                    return Err(format!(
                        "rate limit {} needs a positive window in seconds",
                        class.as_str()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Parses `CLASS=MAX/SECONDS`, e.g. `issue=5/30`.
pub fn parse_limit_override(spec: &str) -> Result<(LimitClass, Limit), String> {
    let bad = || format!("rate limit {spec:?} is not CLASS=MAX/SECONDS (e.g. issue=5/30)");
    let (class, rest) = spec.split_once('=').ok_or_else(bad)?;
    let class = LimitClass::parse(class.trim()).ok_or_else(bad)?;
    let (max, secs) = rest.split_once('/').ok_or_else(bad)?;
    let max: u32 = max.trim().parse().map_err(|_| bad())?;
    let secs: f64 = secs.trim().parse().map_err(|_| bad())?;
    let limit = Limit::new(max, secs);
    let mut probe = RateLimits::off();
    probe.set(class, Some(limit));
    probe.validate()?;
    Ok((class, limit))
}

/// The sliding windows of one emulated resource.
#[derive(Debug)]
pub struct RateLimiter {
    inner: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    limits: RateLimits,
    admitted: HashMap<LimitClass, VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            inner: Mutex::new(LimiterState {
                limits,
                admitted: HashMap::new(),
            }),
        }
    }

    pub fn limits(&self) -> RateLimits {
        self.lock().limits.clone()
    }

    /// Replaces the limits and forgets the windows, so a test starts from a clean slate.
    pub fn set_limits(&self, limits: RateLimits) {
        let mut s = self.lock();
        s.limits = limits;
        s.admitted.clear();
    }

    /// Admits one request of `class` at `now`, or says how long until one would be admitted.
    pub fn admit(&self, class: LimitClass, now: Instant) -> Result<(), Duration> {
        let mut s = self.lock();
        let Some(limit) = s.limits.get(class) else {
            return Ok(());
        };
        let window = limit.window();
        let q = s.admitted.entry(class).or_default();
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            q.pop_front();
        }
        if q.len() < limit.max as usize {
            q.push_back(now);
            return Ok(());
        }
        let oldest = q.front().copied().unwrap_or(now);
        Err(window.saturating_sub(now.saturating_duration_since(oldest)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        // A panic while holding this lock leaves only counters behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1 (0 would invite a hot loop).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_window_rejects_until_the_oldest_request_leaves_it() {
        let mut limits = RateLimits::off();
        limits.set(LimitClass::Issue, Some(Limit::new(2, 10.0)));
        let limiter = RateLimiter::new(limits);
        let t0 = Instant::now();
        assert!(limiter.admit(LimitClass::Issue, t0).is_ok());
        assert!(limiter
            .admit(LimitClass::Issue, t0 + Duration::from_secs(1))
            .is_ok());
        let wait = limiter
            .admit(LimitClass::Issue, t0 + Duration::from_secs(2))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(8));
        assert_eq!(retry_after_seconds(wait), 8);
        assert!(limiter
            .admit(LimitClass::Issue, t0 + Duration::from_secs(10))
            .is_ok());
        assert!(limiter.admit(LimitClass::Create, t0).is_ok());
    }

    #[test]
    fn overrides_parse_and_bad_ones_are_rejected() {
        assert_eq!(
            parse_limit_override("issue=5/30").unwrap(),
            (LimitClass::Issue, Limit::new(5, 30.0))
        );
        for bad in [
            "issue=5",
            "nope=5/30",
            "issue=0/30",
            "issue=5/-1",
            "issue=x/30",
        ] {
            assert!(parse_limit_override(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scaling_keeps_at_least_one_request() {
        let l = RateLimits::service_defaults().scaled(0.0001);
        assert_eq!(l.create, Some(Limit::new(1, 30.0)));
        let l = RateLimits::service_defaults().scaled(2.0);
        assert_eq!(l.delete, Some(Limit::new(1000, 30.0)));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
