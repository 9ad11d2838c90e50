//! The pure half of leader election: candidate settings, and what a candidate does with the
//! Lease it read (create, renew, take over, or wait), decided from explicit times so it can be
//! tested without a clock or an apiserver. See the parent module for the semantics.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use tokio::time::Instant;

/// Settings of one candidate.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity, unique among replicas (the pod name, say).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal; others wait this long (after they
    /// last saw it change) before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal; must be less than
    /// `lease_duration`.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire, and between renewals; must be less than
    /// `renew_deadline`.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Checks the timing invariants that make two simultaneous leaders impossible.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let problem = if self.identity.is_empty() {
            Some("identity must not be empty")
        } else if self.retry_period.is_zero() {
            Some("retry period must be positive")
        } else if self.renew_deadline <= self.retry_period {
            Some("renew deadline must be longer than the retry period")
        } else if self.lease_duration <= self.renew_deadline {
            Some("lease duration must be longer than the renew deadline")
        } else if self.lease_duration_seconds().is_none() {
            Some("lease duration is too long")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(InvalidConfig(problem)),
            None => Ok(()),
        }
    }

    /// The lease duration in whole seconds as the Lease records it, rounded up so that others
    /// never wait less than we promised.
    pub fn lease_duration_seconds(&self) -> Option<i32> {
        let mut secs = self.lease_duration.as_secs();
        if self.lease_duration.subsec_nanos() > 0 {
            secs += 1;
        }
        i32::try_from(secs.max(1)).ok()
    }
}

/// A [`LeaseConfig`] whose timings or identity are unusable; the text names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub &'static str);

/// What a candidate should do with the Lease it just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it with us as holder.
    Create,
    /// We hold it: renew it, keeping its acquire time and transition count.
    Renew,
    /// It is free or expired: take it, recording this transition count.
    TakeOver {
        /// `leaseTransitions` to write.
        transitions: i32,
    },
    /// Another candidate holds it and it has not expired yet.
    Wait {
        /// The current holder.
        holder: String,
        /// When it expires if it does not change before then.
        expires: Instant,
    },
}

/// Decides what to do with `lease` (None: it does not exist). `observed_at` is when this
/// candidate first saw the Lease's current spec; `default_duration` applies when the record
/// carries no duration. Pure: every input, including `now`, is explicit.
pub fn decide(
    identity: &str,
    lease: Option<&LeaseSpec>,
    observed_at: Instant,
    now: Instant,
    default_duration: Duration,
) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let transitions = spec.lease_transitions.unwrap_or(0);
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() {
        return Decision::TakeOver {
            transitions: transitions.saturating_add(1),
        };
    }
    if holder == identity {
        return Decision::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|secs| u64::try_from(secs).ok())
        .map(Duration::from_secs)
        .unwrap_or(default_duration);
    let expires = observed_at + duration;
    if now >= expires {
        Decision::TakeOver {
            transitions: transitions.saturating_add(1),
        }
    } else {
        Decision::Wait {
            holder: holder.to_owned(),
            expires,
        }
    }
}

/// The Lease spec a candidate writes for `decision` (None for `Wait`). Pure.
pub fn desired_spec(
    config: &LeaseConfig,
    current: Option<&LeaseSpec>,
    decision: &Decision,
    now: Timestamp,
) -> Option<LeaseSpec> {
    let (acquire_time, transitions) = match decision {
        Decision::Create => (MicroTime(now), 0),
        Decision::Renew => (
            current
                .and_then(|s| s.acquire_time.clone())
                .unwrap_or(MicroTime(now)),
            current.and_then(|s| s.lease_transitions).unwrap_or(0),
        ),
        Decision::TakeOver { transitions } => (MicroTime(now), *transitions),
        Decision::Wait { .. } => return None,
    };
    Some(LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: config.lease_duration_seconds(),
        acquire_time: Some(acquire_time),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    })
}

/// The last Lease spec this candidate saw, and when it first saw it.
#[derive(Debug, Default)]
pub(super) struct Observation {
    pub(super) spec: Option<LeaseSpec>,
    pub(super) at: Option<Instant>,
    /// Start of the last attempt that wrote the Lease with us as holder. Others start their
    /// expiry clock only after they read that write, so counting the renew deadline from here
    /// makes us stop acting before any of them can take over.
    pub(super) renewed_at: Option<Instant>,
}

