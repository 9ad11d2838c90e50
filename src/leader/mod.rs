//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several replicas only
//! one writes anything. kube-rs has none built in; this follows client-go's `leaderelection`:
//!
//! - A candidate takes the Lease when it has no holder (released) or when its record has not
//!   changed for the lease duration. Like client-go, "not changed" is measured on this process's
//!   monotonic clock from the moment it first saw the current record, never by comparing the
//!   holder's `renewTime` with our wall clock: clock skew between nodes then cannot make a
//!   candidate steal a Lease that is still being renewed. The cost is that a freshly started
//!   candidate waits one lease duration before taking over a stale Lease.
//! - Every write is a replace carrying the `resourceVersion` that was read (or a create, which
//!   fails if the Lease exists), so when two candidates race exactly one write succeeds.
//! - The leader renews every `retry_period`. It considers leadership lost as soon as it sees
//!   another holder, or when no renewal has succeeded for `renew_deadline`; because
//!   `renew_deadline < lease_duration`, it stops acting before any other candidate can see the
//!   Lease as expired.
//! - Every write of the operator (apiserver and ACS) passes a [`LeaderGate`] first: leadership
//!   is valid until the renew deadline after the *start* of the last successful acquire or
//!   renew, on the monotonic clock, so a leader that was frozen past it refuses its very first
//!   write after resuming, before its renew loop has even noticed (see `gate.rs`).
//! - `leaseTransitions` counts changes of holder; a graceful release clears `holderIdentity` so
//!   a successor takes over at its next retry instead of waiting out the lease duration.

mod decision;
pub mod fence;
mod gate;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use decision::Observation;
pub use decision::{decide, desired_spec, Decision, InvalidConfig, LeaseConfig};
pub use gate::LeaderGate;

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The timings or identity are unusable.
    #[error("invalid leader election config")]
    InvalidConfig(#[from] InvalidConfig),
    /// The apiserver refused in a way retrying will not fix (forbidden, invalid).
    #[error("failed to access the leader election lease")]
    Lease(#[source] kube::Error),
    /// The apiserver kept answering conflicts while releasing the Lease.
    #[error("failed to release the leader election lease")]
    Release(#[source] kube::Error),
}

impl LeaderError {
    /// Metric label / event reason for this error.
    pub fn category(&self) -> &'static str {
        match self {
            LeaderError::InvalidConfig(_) => "config",
            LeaderError::Lease(_) => "lease",
            LeaderError::Release(_) => "release",
        }
    }
}

#[derive(Debug)]
struct Shared {
    api: Api<Lease>,
    config: LeaseConfig,
    observation: Mutex<Observation>,
    leader: watch::Sender<bool>,
    gate: LeaderGate,
}

/// Result of one attempt to acquire or renew.
enum Attempt {
    /// We hold the Lease now.
    Held,
    /// Another candidate holds it.
    HeldBy(String),
    /// Another write won the race; read again.
    Conflict,
}

impl Shared {
    fn observation(&self) -> MutexGuard<'_, Observation> {
        // A panic while holding this lock cannot leave the observation half-written (it is
        // replaced whole), so a poisoned lock is still usable.
        self.observation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the Lease and acquires, renews or backs off as [`decide`] says.
    async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let started = Instant::now();
        let current = self.api.get_opt(&self.config.name).await?;
        let now = Instant::now();
        let spec = current.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        let observed_at = self.observation().observe(spec.as_ref(), now);
        let decision = decide(
            &self.config.identity,
            spec.as_ref(),
            observed_at,
            now,
            self.config.lease_duration,
        );
        let Some(desired) = desired_spec(&self.config, spec.as_ref(), &decision, Timestamp::now())
        else {
            if let Decision::Wait { holder, .. } = decision {
                return Ok(Attempt::HeldBy(holder));
            }
            return Ok(Attempt::Conflict);
        };
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(desired),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // The resourceVersion read above stays in the metadata: the apiserver rejects
                // the replace with a conflict if anyone wrote in between.
                lease.spec = Some(desired);
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                let mut observation = self.observation();
                observation.observe(lease.spec.as_ref(), Instant::now());
                observation.renewed_at = Some(started);
                drop(observation);
                self.gate.renewed(started, self.config.renew_deadline);
                if !matches!(decision, Decision::Renew) {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "acquired leadership");
                }
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                Ok(Attempt::Conflict)
            }
            Err(error) => Err(error),
        }
    }

    /// Renews until leadership is lost, then reports it.
    async fn renew_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let last_renewed = self.observation().renewed_at.unwrap_or_else(Instant::now);
            let deadline = last_renewed + self.config.renew_deadline;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let lost = match tokio::time::timeout(remaining, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Held)) => false,
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    tracing::warn!(%holder, "another candidate holds the lease");
                    true
                }
                Ok(Ok(Attempt::Conflict)) => Instant::now() >= deadline,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "failed to renew the leader election lease");
                    Instant::now() >= deadline
                }
                Err(_elapsed) => true,
            };
            if lost {
                self.gate.revoke();
                tracing::warn!(lease = %self.config.name, "lost leadership");
                self.leader.send_replace(false);
                return;
            }
        }
    }
}

