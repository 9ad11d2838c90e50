//! Rollout restarts on a real node for workloads the operator had not seen when a token
//! changed (issue 27): an operator upgrade that enables the feature restarts no existing
//! workload; a Deployment applied before its tokens and one applied after them (the order a
//! GitOps tool or `kubectl apply -f dir/` may choose) are each restarted exactly once by the
//! next rotation, and their new pods print the new token from their environment.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};

use crate::node_tier::cluster::{client, eventually, exclusive, kubectl, kubectl_apply, node, Acs};
use crate::node_tier::release::{
    default_tag, describe_pods, install, tenant, uninstall, valid_token,
};
use crate::node_tier::workloads::{fingerprint, logs, running_pod};

const NS: &str = "acs-late";
const TOKEN: &str = "calls";

/// An opted-in Deployment printing the SHA-256 prefix of the token in its environment.
fn env_deployment(name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {NS}
  annotations: {{communication.acs.dev/restart-on-rotation: "true"}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      securityContext: {{runAsNonRoot: true, runAsUser: 65532}}
      containers:
      - name: app
        image: {image}
        imagePullPolicy: Never
        command:
        - sh
        - -c
        - |
          while true; do echo "sha256=$(printf %s "$ACS_TOKEN" | sha256sum | cut -c1-12)"; sleep 2; done
        env:
        - name: ACS_TOKEN
          valueFrom: {{secretKeyRef: {{name: {TOKEN}, key: token}}}}
"#,
        image = node().app_image
    )
}

fn tokens_api(c: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        c.clone(),
        NS,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "communication.acs.dev",
            "v1alpha1",
            "CommunicationToken",
        )),
    )
}

