//! CommunicationToken on the real control plane against the emulator: issue, rotation,
//! restart, revocation on spec change, deletion, self-healing, conflicts, suspend, forced
//! rotation, key rotation, and no secret in logs, events or status.

use acs_emulator::EmulatorConfig;
use acs_identity_operator::api::token::Scope;
use acs_identity_operator::api::{CommunicationToken, CommunicationUser, CommunicationUserSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;

use crate::harness::*;
use crate::support::{eventually, wait_for, TestEnv};

struct Setup {
    env: TestEnv,
    acs: Acs,
    op: Operator,
    user_id: String,
}

async fn setup(test: &str, emu: EmulatorConfig) -> Setup {
    let env = TestEnv::new(test).await;
    let acs = Acs::start_with(emu).await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    let op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    let users: Api<CommunicationUser> = env.api();
    let u = wait_for(&users, "alice", CONVERGE, "user Ready", user_ready(""))
        .await
        .unwrap();
    let user_id = u.identity_id().unwrap().to_string();
    Setup {
        env,
        acs,
        op,
        user_id,
    }
}

async fn ready_token(env: &TestEnv, name: &str) -> CommunicationToken {
    let api: Api<CommunicationToken> = env.api();
    wait_for(&api, name, CONVERGE, "token Ready", token_ready(""))
        .await
        .unwrap()
}

fn revision(t: &CommunicationToken) -> i64 {
    t.status.as_ref().map_or(0, |s| s.revision)
}

async fn wait_revision(env: &TestEnv, name: &str, min: i64) -> CommunicationToken {
    let api: Api<CommunicationToken> = env.api();
    wait_for(
        &api,
        name,
        CONVERGE,
        "a new revision",
        move |t: Option<&CommunicationToken>| {
            t.is_some_and(|t| {
                revision(t) >= min
                    && t.status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                        .is_some_and(|c| c.status == "True")
            })
        },
    )
    .await
    .unwrap()
}

async fn tokens_issued(acs: &Acs) -> u64 {
    acs.identities()
        .await
        .iter()
        .map(|i| i["tokensIssued"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn token_secret_holds_a_valid_token_that_rotates_before_it_expires() {
    let emu = EmulatorConfig {
        token_lifetime_seconds: Some(24),
        ..EmulatorConfig::default()
    };
    let s = setup("token-rotate", emu).await;
    create_token(&s.env, "web", token_spec("alice")).await;
    let t = ready_token(&s.env, "web").await;
    let st = t.status.clone().unwrap();
    assert_eq!(st.secret_name.as_deref(), Some("web"));
    assert_eq!(st.revision, 1);
    assert_eq!(st.identity_id.as_deref(), Some(s.user_id.as_str()));
    assert!(st.renewal_time.unwrap().0 < st.expires_on.clone().unwrap().0);

    let secrets: Api<Secret> = s.env.api();
    let secret = secrets.get("web").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("communication.acs.dev/token"));
    let data = secret.data.clone().unwrap();
    let keys: Vec<_> = data.keys().cloned().collect();
    assert_eq!(keys, ["expiresOn", "scopes", "token", "userId"]);
    assert_eq!(data["scopes"].0, b"voip");
    assert_eq!(
        String::from_utf8(data["userId"].0.clone()).unwrap(),
        s.user_id
    );
    let expires = String::from_utf8(data["expiresOn"].0.clone()).unwrap();
    assert!(
        expires.ends_with('Z') && expires.parse::<jiff::Timestamp>().is_ok(),
        "{expires}"
    );
    let owner = &secret.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("CommunicationToken", Some(true))
    );
    let first = secret_token(&s.env, "web").await.unwrap();
    assert!(s.acs.validate(&first).await.0);

    // Rotation arrives before expiry, and does not revoke the previous token.
    let t2 = wait_revision(&s.env, "web", 2).await;
    let second = secret_token(&s.env, "web").await.unwrap();
    assert_ne!(first, second);
    assert!(t2.status.as_ref().unwrap().expires_on.as_ref().unwrap().0 > st.expires_on.unwrap().0);
    let (old_valid, reason) = s.acs.validate(&first).await;
    assert!(
        old_valid,
        "a rotation must not revoke the old token: {reason}"
    );
    assert!(s.acs.validate(&second).await.0);
    wait_event(&s.env, |(r, _, _)| r == "TokenRotated").await;
    let m = s.op.metrics_text().await;
    assert!(
        m.contains("acs_identity_operator_token_issuances_total"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_restart_reissues_nothing_that_is_not_due() {
    let mut s = setup("token-restart", EmulatorConfig::default()).await;
    for n in ["a", "b", "c"] {
        create_token(&s.env, n, token_spec("alice")).await;
    }
    for n in ["a", "b", "c"] {
        ready_token(&s.env, n).await;
    }
    let before = tokens_issued(&s.acs).await;
    assert_eq!(before, 3);
    s.op.kill();
    let op = Operator::spawn(OperatorArgs::new(&s.env, &s.acs));
    op.wait_ready().await;
    // Wait until the new operator has reconciled every token once.
    eventually(
        "every token reconciled after the restart",
        CONVERGE,
        || async {
            let m = op.metrics_text().await;
            let n: f64 = m
                .lines()
                .filter(|l| {
                    l.starts_with("acs_identity_operator_reconciles_total{")
                        && l.contains("communicationtoken")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if n >= 3.0 {
                Ok(())
            } else {
                Err(n)
            }
        },
    )
    .await;
    assert_eq!(
        tokens_issued(&s.acs).await,
        before,
        "no token re-issued after a restart"
    );
    let api: Api<CommunicationToken> = s.env.api();
    for n in ["a", "b", "c"] {
        assert_eq!(revision(&api.get(n).await.unwrap()), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scope_change_revokes_once_and_reissues_every_sibling() {
    let s = setup("token-scopes", EmulatorConfig::default()).await;
    create_token(&s.env, "calls", token_spec("alice")).await;
    let mut chat = token_spec("alice");
    chat.scopes = vec![Scope::Chat];
    create_token(&s.env, "chat", chat).await;
    ready_token(&s.env, "calls").await;
    ready_token(&s.env, "chat").await;
    let old_calls = secret_token(&s.env, "calls").await.unwrap();
    let old_chat = secret_token(&s.env, "chat").await.unwrap();

    let api: Api<CommunicationToken> = s.env.api();
    api.patch(
        "calls",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"scopes": ["voip", "chat"]}})),
    )
    .await
    .unwrap();
    let calls = wait_revision(&s.env, "calls", 2).await;
    let chat = wait_revision(&s.env, "chat", 2).await;
    assert_eq!(calls.status.as_ref().unwrap().revocation_epoch, Some(1));
    assert_eq!(chat.status.as_ref().unwrap().revocation_epoch, Some(1));
    assert_eq!(
        calls.status.as_ref().unwrap().issued_scopes,
        vec![Scope::Voip, Scope::Chat]
    );
    assert_eq!(s.acs.revocations(&s.user_id).await, 1, "exactly one revoke");
    assert!(!s.acs.validate(&old_calls).await.0, "old token revoked");
    assert!(
        !s.acs.validate(&old_chat).await.0,
        "sibling's old token revoked"
    );
    let new_calls = secret_token(&s.env, "calls").await.unwrap();
    let new_chat = secret_token(&s.env, "chat").await.unwrap();
    assert!(s.acs.validate(&new_calls).await.0);
    assert!(
        s.acs.validate(&new_chat).await.0,
        "the sibling's new token is valid"
    );
    let secrets: Api<Secret> = s.env.api();
    assert_eq!(
        secrets.get("calls").await.unwrap().data.unwrap()["scopes"].0,
        b"voip,chat"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_revokes_only_when_revoke_on_delete_is_set() {
    let s = setup("token-delete", EmulatorConfig::default()).await;
    let mut quiet = token_spec("alice");
    quiet.revoke_on_delete = false;
    create_token(&s.env, "quiet", quiet).await;
    create_token(&s.env, "loud", token_spec("alice")).await;
    create_token(&s.env, "sibling", token_spec("alice")).await;
    for n in ["quiet", "loud", "sibling"] {
        ready_token(&s.env, n).await;
    }
    let api: Api<CommunicationToken> = s.env.api();
    let secrets: Api<Secret> = s.env.api();

    // One series per object and metric, named by namespace and name (the operator's cache may
    // trail the watch that saw them Ready by a moment).
    let ns = s.env.ns().to_string();
    let mut want = vec![format!(
        "acs_identity_operator_user_ready_status{{namespace=\"{ns}\",name=\"alice\",condition=\"True\"}} 1"
    )];
    for n in ["quiet", "loud", "sibling"] {
        let st = api.get(n).await.unwrap().status.unwrap();
        let labels = format!("namespace=\"{ns}\",name=\"{n}\"");
        want.push(format!(
            "acs_identity_operator_token_ready_status{{{labels},condition=\"True\"}} 1"
        ));
        want.push(format!(
            "acs_identity_operator_token_expiration_timestamp_seconds{{{labels}}} {}.0",
            st.expires_on.unwrap().0.as_second()
        ));
        want.push(format!(
            "acs_identity_operator_token_renewal_timestamp_seconds{{{labels}}} {}.0",
            st.renewal_time.unwrap().0.as_second()
        ));
    }
    eventually("every object's series", CONVERGE, || async {
        let m = s.op.metrics_text().await;
        let missing: Vec<&String> = want
            .iter()
            .filter(|w| !m.lines().any(|l| l == *w))
            .collect();
        match missing.is_empty() {
            true => Ok(()),
            false => Err(format!("{missing:?} in\n{m}")),
        }
    })
    .await;

    let quiet_token = secret_token(&s.env, "quiet").await.unwrap();
    let q = api.get("quiet").await.unwrap();
    api.delete("quiet", &DeleteParams::default()).await.unwrap();
    wait_for(
        &api,
        "quiet",
        CONVERGE,
        "deleted",
        conditions::is_deleted(&q.metadata.uid.unwrap()),
    )
    .await;
    wait_for(
        &secrets,
        "quiet",
        CONVERGE,
        "secret removed",
        |s: Option<&Secret>| s.is_none(),
    )
    .await;
    assert_eq!(
        s.acs.revocations(&s.user_id).await,
        0,
        "revokeOnDelete: false revokes nothing"
    );
    assert!(s.acs.validate(&quiet_token).await.0);
    // A deleted token's series go with it.
    let quiet = format!("namespace=\"{ns}\",name=\"quiet\"");
    eventually("the deleted token's series gone", CONVERGE, || async {
        let m = s.op.metrics_text().await;
        match m.lines().filter(|l| l.contains(&quiet)).count() {
            0 => Ok(()),
            n => Err(n),
        }
    })
    .await;

    let l = api.get("loud").await.unwrap();
    api.delete("loud", &DeleteParams::default()).await.unwrap();
    wait_for(
        &api,
        "loud",
        CONVERGE,
        "deleted",
        conditions::is_deleted(&l.metadata.uid.unwrap()),
    )
    .await;
    wait_for(
        &secrets,
        "loud",
        CONVERGE,
        "secret removed",
        |s: Option<&Secret>| s.is_none(),
    )
    .await;
    assert_eq!(s.acs.revocations(&s.user_id).await, 1);
    // The sibling is re-issued under the new epoch.
    let sib = wait_revision(&s.env, "sibling", 2).await;
    assert_eq!(sib.status.unwrap().revocation_epoch, Some(1));
    assert!(
        s.acs
            .validate(&secret_token(&s.env, "sibling").await.unwrap())
            .await
            .0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_user_removes_its_token_secrets_without_a_separate_revoke() {
    let s = setup("token-user-gone", EmulatorConfig::default()).await;
    create_token(&s.env, "t", token_spec("alice")).await;
    ready_token(&s.env, "t").await;
    let users: Api<CommunicationUser> = s.env.api();
    let u = users.get("alice").await.unwrap();
    users
        .delete("alice", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        &users,
        "alice",
        CONVERGE,
        "user deleted",
        conditions::is_deleted(&u.metadata.uid.unwrap()),
    )
    .await;
    let api: Api<CommunicationToken> = s.env.api();
    wait_for(
        &api,
        "t",
        CONVERGE,
        "UserNotFound",
        token_ready("UserNotFound"),
    )
    .await;
    let secrets: Api<Secret> = s.env.api();
    wait_for(
        &secrets,
        "t",
        CONVERGE,
        "secret removed",
        |s: Option<&Secret>| s.is_none(),
    )
    .await;
    assert_eq!(
        s.acs.revocations(&s.user_id).await,
        0,
        "deleting the identity covers it"
    );
    assert_eq!(s.acs.identity(&s.user_id).await.unwrap()["deleted"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_deleted_or_edited_by_hand_is_restored_with_a_fresh_token() {
    let s = setup("token-heal", EmulatorConfig::default()).await;
    create_token(&s.env, "t", token_spec("alice")).await;
    ready_token(&s.env, "t").await;
    let secrets: Api<Secret> = s.env.api();
    let first = secret_token(&s.env, "t").await.unwrap();

    secrets.delete("t", &DeleteParams::default()).await.unwrap();
    let t = wait_revision(&s.env, "t", 2).await;
    let second = secret_token(&s.env, "t").await.unwrap();
    assert_ne!(first, second);
    assert!(s.acs.validate(&second).await.0);
    assert_eq!(
        t.status
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .reason,
        "SecretRestored"
    );

    // An edit by hand (another field manager) is detected by the keyed digest.
    secrets
        .patch(
            "t",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"token": "Zm9yZ2Vk"}})),
        )
        .await
        .unwrap();
    wait_revision(&s.env, "t", 3).await;
    let third = secret_token(&s.env, "t").await.unwrap();
    assert_ne!(third, "forged");
    assert!(s.acs.validate(&third).await.0);
    wait_event(&s.env, |(r, _, _)| r == "SecretRestored").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_secret_and_a_second_claimant_get_a_conflict() {
    let s = setup("token-conflict", EmulatorConfig::default()).await;
    let secrets: Api<Secret> = s.env.api();
    let foreign: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "taken"}, "stringData": {"token": "mine"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    create_token(&s.env, "taken", token_spec("alice")).await;
    let api: Api<CommunicationToken> = s.env.api();
    wait_for(
        &api,
        "taken",
        CONVERGE,
        "SecretConflict",
        token_ready("SecretConflict"),
    )
    .await;
    let still = secrets.get("taken").await.unwrap();
    assert_eq!(
        still.data.unwrap()["token"],
        ByteString(b"mine".to_vec()),
        "never taken over"
    );
    assert!(still.metadata.owner_references.is_none());
    // What the conflict costs: a never-issued token creates its Secret without reading it
    // first, so at most the one issue before the create's 409 (then the conflict is read, not
    // re-issued: the status names it).
    let issued = tokens_issued(&s.acs).await;
    assert!(issued <= 1, "{issued} issues for a conflicting Secret");

    create_token(&s.env, "first", token_spec("alice")).await;
    ready_token(&s.env, "first").await;
    let mut second = token_spec("alice");
    second.secret_name = Some("first".into());
    create_token(&s.env, "second", second).await;
    wait_for(
        &api,
        "second",
        CONVERGE,
        "SecretConflict",
        token_ready("SecretConflict"),
    )
    .await;
    assert!(api
        .get("first")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True"));
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_stops_issuing_and_the_rotate_annotation_forces_a_rotation() {
    let s = setup("token-suspend", EmulatorConfig::default()).await;
    let mut sus = token_spec("alice");
    sus.suspend = true;
    create_token(&s.env, "sus", sus).await;
    let api: Api<CommunicationToken> = s.env.api();
    wait_for(&api, "sus", CONVERGE, "Suspended", token_ready("Suspended")).await;
    let secrets: Api<Secret> = s.env.api();
    assert!(secrets.get_opt("sus").await.unwrap().is_none());
    api.patch(
        "sus",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    ready_token(&s.env, "sus").await;
    let before = secret_token(&s.env, "sus").await.unwrap();
    api.patch(
        "sus",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "metadata": {"annotations": {"communication.acs.dev/rotate": "now-1"}}
        })),
    )
    .await
    .unwrap();
    let t = wait_revision(&s.env, "sus", 2).await;
    assert_eq!(
        t.status.unwrap().handled_rotate_annotation.as_deref(),
        Some("now-1")
    );
    assert_ne!(before, secret_token(&s.env, "sus").await.unwrap());
    assert!(
        s.acs.validate(&before).await.0,
        "a forced rotation does not revoke"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_regenerated_key_and_updated_credentials_give_valid_tokens_again() {
    let s = setup("token-rekey", EmulatorConfig::default()).await;
    create_token(&s.env, "t", token_spec("alice")).await;
    ready_token(&s.env, "t").await;
    let old = secret_token(&s.env, "t").await.unwrap();
    let new_conn = s.acs.regenerate("primary").await;
    assert!(
        !s.acs.validate(&old).await.0,
        "regenerating the key revokes its tokens"
    );
    put_secret(&s.env, "acs-credentials", "connectionString", &new_conn).await;
    wait_revision(&s.env, "t", 2).await;
    let fresh = secret_token(&s.env, "t").await.unwrap();
    assert!(s.acs.validate(&fresh).await.0);
    wait_event(&s.env, |(r, n, _)| {
        r == "TokenRotated" && n.contains("key_rotated")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_key_or_token_appears_in_logs_events_or_status() {
    let mut s = setup(
        "token-leaks",
        EmulatorConfig {
            token_lifetime_seconds: Some(20),
            ..EmulatorConfig::default()
        },
    )
    .await;
    create_token(&s.env, "a", token_spec("alice")).await;
    create_token(&s.env, "b", token_spec("alice")).await;
    ready_token(&s.env, "a").await;
    ready_token(&s.env, "b").await;
    let mut tokens = vec![
        secret_token(&s.env, "a").await.unwrap(),
        secret_token(&s.env, "b").await.unwrap(),
    ];
    // A rotation and a revocation, so every code path that touches a token has run.
    wait_revision(&s.env, "a", 2).await;
    let api: Api<CommunicationToken> = s.env.api();
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"scopes": ["chat"]}})),
    )
    .await
    .unwrap();
    wait_revision(&s.env, "b", 2).await;
    tokens.push(secret_token(&s.env, "a").await.unwrap());
    tokens.push(secret_token(&s.env, "b").await.unwrap());
    let keys: Vec<String> = s
        .acs
        .emu
        .access_keys()
        .iter()
        .map(|k| k.to_base64())
        .collect();

    s.op.stop();
    let logs = s.op.logs();
    assert!(logs.contains("token issued"), "trace logs were captured");
    assert_no_secrets(&logs, &keys, &tokens, "operator logs");
    let evs = events(&s.env).await;
    assert_no_secrets(&format!("{evs:?}"), &keys, &tokens, "events");
    let statuses =
        serde_json::to_string(&api.list(&Default::default()).await.unwrap().items).unwrap();
    assert_no_secrets(&statuses, &keys, &tokens, "token resources");
    let users: Api<CommunicationUser> = s.env.api();
    let statuses =
        serde_json::to_string(&users.list(&Default::default()).await.unwrap().items).unwrap();
    assert_no_secrets(&statuses, &keys, &tokens, "user resources");
}
