//! `reconcile()` end to end against a scripted apiserver, for each plan: every stop of the
//! gate, Keep, Repair, Issue (against the emulator in process: ACS is real, the apiserver
//! scripted), RequestRevocation and WaitForRevocation, and a Secret
//! the watch vouches for (read only by a plan that writes it). Each test
//! asserts the requests the plan costs, in order, and nothing more. (The Secret write's own
//! error branches are in `issue/tests.rs`.)

use super::*;
use crate::api::{set_condition, CommunicationTokenStatus};
use crate::controller::fixtures::{status as failure, ApiServer};

fn token(ns: &str, secret_name: Option<&str>) -> CommunicationToken {
    let mut t = crate::controller::fixtures::token(ns, "web");
    t.spec.secret_name = secret_name.map(str::to_string);
    t.metadata.resource_version = Some("3".into());
    t.metadata.finalizers = Some(vec![api::TOKEN_FINALIZER.into()]);
    t
}

fn run(
    ctx: &Arc<Context>,
    t: CommunicationToken,
) -> tokio::task::JoinHandle<Result<Action, Error>> {
    tokio::spawn(reconcile(Arc::new(t), ctx.clone()))
}

/// Expects the status write and returns its body.
async fn status_patch(api: &mut ApiServer, t: &CommunicationToken) -> serde_json::Value {
    api.expect(
        "PATCH",
        "/communicationtokens/web/status",
        200,
        serde_json::to_value(t).unwrap(),
    )
    .await
}

/// Expects the status write and returns the Ready condition's reason it carries.
async fn status_written(api: &mut ApiServer, t: &CommunicationToken) -> String {
    let sent = status_patch(api, t).await;
    sent["status"]["conditions"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn event(api: &mut ApiServer, ns: &str) -> serde_json::Value {
    api.expect(
        "POST",
        &format!("/namespaces/{ns}/events"),
        201,
        serde_json::json!({}),
    )
    .await
}

#[tokio::test]
async fn a_suspended_token_writes_its_status_and_one_event_and_reads_nothing() {
    let (ctx, mut api) = Context::test();
    let mut t = token("ns", None);
    t.spec.suspend = true;
    let done = run(&ctx, t.clone());
    assert_eq!(status_written(&mut api, &t).await, reasons::SUSPENDED);
    assert_eq!(event(&mut api, "ns").await["type"], "Normal");
    let action = done.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(ctx.config.resync_period));
    api.expect_nothing_more().await;
}

#[tokio::test]
async fn a_token_of_a_missing_user_removes_its_secret_then_says_so() {
    let (ctx, mut api) = Context::test();
    let t = token("ns", None);
    let done = run(&ctx, t.clone());
    // No user in the cache: its Secret is looked for (to delete it if ours), then the status.
    api.expect(
        "GET",
        "/api/v1/namespaces/ns/secrets/web",
        404,
        failure(404, "NotFound"),
    )
    .await;
    assert_eq!(status_written(&mut api, &t).await, reasons::USER_NOT_FOUND);
    assert_eq!(event(&mut api, "ns").await["type"], "Warning");
    let action = done.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(ctx.config.resync_period));
    api.expect_nothing_more().await;
}

#[tokio::test]
async fn a_token_naming_the_sealing_key_is_refused_before_anything_is_read() {
    let (ctx, mut api) = Context::test();
    let (ns, name) = ctx.config.entra.sealing_key_secret.clone();
    let t = token(&ns, Some(&name));
    let done = run(&ctx, t.clone());
    assert_eq!(status_written(&mut api, &t).await, reasons::SECRET_CONFLICT);
    assert_eq!(event(&mut api, &ns).await["type"], "Warning");
    let action = done.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(gate::REFUSED_RECHECK));
    api.expect_nothing_more().await;
}

#[tokio::test]
async fn a_secret_rejected_at_this_generation_waits_without_a_request() {
    let (ctx, mut api) = Context::test();
    let mut t = token("ns", None);
    let mut st = CommunicationTokenStatus::default();
    set_condition(
        &mut st.conditions,
        types::READY,
        false,
        reasons::SECRET_REJECTED,
        "rejected",
        Some(1),
        jiff::Timestamp::UNIX_EPOCH,
    );
    t.status = Some(st);
    let action = run(&ctx, t).await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(gate::REFUSED_RECHECK));
    api.expect_nothing_more().await;
}

// The plans after the gate: the credentials Secret and the token's Secret are read (the
// cache cannot vouch for either here), then the plan's one write.