async fn replica_sets(c: &kube::Client, app: &str) -> usize {
    Api::<ReplicaSet>::namespaced(c.clone(), NS)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

/// Asserts the ReplicaSet counts stay at `want` for `hold` (a restart would add one).
async fn rollouts_stay(c: &kube::Client, want: &[(&str, usize)], hold: Duration) {
    let start = Instant::now();
    while start.elapsed() < hold {
        for (app, n) in want {
            assert_eq!(replica_sets(c, app).await, *n, "{app}\n{}", describe_pods());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The token's RolloutRestart condition status and its recorded workloads.
async fn rollout_state(c: &kube::Client) -> (String, serde_json::Value) {
    let t = tokens_api(c).get(TOKEN).await.expect("token");
    let st = &t.data["status"];
    let cond = st["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "RolloutRestart"))
        .map(|c| format!("{}/{}", c["status"], c["reason"]))
        .unwrap_or_default();
    (cond, st["restartedWorkloads"].clone())
}

async fn rotate(c: &kube::Client, value: &str) {
    let patch =
        serde_json::json!({"metadata": {"annotations": {"communication.acs.dev/rotate": value}}});
    tokens_api(c)
        .patch(TOKEN, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("rotate");
}

async fn secret_token(secrets: &Api<Secret>) -> String {
    let s = secrets.get(TOKEN).await.expect("token Secret");
    String::from_utf8(s.data.expect("data")["token"].0.clone()).expect("utf8")
}

#[tokio::test]
async fn workloads_seen_late_restart_once_at_the_next_rotation_and_enabling_the_feature_restarts_none(
) {
    let _node = exclusive().await;
    let acs = Acs::start().await;
    // The release before the feature is on.
    install(acs, default_tag(), &["--set", "replicas=1"]);
    tenant(NS, acs);
    // Applied before its tokens: its pod starts once the Secret exists.
    kubectl_apply(&env_deployment("env-first"));
    kubectl_apply(&format!(
        "apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationUser
metadata: {{name: alice, namespace: {NS}}}
spec: {{deletionPolicy: Delete}}
---
apiVersion: communication.acs.dev/v1alpha1
kind: CommunicationToken
metadata: {{name: {TOKEN}, namespace: {NS}}}
spec:
  userRef: {{name: alice}}
  rolloutRestartTargets:
  - {{kind: Deployment, name: env-first}}
  - {{kind: Deployment, name: env-late}}
"
    ));
    let mut token = valid_token(acs, NS, TOKEN, Duration::from_secs(90)).await;
    let c = client().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    let first = running_pod(&pods, "app=env-first").await;
    assert_eq!(replica_sets(&c, "env-first").await, 1);

    // The upgrade that turns the feature on: the existing workload is recorded at the token's
    // current revision and not restarted; the missing one is reported.
    install(
        acs,
        default_tag(),
        &[
            "--set",
            "replicas=1",
            "--set",
            "rolloutRestart.enabled=true",
            "--set",
            "rolloutRestart.coalesceWindow=2s",
        ],
    );
    let upgraded = Instant::now();
    eventually(
        "env-first recorded after the upgrade",
        Duration::from_secs(90),
        || async {
            let (cond, recorded) = rollout_state(&c).await;
            (cond.contains("TargetNotFound")
                && recorded.as_array().is_some_and(|w| {
                    w.iter()
                        .any(|w| w["name"] == "env-first" && w["observedRevision"] == 1)
                }))
            .then_some(())
        },
    )
    .await;
    rollouts_stay(&c, &[("env-first", 1)], Duration::from_secs(8)).await;
    println!(
        "upgrade enabling rollout restarts: env-first recorded at revision 1 within {:.1} s, not restarted",
        upgraded.elapsed().as_secs_f64()
    );

    // Applied after its tokens: noticed without a rotation (the missing target is looked at
    // again), recorded at the revision its pods start with.
    kubectl_apply(&env_deployment("env-late"));
    let applied = Instant::now();
    eventually("env-late recorded", Duration::from_secs(90), || async {
        let (cond, recorded) = rollout_state(&c).await;
        (cond.contains("True")
            && recorded.as_array().is_some_and(|w| {
                w.iter()
                    .any(|w| w["name"] == "env-late" && w["observedRevision"] == 1)
            }))
        .then_some(())
    })
    .await;
    println!(
        "a Deployment applied after its token: RolloutRestart True {:.1} s later",
        applied.elapsed().as_secs_f64()
    );
    let late = running_pod(&pods, "app=env-late").await;
    rollouts_stay(
        &c,
        &[("env-first", 1), ("env-late", 1)],
        Duration::from_secs(3),
    )
    .await;

    // One rotation: each restarted exactly once, the new pods holding the new token.
    let rotated = Instant::now();
    rotate(&c, "late-1").await;
    let old = token.clone();
    token = eventually(
        "a new token in the Secret",
        Duration::from_secs(60),
        || async {
            let t = secret_token(&secrets).await;
            (t != old).then_some(t)
        },
    )
    .await;
    let want = format!("sha256={}", fingerprint(&token));
    for (app, before) in [("env-first", &first), ("env-late", &late)] {
        let old_name = before.metadata.name.clone().expect("name");
        let selector = format!("app={app}");
        eventually(
            &format!("{app} restarted with the new token"),
            Duration::from_secs(120),
            || async {
                let p = running_pod(&pods, &selector).await;
                let name = p.metadata.name.clone()?;
                (name != old_name && logs(&pods, &name).await.contains(&want)).then_some(())
            },
        )
        .await;
    }
    println!(
        "one rotation: env-first and env-late replaced, printing the new token {:.1} s after it was asked",
        rotated.elapsed().as_secs_f64()
    );
    rollouts_stay(
        &c,
        &[("env-first", 2), ("env-late", 2)],
        Duration::from_secs(6),
    )
    .await;
    assert!(acs.is_valid(&token).await);
    // The namespace goes while the operator still runs, so its finalizers are handled.
    kubectl(&["delete", "namespace", NS, "--wait=true", "--timeout=120s"]);
    uninstall();
}