/// One candidate in the election for a Lease.
#[derive(Debug)]
pub struct LeaderElector {
    shared: Arc<Shared>,
    renewing: Mutex<Option<AbortHandle>>,
}

impl LeaderElector {
    /// Creates a candidate; nothing is read or written until [`LeaderElector::acquire`].
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self::with_gate(client, config, LeaderGate::closed())
    }

    /// Like [`LeaderElector::new`], recording leadership in `gate` (created before the
    /// client, whose write fence checks it).
    pub fn with_gate(client: kube::Client, config: LeaseConfig, gate: LeaderGate) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        let (leader, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                api,
                config,
                observation: Mutex::new(Observation::default()),
                leader,
                gate,
            }),
            renewing: Mutex::new(None),
        }
    }

    /// Waits until this candidate holds the Lease, trying every `retry_period` (with jitter).
    ///
    /// Transient apiserver errors (timeouts, 5xx, 429, conflicts) are logged and retried, as in
    /// client-go, because an operator that cannot reach the apiserver has nothing better to do.
    /// It returns an error only for an invalid config or an answer retrying cannot fix (401,
    /// 403, 400, 422: missing RBAC or a bad Lease name), so that shows up as a crash with a
    /// clear message. To stop waiting on shutdown, drop the future: it is cancel-safe.
    pub async fn acquire(&self) -> Result<(), LeaderError> {
        self.shared.config.validate()?;
        loop {
            match self.shared.try_acquire_or_renew().await {
                Ok(Attempt::Held) => {
                    self.shared.leader.send_replace(true);
                    // Renew from this instant on: a gap before the caller subscribes could
                    // outlast the renew deadline while we still believe we lead.
                    self.start_renewing();
                    return Ok(());
                }
                Ok(Attempt::HeldBy(holder)) => {
                    tracing::debug!(%holder, "waiting for the leader election lease");
                }
                Ok(Attempt::Conflict) => {}
                Err(error) if is_permanent(&error) => return Err(LeaderError::Lease(error)),
                Err(error) => {
                    tracing::warn!(%error, "failed to read or write the leader election lease");
                }
            }
            tokio::time::sleep(jittered(self.shared.config.retry_period)).await;
        }
    }

    /// The fence every write of this replica passes: valid only while leadership is.
    pub fn gate(&self) -> LeaderGate {
        self.shared.gate.clone()
    }

    /// Whether this candidate currently believes it is the leader.
    pub fn is_leader(&self) -> bool {
        *self.shared.leader.borrow()
    }

    /// The leadership signal of this candidate. [`LeaderElector::acquire`] already started
    /// renewing in a background task; the receiver holds `true` while this candidate leads and
    /// turns `false` when leadership is lost (another holder, or no renewal within the renew
    /// deadline) or given up; then the operator must stop writing (it exits, like
    /// controller-runtime). Before `acquire` succeeded it reads `false`.
    pub fn keep_renewing(&self) -> watch::Receiver<bool> {
        self.shared.leader.subscribe()
    }

    fn start_renewing(&self) {
        let mut renewing = lock(&self.renewing);
        if let Some(previous) = renewing.take() {
            previous.abort();
        }
        let task = tokio::spawn(self.shared.clone().renew_loop());
        *renewing = Some(task.abort_handle());
    }

    /// Stops renewing without releasing: the Lease then expires after its duration. This is
    /// what a crashed or partitioned leader looks like to the others.
    pub fn stop_renewing(&self) {
        if let Some(task) = lock(&self.renewing).take() {
            task.abort();
        }
        self.shared.gate.revoke();
        self.shared.leader.send_replace(false);
    }

    /// Gives the Lease up (graceful shutdown): stops renewing and clears `holderIdentity`, so
    /// a successor takes over at its next retry. Does nothing if another candidate holds it.
    pub async fn release(&self) -> Result<(), LeaderError> {
        self.stop_renewing();
        let api = &self.shared.api;
        let config = &self.shared.config;
        let mut last_conflict = None;
        // A conflict means the Lease changed since we read it (a racing renewal cannot be ours
        // any more, but a candidate may have taken it over); read again and re-check.
        for _ in 0..3 {
            let Some(mut lease) = api
                .get_opt(&config.name)
                .await
                .map_err(LeaderError::Release)?
            else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
                return Ok(());
            }
            let now = MicroTime(Timestamp::now());
            spec.holder_identity = None;
            // As client-go does: a one-second duration and a fresh renewTime, so even a
            // candidate that ignores the empty holder takes over almost at once.
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now.clone());
            spec.acquire_time = Some(now);
            match api
                .replace(&config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    tracing::info!(lease = %config.name, identity = %config.identity, "released leadership");
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    last_conflict = Some(kube::Error::Api(status));
                }
                Err(error) => return Err(LeaderError::Release(error)),
            }
        }
        match last_conflict {
            Some(error) => Err(LeaderError::Release(error)),
            None => Ok(()),
        }
    }
}

