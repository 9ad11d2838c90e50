//! What every e2e test needs: the shared control plane, a fresh namespace, clients, and waits
//! that watch or poll under a deadline (never a fixed sleep).

use std::fmt::Debug;
use std::future::Future;
use std::sync::Once;
use std::time::Duration;

use acs_testenv::{report, ControlPlane, TestNamespace};
use futures::TryStreamExt;
use kube::runtime::wait::{await_condition, Condition};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// How long a test waits for something the apiserver does at once (a watch event, an RBAC
/// change reaching the authorizer's cache).
pub const SHORT: Duration = Duration::from_secs(30);
/// How long a test waits for a controller-manager effect such as garbage collection.
pub const GC: Duration = Duration::from_secs(90);

/// One test's view of the shared control plane.
pub struct TestEnv {
    pub cp: &'static ControlPlane,
    pub client: Client,
    pub ns: TestNamespace,
}

impl TestEnv {
    /// The shared control plane (started on first use), an admin client, and a fresh namespace
    /// named after `test`.
    pub async fn new(test: &str) -> TestEnv {
        let cp = control_plane();
        let client = cp.client().expect("admin client");
        let ns = TestNamespace::create(cp, test)
            .await
            .unwrap_or_else(|e| panic!("creating the test namespace: {}", report(&e)));
        TestEnv { cp, client, ns }
    }

    /// The test namespace's name.
    pub fn ns(&self) -> &str {
        self.ns.name()
    }

    /// An API for `K` in the test namespace, as admin.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), self.ns())
    }
}

/// The control plane shared by every test of this binary. A control plane that cannot start
/// fails the test with the component's log tail; it is never skipped.
pub fn control_plane() -> &'static ControlPlane {
    init_tracing();
    let cp = acs_testenv::shared().unwrap_or_else(|e| panic!("{}", report(&e)));
    static ANNOUNCE: Once = Once::new();
    ANNOUNCE.call_once(|| {
        eprintln!(
            "acs-testenv: control plane {} ({}) ready in {:.1?}, work dir {}",
            cp.api_url(),
            cp.apiserver_version(),
            cp.started_in(),
            cp.work_dir().display()
        );
    });
    cp
}

pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            // kube's client logs every failed request at ERROR, and readiness polls and
            // expected-forbidden requests fail by design.
            tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
        });
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Waits until `cond` holds for object `name` (watching it), panicking after `timeout`.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    cond: impl Condition<K>,
) -> Option<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => panic!("watching {name} for {what} failed: {e}"),
        Err(_) => panic!("{name}: {what} did not happen within {timeout:?}"),
    }
}

/// Watches `api` and returns object `name` as first delivered by the watch stream.
pub async fn observe_via_watch<K>(api: &Api<K>, name: &str, timeout: Duration) -> K
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api.clone(), config).applied_objects();
    let mut stream = std::pin::pin!(stream);
    let seen = async {
        while let Some(obj) = stream.try_next().await.expect("watch stream") {
            if obj.meta().name.as_deref() == Some(name) {
                return obj;
            }
        }
        panic!("the watch stream ended before {name} was seen");
    };
    tokio::time::timeout(timeout, seen)
        .await
        .unwrap_or_else(|_| panic!("{name} was not seen by a watch within {timeout:?}"))
}

/// Repeats `attempt` (every 100 ms) until it returns `Ok`, panicking with the last error after
/// `timeout`. For conditions no watch can express, such as an RBAC grant taking effect.
pub async fn eventually<T, E, F, Fut>(what: &str, timeout: Duration, mut attempt: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    loop {
        ticks.tick().await;
        match attempt().await {
            Ok(value) => return value,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("{what} did not happen within {timeout:?}; last error: {e:?}")
            }
            Err(_) => {}
        }
    }
}

/// The HTTP status code of a kube API error, if it is one.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Grants `user` the given rules in the test namespace.
pub async fn grant(
    env: &TestEnv,
    user: &str,
    name: &str,
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
    use kube::api::{ObjectMeta, PostParams};
    let role = Role {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        rules: Some(rules),
    };
    env.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: user.into(),
            namespace: None,
        }]),
    };
    env.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// Grants `users` what the operator needs of the cluster-scoped ClusterCommunicationServices
/// (the chart's ClusterRole grants the same in both modes): a test running the operator under
/// a narrower identity than admin needs it for its caches to become ready.
#[allow(dead_code)]
pub async fn grant_cluster_services(env: &TestEnv, users: &[&str]) {
    use k8s_openapi::api::rbac::v1::{
        ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
    };
    use kube::api::{ObjectMeta, PostParams};
    let name = format!("acs-cluster-services-{}", env.ns());
    let rule = |resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec!["communication.acs.dev".into()]),
        resources: Some(vec![resource.into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule("clustercommunicationservices", &["list", "watch"]),
            rule("clustercommunicationservices/status", &["patch"]),
        ]),
        ..ClusterRole::default()
    };
    Api::<ClusterRole>::all(env.client.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("cluster role");
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name,
        },
        subjects: Some(
            users
                .iter()
                .map(|u| Subject {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "User".into(),
                    name: u.to_string(),
                    namespace: None,
                })
                .collect(),
        ),
    };
    Api::<ClusterRoleBinding>::all(env.client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("cluster role binding");
}
