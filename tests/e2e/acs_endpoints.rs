//! What the operator does per ACS endpoint: each resource has its own request budget (a
//! tenant whose resource is busy cannot delay another's).

use acs_identity_operator::api::{
    CommunicationToken, CommunicationUser, CommunicationUserSpec, CredentialsRef,
};
use kube::api::Api;

use crate::harness::*;
use crate::support::{eventually, wait_for, TestEnv};

fn user_with(credentials: &str) -> CommunicationUserSpec {
    CommunicationUserSpec {
        credentials: Some(CredentialsRef {
            secret_name: credentials.to_string(),
            key: "connectionString".to_string(),
        }),
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
