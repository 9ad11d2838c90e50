//! Shared helpers: an emulator with a client that trusts its CA, SDK-style request signing
//! (current and legacy), and assertions on the standard error body.

use std::time::{Duration, SystemTime};

use acs_client::hmac;
use acs_client::AccessKey;
use acs_emulator::{start, EmulatorConfig, RateLimits, RunningEmulator};
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const GA: &str = "2023-10-01";
pub const PREVIEW: &str = "2025-04-01-preview";
pub const LEGACY: &str = "2020-07-20-preview2";

/// A running emulator and a client that trusts its CA.
pub struct Emu {
    pub emu: RunningEmulator,
    pub http: reqwest::Client,
    pub key: AccessKey,
}

/// A response, decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

pub async fn emu_with(config: EmulatorConfig) -> Emu {
    let tls = config.tls;
    let emu = start(config).await.expect("emulator starts");
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if tls {
        builder = builder.add_root_certificate(
            reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).expect("ca parses"),
        );
    }
    let key = emu.access_keys()[0].clone();
    Emu {
        emu,
        http: builder.build().expect("client builds"),
        key,
    }
}

pub async fn emu() -> Emu {
    emu_with(EmulatorConfig::default()).await
}

pub fn no_limits() -> EmulatorConfig {
    EmulatorConfig {
        rate_limits: RateLimits::off(),
        ..EmulatorConfig::default()
    }
}

pub async fn decode(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body reads");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("body is JSON")
    };
    Reply {
        status,
        headers,
        body,
    }
}

impl Emu {
    pub fn host(&self) -> String {
        self.emu.addr.to_string()
    }

    pub fn url(&self, target: &str) -> String {
        format!("{}{target}", self.emu.endpoint())
    }

    /// Sends a request signed like the current SDKs, with `key`.
    pub async fn send_with(
        &self,
        key: &AccessKey,
        method: &str,
        target: &str,
        body: &str,
    ) -> Reply {
        let signed = hmac::sign_request(
            key.expose(),
            method,
            target,
            &self.host(),
            body.as_bytes(),
            SystemTime::now(),
        );
        let resp = self
            .http
            .request(method.parse().expect("method"), self.url(target))
            .header("x-ms-date", signed.x_ms_date)
            .header("x-ms-content-sha256", signed.content_sha256)
            .header("authorization", signed.authorization)
            .header("x-ms-client-request-id", "req-123")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request is answered");
        decode(resp).await
    }

    pub async fn send(&self, method: &str, target: &str, body: &str) -> Reply {
        let key = self.key.clone();
        self.send_with(&key, method, target, body).await
    }

    /// Sends a request signed like the 2020 SDK (`Date` instead of `x-ms-date`).
    pub async fn send_legacy(&self, method: &str, target: &str, body: &str) -> Reply {
        let date = hmac::http_date(SystemTime::now());
        let hash = hmac::content_sha256(body.as_bytes());
        let sts = hmac::string_to_sign(method, target, &[&date, &self.host(), &hash]);
        let auth = hmac::authorization(
            hmac::LEGACY_SIGNED_HEADERS,
            &hmac::sign(self.key.expose(), &sts),
        );
        let resp = self
            .http
            .request(method.parse().expect("method"), self.url(target))
            .header("date", date)
            .header("x-ms-content-sha256", hash)
            .header("authorization", auth)
            .body(body.to_string())
            .send()
            .await
            .expect("request is answered");
        decode(resp).await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.http.request(
            method.parse().expect("method"),
            format!("{}/{path}", self.emu.admin_url()),
        );
        if let Some(b) = body {
            req = req.json(&b);
        }
        decode(req.send().await.expect("admin answers")).await
    }

    pub async fn create(&self) -> String {
        let r = self
            .send("POST", &format!("/identities?api-version={GA}"), "")
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        r.body["identity"]["id"].as_str().expect("id").to_string()
    }

    pub async fn issue(&self, id: &str) -> String {
        let r = self
            .send(
                "POST",
                &format!("/identities/{}/:issueAccessToken?api-version={GA}", enc(id)),
                r#"{"scopes": ["chat"]}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body["token"].as_str().expect("token").to_string()
    }

    pub async fn validate(&self, token: &str) -> Value {
        let r = self
            .admin("POST", "validate", Some(json!({ "token": token })))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body
    }
}

/// Percent-encodes the id as the sync Python SDK does.
pub fn enc(id: &str) -> String {
    id.replace(':', "%3A")
}

pub fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body["error"]["code"], code, "{r:?}");
    assert!(r.body["error"]["message"].is_string(), "{r:?}");
}

pub fn assert_denied(r: &Reply) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(
        r.body,
        json!({"error": {"code": "Denied", "message": "Denied by the resource provider."}})
    );
}
