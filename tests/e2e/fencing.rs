//! Leadership loss stops writes: a leader frozen with SIGSTOP past its lease, while its
//! reconciles wait on ACS, is replaced by the standby; when it resumes it sends no write to
//! the apiserver and no ACS mutation, and exits non-zero. Each replica acts as its own
//! (impersonated) user, so the apiserver's audit log tells their requests apart.

use std::path::Path;
use std::time::Duration;

use acs_identity_operator::api::{CommunicationToken, CommunicationUser, CommunicationUserSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::{json, Value};

use crate::harness::*;
use crate::support::{eventually, wait_for, TestEnv};

const LEASE: &str = "acs-identity-operator";
/// Short election timings (the defaults are 15 s / 10 s / 2 s).
const LEASE_DURATION: &str = "3s";
const RENEW_DEADLINE: &str = "2s";
const RETRY_PERIOD: &str = "500ms";
/// How long ACS takes to answer a token issue while the leader is frozen: long enough that
/// the leader's reconciles are surely waiting on ACS when the signal lands.
const ISSUE_LATENCY_MS: u64 = 2500;

/// One audited write: who, what, and when the apiserver received it.
struct Write {
    user: String,
    verb: String,
    resource: String,
    name: String,
    received: jiff::Timestamp,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}/{} received {}",
            self.user, self.verb, self.resource, self.name, self.received
        )
    }
}

