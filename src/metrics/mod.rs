//! Prometheus metrics of the operator: one registry, every family registered up front, and small
//! recording methods the controllers and the ACS client call.
//!
//! Every name starts with `acs_identity_operator_` and carries its unit. Labels are bounded by
//! construction: most take `&'static str` so only values written in the source can appear, and
//! the one free-form label (`outcome` of an ACS request) is filtered by [`bound_outcome`]. Only
//! the per-object series ([`objects`]) carry an object's `namespace` and `name`, one series per
//! object and metric, computed from the caches at scrape; no label ever holds anything secret.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Prefix of every metric name.
pub const PREFIX: &str = "acs_identity_operator";

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Longest `outcome` label value kept as is (error categories are short snake_case words).
const MAX_OUTCOME_LEN: usize = 32;

/// Label value used for any `outcome` that is neither a status code nor a category.
const OTHER_OUTCOME: &str = "other";

type GaugeF64 = Gauge<f64, AtomicU64>;
type GaugeI64 = Gauge<i64, AtomicI64>;
/// Label set of a metric without labels: a family over it holds zero or one series, which lets
/// a gauge be absent (rather than a made-up number) when there is nothing to report.
type NoLabels = [(&'static str, &'static str); 0];
type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Reconcile durations: 5 ms up to about 20 s. A reconcile is a few apiserver and ACS calls.
fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// ACS request latency: 5 ms up to about 10 s (the client's own timeout is in that range).
fn acs_request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// Summary of all tokens the operator manages, recomputed by the token controller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenSummary {
    /// Tokens whose Secret holds a valid token.
    pub ready: i64,
    /// Tokens that are not ready (being issued, failing, or waiting for credentials).
    pub not_ready: i64,
    /// Tokens whose issuance is suspended.
    pub suspended: i64,
    /// Tokens whose Secret holds a token issued before their user's current revocation epoch
    /// (revoked at ACS), not replaced yet.
    pub revoked: i64,
    /// Smallest remaining validity of any issued token; `None` when there is none.
    pub min_remaining_validity_seconds: Option<f64>,
    /// Earliest expiry of any issued token, Unix seconds; `None` when there is none.
    pub next_expiry_unix: Option<f64>,
    /// Earliest scheduled renewal, Unix seconds; `None` when there is none.
    pub next_renewal_unix: Option<f64>,
    /// Smallest `podValidityAtWorstSeconds` of any token; `None` when there is none.
    pub min_pod_validity_seconds: Option<f64>,
}