/// 32 bytes, base64: any key works.
const ACCESS_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn credentials_secret() -> serde_json::Value {
    use base64::Engine;
    let conn = format!("endpoint=https://res.communication.azure.com/;accesskey={ACCESS_KEY}");
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "acs", "namespace": "ns", "resourceVersion": "1"},
        "data": {"connectionString": base64::engine::general_purpose::STANDARD.encode(conn)},
    })
}

/// User `u`, Ready with an identity, its credentials in Secret `acs`, at revocation `epoch`.
fn ready_user(epoch: i64) -> api::CommunicationUser {
    let mut u = crate::controller::fixtures::user("ns", "u");
    u.spec.credentials = Some(api::CredentialsRef {
        secret_name: Some("acs".into()),
        key: None,
        endpoint: None,
        workload_identity: None,
    });
    u.status = Some(api::CommunicationUserStatus {
        identity_id: Some("8:acs:r_u".into()),
        revocation: Some(api::RevocationStatus {
            epoch,
            ..Default::default()
        }),
        ..Default::default()
    });
    u
}

/// The token's Secret as the operator wrote it, holding a token with `scopes`, issued a
/// minute ago for 24 hours under epoch 0.
fn token_secret(t: &CommunicationToken, scopes: Vec<crate::acs::Scope>) -> serde_json::Value {
    let now = jiff::Timestamp::now();
    let record = crate::secret::RecordedToken {
        expires_on: crate::rotation::whole_seconds(now + jiff::SignedDuration::from_hours(24)),
        issued_at: crate::rotation::whole_seconds(now - jiff::SignedDuration::from_mins(1)),
        user_id: "8:acs:r_u".into(),
        scopes,
        expires_in_minutes: 1440,
        revocation_epoch: 0,
        key_fingerprint: String::new(),
        revision: 1,
    };
    let key = crate::acs::AccessKey::from_base64(ACCESS_KEY).unwrap();
    let seal = crate::secret::Seal::access_key(&key);
    let record = crate::secret::RecordedToken {
        key_fingerprint: seal.fingerprint().to_string(),
        ..record
    };
    let issued = crate::secret::IssuedToken {
        token: crate::acs::TokenString::new("header.payload.signature".into()),
        record,
    };
    let mut s = crate::secret::desired_secret(t, &issued, &seal).unwrap();
    s.metadata.resource_version = Some("8".into());
    serde_json::to_value(s).unwrap()
}

/// Expects the read of the credentials Secret, the first after the gate.
async fn credentials_read(api: &mut ApiServer) {
    api.expect(
        "GET",
        "/namespaces/ns/secrets/acs",
        200,
        credentials_secret(),
    )
    .await;
}

/// Expects the two reads of a plan after the gate: the credentials Secret, then the token's
/// Secret (answered with `secret`).
async fn reads(api: &mut ApiServer, secret: serde_json::Value) {
    credentials_read(api).await;
    api.expect("GET", "/namespaces/ns/secrets/web", 200, secret)
        .await;
}

/// A token issued once (revision 1), 24-hour tokens.
fn issued_token() -> CommunicationToken {
    let mut t = token("ns", None);
    t.spec.expires_in_minutes = 1440;
    t.status = Some(CommunicationTokenStatus {
        revision: 1,
        ..Default::default()
    });
    t
}

#[tokio::test]
async fn a_good_secret_is_kept_with_one_status_write_and_no_acs_call() {
    let (ctx, mut api) = Context::test_with_users(vec![ready_user(0)]);
    let t = issued_token();
    let done = run(&ctx, t.clone());
    reads(&mut api, token_secret(&t, vec![crate::acs::Scope::Voip])).await;
    let sent = status_patch(&mut api, &t).await;
    assert_eq!(sent["status"]["secretResourceVersion"], "8");
    assert_eq!(sent["status"]["conditions"][0]["status"], "True");
    let action = done.await.unwrap().unwrap();
    assert_ne!(action, Action::await_change(), "requeued at the renewal");
    api.expect_nothing_more().await;
}

#[tokio::test]
async fn a_scope_change_asks_the_user_for_a_revocation_and_issues_nothing() {
    let (ctx, mut api) = Context::test_with_users(vec![ready_user(0)]);
    let t = issued_token();
    let done = run(&ctx, t.clone());
    // The Secret holds a chat token; the spec asks for voip.
    reads(&mut api, token_secret(&t, vec![crate::acs::Scope::Chat])).await;
    revocation_requested(&ctx, &mut api, &t, done).await;
}

