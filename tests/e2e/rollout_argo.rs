//! Argo Rollouts as a rollout restart target (`kind: Rollout`), on the real control plane with
//! the Rollout CRD installed and no Argo controller: the operator restarts an opted-in Rollout
//! the way `kubectl argo rollouts restart` does (its `spec.restartAt`, never its pod template,
//! which would start a new canary), once per new token, and leaves one that did not opt in
//! alone with a condition. Restarts are counted by the Rollout's generation.

use std::time::Duration;

use acs_identity_operator::api::{CommunicationToken, CommunicationUserSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

use crate::harness::*;
use crate::rollout::{annotate, operator, revision, token};
use crate::support::{eventually, wait_for, TestEnv};

const RESTARTED_FOR: &str = "communication.acs.dev/restarted-for";

/// The Rollout CRD as far as this test needs it (Argo's own schema is open, too).
async fn install_rollout_crd(env: &TestEnv) {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "rollouts.argoproj.io"},
        "spec": {
            "group": "argoproj.io",
            "names": {"kind": "Rollout", "listKind": "RolloutList", "plural": "rollouts",
                      "singular": "rollout", "shortNames": ["ro"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        // Another test run on this control plane installed it.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create the Rollout CRD: {e}"),
    }
    tokio::time::timeout(
        CONVERGE,
        await_condition(
            crds,
            "rollouts.argoproj.io",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("the Rollout CRD is established")
    .unwrap();
}

fn rollouts(env: &TestEnv) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "argoproj.io".into(),
        version: "v1alpha1".into(),
        api_version: "argoproj.io/v1alpha1".into(),
        kind: "Rollout".into(),
        plural: "rollouts".into(),
    };
    Api::namespaced_with(env.client.clone(), env.ns(), &ar)
}

async fn rollout(env: &TestEnv, name: &str, opted_in: bool) {
    let mut r = json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": "busybox"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 20}]}},
        },
    });
    if opted_in {
        r["metadata"]["annotations"] = json!({"communication.acs.dev/restart-on-rotation": name});
    }
    rollouts(env)
        .create(&PostParams::default(), &serde_json::from_value(r).unwrap())
        .await
        .expect("create Rollout");
}

async fn get(env: &TestEnv, name: &str) -> DynamicObject {
    rollouts(env).get(name).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_opted_in_argo_rollout_is_restarted_through_restart_at_once_per_new_token() {
    let env = TestEnv::new("rollout-argo").await;
    install_rollout_crd(&env).await;
    let acs = Acs::start().await;
    let op = Operator::spawn(operator(&env, &acs).await);
    op.wait_ready().await;
    rollout(&env, "web", true).await;
    rollout(&env, "other", false).await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    token(&env, "web", "alice", &[("Rollout", "web")]).await;
    token(&env, "stray", "alice", &[("Rollout", "other")]).await;
    revision(&env, "web", 1).await;
    let tokens: Api<CommunicationToken> = env.api();
    let restart_condition = |name: &'static str, status: &'static str, reason: &'static str| {
        crate::rollout_late::rollout_condition_with(&env, name, status, Some(reason))
    };
    restart_condition("web", "True", "RestartTargetsReady").await;
    // The first token restarts nothing.
    assert_eq!(get(&env, "web").await.metadata.generation, Some(1));
    assert!(get(&env, "web").await.data["spec"]
        .get("restartAt")
        .is_none());

    let before = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    annotate(&tokens, "web", "communication.acs.dev/rotate", "1").await;
    let t = revision(&env, "web", 2).await;
    let r = eventually("the Rollout restarted", CONVERGE, || async {
        let r = get(&env, "web").await;
        match r.metadata.generation {
            Some(2) => Ok(r),
            g => Err(g),
        }
    })
    .await;
    let restart_at: jiff::Timestamp = r.data["spec"]["restartAt"]
        .as_str()
        .expect("spec.restartAt")
        .parse()
        .unwrap();
    assert!(restart_at >= before, "{restart_at} < {before}");
    // The pod template is untouched (a change there would start a new canary).
    assert!(r.data["spec"]["template"]["metadata"]["annotations"].is_null());
    let hash = r.metadata.annotations.as_ref().unwrap()[RESTARTED_FOR].clone();
    let t = wait_for(
        &tokens,
        "web",
        CONVERGE,
        "the restart recorded",
        |t: Option<&CommunicationToken>| {
            t.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                s.restarted_workloads
                    .iter()
                    .any(|w| w.restarted_at.is_some())
            })
        },
    )
    .await
    .unwrap_or(t);
    let w = &t.status.unwrap().restarted_workloads[0];
    assert_eq!(w.revisions_hash.as_deref(), Some(hash.as_str()));
    wait_event(&env, |(reason, note, _)| {
        reason == "WorkloadRestarted" && note.contains("Rollout web")
    })
    .await;
    // Once: the generation stays at 2 (no second patch for the same revisions).
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        assert_eq!(get(&env, "web").await.metadata.generation, Some(2));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The Rollout that did not opt in: a condition, never a patch.
    let stray = restart_condition("stray", "False", "TargetNotOptedIn").await;
    let message = &stray
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "RolloutRestart")
        .unwrap()
        .message;
    assert!(message.contains("Rollout other"), "{message}");
    let other = get(&env, "other").await;
    assert_eq!(other.metadata.generation, Some(1));
    assert!(other.data["spec"].get("restartAt").is_none());
}
