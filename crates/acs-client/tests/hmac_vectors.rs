//! Walks every HMAC vector the official Python SDKs produced (`tests/fixtures/acs-hmac-vectors.json`)
//! and checks `acs::hmac` byte for byte: content hash, string-to-sign, signature, Authorization.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::SystemTime;

use acs_client::connection::AccessKey;
use acs_client::hmac;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

const FIXTURE: &str = include_str!("../../../tests/fixtures/acs-hmac-vectors.json");

/// What the fixture holds today; fewer means it was truncated and the walk would prove less.
const MIN_CURRENT_VECTORS: usize = 13;
const MIN_LEGACY_VECTORS: usize = 5;
const MIN_WIRE_REQUESTS: usize = 12;
const MIN_OPERATIONS: usize = 8;
const MIN_LEGACY_OPERATIONS: usize = 5;

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).unwrap()
}

fn key(f: &Value) -> Vec<u8> {
    let k = AccessKey::from_base64(f["access_key_base64"].as_str().unwrap()).unwrap();
    assert_eq!(
        k.expose().len() as u64,
        f["access_key_decoded_bytes"].as_u64().unwrap()
    );
    k.expose().to_vec()
}

fn fixed_time(f: &Value) -> SystemTime {
    let ts: jiff::Timestamp = f["fixed_time_utc"].as_str().unwrap().parse().unwrap();
    SystemTime::from(ts)
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} missing in {v}"))
}

fn array<'a>(v: &'a Value, min: usize, what: &str) -> &'a Vec<Value> {
    let a = v
        .as_array()
        .unwrap_or_else(|| panic!("{what} is not an array"));
    assert!(
        a.len() >= min,
        "{what}: expected at least {min} entries, the fixture has {}",
        a.len()
    );
    a
}

/// The signature part of an Authorization value.
fn signature_of(authorization: &str) -> String {
    hmac::parse_authorization(authorization)
        .unwrap_or_else(|| panic!("unparsable authorization {authorization}"))
        .signature
}

/// `https://host:port/path?query` split into netloc and request-target.
fn split_url(url: &str) -> (&str, &str) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap();
    let slash = rest.find('/').unwrap();
    (&rest[..slash], &rest[slash..])
}

/// Checks one `vectors`/`legacy_sdk.vectors` entry.
fn check_vector(key: &[u8], v: &Value, signed_headers: &str) {
    let name = s(v, "name");
    let body = STANDARD.decode(s(v, "body_base64")).unwrap();
    assert_eq!(
        body,
        s(v, "body_utf8").as_bytes(),
        "{name}: body fields agree"
    );

    let hash = hmac::content_sha256(&body);
    assert_eq!(hash, s(v, "x-ms-content-sha256"), "{name}: content hash");

    let sts = hmac::string_to_sign(
        s(v, "method"),
        s(v, "path_and_query_signed"),
        &[s(v, "x-ms-date"), s(v, "host_signed"), &hash],
    );
    assert_eq!(sts, s(v, "string_to_sign"), "{name}: string to sign");

    let signature = hmac::sign(key, &sts);
    assert_eq!(
        signature,
        signature_of(s(v, "authorization")),
        "{name}: signature"
    );
    assert!(hmac::verify(key, &sts, &signature), "{name}: verify");
    assert_eq!(
        hmac::authorization(signed_headers, &signature),
        s(v, "authorization"),
        "{name}: authorization header"
    );

    // The SDK signs the URL's own path and query (legacy: `url[len(host)+8:]`, right for https).
    let (netloc, target) = split_url(s(v, "url"));
    assert_eq!(netloc, s(v, "url_netloc"), "{name}: netloc");
    assert_eq!(target, s(v, "path_and_query_signed"), "{name}: signed path");
}

#[test]
fn every_current_sdk_vector_is_reproduced_byte_for_byte() {
    let f = fixture();
    let key = key(&f);
    let vectors = array(&f["vectors"], MIN_CURRENT_VECTORS, "vectors");
    for v in vectors {
        check_vector(&key, v, hmac::SIGNED_HEADERS);
    }
}

#[test]
fn every_legacy_sdk_vector_is_reproduced_with_the_date_header() {
    let f = fixture();
    let key = key(&f);
    let legacy = &f["legacy_sdk"];
    assert_eq!(s(legacy, "api_version"), "2020-07-20-preview2");
    let vectors = array(&legacy["vectors"], MIN_LEGACY_VECTORS, "legacy vectors");
    for v in vectors {
        assert_eq!(s(v, "date_header_name"), "Date", "{}", s(v, "name"));
        check_vector(&key, v, hmac::LEGACY_SIGNED_HEADERS);
        assert_eq!(hmac::LEGACY_SIGNED_HEADERS, "date;host;x-ms-content-sha256");
    }
}

