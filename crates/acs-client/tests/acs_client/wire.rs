//! What the client puts on the wire and how it reads answers, checked by a scripted server.

use acs_client::connection::AccessKey;
use acs_client::{hmac, AcsClient, AcsError, ApiMode, ClientOptions, CreateIdentity, Scope};
use serde_json::json;

use crate::fake::{FakeServer, Recorded, Reply, TestCa};
use crate::{client_for, conn, created_body, fast_options, preview_options, token_body, ID, KEY};

/// Verifies a request exactly as the service does: raw request-target, Host header as
/// received, body hash recomputed, signature checked.
fn assert_verifies(r: &Recorded) {
    let key = AccessKey::from_base64(KEY).unwrap();
    let auth = hmac::parse_authorization(r.header("authorization").unwrap()).unwrap();
    assert_eq!(
        auth.signed_headers,
        ["x-ms-date", "host", "x-ms-content-sha256"]
    );
    let hash = r.header("x-ms-content-sha256").unwrap();
    assert_eq!(
        hmac::content_sha256(&r.body),
        hash,
        "{} {}",
        r.method,
        r.target
    );
    let sts = hmac::string_to_sign(
        &r.method,
        &r.target,
        &[
            r.header("x-ms-date").unwrap(),
            r.header("host").unwrap(),
            hash,
        ],
    );
    assert!(
        hmac::verify(key.expose(), &sts, &auth.signature),
        "{} {} does not verify",
        r.method,
        r.target
    );
    let date = httpdate::parse_http_date(r.header("x-ms-date").unwrap()).unwrap();
    let skew = date
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_else(|e| e.duration());
    assert!(skew.as_secs() < 60, "x-ms-date is current");
}

