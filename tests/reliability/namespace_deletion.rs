//! Scenario 4: a namespace is deleted after its credentials Secret is already gone. Either the
//! operator still remembers the credentials (it read them while they existed) and deletes every
//! identity, or it was restarted in between, has nothing to sign with, and lets the finalizers
//! go after a bounded number of attempts (`IdentityNotDeleted`). Either way the namespace must
//! be gone within [`BOUND`]: nothing wedges.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use acs_emulator::EmulatorConfig;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::time::Instant;

use crate::fleet::{self, census, create_objects, poll, spawn, Stage, SuiteRef};
use crate::harness::Operator;
use crate::report::human;

pub const NAME: &str = "4. Namespace deletion";

/// The documented bound from the namespace delete call to the namespace being gone.
pub const BOUND: Duration = Duration::from_secs(120);

pub async fn run(suite: SuiteRef) {
    remembered(&suite).await;
    forgotten(&suite).await;
}

/// A namespace with `n` users (one token each), all Ready under a running operator.
async fn populated(suite: &SuiteRef, test: &str, identity: &str) -> (Stage, Operator, usize) {
    let n = suite.scale.namespace_users;
    let stage = Stage::new(suite, test, EmulatorConfig::default()).await;
    create_objects(&stage.env, n, n).await;
    let op = spawn(suite, stage.args(identity, &["--acs-api-mode", "preview"]));
    fleet::wait_tokens_ready(&stage.env, n, suite.scale.converge_within(2 * n)).await;
    (stage, op, n)
}

async fn delete_credentials(stage: &Stage) {
    let secrets: Api<Secret> = stage.env.api();
    secrets
        .delete("acs-credentials", &DeleteParams::default())
        .await
        .expect("delete the credentials Secret");
    poll(
        "the credentials Secret to be gone",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            match secrets.get_opt("acs-credentials").await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// Deletes the namespace and returns how long until it was gone, or what was left after
/// [`BOUND`].
async fn delete_namespace(stage: &Stage) -> Result<Duration, String> {
    let namespaces: Api<Namespace> = Api::all(stage.env.client.clone());
    let ns = stage.env.ns().to_string();
    let t = Instant::now();
    namespaces
        .delete(&ns, &DeleteParams::background())
        .await
        .expect("delete the namespace");
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticks.tick().await;
        let left = match namespaces.get_opt(&ns).await {
            Ok(None) => return Ok(t.elapsed()),
            Ok(Some(n)) => n
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.status == "True")
                .filter_map(|c| c.message)
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => e.to_string(),
        };
        if t.elapsed() > BOUND {
            return Err(format!("still terminating after {}: {left}", human(BOUND)));
        }
    }
}

fn gone_within(took: &Result<Duration, String>) -> (String, bool) {
    match took {
        Ok(d) => (human(*d), *d <= BOUND),
        Err(e) => (e.clone(), false),
    }
}

/// Records the reason of every event created in the namespace until it is gone.
fn watch_event_reasons(stage: &Stage) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let api: Api<k8s_openapi::api::events::v1::Event> = stage.env.api();
    let reasons: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = reasons.clone();
    let task = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(e)) = stream.try_next().await {
            sink.lock()
                .unwrap()
                .push(e.reason.clone().unwrap_or_default());
        }
    });
    (reasons, task)
}

async fn remembered(suite: &SuiteRef) {
    let (stage, mut op, n) = populated(suite, "rel-nsdel-remembered", "op-nsdel-a").await;
    fleet::gather_evidence(suite, &stage.env, Some(&op)).await;
    delete_credentials(&stage).await;
    let (took, ok) = gone_within(&delete_namespace(&stage).await);
    suite.check(
        NAME,
        "Secret gone first, operator remembers it: namespace gone",
        format!("≤ {}", human(BOUND)),
        took,
        ok,
    );
    let c = census(&stage.env, &stage.acs).await;
    suite.check(
        NAME,
        "identities deleted from ACS with the remembered credentials",
        format!("{n} of {n}"),
        format!("{} of {n}", n - c.live.min(n)),
        c.live == 0,
    );
    op.kill();
}

async fn forgotten(suite: &SuiteRef) {
    let (stage, mut op, n) = populated(suite, "rel-nsdel-forgotten", "op-nsdel-b").await;
    delete_credentials(&stage).await;
    // A restart loses the remembered credentials: the next operator has nothing to sign with.
    op.kill();
    let mut op = spawn(
        suite,
        stage.args("op-nsdel-b-restarted", &["--acs-api-mode", "preview"]),
    );
    op.wait_ready().await;
    fleet::gather_evidence(suite, &stage.env, Some(&op)).await;
    let (reasons, task) = watch_event_reasons(&stage);
    let (took, ok) = gone_within(&delete_namespace(&stage).await);
    task.abort();
    suite.check(
        NAME,
        "Secret gone and operator restarted: namespace gone",
        format!("≤ {}", human(BOUND)),
        took,
        ok,
    );
    let c = census(&stage.env, &stage.acs).await;
    let logged = op.logs().matches("was not deleted from ACS").count();
    suite.check(
        NAME,
        "identities left in ACS / reported in the operator log",
        format!("{n} / {n}"),
        format!("{} / {logged}", c.live),
        c.live == n && logged >= n,
    );
    let stored = reasons
        .lock()
        .unwrap()
        .iter()
        .filter(|r| *r == "IdentityNotDeleted")
        .count();
    suite.figure(
        NAME,
        "IdentityNotDeleted events stored (a terminating namespace refuses new events)",
        format!("{stored} of {n}"),
    );
    op.kill();
}
