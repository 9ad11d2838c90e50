//! `helm upgrade` from the previous release to this one on the real node (issue 22): the previous
//! release's chart (its CRDs, RBAC and Deployment) and its operator's image, both from that
//! release's commit (`scripts/previous-release.sh`, imported by `scripts/node.sh up`), serve users
//! and tokens declared through the older credential forms; `helm upgrade` to this repository's
//! chart and image then hands them to the new operator, which reconciles every one of them with
//! no ACS call, no Secret written (data and resourceVersion as they were), no token's revision
//! moved and every object Ready, on the upgraded CRDs; and it renews a taken-over token when
//! asked.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::Value;

use crate::node_tier::cluster::{
    client, eventually, exclusive, kubectl, kubectl_apply, node, previous, Acs,
};
use crate::node_tier::release::{
    default_tag, describe_pods, install, install_chart, is_ready, lease_holder, metric_sum,
    operator_pods, operator_writes, pod_metrics, tenant, uninstall, valid_token, Write,
};

const NS: &str = "node-upgrade";
const CONVERGE: Duration = Duration::from_secs(90);
/// How long nothing may change before the previous release counts as settled, and how long the
/// new operator must stay quiet after its takeover.
const QUIET: Duration = Duration::from_secs(5);
const USERS: [&str; 2] = ["alice", "bob"];
/// Each token and its Secret.
const TOKENS: [(&str, &str); 3] = [
    ("alice-calls", "alice-calls"),
    ("alice-chat", "alice-chat-token"),
    ("bob-voip", "bob-voip"),
];

/// Users and tokens as the previous release's users declared them: alice through the
/// namespace's `acs-credentials` Secret, bob through `spec.credentials.secretName` with another
/// key (`serviceRef` is newer); tokens with the defaults, with scopes, lifetime, renewal, Secret
/// name and template set, and with a scope only.
fn tenant_objects(acs: &Acs) -> String {
    let creds = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bob-acs", "namespace": NS},
        "stringData": {"primaryConnectionString": acs.connection_string()},
    });
    format!(
        "{creds}
---
apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationUser
metadata: {{name: alice, namespace: {NS}}}
spec: {{deletionPolicy: Delete}}
---
apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationUser
metadata: {{name: bob, namespace: {NS}}}
spec:
  deletionPolicy: Retain
  credentials: {{secretName: bob-acs, key: primaryConnectionString}}
---
apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationToken
metadata: {{name: alice-calls, namespace: {NS}}}
spec: {{userRef: {{name: alice}}}}
---
apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationToken
metadata: {{name: alice-chat, namespace: {NS}}}
spec:
  userRef: {{name: alice}}
  scopes: [chat, chat.join]
  expiresInMinutes: 60
  renewBefore: 20m
  secretName: alice-chat-token
  secretTemplate:
    labels: {{app: chat}}
---
apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationToken
metadata: {{name: bob-voip, namespace: {NS}}}
spec: {{userRef: {{name: bob}}, scopes: [voip]}}
"
    )
}

fn api(c: &kube::Client, kind: &str, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "communication.acs.dev",
        "v1alpha1",
        kind,
    ));
    match ns {
        Some(ns) => Api::namespaced_with(c.clone(), ns, &ar),
        None => Api::all_with(c.clone(), &ar),
    }
}

async fn list(c: &kube::Client, kind: &str, ns: Option<&str>) -> Vec<DynamicObject> {
    api(c, kind, ns)
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("list {kind}: {e}"))
        .items
}

fn ready(obj: &DynamicObject) -> bool {
    obj.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn name(obj: &DynamicObject) -> String {
    obj.metadata.name.clone().unwrap_or_default()
}

fn rv(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.resource_version.clone().unwrap_or_default()
}

/// The first 12 hex digits of the SHA-256 of `bytes`: what messages show of a Secret's values.
fn fingerprint(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..12]
        .to_string()
}

fn fingerprints(data: &BTreeMap<String, Vec<u8>>) -> BTreeMap<&str, String> {
    data.iter()
        .map(|(k, v)| (k.as_str(), fingerprint(v)))
        .collect()
}

