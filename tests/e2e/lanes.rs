//! A token applied while the operator works through a backlog (a key rotation's re-issues of
//! many tokens, one reconcile at a time, each ACS issue slowed) takes the next free slot
//! instead of waiting behind all of it.

use acs_identity_operator::api::{CommunicationToken, CommunicationUserSpec};
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::harness::*;
use crate::support::{eventually, wait_for};

const BACKLOG: usize = 24;
const ISSUE_LATENCY_MS: u64 = 250;

async fn rotated(tokens: &Api<CommunicationToken>) -> usize {
    tokens
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|t| {
            t.spec.user_ref.name == "alice" && t.status.as_ref().is_some_and(|s| s.revision >= 2)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_applied_during_a_backlog_goes_ahead_of_it() {
    let (env, acs) = keyed_namespace("lanes").await;
    let op = Operator::spawn(OperatorArgs::new(&env, &acs).arg("--concurrency=1"));
    op.wait_ready().await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    let names: Vec<String> = (0..BACKLOG).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    ready_tokens(&env, "alice", &refs).await;
    ready_user_id(&env, "bob").await;

    let issued_before = acs.calls("issueAccessToken").await;
    let writes_before = op.kube_writes().await;
    // The key is regenerated: every token of alice is re-issued, one at a time, 250 ms each.
    acs.set_faults(json!({
        "latencyMs": ISSUE_LATENCY_MS,
        "operations": ["issueAccessToken"],
    }))
    .await;
    let new_conn = acs.regenerate("primary").await;
    put_secret(&env, "acs-credentials", "connectionString", &new_conn).await;
    let tokens: Api<CommunicationToken> = env.api();
    eventually("the backlog under way", CONVERGE, || async {
        match rotated(&tokens).await {
            0 => Err(0),
            n => Ok(n),
        }
    })
    .await;

    // A new application's token, for a user that is Ready.
    create_token(&env, "late", token_spec("bob")).await;
    wait_for(&tokens, "late", CONVERGE, "Ready", token_ready(""))
        .await
        .unwrap();
    let done = rotated(&tokens).await;
    eprintln!("figure: the new token was Ready after {done} of {BACKLOG} re-issues");
    // First come, first served, it was Ready after all of them; it goes next (a few of the
    // backlog may finish while its own issue waits, and while this test reads).
    assert!(
        done <= BACKLOG / 2,
        "the new token waited for {done} of {BACKLOG} re-issues"
    );
    let late = secret_token(&env, "late").await.unwrap();
    assert!(acs.validate(&late).await.0);
    for n in &names {
        wait_for(
            &tokens,
            n,
            CONVERGE,
            "re-issued",
            |t: Option<&CommunicationToken>| {
                t.and_then(|t| t.status.as_ref())
                    .is_some_and(|s| s.revision >= 2)
            },
        )
        .await
        .unwrap();
    }
    // Reconciled twice (ahead of the queue, then by the queue's own trigger), the new token
    // cost one issue and no extra write.
    let issued = acs.calls("issueAccessToken").await - issued_before;
    let writes = op.kube_writes().await - writes_before;
    eprintln!("figure: {issued} issues and {writes} apiserver writes for {BACKLOG} re-issues and one new token");
    assert_eq!(issued, BACKLOG as u64 + 1, "issues");
    // Three each (the Secret, the status, an event); 75 measured in four runs. The margin is
    // for a finalizer patch a lagging cache may send twice (a 422, no failure).
    assert!(
        writes <= 3.0 * (BACKLOG as f64 + 1.0) + 3.0,
        "{writes} writes"
    );
    // The queue-depth gauge (objects waiting for a reconcile) is back to 0 once the backlog is
    // done.
    eventually("no reconcile waiting", CONVERGE, || async {
        let d = op
            .metric("acs_identity_operator_queue_depth{controller=\"communicationtoken\"}")
            .await;
        if d == 0.0 {
            Ok(())
        } else {
            Err(d)
        }
    })
    .await;
}
