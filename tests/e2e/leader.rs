//! Leader election on the real control plane: candidates compete for one Lease in a fresh
//! namespace, and the tests check that exactly one leads, that a release hands over at once,
//! that a leader that stops renewing is replaced only after the lease duration, and that a
//! leader notices when the Lease is taken from it.

use std::sync::Arc;
use std::time::Duration;

use acs_identity_operator::leader::{LeaderElector, LeaseConfig};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use crate::support::{eventually, TestEnv};

const LEASE: &str = "acs-identity-operator";
/// Upper bound for anything that should happen within a few retry periods.
const PATIENCE: Duration = Duration::from_secs(15);

/// Short timings so the tests run in seconds: 2 s lease, 1 s renew deadline, 200 ms retry.
fn short(ns: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: ns.to_owned(),
        name: LEASE.to_owned(),
        identity: identity.to_owned(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(200),
    }
}

/// Starts `elector` competing in the background; the task ends when it leads.
fn compete(elector: &Arc<LeaderElector>) -> JoinHandle<()> {
    let elector = elector.clone();
    tokio::spawn(async move { elector.acquire().await.unwrap() })
}

async fn lease(env: &TestEnv) -> Lease {
    env.api::<Lease>().get(LEASE).await.unwrap()
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0)
}

#[tokio::test]
async fn two_candidates_on_one_lease_elect_exactly_one_leader() {
    let env = TestEnv::new("leader-one").await;
    let (ns, client) = (env.ns(), env.client.clone());
    let a = Arc::new(LeaderElector::new(client.clone(), short(ns, "a")));
    let b = Arc::new(LeaderElector::new(client.clone(), short(ns, "b")));
    let mut task_a = compete(&a);
    let mut task_b = compete(&b);

    let (leader, follower, leader_id, mut follower_task) = timeout(PATIENCE, async {
        tokio::select! {
            done = &mut task_a => { done.unwrap(); (a.clone(), b.clone(), "a", task_b) }
            done = &mut task_b => { done.unwrap(); (b.clone(), a.clone(), "b", task_a) }
        }
    })
    .await
    .expect("no candidate became leader");
    let leading = leader.keep_renewing();
    assert!(*leading.borrow());
    assert!(!follower.is_leader());

    // While the leader renews, the follower must not win, even well past the lease duration.
    let window = Duration::from_secs(5);
    assert!(
        timeout(window, &mut follower_task).await.is_err(),
        "the follower acquired a lease that was being renewed"
    );
    assert!(
        *leading.borrow(),
        "the leader lost a lease nobody contested"
    );
    let current = lease(&env).await;
    assert_eq!(holder(&current), Some(leader_id));
    assert_eq!(transitions(&current), 0);
    follower_task.abort();
}

#[tokio::test]
async fn a_released_lease_is_taken_over_without_waiting_for_it_to_expire() {
    let env = TestEnv::new("leader-release").await;
    let (ns, client) = (env.ns(), env.client.clone());
    // A long lease: a successor that waited for expiry would take ten seconds.
    let long = |identity: &str| LeaseConfig {
        lease_duration: Duration::from_secs(10),
        renew_deadline: Duration::from_secs(5),
        ..short(ns, identity)
    };
    let a = Arc::new(LeaderElector::new(client.clone(), long("a")));
    let b = Arc::new(LeaderElector::new(client.clone(), long("b")));
    timeout(PATIENCE, a.acquire())
        .await
        .expect("the first candidate did not acquire a free lease")
        .unwrap();
    let mut leading = a.keep_renewing();
    let mut successor = compete(&b);

    a.release().await.unwrap();
    assert!(!*leading.borrow_and_update());
    // Released means no holder (or already the successor), never still us.
    let after_release = lease(&env).await;
    assert!(
        matches!(holder(&after_release), None | Some("") | Some("b")),
        "holder after release: {:?}",
        holder(&after_release)
    );
    // Half the lease duration: only a handover through the cleared holder is this fast.
    timeout(Duration::from_secs(5), &mut successor)
        .await
        .expect("the successor waited for the released lease to expire")
        .unwrap();
    let current = lease(&env).await;
    assert_eq!(holder(&current), Some("b"));
    assert_eq!(transitions(&current), 1);
}

#[tokio::test]
async fn a_leader_that_stops_renewing_is_replaced_after_the_lease_duration() {
    let env = TestEnv::new("leader-expire").await;
    let (ns, client) = (env.ns(), env.client.clone());
    let a = Arc::new(LeaderElector::new(client.clone(), short(ns, "a")));
    let b = Arc::new(LeaderElector::new(client.clone(), short(ns, "b")));
    timeout(PATIENCE, a.acquire())
        .await
        .expect("the first candidate did not acquire a free lease")
        .unwrap();
    let leading = a.keep_renewing();
    let mut successor = compete(&b);
    // Give b time to see a renewing for longer than a lease duration: it must keep waiting.
    assert!(
        timeout(Duration::from_secs(3), &mut successor)
            .await
            .is_err(),
        "the successor took a lease that was being renewed"
    );
    assert!(*leading.borrow());

    // What a crashed leader looks like: the Lease simply stops being renewed.
    a.stop_renewing();
    let stopped = Instant::now();
    timeout(PATIENCE, &mut successor)
        .await
        .expect("the successor never took over the abandoned lease")
        .unwrap();
    // a last renewed at most one renew deadline (1 s) before it stopped, and b waits a full
    // lease duration (2 s) after seeing that renewal, so at least 1 s passes.
    assert!(
        stopped.elapsed() >= Duration::from_secs(1),
        "took over after only {:?}",
        stopped.elapsed()
    );
    let current = lease(&env).await;
    assert_eq!(holder(&current), Some("b"));
    assert_eq!(transitions(&current), 1);
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_reports_the_loss() {
    let env = TestEnv::new("leader-lost").await;
    let (ns, client) = (env.ns(), env.client.clone());
    let a = LeaderElector::new(client.clone(), short(ns, "a"));
    timeout(PATIENCE, a.acquire())
        .await
        .expect("the candidate did not acquire a free lease")
        .unwrap();
    let mut leading = a.keep_renewing();
    assert!(*leading.borrow_and_update());

    // Someone else writes the Lease with the resourceVersion it read, as a real candidate
    // would. The leader may renew in between; a conflict then makes us read and try again.
    let api = env.api::<Lease>();
    eventually("overwriting the lease", PATIENCE, || {
        let api = api.clone();
        async move {
            let mut taken = api.get(LEASE).await?;
            if let Some(spec) = taken.spec.as_mut() {
                spec.holder_identity = Some("intruder".into());
            }
            api.replace(LEASE, &PostParams::default(), &taken).await
        }
    })
    .await;

    timeout(PATIENCE, leading.wait_for(|leads| !*leads))
        .await
        .expect("the leader never noticed it lost the lease")
        .unwrap();
    assert!(!a.is_leader());
    assert_eq!(holder(&lease(&env).await), Some("intruder"));
}
