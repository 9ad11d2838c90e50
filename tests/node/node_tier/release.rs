//! The operator installed the way users install it: `helm upgrade --install` of the chart with
//! the operator's image (imported into the node's containerd), plus the namespaces that use it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};

use crate::node_tier::cluster::{
    audit_events, client, eventually, helm, kubectl, kubectl_apply, node, Acs,
};

pub const NAMESPACE: &str = "acs-system";
pub const RELEASE: &str = "acs";
/// `<release>-<chart>`: the Deployment, ServiceAccount and Lease name.
pub const FULLNAME: &str = "acs-acs-identity-operator";
const CA_CONFIGMAP: &str = "acs-emulator-ca";
const SELECTOR: &str = "app.kubernetes.io/instance=acs";
/// The chart's ServiceAccount, as the audit log names it.
pub const SERVICE_ACCOUNT: &str = "system:serviceaccount:acs-system:acs-acs-identity-operator";
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// `repository` and `tag` of an image reference.
pub fn split_image(image: &str) -> (&str, &str) {
    image.rsplit_once(':').expect("image reference with a tag")
}

fn chart_dir() -> String {
    format!(
        "{}/charts/acs-identity-operator",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Installs (or upgrades) the release with `--wait`: the Deployment's pods Ready.
///
/// What a cluster without kube-proxy needs: pods reach the apiserver at the bridge address
/// (`KUBERNETES_SERVICE_HOST/PORT` through `extraEnv`), and the operator trusts the emulator's
/// CA through the chart's `acs.caBundle`. Everything else is the chart's defaults.
pub fn install(acs: &Acs, tag: &str, extra: &[&str]) {
    let (repo, _) = split_image(&node().operator_image);
    install_chart(acs, &chart_dir(), &format!("{repo}:{tag}"), extra);
}

/// [`install`] from the chart in directory `chart` (this repository's, or another release's)
/// with the operator image `image`, and the same values.
pub fn install_chart(acs: &Acs, chart: &str, image: &str, extra: &[&str]) {
    let node = node();
    kubectl_apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n"
    ));
    let ca = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CA_CONFIGMAP, "namespace": NAMESPACE},
        "data": {"ca.crt": acs.ca_pem},
    });
    kubectl_apply(&ca.to_string());
    let (repo, tag) = split_image(image);
    let env = serde_json::json!([
        {"name": "KUBERNETES_SERVICE_HOST", "value": node.bridge_ip},
        {"name": "KUBERNETES_SERVICE_PORT", "value": node.api_port()},
    ])
    .to_string();
    let mut args = vec![
        "upgrade",
        "--install",
        RELEASE,
        chart,
        "--namespace",
        NAMESPACE,
        "--wait",
        "--timeout",
        "180s",
    ];
    let image_repo = format!("image.repository={repo}");
    let image_tag = format!("image.tag={tag}");
    let env_json = format!("extraEnv={env}");
    let ca_value = format!("acs.caBundle.configMap={CA_CONFIGMAP}");
    // The emulator listens on the bridge: its host joins the chart's allowed ACS hosts.
    let allowed = format!(
        "acs.allowedEndpointHosts={}",
        serde_json::json!([
            "*.communication.azure.com",
            "*.communication.azure.us",
            node.bridge_ip
        ])
    );
    args.extend([
        "--set",
        &image_repo,
        "--set",
        &image_tag,
        "--set",
        "image.pullPolicy=Never",
        "--set",
        &ca_value,
        "--set-json",
        &env_json,
        "--set-json",
        &allowed,
    ]);
    args.extend(extra);
    helm(&args);
}

/// The tag of the image `scripts/node.sh` imported.
pub fn default_tag() -> &'static str {
    split_image(&node().operator_image).1
}

pub fn uninstall() {
    helm(&[
        "uninstall",
        RELEASE,
        "--namespace",
        NAMESPACE,
        "--wait",
        "--ignore-not-found",
    ]);
}

/// The release's pods that are not being deleted.
pub async fn operator_pods() -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client().await, NAMESPACE);
    pods.list(&ListParams::default().labels(SELECTOR))
        .await
        .expect("list operator pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The Lease's holder (a pod name: the chart sets `POD_NAME`).
pub async fn lease_holder() -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client().await, NAMESPACE);
    leases
        .get_opt(FULLNAME)
        .await
        .expect("get Lease")?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// A namespace that uses the operator: its `acs-credentials` Secret names the emulator.
