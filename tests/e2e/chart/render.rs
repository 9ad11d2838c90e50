//! Rendering the chart with every documented option: each combination renders, has the objects
//! and settings the option promises, and passes a server-side dry run against the real
//! apiserver; invalid values are rejected; every value is documented in the chart README.

use std::collections::BTreeSet;

use acs_testenv::TestNamespace;
use serde_json::{json, Value};

use super::helm::{self, env_value, of_kind, one, operator_container, split, RenderedDoc, Tools};
use crate::support::{self, TestEnv};

/// What a rendered chart must contain for one option.
type Check = Box<dyn Fn(&[RenderedDoc], &Ctx)>;

/// One documented option: its values and what the rendered chart must then contain.
struct Case {
    name: &'static str,
    values: Value,
    check: Check,
}

/// Names the checks need.
struct Ctx {
    release_ns: String,
    a: String,
    b: String,
}

const FULLNAME: &str = "acs-acs-identity-operator";
/// `<FULLNAME>-sealing-key`: the sealing key Secret, and its Role and RoleBinding.
const SEALING_KEY: &str = "acs-acs-identity-operator-sealing-key";
/// The pod label the AKS workload identity webhook acts on.
const WI_USE_LABEL: &str = "azure.workload.identity/use";
const CLIENT_ID: &str = "6f1c7d4e-3a2b-4c5d-8e9f-0a1b2c3d4e5f";
const TENANT_ID: &str = "0b9e8d7c-6a5f-4e3d-9c2b-1a0f9e8d7c6b";
const TOKEN_DIR: &str = "/var/run/secrets/azure/tokens";

fn deployment(docs: &[RenderedDoc]) -> &Value {
    &one(docs, "Deployment").value
}

fn env<'a>(docs: &'a [RenderedDoc], name: &str) -> Option<&'a str> {
    env_value(operator_container(deployment(docs)), name)
}

fn kinds(docs: &[RenderedDoc]) -> BTreeSet<String> {
    docs.iter().map(|d| d.kind().to_string()).collect()
}

fn rule_resources(doc: &RenderedDoc) -> Vec<String> {
    doc.value["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_array().unwrap().clone())
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The pod template's label `key`, if set.
fn pod_label<'a>(docs: &'a [RenderedDoc], key: &str) -> Option<&'a Value> {
    deployment(docs)["spec"]["template"]["metadata"]["labels"].get(key)
}

/// The pod volume named `name`.
fn volume<'a>(docs: &'a [RenderedDoc], name: &str) -> Option<&'a Value> {
    deployment(docs)["spec"]["template"]["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
}