/// Whether the CRD `plural.communication.acs.dev` exists and its (only) version's schema has
/// `pointer` (a JSON pointer below `openAPIV3Schema`).
async fn crd_has(c: &kube::Client, plural: &str, pointer: &str) -> bool {
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let Some(crd) = crds
        .get_opt(&format!("{plural}.communication.acs.dev"))
        .await
        .expect("get CRD")
    else {
        return false;
    };
    let v = serde_json::to_value(&crd).expect("CRD as JSON");
    v.pointer(&format!("/spec/versions/0/schema/openAPIV3Schema{pointer}"))
        .is_some()
}

const TOKEN_SECRET_RV: &str = "/properties/status/properties/secretResourceVersion";
const USER_SERVICE_REF: &str = "/properties/spec/properties/serviceRef";

/// What the test compares before and after the upgrade.
#[derive(Debug, PartialEq)]
struct Recorded {
    /// Token Secret name -> (resourceVersion, data).
    secrets: BTreeMap<String, (String, BTreeMap<String, Vec<u8>>)>,
    /// Token name -> (revision, lastRotationTime, expiresOn).
    tokens: BTreeMap<String, (Value, Value, Value)>,
    /// User name -> identity.
    users: BTreeMap<String, Value>,
}

async fn record(c: &kube::Client) -> Recorded {
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    let mut rec = Recorded {
        secrets: BTreeMap::new(),
        tokens: BTreeMap::new(),
        users: BTreeMap::new(),
    };
    for (_, secret) in TOKENS {
        let s = secrets.get(secret).await.expect("token Secret");
        let data = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        rec.secrets
            .insert(secret.to_string(), (rv(&s.metadata), data));
    }
    for t in list(c, "CommunicationToken", Some(NS)).await {
        let st = &t.data["status"];
        rec.tokens.insert(
            name(&t),
            (
                st["revision"].clone(),
                st["lastRotationTime"].clone(),
                st["expiresOn"].clone(),
            ),
        );
    }
    for u in list(c, "CommunicationUser", Some(NS)).await {
        rec.users
            .insert(name(&u), u.data["status"]["identityId"].clone());
    }
    rec
}

/// What moves when anything is written: the emulator's request count and the resourceVersions
/// of every user and token (all namespaces: the release serves them all) and of this
/// namespace's Secrets.
async fn activity(c: &kube::Client, acs: &Acs) -> (u64, Vec<(String, String, String)>) {
    let mut versions = Vec::new();
    for kind in ["CommunicationUser", "CommunicationToken"] {
        for o in list(c, kind, None).await {
            let ns = o.metadata.namespace.clone().unwrap_or_default();
            versions.push((format!("{kind} {ns}"), name(&o), rv(&o.metadata)));
        }
    }
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    for s in secrets
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        let n = s.metadata.name.clone().unwrap_or_default();
        versions.push(("Secret".into(), n, rv(&s.metadata)));
    }
    versions.sort();
    (acs.total_calls().await, versions)
}

/// Waits until nothing has changed for [`QUIET`] (see [`activity`]); returns how long it took.
async fn settle(c: &kube::Client, acs: &Acs, what: &str) -> Duration {
    let started = Instant::now();
    let mut last = activity(c, acs).await;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = activity(c, acs).await;
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < CONVERGE,
            "{what}: still changing after {CONVERGE:?}"
        );
    }
}

fn single_pod(pods: &[Pod]) -> Option<&Pod> {
    match pods {
        [p] => Some(p),
        _ => None,
    }
}

fn image(pod: &Pod) -> &str {
    pod.spec.as_ref().expect("spec").containers[0]
        .image
        .as_deref()
        .unwrap_or_default()
}

const TOKEN_RECONCILES: &str =
    r#"acs_identity_operator_reconciles_total{controller="communicationtoken",result="ok"}"#;
const USER_RECONCILES: &str =
    r#"acs_identity_operator_reconciles_total{controller="communicationuser",result="ok"}"#;
const RECONCILE_ERRORS: &str = "acs_identity_operator_reconcile_errors_total{";

