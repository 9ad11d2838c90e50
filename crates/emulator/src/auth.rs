//! HMAC-SHA256 request authentication exactly as the service checks it: the signed header
//! names come from `SignedHeaders`, the path is the raw request-target, `host` is the Host
//! header as received, the body hash must match the exact body bytes, and the signed date must
//! be inside the clock-skew window. Every failure is the same 401 `Denied` to the client; the
//! reason only goes to debug logs (never the header or signature themselves). Requests with a
//! bearer token go to the Entra gate instead (`entra::bearer`); `presented` tells them apart.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use acs_client::hmac;
use acs_client::AccessKey;

/// Which access key signed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeySlot {
    Primary,
    Secondary,
}

impl KeySlot {
    pub fn index(self) -> usize {
        match self {
            KeySlot::Primary => 0,
            KeySlot::Secondary => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeySlot::Primary => "primary",
            KeySlot::Secondary => "secondary",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "primary" => Some(KeySlot::Primary),
            "secondary" => Some(KeySlot::Secondary),
            _ => None,
        }
    }
}

/// Who a request acts as: an access key (HMAC) or an Entra principal (bearer token). Tokens
/// it mints record it, so a key regeneration revokes only the tokens minted under that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Key(KeySlot),
    Entra,
}

impl Caller {
    /// The `emuKeySlot` claim: `primary`, `secondary` or `entra`.
    pub fn as_str(self) -> &'static str {
        match self {
            Caller::Key(slot) => slot.as_str(),
            Caller::Entra => ENTRA_SLOT,
        }
    }
}

/// The `emuKeySlot` of tokens minted for an Entra principal.
pub const ENTRA_SLOT: &str = "entra";

/// The credential scheme a request presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// HMAC, or nothing usable (HMAC verification then says why).
    Hmac,
    /// `Authorization: Bearer <token>` and no HMAC header.
    Bearer(&'a str),
    /// Two `Authorization` headers, or a bearer token with `x-ms-content-sha256`: the SDKs never
    /// send both schemes, so this is refused as an authentication failure.
    Mixed,
}

/// Which scheme the request's headers present.
pub fn presented(headers: &HeaderMap) -> Presented<'_> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Presented::Mixed;
    }
    let Some(value) = first.and_then(|v| v.to_str().ok()) else {
        return Presented::Hmac;
    };
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            if headers.contains_key("x-ms-content-sha256") {
                Presented::Mixed
            } else {
                Presented::Bearer(token.trim())
            }
        }
        _ => Presented::Hmac,
    }
}

/// Why a request was denied (for logs; the client always sees the same 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no authorization header")]
    MissingAuthorization,
    #[error("authorization is not a valid HMAC-SHA256 value")]
    MalformedAuthorization,
    #[error("signed headers must include host, x-ms-content-sha256 and x-ms-date or date")]
    IncompleteSignedHeaders,
    #[error("a signed header is missing from the request")]
    MissingSignedHeader,
    #[error("the signed date is not an http date")]
    BadDate,
    #[error("the signed date is outside the clock-skew window")]
    StaleDate,
    #[error("x-ms-content-sha256 does not match the body")]
    BodyHashMismatch,
    #[error("the signature matches no access key")]
    BadSignature,
}

