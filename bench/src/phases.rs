//! The phases that run the operator: a cold start to all Ready (phases 2 and 4), a quiet
//! minute (5), a restart (6), and the renewal spread read back from the tokens' status (7).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use acs_identity_operator::api::CommunicationToken;
use kube::api::{Api, ListParams};
use kube::Client;

use crate::cpu::CpuSnapshot;
use crate::emulator::{Emulator, Stats};
use crate::error::Error;
use crate::metrics::{Heap, Samples};
use crate::operator::{Operator, OperatorSpec, Usage};
use crate::probe::{self, Probe};
use crate::profile;
use crate::ready::ReadyWatch;
use crate::spread::{self, Spread};
use crate::workload::{self, Workload};

/// Names of the operator's controllers in its metrics.
const TOKEN_CONTROLLER: &str = "communicationtoken";
const USER_CONTROLLER: &str = "communicationuser";

/// What the phases share.
pub struct Env {
    pub client: Client,
    pub emu: Emulator,
    pub spec: OperatorSpec,
    /// Upper bound for any wait.
    pub deadline: Duration,
    /// The control plane's work directory (finds its processes for CPU accounting).
    pub cp_work_dir: PathBuf,
}

/// Figures of one cold start.
#[derive(Debug, Clone)]
pub struct ColdStart {
    pub users: usize,
    pub tokens: usize,
    /// Creating the objects before the operator starts (not part of `t_ready`).
    pub apply: Duration,
    /// From spawning the operator to `/readyz`.
    pub readyz: Duration,
    /// From spawning the operator to every object Ready (seen by watch).
    pub t_ready: Duration,
    /// Until the operator made no more requests (follow-up reconciles done).
    pub settled: Duration,
    pub usage: Usage,
    /// ACS requests from the operator's start until settled.
    pub acs: Stats,
    /// The operator's apiserver requests by verb, until settled.
    pub kube: BTreeMap<String, f64>,
    pub kube_total: f64,
    pub kube_writes: f64,
    pub reconciles_user: f64,
    pub reconciles_token: f64,
    /// CPU seconds by process from the operator's start to all Ready.
    pub cpu: CpuSnapshot,
    /// Apply-to-Secret samples taken while this cold start was in progress.
    pub probes: Option<probe::Samples>,
    /// The `perf` profile of the cold start, when one was recorded.
    pub profile: Option<profile::Profile>,
    /// The operator's allocator once settled: the live heap of every object cached, and the
    /// free memory it keeps.
    pub heap: Heap,
}

impl ColdStart {
    pub fn objects(&self) -> usize {
        self.users + self.tokens
    }
}

/// Apiserver requests that are neither watches nor lists: what the operator does per object.
fn activity(m: &Samples) -> f64 {
    m.kube_writes() + m.sum(crate::metrics::KUBE_REQUESTS, &[("verb", "get")])
}

/// Waits until the operator made no object request for `quiet` (checked every 250 ms).
async fn settle(op: &mut Operator, quiet: Duration, deadline: Duration) -> Result<Samples, Error> {
    let until = Instant::now() + deadline;
    let mut last = op.metrics().await?;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let m = op.metrics().await?;
        if activity(&m) != activity(&last) {
            since = Instant::now();
        }
        last = m;
        if since.elapsed() >= quiet {
            return Ok(last);
        }
        if Instant::now() >= until {
            return Err(Error::Timeout {
                what: "the operator to go quiet".into(),
                after: deadline,
            });
        }
    }
}

/// Samples taken while a cold start is in progress: one started every `every`, at most `n`.
pub struct Busy<'a> {
    pub probe: &'a Probe,
    pub n: usize,
    pub every: Duration,
}

/// What else runs during a cold start.
#[derive(Default)]
pub struct During<'a> {
    pub busy: Option<Busy<'a>>,
    /// Record a `perf` profile of the whole machine until every object is Ready.
    pub perf: bool,
}

