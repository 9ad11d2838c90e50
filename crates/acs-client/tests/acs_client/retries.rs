//! Retry behaviour end to end: Retry-After, backoff bounds, the create rule, the rate limiter
//! and the per-attempt observer.

use std::time::{Duration, Instant};

use acs_client::{AcsClient, AcsError, ClientOptions, CreateIdentity, RateLimiter, Scope};
use serde_json::json;
use tokio::net::TcpListener;

use crate::fake::{FakeServer, Reply};
use crate::{
    client_for, conn, created_body, fast_options, preview_options, recorder, token_body, ID, KEY,
};

fn throttled() -> Reply {
    Reply::json(
        429,
        json!({"error": {"code": "TooManyRequests", "message": "slow down"}}),
    )
}

#[tokio::test]
async fn retries_wait_as_long_as_retry_after_seconds_says() {
    let token = crate::fake_token();
    let server = FakeServer::start(move |n, _| match n {
        0 => throttled().with_header("Retry-After", "1"),
        _ => Reply::json(200, token_body(&token)),
    })
    .await;
    // Backoff alone would wait at most 5 ms, so a 1 s pause can only come from Retry-After.
    let c = client_for(&server, fast_options());
    let started = Instant::now();
    c.issue_token(ID, &[Scope::Chat], None).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn retries_wait_as_long_as_the_millisecond_headers_say() {
    let token = crate::fake_token();
    let server = FakeServer::start(move |n, _| match n {
        0 => Reply::status(503).with_header("retry-after-ms", "300"),
        1 => Reply::status(503).with_header("x-ms-retry-after-ms", "200"),
        _ => Reply::json(200, token_body(&token)),
    })
    .await;
    let c = client_for(&server, fast_options());
    let started = Instant::now();
    c.issue_token(ID, &[Scope::Chat], None).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn a_long_retry_after_is_capped_and_still_reported_to_the_caller() {
    let server = FakeServer::start(|_, _| throttled().with_header("Retry-After", "3600")).await;
    let c = client_for(
        &server,
        ClientOptions {
            max_retries: 1,
            max_retry_after: Duration::from_millis(50),
            ..fast_options()
        },
    );
    let started = Instant::now();
    let err = c.revoke_tokens(ID).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(err.category(), "throttled");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn idempotent_calls_are_retried_after_500_a_dropped_connection_and_a_timeout() {
    let token = crate::fake_token();
    let server = FakeServer::start(move |n, _| match n {
        0 => Reply::status(500),
        1 => Reply::Drop,
        2 => Reply::Hang,
        _ => Reply::json(200, token_body(&token)),
    })
    .await;
    let rec = recorder();
    let c = client_for(
        &server,
        ClientOptions {
            request_timeout: Duration::from_millis(300),
            observer: Some(rec.clone()),
            ..fast_options()
        },
    );
    c.issue_token(ID, &[Scope::Voip], None).await.unwrap();
    assert_eq!(server.count(), 4);
    assert_eq!(rec.outcomes(), ["500", "network", "timeout", "200"]);
    // Every attempt is signed afresh but carries the same client request id.
    let ids: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("x-ms-client-request-id").unwrap().to_string())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
}

#[tokio::test]
async fn a_client_without_retries_makes_exactly_one_request_per_call() {
    let server = FakeServer::start(|_, _| Reply::status(500)).await;
    let c = client_for(&server, fast_options()).without_retries();
    let err = c.issue_token(ID, &[Scope::Voip], None).await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn retries_stop_after_max_retries_with_the_last_error() {
    let server = FakeServer::start(|_, _| Reply::status(503)).await;
    let c = client_for(
        &server,
        ClientOptions {
            max_retries: 2,
            ..fast_options()
        },
    );
    let err = c.delete_identity(ID).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(err.is_transient());
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn ga_create_is_not_retried_after_a_server_error() {
    for status in [500, 502, 503, 504] {
        let server = FakeServer::start(move |_, _| Reply::status(status)).await;
        let c = client_for(&server, fast_options());
        let err = c.create_identity(CreateIdentity::new()).await.unwrap_err();
        assert_eq!(err.status(), Some(status));
        assert!(
            err.is_transient(),
            "transient for the caller, yet not retried here"
        );
        assert_eq!(
            server.count(),
            1,
            "a retry after {status} could create a second identity"
        );
    }
}

#[tokio::test]
async fn ga_create_is_not_retried_after_the_connection_drops_mid_request() {
    let server = FakeServer::start(|_, _| Reply::Drop).await;
    let c = client_for(&server, fast_options());
    let err = c
        .create_identity(CreateIdentity::new().with_token(vec![Scope::Chat], None))
        .await
        .unwrap_err();
    assert!(matches!(err, AcsError::Transport { .. }), "{err:?}");
    assert_eq!(err.category(), "network");
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn ga_create_is_not_retried_after_a_timeout() {
    let server = FakeServer::start(|_, _| Reply::Hang).await;
    let c = client_for(
        &server,
        ClientOptions {
            request_timeout: Duration::from_millis(300),
            ..fast_options()
        },
    );
    let err = c.create_identity(CreateIdentity::new()).await.unwrap_err();
    assert!(matches!(err, AcsError::Timeout { .. }), "{err:?}");
    assert_eq!(err.category(), "timeout");
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn ga_create_is_retried_after_429() {
    let server = FakeServer::start(|n, _| match n {
        0 | 1 => throttled().with_header("retry-after-ms", "10"),
        _ => Reply::json(201, created_body(ID, None)),
    })
    .await;
    let c = client_for(&server, fast_options());
    let created = c.create_identity(CreateIdentity::new()).await.unwrap();
    assert!(created.created);
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn ga_create_is_retried_after_connection_refused_until_the_service_listens() {
    // Reserve a port, then free it: connecting to it is refused until the test listens again.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let rec = recorder();
    let (tx, mut refused) = tokio::sync::mpsc::unbounded_channel();
    *rec.tx.lock().unwrap() = Some(tx);
    let c = AcsClient::new(
        conn(&format!("http://{addr}"), KEY),
        ClientOptions {
            max_retries: 50,
            retry_base_delay: Duration::from_millis(20),
            retry_max_delay: Duration::from_millis(50),
            observer: Some(rec.clone()),
            ..fast_options()
        },
    )
    .unwrap();
    let serve_after_first_refusal = async {
        assert_eq!(refused.recv().await.as_deref(), Some("network"));
        let listener = TcpListener::bind(addr).await.unwrap();
        FakeServer::start_on(listener, |_, _| Reply::json(201, created_body(ID, None)))
    };
    let (created, server) = tokio::join!(
        c.create_identity(CreateIdentity::new()),
        serve_after_first_refusal
    );
    assert!(created.unwrap().created);
    assert_eq!(server.count(), 1);
    let outcomes = rec.outcomes();
    assert_eq!(outcomes.last().map(String::as_str), Some("201"));
    assert!(
        outcomes[..outcomes.len() - 1]
            .iter()
            .all(|o| o == "network"),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_transient_network_when_retries_run_out() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let c = AcsClient::new(
        conn(&format!("http://{addr}"), KEY),
        ClientOptions {
            max_retries: 0,
            ..fast_options()
        },
    )
    .unwrap();
    let err = c.revoke_tokens(ID).await.unwrap_err();
    assert!(
        matches!(
            err,
            AcsError::Connect {
                timed_out: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.category(), "network");
    assert!(err.is_transient());
}

#[tokio::test]
async fn preview_create_with_external_id_is_retried_after_a_server_error() {
    let server = FakeServer::start(|n, _| match n {
        0 => Reply::status(500),
        _ => Reply::json(200, json!({"identity": {"id": ID, "externalId": "e"}})),
    })
    .await;
    let c = client_for(&server, preview_options());
    let got = c
        .create_identity(CreateIdentity::new().with_external_id("e"))
        .await
        .unwrap();
    assert!(!got.created);
    assert_eq!(server.count(), 2, "get-or-create is safe to repeat");
}

#[tokio::test]
async fn the_shared_rate_limiter_paces_every_attempt_of_every_client() {
    let server = FakeServer::start(|n, _| match n {
        0 => Reply::status(503),
        _ => Reply::status(204),
    })
    .await;
    let limiter = RateLimiter::new(10.0, 1).unwrap();
    let options = ClientOptions {
        rate_limiter: Some(limiter),
        ..fast_options()
    };
    let a = client_for(&server, options.clone());
    let b = client_for(&server, options);
    let started = Instant::now();
    a.revoke_tokens(ID).await.unwrap(); // two attempts
    b.revoke_tokens(ID).await.unwrap(); // one attempt, same bucket
    assert_eq!(server.count(), 3);
    // Three attempts through a 10/s bucket of burst 1: at least two 100 ms waits.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_observer_sees_every_attempt_with_a_bounded_outcome() {
    let server = FakeServer::start(|n, _| match n {
        0 => throttled().with_header("retry-after-ms", "1"),
        1 => Reply::json(201, created_body(ID, None)),
        _ => Reply::json(
            400,
            json!({"error": {"code": "ValidationError", "message": "m"}}),
        ),
    })
    .await;
    let rec = recorder();
    let c = client_for(
        &server,
        ClientOptions {
            observer: Some(rec.clone()),
            ..fast_options()
        },
    );
    c.create_identity(CreateIdentity::new()).await.unwrap();
    c.issue_token(ID, &[], None).await.unwrap_err();
    let seen = rec.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("create_identity", "429".to_string()),
            ("create_identity", "201".to_string()),
            ("issue_token", "400".to_string()),
        ]
    );
}
