//! Pure, phase 7: how evenly the scheduled renewals are spread. The busiest minute is the
//! largest number of renewal times inside any sliding 60 s window; the fair share is what a
//! minute would get if the renewals were spread evenly over their window.
//!
//! The window is the span of the renewal times, but at least the spread the rotation policy
//! promises (`JITTER_FRACTION` of the token lifetime, as in `src/rotation.rs`): otherwise
//! renewals bunched into one minute would make a one-minute window and look perfectly fair.

use std::time::Duration;

use jiff::Timestamp;

/// The share of the lifetime the operator spreads renewals over (`rotation.rs`).
pub const JITTER_FRACTION: f64 = 0.10;

/// Length of the busiest-period window.
const MINUTE_S: f64 = 60.0;

/// The spread of a set of renewal times.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    pub renewals: usize,
    /// Renewals in the busiest 60 s.
    pub busiest_minute: usize,
    pub busiest_share: f64,
    /// The window renewals are judged against, in seconds.
    pub window_seconds: f64,
    /// `60 s / window`.
    pub fair_share: f64,
    /// `busiest_share / fair_share` (goal: at most 2).
    pub ratio: f64,
}

/// The spread of `renewals` for tokens of `lifetime`; `None` without renewals.
pub fn spread(renewals: &[Timestamp], lifetime: Duration) -> Option<Spread> {
    if renewals.is_empty() {
        return None;
    }
    let mut secs: Vec<f64> = renewals
        .iter()
        .map(|t| t.as_millisecond() as f64 / 1000.0)
        .collect();
    secs.sort_by(f64::total_cmp);
    let span = secs[secs.len() - 1] - secs[0];
    let window_seconds = span
        .max(lifetime.as_secs_f64() * JITTER_FRACTION)
        .max(MINUTE_S);
    let mut busiest = 0;
    let mut lo = 0;
    for hi in 0..secs.len() {
        while secs[hi] - secs[lo] >= MINUTE_S {
            lo += 1;
        }
        busiest = busiest.max(hi - lo + 1);
    }
    let n = secs.len();
    let busiest_share = busiest as f64 / n as f64;
    let fair_share = MINUTE_S / window_seconds;
    Some(Spread {
        renewals: n,
        busiest_minute: busiest,
        busiest_share,
        window_seconds,
        fair_share,
        ratio: busiest_share / fair_share,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(s: f64) -> Timestamp {
        Timestamp::from_millisecond((s * 1000.0) as i64).unwrap()
    }

    #[test]
    fn evenly_spread_renewals_get_about_the_fair_share() {
        // 1,440 renewals, one every 6 s over the 144-minute jitter window of a 24 h token.
        let r: Vec<Timestamp> = (0..1440).map(|i| at(1e6 + i as f64 * 6.0)).collect();
        let s = spread(&r, DAY).unwrap();
        assert_eq!(s.busiest_minute, 10);
        assert!((s.ratio - 1.0).abs() < 0.01, "{s:?}");
    }

    #[test]
    fn bunched_renewals_are_judged_against_the_promised_window() {
        let r: Vec<Timestamp> = (0..1000).map(|i| at(1e6 + i as f64 * 0.01)).collect();
        let s = spread(&r, DAY).unwrap();
        assert_eq!(s.busiest_minute, 1000);
        assert_eq!(s.window_seconds, 8640.0);
        assert!(s.ratio > 100.0, "{s:?}");
    }

    #[test]
    fn a_wider_span_than_the_jitter_window_lowers_the_fair_share() {
        let r = vec![at(0.0), at(30.0), at(20_000.0)];
        let s = spread(&r, DAY).unwrap();
        assert_eq!(s.window_seconds, 20_000.0);
        assert_eq!(s.busiest_minute, 2);
    }

    #[test]
    fn nothing_to_spread_is_none() {
        assert!(spread(&[], DAY).is_none());
    }
}
