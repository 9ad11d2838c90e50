//! The operator process itself: readiness before cache sync, and leader election between two
//! replicas (only the leader writes; a standby takes over after a crash).

use std::time::Duration;

use acs_identity_operator::api::{CommunicationUser, CommunicationUserSpec};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

use crate::harness::*;
use crate::support::{eventually, wait_for, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn readyz_stays_false_until_the_caches_sync() {
    let env = TestEnv::new("op-readyz").await;
    let acs = Acs::start().await;
    // A kubeconfig whose apiserver never answers: the caches can never sync.
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.kubeconfig");
    let text = std::fs::read_to_string(env.cp.kubeconfig_path()).unwrap();
    let text = text.replace(
        &env.cp.api_url(),
        &format!("https://127.0.0.1:{}", free_port()),
    );
    std::fs::write(&dead, text).unwrap();
    let mut args = OperatorArgs::new(&env, &acs).identity("op-dead");
    args.kubeconfig = dead;
    let op = Operator::spawn(args);
    eventually("/healthz answers", CONVERGE, || async {
        match op.probe("/healthz").await {
            Some(200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Several probes over time: never ready.
    for _ in 0..5 {
        assert_eq!(op.probe("/readyz").await, Some(503));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The same operator against the real apiserver becomes ready.
    let good = Operator::spawn(OperatorArgs::new(&env, &acs));
    good.wait_ready().await;
}

async fn lease_holder(env: &TestEnv) -> Option<String> {
    let leases: Api<Lease> = env.api();
    leases
        .get_opt("acs-identity-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

fn elected(env: &TestEnv, acs: &Acs, id: &str) -> OperatorArgs {
    OperatorArgs::new(env, acs)
        .identity(id)
        .arg("--leader-election")
        .arg("true")
        .arg("--leader-election-namespace")
        .arg(env.ns())
        .arg("--leader-election-lease-duration")
        .arg("4s")
        .arg("--leader-election-renew-deadline")
        .arg("3s")
        .arg("--leader-election-retry-period")
        .arg("500ms")
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_writes_and_a_standby_takes_over_after_a_crash() {
    let env = TestEnv::new("op-leader").await;
    let acs = Acs::start().await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    let mut a = Operator::spawn(elected(&env, &acs, "op-a"));
    a.wait_ready().await;
    eventually("op-a leads", CONVERGE, || async {
        match lease_holder(&env).await.as_deref() {
            Some("op-a") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let b = Operator::spawn(elected(&env, &acs, "op-b"));
    b.wait_ready().await;

    create_user(&env, "u1", CommunicationUserSpec::default()).await;
    let api: Api<CommunicationUser> = env.api();
    wait_for(&api, "u1", CONVERGE, "u1 Ready", user_ready("")).await;
    wait_event(&env, |(r, _, _)| r == "IdentityCreated").await;
    let evs = events(&env).await;
    assert!(!evs.is_empty());
    assert!(
        evs.iter().all(|(_, _, who)| who == "op-a"),
        "the standby wrote events: {evs:?}"
    );
    assert_eq!(lease_holder(&env).await.as_deref(), Some("op-a"));
    assert!(
        !b.logs().contains("identity created"),
        "the standby created an identity"
    );
    // What an alert on "no leader" reads: 1 on the leader, 0 on the standby.
    assert_eq!(a.metric("acs_identity_operator_leader").await, 1.0);
    assert_eq!(b.metric("acs_identity_operator_leader").await, 0.0);

    // Crash the leader: no release, so the standby waits out the lease.
    a.kill();
    eventually("op-b takes over", Duration::from_secs(30), || async {
        match lease_holder(&env).await.as_deref() {
            Some("op-b") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    create_user(&env, "u2", CommunicationUserSpec::default()).await;
    wait_for(&api, "u2", CONVERGE, "u2 Ready", user_ready("")).await;
    assert_eq!(b.metric("acs_identity_operator_leader").await, 1.0);
    assert_eq!(
        acs.identities().await.len(),
        2,
        "exactly one identity per user, no double creation"
    );
    wait_event(&env, |(r, n, who)| {
        r == "IdentityCreated" && who == "op-b" && !n.is_empty()
    })
    .await;
}

/// A Role in the test namespace granting `user` every verb on `resources` of `group`.
async fn grant_all(env: &TestEnv, user: &str, name: &str, group: &str, resources: &[&str]) {
    let rule = k8s_openapi::api::rbac::v1::PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: vec!["*".into()],
        ..Default::default()
    };
    crate::support::grant(env, user, name, vec![rule]).await;
}

/// A watch the apiserver refuses (here: RBAC without CommunicationTokens) is logged and
/// counted, not swallowed, and keeps `/readyz` false; once allowed, the watch recovers by
/// itself and the operator turns ready with nothing failing (issue 21, item 7).
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_watch_is_logged_counted_and_keeps_readyz_false_until_it_recovers() {
    let env = TestEnv::new("op-watch").await;
    let acs = Acs::start().await;
    let user = format!("op-watch-{}", env.ns());
    grant_all(&env, &user, "core", "", &["secrets", "events"]).await;
    grant_all(&env, &user, "events", "events.k8s.io", &["events"]).await;
    grant_all(
        &env,
        &user,
        "services",
        "communication.acs.dev",
        &["communicationservices", "communicationservices/status"],
    )
    .await;
    crate::support::grant_cluster_services(&env, &[&user]).await;
    grant_all(
        &env,
        &user,
        "users",
        "communication.acs.dev",
        &[
            "communicationusers",
            "communicationusers/status",
            "communicationusers/finalizers",
        ],
    )
    .await;
    let kubeconfig = env.cp.work_dir().join(format!("{user}.kubeconfig"));
    env.cp
        .write_kubeconfig_impersonating(&kubeconfig, &user)
        .unwrap();
    let mut args = OperatorArgs::new(&env, &acs).identity("op-watch");
    args.kubeconfig = kubeconfig;
    let op = Operator::spawn(args);
    eventually("/healthz answers", CONVERGE, || async {
        match op.probe("/healthz").await {
            Some(200) => Ok(()),
            other => Err(other),
        }
    })
    .await;
    let errors = "acs_identity_operator_watch_errors_total{resource=\"CommunicationToken\"}";
    eventually("the refused watch counted", CONVERGE, || async {
        match op.metric(errors).await {
            n if n >= 1.0 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    assert_eq!(op.probe("/readyz").await, Some(503));
    assert!(op.metric("acs_identity_operator_watches_failing").await >= 1.0);
    let logs = op.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("watch failed") && l.contains("CommunicationToken")),
        "the watch error is not logged:\n{logs}"
    );
    // Only the refused watch fails.
    assert_eq!(
        op.metric("acs_identity_operator_watch_errors_total{resource=\"CommunicationUser\"}")
            .await,
        0.0
    );

    grant_all(
        &env,
        &user,
        "tokens",
        "communication.acs.dev",
        &[
            "communicationtokens",
            "communicationtokens/status",
            "communicationtokens/finalizers",
        ],
    )
    .await;
    op.wait_ready().await;
    eventually("no watch failing", CONVERGE, || async {
        match op.metric("acs_identity_operator_watches_failing").await {
            0.0 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    assert!(op.logs().contains("watch recovered"));
}

/// A TCP relay to the apiserver that a test can cut: every open connection is dropped and new
/// ones are closed at once until it is restored. TLS passes through untouched.
struct Relay {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (cut, conns) = (cut.clone(), conns.clone());
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: closed at once
                    }
                    let h = tokio::spawn(async move {
                        if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                    conns.lock().unwrap().push(h);
                }
            }
        });
        Relay {
            port,
            cut,
            conns,
            task,
        }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// Every `watch_errors_total` series summed.
async fn watch_errors(op: &Operator) -> f64 {
    op.metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with("acs_identity_operator_watch_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Watches that fail after start-up (the apiserver unreachable for a while, every open watch
/// broken) turn `/readyz` false, are logged and counted; once the apiserver is back the
/// watches recover by themselves, `/readyz` turns true again and the operator works
/// (issue 21, item 7).
#[tokio::test(flavor = "multi_thread")]
async fn watches_broken_after_start_up_make_readyz_false_until_they_recover() {
    let (env, acs) = keyed_namespace("op-watch-cut").await;
    let api: std::net::SocketAddr = env
        .cp
        .api_url()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let relay = Relay::start(api).await;
    let dir = tempfile::tempdir().unwrap();
    let relayed = dir.path().join("relayed.kubeconfig");
    let text = std::fs::read_to_string(env.cp.kubeconfig_path()).unwrap();
    std::fs::write(
        &relayed,
        text.replace(
            &env.cp.api_url(),
            &format!("https://127.0.0.1:{}", relay.port),
        ),
    )
    .unwrap();
    let mut args = OperatorArgs::new(&env, &acs).identity("op-watch-cut");
    args.kubeconfig = relayed;
    let op = Operator::spawn(args);
    op.wait_ready().await;
    assert_eq!(watch_errors(&op).await, 0.0);
    let (calls_base, writes_base) = (acs.total_calls().await, op.kube_writes().await);

    relay.cut();
    eventually(
        "/readyz false with the watches broken",
        CONVERGE,
        || async {
            match (op.probe("/readyz").await, watch_errors(&op).await) {
                (Some(503), n) if n >= 1.0 => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    assert!(op.metric("acs_identity_operator_watches_failing").await >= 1.0);
    assert!(op.logs().contains("watch failed"));
    // Nothing changed while the apiserver was away: nothing to ask ACS.
    assert_eq!(
        acs.total_calls().await,
        calls_base,
        "ACS calls during the outage"
    );

    relay.restore();
    // Something for every watch to deliver once it is back: a credentials-like Secret, a
    // user, a token (and so its Secret).
    put_secret(&env, "unrelated", "k", "v").await;
    create_user(&env, "after", CommunicationUserSpec::default()).await;
    create_token(&env, "after", token_spec("after")).await;
    eventually("/readyz true again", Duration::from_secs(120), || async {
        match op.probe("/readyz").await {
            Some(200) => Ok(()),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(
        op.metric("acs_identity_operator_watches_failing").await,
        0.0
    );
    let tokens: Api<acs_identity_operator::api::CommunicationToken> = env.api();
    wait_for(&tokens, "after", CONVERGE, "Ready", token_ready(""))
        .await
        .unwrap();
    // The outage and the recovery cost what the new user and token need, no storm: one
    // identity, one token; the writes of two objects (finalizers, statuses, a Secret, events).
    let calls = acs.total_calls().await - calls_base;
    let writes = op.kube_writes().await - writes_base;
    eprintln!("figure: a cut apiserver connection and its recovery: {calls} ACS calls, {writes} apiserver writes");
    assert!(calls <= 4, "{calls} ACS calls:\n{}", acs.stats().await);
    assert!(writes <= 12.0, "{writes} apiserver writes");
}
