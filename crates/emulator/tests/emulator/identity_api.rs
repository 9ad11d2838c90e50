//! The Identity surface: GA lifecycle and shapes, validation errors, routing errors, identity
//! lookups, the preview externalId surface, the legacy surface and the Teams exchange.

use acs_client::AccessKey;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::support::*;

#[tokio::test]
async fn the_ga_lifecycle_round_trips_over_tls_with_the_service_shapes() {
    let e = emu().await;
    let r = e
        .send(
            "POST",
            &format!("/identities?api-version={GA}"),
            r#"{"createTokenWithScopes": ["chat", "voip"], "expiresInMinutes": 60}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(r.headers["x-ms-client-request-id"], "req-123");
    assert!(r.headers["api-supported-versions"]
        .to_str()
        .unwrap()
        .contains("2026-09-23"));
    assert!(r.headers.contains_key("ms-cv"));
    let id = r.body["identity"]["id"].as_str().unwrap().to_string();
    let prefix = format!("8:acs:{}_", e.emu.resource_id());
    assert!(id.starts_with(&prefix), "{id}");
    let expires_on = r.body["accessToken"]["expiresOn"].as_str().unwrap();
    let re_shape = expires_on.len() == "2022-11-16T09:48:02.7233445+00:00".len()
        && expires_on.ends_with("+00:00")
        && expires_on.as_bytes()[19] == b'.';
    assert!(re_shape, "{expires_on}");
    let expires: jiff::Timestamp = expires_on.parse().unwrap();
    let minutes = expires.duration_since(jiff::Timestamp::now()).as_secs() / 60;
    assert!((58..=60).contains(&minutes), "{minutes}");

    let r = e
        .send("POST", &format!("/identities?api-version={GA}"), "")
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body.get("accessToken").is_none());

    let r = e
        .send(
            "POST",
            &format!("/identities/{}/:issueAccessToken?api-version={GA}", enc(&id)),
            r#"{"scopes": ["chat", "voip", "chat.join", "chat.join.limited", "voip.join"], "expiresInMinutes": null}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let token = r.body["token"].as_str().unwrap();
    let expires: jiff::Timestamp = r.body["expiresOn"].as_str().unwrap().parse().unwrap();
    assert!(expires.duration_since(jiff::Timestamp::now()).as_secs() >= 23 * 3600);
    assert_eq!(e.validate(token).await["valid"], true);

    let r = e
        .send(
            "POST",
            &format!(
                "/identities/{}/:revokeAccessTokens?api-version={GA}",
                enc(&id)
            ),
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.body, Value::Null);
    let r = e
        .send(
            "DELETE",
            &format!("/identities/{}?api-version={GA}", enc(&id)),
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    e.emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn validation_errors_have_the_service_codes_targets_and_messages() {
    let e = emu().await;
    let id = e.create().await;
    let issue = format!(
        "/identities/{}/:issueAccessToken?api-version={GA}",
        enc(&id)
    );
    let cases = [
        (
            r#"{"scopes": ["voip"], "expiresInMinutes": 59}"#,
            "ExpiresInMinutes",
            "ExpiresInMinutes value 59 is invalid. Value must be within the [60, 1440] interval.",
        ),
        (
            r#"{"scopes": ["voip"], "expiresInMinutes": 1441}"#,
            "ExpiresInMinutes",
            "ExpiresInMinutes value 1441 is invalid. Value must be within the [60, 1440] interval.",
        ),
        (
            r#"{"scopes": []}"#,
            "scopes",
            "Invalid scopes - Scopes field is required.",
        ),
        (
            r#"{"scopes": null}"#,
            "Scopes",
            "Scopes: The Scopes field is required.",
        ),
        (r#"{}"#, "Scopes", "Scopes: The Scopes field is required."),
        (
            r#"{"scopes": ["pstn"]}"#,
            "scopes",
            "Invalid scopes - Scope 'pstn' is not supported.",
        ),
    ];
    for (body, target, message) in cases {
        let r = e.send("POST", &issue, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            r.body,
            json!({"error": {"code": "ValidationError", "message": message, "target": target}}),
            "{body}"
        );
    }
    let r = e
        .send(
            "POST",
            &format!("/identities?api-version={GA}"),
            r#"{"createTokenWithScopes": ["chat"], "expiresInMinutes": 1441}"#,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "ValidationError");
    assert_eq!(r.body["error"]["target"], "ExpiresInMinutes");

    // The join scopes exist from 2023-10-01; expiresInMinutes from 2022-10-01.
    let old = format!(
        "/identities/{}/:issueAccessToken?api-version=2022-10-01",
        enc(&id)
    );
    let r = e.send("POST", &old, r#"{"scopes": ["chat.join"]}"#).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "ValidationError");
    let oldest = format!(
        "/identities/{}/:issueAccessToken?api-version=2021-03-07",
        enc(&id)
    );
    let r = e
        .send(
            "POST",
            &oldest,
            r#"{"scopes": ["voip"], "expiresInMinutes": 5}"#,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "expiresInMinutes is not part of 2021-03-07"
    );

    let r = e.send("POST", &issue, r#"{"scopes": ["voip"]"#).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "BadRequest");
    let r = e.send("POST", &issue, "[1]").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "BadRequest");
}

#[tokio::test]
async fn unknown_routes_methods_and_api_versions_are_4xx_with_error_bodies() {
    let e = emu().await;
    let id = e.create().await;
    let cases = [
        (
            "POST",
            "/nothing?api-version=2023-10-01".to_string(),
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            "GET",
            format!("/identities?api-version={GA}"),
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
        ),
        (
            "POST",
            "/identities".to_string(),
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
        ),
        (
            "POST",
            "/identities?api-version=2019-01-01".to_string(),
            StatusCode::BAD_REQUEST,
            "UnsupportedApiVersion",
        ),
        (
            "GET",
            format!("/identities/{}?api-version={GA}", enc(&id)),
            StatusCode::BAD_REQUEST,
            "UnsupportedApiVersion",
        ),
        (
            "POST",
            format!("/identities/{}/token?api-version={GA}", enc(&id)),
            StatusCode::BAD_REQUEST,
            "UnsupportedApiVersion",
        ),
    ];
    for (method, target, status, code) in cases {
        let r = e.send(method, &target, "").await;
        assert_error(&r, status, code);
        assert_eq!(r.headers["content-type"], "application/json");
    }
    // Authentication comes first, as at the gateway.
    let wrong = AccessKey::from_bytes(vec![1; 64]);
    assert_denied(
        &e.send_with(&wrong, "POST", "/nothing?api-version=2023-10-01", "")
            .await,
    );
}

#[tokio::test]
async fn foreign_unknown_malformed_and_deleted_identities_are_refused() {
    let e = emu().await;
    let foreign = "8:acs:2dee53b4-368b-45b4-ab52-8493fb117652_00000005-14a2-493b-8a72-5a3a0d000081";
    for target in [
        format!(
            "/identities/{}/:issueAccessToken?api-version={GA}",
            enc(foreign)
        ),
        format!(
            "/identities/{}/:revokeAccessTokens?api-version={GA}",
            enc(foreign)
        ),
        format!("/identities/{}?api-version={GA}", enc(foreign)),
    ] {
        let method = if target.contains("/:") {
            "POST"
        } else {
            "DELETE"
        };
        let r = e.send(method, &target, r#"{"scopes": ["chat"]}"#).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.body,
            json!({"error": {"code": "IdentityNotOwned", "message": "Provided identity doesn't belong to the resource."}})
        );
    }
    let unknown = format!(
        "8:acs:{}_00000000-0000-0000-0000-000000000000",
        e.emu.resource_id()
    );
    let r = e
        .send(
            "DELETE",
            &format!("/identities/{}?api-version={GA}", enc(&unknown)),
            "",
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "IdentityNotFound");
    let r = e
        .send(
            "DELETE",
            &format!("/identities/not-an-id?api-version={GA}"),
            "",
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "ValidationError");

    let id = e.create().await;
    let token = e.issue(&id).await;
    let r = e
        .send(
            "DELETE",
            &format!("/identities/{}?api-version={GA}", enc(&id)),
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    for (method, target) in [
        (
            "POST",
            format!(
                "/identities/{}/:issueAccessToken?api-version={GA}",
                enc(&id)
            ),
        ),
        (
            "POST",
            format!(
                "/identities/{}/:revokeAccessTokens?api-version={GA}",
                enc(&id)
            ),
        ),
        (
            "DELETE",
            format!("/identities/{}?api-version={GA}", enc(&id)),
        ),
    ] {
        let r = e.send(method, &target, r#"{"scopes": ["chat"]}"#).await;
        assert_error(&r, StatusCode::NOT_FOUND, "IdentityNotFound");
    }
    let v = e.validate(&token).await;
    assert_eq!(v["valid"], false);
    assert_eq!(v["reason"], "identityDeleted");
    let listed = e.admin("GET", "identities", None).await;
    let entry = listed.body["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["deleted"], true);
    assert_eq!(entry["externalId"], Value::Null);
}

#[tokio::test]
async fn preview_external_ids_are_get_or_create_and_get_identity_reports_them() {
    let e = emu().await;
    let create = format!("/identities?api-version={PREVIEW}");
    let first = e.send("POST", &create, r#"{"externalId": "alice"}"#).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.body["identity"]["externalId"], "alice");
    let id = first.body["identity"]["id"].as_str().unwrap().to_string();
    let second = e
        .send(
            "POST",
            &create,
            r#"{"externalId": "alice", "createTokenWithScopes": ["chat"]}"#,
        )
        .await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body["identity"]["id"], id.as_str());
    assert!(second.body["accessToken"]["token"].is_string());

    let got = e
        .send(
            "GET",
            &format!("/identities/{}?api-version={PREVIEW}", enc(&id)),
            "",
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["id"], id.as_str());
    assert_eq!(got.body["externalId"], "alice");
    assert!(got.body["lastTokenIssuedAt"]
        .as_str()
        .unwrap()
        .ends_with("+00:00"));

    let r = e.send("POST", &create, r#"{"externalId": ""}"#).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "ValidationError");
    assert_eq!(r.body["error"]["target"], "externalId");

    // GA api-versions ignore externalId: always a new identity.
    let ga = e
        .send(
            "POST",
            &format!("/identities?api-version={GA}"),
            r#"{"externalId": "alice"}"#,
        )
        .await;
    assert_eq!(ga.status, StatusCode::CREATED);
    assert_ne!(ga.body["identity"]["id"], id.as_str());

    // A deleted identity releases its externalId.
    e.send(
        "DELETE",
        &format!("/identities/{}?api-version={PREVIEW}", enc(&id)),
        "",
    )
    .await;
    let got = e
        .send(
            "GET",
            &format!("/identities/{}?api-version={PREVIEW}", enc(&id)),
            "",
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "IdentityNotFound");
    let again = e.send("POST", &create, r#"{"externalId": "alice"}"#).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_ne!(again.body["identity"]["id"], id.as_str());
}

#[tokio::test]
async fn the_legacy_surface_round_trips_with_date_signing() {
    let e = emu().await;
    let r = e
        .send_legacy("POST", &format!("/identities?api-version={LEGACY}"), "")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body.as_object().unwrap().len(), 1);
    let token_target = format!("/identities/{}/token?api-version={LEGACY}", enc(&id));
    let r = e
        .send_legacy("POST", &token_target, r#"{"scopes": ["chat"]}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["id"], id.as_str());
    let first = r.body["token"].as_str().unwrap().to_string();
    assert!(r.body["expiresOn"].as_str().unwrap().ends_with("+00:00"));

    let patch = format!("/identities/{}?api-version={LEGACY}", enc(&id));
    let r = e.send_legacy("PATCH", &patch, "{}").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(e.validate(&first).await["reason"], "revoked");

    // tokensValidFrom revokes by instant: a token from before it dies, one after lives.
    let second = e
        .send_legacy("POST", &token_target, r#"{"scopes": ["pstn"]}"#)
        .await;
    let second = second.body["token"].as_str().unwrap().to_string();
    let cut = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1);
    let body = format!(r#"{{"tokensValidFrom": "{cut}"}}"#);
    assert_eq!(
        e.send_legacy("PATCH", &patch, &body).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(e.validate(&second).await["reason"], "revoked");
    let third = loop {
        let t = e
            .send_legacy("POST", &token_target, r#"{"scopes": ["chat"]}"#)
            .await;
        let t = t.body["token"].as_str().unwrap().to_string();
        if e.validate(&t).await["valid"] == true {
            break t;
        }
        assert!(jiff::Timestamp::now() < cut + jiff::SignedDuration::from_secs(5));
    };
    assert!(!third.is_empty());
    let r = e
        .send_legacy("PATCH", &patch, r#"{"tokensValidFrom": "yesterday"}"#)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "ValidationError");

    let r = e.send_legacy("DELETE", &patch, "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = e
        .send_legacy("POST", &token_target, r#"{"scopes": ["chat"]}"#)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "IdentityNotFound");
}

#[tokio::test]
async fn teams_exchange_checks_its_body_then_refuses_the_entra_token() {
    let e = emu().await;
    let target = format!("/teamsUser/:exchangeAccessToken?api-version={GA}");
    let r = e
        .send(
            "POST",
            &target,
            r#"{"token": "aad-token", "appId": "client-id", "userId": "object-id"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.body,
        json!({"error": {"code": "InvalidAccessToken", "message": "Provided access token is not valid."}})
    );
    let r = e.send("POST", &target, r#"{"token": "aad-token"}"#).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "ValidationError");
    // An empty token is an invalid token, not a missing one: 401 as for any other.
    let r = e
        .send(
            "POST",
            &target,
            r#"{"token": "", "appId": "client-id", "userId": "object-id"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.body,
        json!({"error": {"code": "InvalidAccessToken", "message": "Provided access token is not valid."}})
    );
    // A missing token is still a validation error.
    let r = e
        .send(
            "POST",
            &target,
            r#"{"appId": "client-id", "userId": "object-id"}"#,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "ValidationError");
    assert_eq!(r.body["error"]["target"], "Token");
}