/// Expects the plan's one write, a status asking the user for a revocation of epoch 0 and
/// waiting for it, then the reconcile's end (requeued at the resync) and nothing more.
async fn revocation_requested(
    ctx: &Context,
    api: &mut ApiServer,
    t: &CommunicationToken,
    done: tokio::task::JoinHandle<Result<Action, Error>>,
) {
    let sent = status_patch(api, t).await;
    assert_eq!(sent["status"]["revocationRequested"], 0);
    let reasons: Vec<&str> = sent["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&reasons::WAITING_FOR_REVOCATION),
        "{reasons:?}"
    );
    let action = done.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(ctx.config.resync_period));
    api.expect_nothing_more().await;
}

#[tokio::test]
async fn an_issuance_during_the_users_revocation_waits_and_calls_no_acs() {
    let mut user = ready_user(0);
    if let Some(r) = user.status.as_mut().and_then(|s| s.revocation.as_mut()) {
        r.pending = Some(1);
    }
    let (ctx, mut api) = Context::test_with_users(vec![user]);
    // A forced rotation is due, but a revocation is on its way: a token issued now would be
    // revoked with the old ones.
    let mut t = issued_token();
    t.metadata.annotations = Some(
        [(api::ROTATE_ANNOTATION.to_string(), "1".to_string())]
            .into_iter()
            .collect(),
    );
    let done = run(&ctx, t.clone());
    reads(&mut api, token_secret(&t, vec![crate::acs::Scope::Voip])).await;
    // The Secret's token stays usable while it waits, so the status has nothing new to say:
    // no write; the error requeues it (the user's epoch moving wakes it sooner).
    let result = done.await.unwrap();
    assert!(
        matches!(&result, Err(Error::Finalizer(e)) if matches!(crate::controller::reconciler_error(e), Some(Error::WaitingForRevocation))),
        "{result:?}"
    );
    api.expect_nothing_more().await;
}

#[tokio::test]
async fn a_drifted_secret_is_rewritten_at_its_version_with_its_same_token() {
    let (ctx, mut api) = Context::test_with_users(vec![ready_user(0)]);
    let t = issued_token();
    let done = run(&ctx, t.clone());
    // Someone added a data key.
    let mut drifted = token_secret(&t, vec![crate::acs::Scope::Voip]);
    drifted["data"]["extra"] = serde_json::json!("eA==");
    let token_value = drifted["data"].clone();
    reads(&mut api, drifted.clone()).await;
    let mut written = drifted.clone();
    written["metadata"]["resourceVersion"] = serde_json::json!("9");
    let put = api
        .expect("PUT", "/namespaces/ns/secrets/web", 200, written)
        .await;
    assert_eq!(
        put["metadata"]["resourceVersion"], "8",
        "fenced on the version read"
    );
    assert!(put["data"].get("extra").is_none(), "the extra key is gone");
    for (k, v) in token_value.as_object().unwrap() {
        if k != "extra" {
            assert_eq!(&put["data"][k], v, "{k} is kept: the same token");
        }
    }
    let sent = status_patch(&mut api, &t).await;
    assert_eq!(sent["status"]["secretResourceVersion"], "9");
    assert_eq!(
        event(&mut api, "ns").await["reason"],
        reasons::SECRET_REPAIRED
    );
    assert!(done.await.unwrap().is_ok());
    api.expect_nothing_more().await;
}

// A Secret the watch vouches for (unchanged since this process wrote it): the plan is made
// from it once, and only a plan that writes the Secret reads it, at the version vouched for.

/// The token's Secret recorded as written at resourceVersion "8" and seen there by the watch.
fn vouched(ctx: &Context, t: &CommunicationToken, scopes: Vec<crate::acs::Scope>) {
    let secret: Secret = serde_json::from_value(token_secret(t, scopes)).unwrap();
    let key = crate::acs::AccessKey::from_base64(ACCESS_KEY).unwrap();
    let seal = crate::secret::Seal::access_key(&key);
    let crate::secret::SecretState::Intact { record, .. } =
        crate::secret::read_secret(Some(&secret), t, &seal, None)
    else {
        panic!("the fixture Secret reads as intact")
    };
    ctx.own_writes
        .wrote("ns", "web", "8", t.metadata.generation, record);
    ctx.own_writes.observed("ns", "web", Some("8"));
}

#[tokio::test]
async fn a_vouched_secret_whose_plan_asks_for_a_revocation_is_not_read() {
    let (ctx, mut api) = Context::test_with_users(vec![ready_user(0)]);
    let t = issued_token();
    vouched(&ctx, &t, vec![crate::acs::Scope::Chat]);
    let done = run(&ctx, t.clone());
    // Only the credentials: the plan (a revocation for the scope change) needs no Secret.
    credentials_read(&mut api).await;
    revocation_requested(&ctx, &mut api, &t, done).await;
}

