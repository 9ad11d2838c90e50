//! The installed chart put to work: the operator binary run with the exact args and env of the
//! installed Deployment as the chart's ServiceAccount (by impersonation), the core scenarios
//! against the emulator, and the requests that identity must be refused.

use std::fmt::Debug;
use std::path::Path;

use acs_identity_operator::api::token::Scope;
use acs_identity_operator::api::{CommunicationToken, CommunicationUser, CommunicationUserSpec};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use kube::Client;
use serde_json::Value;

use super::audit::BoundRule;
use super::helm::operator_container;
use crate::harness::*;
use crate::support::{eventually, wait_for, TestEnv, SHORT};

/// The installed Deployment of a release, as JSON.
pub async fn installed_deployment(client: &Client, namespace: &str, name: &str) -> Value {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    serde_json::to_value(api.get(name).await.expect("installed Deployment")).expect("json")
}

/// The arguments and environment of the Deployment's operator container, for running the
/// binary outside a pod. Only what cannot work outside a pod is replaced: `KUBECONFIG` (the
/// in-cluster config becomes a kubeconfig impersonating the pod's ServiceAccount),
/// `METRICS_ADDR` (a free loopback port, set by the harness) and `ACS_CA_CERT` (the emulator's
/// CA). Downward-API fields resolve as the kubelet would for a pod named `pod_name`.
pub fn operator_args_from(
    deployment: &Value,
    pod_name: &str,
    kubeconfig: &Path,
    acs: &Acs,
    base: OperatorArgs,
) -> OperatorArgs {
    let container = operator_container(deployment);
    assert!(
        container.get("command").is_none(),
        "the image's ENTRYPOINT is the binary; the chart must not override it"
    );
    let namespace = deployment["metadata"]["namespace"]
        .as_str()
        .expect("namespace");
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect();
    let mut env = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        assert!(
            !matches!(name.as_str(), "KUBECONFIG" | "ACS_CA_CERT"),
            "the chart sets {name}, which the test replaces"
        );
        let value = if let Some(v) = e.get("value") {
            v.as_str().expect("string env value").to_string()
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod_name.to_string(),
                "metadata.namespace" => namespace.to_string(),
                other => panic!("env {name}: unsupported fieldRef {other}"),
            }
        } else {
            panic!("env {name}: unsupported source {e}")
        };
        env.push((name, value));
    }
    env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    env.push(("ACS_CA_CERT".into(), acs.ca_path.display().to_string()));
    OperatorArgs {
        extra: args,
        env,
        bare: true,
        identity: pod_name.to_string(),
        ..base
    }
}

/// Waits until every access the chart's rules grant is allowed for `user` (the RBAC
/// authorizer's cache follows new bindings within moments), asked as admin so no request of
/// `user` is audited before the run.
pub async fn wait_rbac_effective(client: &Client, user: &str, rules: &[BoundRule]) {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let checks: Vec<_> = rules
        .iter()
        .flat_map(|r| {
            r.accesses()
                .into_iter()
                .map(|(a, name)| (a, r.namespace.clone(), name))
        })
        .collect();
    assert!(!checks.is_empty(), "the chart grants nothing");
    eventually("the chart's RBAC to take effect", SHORT, || async {
        for (a, namespace, name) in &checks {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(user.to_string()),
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(a.group.clone()),
                        resource: Some(a.resource.clone()),
                        subresource: (!a.subresource.is_empty()).then(|| a.subresource.clone()),
                        verb: Some(a.verb.clone()),
                        namespace: namespace.clone(),
                        name: name.clone(),
                        ..ResourceAttributes::default()
                    }),
                    ..SubjectAccessReviewSpec::default()
                },
                ..SubjectAccessReview::default()
            };
            let r = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| e.to_string())?;
            if !r.status.is_some_and(|s| s.allowed) {
                return Err(format!(
                    "{a} in {namespace:?} name {name:?} not allowed yet"
                ));
            }
        }
        Ok(())
    })
    .await;
}

