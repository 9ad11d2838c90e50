//! The Entra stand-in's discovery documents (OpenID configuration, keys, instance discovery),
//! `--entra-host`, and its admin routes.

use acs_emulator::EmulatorConfig;
use reqwest::StatusCode;
use serde_json::json;

use super::entra_support::*;
use super::support::*;

#[tokio::test]
async fn discovery_documents_name_the_tenant_and_the_authority() {
    let e = emu().await;
    let a = e.emu.entra_authority();
    assert_eq!(a, e.emu.endpoint(), "without --entra-host, the endpoint");
    let tenant = e.tenant();
    let get = |path: String| {
        let http = e.http.clone();
        async move { decode(http.get(path).send().await.unwrap()).await }
    };
    let doc = get(format!(
        "{a}/{tenant}/v2.0/.well-known/openid-configuration"
    ))
    .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.body["issuer"], format!("{a}/{tenant}/v2.0"));
    assert_eq!(
        doc.body["token_endpoint"],
        format!("{a}/{tenant}/oauth2/v2.0/token")
    );
    assert_eq!(
        doc.body["jwks_uri"],
        format!("{a}/{tenant}/discovery/v2.0/keys")
    );
    assert_eq!(
        doc.body["authorization_endpoint"],
        format!("{a}/{tenant}/oauth2/v2.0/authorize")
    );
    let common = get(format!("{a}/common/v2.0/.well-known/openid-configuration")).await;
    assert_eq!(common.body["issuer"], format!("{a}/{{tenantid}}/v2.0"));
    let unknown = get(format!(
        "{a}/{}/v2.0/.well-known/openid-configuration",
        uuid::Uuid::new_v4()
    ))
    .await;
    assert_aad_error(&unknown, StatusCode::BAD_REQUEST, "invalid_tenant", 90002);

    let keys = get(format!("{a}/{tenant}/discovery/v2.0/keys")).await;
    let key = &keys.body["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["issuer"], format!("{a}/{tenant}/v2.0"));
    let health = e.admin("GET", "health", None).await.body;
    assert_eq!(health["entraKeyId"], key["kid"]);
    assert_eq!(health["entraTenantId"], tenant);

    // Instance discovery, as MSAL asks for it.
    let authorize = format!("{a}/{tenant}/oauth2/v2.0/authorize");
    let instance = decode(
        e.http
            .get(format!("{a}/common/discovery/instance"))
            .query(&[
                ("api-version", "1.1"),
                ("authorization_endpoint", &authorize),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(instance.status, StatusCode::OK);
    assert_eq!(
        instance.body["tenant_discovery_endpoint"],
        format!("{a}/{tenant}/v2.0/.well-known/openid-configuration")
    );
    assert_eq!(instance.body["api-version"], "1.1");
    let host = e.host();
    assert_eq!(instance.body["metadata"][0]["preferred_network"], host);
    assert_eq!(instance.body["metadata"][0]["aliases"], json!([host]));
    let elsewhere = decode(
        e.http
            .get(format!("{a}/common/discovery/instance"))
            .query(&[(
                "authorization_endpoint",
                "https://login.example.org/common/oauth2/v2.0/authorize",
            )])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_aad_error(
        &elsewhere,
        StatusCode::BAD_REQUEST,
        "invalid_instance",
        50049,
    );
}

#[tokio::test]
async fn the_entra_host_is_in_the_certificate_and_names_the_authority() {
    let e = emu_with(EmulatorConfig {
        entra_host: Some("login.emulator.test".into()),
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(e.emu.entra_authority(), "https://login.emulator.test");
    // A client that resolves the name to the emulator verifies the certificate for it.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(e.emu.ca_pem().as_bytes()).unwrap())
        .resolve("login.emulator.test", e.emu.addr)
        .build()
        .unwrap();
    let tenant = e.tenant();
    let port = e.emu.addr.port();
    let doc = decode(
        http.get(format!(
            "https://login.emulator.test:{port}/{tenant}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(
        doc.body["issuer"],
        format!("https://login.emulator.test/{tenant}/v2.0")
    );
    let client = e.secret_client(&["Contributor"]).await;
    let r = decode(
        http.post(format!(
            "https://login.emulator.test:{port}/{tenant}/oauth2/v2.0/token"
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.secret.as_deref().unwrap()),
            ("scope", ACS_SCOPE),
        ])
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let token = r.body["access_token"].as_str().unwrap();
    assert_eq!(
        claims_of(token)["iss"],
        format!("https://login.emulator.test/{tenant}/v2.0")
    );
    // The Identity API, on the emulator's own endpoint, accepts it.
    assert_eq!(e.bearer_create(token).await.status, StatusCode::CREATED);

    let bad = acs_emulator::start(EmulatorConfig {
        entra_host: Some("user@host".into()),
        ..EmulatorConfig::default()
    })
    .await;
    assert!(bad.is_err());
}

#[tokio::test]
async fn admin_routes_register_list_and_refuse_bad_clients() {
    let e = emu().await;
    let r = e
        .admin(
            "POST",
            "entra/clients",
            Some(json!({"displayName": "x", "secret": false, "roles": []})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let mut keys: Vec<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["clientId", "tenantId"],
        "no clientSecret without secret: true"
    );
    for bad in [
        json!({"roles": ["Owner"]}),
        json!({"roles": ["contributor"]}),
        json!({"unknown": 1}),
        json!({"federated": [{"issuer": "", "subject": "s"}]}),
    ] {
        let r = e.admin("POST", "entra/clients", Some(bad.clone())).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "BadRequest");
    }
    let with_secret = e.secret_client(&[OWNER, "Contributor"]).await;
    let list = e.admin("GET", "entra/clients", None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["tenantId"], e.tenant());
    assert_eq!(list.body["clients"].as_array().unwrap().len(), 2);
    let listed = &list.body["clients"][1];
    assert_eq!(listed["hasSecret"], true);
    assert_eq!(listed["roles"], json!(["Contributor", OWNER]));
    assert!(!list
        .body
        .to_string()
        .contains(with_secret.secret.as_deref().unwrap()));

    let missing = uuid::Uuid::new_v4();
    let r = e
        .admin("DELETE", &format!("entra/clients/{missing}"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "NotFound");
    let r = e
        .admin(
            "PUT",
            &format!("entra/clients/{missing}/roles"),
            Some(json!({"roles": []})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "NotFound");
    let r = e
        .admin(
            "PUT",
            &format!("entra/clients/{}/roles", with_secret.client_id),
            Some(json!({"roles": ["Reader"]})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "BadRequest");
    let r = e.admin("PUT", "entra/clients", Some(json!({}))).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed");
    let r = e.admin("GET", "entra/nothing", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "NotFound");
}
