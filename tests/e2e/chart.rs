//! The Helm chart on a real control plane: lint, rendering of every documented option with a
//! server-side dry run, CRDs identical to `crds/`, and the installed chart's RBAC proven by
//! running the operator binary with the installed Deployment's exact args and env as the
//! chart's ServiceAccount: the core scenarios pass, the audit log shows every granted verb used
//! (or justified), and the same identity is refused what it must not do.
//!
//! The namespaced mode runs on the shared control plane. The cluster-wide mode gets a control
//! plane of its own: an operator watching all namespaces would reconcile other tests' objects.

mod aggregation;
pub(crate) mod audit;
mod helm;
mod monitoring;
mod render;
mod scenario;

use std::collections::BTreeSet;

use acs_emulator::EmulatorConfig;
use acs_identity_operator::api::CommunicationUser;
use acs_testenv::{ControlPlane, TestNamespace};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use kube::Client;
use serde_json::{json, Value};

use self::helm::{split, RenderedDoc, Tools};
use self::scenario::{dry_delete, dry_patch, dry_post, refused};
use crate::harness::{entra_acs_with, Acs, Operator, OperatorArgs, CONVERGE};
use crate::support::{self, wait_for, TestEnv};

#[tokio::test]
async fn the_chart_passes_helm_lint_strict() {
    let tools = Tools::new(support::control_plane());
    let chart = helm::chart_dir();
    let out = tools.helm_ok(&[
        "lint",
        "--strict",
        "--kube-version",
        helm::kube_version(),
        chart.to_str().unwrap(),
    ]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[tokio::test]
async fn the_charts_crds_are_the_generated_crds_byte_for_byte() {
    let tools = Tools::new(support::control_plane());
    let generated = yaml_files(&helm::crds_dir());
    let shipped = yaml_files(&helm::chart_dir().join("files/crds"));
    let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&shipped),
        names(&generated),
        "the chart ships every CRD"
    );
    let fix = "regenerate with `cp crds/*.yaml charts/acs-identity-operator/files/crds/`";
    for ((name, chart_text), (_, repo_text)) in shipped.iter().zip(&generated) {
        assert!(
            chart_text == repo_text,
            "{name} in the chart differs from crds/: {fix}"
        );
    }

    // Rendered verbatim without the keep policy: each CRD document is the file, byte for byte.
    let verbatim = tools
        .template("acs", "acs-system", &json!({"crds": {"keep": false}}))
        .unwrap();
    let docs = split(&verbatim);
    let crds = helm::of_kind(&docs, "CustomResourceDefinition");
    assert_eq!(crds.len(), generated.len());
    for (name, text) in &generated {
        assert!(
            crds.iter().any(|d| format!("{}\n", d.text) == *text),
            "no rendered CRD equals {name} byte for byte"
        );
    }

    // By default the only difference is the keep annotation.
    let kept = split(&tools.template("acs", "acs-system", &json!({})).unwrap());
    let kept = helm::of_kind(&kept, "CustomResourceDefinition");
    assert_eq!(kept.len(), generated.len());
    for d in kept {
        assert_eq!(d.source, "acs-identity-operator/templates/crds.yaml");
        let mut v = d.value.clone();
        let annotations = v["metadata"]["annotations"].take();
        assert_eq!(annotations, json!({"helm.sh/resource-policy": "keep"}));
        v["metadata"].as_object_mut().unwrap().remove("annotations");
        let file = generated
            .iter()
            .find(|(_, t)| {
                serde_yaml::from_str::<Value>(t).unwrap()["metadata"]["name"]
                    == v["metadata"]["name"]
            })
            .expect("a generated CRD of that name");
        assert_eq!(v, serde_yaml::from_str::<Value>(&file.1).unwrap());
    }
}

fn yaml_files(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The chart installed for real, and what the operator needs to run as its ServiceAccount.
struct Installed {
    release: String,
    namespace: String,
    docs: Vec<RenderedDoc>,
    deployment: Value,
    sa_name: String,
    sa_user: String,
}

async fn install(tools: &Tools, client: &Client, namespace: &str, values: &Value) -> Installed {
    let release = format!("acs-{:06x}", rand::random::<u32>() & 0xff_ffff);
    tools.install(&release, namespace, values);
    let docs = split(&tools.installed_manifest(&release, namespace));
    let name = helm::one(&docs, "Deployment").name().to_string();
    let deployment = scenario::installed_deployment(client, namespace, &name).await;
    let sa_name = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName")
        .to_string();
    let sa_user = format!("system:serviceaccount:{namespace}:{sa_name}");
    Installed {
        release,
        namespace: namespace.to_string(),
        docs,
        deployment,
        sa_name,
        sa_user,
    }
}

/// Puts the operator-wide default credentials where Azure Service Operator v2 would (a Secret
/// with key `primaryConnectionString` in the operator's namespace) and opts `workloads` in.
async fn default_credentials(client: &Client, namespace: &str, workloads: &str, acs: &Acs) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "acs-aso" },
        "stringData": { "primaryConnectionString": acs.connection_string() },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    Api::<Namespace>::all(client.clone())
        .patch(
            workloads,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "communication.acs.dev/default-credentials": "true"
            }}})),
        )
        .await
        .unwrap();
}