#[test]
fn sign_request_reproduces_every_current_sdk_vector_at_the_fixed_time() {
    let f = fixture();
    let key = key(&f);
    let now = fixed_time(&f);
    let vectors = array(&f["vectors"], MIN_CURRENT_VECTORS, "vectors");
    for v in vectors {
        let name = s(v, "name");
        let body = STANDARD.decode(s(v, "body_base64")).unwrap();
        let signed = hmac::sign_request(
            &key,
            s(v, "method"),
            s(v, "path_and_query_signed"),
            s(v, "host_signed"),
            &body,
            now,
        );
        assert_eq!(signed.x_ms_date, s(v, "x-ms-date"), "{name}: x-ms-date");
        assert_eq!(
            signed.content_sha256,
            s(v, "x-ms-content-sha256"),
            "{name}: hash"
        );
        assert_eq!(
            signed.authorization,
            s(v, "authorization"),
            "{name}: authorization"
        );
    }
}

#[test]
fn the_trailing_slash_quirk_is_reproduced_but_cannot_verify_against_the_host_header() {
    let f = fixture();
    let key = key(&f);
    let v = array(&f["vectors"], MIN_CURRENT_VECTORS, "vectors")
        .iter()
        .find(|v| v["name"] == "endpoint_with_trailing_slash_quirk")
        .expect("the quirk vector is in the fixture");
    assert_eq!(s(v, "host_signed"), "127.0.0.1:8443/");
    assert_eq!(s(v, "url_netloc"), "127.0.0.1:8443");
    // A verifier rebuilds the string from the Host header as received: it cannot match.
    let from_wire = hmac::string_to_sign(
        s(v, "method"),
        s(v, "path_and_query_signed"),
        &[
            s(v, "x-ms-date"),
            s(v, "url_netloc"),
            s(v, "x-ms-content-sha256"),
        ],
    );
    assert_ne!(from_wire, s(v, "string_to_sign"));
    assert!(!hmac::verify(
        &key,
        &from_wire,
        &signature_of(s(v, "authorization"))
    ));
}

fn header<'a>(headers: &'a [Value], name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| {
        let pair = h.as_array().unwrap();
        pair[0]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(name)
            .then(|| pair[1].as_str().unwrap())
    })
}

#[test]
fn every_wire_capture_verifies_from_what_was_on_the_wire() {
    let f = fixture();
    let key = key(&f);
    let captures = array(&f["wire_captures"], 3, "wire_captures");
    let mut checked = 0;
    for capture in captures {
        let client = s(capture, "client");
        for r in array(&capture["requests"], 1, client) {
            let Some(sdk_sts) = r["string_to_sign_by_sdk"].as_str() else {
                continue;
            };
            let request_line = s(r, "request_line");
            let mut parts = request_line.split(' ');
            let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
            let headers = r["headers"].as_array().unwrap();
            let auth = header(headers, "Authorization").unwrap();
            let parsed = hmac::parse_authorization(auth).unwrap();
            // A verifier reads the signed header names and takes each value as received.
            let values: Vec<&str> = parsed
                .signed_headers
                .iter()
                .map(|name| {
                    header(headers, name)
                        .unwrap_or_else(|| panic!("{client}: no {name} header in {request_line}"))
                })
                .collect();
            let body = s(r, "body_utf8").as_bytes();
            assert_eq!(
                hmac::content_sha256(body),
                header(headers, "x-ms-content-sha256").unwrap(),
                "{client} {request_line}: body hash"
            );
            let sts = hmac::string_to_sign(method, target, &values);
            assert_eq!(sts, sdk_sts, "{client} {request_line}: string to sign");
            let signature = hmac::sign(&key, &sts);
            assert_eq!(signature, parsed.signature, "{client} {request_line}");
            assert_eq!(
                hmac::authorization(hmac::SIGNED_HEADERS, &signature),
                auth,
                "{client} {request_line}: authorization header"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= MIN_WIRE_REQUESTS,
        "only {checked} wire requests carried string_to_sign_by_sdk"
    );
}

#[test]
fn every_recorded_sdk_operation_is_signed_as_the_sdk_signed_it() {
    let f = fixture();
    let key = key(&f);
    let now = fixed_time(&f);
    let groups = [
        (
            array(&f["operations"], MIN_OPERATIONS, "operations"),
            "x-ms-date",
            hmac::SIGNED_HEADERS,
        ),
        (
            array(
                &f["legacy_sdk"]["operations"],
                MIN_LEGACY_OPERATIONS,
                "legacy operations",
            ),
            "Date",
            hmac::LEGACY_SIGNED_HEADERS,
        ),
    ];
    for (ops, date_header, signed_headers) in groups {
        for op in ops {
            let call = s(op, "sdk_call");
            let headers: Vec<(&str, &str)> = op["headers_set_by_sdk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (s(h, "name"), s(h, "value")))
                .collect();
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| *v)
                    .unwrap_or_else(|| panic!("{call}: no {name}"))
            };
            let (host, target) = split_url(s(op, "url"));
            let body = s(op, "body_utf8").as_bytes();
            let hash = hmac::content_sha256(body);
            assert_eq!(hash, get("x-ms-content-sha256"), "{call}: hash");
            assert_eq!(get(date_header), hmac::http_date(now), "{call}: date");
            let sts =
                hmac::string_to_sign(s(op, "method"), target, &[get(date_header), host, &hash]);
            assert_eq!(
                hmac::authorization(signed_headers, &hmac::sign(&key, &sts)),
                get("Authorization"),
                "{call}: authorization"
            );
        }
    }
}
