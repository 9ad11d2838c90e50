//! The chart on a real node: the operator runs as a pod of its own image, with the chart's
//! ServiceAccount, RBAC, securityContext and probes; two replicas elect one leader and hand over;
//! an upgrade rolls without two writers; an uninstall keeps the CRDs.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use serde_json::Value;

use crate::node_tier::cluster::{audit_events, client, eventually, exclusive, node, run, Acs};
use crate::node_tier::release::{
    default_tag, describe_pods, install, is_ready, lease_holder, operator_pods, operator_writes,
    split_image, tenant, uninstall, user_and_token, valid_token, FULLNAME, NAMESPACE,
    SERVICE_ACCOUNT,
};

const CONVERGE: Duration = Duration::from_secs(90);
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().expect("pod name")
}

#[tokio::test]
async fn the_chart_runs_the_operator_as_a_pod_that_reconciles_with_its_own_service_account() {
    let _node = exclusive().await;
    let acs = Acs::start().await;
    uninstall();
    let started = std::time::Instant::now();
    install(acs, default_tag(), &["--set", "replicas=1"]);
    println!(
        "helm install --wait: the operator pod Ready {:.1} s after the install started",
        started.elapsed().as_secs_f64()
    );

    let pods = operator_pods().await;
    assert_eq!(pods.len(), 1, "{}", describe_pods());
    let pod = &pods[0];
    assert!(
        is_ready(pod),
        "the operator pod is Ready (readinessProbe /readyz)"
    );
    let spec = pod.spec.as_ref().expect("pod spec");
    assert_eq!(spec.service_account_name.as_deref(), Some(FULLNAME));
    assert_ne!(
        spec.host_network,
        Some(true),
        "pod networking, not the host's"
    );
    assert_eq!(spec.node_name.as_deref(), Some(node().name.as_str()));
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some(node().operator_image.as_str()));
    assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let pod_sc = spec.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    // The image's own user (65532), verified by the kubelet against runAsNonRoot.
    let status = pod.status.as_ref().expect("pod status");
    let restarts = status
        .container_statuses
        .as_ref()
        .expect("container statuses")[0]
        .restart_count;
    assert_eq!(restarts, 0);

    let ns = "node-chart";
    tenant(ns, acs);
    user_and_token(ns, "carol", "carol-calling");
    let token = valid_token(acs, ns, "carol-calling", CONVERGE).await;
    assert!(token.len() > 100, "a real token");

    // The Secret was written by the pod, as the chart's ServiceAccount (not impersonated).
    let name = pod_name(pod);
    let secret_writes: Vec<Value> = audit_events()
        .into_iter()
        .filter(|e| e["stage"] == "ResponseComplete" && e["verb"] == "create")
        .filter(|e| e["objectRef"]["resource"] == "secrets" && e["objectRef"]["namespace"] == ns)
        .filter(|e| e["objectRef"]["name"] == "carol-calling")
        .collect();
    assert_eq!(secret_writes.len(), 1, "{secret_writes:#?}");
    let w = &secret_writes[0];
    assert_eq!(w["user"]["username"], SERVICE_ACCOUNT);
    assert_eq!(w["user"]["extra"][POD_NAME_EXTRA][0], name.as_str());
    assert!(w.get("impersonatedUser").is_none());
    uninstall();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hand_over_when_the_leader_goes_and_an_upgrade_never_runs_two_writers() {
    let _node = exclusive().await;
    let acs = Acs::start().await;
    install(acs, default_tag(), &["--set", "replicas=2"]);
    let ns = "node-replicas";
    tenant(ns, acs);

    let pods = operator_pods().await;
    assert_eq!(pods.len(), 2, "{}", describe_pods());
    assert!(
        pods.iter().all(is_ready),
        "the standby is Ready too (warm caches)"
    );
    let names: BTreeSet<String> = pods.iter().map(pod_name).collect();
    let leader = eventually("a Lease holder", CONVERGE, || async {
        lease_holder().await.filter(|h| names.contains(h))
    })
    .await;
    user_and_token(ns, "dave", "dave-1");
    valid_token(acs, ns, "dave-1", CONVERGE).await;

    // The leader's pod goes: the standby takes over and reconciles.
    let api: Api<Pod> = Api::namespaced(client().await, NAMESPACE);
    api.delete(&leader, &DeleteParams::default())
        .await
        .expect("delete the leader's pod");
    let deleted_at = std::time::Instant::now();
    let successor = eventually("another Lease holder", CONVERGE, || async {
        lease_holder().await.filter(|h| h != &leader)
    })
    .await;
    println!(
        "leader pod deleted: {successor} ({}) holds the Lease {:.1} s later",
        if names.contains(&successor) {
            "the standby"
        } else {
            "the replacement pod"
        },
        deleted_at.elapsed().as_secs_f64()
    );
    let current: BTreeSet<String> = operator_pods().await.iter().map(pod_name).collect();
    assert!(
        current.contains(&successor),
        "{successor} is a live operator pod: {current:?}"
    );
    user_and_token(ns, "dave", "dave-2");
    valid_token(acs, ns, "dave-2", CONVERGE).await;

    // An upgrade with a changed value and a new image tag, while tokens keep arriving.
    let new_tag = format!("{}-next", default_tag());
    let (repo, _) = split_image(&node().operator_image);
    let next_image = format!("{repo}:{new_tag}");
    let sock = node()
        .dir
        .join("containerd/containerd.sock")
        .display()
        .to_string();
    let tag_args = [
        "--address",
        &sock,
        "-n",
        "k8s.io",
        "images",
        "tag",
        "--force",
    ];
    let mut tag_args = tag_args.to_vec();
    tag_args.extend([node().operator_image.as_str(), next_image.as_str()]);
    run(Path::new("ctr"), &tag_args, None);
    // helm blocks this worker thread; the writer runs on the other one.
    let writer = tokio::spawn(async move {
        for i in 0..6 {
            user_and_token("node-replicas", "dave", &format!("dave-rollout-{i}"));
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    });
    install(
        acs,
        &new_tag,
        &["--set", "replicas=2", "--set", "logLevel=debug"],
    );
    writer.await.expect("writer task");
    let pods = operator_pods().await;
    assert_eq!(pods.len(), 2, "{}", describe_pods());
    for p in &pods {
        let image = p.spec.as_ref().expect("spec").containers[0].image.clone();
        assert_eq!(image.as_deref(), Some(next_image.as_str()));
    }
    for i in 0..6 {
        valid_token(acs, ns, &format!("dave-rollout-{i}"), CONVERGE).await;
    }

    // No two writers at once: ordered by time, each pod's writes form one unbroken run.
    let writes = operator_writes();
    let mut runs: Vec<&str> = Vec::new();
    for w in &writes {
        if runs.last() != Some(&w.pod.as_str()) {
            runs.push(&w.pod);
        }
    }
    let distinct: BTreeSet<&&str> = runs.iter().collect();
    assert_eq!(
        runs.len(),
        distinct.len(),
        "a pod wrote again after another pod had written: {runs:?}\n{writes:#?}"
    );
    assert!(runs.len() >= 2, "writes by the successor too: {runs:?}");
    assert!(!runs.contains(&"?"), "every write names its pod: {runs:?}");
    uninstall();
}

#[tokio::test]
async fn helm_uninstall_keeps_the_crds_the_objects_and_their_secrets() {
    let _node = exclusive().await;
    let acs = Acs::start().await;
    install(acs, default_tag(), &["--set", "replicas=1"]);
    let ns = "node-uninstall";
    tenant(ns, acs);
    user_and_token(ns, "erin", "erin-calling");
    let token = valid_token(acs, ns, "erin-calling", CONVERGE).await;
    let deletes_before = acs.calls("deleteIdentity").await;

    uninstall();
    let c = client().await;
    assert!(operator_pods().await.is_empty(), "{}", describe_pods());
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), NAMESPACE);
    assert!(deployments.get_opt(FULLNAME).await.expect("get").is_none());
    let roles: Api<ClusterRole> = Api::all(c.clone());
    assert!(roles.get_opt(FULLNAME).await.expect("get").is_none());
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    for crd in [
        "communicationusers.communication.acs.dev",
        "communicationtokens.communication.acs.dev",
    ] {
        assert!(
            crds.get_opt(crd).await.expect("get").is_some(),
            "{crd} kept"
        );
    }
    let users: Api<kube::api::DynamicObject> = Api::namespaced_with(
        c.clone(),
        ns,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "communication.acs.dev",
            "v1alpha1",
            "CommunicationUser",
        )),
    );
    assert!(users.get_opt("erin").await.expect("get").is_some());
    let secrets: Api<Secret> = Api::namespaced(c, ns);
    let kept = secrets
        .get("erin-calling")
        .await
        .expect("the token Secret stays");
    let kept = kept.data.expect("data")["token"].0.clone();
    assert_eq!(String::from_utf8(kept).expect("utf8"), token);
    assert!(
        acs.is_valid(&token).await,
        "the identity and its token stay"
    );
    assert_eq!(acs.calls("deleteIdentity").await, deletes_before);
}
