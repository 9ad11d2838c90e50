//! Pods that consume a token: the examples' app Deployment, which mounts the token Secret as a
//! volume, sees a rotated token without a restart; a pod reading it from an environment variable
//! keeps the token it started with (documented: env vars never change in a running container).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};

use crate::node_tier::cluster::{client, eventually, exclusive, kubectl_apply, node, Acs};
use crate::node_tier::release::{
    default_tag, describe_pods, example_service, install, tenant, uninstall, valid_token,
};

const NS: &str = "acs-demo";
const TOKEN: &str = "alice-calling";

/// An example manifest with the image a user would pull replaced by the node's local one.
fn example(file: &str) -> String {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.replace(
        "image: busybox:1.37",
        &format!(
            "image: {}\n          imagePullPolicy: Never",
            node().app_image
        ),
    )
}

pub(crate) async fn running_pod(api: &Api<Pod>, selector: &str) -> Pod {
    eventually(
        &format!("a Running pod {selector}"),
        Duration::from_secs(120),
        || async {
            let pods = api
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            pods.items.into_iter().find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
        },
    )
    .await
}

pub(crate) async fn logs(api: &Api<Pod>, pod: &str) -> String {
    api.logs(
        pod,
        &LogParams {
            timestamps: true,
            ..LogParams::default()
        },
    )
    .await
    .unwrap_or_default()
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(-1)
}

/// The token and `expiresOn` in the Secret.
async fn secret_token(secrets: &Api<Secret>) -> (String, String) {
    let s = secrets.get(TOKEN).await.expect("token Secret");
    let data = s.data.expect("data");
    let field = |k: &str| String::from_utf8(data[k].0.clone()).expect("utf8");
    (field("token"), field("expiresOn"))
}

fn prefix(token: &str) -> &str {
    &token[..24]
}

/// What the example app prints for a token: the first 12 hex digits of its SHA-256.
pub(crate) fn fingerprint(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..12]
        .to_string()
}

/// The example app's log line for a token.
fn app_line(token: &str, expires_on: &str) -> String {
    format!(
        "token={}... sha256={} expiresOn={expires_on}",
        prefix(token),
        fingerprint(token)
    )
}

#[tokio::test]
async fn a_mounted_token_reaches_the_running_app_after_a_rotation_while_an_env_var_keeps_the_old_one(
) {
    let _node = exclusive().await;
    let acs = Acs::start().await;
    install(acs, default_tag(), &["--set", "replicas=1"]);
    // The tenant's plain Namespace first: applied after the example's, it would drop the
    // label the example's ClusterCommunicationService selects (kubectl apply's 3-way merge).
    tenant(NS, acs);
    kubectl_apply(&example("00-namespace.yaml"));
    example_service(acs);
    kubectl_apply(&example("10-user.yaml"));
    kubectl_apply(&example("20-tokens.yaml"));
    let first = valid_token(acs, NS, TOKEN, Duration::from_secs(90)).await;
    let c = client().await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    let (_, expires_on) = secret_token(&secrets).await;

    let started = Instant::now();
    kubectl_apply(&example("30-deployment.yaml"));
    // The same token, read once from an environment variable.
    kubectl_apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: env-reader, namespace: {NS}, labels: {{app: env-reader}}}}
spec:
  automountServiceAccountToken: false
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
    ));
    let pods: Api<Pod> = Api::namespaced(c, NS);
    let app = running_pod(&pods, "app=calling-app").await;
    let app_name = app.metadata.name.clone().expect("name");
    let app_uid = app.metadata.uid.clone();
    let want = app_line(&first, &expires_on);
    eventually(
        "the app's log line with the token",
        Duration::from_secs(60),
        || async { logs(&pods, &app_name).await.contains(&want).then_some(()) },
    )
    .await;
    println!(
        "app pod Running and printing its token {:.1} s after apply",
        started.elapsed().as_secs_f64()
    );
    let env_pod = running_pod(&pods, "app=env-reader").await;
    let env_name = env_pod.metadata.name.clone().expect("name");
    let env_old = format!("sha256={}", fingerprint(&first));
    eventually(
        "the env reader's log line",
        Duration::from_secs(60),
        || async {
            logs(&pods, &env_name)
                .await
                .contains(&env_old)
                .then_some(())
        },
    )
    .await;

    // Rotate: the operator issues a new token into the same Secret.
    let tokens: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client().await,
        NS,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "communication.acs.dev",
            "v1alpha1",
            "CommunicationToken",
        )),
    );
    tokens
        .patch(
            TOKEN,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {"communication.acs.dev/rotate": "node-test-1"}}
            })),
        )
        .await
        .expect("annotate the token");
    let (second, second_expiry) = eventually(
        "a new token in the Secret",
        Duration::from_secs(60),
        || async {
            let (t, e) = secret_token(&secrets).await;
            (t != first).then_some((t, e))
        },
    )
    .await;
    let rotated_at = Instant::now();
    assert!(acs.is_valid(&second).await);
    let want = app_line(&second, &second_expiry);
    eventually(
        "the running app printing the new token",
        Duration::from_secs(180),
        || async { logs(&pods, &app_name).await.contains(&want).then_some(()) },
    )
    .await;
    let propagation = rotated_at.elapsed().as_secs_f64();
    // Within the propagation allowance the operator reserves (2 minutes by default).
    assert!(propagation < 120.0, "{propagation:.1} s");
    println!(
        "rotation reached the running pod {propagation:.1} s after the Secret changed \
         (kubelet syncFrequency {}, app prints every 5 s)",
        node().sync_frequency
    );

    // Same pod, no restart: the volume changed under it.
    let app_now = pods.get(&app_name).await.expect("app pod");
    assert_eq!(app_now.metadata.uid, app_uid);
    assert_eq!(restarts(&app_now), 0);

    // The env reader prints on after the app saw the new token, still with the old one.
    let seen_at = logs(&pods, &env_name).await.lines().count();
    eventually(
        "two more env reader lines",
        Duration::from_secs(30),
        || async { (logs(&pods, &env_name).await.lines().count() >= seen_at + 2).then_some(()) },
    )
    .await;
    let env_logs = logs(&pods, &env_name).await;
    let last = env_logs.lines().last().unwrap_or_default();
    assert!(
        last.contains(&env_old),
        "env var keeps the old token: {last}"
    );
    assert!(!env_logs.contains(&fingerprint(&second)), "{env_logs}");
    let env_now = pods.get(&env_name).await.expect("env pod");
    assert_eq!(restarts(&env_now), 0, "{}", describe_pods());
    uninstall();
}

