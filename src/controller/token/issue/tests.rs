//! The Secret write's error branches against a scripted apiserver: what each answer costs
//! (requests, status writes, events) and that none of them loops.

use super::*;
use crate::controller::fixtures::status as failure;

fn token() -> Arc<CommunicationToken> {
    let mut t = crate::controller::fixtures::token("ns", "web");
    t.metadata.uid = Some("uid-1".into());
    Arc::new(t)
}

fn secret() -> Option<Secret> {
    Some(Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("web".into()),
            namespace: Some("ns".into()),
            resource_version: Some("7".into()),
            ..Default::default()
        },
        ..Default::default()
    })
}

fn token_json() -> serde_json::Value {
    serde_json::to_value(token().as_ref()).unwrap()
}

/// Starts the Secret write (`create` or replace) against the scripted apiserver.
fn spawn_write(
    ctx: &Arc<Context>,
    create: bool,
) -> tokio::task::JoinHandle<Result<Written, Error>> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let st = CommunicationTokenStatus::default();
        let record = RecordedToken {
            expires_on: jiff::Timestamp::from_second(1_700_003_600).unwrap(),
            issued_at: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            user_id: "8:acs:r_u".into(),
            scopes: vec![crate::acs::Scope::Voip],
            expires_in_minutes: 60,
            revocation_epoch: 0,
            key_fingerprint: "f".into(),
            revision: 1,
        };
        write_secret(
            &ctx,
            &token(),
            "web",
            &secret().unwrap(),
            if create {
                Write::Create
            } else {
                Write::Replace
            },
            &st,
            &record,
        )
        .await
    })
}

#[tokio::test]
async fn a_secret_created_by_someone_else_meanwhile_is_a_conflict_written_once() {
    let (ctx, mut api) = Context::test();
    let act = spawn_write(&ctx, true);
    api.expect(
        "POST",
        "/api/v1/namespaces/ns/secrets",
        409,
        failure(409, "AlreadyExists"),
    )
    .await;
    let written = api
        .expect(
            "PATCH",
            "/communicationtokens/web/status",
            200,
            token_json(),
        )
        .await;
    assert_eq!(
        written["status"]["conditions"][0]["reason"],
        reasons::SECRET_CONFLICT
    );
    api.expect("POST", "/namespaces/ns/events", 201, serde_json::json!({}))
        .await;
    let result = act.await.unwrap();
    assert!(matches!(result, Ok(Written::Refused(_))));
    api.expect_nothing_more().await;
}

#[tokio::test]
async fn a_replace_that_lost_its_precondition_fails_without_writing_anything_else() {
    let (ctx, mut api) = Context::test();
    let act = spawn_write(&ctx, false);
    let sent = api
        .expect(
            "PUT",
            "/api/v1/namespaces/ns/secrets/web",
            409,
            failure(409, "Conflict"),
        )
        .await;
    assert_eq!(
        sent["metadata"]["resourceVersion"], "7",
        "the replace is fenced"
    );
    let result = act.await.unwrap();
    assert!(matches!(result, Err(Error::ApplySecret(_))));
    api.expect_nothing_more().await;
}

#[tokio::test]
async fn a_secret_the_apiserver_rejects_is_reported_and_not_retried_soon() {
    let (ctx, mut api) = Context::test();
    let act = spawn_write(&ctx, false);
    api.expect("PUT", "/secrets/web", 422, failure(422, "Invalid"))
        .await;
    let written = api
        .expect(
            "PATCH",
            "/communicationtokens/web/status",
            200,
            token_json(),
        )
        .await;
    assert_eq!(
        written["status"]["conditions"][0]["reason"],
        reasons::SECRET_REJECTED
    );
    api.expect("POST", "/namespaces/ns/events", 201, serde_json::json!({}))
        .await;
    match act.await.unwrap() {
        Ok(Written::Refused(a)) => {
            assert_eq!(a, Action::requeue(Duration::from_secs(300)));
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}
