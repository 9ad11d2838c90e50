//! Phase 8, renewal under the real limits with faults: the emulator's service limits on, the
//! operator with its default ACS budget, tokens short-lived enough to renew during the run,
//! and a few permanently failing tokens beside them (every issue for their identities answers
//! 500). Measures how late each healthy token is renewed against the `renewalTime` its status
//! promised, the 429s, and what the failing tokens cost ACS per minute.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use acs_identity_operator::api::{CommunicationToken, CommunicationUser};
use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::error::Error;
use crate::operator::Operator;
use crate::phases::Env;
use crate::workload::{self, Workload};

/// What the phase measured.
#[derive(Debug, Clone)]
pub struct RenewalRun {
    pub users: usize,
    pub tokens: usize,
    pub failing: usize,
    pub lifetime: Duration,
    /// From creating the objects to every healthy token's first issuance.
    pub first_issue: Duration,
    /// Healthy tokens renewed (revision 2 seen) before the deadline.
    pub renewed: usize,
    /// Seconds from each renewal's promised `renewalTime` to the new token seen by watch.
    pub lateness: Vec<f64>,
    pub acs_calls: u64,
    pub throttled: u64,
    /// Issue calls answered 500: the failing tokens' (only their identities fail).
    pub failing_calls: u64,
    /// Over which the failing tokens' calls were counted.
    pub failing_window: Duration,
}

impl RenewalRun {
    /// The `q` quantile of the lateness (nearest rank), in seconds.
    pub fn lateness_quantile(&self, q: f64) -> Option<f64> {
        let mut v = self.lateness.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return None;
        }
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1])
    }

    pub fn failing_per_minute(&self) -> f64 {
        self.failing_calls as f64 * 60.0 / self.failing_window.as_secs_f64().max(1e-9)
    }
}

/// Per healthy token: the renewal its first issuance promised, and when the renewal was seen.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    promised: Option<SystemTime>,
    renewed_at: Option<SystemTime>,
}

/// The counts (issued, renewed), the task that returns each token's times, and its stop.
type RenewalWatch = (
    watch::Receiver<(usize, usize)>,
    tokio::task::JoinHandle<HashMap<String, Seen>>,
    watch::Sender<bool>,
);

/// Watches the tokens of `ns`; publishes (issued, renewed) counts and keeps each token's times.
fn watch_renewals(client: &Client, ns: &str) -> RenewalWatch {
    let api: Api<CommunicationToken> = Api::namespaced(client.clone(), ns);
    let (tx, rx) = watch::channel((0, 0));
    let (stop_tx, mut stop) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut seen: HashMap<String, Seen> = HashMap::new();
        let stream = watcher(api, watcher::Config::default());
        futures::pin_mut!(stream);
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                _ = stop.wait_for(|s| *s) => break,
            };
            let Some(ev) = ev else { break };
            let o = match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                _ => continue,
            };
            let Some(st) = &o.status else { continue };
            let e = seen.entry(o.name_any()).or_default();
            if st.revision == 1 && e.promised.is_none() {
                e.promised = st.renewal_time.as_ref().map(|t| SystemTime::from(t.0));
            }
            if st.revision >= 2 && e.renewed_at.is_none() {
                e.renewed_at = Some(SystemTime::now());
            }
            let issued = seen.values().filter(|s| s.promised.is_some()).count();
            let renewed = seen.values().filter(|s| s.renewed_at.is_some()).count();
            let _ = tx.send((issued, renewed));
        }
        seen
    });
    (rx, task, stop_tx)
}

