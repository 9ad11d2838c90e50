//! The operator process itself: readiness before cache sync, and leader election between two
//! replicas (only the leader writes; a standby takes over after a crash).

use std::time::Duration;

use acs_identity_operator::api::{CommunicationUser, CommunicationUserSpec};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

use crate::harness::*;
use crate::support::{eventually, wait_for, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn readyz_stays_false_until_the_caches_sync() {
    let env = TestEnv::new("op-readyz").await;
    let acs = Acs::start().await;
    // A kubeconfig whose apiserver never answers: the caches can never sync.
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.kubeconfig");
    let text = std::fs::read_to_string(env.cp.kubeconfig_path()).unwrap();
    let text = text.replace(
        &env.cp.api_url(),
        &format!("https://127.0.0.1:{}", free_port()),
    );
    std::fs::write(&dead, text).unwrap();
    let mut args = OperatorArgs::new(&env, &acs).identity("op-dead");
    args.kubeconfig = dead;
    let op = Operator::spawn(args);
    eventually("/healthz answers", CONVERGE, || async {
        match op.probe("/healthz").await {
            Some(200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Several probes over time: never ready.
    for _ in 0..5 {
        assert_eq!(op.probe("/readyz").await, Some(503));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The same operator against the real apiserver becomes ready.
    let good = Operator::spawn(OperatorArgs::new(&env, &acs));
    good.wait_ready().await;
}

async fn lease_holder(env: &TestEnv) -> Option<String> {
    let leases: Api<Lease> = env.api();
    leases
        .get_opt("acs-identity-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

fn elected(env: &TestEnv, acs: &Acs, id: &str) -> OperatorArgs {
    OperatorArgs::new(env, acs)
        .identity(id)
        .arg("--leader-election")
        .arg("true")
        .arg("--leader-election-namespace")
        .arg(env.ns())
        .arg("--leader-election-lease-duration")
        .arg("4s")
        .arg("--leader-election-renew-deadline")
        .arg("3s")
        .arg("--leader-election-retry-period")
        .arg("500ms")
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_writes_and_a_standby_takes_over_after_a_crash() {
    let env = TestEnv::new("op-leader").await;
    let acs = Acs::start().await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    let mut a = Operator::spawn(elected(&env, &acs, "op-a"));
    a.wait_ready().await;
    eventually("op-a leads", CONVERGE, || async {
        match lease_holder(&env).await.as_deref() {
            Some("op-a") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let b = Operator::spawn(elected(&env, &acs, "op-b"));
    b.wait_ready().await;

    create_user(&env, "u1", CommunicationUserSpec::default()).await;
    let api: Api<CommunicationUser> = env.api();
    wait_for(&api, "u1", CONVERGE, "u1 Ready", user_ready("")).await;
    wait_event(&env, |(r, _, _)| r == "IdentityCreated").await;
    let evs = events(&env).await;
    assert!(!evs.is_empty());
    assert!(
        evs.iter().all(|(_, _, who)| who == "op-a"),
        "the standby wrote events: {evs:?}"
    );
    assert_eq!(lease_holder(&env).await.as_deref(), Some("op-a"));
    assert!(
        !b.logs().contains("identity created"),
        "the standby created an identity"
    );

    // Crash the leader: no release, so the standby waits out the lease.
    a.kill();
    eventually("op-b takes over", Duration::from_secs(30), || async {
        match lease_holder(&env).await.as_deref() {
            Some("op-b") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    create_user(&env, "u2", CommunicationUserSpec::default()).await;
    wait_for(&api, "u2", CONVERGE, "u2 Ready", user_ready("")).await;
    assert_eq!(
        acs.identities().await.len(),
        2,
        "exactly one identity per user, no double creation"
    );
    wait_event(&env, |(r, n, who)| {
        r == "IdentityCreated" && who == "op-b" && !n.is_empty()
    })
    .await;
}
