//! Deletion never wedges (issue 21, item 3): a user whose identity ACS refuses to delete (401
//! after the key was regenerated) reports it in a condition and a Warning event and backs off
//! like any failure; in a terminating namespace it lets go after a bounded number of attempts,
//! naming the identity left in ACS. Counted: delete calls to ACS, and the time to the namespace
//! being gone.

use std::time::{Duration, Instant};

use acs_identity_operator::api::{CommunicationUser, CommunicationUserSpec};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};

use crate::harness::*;
use crate::support::wait_for;

/// The back-off cap of this test (the default is 5 minutes).
const CAP: &str = "4s";

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_identity_deletion_reports_backs_off_and_never_wedges_its_namespace() {
    let (env, acs) = keyed_namespace("delete-refused").await;
    let op = Operator::spawn(
        OperatorArgs::new(&env, &acs)
            .arg("--failure-backoff-max")
            .arg(CAP),
    );
    op.wait_ready().await;
    for name in ["alice", "bob"] {
        create_user(&env, name, CommunicationUserSpec::default()).await;
    }
    create_token(&env, "web", token_spec("alice")).await;
    let users: Api<CommunicationUser> = env.api();
    let mut ids = Vec::new();
    for name in ["alice", "bob"] {
        let u = wait_for(&users, name, CONVERGE, "Ready", user_ready(""))
            .await
            .unwrap();
        ids.push(u.identity_id().unwrap().to_string());
    }
    // The key the operator signs with is regenerated: every call is now 401.
    acs.regenerate("primary").await;

    // In a live namespace: reported, retried with back-off, the finalizer kept.
    let base = acs.calls("deleteIdentity").await;
    users
        .delete("alice", &DeleteParams::default())
        .await
        .unwrap();
    let u = wait_for(
        &users,
        "alice",
        CONVERGE,
        "CredentialsRejected",
        user_ready("CredentialsRejected"),
    )
    .await
    .unwrap();
    let message = u.status.unwrap().conditions[0].message.clone();
    assert!(message.contains("cannot delete identity"), "{message}");
    wait_event(&env, |(reason, note, _)| {
        reason == "CredentialsRejected" && note.contains("cannot delete identity")
    })
    .await;
    let start = Instant::now();
    let writes_base = op.kube_writes().await;
    let (mut calls, mut writes) = (0, 0.0);
    while start.elapsed() < Duration::from_secs(20) {
        calls = acs.calls("deleteIdentity").await - base;
        writes = op.kube_writes().await - writes_base;
        // About 0, 1, 2, 4, 4, 4, 4 s at a 4 s cap: a loop would make hundreds. Each attempt
        // may patch its (aggregated) Warning event; the condition is unchanged.
        assert!(calls <= 10, "{calls} delete calls in {:?}", start.elapsed());
        assert!(
            writes <= 12.0,
            "{writes} apiserver writes in {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        users.get_opt("alice").await.unwrap().is_some(),
        "the finalizer went"
    );
    eprintln!(
        "figure: a refused deletion in a live namespace: {calls} delete calls and {writes} apiserver writes in 20 s"
    );

    // The namespace deleted: gone within 2 minutes, the identities named as left in ACS.
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let base = acs.calls("deleteIdentity").await;
    let writes_base = op.kube_writes().await;
    let t = Instant::now();
    namespaces
        .delete(env.ns(), &DeleteParams::background())
        .await
        .unwrap();
    crate::support::eventually("the namespace gone", Duration::from_secs(120), || async {
        match namespaces.get_opt(env.ns()).await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|n| n.map(|n| n.status)))),
        }
    })
    .await;
    let took = t.elapsed();
    let calls = acs.calls("deleteIdentity").await - base;
    assert!(calls <= 8, "{calls} delete calls while the namespace went");
    // Per user: its condition, a Warning per attempt, the finalizer's removal; the token's
    // cleanup: its Secret and finalizer.
    let writes = op.kube_writes().await - writes_base;
    assert!(
        writes <= 15.0,
        "{writes} apiserver writes while the namespace went"
    );
    let log = op.logs();
    for id in &ids {
        assert!(
            log.contains(&format!("refused to delete identity {id} (")),
            "{id} is not named as left in ACS"
        );
        let left = acs.identity(id).await.unwrap();
        assert_ne!(left["deleted"], serde_json::json!(true), "{id}");
    }
    eprintln!(
        "figure: a namespace whose identities ACS refuses to delete was gone {took:?} after its deletion, {calls} delete calls, {writes} apiserver writes"
    );
}
