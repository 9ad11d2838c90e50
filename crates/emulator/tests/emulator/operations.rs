//! Running the emulator: persistence across restarts, rate limits, fault injection, plain HTTP,
//! concurrency and start-up validation.

use std::time::{Duration, SystemTime};

use acs_client::{hmac, AccessKey};
use acs_emulator::{start, EmulatorConfig, Limit, LimitClass, RateLimits};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::support::*;

#[tokio::test]
async fn state_survives_a_restart_with_the_same_ca_keys_identities_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let config = EmulatorConfig {
        state_file: Some(state.clone()),
        ..EmulatorConfig::default()
    };
    let e = emu_with(config.clone()).await;
    let id = e.create().await;
    let token = e.issue(&id).await;
    let revoked_id = e.create().await;
    let revoked_token = e.issue(&revoked_id).await;
    e.send(
        "POST",
        &format!(
            "/identities/{}/:revokeAccessTokens?api-version={GA}",
            enc(&revoked_id)
        ),
        "",
    )
    .await;
    let deleted = e.create().await;
    e.send(
        "DELETE",
        &format!("/identities/{}?api-version={GA}", enc(&deleted)),
        "",
    )
    .await;
    let ca = e.emu.ca_pem().to_string();
    let keys = e.emu.access_keys();
    let resource = e.emu.resource_id();
    e.emu.shutdown().await.unwrap();

    // The restarted emulator is reached by a client that trusts only the *old* CA.
    let e = emu_with(config).await;
    assert_eq!(e.emu.ca_pem(), ca);
    assert_eq!(e.emu.access_keys(), keys);
    assert_eq!(e.emu.resource_id(), resource);
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let health = client
        .get(format!("{}/health", e.emu.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    assert_eq!(e.validate(&token).await["valid"], true);
    assert_eq!(e.validate(&revoked_token).await["reason"], "revoked");
    let listed = e.admin("GET", "identities", None).await;
    let listed = listed.body["identities"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 3);
    assert_eq!(
        listed.iter().find(|i| i["id"] == deleted.as_str()).unwrap()["deleted"],
        true
    );
    // Tokens issued after the restart still follow the stored sequence.
    let fresh = e.issue(&revoked_id).await;
    assert_eq!(e.validate(&fresh).await["valid"], true);
    let r = e
        .send(
            "DELETE",
            &format!("/identities/{}?api-version={GA}", enc(&deleted)),
            "",
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "IdentityNotFound");
    e.emu.shutdown().await.unwrap();

    // A different resource id for the same state is refused rather than silently orphaning ids.
    let err = start(EmulatorConfig {
        state_file: Some(state),
        resource_id: Some(uuid::Uuid::new_v4()),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("belongs to resource"), "{err}");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_count_it() {
    let mut limits = RateLimits::off();
    limits.set(LimitClass::Issue, Some(Limit::new(2, 60.0)));
    let e = emu_with(EmulatorConfig {
        rate_limits: limits,
        ..EmulatorConfig::default()
    })
    .await;
    let id = e.create().await;
    e.issue(&id).await;
    e.issue(&id).await;
    let r = e
        .send(
            "POST",
            &format!("/identities/{id}/:issueAccessToken?api-version={GA}"),
            r#"{"scopes": ["chat"]}"#,
        )
        .await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Other classes are not affected.
    e.create().await;
    let stats = e.admin("GET", "stats", None).await.body;
    assert_eq!(stats["throttled"], 1);
    assert_eq!(stats["total429"], 1);
    assert_eq!(stats["operations"]["issueAccessToken"]["429"], 1);
    assert_eq!(stats["operations"]["issueAccessToken"]["200"], 2);

    // Lifting the limit at runtime admits again.
    let r = e
        .admin("PUT", "config", Some(json!({"rateLimits": "off"})))
        .await;
    assert_eq!(r.body["rateLimits"]["issue"], Value::Null);
    e.issue(&id).await;
    let r = e
        .admin(
            "PUT",
            "config",
            Some(json!({"rateLimits": {"create": {"max": 1, "windowSeconds": 30}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    e.create().await;
    let r = e
        .send("POST", &format!("/identities?api-version={GA}"), "")
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = e
        .admin("PUT", "config", Some(json!({"rateLimits": {"nope": null}})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "BadRequest");
}

#[tokio::test]
async fn injected_faults_answer_errors_drop_connections_and_clear() {
    let e = emu_with(no_limits()).await;
    let id = e.create().await;
    let r = e
        .admin(
            "PUT",
            "faults",
            Some(
                json!({"rate503": 1.0, "retryAfterSeconds": 3, "operations": ["issueAccessToken"]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let issue = format!(
        "/identities/{}/:issueAccessToken?api-version={GA}",
        enc(&id)
    );
    let r = e.send("POST", &issue, r#"{"scopes": ["chat"]}"#).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
    assert_eq!(r.headers["retry-after"], "3");
    e.create().await; // not in the filter

    e.admin("PUT", "faults", Some(json!({"rate429": 1.0})))
        .await;
    let r = e
        .send("POST", &format!("/identities?api-version={GA}"), "")
        .await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
    e.admin("PUT", "faults", Some(json!({"rate500": 1.0})))
        .await;
    let r = e
        .send("POST", &format!("/identities?api-version={GA}"), "")
        .await;
    assert_error(&r, StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError");

    // A dropped connection: no response at all, and nothing created.
    let before = e.admin("GET", "identities", None).await.body["identities"]
        .as_array()
        .unwrap()
        .len();
    e.admin("PUT", "faults", Some(json!({"dropRate": 1.0})))
        .await;
    let target = format!("/identities?api-version={GA}");
    let s = hmac::sign_request(
        e.key.expose(),
        "POST",
        &target,
        &e.host(),
        b"",
        SystemTime::now(),
    );
    let sent = e
        .http
        .post(e.url(&target))
        .header("x-ms-date", s.x_ms_date.clone())
        .header("x-ms-content-sha256", s.content_sha256.clone())
        .header("authorization", s.authorization.clone())
        .send()
        .await;
    assert!(sent.is_err(), "a dropped connection yields no response");
    let after = e.admin("GET", "identities", None).await.body["identities"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, before);

    // Drop after processing: the identity exists although the client got no answer.
    e.admin("PUT", "faults", Some(json!({"dropAfterRate": 1.0})))
        .await;
    let sent = e
        .http
        .post(e.url(&target))
        .header("x-ms-date", s.x_ms_date)
        .header("x-ms-content-sha256", s.content_sha256)
        .header("authorization", s.authorization)
        .send()
        .await;
    assert!(sent.is_err());
    let after = e.admin("GET", "identities", None).await.body["identities"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, before + 1);

    let r = e
        .admin("PUT", "faults", Some(json!({"rate429": 2.0})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "BadRequest");
    let r = e.admin("DELETE", "faults", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    e.create().await;
    let stats = e.admin("GET", "stats", None).await.body;
    assert_eq!(stats["injected"]["503"], 1);
    assert_eq!(stats["injected"]["drop"], 1);
    assert_eq!(stats["injected"]["dropAfter"], 1);
    assert_eq!(stats["dropped"], 2);
    assert_eq!(
        e.admin("POST", "stats/reset", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(e.admin("GET", "stats", None).await.body["total"], 0);
}

#[tokio::test]
async fn added_latency_delays_answers() {
    let e = emu_with(no_limits()).await;
    e.admin("PUT", "faults", Some(json!({"latencyMs": 300})))
        .await;
    let started = std::time::Instant::now();
    e.create().await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        e.admin("GET", "stats", None).await.body["injected"]["latency"],
        1
    );
}

#[tokio::test]
async fn plain_http_serves_the_api_and_the_admin_routes() {
    let e = emu_with(EmulatorConfig {
        tls: false,
        ..EmulatorConfig::default()
    })
    .await;
    assert!(e.emu.endpoint().starts_with("http://127.0.0.1:"));
    assert!(e
        .emu
        .connection_string()
        .starts_with("endpoint=http://127.0.0.1:"));
    let id = e.create().await;
    let health = e.admin("GET", "health", None).await;
    assert_eq!(health.body["status"], "ok");
    assert_eq!(health.body["identities"], 1);
    let listed = e.admin("GET", "identities", None).await;
    assert_eq!(listed.body["identities"][0]["id"], id.as_str());
    assert_eq!(listed.body["identities"][0]["deleted"], false);
    let r = e.admin("GET", "nothing", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "NotFound");
    let r = e.admin("DELETE", "identities", None).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed");
}

#[tokio::test]
async fn the_emulator_serves_many_concurrent_requests() {
    let e = emu_with(no_limits()).await;
    let e = std::sync::Arc::new(e);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let id = e.create().await;
                e.issue(&id).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = e.admin("GET", "stats", None).await.body;
    assert_eq!(stats["operations"]["createIdentity"]["201"], 400);
    assert_eq!(stats["operations"]["issueAccessToken"]["200"], 400);
}

#[tokio::test]
async fn bad_configurations_are_refused_at_start() {
    let too_many = EmulatorConfig {
        access_keys: vec![AccessKey::from_bytes(vec![1; 64]); 3],
        ..EmulatorConfig::default()
    };
    assert!(start(too_many).await.is_err());
    let zero = EmulatorConfig {
        token_lifetime_seconds: Some(0),
        ..EmulatorConfig::default()
    };
    assert!(start(zero).await.is_err());
    let given = AccessKey::from_bytes(vec![9; 64]);
    let e = emu_with(EmulatorConfig {
        access_keys: vec![given.clone()],
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(e.emu.access_keys()[0], given);
    assert_eq!(e.emu.access_keys()[1].expose().len(), 64);
}