/// Creates `w` in a new namespace `ns`, then starts the operator with `extra` flags and times
/// it until every object is Ready. The operator is left running.
pub async fn cold_start(
    env: &Env,
    ns: &str,
    w: &Workload,
    extra: &[String],
    during: During<'_>,
) -> Result<(Operator, ColdStart), Error> {
    workload::ensure_namespace(&env.client, ns).await?;
    workload::create_credentials(&env.client, ns, &env.emu.connection_string()).await?;
    let t0 = Instant::now();
    w.create(&env.client, ns, 32).await?;
    let apply = t0.elapsed();
    let mut watch = ReadyWatch::start(&env.client, ns).await?;
    env.emu.reset_stats().await?;

    let me = std::process::id();
    let cpu_before = CpuSnapshot::take(&env.cp_work_dir, &[("acs-bench", me)]);
    let perf = if during.perf {
        profile::Recording::start(&env.spec.log.with_file_name(format!("perf-{ns}")))
    } else {
        None
    };
    let mut op = Operator::spawn(&env.spec, extra)?;
    let started = op.started;
    let readyz = op.wait_ready(Duration::from_secs(120)).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let probing = async {
        match &during.busy {
            Some(b) => Some(
                b.probe
                    .at_interval("busy-", b.n, b.every, env.deadline, stop_rx)
                    .await,
            ),
            None => None,
        }
    };
    let ready = async {
        let r = watch.all_ready(w.users, w.tokens, env.deadline).await;
        let _ = stop_tx.send(true);
        r
    };
    let (probes, ready_at) = tokio::join!(probing, ready);
    let profile = perf.map(|p| p.finish(op.pid()));
    let ready_at = match ready_at {
        Ok(at) => at,
        Err(e) => {
            op.ensure_running()?;
            return Err(e);
        }
    };
    let probes = probes.transpose()?;
    let t_ready = ready_at.duration_since(started);
    let cpu = CpuSnapshot::take(
        &env.cp_work_dir,
        &[("acs-bench", me), ("operator", op.pid())],
    )
    .since(&cpu_before);
    let m = settle(&mut op, Duration::from_secs(3), env.deadline).await?;
    let settled = started.elapsed();
    let usage = op.usage()?;
    let acs = env.emu.stats().await?;
    Ok((
        op,
        ColdStart {
            users: w.users,
            tokens: w.tokens,
            apply,
            readyz,
            t_ready,
            settled,
            usage,
            acs,
            kube: m.kube_requests(),
            kube_total: m.kube_total(),
            kube_writes: m.kube_writes(),
            reconciles_user: m.reconciles(USER_CONTROLLER),
            reconciles_token: m.reconciles(TOKEN_CONTROLLER),
            cpu,
            probes,
            profile,
            heap: m.heap(),
        },
    ))
}

/// Figures of a quiet period.
#[derive(Debug, Clone)]
pub struct Steady {
    pub window: Duration,
    pub acs_calls: u64,
    pub writes: f64,
    pub gets: f64,
    pub reconciles: f64,
    /// The slowest of three scrapes of `/metrics` at the end (every object's series in it).
    pub scrape: Duration,
    /// Its size in bytes.
    pub scrape_bytes: usize,
    /// How far the scrapes raised the resident size (peak during them less before), KiB;
    /// `None` where the peak cannot be reset.
    pub scrape_rss_kib: Option<u64>,
}

