//! Pure rotation maths: when a token is renewed, how long to wait until then, and how long to
//! back off after a failure. Times come in as arguments, so tests use a fixed clock.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// When to renew, as declared in a CommunicationToken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RenewalPolicy {
    /// Renew this long before expiry.
    Before(Duration),
    /// Renew when this percentage of the lifetime remains.
    RemainingPercentage(u8),
    /// Renew when two thirds of the lifetime have passed.
    Default,
}

/// Fraction of the lifetime over which renewals are spread by the per-object jitter. Tokens
/// created together would otherwise all renew in the same instant.
const JITTER_FRACTION: f64 = 0.10;

/// `ts` truncated to whole seconds, as the apiserver serializes `metav1.Time` (creation
/// timestamps, status times): a value compared with or written as one must be cut the same way.
pub fn whole_seconds(ts: Timestamp) -> Timestamp {
    Timestamp::from_second(ts.as_second()).unwrap_or(ts)
}

/// The instant to renew a token issued at `issued` that expires at `expires`.
///
/// The policy applies to the real lifetime (what the service granted, which may be shorter
/// than requested). A renewal instant earlier than a tenth of the lifetime after issuance
/// (renewBefore longer than the granted lifetime) falls back to the default, so a short-lived
/// token is not renewed in a tight loop. Then a deterministic jitter, derived from `jitter_key`
/// (the object's UID), moves the instant earlier by up to 10% of the lifetime: never later, so
/// the policy is a guarantee.
pub fn renewal_time(
    issued: Timestamp,
    expires: Timestamp,
    policy: RenewalPolicy,
    jitter_key: &str,
) -> Timestamp {
    let lifetime = expires.duration_since(issued);
    if lifetime <= SignedDuration::ZERO {
        return issued;
    }
    let lifetime_s = lifetime.as_secs_f64();
    let default_at = lifetime_s * 2.0 / 3.0;
    let at = match policy {
        RenewalPolicy::Before(d) => lifetime_s - d.as_secs_f64(),
        RenewalPolicy::RemainingPercentage(p) => lifetime_s * (1.0 - f64::from(p) / 100.0),
        RenewalPolicy::Default => default_at,
    };
    let at = if at < lifetime_s * 0.1 {
        default_at
    } else {
        at
    };
    let jitter = lifetime_s * JITTER_FRACTION * unit_hash(jitter_key);
    let at = (at - jitter).max(lifetime_s * 0.05);
    issued
        .checked_add(SignedDuration::from_secs_f64(at))
        .unwrap_or(expires)
}

/// How long before expiry the official SDKs' `CommunicationTokenCredential` refreshes a token
/// (about 10 minutes): a new token must be in the pod by then.
pub const SDK_REFRESH_WINDOW: Duration = Duration::from_secs(600);

/// What a renewal instant leaves a pod.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMargin {
    /// The propagation allowance used: the flag, at most a tenth of the lifetime.
    pub allowance: Duration,
    /// Allowance plus the SDK's refresh window (also at most a tenth of the lifetime): the
    /// validity the old token must still have at renewal.
    pub needed: Duration,
    /// `expires - renewal - allowance`: what the pod holds at worst when the new token lands.
    pub pod_validity_at_worst: SignedDuration,
    /// The renewal leaves less than `needed`.
    pub short: bool,
}

/// The margin a renewal at `renewal` leaves a pod, for a token issued at `issued` that
/// expires at `expires`, with a propagation `allowance`. Short-lived tokens (tests) scale the
/// allowance and the SDK window down to a tenth of their lifetime each.
pub fn pod_margin(
    issued: Timestamp,
    expires: Timestamp,
    renewal: Timestamp,
    allowance: Duration,
) -> PodMargin {
    let lifetime = Duration::try_from(expires.duration_since(issued)).unwrap_or_default();
    let tenth = lifetime / 10;
    let allowance = allowance.min(tenth);
    let needed = allowance + SDK_REFRESH_WINDOW.min(tenth);
    let left = expires.duration_since(renewal);
    let worst = left - SignedDuration::try_from(allowance).unwrap_or_default();
    PodMargin {
        allowance,
        needed,
        pod_validity_at_worst: worst,
        short: left < SignedDuration::try_from(needed).unwrap_or_default(),
    }
}

/// A stable value in [0, 1) from a string, so jitter survives restarts and leader changes.
fn unit_hash(key: &str) -> f64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// How long to wait from `now` until `at`, clamped to `[floor, max]`.
pub fn requeue_after(now: Timestamp, at: Timestamp, floor: Duration, max: Duration) -> Duration {
    let d = at.duration_since(now);
    let d = if d <= SignedDuration::ZERO {
        Duration::ZERO
    } else {
        Duration::try_from(d).unwrap_or(max)
    };
    d.clamp(floor, max)
}