fn assert_sdk_headers(r: &Recorded, json_body: bool) {
    assert_eq!(r.header("accept"), Some("application/json"));
    for name in ["content-length", "content-type", "host", "authorization"] {
        let n = r
            .headers
            .iter()
            .filter(|(h, _)| h.eq_ignore_ascii_case(name))
            .count();
        assert!(n <= 1, "{name} sent {n} times");
    }
    assert_eq!(r.header("x-ms-return-client-request-id"), Some("true"));
    let id = r.header("x-ms-client-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let ua = r.header("user-agent").unwrap();
    assert!(ua.starts_with("acs-identity-operator/"), "{ua}");
    assert_eq!(
        r.header("content-type"),
        json_body.then_some("application/json"),
        "{} {}",
        r.method,
        r.target
    );
    assert_eq!(
        r.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(r.body.len()).filter(|_| r.method != "GET"),
        "{} {}",
        r.method,
        r.target
    );
}

#[tokio::test]
async fn every_operation_sends_the_sdk_headers_and_a_signature_the_service_can_verify() {
    let token = crate::fake_token();
    let t = token.clone();
    let server = FakeServer::start(move |_, r| match (r.method.as_str(), r.target.as_str()) {
        ("POST", t2) if t2.starts_with("/identities?") => {
            Reply::json(201, created_body(ID, Some(&t)))
        }
        ("POST", t2) if t2.contains("/:issueAccessToken") => Reply::json(200, token_body(&t)),
        ("POST", _) | ("DELETE", _) => Reply::status(204),
        ("GET", _) => Reply::json(200, json!({"id": ID, "externalId": "ext-1"})),
        _ => Reply::status(500),
    })
    .await;
    let ga = client_for(&server, fast_options());
    let preview = client_for(&server, preview_options());

    let created = ga
        .create_identity(CreateIdentity::new().with_token(vec![Scope::Chat, Scope::Voip], Some(60)))
        .await
        .unwrap();
    assert!(created.created);
    assert_eq!(created.identity.id, ID);
    assert_eq!(created.access_token.unwrap().token.expose(), token);
    ga.create_identity(CreateIdentity::new()).await.unwrap();
    let issued = ga.issue_token(ID, &[Scope::Voip], Some(60)).await.unwrap();
    assert_eq!(issued.token.expose(), token);
    assert_eq!(issued.expires_on, "2025-01-03T03:04:05.0000000+00:00");
    assert!(issued.expires_at().is_some());
    ga.revoke_tokens(ID).await.unwrap();
    ga.delete_identity(ID).await.unwrap();
    let got = preview.get_identity(ID).await.unwrap();
    assert_eq!(got.external_id.as_deref(), Some("ext-1"));

    let rs = server.requests();
    let enc = "8%3Aacs%3A2dee53b4-368b-45b4-ab52-8493fb117652_00000005-14a2-493b-8a72-5a3a0d000081";
    let expected = [
        (
            "POST",
            "/identities?api-version=2023-10-01".to_string(),
            r#"{"createTokenWithScopes": ["chat", "voip"], "expiresInMinutes": 60}"#,
            true,
        ),
        (
            "POST",
            "/identities?api-version=2023-10-01".to_string(),
            "",
            true,
        ),
        (
            "POST",
            format!("/identities/{enc}/:issueAccessToken?api-version=2023-10-01"),
            r#"{"scopes": ["voip"], "expiresInMinutes": 60}"#,
            true,
        ),
        (
            "POST",
            format!("/identities/{enc}/:revokeAccessTokens?api-version=2023-10-01"),
            "",
            false,
        ),
        (
            "DELETE",
            format!("/identities/{enc}?api-version=2023-10-01"),
            "",
            false,
        ),
        (
            "GET",
            format!("/identities/{enc}?api-version=2025-04-01-preview"),
            "",
            false,
        ),
    ];
    assert_eq!(rs.len(), expected.len());
    for (r, (method, target, body, json_body)) in rs.iter().zip(expected) {
        assert_eq!(r.method, method);
        assert_eq!(r.target, target);
        assert_eq!(String::from_utf8(r.body.clone()).unwrap(), body);
        assert_eq!(r.header("host").unwrap(), server.addr.to_string());
        assert_sdk_headers(r, json_body);
        assert_verifies(r);
    }
}

#[tokio::test]
async fn preview_create_with_external_id_reports_whether_it_created() {
    let server = FakeServer::start(|n, _| {
        let body = json!({"identity": {"id": ID, "externalId": "ext-7"}});
        Reply::json(if n == 0 { 201 } else { 200 }, body)
    })
    .await;
    let c = client_for(&server, preview_options());
    let first = c
        .create_identity(CreateIdentity::new().with_external_id("ext-7"))
        .await
        .unwrap();
    let second = c
        .create_identity(CreateIdentity::new().with_external_id("ext-7"))
        .await
        .unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.identity, second.identity);
    let rs = server.requests();
    assert_eq!(rs[0].target, "/identities?api-version=2025-04-01-preview");
    assert_eq!(
        String::from_utf8(rs[0].body.clone()).unwrap(),
        r#"{"externalId": "ext-7"}"#
    );
}