/// The emulator of the chart runs: 20 s tokens (a rotation within the test), and the cluster's
/// issuer trusted for the Entra step.
async fn chart_acs(env: &TestEnv) -> Acs {
    entra_acs_with(
        env,
        EmulatorConfig {
            token_lifetime_seconds: Some(20),
            ..EmulatorConfig::default()
        },
    )
    .await
}

fn default_credentials_values() -> Value {
    json!({"secretName": "acs-aso", "key": "primaryConnectionString"})
}

/// Runs the operator from the installed Deployment as its ServiceAccount through the core
/// scenarios, and returns the audited requests of that run after comparing them with the
/// grants.
async fn run_and_audit(env: &TestEnv, inst: &Installed, acs: &Acs) -> Vec<audit::Request> {
    let rules = audit::bound_rules(&inst.docs, &inst.namespace, &inst.sa_name);
    scenario::wait_rbac_effective(&env.client, &inst.sa_user, &rules).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("operator.kubeconfig");
    env.cp
        .write_kubeconfig_impersonating(&kubeconfig, &inst.sa_user)
        .unwrap();
    let pod = format!("{}-local", inst.release);
    let args = scenario::operator_args_from(
        &inst.deployment,
        &pod,
        &kubeconfig,
        acs,
        OperatorArgs::new(env, acs),
    );

    let from = audit::offset(env.cp.audit_log_path());
    let mut op = Operator::spawn(args);
    op.wait_ready().await;
    let rollout = helm::env_value(
        helm::operator_container(&inst.deployment),
        "ROLLOUT_RESTART",
    ) == Some("true");
    let run = std::panic::AssertUnwindSafe(async {
        scenario::core_scenarios(env, acs).await;
        scenario::entra_scenario(env, acs).await;
        let cluster_wide = helm::env_value(
            helm::operator_container(&inst.deployment),
            "WATCH_NAMESPACES",
        )
        .is_none();
        scenario::service_scenario(env, acs, cluster_wide).await;
        if rollout {
            scenario::rollout_scenario(env).await;
        }
    });
    if let Err(panic) = futures::FutureExt::catch_unwind(run).await {
        // Say why: a denied request of the operator is the usual cause.
        let denied: Vec<String> = audit::requests_of(env.cp.audit_log_path(), from, &inst.sa_user)
            .into_iter()
            .filter(|r| r.code == Some(403) || r.decision.as_deref() == Some("forbid"))
            .map(|r| format!("  {} {} -> {:?}", r.access, r.uri, r.code))
            .collect();
        let logs = op.logs();
        let tail: Vec<&str> = logs.lines().rev().take(30).collect();
        eprintln!(
            "the core scenarios failed; denied requests of {}:\n{}\noperator log tail:\n{}",
            inst.sa_user,
            denied.join("\n"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        std::panic::resume_unwind(panic);
    }
    let status = op.stop().expect("operator exit status");
    assert!(
        status.success(),
        "operator exited with {status}:\n{}",
        op.logs()
    );

    let requests = audit::requests_of(env.cp.audit_log_path(), from, &inst.sa_user);
    let report = audit::compare(&audit::granted(&rules), &requests);
    eprintln!("{}: {report}", inst.sa_user);
    requests
}

#[tokio::test(flavor = "multi_thread")]
async fn the_namespaced_chart_identity_passes_the_core_scenarios_uses_every_granted_verb_and_is_refused_the_rest(
) {
    let env = TestEnv::new("chart-ns-apps").await;
    let operator_ns = TestNamespace::create(env.cp, "chart-ns-operator")
        .await
        .unwrap();
    let outside = TestNamespace::create(env.cp, "chart-ns-outside")
        .await
        .unwrap();
    let acs = chart_acs(&env).await;
    default_credentials(&env.client, operator_ns.name(), env.ns(), &acs).await;
    let tools = Tools::new(env.cp);
    let values = json!({
        "watchNamespaces": [env.ns()],
        // The shared control plane's CRDs were installed from crds/ without helm.
        "crds": {"install": false},
        "defaultCredentials": default_credentials_values(),
        // Off by default; this run includes a workload-identity user, so the audit must show
        // serviceaccounts get and serviceaccounts/token create.
        "workloadIdentity": {"authorityHost": acs.emu.entra_authority(),
                             "namespaceServiceAccounts": true},
        // Rollout restarts on in this mode, so the audit proves their get and patch too.
        "rolloutRestart": {"enabled": true, "coalesceWindow": "1s"},
    });
    let inst = install(&tools, &env.client, operator_ns.name(), &values).await;
    assert_eq!(
        helm::env_value(
            helm::operator_container(&inst.deployment),
            "WATCH_NAMESPACES"
        ),
        Some(env.ns())
    );

    let requests = run_and_audit(&env, &inst, &acs).await;
    // Namespaced requests stay in the watched namespace, plus the Lease and the default
    // credentials in the operator's own; the only cluster-scoped ones read the watched
    // namespace and the cluster-scoped kind.
    for r in &requests {
        match &r.namespace {
            Some(ns) => assert!(
                ns == env.ns() || ns == operator_ns.name(),
                "request outside the allowed namespaces: {r:?}"
            ),
            None => assert!(
                (r.access.resource == "namespaces" && r.name.as_deref() == Some(env.ns()))
                    || r.access.resource == "clustercommunicationservices",
                "unexpected cluster-scoped request: {r:?}"
            ),
        }
    }

    // The same identity is refused what it must not do (dry runs: nothing changes if not).
    let sa = env.cp.client_as(&inst.sa_user, &[]).unwrap();
    let other: Secret =
        serde_json::from_value(json!({"metadata": {"name": "other"}, "stringData": {"k": "v"}}))
            .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), operator_ns.name())
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let lp = ListParams::default();
    refused(
        "list Secrets outside watchNamespaces",
        Api::<Secret>::namespaced(sa.clone(), outside.name())
            .list(&lp)
            .await,
    );
    refused(
        "list Secrets in all namespaces",
        Api::<Secret>::all(sa.clone()).list(&lp).await,
    );
    refused(
        "list Secrets in the operator's namespace",
        Api::<Secret>::namespaced(sa.clone(), operator_ns.name())
            .list(&lp)
            .await,
    );
    refused(
        "get a Secret other than the default credentials in the operator's namespace",
        Api::<Secret>::namespaced(sa.clone(), operator_ns.name())
            .get("other")
            .await,
    );
    refused(
        "list CommunicationUsers outside watchNamespaces",
        Api::<CommunicationUser>::namespaced(sa.clone(), outside.name())
            .list(&lp)
            .await,
    );
    refused(
        "get a namespace that is not watched",
        Api::<Namespace>::all(sa.clone()).get(outside.name()).await,
    );
    refused_everywhere(&sa, env.ns(), operator_ns.name()).await;
    // Namespaces are read and watched by name only (cluster-wide, their labels are watched).
    let lp = kube::api::ListParams::default();
    refused(
        "list namespaces",
        Api::<Namespace>::all(sa.clone()).list(&lp).await,
    );
    let watched = kube::api::ListParams::default().fields(&format!("metadata.name={}", env.ns()));
    Api::<Namespace>::all(sa.clone())
        .list_metadata(&watched)
        .await
        .expect("the watched namespace, listed by name");

    tools.helm_ok(&[
        "uninstall",
        &inst.release,
        "--namespace",
        operator_ns.name(),
    ]);
}

