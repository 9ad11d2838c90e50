//! Request counters: per operation and outcome status, plus throttles, injected faults, dropped
//! connections and authentication failures, and the Entra stand-in's token requests and bearer
//! checks. Exposed by `GET /_emulator/stats`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use jiff::Timestamp;
use serde::Serialize;

/// The counters since start or the last reset.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub since: String,
    /// Operation name → status code → count. Requests that matched no operation count under
    /// `unrouted`.
    pub operations: BTreeMap<&'static str, BTreeMap<u16, u64>>,
    pub total: u64,
    /// 429s from the rate limits.
    pub throttled: u64,
    /// All 429s sent (rate limits and injected).
    pub total429: u64,
    /// Injected faults by kind (`429`, `500`, `503`, `drop`, `dropAfter`, `latency`).
    pub injected: BTreeMap<&'static str, u64>,
    /// Connections closed without a response (injected drops).
    pub dropped: u64,
    /// Requests answered 401 `Denied`.
    pub auth_failures: u64,
    pub entra: EntraSnapshot,
}

/// The Entra stand-in's counters.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntraSnapshot {
    /// Token requests by outcome: `issued`, or the OAuth error (`invalid_client`, ...).
    pub token_requests: BTreeMap<&'static str, u64>,
    /// Refused token requests by AADSTS code (`AADSTS7000215`, ...).
    pub token_errors: BTreeMap<String, u64>,
    /// Identity API requests with a bearer token: `accepted`, `unauthenticated` (401) or
    /// `forbidden` (403).
    pub bearer_requests: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
pub struct Stats {
    inner: Mutex<Snapshot>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            inner: Mutex::new(empty()),
        }
    }
}

fn empty() -> Snapshot {
    Snapshot {
        since: super::response::format_instant(Timestamp::now()),
        operations: BTreeMap::new(),
        total: 0,
        throttled: 0,
        total429: 0,
        injected: BTreeMap::new(),
        dropped: 0,
        auth_failures: 0,
        entra: EntraSnapshot::default(),
    }
}

impl Stats {
    fn with<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// One answered request.
    pub fn record(&self, op: &'static str, status: u16) {
        self.with(|s| {
            *s.operations
                .entry(op)
                .or_default()
                .entry(status)
                .or_default() += 1;
            s.total += 1;
            if status == 429 {
                s.total429 += 1;
            }
            if status == 401 && op != "admin" {
                s.auth_failures += 1;
            }
        });
    }

    pub fn record_throttled(&self) {
        self.with(|s| s.throttled += 1);
    }

    pub fn record_injected(&self, kind: &'static str) {
        self.with(|s| *s.injected.entry(kind).or_default() += 1);
    }

    pub fn record_dropped(&self) {
        self.with(|s| s.dropped += 1);
    }

    /// One token request: `None` when a token was issued, else the OAuth error and AADSTS key.
    pub fn record_entra_token(&self, refused: Option<(&'static str, String)>) {
        self.with(|s| match refused {
            None => *s.entra.token_requests.entry("issued").or_default() += 1,
            Some((error, code)) => {
                *s.entra.token_requests.entry(error).or_default() += 1;
                *s.entra.token_errors.entry(code).or_default() += 1;
            }
        });
    }

    pub fn record_entra_bearer(&self, outcome: &'static str) {
        self.with(|s| *s.entra.bearer_requests.entry(outcome).or_default() += 1);
    }

    pub fn snapshot(&self) -> Snapshot {
        self.with(|s| s.clone())
    }

    pub fn reset(&self) {
        self.with(|s| *s = empty());
    }
}
