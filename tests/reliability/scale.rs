//! The size knob of the suite: `RELIABILITY_SCALE=ci` (the default, small enough for the test
//! command on a 2-core machine) or `full` (the documented run: 200 tokens, at least 50 kills).

use std::time::Duration;

/// Environment variable that selects the size.
pub const SCALE_ENV: &str = "RELIABILITY_SCALE";

/// How big each scenario is.
#[derive(Debug, Clone)]
pub struct Scale {
    /// `ci` or `full`, printed in the table header.
    pub name: &'static str,
    /// Scenario 1: tokens in the rollout under ACS faults.
    pub fault_tokens: usize,
    /// Scenario 2: tokens (and kills) of the preview-mode crash run.
    pub crash_tokens: usize,
    pub crash_kills: usize,
    /// Scenario 2: tokens and kills of the GA-mode crash run (leaks are only counted there).
    pub ga_crash_tokens: usize,
    pub ga_crash_kills: usize,
    /// Scenario 2: the emulator's token lifetime, short enough that the kills span a rotation
    /// wave.
    pub crash_token_lifetime: Duration,
    /// Scenario 3: tokens in the rollout during which the apiserver and etcd restart.
    pub restart_tokens: usize,
    /// Scenario 4: users (one token each) in a namespace that is deleted.
    pub namespace_users: usize,
    /// Scenario 5: tokens in the rollout during which the leader is killed.
    pub leader_tokens: usize,
    /// Scenario 8: healthy tokens renewing next to broken ones (a wrong key), the emulator's
    /// token lifetime, the operator's back-off cap, and how long the broken ones are watched.
    pub healthy_tokens: usize,
    pub broken_tokens: usize,
    pub broken_token_lifetime: Duration,
    pub broken_backoff_cap: Duration,
    pub broken_window: Duration,
}

impl Scale {
    /// Reads [`SCALE_ENV`]; anything other than `full` is the CI size.
    pub fn from_env() -> Scale {
        match std::env::var(SCALE_ENV).as_deref() {
            Ok("full") => Scale::full(),
            Ok("ci") | Ok("") | Err(_) => Scale::ci(),
            Ok(other) => panic!("{SCALE_ENV}={other}: use ci or full"),
        }
    }

    pub fn ci() -> Scale {
        Scale {
            name: "ci",
            fault_tokens: 40,
            crash_tokens: 30,
            crash_kills: 12,
            ga_crash_tokens: 16,
            ga_crash_kills: 6,
            crash_token_lifetime: Duration::from_secs(40),
            restart_tokens: 40,
            namespace_users: 10,
            leader_tokens: 40,
            healthy_tokens: 40,
            broken_tokens: 20,
            broken_token_lifetime: Duration::from_secs(30),
            broken_backoff_cap: Duration::from_secs(10),
            broken_window: Duration::from_secs(90),
        }
    }

    pub fn full() -> Scale {
        Scale {
            name: "full",
            fault_tokens: 200,
            crash_tokens: 200,
            crash_kills: 50,
            ga_crash_tokens: 100,
            ga_crash_kills: 20,
            crash_token_lifetime: Duration::from_secs(60),
            restart_tokens: 200,
            namespace_users: 50,
            leader_tokens: 200,
            healthy_tokens: 200,
            broken_tokens: 100,
            broken_token_lifetime: Duration::from_secs(60),
            broken_backoff_cap: Duration::from_secs(300),
            broken_window: Duration::from_secs(300),
        }
    }

    /// Users for `tokens` tokens: every user has two tokens, so siblings share an identity.
    pub fn users_for(tokens: usize) -> usize {
        tokens.div_ceil(TOKENS_PER_USER)
    }

    /// How long a rollout of `objects` objects may take before a scenario gives up.
    pub fn converge_within(&self, objects: usize) -> Duration {
        Duration::from_secs(90 + objects as u64)
    }
}

/// Tokens per user in every rollout.
pub const TOKENS_PER_USER: usize = 2;