/// The operator container's volume mount of volume `name`.
fn mount<'a>(docs: &'a [RenderedDoc], name: &str) -> Option<&'a Value> {
    operator_container(deployment(docs))["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

/// The workload identity rules `workloadIdentity.namespaceServiceAccounts` adds to the namespaced
/// rules (ClusterRole or a watched namespace's Role): a metadata read of the ServiceAccount a
/// CommunicationUser names, and a TokenRequest for it, neither limited by name.
fn assert_service_account_rules(doc: &RenderedDoc) {
    let rules = doc.value["rules"].as_array().unwrap();
    for want in [
        json!({"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]}),
        json!({"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}),
    ] {
        assert!(
            rules.contains(&want),
            "{} {} in {:?} lacks {want}",
            doc.kind(),
            doc.name(),
            doc.namespace()
        );
    }
}

/// The rule `rolloutRestart.enabled` adds to the namespaced rules: a read and a merge patch of
/// the workloads tokens name, nothing more.
fn rollout_restart_rule() -> Value {
    json!({"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"],
           "verbs": ["get", "patch"]})
}

/// The rules of a ClusterRole or Role on API group `apps`.
fn apps_rules(doc: &RenderedDoc) -> Vec<&Value> {
    doc.value["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["apiGroups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g.as_str() == Some("apps"))
        })
        .collect()
}

/// No ClusterRole or Role grants anything on `apps` kinds (rollout restarts off).
fn assert_no_apps_rules(docs: &[RenderedDoc]) {
    for doc in docs
        .iter()
        .filter(|d| matches!(d.kind(), "ClusterRole" | "Role"))
    {
        assert!(
            apps_rules(doc).is_empty(),
            "{} {} in {:?} grants on apps: {:?}",
            doc.kind(),
            doc.name(),
            doc.namespace(),
            apps_rules(doc)
        );
    }
}

/// `doc` (a ClusterRole or Role) grants nothing on ServiceAccounts or their tokens.
fn assert_no_service_account_rule(doc: &RenderedDoc) {
    let res = rule_resources(doc);
    for r in ["serviceaccounts", "serviceaccounts/token"] {
        assert!(
            !res.iter().any(|x| x == r),
            "{} {} in {:?} grants on {r}",
            doc.kind(),
            doc.name(),
            doc.namespace()
        );
    }
}

/// No ClusterRole or Role grants anything on ServiceAccounts or their tokens
/// (`workloadIdentity.namespaceServiceAccounts` off; the operator's own identity needs neither).
fn assert_no_service_account_rules(docs: &[RenderedDoc]) {
    for doc in docs
        .iter()
        .filter(|d| matches!(d.kind(), "ClusterRole" | "Role"))
    {
        assert_no_service_account_rule(doc);
    }
}

/// Without Entra credentials (neither `workloadIdentity.enabled` nor `namespaceServiceAccounts`)
/// nothing is ever sealed: no sealing key Role or RoleBinding, so no `create` on the release
/// namespace's Secrets; the variable naming the Secret stays (a token may not name it).
fn assert_no_sealing_key(docs: &[RenderedDoc], ctx: &Ctx) {
    for kind in ["Role", "RoleBinding"] {
        assert!(
            !of_kind(docs, kind).iter().any(|d| d.name() == SEALING_KEY),
            "a sealing key {kind} without Entra credentials"
        );
    }
    assert_eq!(
        env(docs, "SEALING_KEY_SECRET"),
        Some(format!("{}/{SEALING_KEY}", ctx.release_ns).as_str())
    );
}

/// The sealing key of Entra-credentialed token Secrets: its Role and RoleBinding in the release
/// namespace (create any Secret, get only that one), whatever the mode, and the variable naming
/// the Secret.
fn assert_sealing_key(docs: &[RenderedDoc], ctx: &Ctx) {
    let role = of_kind(docs, "Role")
        .into_iter()
        .find(|r| r.name() == SEALING_KEY)
        .expect("sealing key Role");
    assert_eq!(role.namespace(), Some(ctx.release_ns.as_str()));
    assert_eq!(
        role.value["rules"],
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"],
             "resourceNames": [SEALING_KEY], "verbs": ["get"]},
        ])
    );
    let binding = of_kind(docs, "RoleBinding")
        .into_iter()
        .find(|b| b.name() == SEALING_KEY)
        .expect("sealing key RoleBinding");
    assert_eq!(binding.namespace(), Some(ctx.release_ns.as_str()));
    assert_eq!(
        binding.value["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SEALING_KEY})
    );
    assert_eq!(
        binding.value["subjects"],
        json!([{"kind": "ServiceAccount", "name": FULLNAME, "namespace": ctx.release_ns}])
    );
    assert_eq!(
        env(docs, "SEALING_KEY_SECRET"),
        Some(format!("{}/{SEALING_KEY}", ctx.release_ns).as_str())
    );
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "defaults",
            values: json!({}),
            check: Box::new(|docs, ctx| {
                let k = kinds(docs);
                for kind in [
                    "ServiceAccount",
                    "ClusterRole",
                    "ClusterRoleBinding",
                    "Role",
                    "RoleBinding",
                    "Deployment",
                    "Service",
                    "PodDisruptionBudget",
                    "NetworkPolicy",
                    "CustomResourceDefinition",
                ] {
                    assert!(k.contains(kind), "no {kind}");
                }
                assert!(!k.contains("ServiceMonitor"));
                for d in docs
                    .iter()
                    .filter(|d| d.kind() != "CustomResourceDefinition")
                {
                    if !matches!(d.kind(), "ClusterRole" | "ClusterRoleBinding") {
                        assert_eq!(d.namespace(), Some(ctx.release_ns.as_str()), "{}", d.name());
                    }
                }
                let dep = deployment(docs);
                assert_eq!(dep["spec"]["replicas"], 1);
                assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate");
                let pod = &dep["spec"]["template"]["spec"];
                assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
                assert_eq!(
                    pod["securityContext"]["seccompProfile"]["type"],
                    "RuntimeDefault"
                );
                let c = operator_container(dep);
                assert_eq!(c["image"], "acs-identity-operator:0.1.0");
                assert_eq!(c["args"], json!(["run"]));
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true);
                assert_eq!(sc["allowPrivilegeEscalation"], false);
                assert_eq!(sc["runAsNonRoot"], true);
                assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
                assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
                for key in ["requests", "limits"] {
                    assert!(c["resources"][key]["memory"].is_string(), "resources.{key}");
                }
                assert_eq!(
                    c["livenessProbe"]["httpGet"],
                    json!({"path": "/healthz", "port": "metrics"})
                );
                assert_eq!(
                    c["readinessProbe"]["httpGet"],
                    json!({"path": "/readyz", "port": "metrics"})
                );
                assert_eq!(
                    c["ports"][0],
                    json!({"name": "metrics", "containerPort": 8080, "protocol": "TCP"})
                );
                assert_eq!(env(docs, "METRICS_ADDR"), Some("0.0.0.0:8080"));
                assert_eq!(env(docs, "LEADER_ELECTION"), Some("true"));
                assert_eq!(
                    env(docs, "LEADER_ELECTION_NAMESPACE"),
                    Some(ctx.release_ns.as_str())
                );
                assert_eq!(env(docs, "LOG_FORMAT"), Some("text"));
                assert_eq!(env(docs, "ACS_API_MODE"), Some("ga"));
                assert_eq!(env(docs, "WATCH_NAMESPACES"), None);
                assert_eq!(env(docs, "DEFAULT_CREDENTIALS_SECRET"), None);
                assert_eq!(env(docs, "DEFAULT_CREDENTIALS_ENDPOINT"), None);
                // Rollout restarts off: said explicitly, and no grant on workloads.
                assert_eq!(env(docs, "ROLLOUT_RESTART"), Some("false"));
                assert_eq!(env(docs, "RESTART_COALESCE_WINDOW"), Some("10s"));
                assert_eq!(env(docs, "PROPAGATION_ALLOWANCE"), Some("2m"));
                assert_no_apps_rules(docs);
                // No workload identity of its own: nothing for the webhook, no Entra variables.
                for name in [
                    "AZURE_AUTHORITY_HOST",
                    "AZURE_TENANT_ID",
                    "AZURE_CLIENT_ID",
                    "AZURE_FEDERATED_TOKEN_FILE",
                ] {
                    assert_eq!(env(docs, name), None, "{name}");
                }
                assert_eq!(pod_label(docs, WI_USE_LABEL), None);
                assert!(one(docs, "ServiceAccount").value["metadata"]
                    .get("annotations")
                    .is_none());
                assert_eq!(volume(docs, "azure-identity-token"), None);
                // One pod may always be evicted: a drain never blocks, even at one replica.
                let pdb = &one(docs, "PodDisruptionBudget").value["spec"];
                assert_eq!(pdb["maxUnavailable"], 1);
                assert!(pdb.get("minAvailable").is_none());
                // The operator's ClusterRole, and the two aggregated into view/edit/admin.
                let roles = of_kind(docs, "ClusterRole");
                assert_eq!(roles.len(), 3, "ClusterRoles: the operator's, view, edit");
                let cr = helm::operator_cluster_role(docs);
                assert_eq!(cr.name(), FULLNAME);
                assert_aggregated_roles(docs);
                assert_eq!(
                    deployment(docs)["spec"]["template"]["spec"]["nodeSelector"],
                    json!({"kubernetes.io/os": "linux"})
                );
                let res = rule_resources(cr);
                for r in [
                    "secrets",
                    "namespaces",
                    "communicationtokens/finalizers",
                    "events",
                ] {
                    assert!(res.iter().any(|x| x == r), "ClusterRole lacks {r}");
                }
                // No token minting for every ServiceAccount of the cluster unless asked for.
                assert_no_service_account_rules(docs);
                assert_no_sealing_key(docs, ctx);
                for crd in of_kind(docs, "CustomResourceDefinition") {
                    assert_eq!(
                        crd.value["metadata"]["annotations"]["helm.sh/resource-policy"],
                        "keep"
                    );
                }
                let svc = &one(docs, "Service").value["spec"];
                assert_eq!(svc["ports"][0]["targetPort"], "metrics");
            }),
        },
        Case {
            name: "watchNamespaces",
            values: json!({"watchNamespaces": ["A", "B"]}),
            check: Box::new(|docs, ctx| {
                assert_eq!(
                    env(docs, "WATCH_NAMESPACES"),
                    Some(format!("{},{}", ctx.a, ctx.b).as_str())
                );
                let roles: Vec<_> = of_kind(docs, "Role")
                    .into_iter()
                    .filter(|r| r.name() == FULLNAME)
                    .collect();
                let ns: BTreeSet<_> = roles.iter().map(|r| r.namespace().unwrap()).collect();
                assert_eq!(ns, BTreeSet::from([ctx.a.as_str(), ctx.b.as_str()]));
                assert!(rule_resources(roles[0]).contains(&"secrets".to_string()));
                assert_no_service_account_rules(docs);
                assert_no_sealing_key(docs, ctx);
                let cr = helm::operator_cluster_role(docs);
                assert_eq!(cr.name(), format!("{FULLNAME}-namespaces"));
                assert_eq!(
                    cr.value["rules"],
                    json!([{"apiGroups": [""], "resources": ["namespaces"],
                            "resourceNames": [ctx.a, ctx.b], "verbs": ["get", "list", "watch"]},
                           {"apiGroups": ["communication.acs.dev"],
                            "resources": ["clustercommunicationservices"],
                            "verbs": ["list", "watch"]}])
                );
                assert_eq!(env(docs, "ROLLOUT_RESTART"), Some("false"));
                assert_no_apps_rules(docs);
            }),
        },
        Case {
            name: "rollout restarts, cluster-wide",
            values: json!({"rolloutRestart": {"enabled": true, "coalesceWindow": "30s"},
                           "propagationAllowance": "5m"}),
            check: Box::new(|docs, _| {
                assert_eq!(env(docs, "ROLLOUT_RESTART"), Some("true"));
                assert_eq!(env(docs, "RESTART_COALESCE_WINDOW"), Some("30s"));
                assert_eq!(env(docs, "PROPAGATION_ALLOWANCE"), Some("5m"));
                // get and patch of the three workload kinds, in the ClusterRole, and nothing
                // else on apps anywhere.
                let cr = helm::operator_cluster_role(docs);
                assert_eq!(cr.name(), FULLNAME);
                let want = rollout_restart_rule();
                assert_eq!(apps_rules(cr), vec![&want]);
                for r in of_kind(docs, "Role") {
                    assert!(apps_rules(r).is_empty(), "Role {} grants on apps", r.name());
                }
            }),
        },
        Case {
            name: "rollout restarts of Argo Rollouts too",
            values: json!({"rolloutRestart": {"enabled": true, "argoRollouts": true}}),
            check: Box::new(|docs, _| {
                let cr = helm::operator_cluster_role(docs);
                let rules = cr.value["rules"].as_array().unwrap();
                let argo: Vec<&Value> = rules
                    .iter()
                    .filter(|r| r["apiGroups"] == json!(["argoproj.io"]))
                    .collect();
                assert_eq!(
                    argo,
                    vec![
                        &json!({"apiGroups": ["argoproj.io"], "resources": ["rollouts"],
                                 "verbs": ["get", "patch"]})
                    ]
                );
                assert_eq!(apps_rules(cr), vec![&rollout_restart_rule()]);
            }),
        },
        Case {
            name: "rollout restarts, namespaced",
            values: json!({"watchNamespaces": ["A", "B"], "rolloutRestart": {"enabled": true}}),
            check: Box::new(|docs, ctx| {
                assert_eq!(env(docs, "ROLLOUT_RESTART"), Some("true"));
                assert_eq!(env(docs, "RESTART_COALESCE_WINDOW"), Some("10s"));
                assert_eq!(env(docs, "PROPAGATION_ALLOWANCE"), Some("2m"));
                // In each watched namespace's Role only; the namespaces ClusterRole, the
                // sealing key and leader election Roles grant nothing on apps.
                let want = rollout_restart_rule();
                let roles: Vec<_> = of_kind(docs, "Role")
                    .into_iter()
                    .filter(|r| r.name() == FULLNAME)
                    .collect();
                let ns: BTreeSet<_> = roles.iter().map(|r| r.namespace().unwrap()).collect();
                assert_eq!(ns, BTreeSet::from([ctx.a.as_str(), ctx.b.as_str()]));
                for r in &roles {
                    assert_eq!(apps_rules(r), vec![&want], "Role in {:?}", r.namespace());
                }
                for r in of_kind(docs, "Role")
                    .into_iter()
                    .filter(|r| r.name() != FULLNAME)
                {
                    assert!(apps_rules(r).is_empty(), "Role {} grants on apps", r.name());
                }
                let cr = helm::operator_cluster_role(docs);
                assert_eq!(cr.name(), format!("{FULLNAME}-namespaces"));
                assert!(apps_rules(cr).is_empty());
            }),
        },
        Case {
            name: "namespace ServiceAccounts, cluster-wide",
            values: json!({"workloadIdentity": {"namespaceServiceAccounts": true}}),
            check: Box::new(|docs, ctx| {
                // Tokens issued through a namespace's ServiceAccount are sealed.
                assert_sealing_key(docs, ctx);
                // In the ClusterRole only: the sealing key and leader election Roles grant
                // nothing on ServiceAccounts.
                let cr = helm::operator_cluster_role(docs);
                assert_eq!(cr.name(), FULLNAME);
                assert_service_account_rules(cr);
                for r in of_kind(docs, "Role") {
                    assert_no_service_account_rule(r);
                }
                // The grant alone does not give the operator an identity of its own.
                assert_eq!(pod_label(docs, WI_USE_LABEL), None);
                assert!(one(docs, "ServiceAccount").value["metadata"]
                    .get("annotations")
                    .is_none());
            }),
        },
        Case {
            name: "namespace ServiceAccounts, namespaced",
            values: json!({"watchNamespaces": ["A", "B"],
                           "workloadIdentity": {"namespaceServiceAccounts": true}}),
            check: Box::new(|docs, ctx| {
                // In each watched namespace's Role only; the namespaces ClusterRole, the
                // sealing key and leader election Roles grant nothing on ServiceAccounts.
                let roles: Vec<_> = of_kind(docs, "Role")
                    .into_iter()
                    .filter(|r| r.name() == FULLNAME)
                    .collect();
                let ns: BTreeSet<_> = roles.iter().map(|r| r.namespace().unwrap()).collect();
                assert_eq!(ns, BTreeSet::from([ctx.a.as_str(), ctx.b.as_str()]));
                for r in &roles {
                    assert_service_account_rules(r);
                }
                for r in of_kind(docs, "Role")
                    .into_iter()
                    .filter(|r| r.name() != FULLNAME)
                {
                    assert_no_service_account_rule(r);
                }
                let cr = helm::operator_cluster_role(docs);
                assert_eq!(cr.name(), format!("{FULLNAME}-namespaces"));
                assert_no_service_account_rule(cr);
                assert_sealing_key(docs, ctx);
            }),
        },
        Case {
            name: "leader election with two replicas",
            values: json!({"replicas": 2, "leaderElection": {"enabled": true}}),
            check: Box::new(|docs, _| {
                assert_eq!(deployment(docs)["spec"]["replicas"], 2);
                assert_eq!(
                    one(docs, "PodDisruptionBudget").value["spec"]["maxUnavailable"],
                    1
                );
                let le = of_kind(docs, "Role")
                    .into_iter()
                    .find(|r| r.name().ends_with("-leader-election"))
                    .expect("lease Role");
                assert_eq!(
                    le.value["rules"],
                    json!([
                        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                         "resourceNames": [FULLNAME], "verbs": ["get", "update"]},
                    ])
                );
                assert_eq!(env(docs, "LEADER_ELECTION_LEASE"), Some(FULLNAME));
            }),
        },
        Case {
            name: "no leader election",
            values: json!({"leaderElection": {"enabled": false}}),
            check: Box::new(|docs, ctx| {
                assert_eq!(env(docs, "LEADER_ELECTION"), Some("false"));
                assert_eq!(env(docs, "LEADER_ELECTION_NAMESPACE"), None);
                assert_eq!(deployment(docs)["spec"]["strategy"]["type"], "Recreate");
                assert!(
                    !of_kind(docs, "Role")
                        .iter()
                        .any(|r| r.name().ends_with("-leader-election")),
                    "no lease Role"
                );
                // Nor does the sealing key Role depend on it: no Entra, no Role.
                assert_no_sealing_key(docs, ctx);
            }),
        },
        Case {
            name: "default credentials from Azure Service Operator",
            values: json!({"defaultCredentials": {"secretName": "aso-acs", "key": "primaryConnectionString"}}),
            check: Box::new(|docs, ctx| {
                assert_eq!(
                    env(docs, "DEFAULT_CREDENTIALS_SECRET"),
                    Some(format!("{}/aso-acs", ctx.release_ns).as_str())
                );
                assert_eq!(
                    env(docs, "DEFAULT_CREDENTIALS_KEY"),
                    Some("primaryConnectionString")
                );
                assert_eq!(
                    env(docs, "DEFAULT_CREDENTIALS_NAMESPACE_SELECTOR"),
                    Some("communication.acs.dev/default-credentials=true")
                );
            }),
        },
        Case {
            name: "namespaced default credentials in another namespace",
            values: json!({"watchNamespaces": ["A"],
                           "defaultCredentials": {"secretName": "aso-acs", "secretNamespace": "B"}}),
            check: Box::new(|docs, ctx| {
                let r = of_kind(docs, "Role")
                    .into_iter()
                    .find(|r| r.name().ends_with("-default-credentials"))
                    .expect("default credentials Role");
                assert_eq!(r.namespace(), Some(ctx.b.as_str()));
                assert_eq!(
                    r.value["rules"],
                    json!([{"apiGroups": [""], "resources": ["secrets"],
                            "resourceNames": ["aso-acs"], "verbs": ["get"]}])
                );
                assert_eq!(
                    env(docs, "DEFAULT_CREDENTIALS_SECRET"),
                    Some(format!("{}/aso-acs", ctx.b).as_str())
                );
            }),
        },
        Case {
            name: "workload identity through the AKS webhook",
            values: json!({"workloadIdentity": {"enabled": true, "clientId": CLIENT_ID,
                                                "tenantId": TENANT_ID}}),
            check: Box::new(|docs, _| {
                assert_eq!(
                    one(docs, "ServiceAccount").value["metadata"]["annotations"],
                    json!({"azure.workload.identity/client-id": CLIENT_ID,
                           "azure.workload.identity/tenant-id": TENANT_ID})
                );
                assert_eq!(pod_label(docs, WI_USE_LABEL), Some(&json!("true")));
                // The label is on the pod template only: selectors are immutable.
                assert!(deployment(docs)["spec"]["selector"]["matchLabels"]
                    .get(WI_USE_LABEL)
                    .is_none());
                // The webhook projects the token and sets the rest; the chart only the tenant.
                assert_eq!(volume(docs, "azure-identity-token"), None);
                assert_eq!(mount(docs, "azure-identity-token"), None);
                assert_eq!(env(docs, "AZURE_TENANT_ID"), Some(TENANT_ID));
                assert_eq!(env(docs, "AZURE_CLIENT_ID"), None);
                assert_eq!(env(docs, "AZURE_FEDERATED_TOKEN_FILE"), None);
                assert_eq!(env(docs, "AZURE_AUTHORITY_HOST"), None);
            }),
        },
        Case {
            name: "workload identity in another cloud, tenant from the webhook",
            values: json!({"workloadIdentity": {"enabled": true, "clientId": CLIENT_ID,
                                                "authorityHost": "https://login.microsoftonline.us/"},
                           "serviceAccount": {"annotations": {"example.com/team": "acs"}}}),
            check: Box::new(|docs, _| {
                assert_eq!(
                    one(docs, "ServiceAccount").value["metadata"]["annotations"],
                    json!({"example.com/team": "acs",
                           "azure.workload.identity/client-id": CLIENT_ID})
                );
                assert_eq!(pod_label(docs, WI_USE_LABEL), Some(&json!("true")));
                assert_eq!(
                    env(docs, "AZURE_AUTHORITY_HOST"),
                    Some("https://login.microsoftonline.us/")
                );
                assert_eq!(env(docs, "AZURE_TENANT_ID"), None);
            }),
        },
        Case {
            name: "workload identity with a token the chart projects (no webhook)",
            values: json!({"workloadIdentity": {"enabled": true, "clientId": CLIENT_ID,
                                                "tenantId": TENANT_ID, "projectToken": true,
                                                "authorityHost": "https://login.microsoftonline.us/"},
                           "acs": {"caBundle": {"configMap": "acs-ca"}}}),
            check: Box::new(|docs, _| {
                // No webhook to act on it: no label, so a webhook would not inject twice.
                assert_eq!(pod_label(docs, WI_USE_LABEL), None);
                assert_eq!(
                    volume(docs, "azure-identity-token"),
                    Some(
                        &json!({"name": "azure-identity-token", "projected": {"sources": [
                        {"serviceAccountToken": {"audience": "api://AzureADTokenExchange",
                                                 "expirationSeconds": 3600,
                                                 "path": "azure-identity-token"}}]}})
                    )
                );
                assert_eq!(
                    mount(docs, "azure-identity-token"),
                    Some(
                        &json!({"name": "azure-identity-token", "mountPath": TOKEN_DIR,
                                 "readOnly": true})
                    )
                );
                assert_eq!(
                    env(docs, "AZURE_FEDERATED_TOKEN_FILE"),
                    Some(format!("{TOKEN_DIR}/azure-identity-token").as_str())
                );
                assert_eq!(env(docs, "AZURE_CLIENT_ID"), Some(CLIENT_ID));
                assert_eq!(env(docs, "AZURE_TENANT_ID"), Some(TENANT_ID));
                assert_eq!(
                    env(docs, "AZURE_AUTHORITY_HOST"),
                    Some("https://login.microsoftonline.us/")
                );
                // The CA bundle's volume and mount are kept beside the token's.
                assert_eq!(
                    volume(docs, "acs-ca").unwrap()["configMap"]["name"],
                    "acs-ca"
                );
                assert!(mount(docs, "acs-ca").is_some());
            }),
        },
        Case {
            name: "namespaced default credentials through the operator's workload identity",
            values: json!({"watchNamespaces": ["A"],
                           "workloadIdentity": {"enabled": true, "clientId": CLIENT_ID,
                                                "tenantId": TENANT_ID},
                           "defaultCredentials": {"endpoint": "https://acs-demo.communication.azure.com",
                                                  "allowAdoption": true}}),
            check: Box::new(|docs, ctx| {
                assert_eq!(
                    env(docs, "DEFAULT_CREDENTIALS_ENDPOINT"),
                    Some("https://acs-demo.communication.azure.com")
                );
                assert_eq!(
                    env(docs, "DEFAULT_CREDENTIALS_NAMESPACE_SELECTOR"),
                    Some("communication.acs.dev/default-credentials=true")
                );
                assert_eq!(
                    env(docs, "ALLOW_DEFAULT_CREDENTIALS_ADOPTION"),
                    Some("true")
                );
                assert_eq!(env(docs, "DEFAULT_CREDENTIALS_SECRET"), None);
                assert_eq!(env(docs, "DEFAULT_CREDENTIALS_KEY"), None);
                // No Secret to read: no default credentials Role.
                assert!(!of_kind(docs, "Role")
                    .iter()
                    .any(|r| r.name().ends_with("-default-credentials")));
                let role = of_kind(docs, "Role")
                    .into_iter()
                    .find(|r| r.name() == FULLNAME)
                    .expect("watched namespace Role");
                assert_eq!(role.namespace(), Some(ctx.a.as_str()));
                // The operator's own identity needs no grant on the namespace's ServiceAccounts.
                assert_no_service_account_rules(docs);
                assert_sealing_key(docs, ctx);
            }),
        },
        Case {
            name: "ServiceMonitor",
            values: json!({"serviceMonitor": {"enabled": true, "labels": {"release": "prom"}}}),
            check: Box::new(|docs, ctx| {
                let sm = &one(docs, "ServiceMonitor").value;
                assert_eq!(sm["metadata"]["labels"]["release"], "prom");
                assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
                assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
                // The per-object series' own namespace label survives the scrape.
                assert_eq!(sm["spec"]["endpoints"][0]["honorLabels"], true);
                assert_eq!(
                    sm["spec"]["namespaceSelector"]["matchNames"],
                    json!([ctx.release_ns])
                );
                let svc_labels = &one(docs, "Service").value["metadata"]["labels"];
                for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
                    assert_eq!(
                        &svc_labels[k], v,
                        "the ServiceMonitor selects the Service by {k}"
                    );
                }
            }),
        },
        Case {
            name: "CRDs not installed",
            values: json!({"crds": {"install": false}}),
            check: Box::new(|docs, _| {
                assert!(of_kind(docs, "CustomResourceDefinition").is_empty());
            }),
        },
        Case {
            name: "CRDs not kept",
            values: json!({"crds": {"keep": false}}),
            check: Box::new(|docs, _| {
                for crd in of_kind(docs, "CustomResourceDefinition") {
                    assert!(crd.value["metadata"].get("annotations").is_none());
                }
            }),
        },
        Case {
            name: "json logs",
            values: json!({"logFormat": "json", "logLevel": "info,acs_identity_operator=debug"}),
            check: Box::new(|docs, _| {
                assert_eq!(env(docs, "LOG_FORMAT"), Some("json"));
                assert_eq!(
                    env(docs, "LOG_LEVEL"),
                    Some("info,acs_identity_operator=debug")
                );
            }),
        },
        Case {
            name: "preview api, request budget, concurrency",
            values: json!({"acs": {"apiMode": "preview", "requestsPerSecond": 2.5, "requestBurst": 10,
                                   "requestTimeout": "10s"},
                           "concurrency": 4, "resyncPeriod": "30m"}),
            check: Box::new(|docs, _| {
                assert_eq!(env(docs, "ACS_API_MODE"), Some("preview"));
                assert_eq!(env(docs, "ACS_REQUESTS_PER_SECOND"), Some("2.5"));
                assert_eq!(env(docs, "ACS_REQUEST_BURST"), Some("10"));
                assert_eq!(env(docs, "ACS_REQUEST_TIMEOUT"), Some("10s"));
                assert_eq!(env(docs, "CONCURRENCY"), Some("4"));
                assert_eq!(env(docs, "RESYNC_PERIOD"), Some("30m"));
                // Plain-HTTP endpoints stay refused unless asked for.
                assert_eq!(env(docs, "ALLOW_INSECURE_HTTP"), None);
            }),
        },
        Case {
            name: "plain-HTTP ACS endpoints for a development emulator",
            values: json!({"acs": {"allowInsecureHttp": true}}),
            check: Box::new(|docs, _| {
                assert_eq!(env(docs, "ALLOW_INSECURE_HTTP"), Some("true"));
            }),
        },
        Case {
            name: "CA bundle",
            values: json!({"acs": {"caBundle": {"configMap": "acs-ca", "key": "ca.pem"}}}),
            check: Box::new(|docs, _| {
                assert_eq!(
                    env(docs, "ACS_CA_CERT"),
                    Some("/etc/acs-identity-operator/ca/ca.pem")
                );
                let pod = &deployment(docs)["spec"]["template"]["spec"];
                assert_eq!(pod["volumes"][0]["configMap"]["name"], "acs-ca");
                assert_eq!(
                    operator_container(deployment(docs))["volumeMounts"][0]["readOnly"],
                    true
                );
            }),
        },
        Case {
            name: "existing ServiceAccount without RBAC",
            values: json!({"serviceAccount": {"create": false, "name": "ops"}, "rbac": {"create": false}}),
            check: Box::new(|docs, _| {
                let k = kinds(docs);
                for kind in [
                    "ServiceAccount",
                    "Role",
                    "ClusterRole",
                    "RoleBinding",
                    "ClusterRoleBinding",
                ] {
                    assert!(!k.contains(kind), "{kind} rendered");
                }
                assert_eq!(
                    deployment(docs)["spec"]["template"]["spec"]["serviceAccountName"],
                    "ops"
                );
            }),
        },
        Case {
            name: "no Service, NetworkPolicy or PodDisruptionBudget",
            values: json!({"metrics": {"service": {"enabled": false}}, "networkPolicy": {"enabled": false},
                           "podDisruptionBudget": {"enabled": false}}),
            check: Box::new(|docs, _| {
                let k = kinds(docs);
                for kind in ["Service", "NetworkPolicy", "PodDisruptionBudget"] {
                    assert!(!k.contains(kind), "{kind} rendered");
                }
            }),
        },
        Case {
            name: "pinned image and scheduling",
            values: json!({
                "image": {"repository": "registry.example/acs-identity-operator",
                          "digest": format!("sha256:{}", "ab".repeat(32))},
                "imagePullSecrets": [{"name": "pull"}],
                "metrics": {"port": 9090},
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                "podAnnotations": {"example.com/a": "b"},
                "priorityClassName": "system-cluster-critical",
                "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
            }),
            check: Box::new(|docs, _| {
                let c = operator_container(deployment(docs));
                assert_eq!(
                    c["image"],
                    format!(
                        "registry.example/acs-identity-operator@sha256:{}",
                        "ab".repeat(32)
                    )
                );
                assert_eq!(c["ports"][0]["containerPort"], 9090);
                assert_eq!(env(docs, "METRICS_ADDR"), Some("0.0.0.0:9090"));
                assert_eq!(env(docs, "RUST_BACKTRACE"), Some("1"));
                let pod = &deployment(docs)["spec"]["template"]["spec"];
                assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
                assert_eq!(pod["imagePullSecrets"][0]["name"], "pull");
                assert_eq!(pod["priorityClassName"], "system-cluster-critical");
            }),
        },
        Case {
            name: "self-serve extras: labels, annotations, strategy, volumes, extra objects",
            values: json!({
                "commonLabels": {"example.com/team": "platform"},
                "deploymentAnnotations": {"example.com/owner": "platform"},
                "strategy": {"type": "Recreate"},
                "extraVolumes": [{"name": "extra", "emptyDir": {}}],
                "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra", "readOnly": true}],
                "extraObjects": [
                    {"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "{{ .Release.Name }}-extra-map"}},
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-string\n  namespace: {{ .Release.Namespace }}\n",
                ],
                "rbac": {"aggregateClusterRoles": false},
            }),
            check: Box::new(|docs, ctx| {
                for d in docs
                    .iter()
                    .filter(|d| !matches!(d.kind(), "CustomResourceDefinition" | "ConfigMap"))
                {
                    assert_eq!(
                        d.value["metadata"]["labels"]["example.com/team"],
                        "platform",
                        "{} {}",
                        d.kind(),
                        d.name()
                    );
                }
                let dep = deployment(docs);
                assert_eq!(
                    dep["metadata"]["annotations"]["example.com/owner"],
                    "platform"
                );
                assert_eq!(dep["spec"]["strategy"], json!({"type": "Recreate"}));
                // Never in the selector: it is immutable once installed.
                assert!(dep["spec"]["selector"]["matchLabels"]
                    .get("example.com/team")
                    .is_none());
                assert_eq!(
                    volume(docs, "extra"),
                    Some(&json!({"name": "extra", "emptyDir": {}}))
                );
                assert_eq!(
                    mount(docs, "extra"),
                    Some(&json!({"name": "extra", "mountPath": "/extra", "readOnly": true}))
                );
                let maps: Vec<(&str, Option<&str>)> = of_kind(docs, "ConfigMap")
                    .into_iter()
                    .map(|d| (d.name(), d.namespace()))
                    .collect();
                assert!(maps.contains(&("acs-extra-map", None)), "{maps:?}");
                assert!(
                    maps.contains(&("extra-string", Some(ctx.release_ns.as_str()))),
                    "{maps:?}"
                );
                assert_eq!(
                    of_kind(docs, "ClusterRole").len(),
                    1,
                    "aggregated roles off"
                );
            }),
        },
    ]
}

