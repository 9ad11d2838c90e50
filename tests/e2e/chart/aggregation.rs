//! The chart's ClusterRoles for people, aggregated by the real controller manager into the
//! built-in roles: an app team bound to `edit` in its namespace may declare users and tokens,
//! one bound to `view` may read them and nothing more, and neither may write status.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use super::helm::{of_kind, split, Tools};
use crate::harness::CONVERGE;
use crate::support::{eventually, TestEnv};

/// Whether `user` may `verb` `resource` (with `subresource`) in `ns`.
async fn allowed(env: &TestEnv, user: &str, verb: &str, resource: &str, sub: &str) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(env.ns().to_string()),
                verb: Some(verb.to_string()),
                group: Some("communication.acs.dev".to_string()),
                resource: Some(resource.to_string()),
                subresource: (!sub.is_empty()).then(|| sub.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(env.client.clone());
    let answer = api.create(&PostParams::default(), &review).await.unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

async fn bind(env: &TestEnv, user: &str, cluster_role: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{user}-{cluster_role}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": cluster_role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    env.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

#[tokio::test]
async fn app_teams_bound_to_edit_declare_users_and_tokens_and_viewers_only_read_them() {
    let env = TestEnv::new("chart-aggregate").await;
    let tools = Tools::new(env.cp);
    // A release name of its own: the roles are cluster-scoped and other tests share the
    // control plane.
    let release = format!("agg-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let rendered = tools.template(&release, env.ns(), &json!({})).unwrap();
    let docs = split(&rendered);
    let cluster_roles: Api<ClusterRole> = Api::all(env.client.clone());
    let mut ours = Vec::new();
    for doc in of_kind(&docs, "ClusterRole") {
        if doc.value["metadata"]["labels"]
            .as_object()
            .is_some_and(|l| {
                l.keys()
                    .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
            })
        {
            let role: ClusterRole = serde_json::from_value(doc.value.clone()).unwrap();
            cluster_roles
                .create(&PostParams::default(), &role)
                .await
                .unwrap();
            ours.push(doc.name().to_string());
        }
    }
    assert_eq!(ours.len(), 2, "{ours:?}");

    let (dev, auditor) = (format!("{release}-dev"), format!("{release}-auditor"));
    bind(&env, &dev, "edit").await;
    bind(&env, &auditor, "view").await;
    // Aggregation is asynchronous: wait for the built-in edit role to carry the writes.
    eventually("edit may create CommunicationTokens", CONVERGE, || async {
        match allowed(&env, &dev, "create", "communicationtokens", "").await {
            true => Ok(()),
            false => Err("not yet"),
        }
    })
    .await;
    eventually("view may list CommunicationUsers", CONVERGE, || async {
        match allowed(&env, &auditor, "list", "communicationusers", "").await {
            true => Ok(()),
            false => Err("not yet"),
        }
    })
    .await;
    for resource in ["communicationusers", "communicationtokens"] {
        for verb in [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ] {
            assert!(
                allowed(&env, &dev, verb, resource, "").await,
                "edit: {verb} {resource}"
            );
        }
        for verb in ["get", "list", "watch"] {
            assert!(
                allowed(&env, &auditor, verb, resource, "").await,
                "view: {verb} {resource}"
            );
        }
        for verb in ["create", "update", "patch", "delete"] {
            assert!(
                !allowed(&env, &auditor, verb, resource, "").await,
                "view: {verb} {resource}"
            );
        }
        // Status and finalizers stay the operator's.
        for sub in ["status", "finalizers"] {
            assert!(
                !allowed(&env, &dev, "patch", resource, sub).await,
                "edit: patch {resource}/{sub}"
            );
            assert!(
                !allowed(&env, &dev, "update", resource, sub).await,
                "edit: update {resource}/{sub}"
            );
        }
    }
    // Nobody outside the namespace's bindings gains anything.
    assert!(
        !allowed(
            &env,
            &format!("{release}-stranger"),
            "list",
            "communicationtokens",
            ""
        )
        .await
    );

    for name in ours {
        cluster_roles
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
    }
}
