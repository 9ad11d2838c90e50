//! Typed errors of ACS calls, each classified transient or permanent with a bounded category
//! label. No variant carries a key, a token, a signature or a response body that could hold one.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use crate::connection::ConnectionStringError;

/// Service messages are copied into errors; cap them so a misbehaving server cannot flood logs.
const MAX_MESSAGE_CHARS: usize = 512;

/// An ACS call that failed.
#[derive(Debug, thiserror::Error)]
pub enum AcsError {
    /// The service answered with a non-success status. `code`, `message` and `target` come from
    /// a `{"error":{code,message,target}}` body when the body has that shape.
    #[error("acs answered http {status}{}", describe_service(.code, .message, .target))]
    Service {
        status: u16,
        code: Option<String>,
        message: Option<String>,
        target: Option<String>,
        /// From `retry-after-ms`, `x-ms-retry-after-ms` or `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// No connection could be established (refused, unreachable, DNS, connect timeout). The
    /// request bytes were never written, so even a non-idempotent call may be retried.
    #[error("failed to connect to acs")]
    Connect {
        /// The connect phase ran out of time (as opposed to being refused).
        timed_out: bool,
        #[source]
        source: reqwest::Error,
    },
    /// The request timed out after the connection was up: the service may have acted on it.
    #[error("acs request timed out")]
    Timeout {
        #[source]
        source: reqwest::Error,
    },
    /// The connection failed while the request or response was in flight.
    #[error("acs request failed in transit")]
    Transport {
        #[source]
        source: reqwest::Error,
    },
    /// The TLS handshake failed, typically an untrusted certificate (see `ClientOptions::ca_pem`).
    #[error("tls handshake with acs failed")]
    Tls {
        #[source]
        source: reqwest::Error,
    },
    /// A success response whose body is not the documented JSON.
    #[error("failed to decode the acs response (http {status})")]
    Decode {
        status: u16,
        #[source]
        source: DecodeError,
    },
    /// A request body could not be serialized (cannot happen for the documented bodies).
    #[error("failed to encode the acs request body")]
    Encode {
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid acs connection string")]
    InvalidConnectionString(#[from] ConnectionStringError),
    /// `ca_pem` held no usable certificate.
    #[error("invalid custom ca certificate pem")]
    InvalidCaCertificate {
        #[source]
        source: Option<reqwest::Error>,
    },
    #[error("failed to build the acs http client")]
    BuildClient {
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint, a path or a header value cannot form an HTTP request.
    #[error("failed to build the acs request")]
    BuildRequest {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The call needs a preview api-version (`ApiMode::Preview`); nothing was sent.
    #[error("{operation} needs the preview api-version (ApiMode::Preview)")]
    RequiresPreview { operation: &'static str },
    /// The mutation gate (`ClientOptions::mutation_gate`) refused; nothing was sent.
    #[error("{operation} refused without sending it: this replica may not write to acs now (leadership not valid)")]
    Fenced { operation: &'static str },
    /// The endpoint is `http://` and `ClientOptions::allow_insecure_http` is off; nothing was
    /// sent.
    #[error("refused to send to a plain http:// acs endpoint: signed requests and tokens would travel in clear; use https://, or for a development emulator only start the operator with --allow-insecure-http (ALLOW_INSECURE_HTTP=true)")]
    InsecureHttp,
    /// No Microsoft Entra ID token could be had for the call; nothing was sent to ACS.
    /// `message` names the principal and Entra's error code, never a token, assertion or
    /// secret.
    #[error("{message}")]
    Credential {
        failure: crate::bearer::CredentialFailure,
        message: String,
    },
}

fn describe_service(
    code: &Option<String>,
    message: &Option<String>,
    target: &Option<String>,
) -> String {
    let mut s = String::new();
    if let Some(code) = code {
        s.push_str(" (");
        s.push_str(code);
        if let Some(target) = target {
            s.push_str(", target ");
            s.push_str(target);
        }
        s.push(')');
    }
    if let Some(message) = message {
        s.push_str(": ");
        s.push_str(message);
    }
    s
}

impl AcsError {
    /// Builds a [`AcsError::Service`] from a non-success response, reading the error body
    /// leniently: any JSON with `error.code`/`error.message`/`error.target` (or the same keys at
    /// the top level) is used, anything else leaves them `None`. The raw body is never kept.
    pub fn from_response(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Self {
        let value = serde_json::from_slice::<serde_json::Value>(body).ok();
        let error = value
            .as_ref()
            .map(|v| match v.get("error") {
                Some(e) if e.is_object() => e,
                _ => v,
            })
            .filter(|e| e.is_object());
        let field = |name: &str| {
            error
                .and_then(|e| e.get(name))
                .and_then(|v| v.as_str())
                .map(truncate)
        };
        AcsError::Service {
            status,
            code: field("code"),
            message: field("message"),
            target: field("target"),
            retry_after,
        }
    }

    /// Classifies a transport error from reqwest.
    pub fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_connect() {
            if chain_has_rustls_error(&err) {
                AcsError::Tls { source: err }
            } else {
                AcsError::Connect {
                    timed_out: err.is_timeout(),
                    source: err,
                }
            }
        } else if err.is_timeout() {
            AcsError::Timeout { source: err }
        } else {
            AcsError::Transport { source: err }
        }
    }

    /// Whether trying again later may succeed: 408, 429, 5xx except 501/505, and network
    /// failures. 400/401/403/404/409, TLS, configuration and decode errors are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            AcsError::Service { status, .. } => is_transient_status(*status),
            AcsError::Connect { .. } | AcsError::Timeout { .. } | AcsError::Transport { .. } => {
                true
            }
            AcsError::Tls { .. }
            | AcsError::Decode { .. }
            | AcsError::Encode { .. }
            | AcsError::InvalidConnectionString(_)
            | AcsError::InvalidCaCertificate { .. }
            | AcsError::BuildClient { .. }
            | AcsError::BuildRequest { .. }
            | AcsError::RequiresPreview { .. }
            | AcsError::Fenced { .. }
            | AcsError::InsecureHttp => false,
            AcsError::Credential { failure, .. } => failure.is_transient(),
        }
    }

    /// A bounded label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            AcsError::Service { status, code, .. } => match status {
                400 | 422 => "validation",
                401 if code.as_deref() == Some("IdentityNotOwned") => "identity_not_owned",
                401 | 403 => "unauthorized",
                404 | 410 => "not_found",
                408 => "timeout",
                409 => "conflict",
                429 => "throttled",
                500..=599 => "server",
                400..=499 => "client",
                _ => "unexpected_status",
            },
            AcsError::Connect {
                timed_out: true, ..
            } => "timeout",
            AcsError::Connect { .. } | AcsError::Transport { .. } => "network",
            AcsError::Timeout { .. } => "timeout",
            AcsError::Tls { .. } => "tls",
            AcsError::Decode { .. } | AcsError::Encode { .. } => "decode",
            AcsError::InvalidConnectionString(_)
            | AcsError::InvalidCaCertificate { .. }
            | AcsError::BuildClient { .. }
            | AcsError::BuildRequest { .. } => "config",
            AcsError::RequiresPreview { .. } => "unsupported",
            AcsError::Fenced { .. } => "fenced",
            AcsError::InsecureHttp => "insecure_http",
            AcsError::Credential { .. } => "credentials",
        }
    }

    /// The HTTP status of the response that failed, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            AcsError::Service { status, .. } | AcsError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The service's error code (e.g. `ValidationError`), if it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AcsError::Service { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The service's error target (e.g. `ExpiresInMinutes`), if it sent one.
    pub fn target(&self) -> Option<&str> {
        match self {
            AcsError::Service { target, .. } => target.as_deref(),
            _ => None,
        }
    }

    /// How long the service asked the client to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AcsError::Service { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The request was sent but its answer was lost (the connection broke, or it timed out
    /// after sending): the service may have processed it. A non-idempotent call (a GA
    /// identity creation) may then have taken effect.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, AcsError::Transport { .. } | AcsError::Timeout { .. })
    }

    /// The service said the identity does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// The statuses azure-core retries: 408, 429, 500, 502, 503, 504 and 506–599.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 506..=599)
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// rustls errors reach us wrapped in (nested) `io::Error`s, whose `source()` skips the wrapped
/// error, so descend into each `io::Error` through `get_ref()` instead.
fn chain_has_rustls_error(err: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

/// Why a success body did not decode. Keeps only serde's category and position: serde's own
/// message can quote a value from the body, and bodies carry tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub category: &'static str,
    pub line: usize,
    pub column: usize,
}

impl From<&serde_json::Error> for DecodeError {
    fn from(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let category = match e.classify() {
            Category::Io => "io",
            Category::Syntax => "syntax",
            Category::Data => "unexpected shape",
            Category::Eof => "truncated",
        };
        Self {
            category,
            line: e.line(),
            column: e.column(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "response json is invalid ({} at line {} column {})",
            self.category, self.line, self.column
        )
    }
}

impl std::error::Error for DecodeError {}

/// Displays an error with its sources, `a: b: c`. This crate's errors and their sources
/// (reqwest, hyper and io errors, which name the URL and the failure but never a header value)
/// carry no key, token or signature; so do the operator's.
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

/// The error and its sources on one line (see [`ErrorChain`]).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    ErrorChain(err).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: Option<&str>) -> AcsError {
        AcsError::Service {
            status,
            code: code.map(str::to_string),
            message: None,
            target: None,
            retry_after: None,
        }
    }

    #[test]
    fn the_documented_error_body_is_parsed() {
        let body = br#"{"error":{"code":"ValidationError","message":"ExpiresInMinutes value 1441 is invalid. Value must be within the [60, 1440] interval.","target":"ExpiresInMinutes"}}"#;
        let err = AcsError::from_response(400, None, body);
        assert_eq!(err.code(), Some("ValidationError"));
        assert_eq!(err.target(), Some("ExpiresInMinutes"));
        assert_eq!(err.status(), Some(400));
        assert_eq!(err.category(), "validation");
        assert!(!err.is_transient());
        let text = err.to_string();
        assert!(text.contains("http 400"), "{text}");
        assert!(text.contains("ValidationError"), "{text}");
        assert!(text.contains("[60, 1440]"), "{text}");
    }

    #[test]
    fn bodies_of_other_shapes_are_read_leniently_and_never_copied() {
        let html = AcsError::from_response(502, None, b"<html>bad gateway secret-ish</html>");
        assert_eq!(html.code(), None);
        assert_eq!(html.category(), "server");
        assert!(html.is_transient());
        assert!(!format!("{html} {html:?}").contains("secret-ish"));

        let flat = AcsError::from_response(400, None, br#"{"code":"Bad","message":"m"}"#);
        assert_eq!(flat.code(), Some("Bad"));

        let wrong_types = AcsError::from_response(400, None, br#"{"error":{"code":5}}"#);
        assert_eq!(wrong_types.code(), None);

        let empty = AcsError::from_response(404, None, b"");
        assert!(empty.is_not_found());
        assert_eq!(empty.to_string(), "acs answered http 404");
    }

    #[test]
    fn long_service_messages_are_truncated() {
        let long = "x".repeat(5000);
        let body = format!(r#"{{"error":{{"code":"C","message":"{long}"}}}}"#);
        let err = AcsError::from_response(400, None, body.as_bytes());
        assert!(err.to_string().len() < 700);
    }

    #[test]
    fn statuses_are_classified_like_azure_core() {
        for s in [408, 429, 500, 502, 503, 504, 506, 599] {
            assert!(service(s, None).is_transient(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 501, 505] {
            assert!(!service(s, None).is_transient(), "{s}");
        }
    }

    #[test]
    fn categories_are_bounded_labels() {
        let cases = [
            (service(429, None), "throttled"),
            (service(401, Some("Denied")), "unauthorized"),
            (service(401, Some("IdentityNotOwned")), "identity_not_owned"),
            (service(403, None), "unauthorized"),
            (service(404, None), "not_found"),
            (service(400, Some("ValidationError")), "validation"),
            (service(409, None), "conflict"),
            (service(408, None), "timeout"),
            (service(503, None), "server"),
            (service(418, None), "client"),
            (
                AcsError::RequiresPreview {
                    operation: "get_identity",
                },
                "unsupported",
            ),
            (
                AcsError::InvalidConnectionString(ConnectionStringError::MissingKey),
                "config",
            ),
            (
                AcsError::Fenced {
                    operation: "issue_token",
                },
                "fenced",
            ),
            (AcsError::InsecureHttp, "insecure_http"),
        ];
        for (err, want) in cases {
            assert_eq!(err.category(), want, "{err:?}");
        }
    }

    #[test]
    fn decode_errors_never_quote_the_body() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            n: u32,
        }
        let e = serde_json::from_slice::<T>(br#"{"n":"eyJhbGciOiJSUzI1NiJ9.secret"}"#).unwrap_err();
        assert!(e.to_string().contains("eyJ"), "serde quotes values: {e}");
        let err = AcsError::Decode {
            status: 200,
            source: DecodeError::from(&e),
        };
        let text = format!("{err} {:?} {}", err, err.source().unwrap());
        assert!(!text.contains("eyJ"), "{text}");
        assert_eq!(err.category(), "decode");
        assert!(!err.is_transient());
    }
}
