//! Settings of [`crate::AcsClient`]: api-version surface, trust, timeouts, retries, the
//! shared rate limiter and the per-request metrics hook.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::models::{GA_API_VERSION, PREVIEW_API_VERSION};
use crate::ratelimit::RateLimiter;
use crate::retry::RetryPolicy;

/// Which api-version surface the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiMode {
    /// `2023-10-01`: create, issue, revoke, delete.
    #[default]
    Ga,
    /// `2025-04-01-preview`: adds `externalId` get-or-create and `GET /identities/{id}`.
    Preview,
}

impl ApiMode {
    pub fn api_version(self) -> &'static str {
        match self {
            ApiMode::Ga => GA_API_VERSION,
            ApiMode::Preview => PREVIEW_API_VERSION,
        }
    }
}

/// Told about every attempt (retries included), e.g. to feed a request histogram.
pub trait RequestObserver: Send + Sync {
    /// `operation` is the client method (`create_identity`, ...). `outcome` is the HTTP status
    /// (`"201"`) or, when no response arrived, the error category (`"network"`, `"timeout"`);
    /// both are bounded sets. `elapsed` excludes rate-limiter and backoff waits.
    fn observe(&self, operation: &'static str, outcome: &str, elapsed: Duration);
}

/// Asked before every attempt of a mutating call (create, issue, revoke, delete), after any
/// rate-limiter wait, right before the request is signed and sent. The operator answers from
/// its leader-election state, so a replica that is no longer sure it leads sends nothing.
pub trait MutationGate: Send + Sync {
    /// Whether the mutation `operation` (the client method's name) may be sent now.
    fn admit(&self, operation: &'static str) -> bool;
}

/// Options for [`crate::AcsClient`].
#[derive(Clone)]
pub struct ClientOptions {
    pub api_mode: ApiMode,
    /// PEM certificates (one or more) to trust, e.g. the emulator's CA.
    pub ca_pem: Option<Vec<u8>>,
    /// Also trust the built-in web PKI roots. Turn off to trust only `ca_pem`.
    pub trust_web_roots: bool,
    /// Limit for one attempt, from connecting until the response body is read.
    pub request_timeout: Duration,
    /// Limit for establishing a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Upper bound of the first backoff; doubles per retry.
    pub retry_base_delay: Duration,
    /// Upper bound of any backoff.
    pub retry_max_delay: Duration,
    /// Upper bound of a `Retry-After` wait.
    pub max_retry_after: Duration,
    /// Shared budget awaited before every attempt; `None` means unlimited.
    pub rate_limiter: Option<RateLimiter>,
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// Consulted before every attempt of a mutating call; `None` admits everything.
    pub mutation_gate: Option<Arc<dyn MutationGate>>,
    /// Send requests to `http://` endpoints. Off by default: the requests' signatures and the
    /// tokens in the answers would travel in clear. Only for an emulator on a dev machine.
    pub allow_insecure_http: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let retry = RetryPolicy::default();
        Self {
            api_mode: ApiMode::Ga,
            ca_pem: None,
            trust_web_roots: true,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_retries: retry.max_retries,
            retry_base_delay: retry.base_delay,
            retry_max_delay: retry.max_delay,
            max_retry_after: retry.max_retry_after,
            rate_limiter: None,
            observer: None,
            mutation_gate: None,
            allow_insecure_http: false,
        }
    }
}

impl ClientOptions {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            base_delay: self.retry_base_delay,
            max_delay: self.retry_max_delay,
            max_retry_after: self.max_retry_after,
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("api_mode", &self.api_mode)
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|p| format!("{} bytes", p.len())),
            )
            .field("trust_web_roots", &self.trust_web_roots)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry_policy())
            .field("rate_limiter", &self.rate_limiter)
            .field("observer", &self.observer.as_ref().map(|_| "set"))
            .field("mutation_gate", &self.mutation_gate.as_ref().map(|_| "set"))
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}