#[tokio::test]
async fn a_vouched_secret_that_changed_before_the_write_is_planned_again_from_what_was_read() {
    let (ctx, mut api) = Context::test_with_users(vec![ready_user(0)]);
    // A forced rotation: the plan writes the Secret, so it is read for its version.
    let mut t = issued_token();
    t.metadata.annotations = Some(
        [(api::ROTATE_ANNOTATION.to_string(), "1".to_string())]
            .into_iter()
            .collect(),
    );
    vouched(&ctx, &t, vec![crate::acs::Scope::Voip]);
    let done = run(&ctx, t.clone());
    // Meanwhile the Secret changed (the watch has not shown it yet): it holds a chat token.
    let mut moved = token_secret(&t, vec![crate::acs::Scope::Chat]);
    moved["metadata"]["resourceVersion"] = serde_json::json!("10");
    reads(&mut api, moved).await;
    // Planned again from the Secret as read, once: a revocation for the scope change, no
    // ACS call, no Secret write, and no second read.
    revocation_requested(&ctx, &mut api, &t, done).await;
}

#[tokio::test]
async fn a_first_issuance_calls_acs_once_then_creates_the_secret_and_writes_the_status() {
    let emulator = acs_emulator::start(acs_emulator::EmulatorConfig::default())
        .await
        .unwrap();
    let conn = emulator.connection_string();
    let options = crate::acs::ClientOptions {
        ca_pem: Some(emulator.ca_pem().as_bytes().to_vec()),
        trust_web_roots: false,
        ..crate::acs::ClientOptions::default()
    };
    let client =
        crate::acs::AcsClient::new(crate::acs::ConnectionString::parse(&conn).unwrap(), options)
            .unwrap();
    let identity = client
        .create_identity(crate::acs::CreateIdentity::new())
        .await
        .unwrap()
        .identity
        .id;
    let mut user = ready_user(0);
    user.status.as_mut().unwrap().identity_id = Some(identity.clone());
    let (ctx, mut api) = Context::test_with_acs(vec![user], emulator.ca_pem());
    let mut t = token("ns", None);
    t.spec.expires_in_minutes = 1440;
    let issued_before = issue_calls(&emulator).await;
    let done = run(&ctx, t.clone());
    api.expect(
        "GET",
        "/namespaces/ns/secrets/acs",
        200,
        credentials_secret_for(&conn),
    )
    .await;
    // Never issued, and the Secrets' watch has not listed: the Secret is looked for.
    api.expect(
        "GET",
        "/namespaces/ns/secrets/web",
        404,
        failure(404, "NotFound"),
    )
    .await;
    let answer = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "1"},
    });
    let created = api
        .expect("POST", "/namespaces/ns/secrets", 201, answer)
        .await;
    assert_eq!(created["metadata"]["name"], "web");
    assert!(created["data"]["token"].is_string(), "the token is written");
    let sent = status_patch(&mut api, &t).await;
    assert_eq!(sent["status"]["revision"], 1);
    assert_eq!(sent["status"]["secretResourceVersion"], "1");
    assert_eq!(sent["status"]["identityId"], identity.as_str());
    assert_eq!(
        sent["status"]["conditions"][0]["reason"],
        reasons::TOKEN_ISSUED
    );
    // A first issuance writes no event: the status says it.
    let action = done.await.unwrap().unwrap();
    assert_ne!(action, Action::await_change(), "requeued at the renewal");
    api.expect_nothing_more().await;
    assert_eq!(
        issue_calls(&emulator).await,
        issued_before + 1,
        "one ACS call"
    );
}

fn credentials_secret_for(conn: &str) -> serde_json::Value {
    use base64::Engine;
    let mut s = credentials_secret();
    s["data"]["connectionString"] =
        serde_json::json!(base64::engine::general_purpose::STANDARD.encode(conn));
    s
}

/// The emulator's count of token issuances, any status.
async fn issue_calls(emulator: &acs_emulator::RunningEmulator) -> u64 {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(emulator.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let stats: serde_json::Value = http
        .get(format!("{}/stats", emulator.admin_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["operations"]["issueAccessToken"]
        .as_object()
        .map_or(0, |by_status| {
            by_status
                .values()
                .filter_map(serde_json::Value::as_u64)
                .sum()
        })
}
