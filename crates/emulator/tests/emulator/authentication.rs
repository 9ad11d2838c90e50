//! HMAC authentication: exact 401 cases, raw request-target verification, both keys.

use std::time::{Duration, SystemTime};

use acs_client::{hmac, AccessKey};
use reqwest::StatusCode;

use super::support::*;

#[tokio::test]
async fn wrong_keys_tampered_bodies_stale_dates_and_wrong_hosts_are_denied() {
    let e = emu().await;
    let target = format!("/identities?api-version={GA}");
    let wrong = AccessKey::from_bytes(vec![42; 64]);
    assert_denied(&e.send_with(&wrong, "POST", &target, "").await);

    let send =
        |date: String, hash: String, auth: String, body: &'static str, host: Option<String>| {
            let mut req = e
                .http
                .post(e.url(&target))
                .header("x-ms-date", date)
                .header("x-ms-content-sha256", hash)
                .header("authorization", auth)
                .body(body);
            if let Some(h) = host {
                req = req.header("host", h);
            }
            async move { decode(req.send().await.unwrap()).await }
        };
    let body = r#"{"createTokenWithScopes": ["chat"]}"#;
    let now = SystemTime::now();
    let good = hmac::sign_request(
        e.key.expose(),
        "POST",
        &target,
        &e.host(),
        body.as_bytes(),
        now,
    );
    let ok = send(
        good.x_ms_date.clone(),
        good.content_sha256.clone(),
        good.authorization.clone(),
        body,
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    // Tampered body: hash and signature are of another body.
    let tampered = send(
        good.x_ms_date.clone(),
        good.content_sha256.clone(),
        good.authorization.clone(),
        r#"{"createTokenWithScopes": ["voip"]}"#,
        None,
    )
    .await;
    assert_denied(&tampered);
    // Body and hash changed together, signature left: still denied.
    let other = r#"{"createTokenWithScopes": ["voip"]}"#;
    let rehash = hmac::content_sha256(other.as_bytes());
    assert_denied(
        &send(
            good.x_ms_date.clone(),
            rehash,
            good.authorization.clone(),
            other,
            None,
        )
        .await,
    );
    // Stale date (signed honestly, but 6 minutes old).
    let stale = hmac::sign_request(
        e.key.expose(),
        "POST",
        &target,
        &e.host(),
        b"",
        now - Duration::from_secs(360),
    );
    assert_denied(
        &send(
            stale.x_ms_date,
            stale.content_sha256,
            stale.authorization,
            "",
            None,
        )
        .await,
    );
    // Signed for another host than the Host header carries.
    let elsewhere = hmac::sign_request(e.key.expose(), "POST", &target, "example.com", b"", now);
    assert_denied(
        &send(
            elsewhere.x_ms_date.clone(),
            elsewhere.content_sha256.clone(),
            elsewhere.authorization.clone(),
            "",
            None,
        )
        .await,
    );
    // ...and the same request verifies when the Host header really is that value.
    let r = send(
        elsewhere.x_ms_date,
        elsewhere.content_sha256,
        elsewhere.authorization,
        "",
        Some("example.com".into()),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "the Host header is used as received"
    );
    // No authorization, another scheme.
    let r = decode(e.http.post(e.url(&target)).send().await.unwrap()).await;
    assert_denied(&r);
    let r = decode(
        e.http
            .post(e.url(&target))
            .header("authorization", "Bearer x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_denied(&r);
    let stats = e.admin("GET", "stats", None).await;
    assert!(
        stats.body["authFailures"].as_u64().unwrap() >= 7,
        "{:?}",
        stats.body
    );
}

#[tokio::test]
async fn percent_encoded_and_literal_colon_targets_both_verify() {
    let e = emu().await;
    let id = e.create().await;
    assert!(id.contains(':'));
    for path_id in [enc(&id), id.clone()] {
        let target = format!("/identities/{path_id}/:issueAccessToken?api-version={GA}");
        let r = e.send("POST", &target, r#"{"scopes": ["voip"]}"#).await;
        assert_eq!(r.status, StatusCode::OK, "{target}: {r:?}");
        // Signing the other spelling than the one sent must fail.
        let other = if path_id.contains("%3A") {
            id.clone()
        } else {
            enc(&id)
        };
        let signed_target = format!("/identities/{other}/:issueAccessToken?api-version={GA}");
        let body = r#"{"scopes": ["voip"]}"#;
        let s = hmac::sign_request(
            e.key.expose(),
            "POST",
            &signed_target,
            &e.host(),
            body.as_bytes(),
            SystemTime::now(),
        );
        let r = decode(
            e.http
                .post(e.url(&target))
                .header("x-ms-date", s.x_ms_date)
                .header("x-ms-content-sha256", s.content_sha256)
                .header("authorization", s.authorization)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_denied(&r);
    }
}

#[tokio::test]
async fn the_secondary_key_authenticates_too() {
    let e = emu().await;
    let secondary = e.emu.access_keys()[1].clone();
    assert_ne!(secondary, e.key);
    let r = e
        .send_with(
            &secondary,
            "POST",
            &format!("/identities?api-version={GA}"),
            r#"{"createTokenWithScopes": ["chat"]}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let v = e
        .validate(r.body["accessToken"]["token"].as_str().unwrap())
        .await;
    assert_eq!(v["keySlot"], "secondary");
}