/// The ClusterRoles for people: view (read) aggregated into view, edit and admin; edit (write,
/// never status or finalizers) into edit and admin.
fn assert_aggregated_roles(docs: &[RenderedDoc]) {
    let role = |suffix: &str| {
        let name = format!("{FULLNAME}-{suffix}");
        of_kind(docs, "ClusterRole")
            .into_iter()
            .find(|r| r.name() == name)
            .unwrap_or_else(|| panic!("no ClusterRole {name}"))
            .value
            .clone()
    };
    let aggregated_to = |r: &Value| -> Vec<&str> {
        ["view", "edit", "admin"]
            .into_iter()
            .filter(|to| {
                r["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{to}")]
                    == "true"
            })
            .collect()
    };
    let kinds = json!([
        "communicationusers",
        "communicationtokens",
        "communicationservices"
    ]);
    let view = role("view");
    assert_eq!(aggregated_to(&view), ["view", "edit", "admin"]);
    assert_eq!(
        view["rules"],
        json!([{"apiGroups": ["communication.acs.dev"], "resources": kinds,
                "verbs": ["get", "list", "watch"]}])
    );
    let edit = role("edit");
    assert_eq!(aggregated_to(&edit), ["edit", "admin"]);
    assert_eq!(
        edit["rules"],
        json!([{"apiGroups": ["communication.acs.dev"], "resources": kinds,
                "verbs": ["create", "update", "patch", "delete", "deletecollection"]}])
    );
}

