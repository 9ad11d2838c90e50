//! When to retry a failed ACS call and how long to wait first. Pure decisions, no IO: the
//! client feeds in the error, the attempt number and a jitter sample.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::error::AcsError;

/// Whether sending a request twice can have a different effect than sending it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Issue, revoke, delete, get, and the preview create with `externalId` (get-or-create).
    Idempotent,
    /// The GA create without `externalId`: every call that reaches the service makes a new
    /// identity, and no repeatability header exists to deduplicate.
    NonIdempotent,
}

/// Bounded exponential backoff with full jitter that yields to the service's `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; `0` disables retries.
    pub max_retries: u32,
    /// Upper bound of the first backoff; doubled for each further retry.
    pub base_delay: Duration,
    /// Upper bound of any computed backoff.
    pub max_delay: Duration,
    /// Upper bound of a wait the service asks for, so one throttled call cannot park a
    /// reconciler for long; the caller still sees the full value in the final error.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Whether the attempt numbered `attempt` (1-based) that failed with `err` may be retried.
    pub fn should_retry(&self, attempt: u32, err: &AcsError, idempotency: Idempotency) -> bool {
        attempt <= self.max_retries && is_retryable(err, idempotency)
    }

    /// How long to wait before retry number `retry` (1-based) after `err`: the service's
    /// `Retry-After` (capped) when given, otherwise [`RetryPolicy::backoff`].
    pub fn delay(&self, retry: u32, err: &AcsError, jitter: f64) -> Duration {
        match err.retry_after() {
            Some(wait) => wait.min(self.max_retry_after),
            None => self.backoff(retry, jitter),
        }
    }

    /// Full jitter: `jitter` (a sample in `[0, 1)`) times `min(max_delay, base_delay * 2^(retry-1))`.
    /// Full jitter spreads the retries of many reconcilers that failed together.
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(31);
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Whether `err` may be retried for a call of the given idempotency.
pub fn is_retryable(err: &AcsError, idempotency: Idempotency) -> bool {
    match idempotency {
        Idempotency::Idempotent => err.is_transient(),
        Idempotency::NonIdempotent => surely_not_processed(err),
    }
}

/// True only when the service surely did not act on the request: it was throttled (429 is
/// answered before the operation runs) or no connection was ever made. A timeout, a reset
/// mid-request or a 5xx may follow a completed create, and retrying would make a second
/// identity that nobody owns.
pub fn surely_not_processed(err: &AcsError) -> bool {
    match err {
        AcsError::Service { status, .. } => *status == 429,
        AcsError::Connect { .. } => true,
        _ => false,
    }
}

