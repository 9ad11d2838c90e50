//! CommunicationUser on the real control plane against the emulator: creation, crash-safe
//! get-or-create, adoption, every credentials source, revocation, deletion policies, admission
//! validation, leader election and readiness.

use acs_identity_operator::acs::{AcsClient, ClientOptions, ConnectionString, CreateIdentity};
use acs_identity_operator::api::{
    CommunicationUser, CommunicationUserSpec, CredentialsRef, DeletionPolicy,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;

use crate::harness::*;
use crate::support::{wait_for, TestEnv};

fn emulator_client(acs: &Acs, preview: bool) -> AcsClient {
    let options = ClientOptions {
        ca_pem: Some(acs.emu.ca_pem().as_bytes().to_vec()),
        api_mode: if preview {
            acs_identity_operator::acs::ApiMode::Preview
        } else {
            acs_identity_operator::acs::ApiMode::Ga
        },
        ..ClientOptions::default()
    };
    AcsClient::new(
        ConnectionString::parse(&acs.connection_string()).unwrap(),
        options,
    )
    .unwrap()
}

async fn ready_user(env: &TestEnv, name: &str) -> CommunicationUser {
    let api: Api<CommunicationUser> = env.api();
    wait_for(&api, name, CONVERGE, "user Ready", user_ready(""))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_is_created_recorded_and_deleted_with_the_resource() {
    let env = TestEnv::new("user-create").await;
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

    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    let user = ready_user(&env, "alice").await;
    let status = user.status.clone().unwrap();
    let id = status.identity_id.clone().unwrap();
    assert!(
        id.starts_with(&format!("8:acs:{}_", acs.emu.resource_id())),
        "{id}"
    );
    assert_eq!(
        status.endpoint.as_deref(),
        Some(acs.emu.endpoint().as_str())
    );
    assert_eq!(
        status.resource_id.as_deref(),
        Some(acs.emu.resource_id().to_string().as_str())
    );
    assert_eq!(status.observed_generation, user.metadata.generation);
    assert!(user
        .metadata
        .finalizers
        .unwrap()
        .contains(&"communication.acs.dev/identity".to_string()));
    let rec = acs
        .identity(&id)
        .await
        .expect("emulator knows the identity");
    assert_eq!(rec["deleted"], false);
    assert_eq!(acs.identities().await.len(), 1);
    wait_event(&env, |(r, n, _)| r == "IdentityCreated" && n.contains(&id)).await;

    let api: Api<CommunicationUser> = env.api();
    api.delete("alice", &DeleteParams::default()).await.unwrap();
    wait_for(
        &api,
        "alice",
        CONVERGE,
        "user deleted",
        conditions::is_deleted(&user.metadata.uid.clone().unwrap()),
    )
    .await;
    assert_eq!(
        acs.identity(&id).await.unwrap()["deleted"],
        true,
        "identity deleted in ACS"
    );
    let metrics = op.metrics_text().await;
    assert!(
        metrics.contains("acs_identity_operator_reconciles_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("acs_identity_operator_acs_requests_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retain_keeps_the_identity_and_adoption_manages_it_again() {
    let env = TestEnv::new("user-retain").await;
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

    create_user(
        &env,
        "kept",
        CommunicationUserSpec {
            deletion_policy: Some(DeletionPolicy::Retain),
            ..Default::default()
        },
    )
    .await;
    let user = ready_user(&env, "kept").await;
    let id = user.identity_id().unwrap().to_string();
    let api: Api<CommunicationUser> = env.api();
    api.delete("kept", &DeleteParams::default()).await.unwrap();
    wait_for(
        &api,
        "kept",
        CONVERGE,
        "user deleted",
        conditions::is_deleted(&user.metadata.uid.clone().unwrap()),
    )
    .await;
    assert_eq!(
        acs.identity(&id).await.unwrap()["deleted"],
        false,
        "Retain keeps the identity"
    );

    // Adopt the retained identity under a new resource (an adopted identity would be
    // retained by default; this one asks for Delete).
    create_user(
        &env,
        "adopted",
        CommunicationUserSpec {
            identity_id: Some(id.clone()),
            deletion_policy: Some(DeletionPolicy::Delete),
            ..Default::default()
        },
    )
    .await;
    let adopted = ready_user(&env, "adopted").await;
    assert_eq!(adopted.identity_id(), Some(id.as_str()));
    assert_eq!(acs.identities().await.len(), 1, "adoption creates nothing");
    wait_event(&env, |(r, _, _)| r == "IdentityAdopted").await;
    api.delete("adopted", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        &api,
        "adopted",
        CONVERGE,
        "user deleted",
        conditions::is_deleted(&adopted.metadata.uid.clone().unwrap()),
    )
    .await;
    assert_eq!(
        acs.identity(&id).await.unwrap()["deleted"],
        true,
        "Delete policy removes an adopted identity"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn preview_get_or_create_survives_a_crash_between_the_call_and_the_status_write() {
    let env = TestEnv::new("user-crash").await;
    let acs = Acs::start().await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    // The resource exists before any operator runs, so its UID (the externalId) is known.
    let user = create_user(&env, "bob", CommunicationUserSpec::default()).await;
    let external_id = format!("k8s-{}", user.metadata.uid.clone().unwrap());
    // Simulate the crash: the create call reached ACS, the status write never happened.
    let pre = emulator_client(&acs, true)
        .create_identity(CreateIdentity {
            external_id: Some(external_id.clone()),
            token: None,
        })
        .await
        .unwrap();
    assert!(pre.created);

    let op = Operator::spawn(
        OperatorArgs::new(&env, &acs)
            .arg("--acs-api-mode")
            .arg("preview"),
    );
    op.wait_ready().await;
    let user = ready_user(&env, "bob").await;
    assert_eq!(
        user.identity_id(),
        Some(pre.identity.id.as_str()),
        "the same identity is recovered"
    );
    assert_eq!(
        user.status.unwrap().external_id.as_deref(),
        Some(external_id.as_str())
    );
    assert_eq!(acs.identities().await.len(), 1, "no identity leaked");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_resolve_from_a_reference_an_aso_key_and_a_late_secret() {
    let env = TestEnv::new("user-creds").await;
    let acs = Acs::start().await;
    let op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;

    // No credentials anywhere: a condition, not a crash.
    create_user(&env, "late", CommunicationUserSpec::default()).await;
    let api: Api<CommunicationUser> = env.api();
    wait_for(
        &api,
        "late",
        CONVERGE,
        "CredentialsNotFound",
        user_ready("CredentialsNotFound"),
    )
    .await;
    wait_event(&env, |(r, _, _)| r == "CredentialsNotFound").await;
    // The Secret created later is noticed through the metadata watch.
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    ready_user(&env, "late").await;

    // A Secret written by Azure Service Operator v2, named by key.
    put_secret(
        &env,
        "aso-acs",
        "primaryConnectionString",
        &acs.connection_string(),
    )
    .await;
    create_user(
        &env,
        "aso",
        CommunicationUserSpec {
            credentials: Some(CredentialsRef::from_secret(
                "aso-acs",
                "primaryConnectionString",
            )),
            ..Default::default()
        },
    )
    .await;
    ready_user(&env, "aso").await;

    // A malformed string: CredentialsInvalid, and the key is not echoed.
    put_secret(
        &env,
        "broken",
        "connectionString",
        "endpoint=https://x/;c2VjcmV0c2VjcmV0c2VjcmV0",
    )
    .await;
    create_user(
        &env,
        "broken",
        CommunicationUserSpec {
            credentials: Some(CredentialsRef::from_secret("broken", "connectionString")),
            ..Default::default()
        },
    )
    .await;
    let b = wait_for(
        &api,
        "broken",
        CONVERGE,
        "CredentialsInvalid",
        user_ready("CredentialsInvalid"),
    )
    .await
    .unwrap();
    let msg = serde_json::to_string(&b.status).unwrap();
    assert!(!msg.contains("c2VjcmV0"), "{msg}");
    // The operator kept serving the others and is still alive.
    let mut op = op;
    assert!(op.is_running());
    assert_eq!(acs.identities().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn default_credentials_apply_only_in_namespaces_that_opt_in() {
    let env = TestEnv::new("user-default").await;
    let other = TestEnv::new("user-default-optin").await;
    let acs = Acs::start().await;
    // The operator-wide credentials live in the first namespace.
    put_secret(
        &env,
        "operator-acs",
        "primaryConnectionString",
        &acs.connection_string(),
    )
    .await;
    let mut args = OperatorArgs::new(&env, &acs)
        .arg("--default-credentials-secret")
        .arg(&format!("{}/operator-acs", env.ns()))
        .arg("--default-credentials-key")
        .arg("primaryConnectionString");
    args.namespaces = vec![env.ns().to_string(), other.ns().to_string()];
    let op = Operator::spawn(args);
    op.wait_ready().await;

    // Not opted in: no credentials.
    create_user(&other, "u", CommunicationUserSpec::default()).await;
    let api: Api<CommunicationUser> = other.api();
    wait_for(
        &api,
        "u",
        CONVERGE,
        "CredentialsNotFound",
        user_ready("CredentialsNotFound"),
    )
    .await;
    // Opt in by label: the user becomes ready.
    opt_in_to_default_credentials(&other).await;
    // A label change does not touch the user; the annotation nudges a reconcile.
    api.patch(
        "u",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"nudge": "1"}}})),
    )
    .await
    .unwrap();
    wait_for(&api, "u", CONVERGE, "user Ready", user_ready("")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_of_another_resource_are_a_mismatch_not_a_new_identity() {
    let env = TestEnv::new("user-mismatch").await;
    let acs = Acs::start().await;
    let other = Acs::start().await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    let op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;
    create_user(&env, "m", CommunicationUserSpec::default()).await;
    let u = ready_user(&env, "m").await;
    // Point the credentials at another ACS resource (the operator trusts only the first CA, so
    // a wrong decision would also fail loudly).
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &other.connection_string(),
    )
    .await;
    let api: Api<CommunicationUser> = env.api();
    let m = wait_for(
        &api,
        "m",
        CONVERGE,
        "ResourceMismatch",
        user_ready("ResourceMismatch"),
    )
    .await
    .unwrap();
    assert_eq!(m.identity_id(), u.identity_id(), "the identity is kept");
    assert!(
        other.identities().await.is_empty(),
        "nothing recreated at the other resource"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_revoke_annotation_revokes_exactly_once_and_bumps_the_epoch() {
    let env = TestEnv::new("user-revoke").await;
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
    create_user(&env, "r", CommunicationUserSpec::default()).await;
    let u = ready_user(&env, "r").await;
    let id = u.identity_id().unwrap().to_string();
    assert_eq!(u.revocation_epoch(), 0);

    let api: Api<CommunicationUser> = env.api();
    api.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "metadata": { "annotations": { "communication.acs.dev/revoke": "password-changed-1" } }
        })),
    )
    .await
    .unwrap();
    let u = wait_for(
        &api,
        "r",
        CONVERGE,
        "epoch 1",
        |u: Option<&CommunicationUser>| u.is_some_and(|u| u.revocation_epoch() == 1),
    )
    .await
    .unwrap();
    assert_eq!(
        u.status
            .unwrap()
            .revocation
            .unwrap()
            .handled_annotation
            .as_deref(),
        Some("password-changed-1")
    );
    assert_eq!(acs.revocations(&id).await, 1, "exactly one revoke call");
    wait_event(&env, |(r, _, _)| r == "TokensRevoked").await;
    // A resync of the same annotation value does not revoke again: restart the operator.
    drop(op);
    let op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;
    api.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"nudge": "1"}}})),
    )
    .await
    .unwrap();
    // The nudge is reconciled when observedGeneration... annotations do not bump generation;
    // wait for the operator's reconcile count to grow instead.
    crate::support::eventually("a reconcile after restart", CONVERGE, || async {
        let m = op.metrics_text().await;
        if m.lines().any(|l| {
            l.starts_with("acs_identity_operator_reconciles_total{")
                && l.contains("communicationuser")
        }) {
            Ok(())
        } else {
            Err("no reconcile yet")
        }
    })
    .await;
    assert_eq!(
        acs.revocations(&id).await,
        1,
        "no second revoke for a handled annotation"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_specs_are_rejected_at_admission_with_the_field_named() {
    let env = TestEnv::new("user-admission").await;
    let users: Api<CommunicationUser> = env.api();
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "user",
            serde_json::json!({"deletionPolicy": "Forget"}),
            "deletionPolicy",
        ),
        (
            "user",
            serde_json::json!({"identityId": "not-an-id"}),
            "identityId",
        ),
        (
            "user",
            serde_json::json!({"credentials": {"secretName": ""}}),
            "secretName",
        ),
        (
            "token",
            serde_json::json!({"userRef": {"name": "u"}, "scopes": ["pstn"]}),
            "scopes",
        ),
        (
            "token",
            serde_json::json!({"userRef": {"name": "u"}, "scopes": []}),
            "scopes",
        ),
        (
            "token",
            serde_json::json!({"userRef": {"name": "u"}, "scopes": ["voip", "voip"]}),
            "scopes",
        ),
        (
            "token",
            serde_json::json!({"userRef": {"name": "u"}, "expiresInMinutes": 59}),
            "expiresInMinutes",
        ),
        (
            "token",
            serde_json::json!({"userRef": {"name": "u"}, "expiresInMinutes": 1441}),
            "expiresInMinutes",
        ),
        (
            "token",
            serde_json::json!({"userRef": {"name": "u"}, "renewBefore": "30m", "renewBeforePercentage": 20}),
            "renewBefore",
        ),
        (
            "token",
            serde_json::json!({"userRef": {"name": "u"}, "expiresInMinutes": 60, "renewBefore": "2h"}),
            "renewBefore",
        ),
        (
            "token",
            serde_json::json!({"userRef": {"name": "u"}, "renewBefore": "10s"}),
            "renewBefore",
        ),
        (
            "token",
            serde_json::json!({"userRef": {"name": "u"}, "renewBeforePercentage": 99}),
            "renewBeforePercentage",
        ),
        (
            "token",
            serde_json::json!({"userRef": {"name": "u"}, "secretName": "Not_Valid"}),
            "secretName",
        ),
        (
            "token",
            serde_json::json!({"userRef": {"name": "u"}, "secretTemplate": {"labels": {"communication.acs.dev/x": "y"}}}),
            "labels",
        ),
        ("token", serde_json::json!({}), "userRef"),
    ];
    for (i, (kind, spec, field)) in cases.into_iter().enumerate() {
        let name = format!("bad-{i}");
        let body = serde_json::json!({
            "apiVersion": "communication.acs.dev/v1alpha1",
            "kind": if kind == "user" { "CommunicationUser" } else { "CommunicationToken" },
            "metadata": {"name": name},
            "spec": spec,
        });
        let err = try_create(&env, &body).await.err();
        let err = err.unwrap_or_else(|| panic!("case {i} ({spec}) was accepted"));
        let text = err.to_string();
        assert!(
            text.contains(field),
            "case {i}: {spec}: message does not name {field}: {text}"
        );
    }
    // Immutable fields.
    let ok = users
        .create(
            &PostParams::default(),
            &CommunicationUser::new(
                "imm",
                CommunicationUserSpec {
                    identity_id: Some("8:acs:00000000-0000-0000-0000-000000000000_x".into()),
                    ..Default::default()
                },
            ),
        )
        .await;
    assert!(ok.is_ok());
    let err = users
        .patch("imm", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"identityId": "8:acs:00000000-0000-0000-0000-000000000000_y"}})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("identityId is immutable"), "{err}");
}

/// Creates any object of our kinds from raw JSON (invalid enum values do not fit the types).
async fn try_create(env: &TestEnv, body: &serde_json::Value) -> Result<(), kube::Error> {
    let gvk = kube::api::GroupVersionKind::gvk(
        "communication.acs.dev",
        "v1alpha1",
        body["kind"].as_str().unwrap(),
    );
    let ar = kube::api::ApiResource::from_gvk(&gvk);
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(env.client.clone(), env.ns(), &ar);
    let obj: kube::api::DynamicObject = serde_json::from_value(body.clone()).unwrap();
    api.create(&PostParams::default(), &obj).await.map(|_| ())
}
