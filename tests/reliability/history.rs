//! Every token each Secret held, as seen by a watch from before the rollout to the end of a
//! scenario. A change of token in a Secret is one issuance that reached the cluster; comparing
//! its issue time with the renewal time of the token it replaced tells whether it was due.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use acs_identity_operator::rotation::{renewal_time, RenewalPolicy};
use acs_identity_operator::secret::annotations;
use futures::TryStreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use tokio::task::JoinHandle;

use crate::fleet::{managed_secrets, secret_token};
use crate::report::Suite;
use crate::support::TestEnv;

/// One token as a Secret recorded it.
#[derive(Debug, Clone)]
pub struct Held {
    pub token: String,
    pub issued_at: Timestamp,
    pub expires_on: Timestamp,
    pub revision: i64,
    /// UID of the owning CommunicationToken (the renewal jitter key).
    pub owner: String,
}

type Log = Arc<Mutex<BTreeMap<String, Vec<Held>>>>;

/// A watch on the namespace's token Secrets, recording each token change.
pub struct SecretHistory {
    log: Log,
    task: JoinHandle<()>,
}

impl SecretHistory {
    /// Starts watching; tokens seen become evidence for the leak scan.
    pub fn start(env: &TestEnv, suite: Arc<Suite>) -> SecretHistory {
        let api: Api<Secret> = env.api();
        let log: Log = Arc::default();
        let sink = log.clone();
        let task = tokio::spawn(async move {
            let cfg = watcher::Config::default().labels(&managed_secrets());
            let stream = watcher(api, cfg).default_backoff().applied_objects();
            let mut stream = std::pin::pin!(stream);
            // The stream only ends when the task is aborted; errors are retried by the backoff.
            while let Ok(Some(s)) = stream.try_next().await {
                let Some(held) = held(&s) else { continue };
                suite.add_token(&held.token);
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                let seen = log.entry(s.name_any()).or_default();
                if seen.last().map(|h| &h.token) != Some(&held.token) {
                    seen.push(held);
                }
            }
        });
        SecretHistory { log, task }
    }

    fn snapshot(&self) -> BTreeMap<String, Vec<Held>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Distinct tokens that reached a Secret.
    pub fn tokens_seen(&self) -> usize {
        self.snapshot().values().map(Vec::len).sum()
    }

    /// Secrets seen, and how many of them changed token at least `n - 1` times.
    pub fn secrets_with_at_least(&self, n: usize) -> usize {
        self.snapshot().values().filter(|v| v.len() >= n).count()
    }

    /// The most tokens any one Secret held.
    pub fn max_per_secret(&self) -> usize {
        self.snapshot().values().map(Vec::len).max().unwrap_or(0)
    }

    /// Replacements of a token before its renewal time (as the operator computes it from what
    /// the Secret records, with the default policy the fleets use), as `secret: detail`. The
    /// Secret records whole seconds, so one second of rounding is allowed.
    pub fn not_due(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, held) in self.snapshot() {
            for pair in held.windows(2) {
                let (old, new) = (&pair[0], &pair[1]);
                let due = renewal_time(
                    old.issued_at,
                    old.expires_on,
                    RenewalPolicy::Default,
                    &old.owner,
                );
                if new.issued_at + SignedDuration::from_secs(1) < due {
                    out.push(format!(
                        "{name}: revision {} issued at {} replaced revision {} due at {due}",
                        new.revision, new.issued_at, old.revision
                    ));
                }
            }
        }
        out
    }
}

impl Drop for SecretHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn held(s: &Secret) -> Option<Held> {
    let ann = s.metadata.annotations.as_ref()?;
    let data = s.data.as_ref()?;
    let issued_at: Timestamp = ann.get(annotations::ISSUED_AT)?.parse().ok()?;
    let expires_on: Timestamp = std::str::from_utf8(&data.get("expiresOn")?.0)
        .ok()?
        .parse()
        .ok()?;
    let revision = ann.get(annotations::REVISION)?.parse().ok()?;
    let owner = s
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))?
        .uid
        .clone();
    Some(Held {
        token: secret_token(s)?,
        issued_at,
        expires_on,
        revision,
        owner,
    })
}
