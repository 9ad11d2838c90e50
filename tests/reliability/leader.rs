//! Scenario 5: two replicas with leader election, each under its own (impersonated) user so the
//! apiserver's audit log tells their requests apart. Only the leader may write; SIGKILL of the
//! leader mid-rollout must hand over within the lease duration (plus one retry period), and no
//! token may be issued twice.

use std::path::Path;
use std::time::Duration;

use acs_emulator::EmulatorConfig;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use serde_json::Value;
use tokio::time::Instant;

use crate::fleet::{self, census, create_fleet, poll, spawn, Stage, SuiteRef};
use crate::harness::OperatorArgs;
use crate::history::SecretHistory;
use crate::report::human;

pub const NAME: &str = "5. Leader election";

const LEASE: &str = "acs-identity-operator";
const LEASE_DURATION: Duration = Duration::from_secs(6);
const RENEW_DEADLINE: Duration = Duration::from_secs(4);
const RETRY_PERIOD: Duration = Duration::from_secs(1);
/// Reconciles per controller: bounds the issues in flight when the leader dies.
const CONCURRENCY: usize = 4;

pub async fn run(suite: SuiteRef) {
    let scale = suite.scale.clone();
    let stage = Stage::new(&suite, "rel-leader", EmulatorConfig::default()).await;
    let ns = stage.env.ns().to_string();
    let user_a = format!("reliability-op-a-{ns}");
    let user_b = format!("reliability-op-b-{ns}");
    let binding = bind_cluster_admin(&stage, &[&user_a, &user_b]).await;
    let dir = tempfile::tempdir().expect("temp dir");

    let history = SecretHistory::start(&stage.env, suite.clone());
    let users_and_tokens =
        crate::scale::Scale::users_for(scale.leader_tokens) + scale.leader_tokens;
    // A budget that makes the rollout last about 20 s, so the leader dies in the middle of it.
    let rps = (users_and_tokens as f64 / 20.0).max(1.0).to_string();
    let elected = |identity: &str, user: &str| -> OperatorArgs {
        let kubeconfig = dir.path().join(format!("{identity}.kubeconfig"));
        stage
            .env
            .cp
            .write_kubeconfig_impersonating(&kubeconfig, user)
            .expect("kubeconfig");
        let lease = format!("{}s", LEASE_DURATION.as_secs());
        let renew = format!("{}s", RENEW_DEADLINE.as_secs());
        let retry = format!("{}s", RETRY_PERIOD.as_secs());
        let concurrency = CONCURRENCY.to_string();
        let mut args = stage.args(
            identity,
            &[
                "--acs-api-mode",
                "preview",
                "--leader-election",
                "true",
                "--leader-election-namespace",
                &ns,
                "--leader-election-lease-duration",
                &lease,
                "--leader-election-renew-deadline",
                &renew,
                "--leader-election-retry-period",
                &retry,
                "--concurrency",
                &concurrency,
                "--acs-requests-per-second",
                &rps,
                "--acs-request-burst",
                "1",
            ],
        );
        args.kubeconfig = kubeconfig;
        args
    };
    let mut a = spawn(&suite, elected("op-a", &user_a));
    poll(
        "op-a to lead",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            match holder(&stage).await.as_deref() {
                Some("op-a") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let mut b = spawn(&suite, elected("op-b", &user_b));
    b.wait_ready().await;

    let (users, tokens) = create_fleet(&stage.env, scale.leader_tokens).await;
    let converge = scale.converge_within(users + tokens);
    fleet::wait_tokens_ready(&stage.env, (tokens * 3 / 10).max(1), converge).await;
    let ready_at_kill = fleet::token_readiness(&stage.env)
        .await
        .map(|(n, _)| n)
        .unwrap_or(0);
    let killed_at = jiff::Timestamp::now();
    let t = Instant::now();
    a.kill();
    // Poll the Lease: the old leader's last renewal and the new leader's acquisition.
    let leases: Api<Lease> = stage.env.api();
    let last_renewal: std::sync::Arc<std::sync::Mutex<Option<jiff::Timestamp>>> =
        std::sync::Arc::default();
    let acquired = poll(
        "op-b to take over",
        LEASE_DURATION * 3,
        Duration::from_millis(100),
        || {
            let leases = leases.clone();
            let last = last_renewal.clone();
            async move {
                let spec = leases
                    .get(LEASE)
                    .await
                    .map_err(|e| e.to_string())?
                    .spec
                    .unwrap_or_default();
                match spec.holder_identity.as_deref() {
                    Some("op-b") => Ok(spec.acquire_time.map(|t| t.0)),
                    Some("op-a") => {
                        *last.lock().unwrap() = spec.renew_time.map(|t| t.0);
                        Err("op-a".to_string())
                    }
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    let takeover = t.elapsed();
    suite.check(
        NAME,
        "leader killed mid-rollout (tokens Ready at the kill)",
        format!("< {tokens}"),
        ready_at_kill,
        ready_at_kill < tokens,
    );
    // The standby starts its lease-duration clock when it sees the last renewal (it polls
    // every retry period), and acquires at its first poll after that: lease + 2 retry periods.
    let bound = LEASE_DURATION + RETRY_PERIOD * 2 + Duration::from_millis(500);
    suite.check(
        NAME,
        "takeover after SIGKILL of the leader",
        format!(
            "≤ {} (lease {}s + 2 × retry {}s + 0.5 s polling)",
            human(bound),
            LEASE_DURATION.as_secs(),
            RETRY_PERIOD.as_secs()
        ),
        human(takeover),
        takeover <= bound,
    );
    let renewed = *last_renewal.lock().unwrap();
    if let (Some(renewed), Some(acquired)) = (renewed, acquired) {
        suite.figure(
            NAME,
            "new leader acquired the Lease after the old leader's last renewal",
            format!(
                "{:.1} s (lease duration {} s)",
                acquired.duration_since(renewed).as_secs_f64(),
                LEASE_DURATION.as_secs()
            ),
        );
    }
    let took = fleet::wait_tokens_ready(&stage.env, tokens, converge).await;
    suite.figure(NAME, "rollout finished after the takeover", human(took));

    let writes = audit_writes(stage.env.cp.audit_log_path(), &ns, &[&user_a, &user_b]);
    let count = |user: &str, before: bool| {
        writes
            .iter()
            .filter(|(u, at)| u == user && (*at < killed_at) == before)
            .count()
    };
    let (a_before, b_before, b_after) = (
        count(&user_a, true),
        count(&user_b, true),
        count(&user_b, false),
    );
    suite.check(
        NAME,
        "writes other than the Lease (audit log): leader before the kill / standby before / standby after",
        "> 0 / 0 / > 0",
        format!("{a_before} / {b_before} / {b_after}"),
        a_before > 0 && b_before == 0 && b_after > 0,
    );
    let most = history.max_per_secret();
    let seen = history.tokens_seen();
    suite.check(
        NAME,
        "tokens that reached a Secret / most held by one Secret (double issuance)",
        format!("{tokens} / 1"),
        format!("{seen} / {most}"),
        seen == tokens && most == 1,
    );
    let c = census(&stage.env, &stage.acs).await;
    suite.check(
        NAME,
        "tokens issued by ACS beyond one per token (only issues in flight at the kill)",
        format!("≤ {CONCURRENCY}"),
        c.tokens_issued.saturating_sub(tokens as u64),
        c.tokens_issued >= tokens as u64 && c.tokens_issued <= (tokens + CONCURRENCY) as u64,
    );
    suite.check(
        NAME,
        "live identities in ACS = CommunicationUsers",
        users,
        format!("{} identities, {} users", c.live, c.users),
        c.live == users && c.leaked == 0 && c.unbacked.is_empty(),
    );
    fleet::gather_evidence(&suite, &stage.env, Some(&b)).await;
    b.kill();
    let crbs: Api<ClusterRoleBinding> = Api::all(stage.env.client.clone());
    let _ = crbs.delete(&binding, &DeleteParams::default()).await;
}

async fn holder(stage: &Stage) -> Option<String> {
    let leases: Api<Lease> = stage.env.api();
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Grants cluster-admin to the replicas' users; returns the binding's name.
async fn bind_cluster_admin(stage: &Stage, users: &[&str]) -> String {
    let name = format!("reliability-{}", stage.env.ns());
    let crb = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
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
    Api::<ClusterRoleBinding>::all(stage.env.client.clone())
        .create(&PostParams::default(), &crb)
        .await
        .expect("cluster role binding");
    name
}

/// Writes (create, update, patch, delete) in `ns` by each of `users`, except to Leases, with
/// the time the apiserver completed them.
fn audit_writes(path: &Path, ns: &str, users: &[&str]) -> Vec<(String, jiff::Timestamp)> {
    let text = std::fs::read_to_string(path).expect("audit log");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            )
        })
        .filter(|e| e["objectRef"]["namespace"] == ns && e["objectRef"]["resource"] != "leases")
        .filter_map(|e| {
            let user = e["impersonatedUser"]["username"].as_str()?;
            if !users.contains(&user) {
                return None;
            }
            let at: jiff::Timestamp = e["stageTimestamp"].as_str()?.parse().ok()?;
            Some((user.to_string(), at))
        })
        .collect()
}
