//! Pure construction of ACS Identity requests: method, request-target, body bytes and whether
//! the call is idempotent. The bytes built here are exactly the bytes hashed, signed and sent.

use std::io;

use http::Method;
use serde::Serialize;

use crate::error::AcsError;
use crate::models::{CreateIdentityRequest, IssueTokenRequest, Scope};
use crate::options::ApiMode;
use crate::retry::Idempotency;

/// What to create in `create_identity`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateIdentity {
    /// Preview only: get-or-create by this caller-chosen key (1–256 characters).
    pub external_id: Option<String>,
    /// Also issue a token with these scopes and optional `expiresInMinutes`.
    pub token: Option<(Vec<Scope>, Option<u32>)>,
}

impl CreateIdentity {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_external_id(mut self, external_id: impl Into<String>) -> Self {
        self.external_id = Some(external_id.into());
        self
    }

    pub fn with_token(mut self, scopes: Vec<Scope>, expires_in_minutes: Option<u32>) -> Self {
        self.token = Some((scopes, expires_in_minutes));
        self
    }
}

/// One request, ready to be signed and sent (possibly several times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Bounded name used in logs and metrics.
    pub operation: &'static str,
    pub method: Method,
    /// Path and query relative to the endpoint, ids already percent-encoded.
    pub path_and_query: String,
    pub body: Vec<u8>,
    /// Send `Content-Type: application/json` (the SDK does so on create even with no body).
    pub json: bool,
    pub idempotency: Idempotency,
}

pub const OP_CREATE: &str = "create_identity";
pub const OP_ISSUE: &str = "issue_token";
pub const OP_REVOKE: &str = "revoke_tokens";
pub const OP_DELETE: &str = "delete_identity";
pub const OP_GET: &str = "get_identity";

/// `POST /identities`. With no token and no `externalId` there is no body, as in the SDK.
pub fn create(mode: ApiMode, req: &CreateIdentity) -> Result<Prepared, AcsError> {
    if req.external_id.is_some() && mode != ApiMode::Preview {
        return Err(AcsError::RequiresPreview {
            operation: "create_identity with externalId",
        });
    }
    let body = if req.external_id.is_none() && req.token.is_none() {
        Vec::new()
    } else {
        python_json(&CreateIdentityRequest {
            create_token_with_scopes: req.token.as_ref().map(|(scopes, _)| scope_strings(scopes)),
            expires_in_minutes: req
                .token
                .as_ref()
                .and_then(|(_, minutes)| minutes.map(i64::from)),
            external_id: req.external_id.clone(),
        })?
    };
    // With an externalId the preview create is get-or-create, so repeating it is harmless.
    let idempotency = if req.external_id.is_some() {
        Idempotency::Idempotent
    } else {
        Idempotency::NonIdempotent
    };
    Ok(Prepared {
        operation: OP_CREATE,
        method: Method::POST,
        path_and_query: with_version("/identities", mode),
        body,
        json: true,
        idempotency,
    })
}

/// `POST /identities/{id}/:issueAccessToken`.
pub fn issue_token(
    mode: ApiMode,
    id: &str,
    scopes: &[Scope],
    expires_in_minutes: Option<u32>,
) -> Result<Prepared, AcsError> {
    let body = python_json(&IssueTokenRequest {
        scopes: Some(scope_strings(scopes)),
        expires_in_minutes: expires_in_minutes.map(i64::from),
    })?;
    Ok(Prepared {
        operation: OP_ISSUE,
        method: Method::POST,
        path_and_query: with_version(
            &format!("/identities/{}/:issueAccessToken", encode_id(id)),
            mode,
        ),
        body,
        json: true,
        idempotency: Idempotency::Idempotent,
    })
}

/// `POST /identities/{id}/:revokeAccessTokens`, no body.
pub fn revoke_tokens(mode: ApiMode, id: &str) -> Prepared {
    Prepared {
        operation: OP_REVOKE,
        method: Method::POST,
        path_and_query: with_version(
            &format!("/identities/{}/:revokeAccessTokens", encode_id(id)),
            mode,
        ),
        body: Vec::new(),
        json: false,
        idempotency: Idempotency::Idempotent,
    }
}

/// `DELETE /identities/{id}`, no body.
pub fn delete_identity(mode: ApiMode, id: &str) -> Prepared {
    Prepared {
        operation: OP_DELETE,
        method: Method::DELETE,
        path_and_query: with_version(&format!("/identities/{}", encode_id(id)), mode),
        body: Vec::new(),
        json: false,
        idempotency: Idempotency::Idempotent,
    }
}

/// `GET /identities/{id}`, which exists only on the preview api-versions.
pub fn get_identity(mode: ApiMode, id: &str) -> Result<Prepared, AcsError> {
    if mode != ApiMode::Preview {
        return Err(AcsError::RequiresPreview { operation: OP_GET });
    }
    Ok(Prepared {
        operation: OP_GET,
        method: Method::GET,
        path_and_query: with_version(&format!("/identities/{}", encode_id(id)), mode),
        body: Vec::new(),
        json: false,
        idempotency: Idempotency::Idempotent,
    })
}