/// Writes (create, update, patch, delete) in `ns` by any of `users`, Leases included.
fn audited_writes(log: &Path, ns: &str, users: &[&str]) -> Vec<Write> {
    let text = std::fs::read_to_string(log).expect("audit log");
    text.lines()
        .filter(|l| l.contains(ns))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete" && e["objectRef"]["namespace"] == ns)
        .filter_map(|e| {
            let verb = e["verb"].as_str()?;
            if !matches!(
                verb,
                "create" | "update" | "patch" | "delete" | "deletecollection"
            ) {
                return None;
            }
            let user = e["impersonatedUser"]["username"].as_str()?;
            if !users.contains(&user) {
                return None;
            }
            Some(Write {
                user: user.to_string(),
                verb: verb.to_string(),
                resource: e["objectRef"]["resource"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                name: e["objectRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                received: e["requestReceivedTimestamp"].as_str()?.parse().ok()?,
            })
        })
        .collect()
}

/// Grants both replicas' users every permission in the test namespace (deleted with it).
async fn bind_admin(env: &TestEnv, users: &[&str]) {
    let rb = RoleBinding {
        metadata: ObjectMeta {
            name: Some("fencing-replicas".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            // Bound in the namespace only: everything there, nothing cluster-wide.
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
    env.api::<RoleBinding>()
        .create(&PostParams::default(), &rb)
        .await
        .expect("role binding");
}

async fn lease_spec(env: &TestEnv) -> Option<k8s_openapi::api::coordination::v1::LeaseSpec> {
    env.api::<Lease>().get_opt(LEASE).await.ok().flatten()?.spec
}

async fn wait_holder(env: &TestEnv, who: &str, within: Duration) -> jiff::Timestamp {
    eventually(&format!("{who} holds the Lease"), within, || async {
        let spec = lease_spec(env)
            .await
            .ok_or_else(|| "no lease".to_string())?;
        match (spec.holder_identity.as_deref(), spec.acquire_time) {
            (Some(h), Some(at)) if h == who => Ok(at.0),
            (h, _) => Err(format!("holder {h:?}")),
        }
    })
    .await
}

/// Lines of `log` stamped at or after `from` that contain `needle`. The text format starts
/// each line with an RFC 3339 timestamp (possibly inside ANSI colour codes).
fn log_lines_since(log: &str, from: jiff::Timestamp, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter(|l| {
            let plain: String = strip_ansi(l);
            plain
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| t >= from)
        })
        .map(str::to_string)
        .collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_leader_that_resumes_after_a_takeover_writes_nothing_and_exits() {
    let env = TestEnv::new("fence-sigstop").await;
    let acs = Acs::start().await;
    let ns = env.ns().to_string();
    let (user_a, user_b) = (format!("fence-a-{ns}"), format!("fence-b-{ns}"));
    bind_admin(&env, &[&user_a, &user_b]).await;
    crate::support::grant_cluster_services(&env, &[&user_a, &user_b]).await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let replica = |identity: &str, user: &str| {
        let kubeconfig = dir.path().join(format!("{identity}.kubeconfig"));
        env.cp
            .write_kubeconfig_impersonating(&kubeconfig, user)
            .unwrap();
        let mut args = OperatorArgs::new(&env, &acs)
            .identity(identity)
            .arg("--leader-election")
            .arg("true")
            .arg("--leader-election-namespace")
            .arg(&ns)
            .arg("--leader-election-lease-duration")
            .arg(LEASE_DURATION)
            .arg("--leader-election-renew-deadline")
            .arg(RENEW_DEADLINE)
            .arg("--leader-election-retry-period")
            .arg(RETRY_PERIOD);
        args.kubeconfig = kubeconfig;
        args
    };
    let mut a = Operator::spawn(replica("op-a", &user_a));
    a.wait_ready().await;
    wait_holder(&env, "op-a", CONVERGE).await;
    let b = Operator::spawn(replica("op-b", &user_b));
    b.wait_ready().await;

    let users: Api<CommunicationUser> = env.api();
    let tokens: Api<CommunicationToken> = env.api();
    create_user(&env, "u1", CommunicationUserSpec::default()).await;
    wait_for(&users, "u1", CONVERGE, "u1 Ready", user_ready("")).await;

    // Work in flight at the freeze: three issues that ACS answers only after 2.5 s.
    acs.set_faults(json!({
        "latencyMs": ISSUE_LATENCY_MS,
        "operations": ["issueAccessToken"],
    }))
    .await;
    for t in ["t1", "t2", "t3"] {
        create_token(&env, t, token_spec("u1")).await;
    }
    eventually("the leader's issues reach ACS", CONVERGE, || async {
        let injected = acs.stats().await["injected"]["latency"]
            .as_u64()
            .unwrap_or(0);
        if injected >= 3 {
            Ok(())
        } else {
            Err(injected)
        }
    })
    .await;
    let frozen_at = jiff::Timestamp::now();
    a.signal(libc::SIGSTOP);
    acs.clear_faults().await;

    // The standby takes over and does the work the frozen leader left.
    let takeover = wait_holder(&env, "op-b", Duration::from_secs(30)).await;
    for t in ["t1", "t2", "t3"] {
        wait_for(
            &tokens,
            t,
            CONVERGE,
            "Ready via the new leader",
            token_ready(""),
        )
        .await;
    }
    create_token(&env, "t4", token_spec("u1")).await;
    wait_for(&tokens, "t4", CONVERGE, "t4 Ready", token_ready("")).await;

    // Resume the old leader while there is new work: it must write nothing and exit.
    let resumed_at = jiff::Timestamp::now();
    a.signal(libc::SIGCONT);
    create_user(&env, "u2", CommunicationUserSpec::default()).await;
    create_token(&env, "t5", token_spec("u1")).await;
    create_token(&env, "t6", token_spec("u2")).await;
    let exit = a
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the resumed old leader kept running");
    wait_for(&users, "u2", CONVERGE, "u2 Ready", user_ready("")).await;
    for t in ["t5", "t6"] {
        wait_for(
            &tokens,
            t,
            CONVERGE,
            "Ready via the new leader",
            token_ready(""),
        )
        .await;
    }
    assert_eq!(
        lease_spec(&env).await.and_then(|s| s.holder_identity),
        Some("op-b".to_string())
    );

    // The audit log: writes by the old leader after the takeover. A request already on the
    // wire when it froze reaches the apiserver at once, before the takeover; one that had
    // passed the fence but not yet been written would show here (the residual window).
    let writes = audited_writes(env.cp.audit_log_path(), &ns, &[&user_a, &user_b]);
    let by = |user: &str, pred: &dyn Fn(&Write) -> bool| -> Vec<&Write> {
        writes
            .iter()
            .filter(|w| w.user == user && pred(w))
            .collect()
    };
    let a_before = by(&user_a, &|w| w.received < frozen_at);
    let a_frozen = by(&user_a, &|w| {
        w.received >= frozen_at && w.received < takeover
    });
    let a_after = by(&user_a, &|w| w.received >= takeover);
    let b_after = by(&user_b, &|w| {
        w.received >= takeover && w.resource != "leases"
    });
    let b_before = by(&user_b, &|w| {
        w.received < takeover && w.resource != "leases"
    });
    eprintln!(
        "fencing: old leader's writes before the freeze {}, between freeze and takeover {}, \
         after the takeover {}; new leader's writes after the takeover {} (freeze {frozen_at}, \
         takeover {takeover}, resume {resumed_at})",
        a_before.len(),
        a_frozen.len(),
        a_after.len(),
        b_after.len()
    );
    assert!(
        !a_before.is_empty(),
        "the leader wrote nothing before the freeze"
    );
    assert!(
        a_after.is_empty(),
        "the old leader wrote after the takeover: {a_after:#?}"
    );
    assert!(
        b_before.is_empty(),
        "the standby wrote before it led: {b_before:#?}"
    );
    assert!(!b_after.is_empty(), "the new leader wrote nothing");

    // ACS: the old leader sent no mutation after resuming (its log says when it sends one),
    // and in all the service saw at most one issue per token plus the three in flight at the
    // freeze (which ACS answered while the leader was frozen; their tokens were never stored).
    let log = a.logs();
    let sent_after = log_lines_since(&log, resumed_at, "sending acs request");
    assert!(
        sent_after.is_empty(),
        "the old leader sent ACS requests after resuming: {sent_after:#?}"
    );
    assert!(
        log.contains("refusing writes") || log.contains("lost leadership"),
        "the old leader did not say why it stopped:\n{log}"
    );
    let issued = acs.calls("issueAccessToken").await;
    let created = acs.calls("createIdentity").await;
    eprintln!("fencing: ACS issues {issued} for 6 tokens (3 in flight at the freeze), identities created {created}");
    assert!(
        (6..=9).contains(&issued),
        "token issues at ACS: {issued} (6 tokens, 3 in flight at the freeze)"
    );
    assert_eq!(created, 2, "identities created at ACS");
    assert!(!exit.success(), "the old leader exited with {exit}");
    let key = acs
        .connection_string()
        .split("accesskey=")
        .nth(1)
        .unwrap()
        .to_string();
    assert_no_secrets(&log, &[key], &[], "the old leader's log");
}