/// The wait a response asks for, checked in azure-core's order: `retry-after-ms`,
/// `x-ms-retry-after-ms` (milliseconds), then `Retry-After` (seconds or an HTTP-date).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = text(name).and_then(parse_non_negative) {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let value = text("retry-after")?;
    if let Some(secs) = parse_non_negative(value) {
        return Some(Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a finite non-negative number no larger than a day (a bigger one is garbage, and
/// `Duration::from_secs_f64` must not see infinity).
fn parse_non_negative(s: &str) -> Option<f64> {
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v.min(86_400_000.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeError;

    fn service(status: u16) -> AcsError {
        AcsError::Service {
            status,
            code: None,
            message: None,
            target: None,
            retry_after: None,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    /// A real reqwest error of each transport kind, made by sending to loopback addresses.
    async fn transport_errors() -> (AcsError, AcsError) {
        // Nothing listens on a port that was just released.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let refused = reqwest::get(format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap_err();
        // A listener that never answers makes the request time out after connecting.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let (_conn, _) = silent.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let timeout = reqwest::Client::new()
            .get(format!("http://{addr}/"))
            .timeout(Duration::from_millis(100))
            .send()
            .await
            .unwrap_err();
        holder.abort();
        (
            AcsError::from_reqwest(refused),
            AcsError::from_reqwest(timeout),
        )
    }

    #[tokio::test]
    async fn ga_create_is_retried_only_when_the_service_surely_did_not_act() {
        let (refused, timeout) = transport_errors().await;
        assert!(
            matches!(
                refused,
                AcsError::Connect {
                    timed_out: false,
                    ..
                }
            ),
            "{refused:?}"
        );
        assert!(matches!(timeout, AcsError::Timeout { .. }), "{timeout:?}");

        let p = RetryPolicy::default();
        let create = Idempotency::NonIdempotent;
        assert!(p.should_retry(1, &service(429), create));
        assert!(p.should_retry(1, &refused, create));
        for ambiguous in [service(500), service(503), service(408), timeout] {
            assert!(ambiguous.is_transient(), "{ambiguous:?}");
            assert!(!p.should_retry(1, &ambiguous, create), "{ambiguous:?}");
        }
        assert!(!p.should_retry(1, &service(400), create));
    }

    #[tokio::test]
    async fn idempotent_calls_retry_every_transient_error() {
        let (refused, timeout) = transport_errors().await;
        let p = RetryPolicy::default();
        let idem = Idempotency::Idempotent;
        for transient in [
            service(429),
            service(500),
            service(503),
            service(408),
            refused,
            timeout,
        ] {
            assert!(p.should_retry(1, &transient, idem), "{transient:?}");
        }
        let decode = AcsError::Decode {
            status: 200,
            source: DecodeError {
                category: "syntax",
                line: 1,
                column: 1,
            },
        };
        for permanent in [
            service(400),
            service(401),
            service(403),
            service(404),
            service(409),
            decode,
        ] {
            assert!(!p.should_retry(1, &permanent, idem), "{permanent:?}");
        }
    }

    #[test]
    fn attempts_are_bounded_by_max_retries() {
        let p = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        let e = service(503);
        assert!(p.should_retry(1, &e, Idempotency::Idempotent));
        assert!(p.should_retry(2, &e, Idempotency::Idempotent));
        assert!(!p.should_retry(3, &e, Idempotency::Idempotent));
        let none = RetryPolicy {
            max_retries: 0,
            ..p
        };
        assert!(!none.should_retry(1, &service(429), Idempotency::NonIdempotent));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_is_fully_jittered() {
        let p = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(5),
        };
        let ceilings: Vec<_> = (1..=6).map(|r| p.backoff(r, 1.0).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(200));
        assert_eq!(p.backoff(u32::MAX, 1.0), Duration::from_millis(1000));
        assert_eq!(
            p.backoff(2, 7.0),
            Duration::from_millis(200),
            "jitter is clamped"
        );
    }

    #[test]
    fn retry_after_from_the_service_replaces_the_backoff_and_is_capped() {
        let p = RetryPolicy {
            max_retry_after: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        let throttled = |secs| AcsError::Service {
            status: 429,
            code: None,
            message: None,
            target: None,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(p.delay(1, &throttled(2), 0.0), Duration::from_secs(2));
        assert_eq!(p.delay(1, &throttled(600), 0.0), Duration::from_secs(5));
        assert_eq!(p.delay(1, &service(503), 0.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_headers_are_read_in_azure_core_order() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_787_045);
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
        assert_eq!(
            ms(retry_after(&headers(&[("retry-after", "3")]), now)),
            Some(3000)
        );
        assert_eq!(
            ms(retry_after(&headers(&[("retry-after", "1.5")]), now)),
            Some(1500)
        );
        assert_eq!(
            ms(retry_after(&headers(&[("retry-after-ms", "250")]), now)),
            Some(250)
        );
        assert_eq!(
            ms(retry_after(&headers(&[("x-ms-retry-after-ms", "40")]), now)),
            Some(40)
        );
        assert_eq!(
            ms(retry_after(
                &headers(&[
                    ("retry-after", "9"),
                    ("x-ms-retry-after-ms", "40"),
                    ("retry-after-ms", "7")
                ]),
                now
            )),
            Some(7)
        );
        // 2025-01-02T03:04:05Z is `now`; the date is 10 s later.
        assert_eq!(
            ms(retry_after(
                &headers(&[("retry-after", "Thu, 02 Jan 2025 03:04:15 GMT")]),
                now
            )),
            Some(10_000)
        );
        assert_eq!(
            ms(retry_after(
                &headers(&[("retry-after", "Thu, 02 Jan 2025 03:00:00 GMT")]),
                now
            )),
            Some(0),
            "a date in the past means retry now"
        );
        for garbage in ["soon", "-1", "NaN", "inf", ""] {
            assert_eq!(
                retry_after(&headers(&[("retry-after", garbage)]), now),
                None,
                "{garbage}"
            );
        }
        assert_eq!(
            ms(retry_after(
                &headers(&[("retry-after-ms", "x"), ("retry-after", "2")]),
                now
            )),
            Some(2000),
            "an unparsable header falls through to the next"
        );
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
