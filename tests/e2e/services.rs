//! CommunicationService and ClusterCommunicationService (issue 22): users reference the ACS
//! resource as an object; its Ready condition proves the credentials with a counted read; a
//! key rotation in its Secret re-issues exactly its users' tokens; a cluster service serves
//! only the namespaces its selector selects; a deleted service makes its users not Ready and
//! deletes nothing in ACS.

use std::time::{Duration, Instant};

use acs_identity_operator::api::{
    ClusterCommunicationService, CommunicationService, CommunicationToken, CommunicationUser,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::harness::*;
use crate::support::{status_code, wait_for, TestEnv};

fn revision(t: &CommunicationToken) -> i64 {
    t.status.as_ref().map_or(0, |s| s.revision)
}

async fn live_identities(acs: &Acs) -> usize {
    acs.identities()
        .await
        .iter()
        .filter(|i| i["deleted"] != json!(true))
        .count()
}

/// Polls for `window` that `token`'s revision stays `expected` (a deadline, not a sleep: the
/// check runs every 100 ms and fails at the first change).
async fn revision_stays(env: &TestEnv, token: &str, expected: i64, window: Duration) {
    let api: Api<CommunicationToken> = env.api();
    let end = Instant::now() + window;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < end {
        tick.tick().await;
        let t = api.get(token).await.expect("token");
        assert_eq!(revision(&t), expected, "token {token} was re-issued");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespaced_service_serves_its_users_and_its_key_rotation_reaches_exactly_their_tokens() {
    let started = Instant::now();
    let env = TestEnv::new("svc-ns").await;
    let acs = Acs::start().await;
    let secondary = acs.regenerate("secondary").await;
    put_secret(
        &env,
        "acs-primary",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    put_secret(&env, "acs-secondary", "connectionString", &secondary).await;
    for (name, secret) in [("primary", "acs-primary"), ("secondary", "acs-secondary")] {
        create_service(
            &env,
            name,
            json!({
                "endpoint": acs.emu.endpoint(),
                "connectionString": { "secretRef": { "name": secret } },
            }),
        )
        .await;
    }
    let mut op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;

    let services: Api<CommunicationService> = env.api();
    let mut fingerprints = Vec::new();
    for name in ["primary", "secondary"] {
        let s = wait_for(
            &services,
            name,
            CONVERGE,
            "service Ready",
            service_ready("CredentialsVerified"),
        )
        .await
        .expect("service");
        let st = s.status.expect("status");
        assert!(st.last_probe_time.is_some());
        fingerprints.push(st.fingerprint.expect("fingerprint"));
    }
    assert_ne!(
        fingerprints[0], fingerprints[1],
        "two keys, two fingerprints"
    );

    create_user(&env, "a", service_user("CommunicationService", "primary")).await;
    create_user(&env, "b", service_user("CommunicationService", "secondary")).await;
    create_token(&env, "ta", token_spec("a")).await;
    create_token(&env, "tb", token_spec("b")).await;
    let tokens: Api<CommunicationToken> = env.api();
    for t in ["ta", "tb"] {
        wait_for(&tokens, t, CONVERGE, "token Ready", token_ready(""))
            .await
            .expect("token");
    }
    assert_eq!(live_identities(&acs).await, 2);
    // The counts reach the service's status.
    wait_for(
        &services,
        "primary",
        CONVERGE,
        "users and tokens counted",
        |s: Option<&CommunicationService>| {
            s.and_then(|s| s.status.as_ref())
                .is_some_and(|st| st.users == Some(1) && st.tokens == Some(1))
        },
    )
    .await;

    // The primary key is regenerated and its Secret updated: ta is re-issued, tb is not.
    let issued = acs.calls("issueAccessToken").await;
    let new_primary = acs.regenerate("primary").await;
    put_secret(&env, "acs-primary", "connectionString", &new_primary).await;
    let ta = wait_for(
        &tokens,
        "ta",
        CONVERGE,
        "ta re-issued",
        |t: Option<&CommunicationToken>| t.is_some_and(|t| revision(t) >= 2),
    )
    .await
    .expect("ta");
    let ta_secret = secret_token(&env, "ta").await.expect("token");
    assert!(
        acs.validate(&ta_secret).await.0,
        "ta holds a token of the new key"
    );
    revision_stays(&env, "tb", 1, Duration::from_secs(5)).await;
    assert_eq!(revision(&ta), 2);
    assert_eq!(
        acs.calls("issueAccessToken").await,
        issued + 1,
        "exactly the rotated service's token was re-issued"
    );

    // The service's status never holds the key.
    let s = services.get("primary").await.expect("service");
    let status = serde_json::to_string(&s.status).unwrap();
    for conn in [acs.connection_string(), new_primary, secondary] {
        let key = conn
            .split("accesskey=")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        assert!(!status.contains(&key), "a key in the service status");
    }

    // A deleted service: its user is not Ready, nothing is deleted in ACS.
    services
        .delete("secondary", &DeleteParams::default())
        .await
        .expect("delete service");
    let users: Api<CommunicationUser> = env.api();
    let b = wait_for(
        &users,
        "b",
        CONVERGE,
        "user of a deleted service not Ready",
        user_ready("ServiceNotFound"),
    )
    .await
    .expect("user");
    assert!(b.identity_id().is_some(), "the identity stays recorded");
    assert_eq!(live_identities(&acs).await, 2, "nothing deleted in ACS");

    // Probes: one per service at creation, then at most one a minute each.
    let minutes = started.elapsed().as_secs() / 60;
    let probes = acs.calls("getIdentity").await;
    assert!(
        probes >= 2 && probes <= 2 * (1 + minutes + 1),
        "{probes} probes in {minutes} min"
    );
    op.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_service_serves_only_the_namespaces_it_selects() {
    let _turn = cluster_services_turn().await;
    let platform = TestEnv::new("svc-platform").await;
    let team = TestEnv::new("svc-team").await;
    let other = TestEnv::new("svc-other").await;
    let acs = Acs::start().await;
    let name = format!("platform-{}", platform.ns());
    let unselective = format!("unselective-{}", platform.ns());
    let select = |ns: &str| json!({ "matchLabels": { "kubernetes.io/metadata.name": ns } });
    platform_cluster_service(&platform, &acs, &name, Some(select(team.ns()))).await;
    // No selector selects no namespace.
    platform_cluster_service(&platform, &acs, &unselective, None).await;
    // Watching a list of namespaces, the operator writes cluster services' status only when
    // told to (by default a cluster-wide install does).
    let mut args = OperatorArgs::new(&team, &acs)
        .arg("--manage-cluster-services")
        .arg("true");
    args.namespaces = vec![
        platform.ns().to_string(),
        team.ns().to_string(),
        other.ns().to_string(),
    ];
    let mut op = Operator::spawn(args);
    op.wait_ready().await;

    let cluster: Api<ClusterCommunicationService> = Api::all(team.client.clone());
    wait_for(
        &cluster,
        &name,
        CONVERGE,
        "cluster service Ready",
        service_ready(""),
    )
    .await
    .expect("service");

    create_user(
        &team,
        "app",
        service_user("ClusterCommunicationService", &name),
    )
    .await;
    create_user(
        &other,
        "intruder",
        service_user("ClusterCommunicationService", &name),
    )
    .await;
    create_user(
        &team,
        "nowhere",
        service_user("ClusterCommunicationService", &unselective),
    )
    .await;
    let team_users: Api<CommunicationUser> = team.api();
    let other_users: Api<CommunicationUser> = other.api();
    wait_for(
        &team_users,
        "app",
        CONVERGE,
        "selected user Ready",
        user_ready(""),
    )
    .await
    .expect("user");
    let intruder = wait_for(
        &other_users,
        "intruder",
        CONVERGE,
        "unselected namespace refused",
        user_ready("NamespaceNotSelected"),
    )
    .await
    .expect("user");
    assert!(intruder.identity_id().is_none());
    wait_for(
        &team_users,
        "nowhere",
        CONVERGE,
        "a service without selector serves nobody",
        user_ready("NamespaceNotSelected"),
    )
    .await;
    assert_eq!(
        live_identities(&acs).await,
        1,
        "only the selected user has an identity"
    );

    // The selector moves to the other namespace: the intruder is served, the app refused.
    cluster
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "namespaceSelector": select(other.ns()) } })),
        )
        .await
        .expect("patch selector");
    wait_for(
        &other_users,
        "intruder",
        CONVERGE,
        "now selected",
        user_ready(""),
    )
    .await
    .expect("user");
    wait_for(
        &team_users,
        "app",
        CONVERGE,
        "no longer selected",
        user_ready("NamespaceNotSelected"),
    )
    .await;

    // A deleted cluster service: its users are not Ready, nothing is deleted in ACS.
    let before = live_identities(&acs).await;
    for n in [&name, &unselective] {
        cluster
            .delete(n, &DeleteParams::default())
            .await
            .expect("delete cluster service");
    }
    wait_for(
        &other_users,
        "intruder",
        CONVERGE,
        "service gone",
        user_ready("ServiceNotFound"),
    )
    .await;
    assert_eq!(
        live_identities(&acs).await,
        before,
        "nothing deleted in ACS"
    );
    op.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn admission_refuses_ambiguous_credentials_and_cross_namespace_secrets() {
    let env = TestEnv::new("svc-admission").await;
    let users: Api<CommunicationUser> = env.api();
    let both: CommunicationUser = serde_json::from_value(json!({
        "apiVersion": "communication.acs.dev/v1alpha1",
        "kind": "CommunicationUser",
        "metadata": { "name": "both" },
        "spec": {
            "serviceRef": { "kind": "CommunicationService", "name": "acs" },
            "credentials": { "secretName": "s" },
        },
    }))
    .unwrap();
    let err = users
        .create(&PostParams::default(), &both)
        .await
        .expect_err("serviceRef with credentials is refused");
    assert_eq!(status_code(&err), Some(422));
    assert!(
        err.to_string().contains("at most one of serviceRef"),
        "{err}"
    );

    let services: Api<CommunicationService> = env.api();
    for (spec, message) in [
        (
            json!({
                "endpoint": "https://x.communication.azure.com",
                "connectionString": { "secretRef": { "name": "s" } },
                "workloadIdentity": { "serviceAccountRef": { "name": "sa" } },
            }),
            "exactly one of connectionString",
        ),
        (
            json!({
                "endpoint": "https://x.communication.azure.com",
                "connectionString": { "secretRef": { "name": "s", "namespace": "kube-system" } },
            }),
            "its own namespace only",
        ),
    ] {
        let obj: CommunicationService = serde_json::from_value(json!({
            "apiVersion": "communication.acs.dev/v1alpha1",
            "kind": "CommunicationService",
            "metadata": { "name": "bad" },
            "spec": spec,
        }))
        .unwrap();
        let err = services
            .create(&PostParams::default(), &obj)
            .await
            .expect_err("refused");
        assert_eq!(status_code(&err), Some(422));
        assert!(err.to_string().contains(message), "{err}");
    }
}

/// Entra credentials through a service: a CommunicationService naming a ServiceAccount of its
/// namespace that opted in, and a ClusterCommunicationService using the operator's own
/// workload identity. Each is proved (Ready) and serves a user whose token ACS accepts; a
/// ServiceAccount that did not opt in makes its service not Ready, with nothing sent to ACS.
#[tokio::test(flavor = "multi_thread")]
async fn services_authenticate_with_a_service_accounts_or_the_operators_own_workload_identity() {
    let _turn = cluster_services_turn().await;
    let env = TestEnv::new("svc-entra").await;
    let acs = entra_acs(&env).await;
    let app = federated_client(
        &acs,
        &env,
        "svc-wi",
        &subject(&env, "acs-wi"),
        &["Communication and Email Service Owner"],
    )
    .await;
    workload_identity_sa(&env, "acs-wi", &app, true).await;
    workload_identity_sa(&env, "not-opted-in", &app, false).await;
    let own = crate::entra::operator_identity(&env, &acs).await;
    let token_request = serde_json::from_value(json!({
        "spec": {"audiences": [SA_AUDIENCE], "expirationSeconds": 3600}
    }))
    .unwrap();
    let tr = env
        .api::<k8s_openapi::api::core::v1::ServiceAccount>()
        .create_token_request("operator", &PostParams::default(), &token_request)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, tr.status.unwrap().token).unwrap();

    for (name, sa) in [("wi", "acs-wi"), ("refused", "not-opted-in")] {
        create_service(
            &env,
            name,
            json!({
                "endpoint": acs.emu.endpoint(),
                "workloadIdentity": { "serviceAccountRef": { "name": sa } },
            }),
        )
        .await;
    }
    let cluster_name = format!("own-{}", env.ns());
    create_cluster_service(
        &env,
        &cluster_name,
        json!({
            "endpoint": acs.emu.endpoint(),
            "operatorIdentity": {},
            "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": env.ns() } },
        }),
    )
    .await;
    let mut op = Operator::spawn(
        crate::entra::own_identity(&env, &acs, &own, &file)
            .arg("--manage-cluster-services")
            .arg("true"),
    );
    op.wait_ready().await;

    let services: Api<CommunicationService> = env.api();
    let cluster: Api<ClusterCommunicationService> = Api::all(env.client.clone());
    wait_for(
        &services,
        "wi",
        CONVERGE,
        "workload identity service Ready",
        service_ready(""),
    )
    .await
    .expect("service");
    wait_for(
        &cluster,
        &cluster_name,
        CONVERGE,
        "operator identity service Ready",
        service_ready(""),
    )
    .await
    .expect("cluster service");
    wait_for(
        &services,
        "refused",
        CONVERGE,
        "not opted in",
        service_ready("TokenRequestNotAllowed"),
    )
    .await
    .expect("service");

    create_user(&env, "wi-user", service_user("CommunicationService", "wi")).await;
    create_user(
        &env,
        "own-user",
        service_user("ClusterCommunicationService", &cluster_name),
    )
    .await;
    create_token(&env, "wi-token", token_spec("wi-user")).await;
    create_token(&env, "own-token", token_spec("own-user")).await;
    let tokens: Api<CommunicationToken> = env.api();
    for t in ["wi-token", "own-token"] {
        wait_for(&tokens, t, CONVERGE, "token Ready", token_ready(""))
            .await
            .expect("token");
        let token = secret_token(&env, t).await.expect("token");
        let (valid, why) = acs.validate(&token).await;
        assert!(valid, "{t}: {why}");
    }
    Api::<ClusterCommunicationService>::all(env.client.clone())
        .delete(&cluster_name, &DeleteParams::default())
        .await
        .expect("delete cluster service");
    op.stop();
}