/// What the chart's identity is refused in either mode: changing CRDs, unrelated resources,
/// deleting its own kinds (it only patches them), other Leases, RBAC.
async fn refused_everywhere(sa: &Client, workloads: &str, operator_ns: &str) {
    let lp = ListParams::default();
    let crds = Api::<CustomResourceDefinition>::all(sa.clone());
    let crd_name = "communicationusers.communication.acs.dev";
    refused("list CRDs", crds.list(&lp).await);
    refused("delete a CRD", crds.delete(crd_name, &dry_delete()).await);
    refused(
        "patch a CRD",
        crds.patch(
            crd_name,
            &dry_patch(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await,
    );
    let crd: CustomResourceDefinition = serde_yaml::from_str(
        &std::fs::read_to_string(helm::crds_dir().join(format!("{crd_name}.yaml"))).unwrap(),
    )
    .unwrap();
    let mut new_crd = crd.clone();
    new_crd.metadata.name = Some("foos.communication.acs.dev".into());
    new_crd.spec.names.plural = "foos".into();
    refused("create a CRD", crds.create(&dry_post(), &new_crd).await);
    refused(
        "list Pods",
        Api::<Pod>::namespaced(sa.clone(), workloads)
            .list(&lp)
            .await,
    );
    refused(
        "list ConfigMaps",
        Api::<ConfigMap>::namespaced(sa.clone(), workloads)
            .list(&lp)
            .await,
    );
    refused(
        "list Deployments",
        Api::<Deployment>::namespaced(sa.clone(), workloads)
            .list(&lp)
            .await,
    );
    refused(
        "delete a CommunicationUser",
        Api::<CommunicationUser>::namespaced(sa.clone(), workloads)
            .delete("alice", &dry_delete())
            .await,
    );
    let leases = Api::<Lease>::namespaced(sa.clone(), operator_ns);
    refused("get another Lease", leases.get("someone-else").await);
    refused("list Leases", leases.list(&lp).await);
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "escalate"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }))
    .unwrap();
    refused(
        "create a Role",
        Api::<Role>::namespaced(sa.clone(), workloads)
            .create(&dry_post(), &role)
            .await,
    );
    refused(
        "list ClusterRoles",
        Api::<ClusterRole>::all(sa.clone()).list(&lp).await,
    );
}

