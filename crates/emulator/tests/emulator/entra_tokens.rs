//! The Entra stand-in's token endpoint: the client-credentials grant with a client secret and
//! with a federated client assertion, and Entra's AADSTS errors for each way it can fail.

use acs_emulator::EmulatorConfig;
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::entra_support::*;
use super::oidc_issuer::{self, Issuer};
use super::support::*;

#[tokio::test]
async fn the_secret_grant_issues_an_rs256_token_for_the_acs_resource() {
    let e = emu().await;
    let client = e.secret_client(&["Contributor"]).await;
    let r = e
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", &client.client_id),
            ("client_secret", client.secret.as_deref().unwrap()),
            ("scope", ACS_SCOPE),
        ])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 3600);
    assert_eq!(
        r.headers["cache-control"].to_str().unwrap(),
        "no-store, no-cache"
    );
    let token = r.body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let c = claims_of(token);
    let tenant = e.tenant();
    assert_eq!(c["aud"], "https://communication.azure.com");
    assert_eq!(
        c["iss"],
        format!("{}/{tenant}/v2.0", e.emu.entra_authority())
    );
    assert_eq!(c["tid"], tenant);
    assert_eq!(c["appid"], client.client_id);
    assert_eq!(c["azp"], client.client_id);
    assert_eq!(c["appidacr"], "1");
    assert_eq!(c["idtyp"], "app");
    assert_eq!(c["ver"], "2.0");
    assert_eq!(c["sub"], c["oid"]);
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(c["nbf"], c["iat"]);

    // The key set publishes the key that signed it, and a JWKS validator accepts the token.
    let keys = decode(
        e.http
            .get(format!(
                "{}/{tenant}/discovery/v2.0/keys",
                e.emu.entra_authority()
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(keys.body["keys"][0].clone()).unwrap();
    assert_eq!(jwk.common.key_id, header.kid);
    let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
    validation.set_audience(&["https://communication.azure.com"]);
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    assert!(jsonwebtoken::decode::<Value>(token, &key, &validation).is_ok());

    // The single-slash scope and HTTP Basic client authentication work too.
    let r = e
        .http
        .post(format!(
            "{}/{tenant}/oauth2/v2.0/token",
            e.emu.entra_authority()
        ))
        .basic_auth(&client.client_id, client.secret.as_deref())
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "https://communication.azure.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(decode(r).await.status, StatusCode::OK);

    let stats = e.admin("GET", "stats", None).await.body;
    assert_eq!(stats["entra"]["tokenRequests"]["issued"], 2, "{stats}");
    // The existing counters keep their shape.
    for field in [
        "since",
        "operations",
        "total",
        "throttled",
        "total429",
        "authFailures",
    ] {
        assert!(!stats[field].is_null(), "{field}: {stats}");
    }
}

#[tokio::test]
async fn token_requests_fail_with_the_aadsts_errors_entra_gives() {
    let e = emu().await;
    let client = e.secret_client(&["Contributor"]).await;
    let id = client.client_id.as_str();
    let secret = client.secret.as_deref().unwrap();
    let grant = ("grant_type", "client_credentials");
    let scope = ("scope", ACS_SCOPE);

    let r = e
        .token_request(&[grant, ("client_id", id), ("client_secret", "wrong"), scope])
        .await;
    assert_aad_error(&r, StatusCode::UNAUTHORIZED, "invalid_client", 7000215);
    assert!(
        !r.body.to_string().contains("wrong"),
        "the secret is not echoed"
    );

    let unknown = uuid::Uuid::new_v4().to_string();
    let r = e
        .token_request(&[
            grant,
            ("client_id", &unknown),
            ("client_secret", secret),
            scope,
        ])
        .await;
    assert_aad_error(&r, StatusCode::BAD_REQUEST, "invalid_client", 700016);
    assert!(r.body["error_description"]
        .as_str()
        .unwrap()
        .contains(&unknown));

    let r = e
        .token_request_at(
            &uuid::Uuid::new_v4().to_string(),
            &[grant, ("client_id", id), ("client_secret", secret), scope],
        )
        .await;
    assert_aad_error(&r, StatusCode::BAD_REQUEST, "invalid_request", 90002);

    for other in [
        "https://graph.microsoft.com/.default",
        "https://storage.azure.com/.default",
    ] {
        let r = e
            .token_request(&[
                grant,
                ("client_id", id),
                ("client_secret", secret),
                ("scope", other),
            ])
            .await;
        assert_aad_error(&r, StatusCode::BAD_REQUEST, "invalid_scope", 70011);
    }
    let r = e
        .token_request(&[
            grant,
            ("client_id", id),
            ("client_secret", secret),
            (
                "scope",
                "https://communication.azure.com/user_impersonation",
            ),
        ])
        .await;
    assert_aad_error(&r, StatusCode::BAD_REQUEST, "invalid_scope", 1002012);

    let r = e
        .token_request(&[
            ("grant_type", "password"),
            ("client_id", id),
            ("client_secret", secret),
            scope,
        ])
        .await;
    assert_aad_error(&r, StatusCode::BAD_REQUEST, "unsupported_grant_type", 70003);
    let r = e.token_request(&[("client_id", id), scope]).await;
    assert_aad_error(&r, StatusCode::BAD_REQUEST, "invalid_request", 900144);
    let r = e.token_request(&[grant, ("client_id", id)]).await;
    assert_aad_error(&r, StatusCode::BAD_REQUEST, "invalid_request", 900144);
    let r = e.token_request(&[grant, ("client_id", id), scope]).await;
    assert_aad_error(&r, StatusCode::UNAUTHORIZED, "invalid_client", 7000218);

    // A deleted client is unknown from then on.
    let r = e
        .admin("DELETE", &format!("entra/clients/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = e
        .token_request(&[grant, ("client_id", id), ("client_secret", secret), scope])
        .await;
    assert_aad_error(&r, StatusCode::BAD_REQUEST, "invalid_client", 700016);

    // GET is not a token request.
    let r = decode(
        e.http
            .get(format!(
                "{}/{}/oauth2/v2.0/token",
                e.emu.entra_authority(),
                e.tenant()
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_aad_error(
        &r,
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        900561,
    );

    let stats = e.admin("GET", "stats", None).await.body["entra"].clone();
    assert_eq!(stats["tokenRequests"]["invalid_client"], 4, "{stats}");
    assert_eq!(stats["tokenErrors"]["AADSTS7000215"], 1, "{stats}");
    assert_eq!(stats["tokenErrors"]["AADSTS700016"], 2, "{stats}");
    assert!(stats["tokenRequests"].get("issued").is_none(), "{stats}");
}

async fn federated_emu(issuer: &Issuer) -> Emu {
    emu_with(EmulatorConfig {
        oidc_ca_pems: vec![issuer.ca_pem.clone()],
        ..no_limits()
    })
    .await
}

#[tokio::test]
async fn a_service_account_assertion_is_verified_like_a_federated_credential() {
    let issuer = Issuer::start().await;
    let e = federated_emu(&issuer).await;
    let client = e
        .register(json!({
            "displayName": "workload",
            "federated": [{
                "issuer": issuer.url,
                "subject": "system:serviceaccount:apps:acs",
                "audience": oidc_issuer::EXCHANGE_AUDIENCE,
            }],
            "roles": [OWNER],
        }))
        .await;
    assert!(client.secret.is_none());
    let id = client.client_id.as_str();
    let good = issuer.claims("apps", "acs");

    // ES256, as the test control plane signs; RS256, as AKS signs.
    for assertion in [issuer.sign_es256(&good), issuer.sign_rs256(&good)] {
        let r = e.assertion_request(id, &assertion).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let token = r.body["access_token"].as_str().unwrap();
        assert_eq!(claims_of(token)["appidacr"], "2");
        assert_eq!(e.bearer_create(token).await.status, StatusCode::CREATED);
    }

    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let cases: Vec<(&str, String, u64)> = vec![
        (
            "another issuer",
            issuer.sign_es256(&with("iss", json!("https://elsewhere.test"))),
            700211,
        ),
        (
            "another service account",
            issuer.sign_es256(&with("sub", json!("system:serviceaccount:apps:other"))),
            700213,
        ),
        (
            "another audience",
            issuer.sign_es256(&with("aud", json!(["https://kubernetes.default.svc"]))),
            700212,
        ),
        (
            "expired an hour ago",
            issuer.sign_es256(&{
                let now = jiff::Timestamp::now().as_second();
                let mut c = with("exp", json!(now - 3600));
                c["iat"] = json!(now - 7200);
                c["nbf"] = json!(now - 7200);
                c
            }),
            700024,
        ),
        (
            "not valid before an hour from now",
            issuer.sign_es256(&with(
                "nbf",
                json!(jiff::Timestamp::now().as_second() + 3600),
            )),
            700024,
        ),
        (
            "signed by another key under the issuer's kid",
            oidc_issuer::sign(
                &oidc_issuer::foreign_ec_key(),
                Algorithm::ES256,
                oidc_issuer::EC_KID,
                &good,
            ),
            50013,
        ),
        (
            "signed by a key the issuer does not publish",
            oidc_issuer::sign(
                &oidc_issuer::foreign_ec_key(),
                Algorithm::ES256,
                "unknown-kid",
                &good,
            ),
            50013,
        ),
    ];
    for (what, assertion, code) in cases {
        let r = e.assertion_request(id, &assertion).await;
        assert_aad_error(&r, StatusCode::UNAUTHORIZED, "invalid_client", code);
        assert!(
            !r.body.to_string().contains(&assertion),
            "{what}: the assertion is not echoed"
        );
    }
    let r = e.assertion_request(id, "not-a-jwt").await;
    assert_aad_error(&r, StatusCode::BAD_REQUEST, "invalid_request", 50027);
    let r = e
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_assertion_type", "urn:example:other"),
            ("client_assertion", &issuer.sign_es256(&good)),
            ("scope", ACS_SCOPE),
        ])
        .await;
    assert_aad_error(&r, StatusCode::BAD_REQUEST, "invalid_request", 90011);

    // A client without any federated credential, and an assertion with both credentials.
    let secret_only = e.secret_client(&["Contributor"]).await;
    let r = e
        .assertion_request(&secret_only.client_id, &issuer.sign_es256(&good))
        .await;
    assert_aad_error(&r, StatusCode::UNAUTHORIZED, "invalid_client", 70021);
    let r = e
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", &secret_only.client_id),
            ("client_secret", secret_only.secret.as_deref().unwrap()),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &issuer.sign_es256(&good)),
            ("scope", ACS_SCOPE),
        ])
        .await;
    assert_aad_error(&r, StatusCode::BAD_REQUEST, "invalid_request", 7000218);
}

#[tokio::test]
async fn an_issuer_whose_ca_is_not_trusted_or_that_is_down_fails_with_aadsts50166() {
    let issuer = Issuer::start().await;
    // No --oidc-ca-cert: the issuer's certificate is not trusted.
    let e = emu_with(no_limits()).await;
    let client = e
        .register(json!({
            "federated": [
                {"issuer": issuer.url, "subject": "system:serviceaccount:apps:acs"},
                {"issuer": "https://127.0.0.1:1", "subject": "system:serviceaccount:apps:acs"},
            ],
            "roles": ["Contributor"],
        }))
        .await;
    let assertion = issuer.sign_es256(&issuer.claims("apps", "acs"));
    let r = e.assertion_request(&client.client_id, &assertion).await;
    assert_aad_error(&r, StatusCode::UNAUTHORIZED, "invalid_client", 50166);

    let mut down = issuer.claims("apps", "acs");
    down["iss"] = json!("https://127.0.0.1:1");
    let r = e
        .assertion_request(&client.client_id, &issuer.sign_es256(&down))
        .await;
    assert_aad_error(&r, StatusCode::UNAUTHORIZED, "invalid_client", 50166);
}
