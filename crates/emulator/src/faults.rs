//! Fault injection settable at runtime: added latency, a fraction of 429/500/503 answers,
//! connections dropped before (or after) the request is processed.

use std::sync::RwLock;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::routes::Operation;

/// The body of `PUT /_emulator/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultConfig {
    /// Added to every affected request before it is processed.
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default, rename = "rate429")]
    pub rate_429: f64,
    #[serde(default, rename = "rate500")]
    pub rate_500: f64,
    #[serde(default, rename = "rate503")]
    pub rate_503: f64,
    /// Fraction of requests whose connection is closed without a response, unprocessed.
    #[serde(default)]
    pub drop_rate: f64,
    /// Fraction of requests that are processed, then their connection is closed without a
    /// response: the ambiguous failure a client must not blindly retry.
    #[serde(default)]
    pub drop_after_rate: f64,
    /// `Retry-After` of injected 429 and 503 answers.
    #[serde(default = "default_retry_after")]
    pub retry_after_seconds: u64,
    /// Only these operations (names as in `/_emulator/stats`); all Identity requests if absent.
    #[serde(default)]
    pub operations: Option<Vec<String>>,
    /// Only requests about these identity ids (the `{id}` of the path: issue, revoke, delete,
    /// get); all if absent. Makes some identities fail while the rest of the resource works.
    #[serde(default)]
    pub identities: Option<Vec<String>>,
}

fn default_retry_after() -> u64 {
    1
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            rate_429: 0.0,
            rate_500: 0.0,
            rate_503: 0.0,
            drop_rate: 0.0,
            drop_after_rate: 0.0,
            retry_after_seconds: default_retry_after(),
            operations: None,
            identities: None,
        }
    }
}

impl FaultConfig {
    /// Rates are fractions in [0, 1]; the four "before" outcomes together at most 1.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("rate429", self.rate_429),
            ("rate500", self.rate_500),
            ("rate503", self.rate_503),
            ("dropRate", self.drop_rate),
            ("dropAfterRate", self.drop_after_rate),
        ];
        for (name, r) in rates {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        if self.rate_429 + self.rate_500 + self.rate_503 + self.drop_rate > 1.0 + 1e-9 {
            return Err("rate429 + rate500 + rate503 + dropRate must be at most 1".into());
        }
        if self.latency_ms > 600_000 {
            return Err("latencyMs must be at most 600000".into());
        }
        if let Some(ops) = &self.operations {
            if let Some(bad) = ops.iter().find(|o| Operation::parse(o).is_none()) {
                return Err(format!("unknown operation {bad:?} in operations"));
            }
        }
        Ok(())
    }

    fn applies_to(&self, op: Option<Operation>, id: Option<&str>) -> bool {
        let op_matches = match (&self.operations, op) {
            (None, _) => true,
            (Some(ops), Some(op)) => ops.iter().any(|o| o == op.as_str()),
            (Some(_), None) => false,
        };
        let id_matches = match (&self.identities, id) {
            (None, _) => true,
            (Some(ids), Some(id)) => ids.iter().any(|i| i == id),
            (Some(_), None) => false,
        };
        op_matches && id_matches
    }
}

/// What to do instead of (or besides) answering normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// Answer with this status (429, 500 or 503) without processing.
    Status(u16),
    /// Close the connection without processing or answering.
    Drop,
}

/// The faults chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    pub latency: Duration,
    pub before: Option<Injected>,
    pub drop_after: bool,
    pub retry_after_seconds: u64,
}

/// The current fault configuration.
#[derive(Debug, Default)]
pub struct FaultInjector {
    config: RwLock<FaultConfig>,
}

impl FaultInjector {
    pub fn get(&self) -> FaultConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set(&self, config: FaultConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Draws the faults of one request of `op` (`None`: a request that matched no operation)
    /// about identity `id` (`None`: not about one identity).
    pub fn plan(&self, op: Option<Operation>, id: Option<&str>) -> Plan {
        let c = self.config.read().unwrap_or_else(|e| e.into_inner());
        if !c.applies_to(op, id) {
            return Plan::default();
        }
        let mut rng = rand::rng();
        let r: f64 = rng.random();
        let mut edge = 0.0;
        let mut before = None;
        for (rate, outcome) in [
            (c.rate_429, Injected::Status(429)),
            (c.rate_500, Injected::Status(500)),
            (c.rate_503, Injected::Status(503)),
            (c.drop_rate, Injected::Drop),
        ] {
            edge += rate;
            if rate > 0.0 && r < edge {
                before = Some(outcome);
                break;
            }
        }
        let drop_after = c.drop_after_rate > 0.0 && rng.random::<f64>() < c.drop_after_rate;
        Plan {
            latency: Duration::from_millis(c.latency_ms),
            before,
            drop_after,
            retry_after_seconds: c.retry_after_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certain_faults_always_fire_and_filters_apply() {
        let f = FaultInjector::default();
        let idle = f.plan(Some(Operation::CreateIdentity), None);
        assert_eq!(
            (idle.before, idle.drop_after, idle.latency),
            (None, false, Duration::ZERO)
        );
        f.set(FaultConfig {
            rate_503: 1.0,
            retry_after_seconds: 7,
            operations: Some(vec!["issueAccessToken".into()]),
            ..FaultConfig::default()
        });
        let p = f.plan(Some(Operation::IssueAccessToken), Some("8:acs:r_a"));
        assert_eq!(p.before, Some(Injected::Status(503)));
        assert_eq!(p.retry_after_seconds, 7);
        assert_eq!(f.plan(Some(Operation::CreateIdentity), None).before, None);
        assert_eq!(f.plan(None, None).before, None);

        // Only some identities fail; the rest of the resource works.
        f.set(FaultConfig {
            rate_500: 1.0,
            identities: Some(vec!["8:acs:r_bad".into()]),
            ..FaultConfig::default()
        });
        let bad = f.plan(Some(Operation::IssueAccessToken), Some("8:acs:r_bad"));
        assert_eq!(bad.before, Some(Injected::Status(500)));
        let good = f.plan(Some(Operation::IssueAccessToken), Some("8:acs:r_good"));
        assert_eq!(good.before, None);
        assert_eq!(f.plan(Some(Operation::CreateIdentity), None).before, None);
    }

    #[test]
    fn invalid_configurations_are_rejected() {
        let bad = [
            FaultConfig {
                rate_429: 1.5,
                ..FaultConfig::default()
            },
            FaultConfig {
                rate_429: 0.6,
                rate_500: 0.6,
                ..FaultConfig::default()
            },
            FaultConfig {
                operations: Some(vec!["nope".into()]),
                ..FaultConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
        assert!(FaultConfig::default().validate().is_ok());
    }
}