fn revision(t: &CommunicationToken) -> i64 {
    t.status.as_ref().map_or(0, |s| s.revision)
}

fn is_ready(t: &CommunicationToken) -> bool {
    t.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

async fn wait_token(
    env: &TestEnv,
    name: &str,
    what: &str,
    cond: impl Fn(&CommunicationToken) -> bool + Send + 'static,
) -> CommunicationToken {
    let api: Api<CommunicationToken> = env.api();
    wait_for(
        &api,
        name,
        CONVERGE,
        what,
        move |t: Option<&CommunicationToken>| t.is_some_and(|t| is_ready(t) && cond(t)),
    )
    .await
    .expect("token")
}

async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + Debug + serde::de::DeserializeOwned + Send + 'static,
{
    wait_for(api, name, CONVERGE, "deleted", |o: Option<&K>| o.is_none()).await;
}

/// The core scenarios in the test namespace, whose credentials come from wherever the caller
/// set them up: a user becomes Ready with an identity in the emulator; two tokens are issued
/// into valid Secrets owned by their tokens; a token rotates before it expires (the emulator
/// issues 20 s tokens); a scope change revokes exactly once and re-issues the sibling; deleting
/// the tokens removes their Secrets, and deleting the user deletes the identity in the emulator.
pub async fn core_scenarios(env: &TestEnv, acs: &Acs) {
    let users: Api<CommunicationUser> = env.api();
    let tokens: Api<CommunicationToken> = env.api();
    let secrets: Api<Secret> = env.api();

    create_user(env, "alice", CommunicationUserSpec::default()).await;
    let alice = wait_for(&users, "alice", CONVERGE, "user Ready", user_ready(""))
        .await
        .expect("user");
    let user_id = alice.identity_id().expect("identity id").to_string();
    assert_eq!(
        acs.identity(&user_id).await.expect("identity in ACS")["deleted"],
        false
    );

    create_token(env, "calls", token_spec("alice")).await;
    let mut chat = token_spec("alice");
    chat.scopes = vec![Scope::Chat];
    create_token(env, "chat", chat).await;
    let calls = wait_token(env, "calls", "token Ready", |_| true).await;
    wait_token(env, "chat", "token Ready", |_| true).await;
    let secret = secrets.get("calls").await.expect("token Secret");
    let owner = &secret.metadata.owner_references.expect("owner")[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.controller,
            owner.block_owner_deletion
        ),
        ("CommunicationToken", Some(true), Some(true))
    );
    let first = secret_token(env, "calls").await.expect("token");
    let (valid, why) = acs.validate(&first).await;
    assert!(valid, "the issued token is valid: {why}");

    // Rotation: a new revision with a new token before the first expires; no revocation.
    let rev = revision(&calls);
    wait_token(env, "calls", "a rotation", move |t| revision(t) > rev).await;
    let second = secret_token(env, "calls").await.expect("token");
    assert_ne!(first, second, "the Secret holds the rotated token");
    assert!(acs.validate(&second).await.0);
    wait_event(env, |(reason, _, _)| reason == "TokenRotated").await;
    assert_eq!(
        acs.revocations(&user_id).await,
        0,
        "a rotation revokes nothing"
    );

    // Scope change: one revocation of the user's tokens, both tokens re-issued after it.
    let old_chat = secret_token(env, "chat").await.expect("token");
    tokens
        .patch(
            "calls",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"scopes": ["voip", "chat"]}})),
        )
        .await
        .expect("patch scopes");
    let epoch_one = |t: &CommunicationToken| {
        t.status
            .as_ref()
            .is_some_and(|s| s.revocation_epoch == Some(1))
    };
    let calls = wait_token(env, "calls", "re-issue after revocation", epoch_one).await;
    wait_token(env, "chat", "sibling re-issued", epoch_one).await;
    assert_eq!(
        calls.status.expect("status").issued_scopes,
        vec![Scope::Voip, Scope::Chat]
    );
    assert_eq!(acs.revocations(&user_id).await, 1, "exactly one revoke");
    assert!(!acs.validate(&second).await.0, "the old token is revoked");
    assert!(
        !acs.validate(&old_chat).await.0,
        "the sibling's old token is revoked"
    );
    for name in ["calls", "chat"] {
        let t = secret_token(env, name).await.expect("token");
        let (valid, why) = acs.validate(&t).await;
        assert!(valid, "{name}'s re-issued token is valid: {why}");
    }

    // Deletion: tokens and their Secrets go, then the user and its identity.
    for name in ["chat", "calls"] {
        tokens
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete token");
        wait_gone(&tokens, name).await;
        wait_gone(&secrets, name).await;
    }
    let uid = alice.metadata.uid.clone().expect("uid");
    users
        .delete("alice", &DeleteParams::default())
        .await
        .expect("delete user");
    wait_for(
        &users,
        "alice",
        CONVERGE,
        "user deleted",
        conditions::is_deleted(&uid),
    )
    .await;
    eventually("the identity deleted in ACS", CONVERGE, || async {
        match acs.identity(&user_id).await {
            Some(i) if i["deleted"] == true => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

/// Microsoft Entra ID through a ServiceAccount of the namespace: the operator reads the
/// ServiceAccount, requests a token for it (`serviceaccounts/token`), creates its sealing key
/// in its own namespace, and a user and a token become Ready; then both are deleted.
pub async fn entra_scenario(env: &TestEnv, acs: &Acs) {
    let app = federated_client(
        acs,
        env,
        "chart",
        &subject(env, "acs-wi"),
        &["Communication and Email Service Owner"],
    )
    .await;
    workload_identity_sa(env, "acs-wi", &app, true).await;
    create_user(env, "entra", entra_user(acs, "acs-wi")).await;
    create_token(env, "entra-web", token_spec("entra")).await;
    let users: Api<CommunicationUser> = env.api();
    let user = wait_for(
        &users,
        "entra",
        CONVERGE,
        "Entra user Ready",
        user_ready(""),
    )
    .await
    .expect("user");
    wait_token(env, "entra-web", "Entra token Ready", |_| true).await;
    let token = secret_token(env, "entra-web").await.expect("token");
    let (valid, why) = acs.validate(&token).await;
    assert!(valid, "the token issued over Entra is valid: {why}");
    let tokens: Api<CommunicationToken> = env.api();
    tokens
        .delete("entra-web", &DeleteParams::default())
        .await
        .expect("delete token");
    wait_gone(&tokens, "entra-web").await;
    let uid = user.metadata.uid.clone().expect("uid");
    users
        .delete("entra", &DeleteParams::default())
        .await
        .expect("delete user");
    wait_for(
        &users,
        "entra",
        CONVERGE,
        "user deleted",
        conditions::is_deleted(&uid),
    )
    .await;
}

/// A rollout restart through the chart's RBAC: an opted-in Deployment, StatefulSet and
/// DaemonSet named by a token are restarted (their pod templates annotated, as their
/// generations show) when the token rotates.
pub async fn rollout_scenario(env: &TestEnv) {
    let client = env.client.clone();
    let ns = env.ns().to_string();
    let kinds = ["Deployment", "StatefulSet", "DaemonSet"];
    for kind in kinds {
        let mut spec = serde_json::json!({
            "selector": {"matchLabels": {"app": "dialer"}},
            "template": {
                "metadata": {"labels": {"app": "dialer"}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]}
            }
        });
        if kind == "StatefulSet" {
            spec["serviceName"] = "dialer".into();
        }
        let obj = serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": "dialer", "annotations": {"communication.acs.dev/restart-on-rotation": "true"}},
            "spec": spec,
        });
        workloads(&client, &ns, kind)
            .create(
                &PostParams::default(),
                &serde_json::from_value(obj).expect("workload"),
            )
            .await
            .expect("create workload");
    }
    create_user(env, "dialer", CommunicationUserSpec::default()).await;
    let mut spec = token_spec("dialer");
    spec.rollout_restart_targets = kinds
        .iter()
        .map(|k| {
            serde_json::from_value(serde_json::json!({"kind": k, "name": "dialer"}))
                .expect("target")
        })
        .collect();
    create_token(env, "dialer", spec).await;
    let first = wait_token(env, "dialer", "token Ready", |_| true).await;
    let rev = revision(&first);
    // 20 s tokens: the next rotation comes by itself.
    wait_token(env, "dialer", "a rotation", move |t| revision(t) > rev).await;
    for kind in kinds {
        let api = workloads(&client, &ns, kind);
        eventually(&format!("the {kind} restarted"), CONVERGE, || async {
            let d = api.get("dialer").await.map_err(|e| e.to_string())?;
            match d.metadata.generation {
                Some(g) if g >= 2 => Ok(()),
                g => Err(format!("generation {g:?}")),
            }
        })
        .await;
    }
    let tokens: Api<CommunicationToken> = env.api();
    tokens
        .delete("dialer", &DeleteParams::default())
        .await
        .expect("delete token");
    wait_gone(&tokens, "dialer").await;
    let users: Api<CommunicationUser> = env.api();
    users
        .delete("dialer", &DeleteParams::default())
        .await
        .expect("delete user");
    wait_gone(&users, "dialer").await;
}

