//! Per-object series (labelled `namespace` and `name`, nothing else), so an alert can say which
//! token or user is failing. They are computed at scrape time from a source the controllers
//! install (their caches): nothing is kept per object but the restart counts, which the tables
//! report prunes with the objects, so a deleted object's series disappear with it.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// The status of an object's Ready condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    True,
    False,
    Unknown,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::True => "True",
            Readiness::False => "False",
            Readiness::Unknown => "Unknown",
        }
    }
}

/// What the series of one CommunicationToken say.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSeries {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ready: Readiness,
    /// Unix seconds; `None` before the first issuance, and while the token is suspended (no
    /// renewal is coming: an expiry alert would only be noise).
    pub expiration: Option<f64>,
    /// Unix seconds; `None` when no renewal is scheduled (suspended included).
    pub renewal: Option<f64>,
}

/// What the series of one CommunicationUser say.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSeries {
    pub namespace: String,
    pub name: String,
    pub ready: Readiness,
}

/// Where the series come from: the controllers' caches.
pub trait ObjectSource: Send + Sync + 'static {
    fn tokens(&self) -> Vec<TokenSeries>;
    fn users(&self) -> Vec<UserSeries>;
}

/// `namespace` and `name`.
type ObjectLabels<'a> = [(&'static str, &'a str); 2];

fn object_labels<'a>(namespace: &'a str, name: &'a str) -> ObjectLabels<'a> {
    [("namespace", namespace), ("name", name)]
}

/// The collector of the per-object series.
#[derive(Default)]
pub struct ObjectMetrics {
    source: OnceLock<Box<dyn ObjectSource>>,
    /// Workload restarts by token UID.
    restarts: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for ObjectMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectMetrics")
            .field("source", &self.source.get().is_some())
            .finish_non_exhaustive()
    }
}

impl ObjectMetrics {
    /// Installs the source (once; later calls are ignored).
    pub fn set_source(&self, source: Box<dyn ObjectSource>) {
        let _ = self.source.set(source);
    }

    /// Counts one workload restart caused by the token `uid`.
    pub fn workload_restarted(&self, uid: &str) {
        let mut r = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry(uid.to_string()).or_default() += 1;
    }

    /// Keeps the restart counts of the tokens `keep` says still exist; returns how many remain.
    pub fn retain_restarts(&self, keep: impl Fn(&str) -> bool) -> usize {
        let mut r = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|uid, _| keep(uid));
        crate::alloc::shrink(&mut r);
        r.len()
    }

    /// Restart counts held.
    pub fn restart_entries(&self) -> usize {
        self.restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// One gauge family: a descriptor, then a series per item that has a value.
fn gauges<T>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    items: &[T],
    value: impl Fn(&T) -> Option<(ObjectLabels<'_>, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for item in items {
        if let Some((labels, v)) = value(item) {
            ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn ready_family<T>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    items: &[T],
    value: impl Fn(&T) -> (&str, &str, Readiness),
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for item in items {
        let (namespace, name, ready) = value(item);
        let labels = [
            ("namespace", namespace),
            ("name", name),
            ("condition", ready.as_str()),
        ];
        ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ObjectMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.source.get() else {
            return Ok(());
        };
        let tokens = source.tokens();
        gauges(
            &mut encoder,
            "token_expiration_timestamp",
            "Unix time the token in each CommunicationToken's Secret expires (absent before the first issuance)",
            Some(&Unit::Seconds),
            &tokens,
            |t| Some((object_labels(&t.namespace, &t.name), t.expiration?)),
        )?;
        gauges(
            &mut encoder,
            "token_renewal_timestamp",
            "Unix time each CommunicationToken is scheduled to be renewed (absent when none is scheduled)",
            Some(&Unit::Seconds),
            &tokens,
            |t| Some((object_labels(&t.namespace, &t.name), t.renewal?)),
        )?;
        ready_family(
            &mut encoder,
            "token_ready_status",
            "1 for each CommunicationToken, labelled with the status of its Ready condition (True, False or Unknown: not reconciled yet)",
            &tokens,
            |t| (&t.namespace, &t.name, t.ready),
        )?;
        {
            let restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
            let mut family = encoder.encode_descriptor(
                "token_workload_restarts",
                "Rollout restarts of workloads (spec.rolloutRestartTargets) each CommunicationToken caused",
                None,
                MetricType::Counter,
            )?;
            for t in &tokens {
                if let Some(n) = restarts.get(&t.uid) {
                    let labels = object_labels(&t.namespace, &t.name);
                    ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let users = source.users();
        ready_family(
            &mut encoder,
            "user_ready_status",
            "1 for each CommunicationUser, labelled with the status of its Ready condition (True, False or Unknown: not reconciled yet)",
            &users,
            |u| (&u.namespace, &u.name, u.ready),
        )?;
        Ok(())
    }
}
