//! Rotation that reaches workloads which read the token once: `spec.rolloutRestartTargets`
//! restarts opted-in workloads (a pod-template annotation, as `kubectl rollout restart`),
//! exactly once per new token, never on an operator restart, once for siblings re-issued by one
//! revocation; a target that is missing, not opted in or `OnDelete` gets a condition. Restarts
//! are counted by the Deployment's generation (each template change is one), which the
//! apiserver keeps without a kubelet. And the renewal margin a pod is left is in status.

use std::time::{Duration, Instant};

use acs_identity_operator::api::{CommunicationToken, CommunicationUser, CommunicationUserSpec};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::harness::*;
use crate::support::{wait_for, TestEnv};

const RESTARTED_FOR: &str = "communication.acs.dev/restarted-for";
/// The coalescing window of these tests (the default is 10 s).
const WINDOW: &str = "2s";

pub(crate) async fn operator(env: &TestEnv, acs: &Acs) -> OperatorArgs {
    put_secret(
        env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    OperatorArgs::new(env, acs)
        .arg("--rollout-restart")
        .arg("--restart-coalesce-window")
        .arg(WINDOW)
}

fn pod_template(name: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "busybox", "env": [{
            "name": "ACS_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}
        }]}]}
    })
}

pub(crate) async fn deployment(env: &TestEnv, name: &str, opted_in: bool) {
    let mut d = json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name),
        }
    });
    if opted_in {
        d["metadata"]["annotations"] = json!({"communication.acs.dev/restart-on-rotation": "true"});
    }
    env.api::<Deployment>()
        .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
        .await
        .expect("create Deployment");
}

/// A token of `user` restarting `targets` (kind, name).
pub(crate) async fn token(env: &TestEnv, name: &str, user: &str, targets: &[(&str, &str)]) {
    let mut spec = token_spec(user);
    spec.rollout_restart_targets = targets
        .iter()
        .map(|(kind, name)| serde_json::from_value(json!({"kind": kind, "name": name})).unwrap())
        .collect();
    create_token(env, name, spec).await;
}

pub(crate) async fn generation(env: &TestEnv, name: &str) -> i64 {
    env.api::<Deployment>()
        .get(name)
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap_or(0)
}

async fn restarted_for(env: &TestEnv, name: &str) -> Option<String> {
    env.api::<Deployment>()
        .get(name)
        .await
        .unwrap()
        .spec?
        .template
        .metadata?
        .annotations?
        .get(RESTARTED_FOR)
        .cloned()
}

