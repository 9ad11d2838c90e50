//! Who owns an identity and which credentials reach which tokens: no identity takeover through
//! `spec.identityId`, adoption under the operator-wide default credentials only when allowed,
//! adopted identities retained on deletion by default, a GA creation whose answer was lost is
//! counted, and a rotated default key reaches exactly the tokens that use it.

use std::time::{Duration, Instant};

use acs_identity_operator::api::{CommunicationToken, CommunicationUser, CommunicationUserSpec};
use kube::api::{Api, DeleteParams};

use crate::harness::*;
use crate::support::{wait_for, TestEnv};

fn adopt(id: &str) -> CommunicationUserSpec {
    CommunicationUserSpec {
        identity_id: Some(id.to_string()),
        ..CommunicationUserSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_identity_recorded_by_another_user_cannot_be_taken_over() {
    let env = TestEnv::new("own-takeover").await;
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
    create_user(&env, "owner", CommunicationUserSpec::default()).await;
    let users: Api<CommunicationUser> = env.api();
    let owner = wait_for(&users, "owner", CONVERGE, "user Ready", user_ready(""))
        .await
        .unwrap();
    let id = owner.identity_id().unwrap().to_string();

    create_user(&env, "thief", adopt(&id)).await;
    let thief = wait_for(
        &users,
        "thief",
        CONVERGE,
        "IdentityInUse",
        user_ready("IdentityInUse"),
    )
    .await
    .unwrap();
    assert_eq!(thief.identity_id(), None);
    // Deleting the refused one leaves the identity alone (it never held it).
    users
        .delete("thief", &DeleteParams::default())
        .await
        .unwrap();
    crate::support::eventually("thief gone", CONVERGE, || async {
        match users.get_opt("thief").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(acs.identity(&id).await.unwrap()["deleted"], false);
    assert_eq!(acs.calls("deleteIdentity").await, 0);

    // An identity nobody records can be adopted, and is retained by default on deletion.
    let free = acs
        .client()
        .create_identity(Default::default())
        .await
        .unwrap();
    let free_id = free.identity.id.clone();
    create_user(&env, "adopter", adopt(&free_id)).await;
    wait_for(
        &users,
        "adopter",
        CONVERGE,
        "adopted",
        user_ready("IdentityAdopted"),
    )
    .await
    .unwrap();
    users
        .delete("adopter", &DeleteParams::default())
        .await
        .unwrap();
    wait_event(&env, |(reason, _, _)| reason == "IdentityRetained").await;
    assert_eq!(acs.identity(&free_id).await.unwrap()["deleted"], false);
    drop(op);
}

#[tokio::test(flavor = "multi_thread")]
async fn adoption_under_the_default_credentials_is_refused_unless_allowed() {
    let home = TestEnv::new("own-default-home").await;
    let tenant = TestEnv::new("own-default-tenant").await;
    let acs = Acs::start().await;
    put_secret(
        &home,
        "operator-acs",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    opt_in_to_default_credentials(&tenant).await;
    let spawn = |allow: bool| {
        let mut args = OperatorArgs::new(&home, &acs)
            .arg("--default-credentials-secret")
            .arg(&format!("{}/operator-acs", home.ns()))
            .arg("--allow-default-credentials-adoption")
            .arg(if allow { "true" } else { "false" });
        args.namespaces = vec![home.ns().to_string(), tenant.ns().to_string()];
        Operator::spawn(args)
    };
    let mut op = spawn(false);
    op.wait_ready().await;
    let someone_elses = acs
        .client()
        .create_identity(Default::default())
        .await
        .unwrap();
    let id = someone_elses.identity.id.clone();
    create_user(&tenant, "u", adopt(&id)).await;
    let users: Api<CommunicationUser> = tenant.api();
    let u = wait_for(
        &users,
        "u",
        CONVERGE,
        "AdoptionNotAllowed",
        user_ready("AdoptionNotAllowed"),
    )
    .await
    .unwrap();
    assert_eq!(u.identity_id(), None);

    // With the chart's explicit allowance, the same user adopts it.
    op.stop();
    let op = spawn(true);
    op.wait_ready().await;
    wait_for(
        &users,
        "u",
        CONVERGE,
        "adopted",
        user_ready("IdentityAdopted"),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ga_create_whose_answer_is_lost_is_counted_for_every_orphan() {
    const USERS: usize = 200;
    let env = TestEnv::new("own-ga-ambiguous").await;
    let acs = Acs::start().await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    // One creation in five is processed, then its connection dropped before the answer.
    acs.set_faults(serde_json::json!({"dropAfterRate": 0.2, "operations": ["createIdentity"]}))
        .await;
    let op = Operator::spawn(
        OperatorArgs::new(&env, &acs)
            .arg("--acs-api-mode")
            .arg("ga")
            .arg("--failure-backoff-max")
            .arg("2s"),
    );
    op.wait_ready().await;
    let users: Api<CommunicationUser> = env.api();
    for i in 0..USERS {
        create_user(&env, &format!("u{i}"), CommunicationUserSpec::default()).await;
    }
    crate::support::eventually("every user Ready", Duration::from_secs(180), || async {
        let ready = users
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .iter()
            .filter(|u| u.identity_id().is_some())
            .count();
        if ready == USERS {
            Ok(())
        } else {
            Err(format!("{ready}/{USERS}"))
        }
    })
    .await;
    let identities = acs.identities().await.len();
    let orphans = identities - USERS;
    let counted = op
        .metric("acs_identity_operator_ambiguous_identity_creates_total")
        .await as usize;
    assert!(orphans > 0, "the fault injection dropped no answer");
    eprintln!(
        "figure: {USERS} GA users, {identities} identities, {orphans} orphans, {counted} counted"
    );
    assert_eq!(
        counted, orphans,
        "every orphan is counted ({identities} identities for {USERS} users)"
    );
    wait_event(&env, |(reason, _, _)| reason == "AmbiguousCreate").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_default_key_reissues_exactly_the_tokens_that_use_it() {
    rotated_default_key("own-rotate", true).await;
}

/// Namespaced mode with the operator's own namespace not watched: the default Secret is
/// polled, so the rotation arrives within one poll period (30 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_unwatched_default_key_reaches_its_tokens_within_the_poll_period() {
    rotated_default_key("own-rotate-unwatched", false).await;
}

async fn rotated_default_key(test: &str, watch_home: bool) {
    let home = TestEnv::new(&format!("{test}-home")).await;
    let a = TestEnv::new(&format!("{test}-a")).await;
    let b = TestEnv::new(&format!("{test}-b")).await;
    let acs = Acs::start().await;
    put_secret(
        &home,
        "operator-acs",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    opt_in_to_default_credentials(&a).await;
    opt_in_to_default_credentials(&b).await;
    // `b` also has a user on credentials of its own (the resource's other key), which the
    // rotation must not touch.
    let secondary = acs.regenerate("secondary").await;
    put_secret(&b, "own-acs", "connectionString", &secondary).await;
    let mut args = OperatorArgs::new(&home, &acs)
        .arg("--default-credentials-secret")
        .arg(&format!("{}/operator-acs", home.ns()));
    args.namespaces = vec![a.ns().to_string(), b.ns().to_string()];
    if watch_home {
        args.namespaces.push(home.ns().to_string());
    }
    let op = Operator::spawn(args);
    op.wait_ready().await;
    for env in [&a, &b] {
        create_user(env, "alice", CommunicationUserSpec::default()).await;
        create_token(env, "web", token_spec("alice")).await;
    }
    let own: CommunicationUserSpec = serde_json::from_value(serde_json::json!({
        "credentials": {"secretName": "own-acs"}
    }))
    .unwrap();
    create_user(&b, "bob", own).await;
    create_token(&b, "bob-web", token_spec("bob")).await;
    for (env, name) in [(&a, "web"), (&b, "web"), (&b, "bob-web")] {
        let api: Api<CommunicationToken> = env.api();
        wait_for(&api, name, CONVERGE, "token Ready", token_ready(""))
            .await
            .unwrap();
    }
    let reconciles =
        "acs_identity_operator_reconciles_total{controller=\"communicationtoken\",result=\"ok\"}";

    // Settle: the writes of the first issuances wake their objects once more.
    let mut before = op.metric(reconciles).await;
    let settle = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = op.metric(reconciles).await;
        if now == before {
            break;
        }
        assert!(settle.elapsed() < CONVERGE, "reconciles never settled");
        before = now;
    }
    // An unrelated Secret in a namespace wakes no token.
    put_secret(&a, "unrelated", "x", "y").await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            op.metric(reconciles).await,
            before,
            "an unrelated Secret woke a token"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The key of the default credentials is regenerated and the Secret updated: both tokens
    // on it re-issue (their old tokens are revoked by the regeneration); bob's stays.
    let bob_before = secret_token(&b, "bob-web").await.unwrap();
    let fresh = acs.regenerate("primary").await;
    put_secret(&home, "operator-acs", "connectionString", &fresh).await;
    for env in [&a, &b] {
        let api: Api<CommunicationToken> = env.api();
        wait_for(
            &api,
            "web",
            // Watched: at once (a few seconds on a busy machine); polled: one 30 s period.
            if watch_home {
                Duration::from_secs(10)
            } else {
                Duration::from_secs(40)
            },
            "re-issued under the new key",
            |t: Option<&CommunicationToken>| {
                t.and_then(|t| t.status.as_ref())
                    .is_some_and(|s| s.revision >= 2)
            },
        )
        .await
        .unwrap();
        let token = secret_token(env, "web").await.unwrap();
        let (valid, reason) = acs.validate(&token).await;
        assert!(valid, "{reason}");
    }
    assert_eq!(secret_token(&b, "bob-web").await.unwrap(), bob_before);
}