/// A service's `requestsPerSecond` is one budget for every object using it: six users created
/// at once through a service allowing one request a second are created over five seconds or
/// more, and six through a service without a budget faster.
#[tokio::test(flavor = "multi_thread")]
async fn a_services_request_budget_is_shared_by_every_user_of_it() {
    let env = TestEnv::new("svc-budget").await;
    let acs = Acs::start().await;
    put_secret(&env, "acs", "connectionString", &acs.connection_string()).await;
    for (name, budget) in [("slow", Some(1)), ("free", None)] {
        let mut spec = json!({
            "endpoint": acs.emu.endpoint(),
            "connectionString": { "secretRef": { "name": "acs" } },
        });
        if let Some(b) = budget {
            spec["requestsPerSecond"] = json!(b);
        }
        create_service(&env, name, spec).await;
    }
    let mut op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;
    let services: Api<CommunicationService> = env.api();
    for s in ["slow", "free"] {
        wait_for(&services, s, CONVERGE, "service Ready", service_ready(""))
            .await
            .expect("service");
    }
    let users: Api<CommunicationUser> = env.api();
    let mut spans = Vec::new();
    for service in ["slow", "free"] {
        let names: Vec<String> = (0..6).map(|i| format!("{service}-{i}")).collect();
        for n in &names {
            create_user(&env, n, service_user("CommunicationService", service)).await;
        }
        let mut ids = Vec::new();
        for n in &names {
            let u = wait_for(&users, n, CONVERGE, "user Ready", user_ready(""))
                .await
                .expect("user");
            ids.push(u.identity_id().expect("identity").to_string());
        }
        let created: Vec<jiff::Timestamp> = acs
            .identities()
            .await
            .iter()
            .filter(|i| ids.iter().any(|id| i["id"] == json!(id)))
            .map(|i| i["createdAt"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(created.len(), 6);
        let first = created.iter().min().unwrap();
        let last = created.iter().max().unwrap();
        spans.push(last.duration_since(*first).as_secs_f64());
    }
    assert!(
        spans[0] >= 4.5,
        "six creations at one a second took {:.1} s",
        spans[0]
    );
    // Load may slow both; only the budget holds the first back by design.
    assert!(
        spans[1] < spans[0],
        "the unbudgeted service was held back as much: {spans:?}"
    );
    op.stop();
}

/// A namespace deleted with its CommunicationService, its Secret and its users: the service
/// and the Secret may go first (here they do), and the users' finalizers still delete their
/// identities in ACS with the credentials last seen through the service.
#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_deleted_with_its_service_still_deletes_its_identities() {
    let env = TestEnv::new("svc-teardown").await;
    let acs = Acs::start().await;
    put_secret(&env, "acs", "connectionString", &acs.connection_string()).await;
    create_service(
        &env,
        "acs",
        json!({
            "endpoint": acs.emu.endpoint(),
            "connectionString": { "secretRef": { "name": "acs" } },
        }),
    )
    .await;
    let mut op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;
    let users: Api<CommunicationUser> = env.api();
    let mut ids = Vec::new();
    for n in ["a", "b"] {
        create_user(&env, n, service_user("CommunicationService", "acs")).await;
        let u = wait_for(&users, n, CONVERGE, "user Ready", user_ready(""))
            .await
            .expect("user");
        ids.push(u.identity_id().expect("identity").to_string());
    }
    // The service and its Secret go first (as a namespace's teardown may order it): the
    // users learn it, and their finalizers must still find the credentials.
    let services: Api<CommunicationService> = env.api();
    services
        .delete("acs", &DeleteParams::default())
        .await
        .expect("delete service");
    env.api::<k8s_openapi::api::core::v1::Secret>()
        .delete("acs", &DeleteParams::default())
        .await
        .expect("delete Secret");
    for n in ["a", "b"] {
        wait_for(
            &users,
            n,
            CONVERGE,
            "service gone",
            user_ready("ServiceNotFound"),
        )
        .await;
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    namespaces
        .delete(env.ns(), &DeleteParams::background())
        .await
        .expect("delete the namespace");
    crate::support::eventually("the namespace gone", Duration::from_secs(120), || async {
        match namespaces.get_opt(env.ns()).await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|n| n.map(|n| n.status)))),
        }
    })
    .await;
    for id in &ids {
        let identity = acs.identity(id).await.expect("identity");
        assert_eq!(identity["deleted"], json!(true), "{id} deleted in ACS");
    }
    assert_eq!(
        acs.calls("deleteIdentity").await,
        2,
        "one delete per identity"
    );
    op.stop();
}
