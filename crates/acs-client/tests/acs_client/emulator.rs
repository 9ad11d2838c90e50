//! The client against the project's emulator over TLS: every operation, get-or-create, the
//! service's error shapes, throttling and injected faults, and a log capture for secrets.

use std::time::{Duration, Instant};

use acs_client::{
    AcsClient, AcsError, ApiMode, ClientOptions, ConnectionString, CreateIdentity, Scope,
};
use acs_emulator::{EmulatorConfig, Limit, LimitClass, RateLimits, RunningEmulator};
use serde_json::{json, Value};

use crate::secrets::{assert_no_secret, capture_logs, secrets};
use crate::{recorder, KEY};

/// An emulator on its own runtime thread, so that the tests' log capture (which follows the
/// test's thread) records the client only, and a test's runtime can end without stopping it.
pub struct Emu {
    running: Option<RunningEmulator>,
    runtime: Option<tokio::runtime::Runtime>,
    admin: reqwest::Client,
}

impl Emu {
    pub fn start(config: EmulatorConfig) -> Self {
        let (runtime, running) = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let running = runtime.block_on(acs_emulator::start(config)).unwrap();
            (runtime, running)
        })
        .join()
        .unwrap();
        let admin = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(running.ca_pem().as_bytes()).unwrap(),
            )
            .build()
            .unwrap();
        Self {
            running: Some(running),
            runtime: Some(runtime),
            admin,
        }
    }

    pub fn default_config() -> EmulatorConfig {
        EmulatorConfig {
            rate_limits: RateLimits::off(),
            ..EmulatorConfig::default()
        }
    }

    fn running(&self) -> &RunningEmulator {
        self.running.as_ref().unwrap()
    }

    pub fn key_b64(&self) -> String {
        self.running().access_keys()[0].to_base64()
    }

    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            ca_pem: Some(self.running().ca_pem().as_bytes().to_vec()),
            trust_web_roots: false,
            ..crate::fast_options()
        }
    }

    pub fn client(&self, options: ClientOptions) -> AcsClient {
        let conn = ConnectionString::parse(&self.running().connection_string()).unwrap();
        assert!(
            conn.endpoint.starts_with("https://"),
            "the emulator serves TLS"
        );
        AcsClient::new(conn, options).unwrap()
    }

    pub fn preview_client(&self) -> AcsClient {
        self.client(ClientOptions {
            api_mode: ApiMode::Preview,
            ..self.options()
        })
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .admin
            .request(method, format!("{}{path}", self.running().admin_url()));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        assert!(
            resp.status().is_success(),
            "admin {path}: {}",
            resp.status()
        );
        let text = resp.text().await.unwrap();
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    /// `{"valid": bool, "reason": ...}` as a downstream ACS service would judge the token.
    pub async fn validate(&self, token: &str) -> (bool, String) {
        let v = self
            .admin(
                reqwest::Method::POST,
                "/validate",
                Some(json!({"token": token})),
            )
            .await;
        (v["valid"].as_bool().unwrap(), v["reason"].to_string())
    }

    pub async fn identity_count(&self) -> usize {
        self.admin(reqwest::Method::GET, "/identities", None).await["identities"]
            .as_array()
            .unwrap()
            .len()
    }

    pub async fn set_faults(&self, faults: Value) {
        self.admin(reqwest::Method::PUT, "/faults", Some(faults))
            .await;
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        drop(self.running.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[tokio::test]
async fn every_operation_round_trips_against_the_emulator_over_tls() {
    let emu = Emu::start(Emu::default_config());
    let c = emu.client(emu.options());
    let p = emu.preview_client();

    let bare = c.create_identity(CreateIdentity::new()).await.unwrap();
    assert!(bare.created);
    assert!(bare.access_token.is_none());
    assert!(
        bare.identity.id.starts_with("8:acs:"),
        "{}",
        bare.identity.id
    );

    let with_token = c
        .create_identity(CreateIdentity::new().with_token(vec![Scope::Chat, Scope::Voip], Some(60)))
        .await
        .unwrap();
    let first = with_token.access_token.unwrap();
    let id = with_token.identity.id;
    let lifetime = first.expires_at().unwrap() - jiff::Timestamp::now();
    let minutes = lifetime.total(jiff::Unit::Minute).unwrap();
    assert!((58.0..=61.0).contains(&minutes), "{minutes}");
    assert!(emu.validate(first.token.expose()).await.0);

    let second = c.issue_token(&id, &Scope::ALL, Some(1440)).await.unwrap();
    assert!(emu.validate(second.token.expose()).await.0);
    let default = c.issue_token(&id, &[Scope::VoipJoin], None).await.unwrap();
    let hours = (default.expires_at().unwrap() - jiff::Timestamp::now())
        .total(jiff::Unit::Hour)
        .unwrap();
    assert!(
        (23.9..=24.1).contains(&hours),
        "default lifetime is 24 h: {hours}"
    );

    let got = p.get_identity(&id).await.unwrap();
    assert_eq!(got.id, id);

    c.revoke_tokens(&id).await.unwrap();
    let (valid, reason) = emu.validate(first.token.expose()).await;
    assert!(!valid, "revoked: {reason}");
    assert!(!emu.validate(second.token.expose()).await.0);
    let after_revoke = c.issue_token(&id, &[Scope::Chat], None).await.unwrap();
    assert!(emu.validate(after_revoke.token.expose()).await.0);

    c.delete_identity(&id).await.unwrap();
    let (valid, reason) = emu.validate(after_revoke.token.expose()).await;
    assert!(!valid, "deleted: {reason}");
    c.delete_identity(&bare.identity.id).await.unwrap();
    assert_eq!(
        emu.identity_count().await,
        2,
        "the admin list keeps deleted identities"
    );
}

#[tokio::test]
async fn external_id_get_or_create_returns_the_same_identity_twice() {
    let emu = Emu::start(Emu::default_config());
    let p = emu.preview_client();
    let external = format!("user-{}", uuid::Uuid::new_v4());
    let first = p
        .create_identity(CreateIdentity::new().with_external_id(&external))
        .await
        .unwrap();
    let second = p
        .create_identity(
            CreateIdentity::new()
                .with_external_id(&external)
                .with_token(vec![Scope::Chat], Some(60)),
        )
        .await
        .unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.identity.id, second.identity.id);
    assert_eq!(
        first.identity.external_id.as_deref(),
        Some(external.as_str())
    );
    assert!(
        emu.validate(second.access_token.unwrap().token.expose())
            .await
            .0
    );
    let got = p.get_identity(&first.identity.id).await.unwrap();
    assert_eq!(got.external_id.as_deref(), Some(external.as_str()));
    assert_eq!(emu.identity_count().await, 1);
}

#[tokio::test]
async fn a_wrong_key_is_a_permanent_unauthorized_error_and_is_not_retried() {
    let emu = Emu::start(Emu::default_config());
    let rec = recorder();
    let conn = ConnectionString::parse(&format!(
        "endpoint={}/;accesskey={KEY}",
        emu.running().endpoint()
    ))
    .unwrap();
    let c = AcsClient::new(
        conn,
        ClientOptions {
            observer: Some(rec.clone()),
            ..emu.options()
        },
    )
    .unwrap();
    let err = c.create_identity(CreateIdentity::new()).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.code(), Some("Denied"));
    assert_eq!(err.category(), "unauthorized");
    assert!(!err.is_transient());
    assert_eq!(rec.outcomes(), ["401"]);
    assert_eq!(emu.identity_count().await, 0);
}

#[tokio::test]
async fn out_of_range_expiry_surfaces_the_service_code_and_target() {
    let emu = Emu::start(Emu::default_config());
    let c = emu.client(emu.options());
    let id = c
        .create_identity(CreateIdentity::new())
        .await
        .unwrap()
        .identity
        .id;
    for minutes in [59, 1441] {
        let errs = [
            c.issue_token(&id, &[Scope::Chat], Some(minutes))
                .await
                .unwrap_err(),
            c.create_identity(CreateIdentity::new().with_token(vec![Scope::Chat], Some(minutes)))
                .await
                .unwrap_err(),
        ];
        for err in errs {
            assert_eq!(err.status(), Some(400), "{err}");
            assert_eq!(err.code(), Some("ValidationError"));
            assert_eq!(err.target(), Some("ExpiresInMinutes"));
            assert!(err.to_string().contains(&minutes.to_string()), "{err}");
            assert_eq!(err.category(), "validation");
        }
    }
    for minutes in [60, 1440] {
        c.issue_token(&id, &[Scope::Chat], Some(minutes))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_deleted_identity_answers_a_permanent_4xx() {
    let emu = Emu::start(Emu::default_config());
    let c = emu.client(emu.options());
    let id = c
        .create_identity(CreateIdentity::new())
        .await
        .unwrap()
        .identity
        .id;
    c.delete_identity(&id).await.unwrap();
    let errs: Vec<AcsError> = vec![
        c.issue_token(&id, &[Scope::Chat], None).await.unwrap_err(),
        c.revoke_tokens(&id).await.unwrap_err(),
        emu.preview_client().get_identity(&id).await.unwrap_err(),
    ];
    for err in errs {
        let status = err.status().unwrap();
        assert!((400..500).contains(&status), "{err}");
        assert!(!err.is_transient(), "{err}");
    }
}

#[tokio::test]
async fn emulator_throttling_is_retried_after_its_retry_after() {
    let mut limits = RateLimits::off();
    limits.set(LimitClass::Issue, Some(Limit::new(1, 1.0)));
    let emu = Emu::start(EmulatorConfig {
        rate_limits: limits,
        ..Emu::default_config()
    });
    let rec = recorder();
    let c = emu.client(ClientOptions {
        observer: Some(rec.clone()),
        ..emu.options()
    });
    let id = c
        .create_identity(CreateIdentity::new())
        .await
        .unwrap()
        .identity
        .id;
    c.issue_token(&id, &[Scope::Chat], None).await.unwrap();
    let started = Instant::now();
    c.issue_token(&id, &[Scope::Chat], None).await.unwrap();
    // Backoff alone is at most 5 ms here; only the emulator's `Retry-After: 1` explains 1 s.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(rec.outcomes(), ["201", "200", "429", "200"]);
}

#[tokio::test]
async fn ga_create_is_retried_after_429_but_never_after_an_ambiguous_failure() {
    let emu = Emu::start(Emu::default_config());
    let rec = recorder();
    let c = emu.client(ClientOptions {
        observer: Some(rec.clone()),
        max_retries: 2,
        ..emu.options()
    });
    let live = c
        .create_identity(CreateIdentity::new())
        .await
        .unwrap()
        .identity
        .id;
    rec.seen.lock().unwrap().clear();
    let create_only = json!(["createIdentity"]);

    emu.set_faults(json!({"rate429": 1.0, "retryAfterSeconds": 0, "operations": create_only}))
        .await;
    let err = c.create_identity(CreateIdentity::new()).await.unwrap_err();
    assert_eq!(err.category(), "throttled");
    assert_eq!(rec.outcomes(), ["429", "429", "429"], "429 is retried");

    for (faults, outcome) in [
        (json!({"rate500": 1.0, "operations": create_only}), "500"),
        (
            json!({"rate503": 1.0, "retryAfterSeconds": 0, "operations": create_only}),
            "503",
        ),
        (
            json!({"dropAfterRate": 1.0, "operations": create_only}),
            "network",
        ),
    ] {
        rec.seen.lock().unwrap().clear();
        emu.set_faults(faults).await;
        let err = c.create_identity(CreateIdentity::new()).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert_eq!(rec.outcomes(), [outcome], "no retry after {outcome}");
    }
    // Only the processed-then-dropped request made an identity: exactly one, no duplicate.
    assert_eq!(emu.identity_count().await, 2, "the live one and one orphan");

    emu.set_faults(json!({"dropAfterRate": 1.0, "operations": ["revokeAccessTokens"]}))
        .await;
    rec.seen.lock().unwrap().clear();
    let err = c.revoke_tokens(&live).await.unwrap_err();
    assert_eq!(err.category(), "network");
    assert_eq!(
        rec.outcomes(),
        ["network", "network", "network"],
        "idempotent calls retry"
    );
}

/// The capture runs the client on this test's current-thread runtime; the emulator logs on its
/// own thread and is not captured (it is a development tool and prints its own dev key).
#[tokio::test]
async fn no_key_or_token_reaches_the_logs_in_a_full_session_against_the_emulator() {
    let emu = Emu::start(Emu::default_config());
    let (logs, _guard) = capture_logs();
    let c = emu.client(emu.options());
    let p = emu.preview_client();
    let mut tokens = Vec::new();
    let mut printed = String::new();

    let created = c
        .create_identity(CreateIdentity::new().with_token(vec![Scope::Chat], None))
        .await
        .unwrap();
    let id = created.identity.id.clone();
    tokens.push(
        created
            .access_token
            .clone()
            .unwrap()
            .token
            .expose()
            .to_string(),
    );
    printed.push_str(&format!("{created:?}"));
    let issued = c.issue_token(&id, &Scope::ALL, Some(60)).await.unwrap();
    tokens.push(issued.token.expose().to_string());
    printed.push_str(&format!("{issued:?} {c:?}"));
    let got = p
        .create_identity(
            CreateIdentity::new()
                .with_external_id("capture")
                .with_token(vec![Scope::Voip], None),
        )
        .await
        .unwrap();
    tokens.push(got.access_token.clone().unwrap().token.expose().to_string());
    p.get_identity(&id).await.unwrap();
    c.revoke_tokens(&id).await.unwrap();

    let wrong_key = AcsClient::new(
        ConnectionString::parse(&format!(
            "endpoint={}/;accesskey={KEY}",
            emu.running().endpoint()
        ))
        .unwrap(),
        emu.options(),
    )
    .unwrap();
    let errors = [
        wrong_key
            .issue_token(&id, &[Scope::Chat], None)
            .await
            .unwrap_err(),
        c.issue_token(&id, &[Scope::Chat], Some(1441))
            .await
            .unwrap_err(),
        {
            c.delete_identity(&id).await.unwrap();
            c.issue_token(&id, &[Scope::Chat], None).await.unwrap_err()
        },
    ];
    for e in &errors {
        printed.push_str(&format!("{e} {e:?}"));
    }

    let text = logs.text();
    assert!(
        text.contains("acs request succeeded"),
        "capture is live:\n{text}"
    );
    assert!(text.contains("category=\"unauthorized\""), "{text}");
    assert!(
        text.contains("rustls::"),
        "TLS library logs are captured too:\n{text}"
    );
    let mut all = secrets(&emu.key_b64(), &tokens, &[]);
    all.extend(secrets(KEY, &[], &[]));
    assert_no_secret(&text, &all, "client trace logs");
    assert_no_secret(&printed, &all, "Debug output");
}