/// Creates `users` users in `ns` and waits until each has an identity; returns the ids.
async fn identities(
    client: &Client,
    ns: &str,
    w: &Workload,
    deadline: Duration,
) -> Result<Vec<String>, Error> {
    let api: Api<CommunicationUser> = Api::namespaced(client.clone(), ns);
    Workload::new(&w.prefix, w.users, 0)
        .create(client, ns, 8)
        .await?;
    // Workload::new keeps at least one user; `w` names the same ones.
    let until = Instant::now() + deadline;
    loop {
        let ids: Vec<String> = api
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("list the failing users"))?
            .items
            .iter()
            .filter_map(|u| u.identity_id().map(str::to_string))
            .collect();
        if ids.len() >= w.users {
            return Ok(ids);
        }
        if Instant::now() >= until {
            return Err(Error::Timeout {
                what: "the failing tokens' users to have identities".into(),
                after: deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the (issued, renewed) counts satisfy `want`.
async fn wait_counts(
    counts: &mut watch::Receiver<(usize, usize)>,
    want: impl Fn(&(usize, usize)) -> bool,
    what: &str,
    limit: Duration,
) -> Result<(), Error> {
    let timeout = || Error::Timeout {
        what: what.into(),
        after: limit,
    };
    tokio::time::timeout(limit, counts.wait_for(want))
        .await
        .map_err(|_| timeout())?
        .map(|_| ())
        .map_err(|_| timeout())
}

/// What phase 8 runs.
pub struct RenewalPlan {
    pub users: usize,
    pub tokens: usize,
    pub failing: usize,
    pub lifetime: Duration,
}

/// Runs phase 8 with the operator's default flags (budget included).
pub async fn run(env: &Env, plan: &RenewalPlan) -> Result<RenewalRun, Error> {
    let (ns, fail_ns) = ("bench-renew", "bench-renew-fail");
    for n in [ns, fail_ns] {
        workload::ensure_namespace(&env.client, n).await?;
        workload::create_credentials(&env.client, n, &env.emu.connection_string()).await?;
    }
    env.emu.set_rate_limits("default").await?;
    env.emu
        .set_token_lifetime(Some(plan.lifetime.as_secs()))
        .await?;
    env.emu.reset_stats().await?;
    let flags = vec!["--watch-namespaces".to_string(), format!("{ns},{fail_ns}")];
    let mut op = Operator::spawn(&env.spec, &flags)?;
    op.wait_ready(Duration::from_secs(120)).await?;

    // The failing tokens: their users get identities, then every issue for those fails.
    let failing = Workload::new("fail-", plan.failing.div_ceil(5).max(1), plan.failing);
    let ids = identities(&env.client, fail_ns, &failing, env.deadline).await?;
    env.emu
        .set_faults(serde_json::json!({
            "rate500": 1.0,
            "operations": ["issueAccessToken"],
            "identities": ids,
        }))
        .await?;
    let failing_since = Instant::now();
    let before = env.emu.stats().await?;
    failing.create_tokens(&env.client, fail_ns, 8).await?;

    let (mut counts, task, stop) = watch_renewals(&env.client, ns);
    let start = Instant::now();
    let w = Workload::new("", plan.users, plan.tokens);
    w.create(&env.client, ns, 32).await?;
    let result = async {
        wait_counts(
            &mut counts,
            |c| c.0 >= plan.tokens,
            "every healthy token's first issuance",
            env.deadline,
        )
        .await?;
        let first_issue = start.elapsed();
        op.ensure_running()?;
        // The last renewal is due at most a lifetime after the last issuance.
        wait_counts(
            &mut counts,
            |c| c.1 >= plan.tokens,
            "every healthy token's renewal",
            plan.lifetime + env.deadline,
        )
        .await?;
        Ok::<_, Error>(first_issue)
    }
    .await;
    let failing_window = failing_since.elapsed();
    let after = env.emu.stats().await?;
    let _ = stop.send(true);
    let seen = task.await.map_err(Error::Worker)?;
    op.stop().await?;
    env.emu.set_faults(serde_json::json!({})).await?;
    env.emu.set_token_lifetime(None).await?;
    env.emu.set_rate_limits("off").await?;
    let first_issue = result?;

    let lateness = seen
        .values()
        .filter_map(|s| {
            let (p, r) = (s.promised?, s.renewed_at?);
            Some(match r.duration_since(p) {
                Ok(late) => late.as_secs_f64(),
                Err(early) => -early.duration().as_secs_f64(),
            })
        })
        .collect::<Vec<_>>();
    let fails = |s: &crate::emulator::Stats| {
        s.operations
            .get("issueAccessToken")
            .and_then(|m| m.get("500"))
            .copied()
            .unwrap_or(0)
    };
    Ok(RenewalRun {
        users: plan.users,
        tokens: plan.tokens,
        failing: plan.failing,
        lifetime: plan.lifetime,
        first_issue,
        renewed: lateness.len(),
        lateness,
        acs_calls: after.total,
        throttled: after.throttled,
        failing_calls: fails(&after) - fails(&before),
        failing_window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_quantiles_and_failing_rate() {
        let r = RenewalRun {
            users: 1,
            tokens: 100,
            failing: 1,
            lifetime: Duration::from_secs(60),
            first_issue: Duration::from_secs(1),
            renewed: 100,
            lateness: (0..100).map(|i| f64::from(i) / 10.0 - 1.0).collect(),
            acs_calls: 0,
            throttled: 0,
            failing_calls: 30,
            failing_window: Duration::from_secs(120),
        };
        let near = |q: f64, want: f64| {
            let got = r.lateness_quantile(q).unwrap();
            assert!((got - want).abs() < 1e-9, "q{q}: {got} != {want}");
        };
        near(0.99, 8.8);
        near(0.5, 3.9);
        near(1.0, 8.9);
        assert_eq!(r.failing_per_minute(), 15.0);
    }
}