/// Watches a running, settled operator for `window` with nothing due.
pub async fn steady(env: &Env, op: &mut Operator, window: Duration) -> Result<Steady, Error> {
    env.emu.reset_stats().await?;
    let before = op.metrics().await?;
    tokio::time::sleep(window).await;
    let after = op.metrics().await?;
    let acs = env.emu.stats().await?;
    // What the scrapes cost in memory: the peak RSS is reset to the current one first
    // (`clear_refs` 5), so the peak after them less the resident size before is theirs.
    let pid = op.pid();
    let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let status = |field| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| crate::operator::status_kib(&s, field))
    };
    let rss_before = status("VmRSS:");
    let (mut scrape, mut scrape_bytes) = (Duration::ZERO, 0);
    for _ in 0..3 {
        let (text, took) = op.scrape().await?;
        scrape = scrape.max(took);
        scrape_bytes = text.len();
    }
    let scrape_rss_kib = match (reset, rss_before, status("VmHWM:")) {
        (true, Some(before), Some(peak)) => Some(peak.saturating_sub(before)),
        _ => None,
    };
    let get = |m: &Samples| m.sum(crate::metrics::KUBE_REQUESTS, &[("verb", "get")]);
    let reconciles = |m: &Samples| m.reconciles(USER_CONTROLLER) + m.reconciles(TOKEN_CONTROLLER);
    Ok(Steady {
        window,
        acs_calls: acs.total,
        writes: after.kube_writes() - before.kube_writes(),
        gets: get(&after) - get(&before),
        reconciles: reconciles(&after) - reconciles(&before),
        scrape,
        scrape_bytes,
        scrape_rss_kib,
    })
}

/// Figures of a restart.
#[derive(Debug, Clone)]
pub struct Restart {
    pub readyz: Duration,
    /// Until every object was reconciled once by the new process.
    pub reverified: Duration,
    pub acs_calls: u64,
    pub writes: f64,
    pub gets: f64,
    /// Reconciles by the new process once it went quiet, per user and per token: above 1,
    /// objects woken more than once (a token by its own list and by its user's).
    pub reconciles: (f64, f64),
}

/// Stops the operator (SIGTERM), starts it again with the same flags, and waits until it has
/// reconciled every object once and gone quiet.
pub async fn restart(
    env: &Env,
    op: Operator,
    extra: &[String],
    users: usize,
    tokens: usize,
) -> Result<(Operator, Restart), Error> {
    op.stop().await?;
    env.emu.reset_stats().await?;
    let mut op = Operator::spawn(&env.spec, extra)?;
    let readyz = op.wait_ready(Duration::from_secs(120)).await?;
    let until = Instant::now() + env.deadline;
    let reverified = loop {
        let m = op.metrics().await?;
        if m.reconciles(USER_CONTROLLER) >= users as f64
            && m.reconciles(TOKEN_CONTROLLER) >= tokens as f64
        {
            break op.started.elapsed();
        }
        if Instant::now() >= until {
            return Err(Error::Timeout {
                what: "the restarted operator to reconcile every object".into(),
                after: env.deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let m = settle(&mut op, Duration::from_secs(3), env.deadline).await?;
    let acs = env.emu.stats().await?;
    Ok((
        op,
        Restart {
            readyz,
            reverified,
            acs_calls: acs.total,
            writes: m.kube_writes(),
            gets: m.sum(crate::metrics::KUBE_REQUESTS, &[("verb", "get")]),
            reconciles: (
                m.reconciles(USER_CONTROLLER) / users.max(1) as f64,
                m.reconciles(TOKEN_CONTROLLER) / tokens.max(1) as f64,
            ),
        },
    ))
}

/// The spread of the scheduled renewals of every token in `ns`.
pub async fn renewal_spread(client: &Client, ns: &str) -> Result<Option<Spread>, Error> {
    let tokens = Api::<CommunicationToken>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list the tokens"))?
        .items;
    let mut renewals = Vec::new();
    let mut lifetimes = Vec::new();
    for t in &tokens {
        let Some(s) = &t.status else { continue };
        if let Some(r) = &s.renewal_time {
            renewals.push(r.0);
        }
        if let (Some(e), Some(i)) = (&s.expires_on, &s.last_rotation_time) {
            lifetimes.push(e.0.duration_since(i.0).as_secs_f64());
        }
    }
    lifetimes.sort_by(f64::total_cmp);
    let lifetime = lifetimes
        .get(lifetimes.len() / 2)
        .copied()
        .unwrap_or(86_400.0)
        .max(0.0);
    Ok(spread::spread(&renewals, Duration::from_secs_f64(lifetime)))
}
