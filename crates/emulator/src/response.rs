//! Building HTTP responses: JSON bodies with the service's content types, the standard
//! `{"error":{...}}` body, and the service's instant format.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use jiff::Timestamp;
use serde::Serialize;

use acs_client::models::{ErrorBody, ErrorResponse};

/// Every response the emulator sends.
pub type Resp = Response<Full<Bytes>>;

fn with_body(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A success body, sent as `application/json; charset=utf-8` as the service does.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    match serde_json::to_vec(value) {
        Ok(body) => with_body(status, "application/json; charset=utf-8", body),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "The emulator could not serialize its response.",
            None,
        ),
    }
}

/// The standard error body, sent as `application/json` as the service does.
pub fn error(status: StatusCode, code: &str, message: &str, target: Option<&str>) -> Resp {
    let body = ErrorResponse {
        error: ErrorBody {
            code: code.to_string(),
            message: message.to_string(),
            target: target.map(str::to_string),
            details: None,
            innererror: None,
        },
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    with_body(status, "application/json", bytes)
}

/// A response without a body (204).
pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// The gateway's answer to any authentication failure.
pub fn denied() -> Resp {
    error(
        StatusCode::UNAUTHORIZED,
        "Denied",
        "Denied by the resource provider.",
        None,
    )
}

/// An error answer, built by handlers and rendered once at the end (small, unlike a `Resp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub target: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            target: None,
        }
    }

    /// A 400 `ValidationError` with a target.
    pub fn validation(target: &'static str, message: impl Into<String>) -> Self {
        Self {
            target: Some(target),
            ..Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
        }
    }

    /// A 400 `BadRequest` (malformed body).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn into_response(self) -> Resp {
        error(self.status, self.code, &self.message, self.target)
    }
}

/// Adds `Retry-After` in seconds.
pub fn retry_after(mut r: Resp, seconds: u64) -> Resp {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    r
}

/// The 429 of a rate limit or an injected throttle.
pub fn throttled(seconds: u64) -> Resp {
    retry_after(
        error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "The request rate exceeds the limit of the resource. Retry after the time in the Retry-After header.",
            None,
        ),
        seconds,
    )
}

/// The service's instant format: UTC, 7 fractional digits, `+00:00`
/// (e.g. `2022-11-16T09:48:02.7233445+00:00`).
pub fn format_instant(ts: Timestamp) -> String {
    let whole = ts.strftime("%Y-%m-%dT%H:%M:%S");
    let ticks = ts.subsec_nanosecond() / 100;
    format!("{whole}.{ticks:07}+00:00")
}

/// 405 for an admin route (`admin.rs`'s and the Entra admin routes'), naming the allowed methods.
pub fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "The requested method is not allowed for this emulator admin route.",
        None,
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_have_seven_fractional_digits_and_an_explicit_offset() {
        let ts: Timestamp = "2022-11-16T09:48:02.72334459Z".parse().unwrap();
        assert_eq!(format_instant(ts), "2022-11-16T09:48:02.7233445+00:00");
        let ts: Timestamp = "2025-01-03T03:04:05Z".parse().unwrap();
        assert_eq!(format_instant(ts), "2025-01-03T03:04:05.0000000+00:00");
        let back: Timestamp = format_instant(ts).parse().unwrap();
        assert_eq!(back, ts);
    }
}
