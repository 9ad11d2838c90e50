//! Tenant isolation (issue 21): one namespace never acts with another's identity. Client ids
//! are not secret, so a namespace that annotates its own ServiceAccount with another team's
//! client id and names that team's endpoint is a principal of its own: the operator exchanges
//! its own ServiceAccount token, Entra refuses it (no federated credential for its subject),
//! and no cached client or bearer token of the other team ever serves it, in either order.

use acs_identity_operator::api::CommunicationUser;
use kube::api::Api;

use crate::harness::*;
use crate::support::{wait_for, TestEnv};

/// Entra refusals by AADSTS code in the emulator's stats.
async fn refusals(acs: &Acs, code: &str) -> u64 {
    acs.stats().await["entra"]["tokenErrors"][code]
        .as_u64()
        .unwrap_or(0)
}

async fn live_identities(acs: &Acs) -> usize {
    acs.identities()
        .await
        .iter()
        .filter(|i| i["deleted"] != serde_json::json!(true))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_naming_another_teams_client_id_is_refused_in_both_orders() {
    let victim = TestEnv::new("iso-victim").await;
    let impostor = TestEnv::new("iso-impostor").await;
    let acs = entra_acs(&victim).await;
    // The victim's application trusts the victim's ServiceAccount only.
    let app = federated_client(
        &acs,
        &victim,
        "victim",
        &subject(&victim, "acs-wi"),
        &["Communication and Email Service Owner"],
    )
    .await;
    workload_identity_sa(&victim, "acs-wi", &app, true).await;
    // The impostor annotates its own ServiceAccount with the victim's client id.
    workload_identity_sa(&impostor, "acs-wi", &app, true).await;
    let args = |acs: &Acs| {
        let mut a = entra_operator(&victim, acs);
        a.namespaces.push(impostor.ns().to_string());
        a
    };
    let mut op = Operator::spawn(args(&acs));
    op.wait_ready().await;

    // Victim first: Ready; then the impostor, with the victim's client cached and warm.
    let victims: Api<CommunicationUser> = victim.api();
    let impostors: Api<CommunicationUser> = impostor.api();
    create_user(&victim, "alice", entra_user(&acs, "acs-wi")).await;
    wait_for(&victims, "alice", CONVERGE, "victim Ready", user_ready(""))
        .await
        .unwrap();
    assert_eq!(live_identities(&acs).await, 1);
    let refused_before = refusals(&acs, "AADSTS700213").await;
    create_user(&impostor, "mallory", entra_user(&acs, "acs-wi")).await;
    let m = wait_for(
        &impostors,
        "mallory",
        CONVERGE,
        "impostor refused",
        user_ready("CredentialsRejected"),
    )
    .await
    .unwrap();
    assert!(m.identity_id().is_none(), "the impostor got an identity");
    assert_eq!(live_identities(&acs).await, 1, "no identity created for it");
    // The exchange was attempted with the impostor's own ServiceAccount token.
    assert!(
        refusals(&acs, "AADSTS700213").await > refused_before,
        "no exchange for the impostor's own subject: {}",
        acs.stats().await["entra"]
    );

    // The other order, after a restart: the impostor first, then the victim is Ready.
    op.stop();
    let mut op = Operator::spawn(args(&acs));
    op.wait_ready().await;
    create_user(&impostor, "mallory2", entra_user(&acs, "acs-wi")).await;
    wait_for(
        &impostors,
        "mallory2",
        CONVERGE,
        "impostor refused",
        user_ready("CredentialsRejected"),
    )
    .await;
    create_user(&victim, "alice2", entra_user(&acs, "acs-wi")).await;
    wait_for(&victims, "alice2", CONVERGE, "victim Ready", user_ready(""))
        .await
        .unwrap();
    for (api, name) in [(&impostors, "mallory"), (&impostors, "mallory2")] {
        let u = api.get(name).await.unwrap();
        assert!(u.identity_id().is_none(), "{name} got an identity");
    }
    assert_eq!(live_identities(&acs).await, 2, "alice and alice2 only");
    op.stop();
}