impl Observation {
    /// Records `spec` as seen at `now`, keeping the earlier time if it has not changed.
    pub(super) fn observe(&mut self, spec: Option<&LeaseSpec>, now: Instant) -> Instant {
        match self.at {
            Some(at) if self.spec.as_ref() == spec => at,
            _ => {
                self.spec = spec.cloned();
                self.at = Some(now);
                now
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "replica-a";
    const OTHER: &str = "replica-b";

    fn config() -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            name: "acs-identity-operator".into(),
            identity: ME.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn held_by(holder: Option<&str>, duration: i32, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(transitions),
            acquire_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            ..LeaseSpec::default()
        }
    }

    fn decide_at(spec: Option<&LeaseSpec>, seen: Instant, now: Instant) -> Decision {
        decide(ME, spec, seen, now, Duration::from_secs(15))
    }

    #[test]
    fn a_missing_lease_is_created() {
        let t0 = Instant::now();
        assert_eq!(decide_at(None, t0, t0), Decision::Create);
    }

    #[test]
    fn a_lease_held_by_me_is_renewed_even_when_expired() {
        let t0 = Instant::now();
        let spec = held_by(Some(ME), 15, 3);
        assert_eq!(decide_at(Some(&spec), t0, t0), Decision::Renew);
        assert_eq!(
            decide_at(Some(&spec), t0, t0 + Duration::from_secs(100)),
            Decision::Renew
        );
    }

    #[test]
    fn a_lease_held_by_another_is_respected_until_its_duration_after_we_saw_it_change() {
        let t0 = Instant::now();
        let spec = held_by(Some(OTHER), 15, 3);
        assert_eq!(
            decide_at(Some(&spec), t0, t0 + Duration::from_millis(14_999)),
            Decision::Wait {
                holder: OTHER.into(),
                expires: t0 + Duration::from_secs(15),
            }
        );
        assert_eq!(
            decide_at(Some(&spec), t0, t0 + Duration::from_secs(15)),
            Decision::TakeOver { transitions: 4 }
        );
    }

    #[test]
    fn the_holders_recorded_duration_wins_over_ours() {
        let t0 = Instant::now();
        let spec = held_by(Some(OTHER), 60, 0);
        assert!(matches!(
            decide_at(Some(&spec), t0, t0 + Duration::from_secs(30)),
            Decision::Wait { .. }
        ));
        let mut no_duration = held_by(Some(OTHER), 0, 0);
        no_duration.lease_duration_seconds = None;
        assert_eq!(
            decide_at(Some(&no_duration), t0, t0 + Duration::from_secs(15)),
            Decision::TakeOver { transitions: 1 }
        );
    }

    #[test]
    fn a_released_lease_is_taken_over_at_once() {
        let t0 = Instant::now();
        let empty = held_by(Some(""), 1, 7);
        assert_eq!(
            decide_at(Some(&empty), t0, t0),
            Decision::TakeOver { transitions: 8 }
        );
        let none = held_by(None, 1, 7);
        assert_eq!(
            decide_at(Some(&none), t0, t0),
            Decision::TakeOver { transitions: 8 }
        );
    }

    #[test]
    fn a_stale_wall_clock_renew_time_does_not_make_a_fresh_observation_expire() {
        // renewTime is the Unix epoch, decades ago by any wall clock; only our own observation
        // time counts, so a candidate that just saw this record still waits.
        let t0 = Instant::now();
        let spec = held_by(Some(OTHER), 15, 0);
        assert!(matches!(
            decide_at(Some(&spec), t0, t0 + Duration::from_secs(1)),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn renewal_keeps_acquire_time_and_transitions_and_moves_renew_time() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let current = held_by(Some(ME), 15, 5);
        let spec = desired_spec(&config(), Some(&current), &Decision::Renew, now).unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.acquire_time, Some(MicroTime(Timestamp::UNIX_EPOCH)));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        assert_eq!(spec.lease_transitions, Some(5));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }

    #[test]
    fn takeover_records_the_new_holder_acquire_time_and_transition() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let current = held_by(Some(OTHER), 15, 5);
        let decision = Decision::TakeOver { transitions: 6 };
        let spec = desired_spec(&config(), Some(&current), &decision, now).unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        assert_eq!(spec.lease_transitions, Some(6));
    }

    #[test]
    fn creation_starts_at_zero_transitions_and_waiting_writes_nothing() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let spec = desired_spec(&config(), None, &Decision::Create, now).unwrap();
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        let wait = Decision::Wait {
            holder: OTHER.into(),
            expires: Instant::now(),
        };
        assert_eq!(desired_spec(&config(), None, &wait, now), None);
    }

    #[test]
    fn an_observation_keeps_its_time_until_the_record_changes() {
        let t0 = Instant::now();
        let mut observation = Observation::default();
        let first = held_by(Some(OTHER), 15, 0);
        assert_eq!(observation.observe(Some(&first), t0), t0);
        assert_eq!(
            observation.observe(Some(&first), t0 + Duration::from_secs(5)),
            t0
        );
        let mut renewed = first.clone();
        renewed.renew_time = Some(MicroTime(Timestamp::from_second(60).unwrap()));
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(observation.observe(Some(&renewed), t1), t1);
        assert_eq!(
            observation.observe(None, t1 + Duration::from_secs(1)),
            t1 + Duration::from_secs(1)
        );
    }

    #[test]
    fn sub_second_durations_are_rounded_up_in_the_record() {
        let mut c = config();
        c.lease_duration = Duration::from_millis(1500);
        assert_eq!(c.lease_duration_seconds(), Some(2));
        c.lease_duration = Duration::from_millis(200);
        assert_eq!(c.lease_duration_seconds(), Some(1));
    }

    #[test]
    fn timings_that_allow_two_leaders_are_rejected() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.renew_deadline = c.lease_duration;
        assert!(c.validate().is_err());
        let mut c = config();
        c.retry_period = c.renew_deadline;
        assert!(c.validate().is_err());
        let mut c = config();
        c.identity.clear();
        assert!(c.validate().is_err());
        let mut c = config();
        c.retry_period = Duration::ZERO;
        assert!(c.validate().is_err());
    }
}