async fn tokens() -> Api<kube::api::DynamicObject> {
    Api::namespaced_with(
        client().await,
        NS,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "communication.acs.dev",
            "v1alpha1",
            "CommunicationToken",
        )),
    )
}

async fn patch_token(patch: serde_json::Value) {
    tokens()
        .await
        .patch(TOKEN, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch the token");
}

/// The ReplicaSets of the env-var Deployment: one per rollout.
async fn replica_sets(c: &kube::Client) -> usize {
    Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(c.clone(), NS)
        .list(&ListParams::default().labels("app=env-app"))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_env_var_deployment_is_restarted_once_per_rotation_and_its_new_pod_holds_the_new_token()
{
    let _node = exclusive().await;
    let acs = Acs::start().await;
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
    // The tenant's plain Namespace first: applied after the example's, it would drop the
    // label the example's ClusterCommunicationService selects (kubectl apply's 3-way merge).
    tenant(NS, acs);
    kubectl_apply(&example("00-namespace.yaml"));
    example_service(acs);
    kubectl_apply(&example("10-user.yaml"));
    kubectl_apply(&example("20-tokens.yaml"));
    let mut token = valid_token(acs, NS, TOKEN, Duration::from_secs(90)).await;
    let c = client().await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    kubectl_apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: env-app
  namespace: {NS}
  annotations: {{communication.acs.dev/restart-on-rotation: "true"}}
spec:
  selector: {{matchLabels: {{app: env-app}}}}
  template:
    metadata: {{labels: {{app: env-app}}}}
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
    ));
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    let mut pod = running_pod(&pods, "app=env-app").await;
    assert_eq!(replica_sets(&c).await, 1);
    // Name the Deployment as a target: first seen, not restarted.
    patch_token(serde_json::json!({
        "spec": {"rolloutRestartTargets": [{"kind": "Deployment", "name": "env-app"}]},
    }))
    .await;
    eventually("the target recorded", Duration::from_secs(60), || async {
        let t = tokens().await.get(TOKEN).await.ok()?;
        t.data["status"]["restartedWorkloads"]
            .as_array()
            .is_some_and(|w| !w.is_empty())
            .then_some(())
    })
    .await;

    for (round, n) in ["restart-1", "restart-2"].iter().enumerate() {
        let rotated = Instant::now();
        patch_token(serde_json::json!({
            "metadata": {"annotations": {"communication.acs.dev/rotate": n}},
        }))
        .await;
        let old = token.clone();
        token = eventually(
            "a new token in the Secret",
            Duration::from_secs(60),
            || async {
                let (t, _) = secret_token(&secrets).await;
                (t != old).then_some(t)
            },
        )
        .await;
        let want = format!("sha256={}", fingerprint(&token));
        let old_name = pod.metadata.name.clone().expect("name");
        // A new pod (the rollout), printing the new token from its environment.
        pod = eventually(
            "the restarted pod with the new token",
            Duration::from_secs(120),
            || async {
                let p = running_pod(&pods, "app=env-app").await;
                let name = p.metadata.name.clone()?;
                (name != old_name && logs(&pods, &name).await.contains(&want)).then_some(p)
            },
        )
        .await;
        println!(
            "rotation {}: the env-var pod was replaced and printed the new token {:.1} s after the rotation was asked",
            round + 1,
            rotated.elapsed().as_secs_f64()
        );
        // Exactly one rollout per rotation, also after the coalescing window has passed.
        let want_sets = round + 2;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(6) {
            assert_eq!(replica_sets(&c).await, want_sets, "{}", describe_pods());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(acs.is_valid(&token).await);
    uninstall();
}