#[tokio::test]
async fn helm_upgrade_from_the_previous_release_takes_its_tokens_over_untouched() {
    let _node = exclusive().await;
    let test_started = Instant::now();
    let acs = Acs::start().await;
    let prev = previous();
    let c = client().await;

    // A namespace left by a failed run goes first (its identities were another test process's
    // emulator's, gone with it: its finalizers are dropped); then the previous release, as its
    // own chart installs it, with its own image.
    let namespaces: Api<Namespace> = Api::all(c.clone());
    if namespaces
        .get_opt(NS)
        .await
        .expect("get namespace")
        .is_some()
    {
        let drop = serde_json::json!({"metadata": {"finalizers": null}});
        for kind in ["CommunicationToken", "CommunicationUser"] {
            for o in list(&c, kind, Some(NS)).await {
                api(&c, kind, Some(NS))
                    .patch(&name(&o), &PatchParams::default(), &Patch::Merge(&drop))
                    .await
                    .expect("drop a finalizer");
            }
        }
        kubectl(&["delete", "namespace", NS, "--wait=true", "--timeout=60s"]);
    }
    uninstall();
    let started = Instant::now();
    install_chart(
        acs,
        prev.chart.to_str().expect("chart path"),
        &prev.operator_image,
        &["--set", "replicas=1"],
    );
    println!(
        "helm install of release {} ({}): its pod Ready {:.1} s after the install started",
        prev.version,
        prev.chart.display(),
        started.elapsed().as_secs_f64()
    );
    let pods = operator_pods().await;
    let old_pod = single_pod(&pods).unwrap_or_else(|| panic!("{}", describe_pods()));
    assert_eq!(image(old_pod), prev.operator_image);
    assert!(
        !crd_has(&c, "communicationtokens", TOKEN_SECRET_RV).await,
        "the previous release's CommunicationToken CRD (no status.secretResourceVersion)"
    );
    assert!(!crd_has(&c, "communicationusers", USER_SERVICE_REF).await);

    // Its users and tokens, each Secret holding a token the emulator accepts, everything Ready.
    tenant(NS, acs);
    kubectl_apply(&tenant_objects(acs));
    for (_, secret) in TOKENS {
        valid_token(acs, NS, secret, CONVERGE).await;
    }
    eventually(
        "every user and token of the previous release Ready",
        CONVERGE,
        || async {
            let users = list(&c, "CommunicationUser", Some(NS)).await;
            let tokens = list(&c, "CommunicationToken", Some(NS)).await;
            (users.len() == USERS.len()
                && tokens.len() == TOKENS.len()
                && users.iter().chain(&tokens).all(ready))
            .then_some(())
        },
    )
    .await;
    let settled = settle(&c, acs, "the previous release's objects").await;
    println!(
        "release {}: {} users and {} tokens Ready, nothing written for {QUIET:?} ({:.1} s)",
        prev.version,
        USERS.len(),
        TOKENS.len(),
        settled.as_secs_f64()
    );
    let before = record(&c).await;
    for (t, (revision, _, _)) in &before.tokens {
        assert_eq!(revision, &Value::from(1), "{t} at its first revision");
    }
    let stats_before = acs.stats().await;
    let (calls_before, versions_before) = activity(&c, acs).await;
    let issued_before = acs.calls("issueAccessToken").await;
    let created_before = acs.calls("createIdentity").await;

    // helm upgrade to this release's chart and image, as the other tests install it.
    let upgrade_started = Instant::now();
    install(acs, default_tag(), &["--set", "replicas=1"]);
    let upgraded = upgrade_started.elapsed();
    let new_pod = eventually(
        "the new release's pod alone, Ready, holding the Lease",
        CONVERGE,
        || async {
            let pods = operator_pods().await;
            let p = single_pod(&pods)?.clone();
            let name = p.metadata.name.clone()?;
            (image(&p) == node().operator_image
                && is_ready(&p)
                && lease_holder().await.as_deref() == Some(name.as_str()))
            .then_some(p)
        },
    )
    .await;
    let leading = upgrade_started.elapsed();
    let new_name = new_pod.metadata.name.clone().expect("pod name");

    // The takeover: every user and token of the cluster reconciled by the new operator.
    let tokens_total = list(&c, "CommunicationToken", None).await.len() as f64;
    let users_total = list(&c, "CommunicationUser", None).await.len() as f64;
    let metrics = eventually(
        "the new operator's first reconcile of every user and token",
        CONVERGE,
        || async {
            let m = pod_metrics(&new_pod).await?;
            (metric_sum(&m, TOKEN_RECONCILES) >= tokens_total
                && metric_sum(&m, USER_RECONCILES) >= users_total)
                .then_some(m)
        },
    )
    .await;
    let took_over = upgrade_started.elapsed();
    assert_eq!(
        metric_sum(&metrics, RECONCILE_ERRORS),
        0.0,
        "no failed reconcile"
    );
    // Nothing follows: no ACS call and no write for a few more seconds.
    let quiet_from = Instant::now();
    while quiet_from.elapsed() < QUIET {
        assert_eq!(
            acs.total_calls().await,
            calls_before,
            "an ACS call after the upgrade: {} (before: {stats_before})",
            acs.stats().await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "helm upgrade to this release: --wait returned after {:.1} s, {new_name} led after \
         {:.1} s and had reconciled all {tokens_total} tokens and {users_total} users after \
         {:.1} s; quiet for {QUIET:?} since",
        upgraded.as_secs_f64(),
        leading.as_secs_f64(),
        took_over.as_secs_f64()
    );

    // Untouched: no ACS call since the recording, every Secret as it was, every revision kept,
    // every object Ready.
    assert_eq!(acs.calls("issueAccessToken").await, issued_before);
    assert_eq!(acs.calls("createIdentity").await, created_before);
    assert_eq!(
        acs.total_calls().await,
        calls_before,
        "{}",
        acs.stats().await
    );
    let after = record(&c).await;
    for (secret, (rv_before, data_before)) in &before.secrets {
        let (rv_after, data_after) = &after.secrets[secret];
        assert!(
            data_after == data_before,
            "Secret {secret}'s data changed: {:?} -> {:?}",
            fingerprints(data_before),
            fingerprints(data_after)
        );
        assert_eq!(rv_after, rv_before, "Secret {secret} written");
    }
    assert_eq!(after.tokens, before.tokens, "revision, rotation, expiry");
    assert_eq!(after.users, before.users, "identities");
    for kind in ["CommunicationUser", "CommunicationToken"] {
        for o in list(&c, kind, Some(NS)).await {
            assert!(ready(&o), "{kind} {} Ready: {}", name(&o), o.data["status"]);
        }
    }
    let (_, versions_after) = activity(&c, acs).await;
    let moved: Vec<_> = versions_after
        .iter()
        .filter(|v| !versions_before.contains(v))
        .collect();
    let writes: Vec<Write> = operator_writes()
        .into_iter()
        .filter(|w| w.pod == new_name)
        .collect();
    println!(
        "ACS calls since the recording: {}; objects whose resourceVersion moved: {}; writes by \
         {new_name}: {}",
        acs.total_calls().await - calls_before,
        moved.len(),
        writes.len()
    );
    assert!(
        moved.is_empty(),
        "no user, token or Secret written: {moved:#?}"
    );
    assert!(
        writes.is_empty(),
        "no write by the new operator: {writes:#?}"
    );
    // The upgrade brought the new CRDs.
    assert!(crd_has(&c, "communicationtokens", TOKEN_SECRET_RV).await);
    assert!(crd_has(&c, "communicationusers", USER_SERVICE_REF).await);
    assert!(crd_has(&c, "communicationservices", "").await);

    // The new operator serves what it took over: a renewal asked of a token issued by the
    // previous release gives its next revision, once.
    let rotate = serde_json::json!({"metadata": {"annotations": {"communication.acs.dev/rotate": "after-upgrade"}}});
    api(&c, "CommunicationToken", Some(NS))
        .patch(
            "alice-calls",
            &PatchParams::default(),
            &Patch::Merge(rotate),
        )
        .await
        .expect("rotate");
    let old_token = before.secrets["alice-calls"].1["token"].clone();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    let renewed = eventually(
        "alice-calls renewed by the new operator",
        CONVERGE,
        || async {
            let t = api(&c, "CommunicationToken", Some(NS))
                .get("alice-calls")
                .await
                .ok()?;
            (t.data["status"]["revision"] == 2 && ready(&t)).then_some(())?;
            let s = secrets.get("alice-calls").await.ok()?;
            let token = s.data?.get("token")?.0.clone();
            (token != old_token).then_some(String::from_utf8(token).ok()?)
        },
    )
    .await;
    assert!(acs.is_valid(&renewed).await);
    assert_eq!(acs.calls("issueAccessToken").await, issued_before + 1);

    // The namespace goes while the new operator runs: it handles the previous release's
    // finalizers (alice's identity deleted, bob's retained).
    let deleted_before = acs.calls("deleteIdentity").await;
    kubectl(&["delete", "namespace", NS, "--wait=true", "--timeout=120s"]);
    assert_eq!(acs.calls("deleteIdentity").await, deleted_before + 1);
    uninstall();
    println!(
        "upgrade test: {:.1} s in all",
        test_started.elapsed().as_secs_f64()
    );
}
