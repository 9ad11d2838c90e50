//! Integration tests of `acs::AcsClient`: the wire format and retry rules against a scripted
//! loopback server (`fake`), every operation against the project's emulator over TLS
//! (`emulator`), and the absence of secrets from logs and errors (`secrets`).

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "acs_client/emulator.rs"]
mod emulator;
#[path = "acs_client/fake.rs"]
mod fake;
#[path = "acs_client/retries.rs"]
mod retries;
#[path = "acs_client/secrets.rs"]
mod secrets;
#[path = "acs_client/wire.rs"]
mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use acs_client::{AcsClient, ApiMode, ClientOptions, ConnectionString, RequestObserver};
use serde_json::json;

use fake::FakeServer;

/// The key of the SDK vectors (any valid key works; this one is already public).
pub const KEY: &str =
    "/MWpQPsPwcHBb87YBQPDmkCCeUjQkdnSS4teA4XuLe8GX/1NK4OUSt/Nt4QoMkhcivscu8lWDVCO7g9O2z0B2w==";

pub const ID: &str =
    "8:acs:2dee53b4-368b-45b4-ab52-8493fb117652_00000005-14a2-493b-8a72-5a3a0d000081";

pub fn conn(endpoint: &str, key: &str) -> ConnectionString {
    ConnectionString::parse(&format!("endpoint={endpoint}/;accesskey={key}")).unwrap()
}

/// Options with millisecond backoffs so retry tests run fast. The fake server speaks plain
/// HTTP on loopback, which the client refuses unless told otherwise.
pub fn fast_options() -> ClientOptions {
    ClientOptions {
        allow_insecure_http: true,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        max_retries: 3,
        retry_base_delay: Duration::from_millis(1),
        retry_max_delay: Duration::from_millis(5),
        ..ClientOptions::default()
    }
}

pub fn preview_options() -> ClientOptions {
    ClientOptions {
        api_mode: ApiMode::Preview,
        ..fast_options()
    }
}

pub fn client_for(server: &FakeServer, options: ClientOptions) -> AcsClient {
    AcsClient::new(conn(&server.endpoint(), KEY), options).unwrap()
}

/// A JWT-shaped token that is unique per call, so a leak of it is unambiguous.
pub fn fake_token() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("eyJhbGciOiJSUzI1NiJ9.eyJwYXlsb2Fk{u}.c2lnbmF0dXJl{u}")
}

pub fn token_body(token: &str) -> serde_json::Value {
    json!({"token": token, "expiresOn": "2025-01-03T03:04:05.0000000+00:00"})
}

pub fn created_body(id: &str, token: Option<&str>) -> serde_json::Value {
    match token {
        Some(t) => json!({"identity": {"id": id}, "accessToken": token_body(t)}),
        None => json!({"identity": {"id": id}}),
    }
}

/// Records every `(operation, outcome)` the client reports and forwards outcomes to a channel.
#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<(&'static str, String)>>,
    pub tx: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
}

impl Recorder {
    pub fn outcomes(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, o)| o.clone())
            .collect()
    }
}

impl RequestObserver for Recorder {
    fn observe(&self, operation: &'static str, outcome: &str, _elapsed: Duration) {
        self.seen
            .lock()
            .unwrap()
            .push((operation, outcome.to_string()));
        if let Some(tx) = &*self.tx.lock().unwrap() {
            let _ = tx.send(outcome.to_string());
        }
    }
}

pub fn recorder() -> Arc<Recorder> {
    Arc::new(Recorder::default())
}