#[tokio::test]
async fn preview_only_calls_in_ga_mode_fail_without_sending_anything() {
    let server = FakeServer::start(|_, _| Reply::status(500)).await;
    let c = client_for(&server, fast_options());
    let err = c.get_identity(ID).await.unwrap_err();
    assert!(matches!(err, AcsError::RequiresPreview { .. }), "{err:?}");
    let err = c
        .create_identity(CreateIdentity::new().with_external_id("x"))
        .await
        .unwrap_err();
    assert_eq!(err.category(), "unsupported");
    assert!(!err.is_transient());
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn service_errors_surface_code_target_and_classification() {
    let server = FakeServer::start(|n, _| match n {
        0 => Reply::json(
            400,
            json!({"error": {"code": "ValidationError", "message": "ExpiresInMinutes value 1441 is invalid. Value must be within the [60, 1440] interval.", "target": "ExpiresInMinutes"}}),
        ),
        1 => Reply::json(401, json!({"error": {"code": "Denied", "message": "Denied by the resource provider."}})),
        2 => Reply::json(401, json!({"error": {"code": "IdentityNotOwned", "message": "Provided identity doesn't belong to the resource."}})),
        3 => Reply::json(404, json!({"error": {"code": "IdentityNotFound", "message": "gone"}})),
        _ => Reply::Respond {
            status: 409,
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: b"<html>conflict</html>".to_vec(),
        },
    })
    .await;
    let c = client_for(&server, fast_options());

    let bounds = c
        .issue_token(ID, &[Scope::Chat], Some(1441))
        .await
        .unwrap_err();
    assert_eq!(bounds.status(), Some(400));
    assert_eq!(bounds.code(), Some("ValidationError"));
    assert_eq!(bounds.target(), Some("ExpiresInMinutes"));
    assert_eq!(bounds.category(), "validation");
    assert!(bounds.to_string().contains("[60, 1440]"), "{bounds}");

    let denied = c.revoke_tokens(ID).await.unwrap_err();
    assert_eq!(denied.category(), "unauthorized");
    assert!(!denied.is_transient());

    let not_owned = c.delete_identity(ID).await.unwrap_err();
    assert_eq!(not_owned.category(), "identity_not_owned");

    let missing = c.issue_token(ID, &[Scope::Chat], None).await.unwrap_err();
    assert!(missing.is_not_found());
    assert_eq!(missing.category(), "not_found");

    let conflict = c.revoke_tokens(ID).await.unwrap_err();
    assert_eq!(conflict.status(), Some(409));
    assert_eq!(conflict.code(), None, "a non-json body is read leniently");
    assert!(!conflict.to_string().contains("html"));

    assert_eq!(server.count(), 5, "permanent errors are never retried");
}

#[tokio::test]
async fn a_success_body_of_the_wrong_shape_is_a_decode_error_that_does_not_quote_it() {
    let server = FakeServer::start(|_, _| {
        Reply::json(200, json!({"token": 12, "expiresOn": "eyJsecret-ish"}))
    })
    .await;
    let c = client_for(&server, fast_options());
    let err = c.issue_token(ID, &[Scope::Chat], None).await.unwrap_err();
    assert!(
        matches!(err, AcsError::Decode { status: 200, .. }),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("eyJ"));
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn a_custom_ca_is_trusted_in_addition_to_or_instead_of_web_roots() {
    let ca = TestCa::new();
    let server = FakeServer::start_tls(&ca, |_, _| Reply::status(204)).await;
    for trust_web_roots in [true, false] {
        let c = client_for(
            &server,
            ClientOptions {
                ca_pem: Some(ca.ca_pem.clone().into_bytes()),
                trust_web_roots,
                ..fast_options()
            },
        );
        assert!(c.endpoint().starts_with("https://"));
        c.revoke_tokens(ID).await.unwrap();
    }
    assert_eq!(server.count(), 2);
    assert_verifies(&server.requests()[0]);
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_permanent_tls_error() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let server = FakeServer::start_tls(&ca, |_, _| Reply::status(204)).await;
    for ca_pem in [None, Some(other.ca_pem.into_bytes())] {
        let c = client_for(
            &server,
            ClientOptions {
                ca_pem,
                ..fast_options()
            },
        );
        let err = c.revoke_tokens(ID).await.unwrap_err();
        assert!(matches!(err, AcsError::Tls { .. }), "{err:?}");
        assert_eq!(err.category(), "tls");
        assert!(
            !err.is_transient(),
            "a bad certificate does not heal by retrying"
        );
    }
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn the_client_is_built_from_the_endpoint_without_network_access() {
    let c = AcsClient::new(
        conn("https://res.communication.azure.com", KEY),
        ClientOptions {
            api_mode: ApiMode::Preview,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert_eq!(c.endpoint(), "https://res.communication.azure.com");
    assert_eq!(c.resource_host(), "res.communication.azure.com");
    assert_eq!(c.api_mode(), ApiMode::Preview);
}
