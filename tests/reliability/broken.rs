//! Scenario 8: broken objects next to healthy ones. A namespace's credentials are replaced by a
//! wrong key for the same resource, so every token there fails to issue (401) for good, while
//! the healthy namespace's tokens keep renewing. The broken tokens must back off (at most one
//! ACS call per back-off step after the first minute, up to the cap) and the healthy renewals
//! must stay on time (lateness p99 ≤ 5 s). Counted with the emulator's stats; lateness is the
//! time from a token's recorded renewal time to the issue time of its next revision.

use std::collections::HashMap;
use std::time::Duration;

use acs_emulator::EmulatorConfig;
use acs_identity_operator::api::CommunicationToken;
use kube::api::{Api, ListParams};
use tokio::time::Instant;

use crate::fleet::{self, spawn, Stage, SuiteRef};
use crate::harness::put_secret;

pub const NAME: &str = "8. Broken next to healthy";

/// Lateness of one renewal: seconds from the recorded renewal time to the next issue.
fn lateness(prev_renewal: jiff::Timestamp, issued: jiff::Timestamp) -> f64 {
    issued.duration_since(prev_renewal).as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(suite: SuiteRef) {
    let scale = suite.scale.clone();
    let lifetime = scale.broken_token_lifetime;
    let config = EmulatorConfig {
        token_lifetime_seconds: Some(lifetime.as_secs()),
        ..EmulatorConfig::default()
    };
    let healthy = Stage::new(&suite, "rel-healthy", config).await;
    let broken_env = crate::support::TestEnv::new("rel-broken").await;
    put_secret(
        &broken_env,
        "acs-credentials",
        "connectionString",
        &healthy.acs.connection_string(),
    )
    .await;
    let cap = format!("{}s", scale.broken_backoff_cap.as_secs());
    let mut args = healthy.args("op-broken", &["--failure-backoff-max", &cap]);
    args.namespaces.push(broken_env.ns().to_string());
    let mut op = spawn(&suite, args);
    op.wait_ready().await;
    fleet::create_fleet(&healthy.env, scale.healthy_tokens).await;
    fleet::create_fleet(&broken_env, scale.broken_tokens).await;
    fleet::wait_tokens_ready(
        &healthy.env,
        scale.healthy_tokens,
        scale.converge_within(scale.healthy_tokens),
    )
    .await;
    fleet::wait_tokens_ready(
        &broken_env,
        scale.broken_tokens,
        scale.converge_within(scale.broken_tokens),
    )
    .await;

    // Break them: the same resource, a key that is not its key. Every token there must
    // re-issue (the key changed) and every attempt answers 401.
    let wrong = healthy
        .acs
        .connection_string()
        .rsplit_once("accesskey=")
        .map(|(head, _)| format!("{head}accesskey=d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="))
        .expect("a connection string with a key");
    suite.add_key("d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==");
    let before = healthy.admin.stats().await["authFailures"]
        .as_u64()
        .unwrap_or(0);
    put_secret(&broken_env, "acs-credentials", "connectionString", &wrong).await;
    let broken_at = Instant::now();

    // Watch the healthy tokens renew for the whole window.
    let tokens: Api<CommunicationToken> = healthy.env.api();
    let mut last: HashMap<String, (i64, Option<jiff::Timestamp>)> = HashMap::new();
    let mut late = Vec::new();
    let mut renewed_tokens = std::collections::HashSet::new();
    let mut after_first_minute: Option<u64> = None;
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    while broken_at.elapsed() < scale.broken_window {
        ticks.tick().await;
        if after_first_minute.is_none() && broken_at.elapsed() >= Duration::from_secs(60) {
            after_first_minute = Some(
                healthy.admin.stats().await["authFailures"]
                    .as_u64()
                    .unwrap_or(0),
            );
        }
        let Ok(list) = tokens.list(&ListParams::default()).await else {
            continue;
        };
        for t in list.items {
            let Some(st) = t.status.as_ref() else {
                continue;
            };
            let name = t.metadata.name.clone().unwrap_or_default();
            let renewal = st.renewal_time.as_ref().map(|r| r.0);
            let entry = last.entry(name.clone()).or_insert((st.revision, renewal));
            if st.revision > entry.0 {
                renewed_tokens.insert(name);
                if let (Some(prev), Some(issued)) = (entry.1, st.last_rotation_time.as_ref()) {
                    late.push(lateness(prev, issued.0));
                }
                *entry = (st.revision, renewal);
            }
        }
    }
    let end = healthy.admin.stats().await["authFailures"]
        .as_u64()
        .unwrap_or(0);
    let total_401 = end - before;
    late.sort_by(|a, b| a.total_cmp(b));
    let p99 = percentile(&late, 0.99);
    suite.figure(
        NAME,
        "tokens: healthy / broken (wrong key) / token lifetime / back-off cap / window",
        format!(
            "{} / {} / {} / {} / {}",
            scale.healthy_tokens,
            scale.broken_tokens,
            crate::report::human(lifetime),
            cap,
            crate::report::human(scale.broken_window)
        ),
    );
    suite.check(
        NAME,
        "healthy tokens that renewed in the window / renewals",
        format!("{} / ≥ {}", scale.healthy_tokens, scale.healthy_tokens),
        format!("{} / {}", renewed_tokens.len(), late.len()),
        renewed_tokens.len() == scale.healthy_tokens && late.len() >= scale.healthy_tokens,
    );
    suite.check(
        NAME,
        "renewal lateness p99 (p50 / max)",
        "≤ 5 s",
        format!(
            "{p99:.1} s ({:.1} s / {:.1} s)",
            percentile(&late, 0.5),
            late.last().copied().unwrap_or(0.0)
        ),
        p99 <= 5.0,
    );
    // After the first minute a broken token makes at most one call per back-off step; the
    // steps are jittered within [cap/2, cap), so per minute at most 60 / (cap / 2) + 1.
    let after = after_first_minute.map_or(0, |a| end - a);
    let minutes_after = (scale.broken_window.as_secs_f64() - 60.0).max(1.0) / 60.0;
    let per_object_minute = after as f64 / scale.broken_tokens as f64 / minutes_after;
    let bound = 60.0 / (scale.broken_backoff_cap.as_secs_f64() / 2.0) + 1.0;
    suite.check(
        NAME,
        "ACS calls per broken token per minute after the first minute",
        format!("≤ {bound:.1}"),
        format!("{per_object_minute:.2} ({after} calls; {total_401} in the whole window)"),
        per_object_minute <= bound,
    );
    let running = op.is_running();
    suite.check(
        NAME,
        "operator still running",
        "yes",
        if running { "yes" } else { "no" },
        running,
    );
    op.stop();
}