fn with_version(path: &str, mode: ApiMode) -> String {
    format!("{path}?api-version={}", mode.api_version())
}

fn scope_strings(scopes: &[Scope]) -> Vec<String> {
    scopes.iter().map(|s| s.as_str().to_string()).collect()
}

/// Percent-encodes an identity id as the sync Python SDK does (`urllib.parse.quote(id,
/// safe='')`): everything but unreserved characters, so `8:acs:...` becomes `8%3Aacs%3A...`.
pub fn encode_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 8);
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Serializes like Python's `json.dumps` (`", "` and `": "` separators, non-ASCII escaped as
/// `\uXXXX`), so the client's bodies are byte-identical to the official SDK's.
pub fn python_json<T: Serialize>(value: &T) -> Result<Vec<u8>, AcsError> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut ser)
        .map_err(|source| AcsError::Encode { source })?;
    Ok(out)
}

struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = include_str!("../../../tests/fixtures/acs-hmac-vectors.json");
    const ID: &str =
        "8:acs:2dee53b4-368b-45b4-ab52-8493fb117652_00000005-14a2-493b-8a72-5a3a0d000081";

    fn vector(name: &str) -> serde_json::Value {
        let all: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
        all["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no vector {name}"))
            .clone()
    }

    /// The request this module builds must equal, byte for byte, what the SDK sent.
    fn assert_same_as_sdk(p: &Prepared, name: &str) {
        let v = vector(name);
        assert_eq!(p.method.as_str(), v["method"], "{name}");
        assert_eq!(p.path_and_query, v["path_and_query_signed"], "{name}");
        assert_eq!(
            String::from_utf8(p.body.clone()).unwrap(),
            v["body_utf8"].as_str().unwrap(),
            "{name}"
        );
    }

    #[test]
    fn requests_are_byte_identical_to_the_sdks() {
        let ga = ApiMode::Ga;
        assert_same_as_sdk(&create(ga, &CreateIdentity::new()).unwrap(), "create_user");
        assert_same_as_sdk(
            &create(
                ga,
                &CreateIdentity::new().with_token(vec![Scope::Chat, Scope::Voip], None),
            )
            .unwrap(),
            "create_user_and_token_chat_voip",
        );
        assert_same_as_sdk(
            &create(
                ga,
                &CreateIdentity::new().with_token(vec![Scope::Chat], Some(60)),
            )
            .unwrap(),
            "create_user_and_token_chat_60min",
        );
        assert_same_as_sdk(
            &issue_token(ga, ID, &[Scope::Voip], None).unwrap(),
            "get_token_voip_default",
        );
        assert_same_as_sdk(
            &issue_token(ga, ID, &Scope::ALL, Some(1440)).unwrap(),
            "get_token_all_scopes_1440min",
        );
        assert_same_as_sdk(&revoke_tokens(ga, ID), "revoke_tokens");
        assert_same_as_sdk(&delete_identity(ga, ID), "delete_user");
    }

    #[test]
    fn content_type_and_idempotency_follow_the_sdk_and_the_create_rule() {
        let ga = create(ApiMode::Ga, &CreateIdentity::new()).unwrap();
        assert!(ga.json);
        assert_eq!(ga.idempotency, Idempotency::NonIdempotent);
        let preview = create(
            ApiMode::Preview,
            &CreateIdentity::new().with_external_id("user-1"),
        )
        .unwrap();
        assert_eq!(preview.idempotency, Idempotency::Idempotent);
        assert_eq!(
            preview.path_and_query,
            "/identities?api-version=2025-04-01-preview"
        );
        assert_eq!(
            String::from_utf8(preview.body).unwrap(),
            r#"{"externalId": "user-1"}"#
        );
        assert!(!revoke_tokens(ApiMode::Ga, ID).json);
        assert!(!delete_identity(ApiMode::Ga, ID).json);
        assert!(issue_token(ApiMode::Ga, ID, &[], None).unwrap().json);
    }

    #[test]
    fn preview_features_are_refused_in_ga_before_anything_is_sent() {
        let err = create(ApiMode::Ga, &CreateIdentity::new().with_external_id("x")).unwrap_err();
        assert_eq!(err.category(), "unsupported");
        let err = get_identity(ApiMode::Ga, ID).unwrap_err();
        assert!(err.to_string().contains("preview"), "{err}");
        let ok = get_identity(ApiMode::Preview, ID).unwrap();
        assert_eq!(ok.method, Method::GET);
        assert!(ok.path_and_query.starts_with("/identities/8%3Aacs%3A"));
    }

    #[test]
    fn ids_are_encoded_like_python_quote_with_no_safe_characters() {
        assert_eq!(encode_id("8:acs:a_b-c.d~e"), "8%3Aacs%3Aa_b-c.d~e");
        assert_eq!(encode_id("a/b?c#d e%"), "a%2Fb%3Fc%23d%20e%25");
        assert_eq!(encode_id("é"), "%C3%A9");
    }

    #[test]
    fn json_bodies_escape_non_ascii_like_python() {
        let body = python_json(&serde_json::json!({"externalId": "é😀\"", "n": [1, 2]})).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"externalId": "\u00e9\ud83d\ude00\"", "n": [1, 2]}"#
        );
    }
}
