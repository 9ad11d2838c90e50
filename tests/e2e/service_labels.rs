//! A namespace's labels are watched (issue 22, item 3): a label change that makes a
//! ClusterCommunicationService's selector stop selecting a namespace refuses its users and
//! tokens within seconds (not at their next renewal, an hour away here), a label put back
//! serves them again with their same identity and token, and the service counts only the
//! users it serves. Counted: ACS calls and the operator's apiserver writes over the round.

use std::time::{Duration, Instant};

use acs_identity_operator::api::{
    ClusterCommunicationService, CommunicationToken, CommunicationUser,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::harness::*;
use crate::support::{wait_for, TestEnv};

/// Far below the resync period (an hour) and the labels' read cache (30 s): only the watch
/// makes it.
const AT_ONCE: Duration = Duration::from_secs(15);
const LABEL: &str = "e2e.acs.dev/served";

async fn label(env: &TestEnv, value: Option<&str>) {
    Api::<Namespace>::all(env.client.clone())
        .patch(
            env.ns(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { LABEL: value } } })),
        )
        .await
        .expect("label namespace");
}

/// Waits until user `app` and token `app-token` both have Ready `reason` ("": True).
async fn app_and_token(env: &TestEnv, reason: &'static str, within: Duration) {
    let users: Api<CommunicationUser> = env.api();
    let tokens: Api<CommunicationToken> = env.api();
    let what = format!("user and token Ready {reason:?}");
    wait_for(&users, "app", within, &what, user_ready(reason))
        .await
        .expect("user");
    wait_for(&tokens, "app-token", within, &what, token_ready(reason))
        .await
        .expect("token");
}

/// Sets the namespace's label (`None`: removes it) and waits, for [`AT_ONCE`] at most, until
/// the user and its token show `reason`; returns the seconds that took.
async fn relabel(env: &TestEnv, value: Option<&str>, reason: &'static str) -> f64 {
    let start = Instant::now();
    label(env, value).await;
    app_and_token(env, reason, AT_ONCE).await;
    start.elapsed().as_secs_f64()
}

fn counted(users: i32, tokens: i32) -> impl Fn(Option<&ClusterCommunicationService>) -> bool {
    move |s| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.users == Some(users) && st.tokens == Some(tokens))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_label_change_reaches_a_cluster_services_users_at_once() {
    let _turn = cluster_services_turn().await;
    let platform = TestEnv::new("svc-labels-platform").await;
    let team = TestEnv::new("svc-labels-team").await;
    let acs = Acs::start().await;
    let name = format!("labels-{}", team.ns());
    let selector = json!({ "matchLabels": { LABEL: team.ns() } });
    platform_cluster_service(&platform, &acs, &name, Some(selector)).await;
    label(&team, Some(team.ns())).await;
    let mut args = OperatorArgs::new(&team, &acs)
        .arg("--manage-cluster-services")
        .arg("true");
    args.namespaces = vec![platform.ns().to_string(), team.ns().to_string()];
    let mut op = Operator::spawn(args);
    op.wait_ready().await;

    create_user(
        &team,
        "app",
        service_user("ClusterCommunicationService", &name),
    )
    .await;
    create_token(&team, "app-token", token_spec("app")).await;
    app_and_token(&team, "", CONVERGE).await;
    let cluster: Api<ClusterCommunicationService> = Api::all(team.client.clone());
    wait_for(&cluster, &name, CONVERGE, "1 user, 1 token", counted(1, 1)).await;
    let token_before = secret_token(&team, "app-token")
        .await
        .expect("token Secret");
    let (created, issued) = (
        acs.calls("createIdentity").await,
        acs.calls("issueAccessToken").await,
    );
    let writes = op.kube_writes().await;

    // The label goes: the selector no longer selects the namespace, and a refused user is
    // not counted as the service's.
    let took = relabel(&team, None, "NamespaceNotSelected").await;
    eprintln!("figure: user and token NamespaceNotSelected {took:.1} s after the label went");
    wait_for(
        &cluster,
        &name,
        CONVERGE,
        "0 users, 0 tokens",
        counted(0, 0),
    )
    .await;

    // The label comes back: served again, with the same identity and token.
    let took = relabel(&team, Some(team.ns()), "").await;
    eprintln!("figure: user and token Ready {took:.1} s after the label came back");
    wait_for(
        &cluster,
        &name,
        CONVERGE,
        "1 user, 1 token again",
        counted(1, 1),
    )
    .await;
    // Compared, never printed.
    assert!(
        secret_token(&team, "app-token").await.as_deref() == Some(token_before.as_str()),
        "the Secret no longer holds its token"
    );
    assert_eq!(
        acs.calls("createIdentity").await,
        created,
        "no new identity"
    );
    assert_eq!(
        acs.calls("issueAccessToken").await,
        issued,
        "no token issued"
    );
    // Per object and direction: its status (and a Warning event when refused), the service's
    // counts twice: a bound, not a loop.
    let spent = op.kube_writes().await - writes;
    eprintln!("figure: {spent} apiserver writes for the two label changes");
    assert!(
        spent <= 14.0,
        "{spent} apiserver writes for two label changes (bound 14)"
    );
    op.stop();
}
