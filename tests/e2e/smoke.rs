//! Smoke tests of the control plane itself: CRDs install and become Established, objects are
//! created, watched and read back, garbage collection works, and the production settings the
//! operator's tests rely on (version, audit log, RBAC, OwnerReferencesPermissionEnforcement)
//! are really in force.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::wait::conditions;
use kube::{Api, Client, CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::support::{
    self, eventually, grant, observe_via_watch, status_code, wait_for, TestEnv, GC, SHORT,
};

/// A placeholder kind, so the CRD path is exercised even before the project has CRDs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(group = "testenv.acs.dev", version = "v1", kind = "Widget", namespaced)]
pub struct WidgetSpec {
    size: i32,
    colour: String,
}

async fn install_widget_crd(env: &TestEnv) -> Vec<String> {
    env.cp
        .apply_crds(&[Widget::crd()])
        .await
        .unwrap_or_else(|e| panic!("installing the Widget CRD: {}", acs_testenv::report(&e)))
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

fn owned_secret(name: &str, owner: &ConfigMap, block_owner_deletion: Option<bool>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: owner.name_any(),
                uid: owner.uid().expect("owner uid"),
                block_owner_deletion,
                controller: None,
            }]),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Secret::default()
    }
}

fn rule(resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

fn impersonating(env: &TestEnv, user: &str) -> Client {
    env.cp.client_as(user, &[]).unwrap()
}

#[tokio::test]
async fn project_crds_and_a_placeholder_crd_apply_and_become_established() {
    let env = TestEnv::new("smoke-crds").await;
    let crds = Api::<CustomResourceDefinition>::all(env.client.clone());

    // The repository's CRDs were installed when the shared control plane started (none yet
    // while crds/ is empty); each must be Established.
    let dir = acs_testenv::shared::crds_dir();
    let project = if dir.is_dir() {
        acs_testenv::crds::load_dir(&dir).unwrap()
    } else {
        Vec::new()
    };
    for crd in &project {
        let name = crd.name_any();
        let live = crds
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name} is not installed: {e}"));
        assert!(
            is_established(&live),
            "CRD {name} is not Established: {:?}",
            live.status
        );
    }

    let names = install_widget_crd(&env).await;
    assert_eq!(names, ["widgets.testenv.acs.dev"]);
    let live = crds.get("widgets.testenv.acs.dev").await.unwrap();
    assert!(is_established(&live), "{:?}", live.status);
}

#[tokio::test]
async fn a_custom_object_and_a_configmap_are_created_observed_by_a_watch_and_read_back() {
    let env = TestEnv::new("smoke-watch").await;
    install_widget_crd(&env).await;

    let widgets = env.api::<Widget>();
    let spec = WidgetSpec {
        size: 3,
        colour: "teal".into(),
    };
    let post = PostParams::default();
    let widget = Widget::new("w1", spec.clone());
    let (watched, created) = tokio::join!(
        observe_via_watch(&widgets, "w1", SHORT),
        widgets.create(&post, &widget)
    );
    created.unwrap();
    assert_eq!(watched.spec, spec);
    let read = widgets.get("w1").await.unwrap();
    assert_eq!(read.spec, spec);
    assert_eq!(read.uid(), watched.uid());

    let config_maps = env.api::<ConfigMap>();
    let cm = config_map("cm1", &[("greeting", "hello")]);
    let (watched, created) = tokio::join!(
        observe_via_watch(&config_maps, "cm1", SHORT),
        config_maps.create(&post, &cm)
    );
    created.unwrap();
    let read = config_maps.get("cm1").await.unwrap();
    assert_eq!(read.data, watched.data);
    assert_eq!(read.data.unwrap()["greeting"], "hello");
}