/// Stops a control plane of a test's own when the test ends, even by a panic.
struct OwnControlPlane(&'static ControlPlane);

impl Drop for OwnControlPlane {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_wide_chart_identity_passes_the_core_scenarios_uses_every_granted_verb_and_is_refused_the_rest(
) {
    support::init_tracing();
    // A control plane of its own, without CRDs: the chart installs them.
    let mut options = acs_testenv::Options::from_env().unwrap();
    options.controller_manager = false;
    let cp = ControlPlane::start(options)
        .await
        .unwrap_or_else(|e| panic!("{}", acs_testenv::report(&e)));
    // Leaked for the 'static TestEnv expects; the guard stops it.
    let cp: &'static ControlPlane = Box::leak(Box::new(cp));
    let _stop = OwnControlPlane(cp);
    let client = cp.client().unwrap();
    let env = TestEnv {
        cp,
        client: client.clone(),
        ns: TestNamespace::create(cp, "chart-cluster-apps")
            .await
            .unwrap(),
    };
    let operator_ns = TestNamespace::create(cp, "chart-cluster-operator")
        .await
        .unwrap();
    let acs = chart_acs(&env).await;
    default_credentials(&client, operator_ns.name(), env.ns(), &acs).await;
    let tools = Tools::new(cp);
    let values = json!({
        "defaultCredentials": default_credentials_values(),
        // Off by default; this run includes a workload-identity user, so the audit must show
        // serviceaccounts get and serviceaccounts/token create.
        "workloadIdentity": {"authorityHost": acs.emu.entra_authority(),
                             "namespaceServiceAccounts": true},
    });
    let inst = install(&tools, &client, operator_ns.name(), &values).await;
    assert_eq!(
        helm::env_value(
            helm::operator_container(&inst.deployment),
            "WATCH_NAMESPACES"
        ),
        None,
        "all namespaces by default"
    );
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd_names: Vec<String> = helm::of_kind(&inst.docs, "CustomResourceDefinition")
        .iter()
        .map(|d| d.name().to_string())
        .collect();
    assert_eq!(crd_names.len(), 4, "the chart installed every CRD");
    for name in &crd_names {
        wait_for(
            &crds,
            name,
            CONVERGE,
            "CRD established",
            conditions::is_crd_established(),
        )
        .await;
    }

    let requests = run_and_audit(&env, &inst, &acs).await;
    let watched_all: BTreeSet<&str> = requests
        .iter()
        .filter(|r| r.access.verb == "watch" && r.namespace.is_none())
        .map(|r| r.access.resource.as_str())
        .collect();
    assert_eq!(
        watched_all,
        BTreeSet::from([
            "clustercommunicationservices",
            "communicationservices",
            "communicationtokens",
            "communicationusers",
            // The namespaces' labels, which cluster services' selectors read.
            "namespaces",
            "secrets"
        ]),
        "the cluster-wide operator watches all namespaces"
    );

    let sa = cp.client_as(&inst.sa_user, &[]).unwrap();
    refused_everywhere(&sa, env.ns(), operator_ns.name()).await;

    // Uninstalling keeps the CRDs (and so every resource) but removes the RBAC.
    tools.helm_ok(&[
        "uninstall",
        &inst.release,
        "--namespace",
        operator_ns.name(),
    ]);
    for name in &crd_names {
        let crd = crds.get(name).await.expect("CRD kept after uninstall");
        assert_eq!(
            crd.metadata.annotations.unwrap()["helm.sh/resource-policy"],
            "keep"
        );
    }
    let cluster_roles = Api::<ClusterRole>::all(client.clone());
    let role_name = helm::operator_cluster_role(&inst.docs).name().to_string();
    wait_for(
        &cluster_roles,
        &role_name,
        CONVERGE,
        "ClusterRole removed",
        |r: Option<&ClusterRole>| r.is_none(),
    )
    .await;
    drop(env);
    drop(operator_ns);
}