/// One request as received.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The raw request-target (path and query) exactly as on the wire.
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Checks a request against the current keys; returns the slot of the key that signed it.
pub fn authenticate(
    req: &Request<'_>,
    keys: &[(KeySlot, AccessKey)],
    now: SystemTime,
    skew: Duration,
) -> Result<KeySlot, AuthFailure> {
    let value = req
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthFailure::MissingAuthorization)?
        .to_str()
        .map_err(|_| AuthFailure::MalformedAuthorization)?;
    let parsed = hmac::parse_authorization(value).ok_or(AuthFailure::MalformedAuthorization)?;
    let names = &parsed.signed_headers;
    let has = |n: &str| names.iter().any(|h| h == n);
    let date_name = if has("x-ms-date") {
        "x-ms-date"
    } else if has("date") {
        "date"
    } else {
        return Err(AuthFailure::IncompleteSignedHeaders);
    };
    if !has("host") || !has("x-ms-content-sha256") {
        return Err(AuthFailure::IncompleteSignedHeaders);
    }
    let mut values = Vec::with_capacity(names.len());
    for name in names {
        let v = req
            .headers
            .get(name.as_str())
            .ok_or(AuthFailure::MissingSignedHeader)?
            .to_str()
            .map_err(|_| AuthFailure::MissingSignedHeader)?;
        values.push(v);
    }
    let date = req
        .headers
        .get(date_name)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthFailure::MissingSignedHeader)?;
    let signed_at = httpdate::parse_http_date(date).map_err(|_| AuthFailure::BadDate)?;
    let drift = now
        .duration_since(signed_at)
        .unwrap_or_else(|e| e.duration());
    if drift > skew {
        return Err(AuthFailure::StaleDate);
    }
    let claimed_hash = req
        .headers
        .get("x-ms-content-sha256")
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthFailure::MissingSignedHeader)?;
    if claimed_hash != hmac::content_sha256(req.body) {
        return Err(AuthFailure::BodyHashMismatch);
    }
    let string_to_sign = hmac::string_to_sign(req.method, req.target, &values);
    keys.iter()
        .find(|(_, key)| hmac::verify(key.expose(), &string_to_sign, &parsed.signature))
        .map(|(slot, _)| *slot)
        .ok_or(AuthFailure::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> serde_json::Value {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/acs-hmac-vectors.json"
        ))
        .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn at_vector_time() -> SystemTime {
        httpdate::parse_http_date("Thu, 02 Jan 2025 03:04:05 GMT").unwrap()
    }

    #[test]
    fn every_sdk_vector_verifies_and_a_wrong_key_does_not() {
        let v = vectors();
        let key = AccessKey::from_base64(v["access_key_base64"].as_str().unwrap()).unwrap();
        let wrong = AccessKey::from_bytes(vec![7; 64]);
        let mut all: Vec<serde_json::Value> = v["vectors"].as_array().unwrap().clone();
        all.extend(
            v["legacy_sdk"]["vectors"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
        let mut checked = 0;
        for vec in all {
            let host = vec["host_signed"].as_str().unwrap();
            if host.ends_with('/') {
                // The trailing-slash quirk signs a host no Host header can carry.
                continue;
            }
            let date_name = vec["date_header_name"].as_str().unwrap_or("x-ms-date");
            let h = headers(&[
                ("host", host),
                (date_name, vec["x-ms-date"].as_str().unwrap()),
                (
                    "x-ms-content-sha256",
                    vec["x-ms-content-sha256"].as_str().unwrap(),
                ),
                ("authorization", vec["authorization"].as_str().unwrap()),
            ]);
            let body = vec["body_utf8"].as_str().unwrap().as_bytes();
            let req = Request {
                method: vec["method"].as_str().unwrap(),
                target: vec["path_and_query_signed"].as_str().unwrap(),
                headers: &h,
                body,
            };
            let skew = Duration::from_secs(300);
            let name = vec["name"].as_str().unwrap();
            assert_eq!(
                authenticate(
                    &req,
                    &[(KeySlot::Secondary, key.clone())],
                    at_vector_time(),
                    skew
                ),
                Ok(KeySlot::Secondary),
                "{name}"
            );
            assert_eq!(
                authenticate(
                    &req,
                    &[(KeySlot::Primary, wrong.clone())],
                    at_vector_time(),
                    skew
                ),
                Err(AuthFailure::BadSignature),
                "{name}"
            );
            checked += 1;
        }
        assert!(checked >= 16);
    }

    #[test]
    fn wire_captures_verify_against_the_request_line_and_host_as_received() {
        let v = vectors();
        let key = AccessKey::from_base64(v["access_key_base64"].as_str().unwrap()).unwrap();
        for capture in v["wire_captures"].as_array().unwrap() {
            for r in capture["requests"].as_array().unwrap() {
                let line = r["request_line"].as_str().unwrap();
                let mut parts = line.split(' ');
                let method = parts.next().unwrap();
                let target = parts.next().unwrap();
                let pairs: Vec<(String, String)> = r["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        (
                            h[0].as_str().unwrap().to_string(),
                            h[1].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                let refs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(a, b)| (a.as_str(), b.as_str()))
                    .collect();
                let h = headers(&refs);
                let req = Request {
                    method,
                    target,
                    headers: &h,
                    body: r["body_utf8"].as_str().unwrap().as_bytes(),
                };
                assert_eq!(
                    authenticate(
                        &req,
                        &[(KeySlot::Primary, key.clone())],
                        at_vector_time(),
                        Duration::from_secs(300)
                    ),
                    Ok(KeySlot::Primary),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn bearer_hmac_and_mixed_schemes_are_told_apart() {
        assert_eq!(presented(&headers(&[])), Presented::Hmac);
        assert_eq!(
            presented(&headers(&[(
                "authorization",
                "HMAC-SHA256 SignedHeaders=x&Signature=y"
            )])),
            Presented::Hmac
        );
        assert_eq!(
            presented(&headers(&[("authorization", "bearer abc")])),
            Presented::Bearer("abc")
        );
        assert_eq!(
            presented(&headers(&[
                ("authorization", "Bearer abc"),
                (
                    "x-ms-content-sha256",
                    "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
                )
            ])),
            Presented::Mixed
        );
        assert_eq!(
            presented(&headers(&[
                ("authorization", "Bearer abc"),
                ("authorization", "HMAC-SHA256 SignedHeaders=x&Signature=y")
            ])),
            Presented::Mixed
        );
    }

    #[test]
    fn stale_dates_tampered_bodies_and_other_hosts_are_denied() {
        let key = AccessKey::from_bytes(vec![1; 64]);
        let now = at_vector_time();
        let body = br#"{"scopes": ["chat"]}"#;
        let signed = hmac::sign_request(
            key.expose(),
            "POST",
            "/identities?api-version=2023-10-01",
            "h:1",
            body,
            now,
        );
        let h = headers(&[
            ("host", "h:1"),
            ("x-ms-date", &signed.x_ms_date),
            ("x-ms-content-sha256", &signed.content_sha256),
            ("authorization", &signed.authorization),
        ]);
        let keys = [(KeySlot::Primary, key)];
        let skew = Duration::from_secs(300);
        let req = |body: &'static [u8], h: &'static HeaderMap| Request {
            method: "POST",
            target: "/identities?api-version=2023-10-01",
            headers: h,
            body,
        };
        let h: &'static HeaderMap = Box::leak(Box::new(h));
        assert_eq!(
            authenticate(&req(body, h), &keys, now, skew),
            Ok(KeySlot::Primary)
        );
        assert_eq!(
            authenticate(&req(br#"{"scopes": ["voip"]}"#, h), &keys, now, skew),
            Err(AuthFailure::BodyHashMismatch)
        );
        assert_eq!(
            authenticate(&req(body, h), &keys, now + Duration::from_secs(301), skew),
            Err(AuthFailure::StaleDate)
        );
        assert_eq!(
            authenticate(&req(body, h), &keys, now - Duration::from_secs(301), skew),
            Err(AuthFailure::StaleDate)
        );
        let mut other = h.clone();
        other.insert("host", "h:2".parse().unwrap());
        let other: &'static HeaderMap = Box::leak(Box::new(other));
        assert_eq!(
            authenticate(&req(body, other), &keys, now, skew),
            Err(AuthFailure::BadSignature)
        );
        let mut none = h.clone();
        none.remove("authorization");
        let none: &'static HeaderMap = Box::leak(Box::new(none));
        assert_eq!(
            authenticate(&req(body, none), &keys, now, skew),
            Err(AuthFailure::MissingAuthorization)
        );
    }
}
