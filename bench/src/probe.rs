//! The latency a user feels: from creating one CommunicationToken (its user already Ready) to
//! its Secret written, seen by a watch on the namespace's Secrets. Sequential samples on a
//! quiet operator; samples started at a fixed interval while a rollout keeps it busy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use acs_identity_operator::api::{CommunicationToken, CommunicationUser};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::Error;
use crate::workload::Workload;

/// The probe's user, one per probe namespace.
pub const USER: &str = "probe-user";

/// Latency samples and what they summarise to.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub took: Vec<Duration>,
    /// Samples started that saw no Secret before the deadline.
    pub missed: usize,
}

impl Samples {
    /// The `q` quantile (nearest rank), or `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let mut v = self.took.clone();
        v.sort();
        if v.is_empty() {
            return None;
        }
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1])
    }

    pub fn max(&self) -> Option<Duration> {
        self.took.iter().max().copied()
    }
}

/// When each Secret of a namespace was first seen, fed by one watch.
struct SeenSecrets {
    first: Mutex<HashMap<String, Instant>>,
    changed: Notify,
}

/// Creates probe tokens in one namespace and times their Secrets.
pub struct Probe {
    client: Client,
    ns: String,
    seen: Arc<SeenSecrets>,
    task: JoinHandle<()>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Probe {
    /// Starts the Secret watch of `ns` (the probe's user must exist and be Ready).
    pub async fn start(client: &Client, ns: &str) -> Result<Probe, Error> {
        let seen = Arc::new(SeenSecrets {
            first: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        });
        let (synced_tx, mut synced) = watch::channel(false);
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default());
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let name = match ev {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o.name_any(),
                    Ok(watcher::Event::InitDone) => {
                        let _ = synced_tx.send(true);
                        continue;
                    }
                    _ => continue,
                };
                let now = Instant::now();
                s.first
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(name)
                    .or_insert(now);
                s.changed.notify_waiters();
            }
        });
        tokio::time::timeout(Duration::from_secs(60), synced.wait_for(|s| *s))
            .await
            .map_err(|_| Error::Timeout {
                what: "the probe's Secret watch".into(),
                after: Duration::from_secs(60),
            })?
            .map_err(|_| Error::Timeout {
                what: "the probe's Secret watch".into(),
                after: Duration::ZERO,
            })?;
        Ok(Probe {
            client: client.clone(),
            ns: ns.to_string(),
            seen,
            task,
        })
    }

    /// One sample: creates token `name` for the probe user and waits for its Secret.
    async fn sample(
        client: Client,
        ns: String,
        seen: Arc<SeenSecrets>,
        name: String,
        deadline: Duration,
    ) -> Result<Option<Duration>, Error> {
        let w = Workload::new("probe-", 1, 1);
        let mut token = w.token(0);
        token.metadata.name = Some(name.clone());
        token.spec.user_ref.name = USER.to_string();
        let api: Api<CommunicationToken> = Api::namespaced(client, &ns);
        let start = Instant::now();
        api.create(&PostParams::default(), &token)
            .await
            .map_err(Error::kube("create a probe token"))?;
        let secret = token.secret_name();
        let until = start + deadline;
        loop {
            let notified = seen.changed.notified();
            if let Some(at) = seen
                .first
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&secret)
            {
                return Ok(Some(at.saturating_duration_since(start)));
            }
            if tokio::time::timeout_at(until.into(), notified)
                .await
                .is_err()
            {
                return Ok(None);
            }
        }
    }

    /// `n` samples one after another (named `{prefix}{i}`), each waited for.
    pub async fn sequential(
        &self,
        prefix: &str,
        n: usize,
        deadline: Duration,
    ) -> Result<Samples, Error> {
        let mut out = Samples::default();
        for i in 0..n {
            let name = format!("{prefix}{i:04}");
            match Self::sample(
                self.client.clone(),
                self.ns.clone(),
                self.seen.clone(),
                name,
                deadline,
            )
            .await?
            {
                Some(d) => out.took.push(d),
                None => out.missed += 1,
            }
        }
        Ok(out)
    }

    /// Starts a sample every `every` until `stop` turns true or `n` were started; each is
    /// timed on its own, so a sample that waits behind a backlog does not delay the next.
    pub async fn at_interval(
        &self,
        prefix: &str,
        n: usize,
        every: Duration,
        deadline: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Samples, Error> {
        let mut set = JoinSet::new();
        let mut tick = tokio::time::interval(every);
        for i in 0..n {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            if *stop.borrow() {
                break;
            }
            set.spawn(Self::sample(
                self.client.clone(),
                self.ns.clone(),
                self.seen.clone(),
                format!("{prefix}{i:04}"),
                deadline,
            ));
        }
        let mut out = Samples::default();
        while let Some(r) = set.join_next().await {
            match r.map_err(Error::Worker)?? {
                Some(d) => out.took.push(d),
                None => out.missed += 1,
            }
        }
        Ok(out)
    }
}

/// Creates the probe's user in `ns` and waits until it has an identity.
pub async fn ready_user(client: &Client, ns: &str, deadline: Duration) -> Result<(), Error> {
    let api: Api<CommunicationUser> = Api::namespaced(client.clone(), ns);
    let mut user = Workload::new("probe-", 1, 0).user(0);
    user.metadata.name = Some(USER.to_string());
    match api.create(&PostParams::default(), &user).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(Error::kube("create the probe's user")(e)),
    }
    let until = Instant::now() + deadline;
    loop {
        let u = api
            .get(USER)
            .await
            .map_err(Error::kube("read the probe's user"))?;
        if u.identity_id().is_some() {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(Error::Timeout {
                what: "the probe's user to have an identity".into(),
                after: deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let s = Samples {
            took: (1..=200).rev().map(Duration::from_millis).collect(),
            missed: 0,
        };
        assert_eq!(s.quantile(0.5), Some(Duration::from_millis(100)));
        assert_eq!(s.quantile(0.99), Some(Duration::from_millis(198)));
        assert_eq!(s.max(), Some(Duration::from_millis(200)));
        assert_eq!(Samples::default().quantile(0.5), None);
    }
}