impl Drop for LeaderElector {
    fn drop(&mut self) {
        // Renewing for an elector nobody holds would keep a leadership nobody acts on.
        if let Some(task) = lock(&self.renewing).take() {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Errors that retrying will not fix: the request itself or our permissions are wrong.
fn is_permanent(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 400 | 401 | 403 | 422),
        _ => false,
    }
}

/// `period` plus up to 20 % of it, so candidates started together do not retry in lockstep.
fn jittered(period: Duration) -> Duration {
    period.mul_f64(1.0 + rand::random::<f64>() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("test", "Test")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn only_errors_a_retry_cannot_fix_stop_the_acquire_loop() {
        for code in [400, 401, 403, 422] {
            assert!(is_permanent(&api_error(code)), "{code}");
        }
        for code in [404, 409, 429, 500, 503, 504] {
            assert!(!is_permanent(&api_error(code)), "{code}");
        }
    }

    #[test]
    fn retries_are_jittered_by_up_to_a_fifth() {
        let period = Duration::from_millis(1000);
        for _ in 0..100 {
            let d = jittered(period);
            assert!(d >= period && d <= Duration::from_millis(1200), "{d:?}");
        }
    }

    #[test]
    fn an_invalid_config_is_reported_with_its_problem_as_the_cause() {
        let error = LeaderError::from(InvalidConfig("renew deadline must be longer"));
        assert_eq!(error.to_string(), "invalid leader election config");
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("renew deadline must be longer"));
        assert_eq!(error.category(), "config");
    }
}
