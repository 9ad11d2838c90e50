//! The Identity API with Entra bearer tokens: accepted from a principal holding a data-plane
//! role (checked at every request), 401 `Denied` for bad, expired, foreign or mixed
//! credentials, 403 `AuthorizationFailed` without a role; HMAC unchanged beside it; the tenant
//! kept across restarts; and no secret, assertion or token in the logs.

use std::time::{Duration, SystemTime};

use acs_client::hmac;
use acs_emulator::EmulatorConfig;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::entra_support::*;
use super::oidc_issuer::Issuer;
use super::support::*;

fn assert_forbidden(r: &Reply, client_id: &str) {
    assert_error(r, StatusCode::FORBIDDEN, "AuthorizationFailed");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(client_id),
        "{r:?}"
    );
}

#[tokio::test]
async fn every_identity_operation_works_with_a_bearer_token_of_either_role() {
    let e = emu_with(no_limits()).await;
    for role in ["Contributor", OWNER] {
        let client = e.secret_client(&[role]).await;
        let token = e.secret_token(&client).await;
        let created = e.bearer_create(&token).await;
        assert_eq!(created.status, StatusCode::CREATED, "{role}: {created:?}");
        let id = created.body["identity"]["id"].as_str().unwrap().to_string();
        let acs_token = created.body["accessToken"]["token"].as_str().unwrap();
        let v = e.validate(acs_token).await;
        assert_eq!(v["valid"], true);
        assert_eq!(v["keySlot"], "entra");
        let path = enc(&id);
        let r = e
            .bearer(
                "POST",
                &format!("/identities/{path}/:issueAccessToken?api-version={GA}"),
                &token,
                r#"{"scopes": ["voip"]}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let r = e
            .bearer(
                "GET",
                &format!("/identities/{path}?api-version={PREVIEW}"),
                &token,
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let r = e
            .bearer(
                "POST",
                &format!("/identities/{path}/:revokeAccessTokens?api-version={GA}"),
                &token,
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
        let r = e
            .bearer(
                "POST",
                &format!("/identities?api-version={LEGACY}"),
                &token,
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let r = e
            .bearer(
                "DELETE",
                &format!("/identities/{path}?api-version={GA}"),
                &token,
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    }
    // HMAC keeps working beside it, and a key regeneration leaves Entra-minted tokens valid.
    let id = e.create().await;
    assert!(!e.issue(&id).await.is_empty());
    let client = e.secret_client(&["Contributor"]).await;
    let token = e.secret_token(&client).await;
    let minted = e.bearer_create(&token).await.body["accessToken"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = e
        .admin("POST", "keys/regenerate", Some(json!({"key": "primary"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(e.validate(&minted).await["valid"], true);
    let stats = e.admin("GET", "stats", None).await.body;
    assert!(
        stats["entra"]["bearerRequests"]["accepted"]
            .as_u64()
            .unwrap()
            >= 13,
        "{stats}"
    );
}

#[tokio::test]
async fn a_principal_needs_a_role_now_and_a_deleted_one_has_none() {
    let e = emu().await;
    let client = e.secret_client(&[]).await;
    let token = e.secret_token(&client).await;
    // Entra issues the token; the resource refuses the principal.
    assert_forbidden(&e.bearer_create(&token).await, &client.client_id);

    let roles = format!("entra/clients/{}/roles", client.client_id);
    let r = e
        .admin("PUT", &roles, Some(json!({"roles": ["Contributor"]})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["roles"], json!(["Contributor"]));
    // The same token works as soon as the role is there...
    assert_eq!(e.bearer_create(&token).await.status, StatusCode::CREATED);
    // ...and not once it is removed.
    let r = e.admin("PUT", &roles, Some(json!({"roles": []}))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_forbidden(&e.bearer_create(&token).await, &client.client_id);

    let other = e.secret_client(&[OWNER]).await;
    let other_token = e.secret_token(&other).await;
    assert_eq!(
        e.bearer_create(&other_token).await.status,
        StatusCode::CREATED
    );
    let r = e
        .admin(
            "DELETE",
            &format!("entra/clients/{}", other.client_id),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_forbidden(&e.bearer_create(&other_token).await, &other.client_id);
    // Authorization comes before routing, as at the gateway.
    let r = e
        .bearer("POST", "/nope?api-version=2023-10-01", &other_token, "")
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "AuthorizationFailed");

    let stats = e.admin("GET", "stats", None).await.body;
    assert_eq!(stats["entra"]["bearerRequests"]["forbidden"], 4, "{stats}");
    assert_eq!(stats["operations"]["createIdentity"]["403"], 3, "{stats}");
}

#[tokio::test]
async fn expired_tokens_are_denied() {
    let e = emu_with(EmulatorConfig {
        entra_token_lifetime_seconds: 1,
        ..EmulatorConfig::default()
    })
    .await;
    let client = e.secret_client(&["Contributor"]).await;
    let token = e.secret_token(&client).await;
    let c = claims_of(&token);
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_denied(&e.bearer_create(&token).await);
    // The lifetime is runtime configuration too.
    let r = e
        .admin(
            "PUT",
            "config",
            Some(json!({"entraTokenLifetimeSeconds": 600})),
        )
        .await;
    assert_eq!(r.body["entraTokenLifetimeSeconds"], 600);
    let token = e.secret_token(&client).await;
    assert_eq!(e.bearer_create(&token).await.status, StatusCode::CREATED);
}

/// Signs claims with the emulator's own Entra key, read from its state file, so tokens the
/// token endpoint would never issue (another audience) can be presented.
fn forge(state: &std::path::Path, kid: Option<String>, claims: &Value) -> String {
    let state: Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    let der = STANDARD
        .decode(state["entra"]["signingKey"].as_str().unwrap())
        .unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_der(&der);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid;
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

#[tokio::test]
async fn foreign_malformed_and_mixed_credentials_are_denied() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let e = emu_with(EmulatorConfig {
        state_file: Some(state.clone()),
        ..EmulatorConfig::default()
    })
    .await;
    // Before any token was issued, no bearer can be valid.
    assert_denied(&e.bearer_create("eyJ.eyJ.sig").await);
    let client = e.secret_client(&["Contributor"]).await;
    let token = e.secret_token(&client).await;
    assert_eq!(e.bearer_create(&token).await.status, StatusCode::CREATED);

    // The tenant key signed it, but for another audience: 401.
    e.admin("POST", "stats/reset", None).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // the debounced state write
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid;
    let mut claims = claims_of(&token);
    claims["aud"] = json!("https://graph.microsoft.com");
    assert_denied(&e.bearer_create(&forge(&state, kid.clone(), &claims)).await);
    // The same claims for ACS verify, which shows the audience alone was refused.
    claims["aud"] = json!("https://communication.azure.com/");
    assert_eq!(
        e.bearer_create(&forge(&state, kid.clone(), &claims))
            .await
            .status,
        StatusCode::CREATED
    );

    // A token of another emulator's tenant, a tampered token, garbage.
    let other = emu().await;
    let foreign_client = other.secret_client(&["Contributor"]).await;
    let foreign = other.secret_token(&foreign_client).await;
    assert_eq!(
        other.bearer_create(&foreign).await.status,
        StatusCode::CREATED
    );
    assert_denied(&e.bearer_create(&foreign).await);
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[2] = parts[2].chars().rev().collect();
    assert_denied(&e.bearer_create(&parts.join(".")).await);
    assert_denied(&e.bearer_create("garbage").await);

    // HMAC headers and a bearer token together: 401, though each alone would pass.
    let target = format!("/identities?api-version={GA}");
    let signed = hmac::sign_request(
        e.key.expose(),
        "POST",
        &target,
        &e.host(),
        b"",
        SystemTime::now(),
    );
    let r = decode(
        e.http
            .post(e.url(&target))
            .header("x-ms-date", &signed.x_ms_date)
            .header("x-ms-content-sha256", &signed.content_sha256)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_denied(&r);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.append("authorization", signed.authorization.parse().unwrap());
    headers.append("authorization", format!("Bearer {token}").parse().unwrap());
    let r = decode(
        e.http
            .post(e.url(&target))
            .headers(headers)
            .header("x-ms-date", &signed.x_ms_date)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_denied(&r);
    let stats = e.admin("GET", "stats", None).await.body;
    assert_eq!(
        stats["entra"]["bearerRequests"]["unauthenticated"], 6,
        "{stats}"
    );
    assert_eq!(stats["authFailures"], 6, "{stats}");
}

#[tokio::test]
async fn the_tenant_its_key_and_its_clients_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmulatorConfig {
        state_file: Some(dir.path().join("state.json")),
        ..EmulatorConfig::default()
    };
    let e = emu_with(config.clone()).await;
    let client = e.secret_client(&[OWNER]).await;
    let token = e.secret_token(&client).await;
    let tenant = e.tenant();
    let kid = e.admin("GET", "health", None).await.body["entraKeyId"].clone();
    let addr = e.emu.addr;
    e.emu.shutdown().await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(
        !text.contains(client.secret.as_deref().unwrap()),
        "only a digest is kept"
    );

    // Same address: the issuer names the authority, so another port is another issuer.
    let e = emu_with(EmulatorConfig {
        listen: addr,
        ..config
    })
    .await;
    assert_eq!(e.tenant(), tenant);
    assert_eq!(e.admin("GET", "health", None).await.body["entraKeyId"], kid);
    // The old token still authorizes, and the secret still gets new ones.
    assert_eq!(e.bearer_create(&token).await.status, StatusCode::CREATED);
    let again = e.secret_token(&client).await;
    assert_eq!(e.bearer_create(&again).await.status, StatusCode::CREATED);
}

/// The `acs-emulator` binary at trace level, its logs going to a file, as a user runs it.
struct Process {
    child: tokio::process::Child,
    endpoint: String,
    http: reqwest::Client,
    stderr: std::path::PathBuf,
}

impl Process {
    async fn start(dir: &std::path::Path, issuer_ca: &str) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let ca = dir.join("ca.pem");
        let oidc_ca = dir.join("oidc-ca.pem");
        std::fs::write(&oidc_ca, issuer_ca).unwrap();
        let stderr = dir.join("emulator.stderr");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_acs-emulator"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log-level",
                "trace",
                "--ca-cert-out",
            ])
            .arg(&ca)
            .arg("--oidc-ca-cert")
            .arg(&oidc_ca)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let endpoint = first
            .strip_prefix("acs-emulator listening on ")
            .unwrap()
            .to_string();
        // Keep draining stdout so the emulator never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap(),
            )
            .build()
            .unwrap();
        Self {
            child,
            endpoint,
            http,
            stderr,
        }
    }

    async fn post_json(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .json(&body)
            .send()
            .await
            .unwrap();
        decode(r).await.body
    }

    async fn token(&self, tenant: &str, form: &[(&str, &str)]) -> Reply {
        let r = self
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.endpoint))
            .form(form)
            .send()
            .await
            .unwrap();
        decode(r).await
    }
}

#[tokio::test]
async fn secrets_assertions_and_tokens_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::start().await;
    let mut p = Process::start(dir.path(), &issuer.ca_pem).await;
    let created = p
        .post_json(
            "/_emulator/entra/clients",
            json!({"displayName": "app", "secret": true, "roles": ["Contributor"]}),
        )
        .await;
    let tenant = created["tenantId"].as_str().unwrap().to_string();
    let client_id = created["clientId"].as_str().unwrap().to_string();
    let secret = created["clientSecret"].as_str().unwrap().to_string();
    let wrong = format!("{secret}x");
    let form = |secret| {
        [
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", secret),
            ("scope", ACS_SCOPE),
        ]
    };
    let good = form(secret.as_str());
    let bad = form(wrong.as_str());
    let r = p.token(&tenant, &good).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let token = r.body["access_token"].as_str().unwrap().to_string();
    let r = p
        .http
        .post(format!("{}/identities?api-version={GA}", p.endpoint))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        p.token(&tenant, &bad).await.status,
        StatusCode::UNAUTHORIZED
    );

    let federated = p
        .post_json(
            "/_emulator/entra/clients",
            json!({
                "federated": [{"issuer": issuer.url, "subject": "system:serviceaccount:a:b"}],
                "roles": ["Contributor"],
            }),
        )
        .await;
    let federated_id = federated["clientId"].as_str().unwrap();
    let assertion = issuer.sign_es256(&issuer.claims("a", "b"));
    let refused = issuer.sign_es256(&issuer.claims("a", "c"));
    for (a, status) in [
        (&assertion, StatusCode::OK),
        (&refused, StatusCode::UNAUTHORIZED),
    ] {
        let r = p
            .token(
                &tenant,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", federated_id),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", a),
                    ("scope", ACS_SCOPE),
                ],
            )
            .await;
        assert_eq!(r.status, status, "{r:?}");
    }
    p.child.kill().await.unwrap();

    let logs = std::fs::read_to_string(&p.stderr).unwrap();
    for line in [
        "entra client registered",
        "entra token issued",
        "entra token request refused",
        "oidc",
    ] {
        assert!(
            logs.contains(line),
            "the logs have {line:?} at trace level:\n{logs}"
        );
    }
    for (what, secret, jwt) in [
        ("client secret", secret.as_str(), false),
        ("wrong secret", wrong.as_str(), false),
        ("access token", token.as_str(), true),
        ("client assertion", assertion.as_str(), true),
        ("refused assertion", refused.as_str(), true),
    ] {
        assert!(!logs.contains(secret), "the {what} is in the logs:\n{logs}");
        // Not even a part of it: a JWT's signature, or a secret's last 24 characters (a secret
        // may contain dots, so splitting it like a JWT could leave a tail of one character).
        let part = if jwt {
            secret.rsplit('.').next().unwrap()
        } else {
            secret
        };
        let part = &part[part.len().saturating_sub(24)..];
        assert!(part.len() >= 16, "{what}: a meaningful part");
        assert!(!logs.contains(part), "part of the {what} is in the logs");
    }
}
