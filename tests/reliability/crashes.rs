//! Scenario 2: the operator is SIGKILLed at random moments, again and again, across a rollout
//! and a rotation wave (the emulator gives every token a short lifetime), first in preview api
//! mode (idempotent identity creation) and then in GA mode. After the last restart it must
//! converge with no leaked identity (preview), no Secret holding a token ACS rejects, and no
//! token replaced before it was due.

use std::time::Duration;

use acs_emulator::EmulatorConfig;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::fleet::{self, census, create_fleet, judge_secrets, spawn, Stage, SuiteRef};
use crate::history::SecretHistory;
use crate::report::human;

pub const NAME: &str = "2. Crashes";

/// Environment variable fixing the random kill delays (the seed is printed in the table).
pub const SEED_ENV: &str = "RELIABILITY_SEED";

/// The random moments: this long after a spawn, uniformly.
const MIN_DELAY_MS: u64 = 200;
const MAX_DELAY_MS: u64 = 3000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Preview,
    Ga,
}

impl Mode {
    fn flag(self) -> &'static str {
        match self {
            Mode::Preview => "preview",
            Mode::Ga => "ga",
        }
    }
}

pub async fn run(suite: SuiteRef) {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    suite.figure(
        NAME,
        "random seed of the kill delays",
        format!("{SEED_ENV}={seed}"),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let scale = suite.scale.clone();
    let preview = crash_run(
        &suite,
        Mode::Preview,
        scale.crash_tokens,
        scale.crash_kills,
        &mut rng,
    )
    .await;
    let ga = crash_run(
        &suite,
        Mode::Ga,
        scale.ga_crash_tokens,
        scale.ga_crash_kills,
        &mut rng,
    )
    .await;
    suite.check(
        NAME,
        "SIGKILLs in total",
        format!("≥ {}", scale.crash_kills + scale.ga_crash_kills),
        preview + ga,
        preview + ga >= scale.crash_kills + scale.ga_crash_kills,
    );
}

/// One crash run; returns the number of kills.
async fn crash_run(
    suite: &SuiteRef,
    mode: Mode,
    tokens: usize,
    min_kills: usize,
    rng: &mut rand::rngs::StdRng,
) -> usize {
    let m = mode.flag();
    let scale = suite.scale.clone();
    let lifetime = scale.crash_token_lifetime;
    let config = EmulatorConfig {
        token_lifetime_seconds: Some(lifetime.as_secs()),
        ..EmulatorConfig::default()
    };
    let stage = Stage::new(suite, &format!("rel-crash-{m}"), config).await;
    let history = SecretHistory::start(&stage.env, suite.clone());
    let (users, tokens) = create_fleet(&stage.env, tokens).await;
    // A budget that spreads the rollout over about 12 s, and a burst of 2 so that a restart
    // (which refills the bucket) does not finish it in one go: the kills then land inside it.
    let rps = ((users + tokens) as f64 / 12.0).max(1.0).to_string();
    let flags = [
        "--acs-api-mode",
        m,
        "--acs-requests-per-second",
        &rps,
        "--acs-request-burst",
        "2",
    ];

    // Kill until the minimum is reached and every Secret has been rotated at least once, so
    // the kills span the rollout and a full rotation wave.
    let started = Instant::now();
    let give_up = started + Duration::from_secs(min_kills as u64 * 5) + lifetime * 4;
    let (mut kills, mut self_exits, mut mid_rollout, mut mid_wave) = (0, 0, 0, 0);
    loop {
        let mut op = spawn(suite, stage.args(&format!("op-crash-{m}-{kills}"), &flags));
        let delay = Duration::from_millis(rng.random_range(MIN_DELAY_MS..=MAX_DELAY_MS));
        // The random moment of the crash: this wait is the point of the scenario.
        tokio::time::sleep(delay).await;
        if !op.is_running() {
            self_exits += 1;
        }
        op.kill();
        kills += 1;
        let issued = history.secrets_with_at_least(1);
        let rotated = history.secrets_with_at_least(2);
        if issued < tokens {
            mid_rollout += 1;
        } else if rotated > 0 && rotated < tokens {
            mid_wave += 1;
        }
        if kills >= min_kills && rotated >= tokens {
            break;
        }
        if Instant::now() > give_up {
            break;
        }
    }
    let kill_phase = started.elapsed();
    let what = |s: &str| format!("{m}: {s}");

    suite.check(
        NAME,
        &what("kills during the rollout / during the rotation wave / in total"),
        format!("≥ 1 / ≥ 1 / ≥ {min_kills}"),
        format!(
            "{mid_rollout} / {mid_wave} / {kills} in {}",
            human(kill_phase)
        ),
        mid_rollout >= 1 && mid_wave >= 1 && kills >= min_kills,
    );
    let rotated = history.secrets_with_at_least(2);
    suite.check(
        NAME,
        &what("Secrets rotated at least once while the kills went on"),
        tokens,
        rotated,
        rotated >= tokens,
    );
    suite.check(
        NAME,
        &what("operator processes that exited on their own"),
        0,
        self_exits,
        self_exits == 0,
    );

    // The last restart: it must converge.
    let mut op = spawn(suite, stage.args(&format!("op-crash-{m}-final"), &flags));
    let t = Instant::now();
    op.wait_ready().await;
    let ready_in = t.elapsed();
    fleet::wait_tokens_ready(&stage.env, tokens, scale.converge_within(users + tokens)).await;
    suite.figure(
        NAME,
        &what("last restart: ready (/readyz) / every token Ready"),
        format!("{} / {}", human(ready_in), human(t.elapsed())),
    );
    let (checked, invalid) = judge_secrets(suite, &stage.env, &stage.acs).await;
    suite.check(
        NAME,
        &what("Secrets holding a token ACS rejects at the end"),
        format!("0 of {tokens}"),
        format!("{} of {checked} {:?}", invalid.len(), invalid),
        invalid.is_empty() && checked == tokens,
    );
    let not_due = history.not_due();
    suite.check(
        NAME,
        &what("tokens replaced before they were due"),
        0,
        format!(
            "{} {:?}",
            not_due.len(),
            not_due.iter().take(3).collect::<Vec<_>>()
        ),
        not_due.is_empty(),
    );
    let c = census(&stage.env, &stage.acs).await;
    match mode {
        Mode::Preview => {
            suite.check(
                NAME,
                &what("leaked identities (live in ACS, recorded by no user)"),
                0,
                c.leaked,
                c.leaked == 0 && c.live == c.users,
            );
        }
        Mode::Ga => {
            suite.figure(
                NAME,
                &what("leaked identities (GA create is not idempotent)"),
                format!(
                    "{} of {} identities for {} users",
                    c.leaked, c.live, c.users
                ),
            );
        }
    }
    suite.check(
        NAME,
        &what("users without a live identity / identities shared by users"),
        "0 / 0",
        format!("{} / {}", c.unbacked.len(), c.shared),
        c.unbacked.is_empty() && c.shared == 0 && c.users == users,
    );
    suite.check(
        NAME,
        &what("revocations (nothing asked for one)"),
        0,
        c.revocations,
        c.revocations == 0,
    );
    let seen = history.tokens_seen() as u64;
    suite.figure(
        NAME,
        &what("tokens issued by ACS / that reached a Secret / renewals"),
        format!(
            "{} / {seen} / {} (the difference was lost to a kill between issue and Secret write)",
            c.tokens_issued,
            seen.saturating_sub(tokens as u64)
        ),
    );
    fleet::gather_evidence(suite, &stage.env, Some(&op)).await;
    op.kill();
    kills
}