/// Backoff after `failures` consecutive failures: exponential from 1 s with full jitter over
/// the upper half, capped at `max` (5 minutes by default), and further capped at a quarter
/// of the remaining validity of the current token, so retries keep coming while that token
/// still works.
pub fn failure_backoff(
    failures: u32,
    remaining_validity: Option<Duration>,
    max: Duration,
    seed: &str,
) -> Duration {
    let exp = 2f64.powi(failures.min(16) as i32);
    let mut cap = max.as_secs_f64();
    if let Some(r) = remaining_validity {
        cap = f64::min(cap, (r.as_secs_f64() / 4.0).max(1.0));
    }
    let base = f64::min(exp, cap);
    // Jitter in [base/2, base): deterministic per object and attempt.
    let j = unit_hash(&format!("{seed}/{failures}"));
    Duration::from_secs_f64((base / 2.0 + base / 2.0 * j).max(0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    const DAY: i64 = 86_400;

    #[test]
    fn whole_seconds_drops_the_fraction_as_the_apiserver_does() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            whole_seconds(at("2026-12-07T10:00:00.999Z")),
            at("2026-12-07T10:00:00Z")
        );
        assert_eq!(
            whole_seconds(at("2026-12-07T10:00:01Z")),
            at("2026-12-07T10:00:01Z")
        );
    }

    #[test]
    fn default_renews_after_two_thirds_minus_a_bounded_jitter() {
        for key in ["a", "b", "uid-123", "uid-456"] {
            let at = renewal_time(t(0), t(DAY), RenewalPolicy::Default, key);
            let s = at.as_second();
            assert!(s <= DAY * 2 / 3, "{key}: {s}");
            assert!(s >= DAY * 2 / 3 - DAY / 10, "{key}: {s}");
        }
    }

    #[test]
    fn the_default_policy_always_leaves_the_pod_margin_and_a_late_renew_before_does_not() {
        let allowance = Duration::from_secs(120);
        for lifetime in [3600, DAY] {
            for key in ["a", "b", "c"] {
                let at = renewal_time(t(0), t(lifetime), RenewalPolicy::Default, key);
                let m = pod_margin(t(0), t(lifetime), at, allowance);
                assert!(!m.short, "{lifetime} {key}: {m:?}");
                assert!(m.pod_validity_at_worst >= SignedDuration::from_secs(lifetime / 5));
            }
        }
        // renewBefore 5m on a 60-minute token: 3 minutes left for the pod, less than 2m + 6m.
        let at = renewal_time(
            t(0),
            t(3600),
            RenewalPolicy::Before(Duration::from_secs(300)),
            "k",
        );
        let m = pod_margin(t(0), t(3600), t(3600 - 300), allowance);
        assert!(m.short, "{m:?}");
        assert_eq!(m.needed, Duration::from_secs(120 + 360));
        assert_eq!(m.pod_validity_at_worst, SignedDuration::from_secs(180));
        assert!(at <= t(3300));
        // A 20-second test token: allowance and window scale to 2 s each.
        let m = pod_margin(t(0), t(20), t(13), allowance);
        assert_eq!(m.allowance, Duration::from_secs(2));
        assert!(!m.short);
    }

    #[test]
    fn jitter_is_deterministic_and_spreads_objects() {
        let a1 = renewal_time(t(0), t(DAY), RenewalPolicy::Default, "uid-a");
        let a2 = renewal_time(t(0), t(DAY), RenewalPolicy::Default, "uid-a");
        assert_eq!(a1, a2);
        let distinct: std::collections::BTreeSet<i64> = (0..100)
            .map(|i| {
                renewal_time(t(0), t(DAY), RenewalPolicy::Default, &format!("uid-{i}")).as_second()
            })
            .collect();
        assert!(distinct.len() > 90, "{}", distinct.len());
    }

    #[test]
    fn renew_before_is_a_guarantee() {
        let at = renewal_time(
            t(0),
            t(DAY),
            RenewalPolicy::Before(Duration::from_secs(3600)),
            "k",
        );
        assert!(at.as_second() <= DAY - 3600);
        assert!(at.as_second() >= DAY - 3600 - DAY / 10);
    }

    #[test]
    fn percentage_counts_the_remaining_share() {
        let at = renewal_time(t(0), t(1000), RenewalPolicy::RemainingPercentage(50), "k");
        assert!(at.as_second() <= 500 && at.as_second() >= 400);
    }

    #[test]
    fn renew_before_longer_than_the_granted_lifetime_falls_back_to_the_default() {
        // A 30 s token (emulator override) with renewBefore 10m must not renew immediately.
        let at = renewal_time(
            t(100),
            t(130),
            RenewalPolicy::Before(Duration::from_secs(600)),
            "k",
        );
        let rel = at.as_second() - 100;
        assert!((17..=20).contains(&rel), "{rel}");
    }

    #[test]
    fn degenerate_lifetimes_renew_at_once() {
        assert_eq!(renewal_time(t(5), t(5), RenewalPolicy::Default, "k"), t(5));
        assert_eq!(renewal_time(t(5), t(1), RenewalPolicy::Default, "k"), t(5));
    }

    #[test]
    fn requeue_is_clamped() {
        let floor = Duration::from_secs(1);
        let max = Duration::from_secs(3600);
        assert_eq!(requeue_after(t(10), t(5), floor, max), floor);
        assert_eq!(
            requeue_after(t(0), t(30), floor, max),
            Duration::from_secs(30)
        );
        assert_eq!(requeue_after(t(0), t(DAY), floor, max), max);
    }

    #[test]
    fn backoff_grows_and_is_capped_by_the_remaining_validity() {
        let b1 = failure_backoff(1, None, Duration::from_secs(300), "x");
        let b5 = failure_backoff(5, None, Duration::from_secs(300), "x");
        assert!(b1 < b5);
        assert!(
            failure_backoff(30, None, Duration::from_secs(300), "x") <= Duration::from_secs(300)
        );
        let capped = failure_backoff(
            30,
            Some(Duration::from_secs(40)),
            Duration::from_secs(300),
            "x",
        );
        assert!(capped <= Duration::from_secs(10), "{capped:?}");
    }
}
