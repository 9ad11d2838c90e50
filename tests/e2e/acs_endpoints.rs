//! What the operator does per ACS endpoint: each resource has its own request budget (a
//! tenant whose resource is busy cannot delay another's), and `http://` endpoints are refused
//! unless the development flag `--allow-insecure-http` is given.

use std::time::Duration;

use acs_emulator::EmulatorConfig;
use acs_identity_operator::api::{
    CommunicationToken, CommunicationUser, CommunicationUserSpec, CredentialsRef,
};
use kube::api::Api;

use crate::harness::*;
use crate::support::{eventually, wait_for, TestEnv};

/// The value of the metric series `series` (name and labels exactly as exposed), 0 if absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Requests to the ACS Identity API (not the emulator's admin routes).
async fn identity_calls(acs: &Acs) -> u64 {
    let stats = acs.stats().await;
    stats["operations"]
        .as_object()
        .map(|ops| {
            ops.iter()
                .filter(|(op, _)| *op != "admin")
                .flat_map(|(_, by_status)| by_status.as_object().into_iter().flatten())
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

fn user_with(credentials: &str) -> CommunicationUserSpec {
    CommunicationUserSpec {
        credentials: Some(CredentialsRef::from_secret(credentials, "connectionString")),
        ..CommunicationUserSpec::default()
    }
}

fn ready(t: &CommunicationToken) -> bool {
    t.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_resource_does_not_delay_another_resources_requests() {
    let env = TestEnv::new("budget-per-endpoint").await;
    let busy = Acs::start().await;
    let quiet = Acs::start().await;
    put_secret(
        &env,
        "creds-busy",
        "connectionString",
        &busy.connection_string(),
    )
    .await;
    put_secret(
        &env,
        "creds-quiet",
        "connectionString",
        &quiet.connection_string(),
    )
    .await;
    // Both emulators' CAs are trusted through one bundle.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("cas.pem");
    std::fs::write(
        &bundle,
        format!("{}\n{}", busy.emu.ca_pem(), quiet.emu.ca_pem()),
    )
    .unwrap();
    let mut args = OperatorArgs::new(&env, &busy)
        .arg("--acs-requests-per-second")
        .arg("1")
        .arg("--acs-request-burst")
        .arg("1");
    args.ca = Some(bundle);
    let op = Operator::spawn(args);
    op.wait_ready().await;

    let users: Api<CommunicationUser> = env.api();
    let tokens: Api<CommunicationToken> = env.api();
    create_user(&env, "busy", user_with("creds-busy")).await;
    wait_for(&users, "busy", CONVERGE, "busy Ready", user_ready("")).await;
    // Ten issues queue on the busy resource's budget: one per second.
    const QUEUED: usize = 10;
    for i in 0..QUEUED {
        create_token(&env, &format!("busy-{i}"), token_spec("busy")).await;
    }
    eventually("the busy resource's queue to start", CONVERGE, || async {
        match busy.calls("issueAccessToken").await {
            0 => Err(0),
            n => Ok(n),
        }
    })
    .await;

    // The quiet resource needs two requests (identity, token): they wait for nobody.
    let started = tokio::time::Instant::now();
    create_user(&env, "quiet", user_with("creds-quiet")).await;
    create_token(&env, "quiet-0", token_spec("quiet")).await;
    wait_for(
        &tokens,
        "quiet-0",
        CONVERGE,
        "quiet-0 Ready",
        token_ready(""),
    )
    .await;
    let took = started.elapsed();
    let busy_ready = tokens
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|t| {
            t.metadata
                .name
                .as_deref()
                .unwrap_or("")
                .starts_with("busy-")
                && ready(t)
        })
        .count();
    eprintln!(
        "budgets: the quiet resource's token was Ready after {took:.1?}, while {busy_ready} of \
         {QUEUED} busy tokens were"
    );
    assert!(
        busy_ready <= QUEUED - 3,
        "the quiet resource waited for the busy one's queue ({busy_ready} of {QUEUED} busy \
         tokens were Ready first, after {took:.1?})"
    );

    // Every busy token is still issued, exactly once, with no 429 from either resource.
    for i in 0..QUEUED {
        let name = format!("busy-{i}");
        wait_for(&tokens, &name, CONVERGE, "Ready", token_ready("")).await;
    }
    assert_eq!(busy.calls("issueAccessToken").await, QUEUED as u64);
    assert_eq!(busy.calls("createIdentity").await, 1);
    assert_eq!(quiet.calls("issueAccessToken").await, 1);
    assert_eq!(quiet.calls("createIdentity").await, 1);
    for acs in [&busy, &quiet] {
        assert_eq!(
            acs.stats().await["total429"],
            0,
            "the client budget let a 429 happen"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_endpoint_is_refused_without_the_development_flag() {
    let env = TestEnv::new("insecure-http").await;
    let acs = Acs::start_with(EmulatorConfig {
        tls: false,
        ..EmulatorConfig::default()
    })
    .await;
    assert!(acs.connection_string().contains("endpoint=http://"));
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    let users: Api<CommunicationUser> = env.api();
    let mut op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;
    create_user(&env, "u1", CommunicationUserSpec::default()).await;
    let refused = wait_for(
        &users,
        "u1",
        CONVERGE,
        "Ready=False",
        |u: Option<&CommunicationUser>| {
            u.and_then(|u| u.status.as_ref())
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "False" && c.message.contains("--allow-insecure-http"))
        },
    )
    .await
    .unwrap();
    let ready = refused
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .unwrap()
        .clone();
    eprintln!(
        "insecure http: Ready={} {}: {}",
        ready.status, ready.reason, ready.message
    );
    assert_eq!(ready.reason, "AcsError");
    assert!(ready.message.contains("insecure_http"), "{}", ready.message);

    // The refusal is permanent: it is not retried in a loop. Over a few seconds the operator
    // sent ACS nothing and wrote a bounded number of times (finalizer, status, one event).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        identity_calls(&acs).await,
        0,
        "requests reached the http endpoint"
    );
    let text = op.metrics_text().await;
    assert!(
        !text.contains("acs_identity_operator_acs_requests_total{"),
        "ACS requests were attempted:\n{text}"
    );
    let writes: f64 = ["create", "update", "patch", "delete"]
        .iter()
        .map(|v| {
            metric(
                &text,
                &format!("acs_identity_operator_kube_requests_total{{verb=\"{v}\"}}"),
            )
        })
        .sum();
    eprintln!("insecure http: apiserver writes while refusing: {writes}");
    assert!(writes <= 4.0, "apiserver writes while refusing: {writes}");
    let key = acs
        .connection_string()
        .split("accesskey=")
        .nth(1)
        .unwrap()
        .to_string();
    let keys = [key];
    assert_no_secrets(&op.logs(), &keys, &[], "the operator's log");
    assert_no_secrets(&ready.message, &keys, &[], "the condition");
    op.stop();

    // With the development flag the same endpoint works.
    let op = Operator::spawn(OperatorArgs::new(&env, &acs).arg("--allow-insecure-http"));
    op.wait_ready().await;
    wait_for(&users, "u1", CONVERGE, "u1 Ready", user_ready("")).await;
    create_token(&env, "t1", token_spec("u1")).await;
    let tokens: Api<CommunicationToken> = env.api();
    wait_for(&tokens, "t1", CONVERGE, "t1 Ready", token_ready("")).await;
    assert_eq!(acs.calls("createIdentity").await, 1);
    assert_eq!(acs.calls("issueAccessToken").await, 1);
}
