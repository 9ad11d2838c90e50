//! No key, token or signature may reach a log line (any level, any crate) or an error's text.

use std::io;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use acs_client::{AcsError, ClientOptions, CreateIdentity, Scope};
use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;

use crate::fake::{FakeServer, Reply};
use crate::{client_for, created_body, fast_options, preview_options, token_body, ID, KEY};

/// Log output collected in memory.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

pub struct CapturedWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for CapturedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = CapturedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        CapturedWriter(self.0.clone())
    }
}

/// Installs a TRACE subscriber for the current thread (run the client on a current-thread
/// runtime so its tasks log here too). `log` records of reqwest, hyper and rustls are
/// forwarded into tracing, so they are captured as well.
pub fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    static LOG_BRIDGE: Once = Once::new();
    LOG_BRIDGE.call_once(|| {
        tracing_log::LogTracer::init().unwrap();
    });
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(captured.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// Every secret form to look for: the key and each 16-character window of it, each token,
/// its payload and signature segments, and each request signature.
pub fn secrets(key_b64: &str, tokens: &[String], signatures: &[String]) -> Vec<String> {
    let mut out = vec![key_b64.to_string()];
    let chars: Vec<char> = key_b64.chars().collect();
    out.extend(chars.windows(16).map(|w| w.iter().collect::<String>()));
    for t in tokens {
        out.push(t.clone());
        out.extend(
            t.split('.')
                .skip(1)
                .filter(|s| s.len() >= 8)
                .map(str::to_string),
        );
    }
    out.extend(signatures.iter().cloned());
    out
}

pub fn assert_no_secret(haystack: &str, secrets: &[String], what: &str) {
    for s in secrets {
        assert!(
            !haystack.contains(s.as_str()),
            "{what} leaks a secret ({} chars)",
            s.len()
        );
    }
}

#[tokio::test]
async fn no_key_token_or_signature_appears_in_trace_logs_or_errors() {
    let (logs, _guard) = capture_logs();
    let token = crate::fake_token();
    let t = token.clone();
    let server = FakeServer::start(move |n, r| match (n, r.method.as_str(), r.target.as_str()) {
        (0, ..) => Reply::status(503).with_header("retry-after-ms", "1"),
        (1, ..) => Reply::Drop,
        (_, "POST", p) if p.starts_with("/identities?") => Reply::json(201, created_body(ID, Some(&t))),
        (_, "POST", p) if p.contains(":issueAccessToken") && r.body.windows(4).any(|w| w == b"1441") => Reply::json(
            400,
            json!({"error": {"code": "ValidationError", "message": "ExpiresInMinutes value 1441 is invalid.", "target": "ExpiresInMinutes"}}),
        ),
        (_, "POST", p) if p.contains(":issueAccessToken") => Reply::json(200, token_body(&t)),
        (_, "GET", _) => Reply::json(200, json!({"id": ID})),
        (_, _, p) if p.contains("unknown") => Reply::json(401, json!({"error": {"code": "Denied", "message": "Denied by the resource provider."}})),
        _ => Reply::status(204),
    })
    .await;
    let c = client_for(&server, fast_options());
    let p = client_for(&server, preview_options());

    let mut errors: Vec<AcsError> = Vec::new();
    // Two failed attempts (503, dropped) then success, all on an idempotent call.
    let issued = c.issue_token(ID, &[Scope::Chat], Some(60)).await.unwrap();
    let created = c
        .create_identity(CreateIdentity::new().with_token(vec![Scope::Voip], None))
        .await
        .unwrap();
    p.get_identity(ID).await.unwrap();
    c.revoke_tokens(ID).await.unwrap();
    c.delete_identity(ID).await.unwrap();
    errors.push(
        c.issue_token(ID, &[Scope::Chat], Some(1441))
            .await
            .unwrap_err(),
    );
    errors.push(c.revoke_tokens("8:acs:unknown").await.unwrap_err());
    let silent = FakeServer::start(|_, _| Reply::Hang).await;
    let timeout = client_for(
        &silent,
        ClientOptions {
            request_timeout: Duration::from_millis(200),
            max_retries: 0,
            ..fast_options()
        },
    );
    errors.push(
        timeout
            .create_identity(CreateIdentity::new())
            .await
            .unwrap_err(),
    );

    // Debug of everything a caller might print.
    let mut printed = format!("{issued:?} {created:?} {c:?}");
    for e in &errors {
        printed.push_str(&format!("{e} {e:?}"));
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            printed.push_str(&format!("{s} {s:?}"));
            source = s.source();
        }
    }

    let signatures: Vec<String> = server
        .requests()
        .iter()
        .chain(silent.requests().iter())
        .map(|r| {
            acs_client::hmac::parse_authorization(r.header("authorization").unwrap())
                .unwrap()
                .signature
        })
        .collect();
    assert_eq!(signatures.len(), 10);
    let secrets = secrets(KEY, std::slice::from_ref(&token), &signatures);

    let text = logs.text();
    // The capture must be real: our own events at every level we emit are present.
    for needle in [
        "acs_request",
        "operation=\"issue_token\"",
        "acs request failed, retrying",
        "acs request succeeded",
        "sending acs request",
        "category=\"validation\"",
    ] {
        assert!(
            text.contains(needle),
            "captured logs lack {needle:?}:\n{text}"
        );
    }
    assert!(
        text.contains("hyper_util::"),
        "HTTP library logs are captured too"
    );
    assert_no_secret(&text, &secrets, "trace logs");
    assert_no_secret(&printed, &secrets, "error and value Debug output");
    // And the tokens really were handled: the client returned them to the caller.
    assert_eq!(issued.token.expose(), token);
}