fn workloads(client: &Client, ns: &str, kind: &str) -> Api<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk("apps", "v1", kind);
    let plural = format!("{}s", kind.to_ascii_lowercase());
    Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, &plural),
    )
}

/// Asserts that a request was refused by authorization (403).
pub fn refused<T: Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// A dry-run PostParams: a request that is wrongly allowed still changes nothing.
pub fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

/// A dry-run DeleteParams.
pub fn dry_delete() -> DeleteParams {
    DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    }
}

/// A dry-run PatchParams.
pub fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..PatchParams::default()
    }
}

/// The service kinds under the chart's identity: a CommunicationService and a
/// ClusterCommunicationService selecting this namespace, each serving a Ready user; each Ready
/// (its status written) where this install writes it (the cluster kind's status only when
/// `cluster_wide`).
pub async fn service_scenario(env: &TestEnv, acs: &Acs, cluster_wide: bool) {
    use acs_identity_operator::api::{ClusterCommunicationService, CommunicationService};
    put_secret(
        env,
        "acs-service",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    create_service(
        env,
        "acs",
        serde_json::json!({
            "endpoint": acs.emu.endpoint(),
            "connectionString": { "secretRef": { "name": "acs-service" } },
        }),
    )
    .await;
    let cluster_name = format!("chart-{}", env.ns());
    create_cluster_service(
        env,
        &cluster_name,
        serde_json::json!({
            "endpoint": acs.emu.endpoint(),
            "connectionString": { "secretRef": { "name": "acs-service", "namespace": env.ns() } },
            "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": env.ns() } },
        }),
    )
    .await;
    let services: Api<CommunicationService> = env.api();
    let cluster: Api<ClusterCommunicationService> = Api::all(env.client.clone());
    wait_for(
        &services,
        "acs",
        CONVERGE,
        "service Ready",
        service_ready(""),
    )
    .await
    .expect("service");
    if cluster_wide {
        wait_for(
            &cluster,
            &cluster_name,
            CONVERGE,
            "cluster service Ready",
            service_ready(""),
        )
        .await
        .expect("cluster service");
    }
    create_user(env, "svc", service_user("CommunicationService", "acs")).await;
    create_user(
        env,
        "cluster-svc",
        service_user("ClusterCommunicationService", &cluster_name),
    )
    .await;
    let users: Api<CommunicationUser> = env.api();
    for u in ["svc", "cluster-svc"] {
        wait_for(&users, u, CONVERGE, "service user Ready", user_ready(""))
            .await
            .expect("user");
    }
    cluster
        .delete(&cluster_name, &DeleteParams::default())
        .await
        .expect("delete cluster service");
}
