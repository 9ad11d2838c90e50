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

/// Issue 21, item 7: a CommunicationToken may not name the operator's sealing-key Secret (in a
/// namespace where the key does not exist yet, it would otherwise create a Secret the operator
/// then reads as its key).
#[tokio::test(flavor = "multi_thread")]
async fn a_token_may_not_name_the_operators_sealing_key_secret() {
    use acs_identity_operator::api::{CommunicationToken, CommunicationUserSpec};
    use k8s_openapi::api::core::v1::Secret;

    let (env, acs) = keyed_namespace("iso-seal").await;
    let op = Operator::spawn(
        OperatorArgs::new(&env, &acs)
            .arg("--sealing-key-secret")
            .arg(&format!("{}/seal", env.ns())),
    );
    op.wait_ready().await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    let mut spec = token_spec("alice");
    spec.secret_name = Some("seal".into());
    create_token(&env, "web", spec).await;
    let tokens: Api<CommunicationToken> = env.api();
    let t = wait_for(
        &tokens,
        "web",
        CONVERGE,
        "SecretConflict",
        token_ready("SecretConflict"),
    )
    .await
    .unwrap();
    let msg = &t.status.unwrap().conditions[0].message;
    assert!(msg.contains("sealing key"), "{msg}");
    assert!(
        env.api::<Secret>().get_opt("seal").await.unwrap().is_none(),
        "no Secret of that name was created"
    );
    assert_eq!(
        acs.calls("issueAccessToken").await,
        0,
        "no token issued for it"
    );
}

/// Issue 21, item 5: the revocation epoch never moves backwards. The revoke annotation loops
/// while the credentials Secret is deleted and re-created (each wakes the user, some with a
/// cache that lags its last write); every user status written is seen by a watch, and no
/// epoch is lower than one seen before; at the end no revocation is pending and every Secret
/// holds a valid token of the final epoch.
#[tokio::test(flavor = "multi_thread")]
async fn the_revocation_epoch_never_moves_backwards() {
    use acs_identity_operator::api::CommunicationToken;
    use futures::TryStreamExt;
    use kube::api::{Patch, PatchParams};
    use kube::runtime::{watcher, WatchStreamExt};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let (env, acs) = keyed_namespace("iso-epoch").await;
    let op = Operator::spawn(
        OperatorArgs::new(&env, &acs)
            .arg("--revocation-limit")
            .arg("100"),
    );
    op.wait_ready().await;
    ready_user_id(&env, "alice").await;
    let users: Api<CommunicationUser> = env.api();
    let tokens: Api<CommunicationToken> = env.api();
    for n in ["a", "b"] {
        create_token(&env, n, token_spec("alice")).await;
        wait_for(&tokens, n, CONVERGE, "Ready", token_ready(""))
            .await
            .unwrap();
    }
    // Every epoch the apiserver ever stores for the user, in order.
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let watch = tokio::spawn({
        let (users, seen) = (users.clone(), seen.clone());
        async move {
            let cfg = watcher::Config::default().fields("metadata.name=alice");
            let mut stream = std::pin::pin!(watcher(users, cfg).applied_objects());
            while let Ok(Some(u)) = stream.try_next().await {
                let epoch = u.revocation_epoch();
                seen.lock().unwrap().push(epoch);
            }
        }
    });
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = env.api();
    for i in 1..=10 {
        let patch = serde_json::json!({"metadata": {"annotations": {
            "communication.acs.dev/revoke": format!("loop-{i}"),
        }}});
        users
            .patch("alice", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let _ = secrets.delete("acs-credentials", &Default::default()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        put_secret(
            &env,
            "acs-credentials",
            "connectionString",
            &acs.connection_string(),
        )
        .await;
    }
    let u = wait_for(
        &users,
        "alice",
        Duration::from_secs(120),
        "the last value handled, nothing pending",
        |u: Option<&CommunicationUser>| {
            u.and_then(|u| u.status.as_ref())
                .and_then(|s| s.revocation.as_ref())
                .is_some_and(|r| {
                    r.handled_annotation.as_deref() == Some("loop-10") && r.pending.is_none()
                })
        },
    )
    .await
    .unwrap();
    let epoch = u.revocation_epoch();
    assert!(epoch >= 1, "{epoch}");
    for n in ["a", "b"] {
        wait_for(
            &tokens,
            n,
            CONVERGE,
            "the final epoch",
            move |t: Option<&CommunicationToken>| {
                t.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                    s.revocation_epoch == Some(epoch)
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            },
        )
        .await;
        let (valid, reason) = acs.validate(&secret_token(&env, n).await.unwrap()).await;
        assert!(valid, "{n}: {reason}");
    }
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "the epoch moved backwards: {seen:?}"
    );
    eprintln!(
        "figure: 10 revoke values with the credentials deleted and re-created each time: {} revocations, epochs seen {seen:?}",
        acs.revocations(u.identity_id().unwrap()).await
    );
}

/// Issue 21, item 2: a bearer token (or a signed request) goes only to an allowed ACS host.
/// Credentials naming another endpoint (here the same emulator reached as `localhost`, which
/// the operator does not allow; it allows the ACS domains and, in these tests, `127.0.0.1`)
/// are refused with `EndpointNotAllowed` before any request: no identity call, no Entra
/// exchange.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_naming_a_host_that_is_not_allowed_send_nothing() {
    use acs_identity_operator::api::{CommunicationUserSpec, CredentialsRef};

    let env = TestEnv::new("iso-endpoint").await;
    let acs = entra_acs(&env).await;
    let elsewhere = acs.emu.endpoint().replace("127.0.0.1", "localhost");
    assert_ne!(elsewhere, acs.emu.endpoint());
    let key_conn = acs.connection_string().replace("127.0.0.1", "localhost");
    put_secret(&env, "elsewhere", "connectionString", &key_conn).await;
    let app = federated_client(
        &acs,
        &env,
        "iso-endpoint",
        &subject(&env, "acs-wi"),
        &["Communication and Email Service Owner"],
    )
    .await;
    workload_identity_sa(&env, "acs-wi", &app, true).await;
    let op = Operator::spawn(entra_operator(&env, &acs));
    op.wait_ready().await;
    create_user(
        &env,
        "keyed",
        CommunicationUserSpec {
            credentials: Some(CredentialsRef::from_secret("elsewhere", "connectionString")),
            ..Default::default()
        },
    )
    .await;
    create_user(
        &env,
        "bearer",
        CommunicationUserSpec {
            credentials: Some(CredentialsRef::from_service_account(&elsewhere, "acs-wi")),
            ..Default::default()
        },
    )
    .await;
    let users: Api<CommunicationUser> = env.api();
    for name in ["keyed", "bearer"] {
        let u = wait_for(
            &users,
            name,
            CONVERGE,
            "EndpointNotAllowed",
            user_ready("EndpointNotAllowed"),
        )
        .await
        .unwrap();
        let msg = &u.status.unwrap().conditions[0].message;
        assert!(
            msg.contains("localhost") && msg.contains("--allowed-endpoint-hosts"),
            "{msg}"
        );
    }
    // Nothing reached the emulator for them: no identity call, no Entra token request.
    let stats = acs.stats().await;
    assert_eq!(acs.calls("createIdentity").await, 0, "{stats}");
    assert_eq!(
        stats["entra"]["tokenRequests"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum::<u64>()),
        0,
        "{stats}"
    );
    // The allowed host, same emulator: served.
    create_user(&env, "allowed", entra_user(&acs, "acs-wi")).await;
    wait_for(&users, "allowed", CONVERGE, "Ready", user_ready(""))
        .await
        .unwrap();
}