#[tokio::test]
async fn a_secret_owned_by_a_configmap_is_garbage_collected_after_the_configmap_is_deleted() {
    let env = TestEnv::new("smoke-gc").await;
    let config_maps = env.api::<ConfigMap>();
    let secrets = env.api::<Secret>();
    let owner = config_maps
        .create(&PostParams::default(), &config_map("owner", &[]))
        .await
        .unwrap();
    let owned = secrets
        .create(&PostParams::default(), &owned_secret("owned", &owner, None))
        .await
        .unwrap();
    let bystander = secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("bystander".into()),
                    ..ObjectMeta::default()
                },
                ..Secret::default()
            },
        )
        .await
        .unwrap();

    config_maps
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    let uid = owned.uid().unwrap();
    wait_for(
        &secrets,
        "owned",
        GC,
        "garbage collection",
        conditions::is_deleted(&uid),
    )
    .await;

    let still_there = secrets.get("bystander").await.unwrap();
    assert_eq!(
        still_there.uid(),
        bystander.uid(),
        "an unowned Secret must survive"
    );
}

/// The release `ACS_K8S_VERSION` selects: v1.37.2 by default, v1.32.13 in the compatibility tier.
#[tokio::test]
async fn the_apiserver_reports_the_selected_kubernetes_release() {
    let env = TestEnv::new("smoke-version").await;
    let release = acs_testenv::release::selected_from_env().unwrap();
    let info = env.client.apiserver_version().await.unwrap();
    assert_eq!(info.git_version, release);
    assert_eq!(
        (info.major.as_str(), info.minor.as_str()),
        ("1", acs_testenv::release::minor(release))
    );
    assert_eq!(env.cp.apiserver_version(), release);
}

#[tokio::test]
async fn the_audit_log_records_who_did_what_to_which_object() {
    let env = TestEnv::new("smoke-audit").await;
    let name = format!("audited-{}", env.ns());
    env.api::<ConfigMap>()
        .create(&PostParams::default(), &config_map(&name, &[]))
        .await
        .unwrap();

    let path = env.cp.audit_log_path().to_path_buf();
    let event = eventually("the create to reach the audit log", SHORT, || {
        let path = path.clone();
        let name = name.clone();
        async move {
            let text = tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| e.to_string())?;
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|e| e["objectRef"]["name"] == name.as_str() && e["verb"] == "create")
                .ok_or_else(|| {
                    format!("no create of {name} among {} entries", text.lines().count())
                })
        }
    })
    .await;
    assert_eq!(event["level"], "Metadata");
    assert_eq!(event["user"]["username"], "admin");
    assert_eq!(event["objectRef"]["resource"], "configmaps");
    assert_eq!(event["objectRef"]["namespace"], env.ns());
    assert_eq!(event["responseStatus"]["code"], 201);
    assert!(
        event.get("requestObject").is_none(),
        "Metadata level must not log bodies"
    );
}

#[tokio::test]
async fn rbac_forbids_an_impersonated_user_to_list_secrets_until_a_role_grants_it() {
    let env = TestEnv::new("smoke-rbac").await;
    let user = format!("jane-{}", env.ns());
    let as_jane: Api<Secret> = Api::namespaced(impersonating(&env, &user), env.ns());

    let list = ListParams::default();
    let err = as_jane.list(&list).await.unwrap_err();
    assert_eq!(status_code(&err), Some(403), "{err}");
    // The same through an impersonating kubeconfig file, as kubectl, helm or the operator binary
    // would use it.
    let kubeconfig = env.cp.work_dir().join(format!("{user}.kubeconfig"));
    env.cp
        .write_kubeconfig_impersonating(&kubeconfig, &user)
        .unwrap();
    let config = acs_testenv::kubeconfig::load(&kubeconfig).await.unwrap();
    let from_file: Api<Secret> = Api::namespaced(Client::try_from(config).unwrap(), env.ns());
    let err = from_file.list(&list).await.unwrap_err();
    assert_eq!(status_code(&err), Some(403), "{err}");

    grant(
        &env,
        &user,
        "secret-reader",
        vec![rule(&["secrets"], &["list"])],
    )
    .await;
    let listed = eventually("the RoleBinding to take effect", SHORT, || {
        as_jane.list(&list)
    })
    .await;
    assert!(listed.items.is_empty());
    // Still no more than granted.
    let err = as_jane.get("anything").await.unwrap_err();
    assert_eq!(status_code(&err), Some(403), "{err}");
}