/// Replaces the placeholder namespaces "A" and "B" in values with real ones.
fn with_namespaces(v: &Value, ctx: &Ctx) -> Value {
    match v {
        Value::String(s) if s == "A" => Value::String(ctx.a.clone()),
        Value::String(s) if s == "B" => Value::String(ctx.b.clone()),
        Value::Array(a) => Value::Array(a.iter().map(|x| with_namespaces(x, ctx)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), with_namespaces(x, ctx)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[tokio::test]
async fn every_documented_option_renders_as_promised_and_passes_a_server_side_dry_run() {
    let env = TestEnv::new("chart-render").await;
    let a = TestNamespace::create(env.cp, "chart-render-a")
        .await
        .unwrap();
    let b = TestNamespace::create(env.cp, "chart-render-b")
        .await
        .unwrap();
    let ctx = Ctx {
        release_ns: env.ns().to_string(),
        a: a.name().to_string(),
        b: b.name().to_string(),
    };
    let tools = Tools::new(env.cp);
    let mut env_names = BTreeSet::new();
    for case in cases() {
        let values = with_namespaces(&case.values, &ctx);
        let rendered = tools
            .template("acs", env.ns(), &values)
            .unwrap_or_else(|e| panic!("{}: helm template failed:\n{e}", case.name));
        let docs = split(&rendered);
        (case.check)(&docs, &ctx);
        for e in operator_container(deployment(&docs))["env"]
            .as_array()
            .unwrap()
        {
            env_names.insert(e["name"].as_str().unwrap().to_string());
        }
        // The ServiceMonitor kind does not exist on this apiserver; its shape is checked above.
        let applicable = docs.iter().filter(|d| d.kind() != "ServiceMonitor");
        let out = tools
            .apply_dry_run(&helm::join(applicable))
            .unwrap_or_else(|e| panic!("{}: the apiserver rejected the chart:\n{e}", case.name));
        assert!(out.contains("(server dry run)"), "{}: {out}", case.name);
    }

    // Every variable the chart sets is one the binary reads.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_acs-identity-operator"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for name in env_names.iter().filter(|n| *n != "RUST_BACKTRACE") {
        assert!(
            help.contains(&format!("[env: {name}=")),
            "the chart sets {name}, which `acs-identity-operator run` does not read"
        );
    }
}

#[tokio::test]
async fn invalid_values_are_rejected_when_rendering() {
    let tools = Tools::new(support::control_plane());
    for (values, expect) in [
        (json!({"logFormat": "xml"}), "logFormat"),
        (json!({"acs": {"apiMode": "beta"}}), "apiMode"),
        (json!({"concurrency": 0}), "concurrency"),
        (
            json!({"podDisruptionBudget": {"maxUnavailable": 0}}),
            "maxUnavailable",
        ),
        (json!({"resyncPeriod": "soon"}), "resyncPeriod"),
        (
            json!({"rolloutRestart": {"coalesceWindow": "soon"}}),
            "coalesceWindow",
        ),
        (
            json!({"propagationAllowance": "two minutes"}),
            "propagationAllowance",
        ),
        (json!({"rolloutRestart": {"enabled": "yes"}}), "enabled"),
        (
            json!({"rolloutRestart": {"argoRollouts": true}}),
            "rolloutRestart.argoRollouts needs rolloutRestart.enabled",
        ),
        (
            json!({"workloadIdentity": {"namespaceServiceAccounts": "yes"}}),
            "namespaceServiceAccounts",
        ),
        (
            json!({"watchNamespaces": ["Not_A_Namespace"]}),
            "watchNamespaces",
        ),
        (json!({"replics": 2}), "replics"),
        (
            json!({"leaderElection": {"enabled": false}, "strategy": {"type": "RollingUpdate"}}),
            "strategy.rollingUpdate.maxSurge: 0",
        ),
        (
            // No type: Kubernetes defaults it to RollingUpdate.
            json!({"leaderElection": {"enabled": false},
                   "strategy": {"rollingUpdate": {"maxSurge": 1}}}),
            "strategy.rollingUpdate.maxSurge: 0",
        ),
        (
            json!({"replicas": 2, "leaderElection": {"enabled": false}}),
            "leaderElection",
        ),
        (
            json!({"serviceMonitor": {"enabled": true}, "metrics": {"service": {"enabled": false}}}),
            "metrics.service",
        ),
        (
            json!({"defaultCredentials": {"secretName": "acs-aso",
                                          "endpoint": "https://acs-demo.communication.azure.com"},
                   "workloadIdentity": {"enabled": true, "clientId": CLIENT_ID,
                                        "tenantId": TENANT_ID}}),
            "defaultCredentials.secretName and defaultCredentials.endpoint are exclusive",
        ),
        (
            json!({"defaultCredentials": {"endpoint": "https://acs-demo.communication.azure.com"}}),
            "defaultCredentials.endpoint uses the operator's own workload identity",
        ),
        (
            json!({"defaultCredentials": {"endpoint": "https://acs-demo.communication.azure.com"},
                   "workloadIdentity": {"enabled": true, "clientId": CLIENT_ID}}),
            "defaultCredentials.endpoint uses the operator's own workload identity",
        ),
        (
            json!({"workloadIdentity": {"enabled": true}}),
            "workloadIdentity.enabled needs workloadIdentity.clientId",
        ),
        (
            json!({"workloadIdentity": {"projectToken": true, "clientId": CLIENT_ID,
                                        "tenantId": TENANT_ID}}),
            "workloadIdentity.projectToken needs workloadIdentity.enabled",
        ),
        (
            json!({"workloadIdentity": {"enabled": true, "clientId": CLIENT_ID,
                                        "projectToken": true}}),
            "workloadIdentity.projectToken needs",
        ),
        (
            json!({"defaultCredentials": {"endpoint": "http://acs-demo.communication.azure.com"}}),
            "endpoint",
        ),
        (
            json!({"workloadIdentity": {"authorityHost": "login.microsoftonline.com"}}),
            "authorityHost",
        ),
    ] {
        let Err(err) = tools.template("acs", "acs-system", &values) else {
            panic!("{values} must be rejected");
        };
        assert!(
            err.contains(expect),
            "{values}: the error names {expect}:\n{err}"
        );
    }
}

/// Every leaf of values.yaml, as a dotted path.
fn leaves(prefix: &str, v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::Mapping(m) if !m.is_empty() => {
            for (k, x) in m {
                let k = k.as_str().unwrap();
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                // Free-form Kubernetes fragments are documented as a whole.
                if matches!(
                    path.as_str(),
                    "resources"
                        | "podSecurityContext"
                        | "securityContext"
                        | "livenessProbe"
                        | "readinessProbe"
                        | "nodeSelector"
                        | "grafanaDashboard.labels"
                ) {
                    out.push(path);
                } else {
                    leaves(&path, x, out);
                }
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_value_is_documented_in_the_chart_readme() {
    let dir = helm::chart_dir();
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("values.yaml")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let mut paths = Vec::new();
    leaves("", &values, &mut paths);
    assert!(paths.len() > 30, "{paths:?}");
    let missing: Vec<_> = paths
        .iter()
        .filter(|p| !readme.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "values missing from the README's table: {missing:?}"
    );
}