pub fn tenant(ns: &str, acs: &Acs) {
    let yaml = serde_json::json!({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": "acs-credentials", "namespace": ns},
             "stringData": {"connectionString": acs.connection_string()}},
        ]
    });
    kubectl_apply(&yaml.to_string());
}

/// The examples' platform object: the ClusterCommunicationService `acs-demo` (examples/
/// 05-service.yaml, its endpoint the emulator's) and its Secret in the release namespace.
pub fn example_service(acs: &Acs) {
    let endpoint = acs
        .connection_string()
        .split(';')
        .find_map(|p| p.strip_prefix("endpoint="))
        .expect("endpoint in the connection string")
        .trim_end_matches('/')
        .to_string();
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "acs-platform", "namespace": NAMESPACE},
        "stringData": {"connectionString": acs.connection_string()},
    });
    kubectl_apply(&secret.to_string());
    let path = format!("{}/examples/05-service.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let text: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("endpoint:") {
                format!("  endpoint: {endpoint}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    kubectl_apply(&text);
}

/// Applies a user and a token for it in `ns`.
pub fn user_and_token(ns: &str, user: &str, token: &str) {
    kubectl_apply(&format!(
        "apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationUser
metadata: {{name: {user}, namespace: {ns}}}
spec: {{deletionPolicy: Delete}}
---
apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationToken
metadata: {{name: {token}, namespace: {ns}}}
spec: {{userRef: {{name: {user}}}}}
"
    ));
}

/// Waits until the token's Secret holds a token the emulator accepts; returns the token.
pub async fn valid_token(acs: &Acs, ns: &str, name: &str, timeout: Duration) -> String {
    let secrets: Api<Secret> = Api::namespaced(client().await, ns);
    eventually(
        &format!("a valid token in Secret {ns}/{name}"),
        timeout,
        || {
            let secrets = secrets.clone();
            async move {
                let s = secrets.get_opt(name).await.ok()??;
                let token = s.data?.get("token")?.0.clone();
                let token = String::from_utf8(token).ok()?;
                acs.is_valid(&token).await.then_some(token)
            }
        },
    )
    .await
}

/// `kubectl get` of one field, for messages.
pub fn describe_pods() -> String {
    kubectl(&["get", "pods", "-A", "-o", "wide"])
}

/// A write (create, update, patch, delete) the operator made, as the audit log shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Write {
    /// `requestReceivedTimestamp` (RFC 3339, microseconds: orders writes by time).
    pub time: String,
    /// The pod whose ServiceAccount token made it (`?` when the audit event names none).
    pub pod: String,
    pub verb: String,
    /// The resource, with its subresource if any (`communicationtokens/status`).
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

/// Writes (anything but reads and the Lease) the chart's ServiceAccount made, whichever
/// release's pod made them, oldest first.
pub fn operator_writes() -> Vec<Write> {
    let field = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let mut writes: Vec<Write> = audit_events()
        .into_iter()
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| e["user"]["username"] == SERVICE_ACCOUNT)
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete")
            )
        })
        .filter(|e| e["objectRef"]["resource"] != "leases")
        .map(|e| {
            let r = &e["objectRef"];
            let mut resource = field(&r["resource"]);
            if let Some(sub) = r["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            Write {
                time: field(&e["requestReceivedTimestamp"]),
                pod: e["user"]["extra"][POD_NAME_EXTRA][0]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
                verb: field(&e["verb"]),
                resource,
                namespace: field(&r["namespace"]),
                name: field(&r["name"]),
            }
        })
        .collect();
    writes.sort();
    writes
}

/// The text of a pod's `/metrics` (the chart's default port, 8080), read at the pod's IP from
/// the host, which is on the pod bridge; `None` while it does not answer.
pub async fn pod_metrics(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
    let resp = reqwest::get(format!("http://{ip}:8080/metrics"))
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

/// The sum of the samples in `metrics` whose series starts with `series` (a metric name and
/// the start of its labels, e.g. `acs_identity_operator_reconciles_total{controller="x"`).
pub fn metric_sum(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
