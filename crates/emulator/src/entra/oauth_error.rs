//! Token endpoint errors in Entra's shape: `{"error", "error_description": "AADSTS<code>: ...
//! Trace ID: ... Correlation ID: ... Timestamp: ...", "error_codes", "timestamp", "trace_id",
//! "correlation_id", "error_uri"}`. Descriptions name ids, issuers and subjects as Entra's do,
//! never a secret or an assertion.

use http::{HeaderValue, StatusCode};
use jiff::Timestamp;
use serde_json::json;
use uuid::Uuid;

use crate::response::{self, Resp};

/// Where Entra's own error descriptions point for workload identity federation.
const WIF_DOC: &str = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

/// One token-endpoint (or discovery) failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AadError {
    pub status: StatusCode,
    /// The OAuth 2.0 error (`invalid_client`, `invalid_request`, ...).
    pub error: &'static str,
    /// The AADSTS number.
    pub code: u32,
    pub description: String,
}

impl AadError {
    fn new(status: StatusCode, error: &'static str, code: u32, description: String) -> Self {
        Self {
            status,
            error,
            code,
            description,
        }
    }

    pub fn missing_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    pub fn tenant_not_found(tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        )
    }

    /// For the discovery documents Entra names the same failure `invalid_tenant`.
    pub fn invalid_tenant(tenant: &str) -> Self {
        Self {
            error: "invalid_tenant",
            ..Self::tenant_not_found(tenant)
        }
    }

    pub fn unsupported_grant_type(grant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        )
    }

    pub fn invalid_scope(scope: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid. The emulator issues tokens for https://communication.azure.com//.default only."
            ),
        )
    }

    pub fn scope_not_default(scope: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        )
    }

    pub fn app_not_found(client_id: &str, tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    }

    pub fn no_credential() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into(),
        )
    }

    /// The emulator's choice: the same code as a missing credential, for two at once.
    pub fn two_credentials() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            7000218,
            "The request body must contain only one of the following parameters: 'client_assertion' or 'client_secret'.".into(),
        )
    }

    pub fn invalid_secret(client_id: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        )
    }

    pub fn unexpected_assertion_type() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90011,
            "Unexpected client assertion type.".into(),
        )
    }

    pub fn malformed_assertion() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.".into(),
        )
    }

    /// The client has no federated credential at all.
    pub fn no_federated_record(issuer: &str, subject: &str, audience: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            70021,
            format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{audience}'. {WIF_DOC}"
            ),
        )
    }

    pub fn no_record_for_issuer(issuer: &str) -> Self {
        Self::no_record(700211, "issuer", issuer)
    }

    pub fn no_record_for_audience(audience: &str) -> Self {
        Self::no_record(700212, "audience", audience)
    }

    pub fn no_record_for_subject(subject: &str) -> Self {
        Self::no_record(700213, "subject", subject)
    }

    fn no_record(code: u32, what: &str, value: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            format!(
                "No matching federated identity record found for presented assertion {what} '{value}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. {WIF_DOC}"
            ),
        )
    }

    pub fn oidc_fetch_failed(detail: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            50166,
            format!("Request to External OIDC endpoint failed. {detail}"),
        )
    }

    pub fn bad_signature(reason: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            50013,
            format!("Assertion failed signature validation. [Reason - {reason}]"),
        )
    }

    pub fn assertion_time(now: Timestamp, valid_from: Option<i64>, expiry: Option<i64>) -> Self {
        let show = |s: Option<i64>| {
            s.and_then(|s| Timestamp::from_second(s).ok())
                .map_or_else(|| "(none)".to_string(), |t| t.to_string())
        };
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {}, expiry time of assertion {}.",
                show(valid_from),
                show(expiry)
            ),
        )
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            900561,
            format!(
                "The endpoint only accepts POST, OPTIONS requests. Received a {method} request."
            ),
        )
    }

    pub fn invalid_instance() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_instance",
            50049,
            "Unknown or invalid instance.".into(),
        )
    }

    pub fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            90100,
            "The emulator could not issue a token.".into(),
        )
    }

    /// The stats key of this failure: `AADSTS<code>`.
    pub fn stats_key(&self) -> String {
        format!("AADSTS{}", self.code)
    }

    /// The response, with a fresh trace id and the client's correlation id when it sent one.
    pub fn into_response(self, authority: &str, correlation_id: Option<&str>) -> Resp {
        let trace_id = Uuid::new_v4().to_string();
        let correlation_id = correlation_id
            .filter(|c| Uuid::parse_str(c).is_ok())
            .map_or_else(|| Uuid::new_v4().to_string(), str::to_string);
        let timestamp = Timestamp::now().strftime("%Y-%m-%d %H:%M:%SZ").to_string();
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("{authority}/error?code={}", self.code),
        });
        no_store(response::json(self.status, &body))
    }
}

/// Token responses must not be cached (RFC 6749 §5.1), and Entra says so on errors too.
pub fn no_store(mut r: Resp) -> Resp {
    let h = r.headers_mut();
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    h.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}
