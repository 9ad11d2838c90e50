//! Rollout restarts of workloads that appear after their tokens (issue 27): first sight records
//! the revision the workload can have seen. A Deployment applied after its tokens is noticed
//! without waiting for a rotation (the missing target is looked at again) and restarted once
//! by the next rotation; one applied just before a rotation, not yet looked at, is restarted
//! once by it; enabling the feature on existing workloads restarts nothing.

use std::time::Duration;

use acs_identity_operator::api::{CommunicationToken, CommunicationUserSpec};
use kube::api::Api;

use crate::harness::*;
use crate::rollout::{
    annotate, deployment, generation, generation_settles_at, operator, revision, token,
};
use crate::support::{wait_for, TestEnv};

/// Waits for the token's RolloutRestart condition to have `status`.
async fn rollout_condition(env: &TestEnv, name: &str, status: &'static str) -> CommunicationToken {
    rollout_condition_with(env, name, status, None).await
}

/// Waits until token `name`'s RolloutRestart condition has `status` (and `reason`, if given).
pub(crate) async fn rollout_condition_with(
    env: &TestEnv,
    name: &str,
    status: &'static str,
    reason: Option<&'static str>,
) -> CommunicationToken {
    let tokens: Api<CommunicationToken> = env.api();
    wait_for(
        &tokens,
        name,
        CONVERGE,
        "RolloutRestart condition",
        move |t: Option<&CommunicationToken>| {
            t.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "RolloutRestart"
                        && c.status == status
                        && reason.is_none_or(|r| c.reason == r)
                })
            })
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_applied_after_its_tokens_is_noticed_and_restarted_once_by_the_next_rotation()
{
    let env = TestEnv::new("rollout-late").await;
    let acs = Acs::start().await;
    let op = Operator::spawn(operator(&env, &acs).await);
    op.wait_ready().await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    for name in ["calls", "chat", "join"] {
        token(&env, name, "alice", &[("Deployment", "app")]).await;
    }
    for name in ["calls", "chat", "join"] {
        revision(&env, name, 1).await;
        rollout_condition(&env, name, "False").await;
    }
    // Applied after the tokens are Ready, as `kubectl apply -f dir/` often orders them.
    deployment(&env, "app", true).await;
    // Noticed without a rotation: the missing target is looked at again (15 s at first).
    let t = rollout_condition(&env, "calls", "True").await;
    let recorded = t.status.unwrap().restarted_workloads;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(
        recorded[0].observed_revision, 1,
        "its pods started with revision 1"
    );
    generation_settles_at(&env, "app", 1, Duration::from_secs(2)).await;
    // The next rotation of one token restarts it exactly once.
    let tokens: Api<CommunicationToken> = env.api();
    annotate(&tokens, "calls", "communication.acs.dev/rotate", "1").await;
    revision(&env, "calls", 2).await;
    generation_settles_at(&env, "app", 2, Duration::from_secs(5)).await;
    let t = tokens.get("calls").await.unwrap();
    assert_eq!(
        t.status.unwrap().restarted_workloads[0].observed_revision,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_applied_just_before_a_rotation_is_restarted_once_by_it() {
    let env = TestEnv::new("rollout-race").await;
    let acs = Acs::start().await;
    let op = Operator::spawn(operator(&env, &acs).await);
    op.wait_ready().await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    token(&env, "app", "alice", &[("Deployment", "app")]).await;
    revision(&env, "app", 1).await;
    rollout_condition(&env, "app", "False").await;
    // The rotation right after the Deployment: the reconcile that issues is the first to see
    // it, and records the revision its pods have (1), not the one it issues (2).
    deployment(&env, "app", true).await;
    let tokens: Api<CommunicationToken> = env.api();
    annotate(&tokens, "app", "communication.acs.dev/rotate", "1").await;
    revision(&env, "app", 2).await;
    generation_settles_at(&env, "app", 2, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn enabling_the_feature_on_existing_workloads_restarts_nothing_until_the_next_rotation() {
    let env = TestEnv::new("rollout-enable").await;
    let acs = Acs::start().await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    // The release before the feature is enabled: targets named, nothing restarted.
    let mut op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;
    deployment(&env, "app", true).await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    token(&env, "app", "alice", &[("Deployment", "app")]).await;
    revision(&env, "app", 1).await;
    let tokens: Api<CommunicationToken> = env.api();
    annotate(&tokens, "app", "communication.acs.dev/rotate", "1").await;
    revision(&env, "app", 2).await;
    rollout_condition(&env, "app", "False").await;
    op.stop();
    // Enabled: the existing workload is recorded at the current revision, not restarted.
    let op = Operator::spawn(operator(&env, &acs).await);
    op.wait_ready().await;
    let t = rollout_condition(&env, "app", "True").await;
    assert_eq!(
        t.status.unwrap().restarted_workloads[0].observed_revision,
        2
    );
    generation_settles_at(&env, "app", 1, Duration::from_secs(4)).await;
    // The next rotation restarts it once.
    annotate(&tokens, "app", "communication.acs.dev/rotate", "2").await;
    revision(&env, "app", 3).await;
    generation_settles_at(&env, "app", 2, Duration::from_secs(5)).await;
}

/// Issue 21, item 7: a workload names the tokens allowed to restart it (`"true"` stays "any
/// token of the namespace"); another token naming it gets `TargetNotOptedIn` and restarts nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_workload_opted_in_for_named_tokens_is_restarted_by_those_only() {
    let env = TestEnv::new("rollout-named").await;
    let acs = Acs::start().await;
    let op = Operator::spawn(operator(&env, &acs).await);
    op.wait_ready().await;
    deployment(&env, "app", false).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = env.api();
    annotate(
        &deployments,
        "app",
        "communication.acs.dev/restart-on-rotation",
        "chat, join",
    )
    .await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    for name in ["calls", "chat"] {
        token(&env, name, "alice", &[("Deployment", "app")]).await;
        revision(&env, name, 1).await;
    }
    let t = rollout_condition(&env, "calls", "False").await;
    let c = t
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "RolloutRestart")
        .unwrap();
    assert_eq!(c.reason, "TargetNotOptedIn", "{}", c.message);
    rollout_condition(&env, "chat", "True").await;
    let tokens: Api<CommunicationToken> = env.api();
    // A Deployment's generation also counts annotation changes (the opt-in above).
    let g0 = generation(&env, "app").await;
    annotate(&tokens, "calls", "communication.acs.dev/rotate", "1").await;
    revision(&env, "calls", 2).await;
    generation_settles_at(&env, "app", g0, Duration::from_secs(4)).await;
    annotate(&tokens, "chat", "communication.acs.dev/rotate", "1").await;
    revision(&env, "chat", 2).await;
    generation_settles_at(&env, "app", g0 + 1, Duration::from_secs(5)).await;
}
