//! Tokens as a downstream service judges them: revocation order, expiry, signatures, key
//! regeneration, and a payload segment the Python SDK can decode.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::support::*;

#[tokio::test]
async fn revocation_is_ordered_by_sequence_so_the_token_right_after_survives() {
    let e = emu().await;
    let id = e.create().await;
    for _ in 0..20 {
        let before = e.issue(&id).await;
        let r = e
            .send(
                "POST",
                &format!("/identities/{id}/:revokeAccessTokens?api-version={GA}"),
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let after = e.issue(&id).await;
        let v = e.validate(&before).await;
        assert_eq!(v["valid"], false);
        assert_eq!(v["reason"], "revoked");
        let v = e.validate(&after).await;
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(v["reason"], Value::Null);
    }
}

#[tokio::test]
async fn validate_reports_expired_bad_signature_and_malformed_tokens() {
    let e = emu().await;
    let id = e.create().await;
    let token = e.issue(&id).await;

    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[2] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0u8; 32]);
    let v = e.validate(&parts.join(".")).await;
    assert_eq!(
        (v["valid"].clone(), v["reason"].clone()),
        (json!(false), json!("badSignature"))
    );
    let v = e.validate("not-a-jwt").await;
    assert_eq!(v["reason"], "malformed");

    let r = e
        .admin("PUT", "config", Some(json!({"tokenLifetimeSeconds": 1})))
        .await;
    assert_eq!(r.body["tokenLifetimeSeconds"], 1);
    let short = e
        .send(
            "POST",
            &format!(
                "/identities/{}/:issueAccessToken?api-version={GA}",
                enc(&id)
            ),
            r#"{"scopes": ["chat"], "expiresInMinutes": 1440}"#,
        )
        .await;
    let expires: jiff::Timestamp = short.body["expiresOn"].as_str().unwrap().parse().unwrap();
    assert!(expires <= jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1));
    let short = short.body["token"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = e.validate(&short).await;
        if v["valid"] == false {
            assert_eq!(v["reason"], "expired");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "token never expired");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        e.validate(&token).await["valid"],
        true,
        "the long token is unaffected"
    );
    let r = e
        .admin("PUT", "config", Some(json!({"tokenLifetimeSeconds": null})))
        .await;
    assert_eq!(r.body["tokenLifetimeSeconds"], Value::Null);
    let r = e.admin("POST", "validate", Some(json!({"nope": 1}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "BadRequest");
}

#[tokio::test]
async fn regenerating_a_key_rejects_it_and_invalidates_its_tokens() {
    let e = emu().await;
    let id = e.create().await;
    let primary_token = e.issue(&id).await;
    let secondary = e.emu.access_keys()[1].clone();
    let r = e
        .send_with(
            &secondary,
            "POST",
            &format!("/identities/{id}/:issueAccessToken?api-version={GA}"),
            r#"{"scopes": ["voip"]}"#,
        )
        .await;
    let secondary_token = r.body["token"].as_str().unwrap().to_string();

    let r = e
        .admin("POST", "keys/regenerate", Some(json!({"key": "primary"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["generation"], 1);
    let conn = r.body["connectionString"].as_str().unwrap();
    let parsed = acs_client::ConnectionString::parse(conn).unwrap();
    assert_eq!(parsed.endpoint, e.emu.endpoint());
    assert_eq!(e.emu.access_keys()[0], parsed.access_key);
    assert_eq!(e.emu.connection_string(), conn);

    assert_denied(
        &e.send("POST", &format!("/identities?api-version={GA}"), "")
            .await,
    );
    let v = e.validate(&primary_token).await;
    assert_eq!(
        (v["valid"].clone(), v["reason"].clone()),
        (json!(false), json!("keyRegenerated"))
    );
    assert_eq!(e.validate(&secondary_token).await["valid"], true);
    let r = e
        .send_with(
            &parsed.access_key,
            "POST",
            &format!("/identities?api-version={GA}"),
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = e
        .admin("POST", "keys/regenerate", Some(json!({"key": "tertiary"})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "BadRequest");
}

#[tokio::test]
async fn token_payload_segments_never_contain_url_safe_characters() {
    let e = emu_with(no_limits()).await;
    let r = e
        .send(
            "POST",
            &format!("/identities?api-version={PREVIEW}"),
            r#"{"externalId": "~?>~?>~?> tricky", "createTokenWithScopes": ["chat"]}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let mut tokens = vec![r.body["accessToken"]["token"].as_str().unwrap().to_string()];
    let id = e.create().await;
    for i in 0..300 {
        let scopes = [
            "chat",
            "voip",
            "chat.join",
            "chat.join.limited",
            "voip.join",
        ];
        let body = json!({"scopes": &scopes[..1 + i % 5], "expiresInMinutes": 60 + i}).to_string();
        let r = e
            .send(
                "POST",
                &format!(
                    "/identities/{}/:issueAccessToken?api-version={GA}",
                    enc(&id)
                ),
                &body,
            )
            .await;
        tokens.push(r.body["token"].as_str().unwrap().to_string());
    }
    for t in &tokens {
        let payload = t.split('.').nth(1).unwrap();
        assert!(!payload.contains(['-', '_']), "{payload}");
        // Decoded as the Python SDK does: standard base64 with padding appended.
        let padded = format!("{payload}{}", "=".repeat((4 - payload.len() % 4) % 4));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(padded)
            .unwrap();
        let claims: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(claims["exp"].is_i64());
        assert!(claims["skypeid"].as_str().unwrap().starts_with("acs:"));
        let header = t.split('.').next().unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap();
        let header: Value = serde_json::from_slice(&header).unwrap();
        assert!(header["kid"].is_string());
    }
}