/// Waits until the Deployment's generation is `want`, then asserts it stays there for
/// `hold` (a second restart would move it).
pub(crate) async fn generation_settles_at(env: &TestEnv, name: &str, want: i64, hold: Duration) {
    crate::support::eventually("the restart", CONVERGE, || async {
        let g = generation(env, name).await;
        if g >= want {
            Ok(g)
        } else {
            Err(g)
        }
    })
    .await;
    let start = Instant::now();
    while start.elapsed() < hold {
        let g = generation(env, name).await;
        assert_eq!(
            g,
            want,
            "{name} restarted again after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) async fn revision(env: &TestEnv, name: &str, want: i64) -> CommunicationToken {
    let tokens: Api<CommunicationToken> = env.api();
    wait_for(
        &tokens,
        name,
        CONVERGE,
        "revision",
        move |t: Option<&CommunicationToken>| {
            t.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                s.revision >= want
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        },
    )
    .await
    .unwrap()
}

pub(crate) async fn annotate<K>(api: &Api<K>, name: &str, key: &str, value: &str)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let patch = json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_token_restarts_an_opted_in_deployment_once_and_an_operator_restart_restarts_nothing()
{
    let env = TestEnv::new("rollout-once").await;
    let acs = Acs::start().await;
    let mut op = Operator::spawn(operator(&env, &acs).await);
    op.wait_ready().await;
    deployment(&env, "app", true).await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    token(&env, "app", "alice", &[("Deployment", "app")]).await;
    revision(&env, "app", 1).await;
    let tokens: Api<CommunicationToken> = env.api();
    let t = wait_for(
        &tokens,
        "app",
        CONVERGE,
        "RolloutRestart True",
        |t: Option<&CommunicationToken>| {
            t.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "RolloutRestart" && c.status == "True")
            })
        },
    )
    .await
    .unwrap();
    let st = t.status.unwrap();
    // The first token restarts nothing: the pods start with it.
    generation_settles_at(&env, "app", 1, Duration::from_secs(4)).await;
    assert_eq!(restarted_for(&env, "app").await, None);
    // The renewal margin a pod is left is recorded (24 h token, default policy).
    let worst = st
        .pod_validity_at_worst_seconds
        .expect("podValidityAtWorstSeconds");
    assert!(worst > 6 * 3600, "{worst}");

    // Each new token: exactly one restart, after the window.
    for (n, want) in [("1", 2), ("2", 3)] {
        annotate(&tokens, "app", "communication.acs.dev/rotate", n).await;
        revision(&env, "app", want).await;
        generation_settles_at(&env, "app", want, Duration::from_secs(5)).await;
    }
    let t = tokens.get("app").await.unwrap();
    let restarted = &t.status.unwrap().restarted_workloads;
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert_eq!(restarted[0].observed_revision, 3);
    assert_eq!(
        restarted[0].revisions_hash,
        restarted_for(&env, "app").await
    );
    wait_event(&env, |(reason, note, _)| {
        reason == "WorkloadRestarted" && note.contains("Deployment app")
    })
    .await;

    // An operator restart (and its resync of every object) restarts nothing.
    op.stop();
    let op = Operator::spawn(operator(&env, &acs).await);
    op.wait_ready().await;
    generation_settles_at(&env, "app", 3, Duration::from_secs(6)).await;
    eprintln!("figure: 2 rotations -> 2 restarts; operator restart -> 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn siblings_reissued_by_one_revocation_restart_their_workload_once() {
    let env = TestEnv::new("rollout-siblings").await;
    let acs = Acs::start().await;
    let op = Operator::spawn(operator(&env, &acs).await);
    op.wait_ready().await;
    deployment(&env, "app", true).await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    for name in ["calls", "chat", "join"] {
        token(&env, name, "alice", &[("Deployment", "app")]).await;
    }
    for name in ["calls", "chat", "join"] {
        revision(&env, name, 1).await;
    }
    generation_settles_at(&env, "app", 1, Duration::from_secs(3)).await;

    // One revocation re-issues all three: one restart.
    let users: Api<CommunicationUser> = env.api();
    annotate(&users, "alice", "communication.acs.dev/revoke", "1").await;
    for name in ["calls", "chat", "join"] {
        revision(&env, name, 2).await;
    }
    generation_settles_at(&env, "app", 2, Duration::from_secs(6)).await;
    eprintln!("figure: a revocation re-issuing 3 sibling tokens -> 1 restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn targets_missing_not_opted_in_or_on_delete_get_a_condition_and_cost_nothing_more() {
    let env = TestEnv::new("rollout-refused").await;
    let acs = Acs::start().await;
    let op = Operator::spawn(operator(&env, &acs).await);
    op.wait_ready().await;
    deployment(&env, "plain", false).await;
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db", "annotations": {"communication.acs.dev/restart-on-rotation": "true"}},
        "spec": {
            "selector": {"matchLabels": {"app": "db"}},
            "serviceName": "db",
            "updateStrategy": {"type": "OnDelete"},
            "template": pod_template("db"),
        }
    }))
    .unwrap();
    env.api::<StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    let mut spec = token_spec("alice");
    // A renewal 1 minute before expiry (plus at most 6 minutes of jitter) leaves a pod less
    // than the allowance plus the SDK's refresh window (2 + 6 minutes on a 60-minute token):
    // a condition says so; the token is still issued and Ready.
    spec.expires_in_minutes = 60;
    spec.renew_before = Some(serde_json::from_value(json!("1m")).unwrap());
    spec.rollout_restart_targets = [
        ("Deployment", "missing"),
        ("Deployment", "plain"),
        ("StatefulSet", "db"),
    ]
    .iter()
    .map(|(k, n)| serde_json::from_value(json!({"kind": k, "name": n})).unwrap())
    .collect();
    create_token(&env, "web", spec).await;
    let tokens: Api<CommunicationToken> = env.api();
    let t = wait_for(
        &tokens,
        "web",
        CONVERGE,
        "RolloutRestart False",
        |t: Option<&CommunicationToken>| {
            t.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "RolloutRestart" && c.status == "False")
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        },
    )
    .await
    .unwrap();
    let st = t.status.unwrap();
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "RolloutRestart")
        .unwrap();
    assert_eq!(c.reason, "TargetNotFound");
    for part in [
        "Deployment missing not found",
        "Deployment plain has not opted in",
        "StatefulSet db uses updateStrategy OnDelete",
    ] {
        assert!(c.message.contains(part), "{part}: {}", c.message);
    }
    let margin = st
        .conditions
        .iter()
        .find(|c| c.type_ == "RenewalMargin")
        .expect("RenewalMargin");
    assert_eq!(
        (margin.status.as_str(), margin.reason.as_str()),
        ("False", "RenewalTooLate")
    );
    assert!(
        margin.message.contains("renewBefore 1m"),
        "{}",
        margin.message
    );
    wait_event(&env, |(reason, _, _)| reason == "TargetNotFound").await;

    // A rotation restarts none of them, and the refusals cost no retry storm: reads of the
    // targets happen per reconcile of the token, which does not requeue for them.
    let base = op.kube_requests("get").await;
    annotate(&tokens, "web", "communication.acs.dev/rotate", "1").await;
    revision(&env, "web", 2).await;
    let start = Instant::now();
    let mut n = 0.0;
    while start.elapsed() < Duration::from_secs(10) {
        n = op.kube_requests("get").await - base;
        assert!(n <= 20.0, "{n} GETs in {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("figure: a rotation with 3 refused targets cost {n} GETs in 10 s");
    assert_eq!(
        generation(&env, "plain").await,
        1,
        "a workload that did not opt in was restarted"
    );
    let db = env.api::<StatefulSet>().get("db").await.unwrap();
    assert_eq!(db.metadata.generation, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_feature_enabled_targets_get_a_condition_and_no_workload_is_read() {
    let env = TestEnv::new("rollout-off").await;
    let acs = Acs::start().await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    let op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;
    deployment(&env, "app", true).await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    token(&env, "app", "alice", &[("Deployment", "app")]).await;
    let tokens: Api<CommunicationToken> = env.api();
    wait_for(
        &tokens,
        "app",
        CONVERGE,
        "RolloutRestartDisabled",
        |t: Option<&CommunicationToken>| {
            t.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.reason == "RolloutRestartDisabled")
            })
        },
    )
    .await
    .unwrap();
    annotate(&tokens, "app", "communication.acs.dev/rotate", "1").await;
    revision(&env, "app", 2).await;
    generation_settles_at(&env, "app", 1, Duration::from_secs(4)).await;
}
