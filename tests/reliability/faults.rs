//! Scenario 1: a token rollout while ACS answers 30% 429 (with `Retry-After`), 10% 5xx and adds
//! 200 ms to every request. Every token must become Ready, the emulator must hold exactly one
//! live identity per CommunicationUser, and the request rate the emulator saw must stay inside
//! the operator's configured budget in every window.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use acs_emulator::EmulatorConfig;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::fleet::{self, census, create_fleet, judge_secrets, spawn, Admin, Stage, SuiteRef};
use crate::report::human;

pub const NAME: &str = "1. ACS faults";

/// The operator's ACS request budget in this scenario: low enough that it, not the faults,
/// bounds the request rate.
const RPS: f64 = 20.0;
const BURST: u32 = 10;
/// Allowed difference between when the operator sent a request and when the emulator counted
/// it (the injected 200 ms plus scheduling on a busy machine).
const SLACK: Duration = Duration::from_secs(1);

pub async fn run(suite: SuiteRef) {
    let scale = suite.scale.clone();
    let stage = Stage::new(&suite, "rel-faults", EmulatorConfig::default()).await;
    let (users, tokens) = create_fleet(&stage.env, scale.fault_tokens).await;
    stage
        .admin
        .set_faults(json!({
            "latencyMs": 200,
            "rate429": 0.30,
            "rate500": 0.05,
            "rate503": 0.05,
            "retryAfterSeconds": 1,
        }))
        .await;
    stage.admin.reset_stats().await;

    let sampler = Sampler::start(stage.admin.clone());
    let rps = RPS.to_string();
    let burst = BURST.to_string();
    let mut op = spawn(
        &suite,
        stage.args(
            "op-faults",
            &[
                "--acs-requests-per-second",
                &rps,
                "--acs-request-burst",
                &burst,
            ],
        ),
    );
    let took = fleet::wait_tokens_ready(
        &stage.env,
        tokens,
        scale.converge_within(users + tokens) * 2,
    )
    .await;
    let samples = sampler.stop();
    let stats = stage.admin.stats().await;
    stage.admin.clear_faults().await;

    let (ready, _) = fleet::token_readiness(&stage.env).await.expect("tokens");
    suite.check(NAME, "tokens Ready", tokens, ready, ready == tokens);
    let users_ready = fleet::users_ready(&stage.env).await.expect("users");
    suite.check(
        NAME,
        "users Ready",
        users,
        users_ready,
        users_ready == users,
    );
    suite.figure(NAME, "time until every token was Ready", human(took));

    let c = census(&stage.env, &stage.acs).await;
    suite.check(
        NAME,
        "live identities in ACS = CommunicationUsers",
        users,
        format!("{} identities, {} users", c.live, c.users),
        c.live == c.users && c.users == users,
    );
    suite.check(
        NAME,
        "users without a live identity / identities shared",
        "0 / 0",
        format!("{} / {}", c.unbacked.len(), c.shared),
        c.unbacked.is_empty() && c.shared == 0,
    );
    let (checked, invalid) = judge_secrets(&suite, &stage.env, &stage.acs).await;
    suite.check(
        NAME,
        "token Secrets whose token the emulator rejects",
        format!("0 of {tokens}"),
        format!("{} of {checked} {:?}", invalid.len(), invalid),
        invalid.is_empty() && checked == tokens,
    );

    let injected = &stats["injected"];
    let n = |k: &str| injected[k].as_u64().unwrap_or(0);
    let total = stats["total"].as_u64().unwrap_or(0);
    suite.check(
        NAME,
        "faults injected (429 / 5xx / delayed)",
        "all > 0",
        format!(
            "{} / {} / {} of {total} requests",
            n("429"),
            n("500") + n("503"),
            n("latency")
        ),
        n("429") > 0 && n("500") + n("503") > 0,
    );

    let rate = analyse(&samples);
    suite.check(
        NAME,
        "ACS requests in any window (sampled every 100 ms)",
        format!("≤ {BURST} + {RPS}/s × (window + {}s)", SLACK.as_secs()),
        format!(
            "worst window at {:.0}% of its bound ({} requests in {:.2} s)",
            rate.worst_ratio * 100.0,
            rate.worst_count,
            rate.worst_window
        ),
        rate.worst_ratio <= 1.0 && samples.len() > 10,
    );
    suite.figure(
        NAME,
        "peak ACS rate over windows of at least 1 s / mean rate",
        format!(
            "{:.1}/s / {:.1}/s (budget {RPS}/s, burst {BURST})",
            rate.peak_rate, rate.mean_rate
        ),
    );
    fleet::gather_evidence(&suite, &stage.env, Some(&op)).await;
    op.kill();
}

/// One reading of the emulator's request counter, bracketed by when it was asked and answered.
#[derive(Debug, Clone, Copy)]
struct Sample {
    sent: Instant,
    received: Instant,
    total: u64,
}

/// Reads `/_emulator/stats` every 100 ms in the background.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: JoinHandle<()>,
}

impl Sampler {
    fn start(admin: Admin) -> Sampler {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let sent = Instant::now();
                let stats = admin.stats().await;
                let received = Instant::now();
                let total = stats["total"].as_u64().unwrap_or(0);
                sink.lock().unwrap().push(Sample {
                    sent,
                    received,
                    total,
                });
            }
        });
        Sampler { samples, task }
    }

    fn stop(self) -> Vec<Sample> {
        self.task.abort();
        let s = self.samples.lock().unwrap().clone();
        s
    }
}

#[derive(Debug, Default)]
struct RateFigures {
    /// Largest count/bound over all windows.
    worst_ratio: f64,
    worst_count: u64,
    worst_window: f64,
    /// Largest count/length over windows of at least 1 s.
    peak_rate: f64,
    /// Requests over the time they were being sent.
    mean_rate: f64,
}

/// Every pair of samples bounds a window: the emulator counted `total_j - total_i` requests
/// between the two readings, which lie at most `received_j - sent_i` apart. A token bucket of
/// `BURST` refilled at `RPS` lets through at most `BURST + RPS × (window + SLACK)` in it.
fn analyse(samples: &[Sample]) -> RateFigures {
    let mut f = RateFigures::default();
    for (i, a) in samples.iter().enumerate() {
        for b in &samples[i + 1..] {
            let count = b.total.saturating_sub(a.total);
            let longest = b.received.duration_since(a.sent).as_secs_f64();
            let bound = f64::from(BURST) + RPS * (longest + SLACK.as_secs_f64());
            let ratio = count as f64 / bound;
            if ratio > f.worst_ratio {
                f.worst_ratio = ratio;
                f.worst_count = count;
                f.worst_window = longest;
            }
            let shortest = b.sent.duration_since(a.received).as_secs_f64();
            if shortest >= 1.0 {
                f.peak_rate = f.peak_rate.max(count as f64 / shortest);
            }
        }
    }
    let first = samples.iter().find(|s| s.total > 0);
    let last_total = samples.last().map_or(0, |s| s.total);
    let last = samples.iter().find(|s| s.total == last_total);
    if let (Some(a), Some(b)) = (first, last) {
        let secs = b.received.duration_since(a.sent).as_secs_f64();
        if secs > 0.0 {
            f.mean_rate = last_total as f64 / secs;
        }
    }
    f
}
