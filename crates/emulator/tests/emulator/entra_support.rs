//! Helpers for the Entra stand-in: registering clients through the admin API, the token
//! endpoint's requests, Identity API calls with a bearer token, and JWT payloads.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::support::*;

pub const ACS_SCOPE: &str = "https://communication.azure.com//.default";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const OWNER: &str = "Communication and Email Service Owner";

/// A registered client: its id and, when it has one, its secret.
pub struct Registered {
    pub client_id: String,
    pub secret: Option<String>,
}

impl Emu {
    pub fn tenant(&self) -> String {
        self.emu.entra_tenant_id().to_string()
    }

    /// `POST /_emulator/entra/clients`, expecting 201.
    pub async fn register(&self, body: Value) -> Registered {
        let r = self.admin("POST", "entra/clients", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        assert_eq!(r.body["tenantId"], self.tenant());
        Registered {
            client_id: r.body["clientId"].as_str().unwrap().to_string(),
            secret: r.body["clientSecret"].as_str().map(str::to_string),
        }
    }

    /// A client with a secret and the given roles.
    pub async fn secret_client(&self, roles: &[&str]) -> Registered {
        self.register(json!({"displayName": "app", "secret": true, "roles": roles}))
            .await
    }

    /// A form POST to this tenant's token endpoint.
    pub async fn token_request(&self, form: &[(&str, &str)]) -> Reply {
        self.token_request_at(&self.tenant(), form).await
    }

    pub async fn token_request_at(&self, tenant: &str, form: &[(&str, &str)]) -> Reply {
        let url = format!("{}/{tenant}/oauth2/v2.0/token", self.emu.entra_authority());
        decode(self.http.post(url).form(form).send().await.unwrap()).await
    }

    /// A token for `client` by its secret, expecting success.
    pub async fn secret_token(&self, client: &Registered) -> String {
        let r = self
            .token_request(&[
                ("grant_type", "client_credentials"),
                ("client_id", &client.client_id),
                ("client_secret", client.secret.as_deref().unwrap()),
                ("scope", ACS_SCOPE),
            ])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body["access_token"].as_str().unwrap().to_string()
    }

    /// A token for `client` by a client assertion, as workload identity asks for it.
    pub async fn assertion_request(&self, client_id: &str, assertion: &str) -> Reply {
        self.token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("scope", ACS_SCOPE),
        ])
        .await
    }

    /// An Identity API request with `Authorization: Bearer <token>`.
    pub async fn bearer(&self, method: &str, target: &str, token: &str, body: &str) -> Reply {
        let resp = self
            .http
            .request(method.parse().unwrap(), self.url(target))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        decode(resp).await
    }

    /// Creates an identity with a bearer token and returns the reply.
    pub async fn bearer_create(&self, token: &str) -> Reply {
        self.bearer(
            "POST",
            &format!("/identities?api-version={GA}"),
            token,
            r#"{"createTokenWithScopes": ["chat"]}"#,
        )
        .await
    }
}

/// The payload of a JWT, unverified.
pub fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Asserts an Entra token-endpoint error: status, OAuth error and AADSTS code, in Entra's shape.
pub fn assert_aad_error(r: &Reply, status: StatusCode, error: &str, code: u64) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body["error"], error, "{r:?}");
    assert_eq!(r.body["error_codes"], json!([code]), "{r:?}");
    let description = r.body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(r.body[field].is_string(), "{field}: {r:?}");
    }
    assert!(description.contains(r.body["trace_id"].as_str().unwrap()));
}
