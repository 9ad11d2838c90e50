//! Drift on a token Secret is repaired with the same token when the token is intact (never by
//! delete and recreate), a `secretTemplate` change reaches the Secret without a new token, and
//! the per-object guard bounds unscheduled issuances. Counted with the emulator's stats.

use std::collections::BTreeMap;

use acs_identity_operator::api::{
    CommunicationToken, CommunicationUser, CommunicationUserSpec, SecretTemplate,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::harness::*;
use crate::support::{wait_for, TestEnv};

async fn setup(test: &str, extra: &[&str]) -> (TestEnv, Acs, Operator) {
    let env = TestEnv::new(test).await;
    let acs = Acs::start().await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    let mut args = OperatorArgs::new(&env, &acs);
    for a in extra {
        args = args.arg(a);
    }
    let op = Operator::spawn(args);
    op.wait_ready().await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    let users: Api<CommunicationUser> = env.api();
    wait_for(&users, "alice", CONVERGE, "user Ready", user_ready(""))
        .await
        .unwrap();
    create_token(&env, "web", token_spec("alice")).await;
    let tokens: Api<CommunicationToken> = env.api();
    wait_for(&tokens, "web", CONVERGE, "token Ready", token_ready(""))
        .await
        .unwrap();
    (env, acs, op)
}

fn token_of(s: &Secret) -> Vec<u8> {
    s.data.as_ref().unwrap()["token"].0.clone()
}

/// Waits until the Secret satisfies `done`.
async fn wait_secret(env: &TestEnv, what: &str, done: impl Fn(&Secret) -> bool) -> Secret {
    let secrets: Api<Secret> = env.api();
    wait_for(
        &secrets,
        "web",
        CONVERGE,
        what,
        move |s: Option<&Secret>| s.is_some_and(&done),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_repaired_with_the_same_token_and_other_tools_metadata_stays() {
    let (env, acs, op) = setup("drift-repair", &[]).await;
    let secrets: Api<Secret> = env.api();
    let before = secrets.get("web").await.unwrap();
    let issued = acs.calls("issueAccessToken").await;

    // Someone adds a data key, another tool adds a label and an annotation, and our own
    // token label is edited: kubectl's edit makes it co-owner of those fields.
    let mut edited = before.clone();
    edited
        .data
        .as_mut()
        .unwrap()
        .insert("extra".into(), ByteString(b"x".to_vec()));
    let labels = edited.metadata.labels.as_mut().unwrap();
    labels.insert("other-tool".into(), "keep".into());
    labels.insert("communication.acs.dev/token".into(), "edited".into());
    edited
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("other-tool/note".into(), "keep".into());
    secrets
        .replace("web", &PostParams::default(), &edited)
        .await
        .unwrap();

    let after = wait_secret(&env, "the Secret repaired", |s| {
        s.data.as_ref().is_some_and(|d| !d.contains_key("extra"))
            && s.metadata.labels.as_ref().is_some_and(|l| {
                l.get("communication.acs.dev/token").map(String::as_str) == Some("web")
            })
    })
    .await;
    assert_eq!(token_of(&after), token_of(&before), "the same token");
    assert_eq!(
        after.metadata.uid, before.metadata.uid,
        "replaced, never recreated"
    );
    assert_eq!(after.data.as_ref().unwrap().len(), 4);
    assert_eq!(
        after.metadata.labels.as_ref().unwrap()["other-tool"],
        "keep"
    );
    assert_eq!(
        after.metadata.annotations.as_ref().unwrap()["other-tool/note"],
        "keep"
    );
    assert_eq!(acs.calls("issueAccessToken").await, issued, "no new token");
    wait_event(&env, |(reason, _, _)| reason == "SecretRepaired").await;
    assert_eq!(
        op.metric("acs_identity_operator_secret_repairs_total")
            .await,
        1.0,
        "one drift, one repair"
    );
    let tokens: Api<CommunicationToken> = env.api();
    let t = tokens.get("web").await.unwrap();
    assert_eq!(t.status.unwrap().revision, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_template_change_reaches_the_secret_without_a_new_token() {
    let (env, acs, _op) = setup("drift-template", &[]).await;
    let secrets: Api<Secret> = env.api();
    let before = secrets.get("web").await.unwrap();
    let issued = acs.calls("issueAccessToken").await;
    let tokens: Api<CommunicationToken> = env.api();
    let template = SecretTemplate {
        labels: BTreeMap::from([("team".to_string(), "payments".to_string())]),
        annotations: BTreeMap::from([("owner".to_string(), "ops".to_string())]),
    };
    let patch = serde_json::json!({"spec": {"secretTemplate": template}});
    tokens
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let after = wait_secret(&env, "template labels on the Secret", |s| {
        s.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.get("team").map(String::as_str) == Some("payments"))
    })
    .await;
    assert_eq!(after.metadata.annotations.as_ref().unwrap()["owner"], "ops");
    assert_eq!(token_of(&after), token_of(&before));

    // Removing a key from the template removes it from the Secret.
    let patch = serde_json::json!({"spec": {"secretTemplate": {"labels": {"team": null}}}});
    tokens
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let after = wait_secret(&env, "template label removed", |s| {
        s.metadata
            .labels
            .as_ref()
            .is_some_and(|l| !l.contains_key("team"))
    })
    .await;
    assert_eq!(token_of(&after), token_of(&before));
    assert_eq!(acs.calls("issueAccessToken").await, issued, "no new token");
}

#[tokio::test(flavor = "multi_thread")]
async fn unscheduled_issuances_are_bounded_by_the_guard_and_the_next_is_deferred() {
    let (env, acs, op) = setup(
        "drift-guard",
        &[
            "--unscheduled-issuance-limit",
            "3",
            "--unscheduled-issuance-window",
            "10m",
        ],
    )
    .await;
    let secrets: Api<Secret> = env.api();
    let issued = acs.calls("issueAccessToken").await;
    // Each edit of the token value loses the token: a new one is issued, three times.
    for i in 0..3 {
        let current = secrets.get("web").await.unwrap();
        let mut edited = current.clone();
        edited.data.as_mut().unwrap().insert(
            "token".into(),
            ByteString(format!("forged-{i}").into_bytes()),
        );
        secrets
            .replace("web", &PostParams::default(), &edited)
            .await
            .unwrap();
        let old = token_of(&current);
        wait_secret(&env, "a fresh token", move |s| {
            let t = token_of(s);
            t != old && !t.starts_with(b"forged")
        })
        .await;
    }
    assert_eq!(acs.calls("issueAccessToken").await - issued, 3);

    // The fourth is deferred: a condition, a Warning event and the metric; no ACS call.
    let current = secrets.get("web").await.unwrap();
    let mut edited = current.clone();
    edited
        .data
        .as_mut()
        .unwrap()
        .insert("token".into(), ByteString(b"forged-3".to_vec()));
    secrets
        .replace("web", &PostParams::default(), &edited)
        .await
        .unwrap();
    let tokens: Api<CommunicationToken> = env.api();
    wait_for(
        &tokens,
        "web",
        CONVERGE,
        "Issuing=Deferred",
        |t: Option<&CommunicationToken>| {
            t.and_then(|t| t.status.as_ref())
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Issuing"))
                .is_some_and(|c| c.status == "True" && c.reason == "Deferred")
        },
    )
    .await
    .unwrap();
    wait_event(&env, |(reason, _, _)| reason == "Deferred").await;
    assert_eq!(
        op.metric("acs_identity_operator_unscheduled_deferred_total{action=\"issue\"}")
            .await,
        1.0
    );
    assert_eq!(acs.calls("issueAccessToken").await - issued, 3);
}

/// Issue 21, item 8: a token Secret made `immutable: true` (by a person or a policy tool) cannot
/// take a new token; a rotation replaces it (deleted at its UID and resourceVersion, created
/// mutable) with a Warning event, instead of renewals stopping silently.
#[tokio::test(flavor = "multi_thread")]
async fn an_immutable_token_secret_is_replaced_by_the_next_rotation() {
    let (env, acs, _op) = setup("drift-immutable", &[]).await;
    let secrets: Api<Secret> = env.api();
    let before = secrets.get("web").await.unwrap();
    secrets
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"immutable": true})),
        )
        .await
        .unwrap();
    let issued = acs.calls("issueAccessToken").await;
    let tokens: Api<CommunicationToken> = env.api();
    tokens
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                "communication.acs.dev/rotate": "1"
            }}})),
        )
        .await
        .unwrap();
    let old_token = token_of(&before);
    let old_uid = before.metadata.uid.clone();
    let after = wait_secret(&env, "a new token in a replaced Secret", move |s| {
        token_of(s) != old_token && s.metadata.uid != old_uid
    })
    .await;
    assert_ne!(after.immutable, Some(true), "the replacement is mutable");
    let token = String::from_utf8(token_of(&after)).unwrap();
    let (valid, reason) = acs.validate(&token).await;
    assert!(valid, "{reason}");
    wait_for(&tokens, "web", CONVERGE, "Ready", token_ready(""))
        .await
        .unwrap();
    wait_event(&env, |(reason, _, _)| reason == "SecretReplaced").await;
    assert_eq!(
        acs.calls("issueAccessToken").await - issued,
        1,
        "one issuance for the rotation"
    );
}
