//! Microsoft Entra ID workload identity on the real control plane, the emulator standing in
//! for Entra: the operator requests a token for a namespace's ServiceAccount (TokenRequest,
//! audience `api://AzureADTokenExchange`), the emulator verifies it against the apiserver's
//! own issuer discovery and keys, and ACS calls carry the Entra token. No connection string
//! exists anywhere in these namespaces. Every refusal is a condition, counted not to loop.

use std::time::{Duration, Instant};

use acs_identity_operator::api::{CommunicationToken, CommunicationUser, CommunicationUserSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::harness::*;
use crate::support::{wait_for, TestEnv};

/// The back-off cap of the failure test (the default is 5 minutes).
const CAP: &str = "4s";

/// The emulator's Entra counters: token requests by outcome, refusals by AADSTS code,
/// bearer requests by outcome.
async fn entra_stat(acs: &Acs, group: &str, key: &str) -> u64 {
    acs.stats().await["entra"][group][key].as_u64().unwrap_or(0)
}

async fn refused_token_requests(acs: &Acs) -> u64 {
    let s = acs.stats().await;
    s["entra"]["tokenRequests"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "issued")
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// Asserts that no JWT (an Entra token, a ServiceAccount token, an ACS token) and no client
/// secret appears in the operator's log, its events and the objects' status.
async fn assert_nothing_leaked(env: &TestEnv, op: &Operator) {
    let log = std::fs::read_to_string(&op.log_path).unwrap_or_default();
    assert!(!log.contains("eyJ"), "the operator's log holds a JWT");
    let events = format!("{:?}", events(env).await);
    assert!(!events.contains("eyJ"), "an event holds a JWT");
    let users = env
        .api::<CommunicationUser>()
        .list(&Default::default())
        .await
        .unwrap();
    let tokens = env
        .api::<CommunicationToken>()
        .list(&Default::default())
        .await
        .unwrap();
    let status = format!(
        "{:?}{:?}",
        users.items.iter().map(|u| &u.status).collect::<Vec<_>>(),
        tokens.items.iter().map(|t| &t.status).collect::<Vec<_>>()
    );
    assert!(!status.contains("eyJ"), "a status holds a JWT");
}

/// No Secret of the namespace holds a connection string.
async fn assert_no_connection_string(env: &TestEnv) {
    for s in env
        .api::<Secret>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
    {
        for (k, v) in s.data.unwrap_or_default() {
            let text = String::from_utf8_lossy(&v.0).to_ascii_lowercase();
            assert!(
                !text.contains("accesskey="),
                "Secret {:?} key {k} holds a connection string",
                s.metadata.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_service_account_makes_users_and_tokens_ready_without_a_connection_string() {
    let env = TestEnv::new("entra-sa").await;
    let acs = entra_acs(&env).await;
    let app = federated_client(
        &acs,
        &env,
        "entra-sa",
        &subject(&env, "acs-wi"),
        &["Communication and Email Service Owner"],
    )
    .await;
    workload_identity_sa(&env, "acs-wi", &app, true).await;
    let op = Operator::spawn(entra_operator(&env, &acs));
    op.wait_ready().await;

    create_user(&env, "alice", entra_user(&acs, "acs-wi")).await;
    create_token(&env, "web", token_spec("alice")).await;
    let users: Api<CommunicationUser> = env.api();
    let u = wait_for(&users, "alice", CONVERGE, "user Ready", user_ready(""))
        .await
        .unwrap();
    let tokens: Api<CommunicationToken> = env.api();
    wait_for(&tokens, "web", CONVERGE, "token Ready", token_ready(""))
        .await
        .unwrap();
    let id = u.identity_id().unwrap().to_string();
    assert!(id.starts_with("8:acs:"), "{id}");

    // The token works where ACS tokens are used, and names the identity.
    let token = secret_token(&env, "web").await.expect("token Secret");
    let (valid, why) = acs.validate(&token).await;
    assert!(valid, "the issued token is not valid: {why}");
    // The Secret records the credentials' identity (endpoint and principal), sealed with
    // the operator's own key, which it created in the namespace named by the flag.
    let secret = env.api::<Secret>().get("web").await.unwrap();
    let fp = secret.metadata.annotations.unwrap()["communication.acs.dev/key-fingerprint"].clone();
    assert!(fp.starts_with("entra:"), "{fp}");
    let seal = env.api::<Secret>().get("acs-sealing-key").await.unwrap();
    assert!(seal.data.unwrap()["sealingKey"].0.len() >= 64);

    // One exchange served both objects (the token is cached per principal); every ACS call
    // carried it.
    let issued = entra_stat(&acs, "tokenRequests", "issued").await;
    assert_eq!(issued, 1, "Entra token exchanges");
    let accepted = entra_stat(&acs, "bearerRequests", "accepted").await;
    assert!(accepted >= 2, "{accepted} bearer requests accepted");
    assert_eq!(acs.stats().await["authFailures"].as_u64(), Some(0));
    eprintln!(
        "figure: a user and a token over Entra: {issued} token exchange, {accepted} ACS calls"
    );

    assert_no_connection_string(&env).await;
    assert_nothing_leaked(&env, &op).await;
    let kubectl = env.cp.binary(acs_testenv::Binary::Kubectl);
    let out = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(env.cp.kubeconfig_path())
        .args(["get", "acs", "-n", env.ns()])
        .output()
        .expect("kubectl");
    eprintln!(
        "figure: kubectl get acs\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Deleting the user deletes its identity with the same credentials.
    users.delete("alice", &Default::default()).await.unwrap();
    crate::support::eventually("the identity deleted", CONVERGE, || async {
        match acs.identity(&id).await {
            Some(i) if i["deleted"] == json!(true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// The Ready reason and message of a user.
fn reason_of(u: &CommunicationUser) -> (String, String) {
    u.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_refusals_become_conditions_and_never_loop() {
    let env = TestEnv::new("entra-refusals").await;
    let acs = entra_acs(&env).await;
    let owner = ["Contributor"];
    // Not opted in: the operator never requests a token for it.
    let plain = federated_client(&acs, &env, "plain", &subject(&env, "plain"), &owner).await;
    workload_identity_sa(&env, "plain", &plain, false).await;
    // Federated with another ServiceAccount's subject.
    let wrong = federated_client(&acs, &env, "wrong", &subject(&env, "someone-else"), &owner).await;
    workload_identity_sa(&env, "wrong", &wrong, true).await;
    // No role on the resource.
    let norole = federated_client(&acs, &env, "norole", &subject(&env, "norole"), &[]).await;
    workload_identity_sa(&env, "norole", &norole, true).await;
    // Deleted in Entra.
    let gone = federated_client(&acs, &env, "gone", &subject(&env, "gone"), &owner).await;
    acs.delete_entra_client(gone["clientId"].as_str().unwrap())
        .await;
    workload_identity_sa(&env, "gone", &gone, true).await;

    let op = Operator::spawn(
        entra_operator(&env, &acs)
            .arg("--failure-backoff-max")
            .arg(CAP),
    );
    op.wait_ready().await;
    for name in ["plain", "wrong", "norole", "gone"] {
        create_user(&env, name, entra_user(&acs, name)).await;
    }
    let users: Api<CommunicationUser> = env.api();
    let cases = [
        ("plain", "TokenRequestNotAllowed", "allow-token-request"),
        ("wrong", "CredentialsRejected", "AADSTS"),
        (
            "norole",
            "NotAuthorized",
            "Communication and Email Service Owner",
        ),
        ("gone", "CredentialsRejected", "AADSTS700016"),
    ];
    for (name, reason, hint) in cases {
        let u = wait_for(&users, name, CONVERGE, reason, user_ready(reason))
            .await
            .unwrap();
        let (_, message) = reason_of(&u);
        assert!(message.contains(hint), "{name}: {message}");
    }

    // Counted over 20 s at a 4 s back-off cap: each failing object tries at about 0, 1, 2, 4,
    // 4, 4, 4 s; refusals by Entra are shared per principal for 10 s; the ServiceAccount
    // without the opt-in costs no exchange at all. A loop would make hundreds.
    let refused_base = refused_token_requests(&acs).await;
    let forbidden_base = entra_stat(&acs, "bearerRequests", "forbidden").await;
    let writes_base = op.kube_writes().await;
    let start = Instant::now();
    let (mut refused, mut forbidden, mut written) = (0, 0, 0.0);
    while start.elapsed() < Duration::from_secs(20) {
        refused = refused_token_requests(&acs).await - refused_base;
        forbidden = entra_stat(&acs, "bearerRequests", "forbidden").await - forbidden_base;
        written = op.kube_writes().await - writes_base;
        assert!(
            refused <= 8,
            "{refused} refused Entra exchanges in {:?}",
            start.elapsed()
        );
        assert!(
            forbidden <= 8,
            "{forbidden} forbidden ACS calls in {:?}",
            start.elapsed()
        );
        // Status is written on a change only: these conditions do not change.
        assert!(
            written <= 2.0,
            "{written} apiserver writes in {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(forbidden >= 1, "the unauthorized user stopped trying");
    eprintln!("figure: in 20 s (cap {CAP}): {refused} refused Entra exchanges (2 principals), {forbidden} forbidden ACS calls (1 user), {written} apiserver writes");
    assert_eq!(
        acs.identities().await.len(),
        0,
        "an identity was created without authorization"
    );

    // Granting the role is picked up within the back-off cap.
    acs.admin_put_roles(norole["clientId"].as_str().unwrap(), &["Contributor"])
        .await;
    wait_for(
        &users,
        "norole",
        CONVERGE,
        "Ready after the role grant",
        user_ready(""),
    )
    .await
    .unwrap();
    // Opting in is picked up at the next look at the ServiceAccount (a minute at most).
    let patch =
        json!({"metadata": {"annotations": {"communication.acs.dev/allow-token-request": "true"}}});
    env.api::<ServiceAccount>()
        .patch("plain", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        &users,
        "plain",
        Duration::from_secs(90),
        "Ready after the opt-in",
        user_ready(""),
    )
    .await
    .unwrap();
    assert_nothing_leaked(&env, &op).await;
}

/// A ServiceAccount token for `sa` that expired an hour ago, signed with the control plane's
/// own ServiceAccount key: genuine but stale, as a token file the kubelet stopped refreshing.
fn expired_assertion(env: &TestEnv, sa: &str) -> String {
    use base64::Engine;
    let pem = std::fs::read_to_string(&env.cp.pki().sa_key).expect("sa key");
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .expect("pem body");
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({
        "iss": issuer(env),
        "sub": subject(env, sa),
        "aud": [SA_AUDIENCE],
        "iat": now - 7200,
        "nbf": now - 7200,
        "exp": now - 3600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&der),
    )
    .expect("sign")
}

/// An Entra application federated with ServiceAccount `operator` (created here), the one the
/// operator would run as.
pub(crate) async fn operator_identity(env: &TestEnv, acs: &Acs) -> Value {
    let app = federated_client(
        acs,
        env,
        "operator",
        &subject(env, "operator"),
        &["Contributor"],
    )
    .await;
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "operator"}})).unwrap();
    env.api::<ServiceAccount>()
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    app
}

/// The operator's own workload identity serves the namespaces that opt in: its token file
/// (here a TokenRequest the test made for the ServiceAccount the operator would run as).
#[tokio::test(flavor = "multi_thread")]
async fn the_operators_own_workload_identity_serves_opted_in_namespaces() {
    let env = TestEnv::new("entra-own").await;
    let acs = entra_acs(&env).await;
    let app = operator_identity(&env, &acs).await;
    let token_request = serde_json::from_value(json!({
        "spec": {"audiences": [SA_AUDIENCE], "expirationSeconds": 3600}
    }))
    .unwrap();
    let tr = env
        .api::<ServiceAccount>()
        .create_token_request("operator", &PostParams::default(), &token_request)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, tr.status.unwrap().token).unwrap();
    opt_in_to_default_credentials(&env).await;

    let op = Operator::spawn(own_identity(&env, &acs, &app, &file));
    op.wait_ready().await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    create_token(&env, "web", token_spec("alice")).await;
    let users: Api<CommunicationUser> = env.api();
    wait_for(&users, "alice", CONVERGE, "user Ready", user_ready(""))
        .await
        .unwrap();
    let tokens: Api<CommunicationToken> = env.api();
    wait_for(&tokens, "web", CONVERGE, "token Ready", token_ready(""))
        .await
        .unwrap();
    let (valid, why) = acs
        .validate(&secret_token(&env, "web").await.unwrap())
        .await;
    assert!(valid, "{why}");
    // The operator-wide default never lets a namespace adopt an identity.
    let adopt = CommunicationUserSpec {
        identity_id: Some(format!("8:acs:{}_x", uuid::Uuid::new_v4())),
        ..CommunicationUserSpec::default()
    };
    create_user(&env, "adopter", adopt).await;
    wait_for(
        &users,
        "adopter",
        CONVERGE,
        "adoption refused",
        user_ready("AdoptionNotAllowed"),
    )
    .await
    .unwrap();
    assert_no_connection_string(&env).await;
    assert_nothing_leaked(&env, &op).await;
}

/// A stale token file (the assertion expired) is refused by Entra: a condition, counted
/// exchanges, and recovery once the file is fresh again (it is re-read at every exchange).
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_assertion_is_a_condition_and_a_fresh_file_recovers() {
    let env = TestEnv::new("entra-expired").await;
    let acs = entra_acs(&env).await;
    let app = operator_identity(&env, &acs).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, expired_assertion(&env, "operator")).unwrap();
    opt_in_to_default_credentials(&env).await;

    let op = Operator::spawn(
        own_identity(&env, &acs, &app, &file)
            .arg("--failure-backoff-max")
            .arg(CAP),
    );
    op.wait_ready().await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    let users: Api<CommunicationUser> = env.api();
    let u = wait_for(
        &users,
        "alice",
        CONVERGE,
        "refused",
        user_ready("CredentialsRejected"),
    )
    .await
    .unwrap();
    let (_, message) = reason_of(&u);
    assert!(message.contains("AADSTS700024"), "{message}");
    let base = refused_token_requests(&acs).await;
    let start = Instant::now();
    let mut refused = 0;
    while start.elapsed() < Duration::from_secs(20) {
        refused = refused_token_requests(&acs).await - base;
        assert!(
            refused <= 4,
            "{refused} refused exchanges in {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("figure: an expired assertion cost {refused} Entra exchanges in 20 s (cap {CAP})");

    // The kubelet writes a fresh token: the next attempt uses it.
    let token_request = serde_json::from_value(json!({
        "spec": {"audiences": [SA_AUDIENCE], "expirationSeconds": 3600}
    }))
    .unwrap();
    let tr = env
        .api::<ServiceAccount>()
        .create_token_request("operator", &PostParams::default(), &token_request)
        .await
        .unwrap();
    std::fs::write(&file, tr.status.unwrap().token).unwrap();
    wait_for(
        &users,
        "alice",
        CONVERGE,
        "Ready with a fresh file",
        user_ready(""),
    )
    .await
    .unwrap();
    assert_nothing_leaked(&env, &op).await;
}

pub(crate) fn own_identity(
    env: &TestEnv,
    acs: &Acs,
    app: &Value,
    file: &std::path::Path,
) -> OperatorArgs {
    entra_operator(env, acs)
        .arg("--default-credentials-endpoint")
        .arg(&acs.emu.endpoint())
        .arg("--entra-client-id")
        .arg(app["clientId"].as_str().unwrap())
        .arg("--entra-tenant-id")
        .arg(app["tenantId"].as_str().unwrap())
        .arg("--entra-federated-token-file")
        .arg(file.to_str().unwrap())
}

/// Moving a user from a connection string to workload identity re-issues its tokens under
/// the new credentials (the Secret records endpoint and principal instead of a key), once.
#[tokio::test(flavor = "multi_thread")]
async fn moving_from_a_connection_string_to_workload_identity_reissues_once() {
    let env = TestEnv::new("entra-move").await;
    let acs = entra_acs(&env).await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    let app = federated_client(
        &acs,
        &env,
        "move",
        &subject(&env, "acs-wi"),
        &["Contributor"],
    )
    .await;
    workload_identity_sa(&env, "acs-wi", &app, true).await;
    let op = Operator::spawn(entra_operator(&env, &acs));
    op.wait_ready().await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    create_token(&env, "web", token_spec("alice")).await;
    let tokens: Api<CommunicationToken> = env.api();
    wait_for(&tokens, "web", CONVERGE, "token Ready", token_ready(""))
        .await
        .unwrap();
    let fingerprint = |s: &Secret| {
        s.metadata.annotations.as_ref().unwrap()["communication.acs.dev/key-fingerprint"].clone()
    };
    let before = env.api::<Secret>().get("web").await.unwrap();
    assert!(!fingerprint(&before).starts_with("entra:"));

    let patch = json!({"spec": {"credentials": {
        "endpoint": acs.emu.endpoint(),
        "workloadIdentity": {"serviceAccountName": "acs-wi"},
    }}});
    env.api::<CommunicationUser>()
        .patch("alice", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let t = wait_for(
        &tokens,
        "web",
        CONVERGE,
        "re-issued over Entra",
        |t: Option<&CommunicationToken>| {
            t.and_then(|t| t.status.as_ref())
                .is_some_and(|s| s.revision == 2)
        },
    )
    .await
    .unwrap();
    assert_eq!(t.status.unwrap().revision, 2);
    let after = env.api::<Secret>().get("web").await.unwrap();
    assert!(
        fingerprint(&after).starts_with("entra:"),
        "{}",
        fingerprint(&after)
    );
    let (valid, why) = acs
        .validate(&secret_token(&env, "web").await.unwrap())
        .await;
    assert!(valid, "{why}");
    let issues = acs.calls("issueAccessToken").await;
    assert_eq!(issues, 2, "one issue per set of credentials");
    assert_eq!(entra_stat(&acs, "tokenRequests", "issued").await, 1);
}
