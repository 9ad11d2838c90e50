//! Counting Ready objects by watch: a watcher per kind keeps a name → ready map and publishes
//! the count, so "all Ready" is seen the moment the last status lands (no polling of lists).

use std::collections::HashMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use acs_identity_operator::api::condition::types;
use acs_identity_operator::api::{CommunicationToken, CommunicationUser, ConditionExt};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Error;

/// Counts of one kind: objects seen and objects Ready, after the initial list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub synced: bool,
    pub seen: usize,
    pub ready: usize,
}

/// Watches users and tokens of one namespace.
pub struct ReadyWatch {
    users: watch::Receiver<Count>,
    tokens: watch::Receiver<Count>,
    tasks: Vec<JoinHandle<()>>,
}

/// Whether a user is Ready; `None` for the latency probe's, which is not the workload's.
fn user_ready(u: &CommunicationUser) -> Option<bool> {
    (u.name_any() != crate::probe::USER).then(|| {
        u.status
            .as_ref()
            .is_some_and(|s| s.conditions.is_true(types::READY))
    })
}

/// Whether a token is Ready; `None` for the latency probe's.
fn token_ready(t: &CommunicationToken) -> Option<bool> {
    (t.spec.user_ref.name != crate::probe::USER).then(|| {
        t.status
            .as_ref()
            .is_some_and(|s| s.conditions.is_true(types::READY))
    })
}

fn spawn_counter<K>(
    api: Api<K>,
    is_ready: fn(&K) -> Option<bool>,
) -> (watch::Receiver<Count>, JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (tx, rx) = watch::channel(Count::default());
    let task = tokio::spawn(async move {
        let mut state: HashMap<String, bool> = HashMap::new();
        let mut init: HashMap<String, bool> = HashMap::new();
        let mut synced = false;
        let stream = watcher(api, watcher::Config::default());
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else {
                // The watcher re-lists by itself after an error.
                continue;
            };
            match ev {
                watcher::Event::Init => init.clear(),
                watcher::Event::InitApply(o) => {
                    if let Some(r) = is_ready(&o) {
                        init.insert(o.name_any(), r);
                    }
                }
                watcher::Event::InitDone => {
                    state = std::mem::take(&mut init);
                    synced = true;
                }
                watcher::Event::Apply(o) => {
                    if let Some(r) = is_ready(&o) {
                        state.insert(o.name_any(), r);
                    }
                }
                watcher::Event::Delete(o) => {
                    state.remove(&o.name_any());
                }
            }
            if synced {
                let ready = state.values().filter(|r| **r).count();
                let _ = tx.send(Count {
                    synced,
                    seen: state.len(),
                    ready,
                });
            }
        }
    });
    (rx, task)
}

impl ReadyWatch {
    /// Starts watching `ns` and waits until both initial lists are in.
    pub async fn start(client: &Client, ns: &str) -> Result<ReadyWatch, Error> {
        let (users, t1) =
            spawn_counter::<CommunicationUser>(Api::namespaced(client.clone(), ns), user_ready);
        let (tokens, t2) =
            spawn_counter::<CommunicationToken>(Api::namespaced(client.clone(), ns), token_ready);
        let mut w = ReadyWatch {
            users,
            tokens,
            tasks: vec![t1, t2],
        };
        w.wait(
            |u, t| u.synced && t.synced,
            Duration::from_secs(60),
            "the initial lists",
        )
        .await?;
        Ok(w)
    }

    /// Current counts (users, tokens).
    pub fn counts(&self) -> (Count, Count) {
        (*self.users.borrow(), *self.tokens.borrow())
    }

    /// Waits until `done(users, tokens)`; returns the instant it became true.
    pub async fn wait(
        &mut self,
        done: impl Fn(&Count, &Count) -> bool,
        deadline: Duration,
        what: &str,
    ) -> Result<Instant, Error> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            {
                let (u, t) = (
                    *self.users.borrow_and_update(),
                    *self.tokens.borrow_and_update(),
                );
                if done(&u, &t) {
                    return Ok(Instant::now());
                }
            }
            let changed = async {
                tokio::select! {
                    r = self.users.changed() => r,
                    r = self.tokens.changed() => r,
                }
            };
            match tokio::time::timeout_at(until, changed).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    let (u, t) = self.counts();
                    return Err(Error::Timeout {
                        what: format!(
                            "{what} (users ready {}/{}, tokens ready {}/{})",
                            u.ready, u.seen, t.ready, t.seen
                        ),
                        after: deadline,
                    });
                }
            }
        }
    }

    /// Waits until every one of `users` users and `tokens` tokens is Ready.
    pub async fn all_ready(
        &mut self,
        users: usize,
        tokens: usize,
        deadline: Duration,
    ) -> Result<Instant, Error> {
        self.wait(
            |u, t| u.ready >= users && t.ready >= tokens,
            deadline,
            "every object to be Ready",
        )
        .await
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