/// The operator's metric registry and every family in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The per-object series, apart so that a scrape can leave them out.
    objects_registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: HistogramFamily<ControllerLabels>,
    reconciles_in_flight: Family<ControllerLabels, GaugeI64>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    queue_depth: Family<ControllerLabels, GaugeI64>,
    acs_requests: Family<RequestLabels, Counter>,
    acs_request_duration: HistogramFamily<OperationLabels>,
    token_issuances: Family<ReasonLabels, Counter>,
    revocations: Counter,
    identities_created: Counter,
    identities_deleted: Counter,
    tokens: Family<StateLabels, GaugeI64>,
    tokens_revoked: GaugeI64,
    token_min_remaining_validity: Family<NoLabels, GaugeF64>,
    token_next_expiry: Family<NoLabels, GaugeF64>,
    token_next_renewal: Family<NoLabels, GaugeF64>,
    users: Family<StateLabels, GaugeI64>,
    kube_requests: Family<VerbLabels, Counter>,
    secret_repairs: Counter,
    deferred: Family<ActionLabels, Counter>,
    ambiguous_creates: Counter,
    pod_validity_at_issue: Histogram,
    token_min_pod_validity: Family<NoLabels, GaugeF64>,
    /// Table sizes and watch health.
    pub runtime: runtime::RuntimeMetrics,
    /// The per-object series.
    pub objects: std::sync::Arc<objects::ObjectMetrics>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the registry and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let runtime = runtime::RuntimeMetrics::register(&mut registry);
        let mut m = Self {
            registry: Registry::default(),
            objects_registry: Registry::with_prefix(PREFIX),
            reconciles: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            reconciles_in_flight: Family::default(),
            reconcile_errors: Family::default(),
            queue_depth: Family::default(),
            acs_requests: Family::default(),
            acs_request_duration: Family::new_with_constructor(acs_request_histogram),
            token_issuances: Family::default(),
            revocations: Counter::default(),
            identities_created: Counter::default(),
            identities_deleted: Counter::default(),
            tokens: Family::default(),
            tokens_revoked: GaugeI64::default(),
            token_min_remaining_validity: Family::default(),
            token_next_expiry: Family::default(),
            token_next_renewal: Family::default(),
            users: Family::default(),
            kube_requests: Family::default(),
            secret_repairs: Counter::default(),
            deferred: Family::default(),
            ambiguous_creates: Counter::default(),
            // Buckets from 1 minute to 24 hours: what a pod holds at worst when a token
            // reaches it.
            pod_validity_at_issue: Histogram::new([
                60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
            ]),
            token_min_pod_validity: Family::default(),
            runtime,
            objects: std::sync::Arc::new(objects::ObjectMetrics::default()),
        };
        m.register_reconciles_and_requests(&mut registry);
        m.register_objects_and_guards(&mut registry);
        // Every action's series exists from the start at 0: a counter that first appears at 1
        // shows no increase, so the first deferral would never alert.
        for action in ["issue", "repair", "revocation"] {
            let _ = m.deferred.get_or_create(&ActionLabels { action });
        }
        m.objects_registry
            .register_collector(Box::new(m.objects.clone()));
        m.registry = registry;
        m
    }

    /// The reconcilers' families and the requests to ACS.
    fn register_reconciles_and_requests(&self, r: &mut Registry) {
        // Counters get their `_total` suffix from the encoder, and `register_with_unit`
        // appends the unit, so the names below carry neither.
        r.register(
            "reconciles",
            "Reconciles finished, by controller and result (ok or error)",
            self.reconciles.clone(),
        );
        r.register_with_unit(
            "reconcile_duration",
            "Time one reconcile took, by controller",
            Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        r.register(
            "reconciles_in_flight",
            "Reconciles running right now, by controller",
            self.reconciles_in_flight.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles, by controller and error category",
            self.reconcile_errors.clone(),
        );
        r.register(
            "queue_depth",
            "Objects scheduled for a reconcile that has not started yet, by controller",
            self.queue_depth.clone(),
        );
        r.register(
            "acs_requests",
            "Requests to the ACS Identity API, by operation and outcome (HTTP status or error category)",
            self.acs_requests.clone(),
        );
        r.register_with_unit(
            "acs_request_duration",
            "Latency of requests to the ACS Identity API, by operation",
            Unit::Seconds,
            self.acs_request_duration.clone(),
        );
        r.register(
            "token_issuances",
            "Access tokens issued, by reason",
            self.token_issuances.clone(),
        );
        r.register(
            "revocations",
            "Revoke calls made to ACS (each revokes all tokens of one identity)",
            self.revocations.clone(),
        );
        r.register(
            "identities_created",
            "ACS identities created",
            self.identities_created.clone(),
        );
        r.register(
            "identities_deleted",
            "ACS identities deleted",
            self.identities_deleted.clone(),
        );
    }

    /// The objects' summary families, the Kubernetes requests and the guards' counters.
    fn register_objects_and_guards(&self, r: &mut Registry) {
        r.register(
            "tokens",
            "CommunicationTokens, by state (ready, not_ready, suspended)",
            self.tokens.clone(),
        );
        r.register(
            "tokens_revoked",
            "CommunicationTokens whose Secret holds a token ACS has revoked (issued before their user's current revocation epoch) and not replaced yet; Ready is False for them once their status says so",
            self.tokens_revoked.clone(),
        );
        r.register_with_unit(
            "token_min_remaining_validity",
            "Smallest remaining validity of any issued token; absent when there is none",
            Unit::Seconds,
            self.token_min_remaining_validity.clone(),
        );
        r.register_with_unit(
            "token_next_expiry_timestamp",
            "Unix time of the earliest token expiry; absent when there is none",
            Unit::Seconds,
            self.token_next_expiry.clone(),
        );
        r.register_with_unit(
            "token_next_renewal_timestamp",
            "Unix time of the earliest scheduled token renewal; absent when there is none",
            Unit::Seconds,
            self.token_next_renewal.clone(),
        );
        r.register(
            "users",
            "CommunicationUsers, by state (ready, not_ready)",
            self.users.clone(),
        );
        r.register(
            "kube_requests",
            "Requests sent to the Kubernetes API server, by verb (get, list, watch, create, update, patch, delete, other)",
            self.kube_requests.clone(),
        );

        r.register(
            "secret_repairs",
            "Token Secrets rewritten with their same, still valid token after drift (an edit, an extra key, a template change)",
            self.secret_repairs.clone(),
        );
        r.register(
            "unscheduled_deferred",
            "Unscheduled work deferred by its guard, by action (issue and repair per token, revocation per user)",
            self.deferred.clone(),
        );
        r.register(
            "ambiguous_identity_creates",
            "GA identity creations whose outcome is unknown (the request may have been processed, the answer was lost): each may have left one orphan identity in ACS",
            self.ambiguous_creates.clone(),
        );

        r.register_with_unit(
            "token_pod_validity_at_worst",
            "Per issued token: the validity a pod holds at worst when the next token reaches it (expiry - renewal - propagation allowance)",
            Unit::Seconds,
            self.pod_validity_at_issue.clone(),
        );
        r.register_with_unit(
            "token_min_pod_validity_at_worst",
            "Smallest validity a pod holds at worst when its next token arrives, over all tokens; absent when there is none",
            Unit::Seconds,
            self.token_min_pod_validity.clone(),
        );
    }

    /// Renders every family in the OpenMetrics text format (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        self.encode_with(true)
    }

    /// Renders every family, the per-object series only when `objects` (at 20,000 tokens they
    /// are 6 MiB of the text and most of its cost: a frequent scrape of the operator's own
    /// health can leave them out).
    pub fn encode_with(&self, objects: bool) -> String {
        let mut out = String::new();
        let registries = if objects {
            vec![&self.registry, &self.objects_registry]
        } else {
            vec![&self.registry]
        };
        // Writing into a String cannot fail; the encoder only returns the `fmt::Error` of its
        // writer. Should it ever fail, a partial exposition is still the most useful answer.
        let written = registries
            .into_iter()
            .try_for_each(|r| encode_registry(&mut out, r))
            .and_then(|()| encode_eof(&mut out));
        if written.is_err() {
            tracing::warn!("failed to encode metrics");
        }
        out
    }

    /// Starts counting and timing one reconcile of `controller`. Finish the returned timer with
    /// the result; dropping it unfinished (a panic, a cancelled future) counts as `error`.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer {
        let labels = ControllerLabels { controller };
        let in_flight = self.reconciles_in_flight.get_or_create_owned(&labels);
        in_flight.inc();
        ReconcileTimer {
            controller,
            started: Instant::now(),
            reconciles: self.reconciles.clone(),
            duration: self.reconcile_duration.get_or_create_owned(&labels),
            in_flight,
            finished: false,
        }
    }

    /// Counts a failed reconcile by the error's category (`Error::category()`).
    pub fn reconcile_error(&self, controller: &'static str, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller,
                category,
            })
            .inc();
    }

    /// Sets how many objects of `controller` are scheduled for a reconcile that has not started.
    pub fn set_queue_depth(&self, controller: &'static str, depth: i64) {
        self.queue_depth
            .get_or_create(&ControllerLabels { controller })
            .set(depth);
    }

    /// Counts and times one ACS request. `outcome` is the HTTP status code or an error
    /// category; anything else is reported as `other` (see [`bound_outcome`]).
    pub fn acs_request(&self, operation: &'static str, outcome: &str, elapsed: Duration) {
        self.acs_requests
            .get_or_create(&RequestLabels {
                operation,
                outcome: bound_outcome(outcome).to_owned(),
            })
            .inc();
        self.acs_request_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one issued token. `reason` is one of `initial`, `renewal`, `revoked`,
    /// `spec_changed`, `secret_restored`, `forced`, `key_rotated`.
    pub fn token_issued(&self, reason: &'static str) {
        self.token_issuances
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Records what a newly issued token leaves a pod at worst.
    pub fn pod_validity_at_issue(&self, seconds: f64) {
        self.pod_validity_at_issue.observe(seconds);
    }

    /// Counts one Secret repaired with its same token.
    pub fn secret_repaired(&self) {
        self.secret_repairs.inc();
    }

    /// Counts one unscheduled `action` (`issue` or `repair`) deferred by the guard.
    pub fn unscheduled_deferred(&self, action: &'static str) {
        self.deferred.get_or_create(&ActionLabels { action }).inc();
    }

    /// Counts one GA identity creation with an unknown outcome.
    pub fn ambiguous_create(&self) {
        self.ambiguous_creates.inc();
    }

    /// Counts one revoke call made to ACS.
    pub fn revocation(&self) {
        self.revocations.inc();
    }

    /// Counts one ACS identity created.
    pub fn identity_created(&self) {
        self.identities_created.inc();
    }

    /// Counts one ACS identity deleted.
    pub fn identity_deleted(&self) {
        self.identities_deleted.inc();
    }

    /// Replaces the token gauges with `s`. Time gauges with no value are removed rather than
    /// set to a placeholder, so an alert on them cannot fire on an empty operator.
    pub fn set_token_summary(&self, s: &TokenSummary) {
        for (state, value) in [
            ("ready", s.ready),
            ("not_ready", s.not_ready),
            ("suspended", s.suspended),
        ] {
            self.tokens.get_or_create(&StateLabels { state }).set(value);
        }
        self.tokens_revoked.set(s.revoked);
        set_optional(
            &self.token_min_remaining_validity,
            s.min_remaining_validity_seconds,
        );
        set_optional(&self.token_next_expiry, s.next_expiry_unix);
        set_optional(&self.token_next_renewal, s.next_renewal_unix);
        set_optional(&self.token_min_pod_validity, s.min_pod_validity_seconds);
    }

    /// Counts one request to the Kubernetes API server; `verb` comes from
    /// [`kube_requests::verb_of`], a fixed set.
    pub fn kube_request(&self, verb: &'static str) {
        self.kube_requests.get_or_create(&VerbLabels { verb }).inc();
    }

    /// Sets the number of CommunicationUsers that are ready and not ready.
    pub fn set_users(&self, ready: i64, not_ready: i64) {
        for (state, value) in [("ready", ready), ("not_ready", not_ready)] {
            self.users.get_or_create(&StateLabels { state }).set(value);
        }
    }
}

/// Lets the ACS client report every attempt directly (`Arc<Metrics>` is an
/// `Arc<dyn RequestObserver>`).
impl crate::acs::RequestObserver for Metrics {
    fn observe(&self, operation: &'static str, outcome: &str, elapsed: Duration) {
        self.acs_request(operation, outcome, elapsed);
    }
}

/// Sets the single series of `family`, or removes it when there is no value.
fn set_optional(family: &Family<NoLabels, GaugeF64>, value: Option<f64>) {
    match value {
        Some(v) => {
            family.get_or_create(&[]).set(v);
        }
        None => {
            family.remove(&[]);
        }
    }
}

/// Keeps `outcome` when it is a 3-digit status code or a short snake_case category
/// (`[a-z_]{1,32}`), else returns `other`: a label must never carry an arbitrary string, which
/// could be unbounded or contain data from a response.
pub fn bound_outcome(outcome: &str) -> &str {
    let bytes = outcome.as_bytes();
    let status_code = bytes.len() == 3 && bytes.iter().all(u8::is_ascii_digit);
    let category = (1..=MAX_OUTCOME_LEN).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || *b == b'_');
    if status_code || category {
        outcome
    } else {
        OTHER_OUTCOME
    }
}

/// One running reconcile, started by [`Metrics::reconcile`]. Recording happens exactly once:
/// on [`ReconcileTimer::finish`], or on drop as `error` if never finished.
#[derive(Debug)]
#[must_use = "finish the timer with the reconcile's result"]
pub struct ReconcileTimer {
    controller: &'static str,
    started: Instant,
    reconciles: Family<ReconcileLabels, Counter>,
    duration: Histogram,
    in_flight: GaugeI64,
    finished: bool,
}

impl ReconcileTimer {
    /// Records the reconcile as done with `result` (`ok` or `error`).
    pub fn finish(mut self, result: &'static str) {
        self.record(result);
    }

    fn record(&mut self, result: &'static str) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.in_flight.dec();
        self.duration.observe(self.started.elapsed().as_secs_f64());
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: self.controller,
                result,
            })
            .inc();
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.record("error");
    }
}

pub mod kube_requests;
pub mod objects;
pub mod runtime;

#[cfg(test)]
mod tests;
