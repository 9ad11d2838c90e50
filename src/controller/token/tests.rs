//! `reconcile()` end to end against a scripted apiserver, for each plan that serves no token
//! ([`super::plan::Stop`]): the requests each costs, in order, and nothing more. (The plans
//! that issue, keep or repair a token need ACS and are driven by the e2e suite; the Secret
//! write's own branches are in `issue/tests.rs`.)

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

/// Expects the status write and returns the Ready condition's reason it carries.
async fn status_written(api: &mut ApiServer, t: &CommunicationToken) -> String {
    let sent = api
        .expect(
            "PATCH",
            "/communicationtokens/web/status",
            200,
            serde_json::to_value(t).unwrap(),
        )
        .await;
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