#[tokio::test]
async fn block_owner_deletion_needs_rights_on_the_owners_finalizers() {
    let env = TestEnv::new("smoke-ownerrefs").await;
    let user = format!("owner-setter-{}", env.ns());
    let owner = env
        .api::<ConfigMap>()
        .create(&PostParams::default(), &config_map("owner", &[]))
        .await
        .unwrap();
    grant(
        &env,
        &user,
        "secret-writer",
        vec![
            rule(&["secrets"], &["create", "get", "update", "delete"]),
            rule(&["configmaps"], &["get"]),
        ],
    )
    .await;
    let as_user: Api<Secret> = Api::namespaced(impersonating(&env, &user), env.ns());
    let post = PostParams::default();
    let plain = owned_secret("plain", &owner, None);
    let blocking = owned_secret("blocking", &owner, Some(true));

    // A plain ownerReference is allowed (the creator could have chosen not to create at all).
    eventually("the RoleBinding to take effect", SHORT, || {
        as_user.create(&post, &plain)
    })
    .await;

    // blockOwnerDeletion would let the user delay the owner's deletion: the admission plugin
    // demands update rights on configmaps/finalizers, which the user lacks.
    let err = as_user.create(&post, &blocking).await.unwrap_err();
    assert_eq!(status_code(&err), Some(403), "{err}");
    assert!(err.to_string().contains("blockOwnerDeletion"), "{err}");

    grant(
        &env,
        &user,
        "finalizer-setter",
        vec![rule(&["configmaps/finalizers"], &["update"])],
    )
    .await;
    let created = eventually("the finalizers grant to take effect", SHORT, || {
        as_user.create(&post, &blocking)
    })
    .await;
    let refs = created.owner_references();
    assert_eq!(refs[0].block_owner_deletion, Some(true));
}

/// Restarts (for reliability tests) keep the port, certificates and data, and the controller
/// manager rides them out. Uses its own control plane, so the shared one never goes down under
/// other tests.
#[tokio::test]
async fn a_restarted_apiserver_and_etcd_keep_their_port_and_data() {
    support::init_tracing();
    let options = acs_testenv::Options::from_env().unwrap();
    let cp = acs_testenv::ControlPlane::start(options)
        .await
        .unwrap_or_else(|e| panic!("{}", acs_testenv::report(&e)));
    let config_maps: Api<ConfigMap> = Api::namespaced(cp.client().unwrap(), "default");
    let post = PostParams::default();
    config_maps
        .create(&post, &config_map("survivor", &[("k", "v")]))
        .await
        .unwrap();
    let url = cp.api_url();

    cp.stop_apiserver().unwrap();
    let err = config_maps.get("survivor").await.unwrap_err();
    assert_eq!(
        status_code(&err),
        None,
        "expected a connection error, got {err}"
    );
    cp.start_apiserver().await.unwrap();
    assert_eq!(cp.api_url(), url);
    let read = eventually("the same client to reconnect", SHORT, || {
        config_maps.get("survivor")
    })
    .await;
    assert_eq!(read.data.unwrap()["k"], "v");

    cp.restart_etcd().await.unwrap();
    cp.restart_apiserver().await.unwrap();
    let read = eventually("reads after both restarts", SHORT, || {
        config_maps.get("survivor")
    })
    .await;
    assert_eq!(read.data.unwrap()["k"], "v");

    for component in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        assert!(
            cp.is_running(component),
            "{component} is not running:\n{}",
            cp.log_tail(component)
        );
    }

    let work_dir = cp.work_dir().to_path_buf();
    cp.stop().unwrap();
    assert!(!cp.is_running("kube-apiserver"));
    assert!(!work_dir.exists(), "stop removes the work dir");
}

/// One control plane per test binary run: every test gets the same instance.
#[tokio::test]
async fn every_test_shares_one_control_plane() {
    let a = support::control_plane();
    let b = support::control_plane();
    assert!(std::ptr::eq(a, b));
    let env = TestEnv::new("smoke-shared").await;
    assert!(std::ptr::eq(env.cp, a));
    assert!(env.cp.kubeconfig_path().is_file());
}
