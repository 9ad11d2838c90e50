//! Pure HMAC-SHA256 request signing as the ACS SDKs do it. The emulator verifies requests with
//! the same functions, so one implementation is checked against the official SDK's vectors.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The `x-ms-content-sha256` value of an empty body.
pub const EMPTY_BODY_SHA256: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

/// The headers the current SDKs sign, in order.
pub const SIGNED_HEADERS: &str = "x-ms-date;host;x-ms-content-sha256";

/// The headers the 2020 `azure-communication-administration` SDK signs (it uses `Date`).
pub const LEGACY_SIGNED_HEADERS: &str = "date;host;x-ms-content-sha256";

/// Base64 (standard, padded) SHA-256 of the exact body bytes.
pub fn content_sha256(body: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(body))
}

/// The string to sign: method, raw request-target, then the signed header values joined by `;`.
pub fn string_to_sign(method: &str, path_and_query: &str, header_values: &[&str]) -> String {
    format!(
        "{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path_and_query,
        header_values.join(";")
    )
}

/// Base64 HMAC-SHA256 of `message` under the decoded access key.
pub fn sign(key: &[u8], message: &str) -> String {
    STANDARD.encode(mac(key, message.as_bytes()))
}

fn mac(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    m.update(message);
    m.finalize().into_bytes().to_vec()
}

/// Checks a base64 signature in constant time (a timing leak would let a client forge one).
pub fn verify(key: &[u8], message: &str, signature_b64: &str) -> bool {
    let Ok(given) = STANDARD.decode(signature_b64) else {
        return false;
    };
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    m.update(message.as_bytes());
    m.verify_slice(&given).is_ok()
}

/// The `Authorization` header value for a signature.
pub fn authorization(signed_headers: &str, signature: &str) -> String {
    format!("HMAC-SHA256 SignedHeaders={signed_headers}&Signature={signature}")
}

/// Parsed `Authorization: HMAC-SHA256 SignedHeaders=...&Signature=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacAuthorization {
    /// Lower-cased header names in signing order.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses an HMAC `Authorization` value; `None` for any other scheme or a malformed value.
pub fn parse_authorization(value: &str) -> Option<HmacAuthorization> {
    let rest = value.strip_prefix("HMAC-SHA256 ")?;
    let mut signed_headers = None;
    let mut signature = None;
    // The signature is base64 and may contain '=', so split each pair on the first '='.
    for part in rest.split('&') {
        let (k, v) = part.split_once('=')?;
        match k.trim() {
            "SignedHeaders" => {
                signed_headers = Some(
                    v.split(';')
                        .map(|h| h.trim().to_ascii_lowercase())
                        .collect::<Vec<_>>(),
                )
            }
            "Signature" => signature = Some(v.trim().to_string()),
            _ => return None,
        }
    }
    Some(HmacAuthorization {
        signed_headers: signed_headers?,
        signature: signature?,
    })
}

/// The RFC 1123 date the SDKs send in `x-ms-date` (e.g. `Thu, 02 Jan 2025 03:04:05 GMT`).
pub fn http_date(t: std::time::SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Headers to add to one request, computed by [`sign_request`].
#[derive(Debug, Clone)]
pub struct SignedRequestHeaders {
    pub x_ms_date: String,
    pub content_sha256: String,
    pub authorization: String,
}

/// Signs one request the way the current SDKs do.
///
/// `host` is the value the Host header will carry (host plus any non-default port) and
/// `path_and_query` the exact request-target sent on the wire.
pub fn sign_request(
    key: &[u8],
    method: &str,
    path_and_query: &str,
    host: &str,
    body: &[u8],
    now: std::time::SystemTime,
) -> SignedRequestHeaders {
    let x_ms_date = http_date(now);
    let content_sha256 = content_sha256(body);
    let sts = string_to_sign(
        method,
        path_and_query,
        &[x_ms_date.as_str(), host, content_sha256.as_str()],
    );
    let authorization = authorization(SIGNED_HEADERS, &sign(key, &sts));
    SignedRequestHeaders {
        x_ms_date,
        content_sha256,
        authorization,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_hash_matches_the_sdk_constant() {
        assert_eq!(content_sha256(b""), EMPTY_BODY_SHA256);
    }

    #[test]
    fn authorization_round_trips_through_the_parser() {
        let a = authorization(SIGNED_HEADERS, "ab+/cd==");
        let p = parse_authorization(&a).expect("parses");
        assert_eq!(
            p.signed_headers,
            ["x-ms-date", "host", "x-ms-content-sha256"]
        );
        assert_eq!(p.signature, "ab+/cd==");
    }

    #[test]
    fn other_schemes_and_garbage_are_not_parsed() {
        assert!(parse_authorization("Bearer abc").is_none());
        assert!(parse_authorization("HMAC-SHA256 Signature=x").is_none());
        assert!(parse_authorization("HMAC-SHA256 SignedHeaders=a&Foo=b&Signature=x").is_none());
    }

    #[test]
    fn verify_rejects_a_flipped_signature() {
        let sig = sign(b"key", "message");
        assert!(verify(b"key", "message", &sig));
        assert!(!verify(b"key", "messagf", &sig));
        assert!(!verify(b"kez", "message", &sig));
        assert!(!verify(b"key", "message", "not base64!"));
    }
}
