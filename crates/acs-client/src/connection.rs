//! Connection strings (`endpoint=...;accesskey=...`) parsed as the SDKs parse them, and the
//! access key held in a newtype that never prints itself.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

/// A decoded ACS access key. `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey(Vec<u8>);

impl AccessKey {
    /// Decodes a base64 key leniently, as the SDK does (padding optional).
    pub fn from_base64(s: &str) -> Result<Self, ConnectionStringError> {
        // The Python SDK uses non-strict base64; accept missing or present padding.
        const LENIENT: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new()
                .with_decode_padding_mode(DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        );
        let bytes = LENIENT
            .decode(s.trim())
            .map_err(|_| ConnectionStringError::KeyNotBase64)?;
        if bytes.is_empty() {
            return Err(ConnectionStringError::MissingKey);
        }
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The decoded key bytes, the HMAC key.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The key re-encoded as standard base64, for writing a connection string.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.0)
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessKey([redacted])")
    }
}

impl fmt::Display for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a connection string was rejected. No variant carries any part of the input, so the
/// message can go into a condition or a log without leaking the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("connection string is empty")]
    Empty,
    #[error("connection string has no endpoint (expected endpoint=https://...;accesskey=...)")]
    MissingEndpoint,
    #[error("connection string has no accesskey (expected endpoint=https://...;accesskey=...)")]
    MissingKey,
    #[error("connection string is malformed: a segment is not of the form name=value")]
    MalformedSegment,
    #[error("connection string endpoint is not an http(s) URL with a host")]
    BadEndpoint,
    #[error("connection string accesskey is not valid base64")]
    KeyNotBase64,
}

/// A parsed connection string.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The endpoint without a trailing `/`, e.g. `https://res.communication.azure.com`.
    pub endpoint: String,
    pub access_key: AccessKey,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .finish()
    }
}

impl ConnectionString {
    /// Parses `endpoint=...;accesskey=...`: pairs split on `;`, each on its first `=` (so base64
    /// padding survives), names case-insensitive, a trailing `/` on the endpoint dropped.
    pub fn parse(s: &str) -> Result<Self, ConnectionStringError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ConnectionStringError::Empty);
        }
        let mut endpoint = None;
        let mut key = None;
        for segment in s.split(';') {
            let segment = segment.trim();
            if segment.is_empty() {
                continue;
            }
            let (name, value) = segment
                .split_once('=')
                .ok_or(ConnectionStringError::MalformedSegment)?;
            match name.trim().to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(value.trim().to_string()),
                "accesskey" => key = Some(value.trim().to_string()),
                _ => {}
            }
        }
        let endpoint = endpoint
            .filter(|e| !e.is_empty())
            .ok_or(ConnectionStringError::MissingEndpoint)?;
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or(ConnectionStringError::MissingKey)?;
        let endpoint = normalize_endpoint(&endpoint)?;
        Ok(Self {
            endpoint,
            access_key: AccessKey::from_base64(&key)?,
        })
    }

    /// Renders the string back (the key included): only for the emulator's own output files.
    pub fn render(&self) -> String {
        format!(
            "endpoint={}/;accesskey={}",
            self.endpoint,
            self.access_key.to_base64()
        )
    }

    /// The host the SDK signs and the Host header carries: host plus any non-default port.
    pub fn host(&self) -> &str {
        host_of(&self.endpoint)
    }
}

/// Strips the scheme and any path, keeping `host[:port]`.
pub fn host_of(endpoint: &str) -> &str {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint);
    rest.split('/').next().unwrap_or(rest)
}

fn normalize_endpoint(e: &str) -> Result<String, ConnectionStringError> {
    let lower = e.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(ConnectionStringError::BadEndpoint);
    }
    let trimmed = e.trim_end_matches('/');
    if host_of(trimmed).is_empty() {
        return Err(ConnectionStringError::BadEndpoint);
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "/MWpQPsPwcHBb87YBQPDmkCCeUjQkdnSS4teA4XuLe8GX/1NK4OUSt/Nt4QoMkhcivscu8lWDVCO7g9O2z0B2w==";

    #[test]
    fn parses_the_portal_format() {
        let c = ConnectionString::parse(&format!(
            "endpoint=https://res.communication.azure.com/;accesskey={KEY}"
        ))
        .unwrap();
        assert_eq!(c.endpoint, "https://res.communication.azure.com");
        assert_eq!(c.host(), "res.communication.azure.com");
        assert_eq!(c.access_key.expose().len(), 64);
    }

    #[test]
    fn key_names_are_case_insensitive_and_order_free() {
        let c = ConnectionString::parse(&format!(
            " AccessKey={KEY} ; Endpoint=https://127.0.0.1:8443 ;"
        ))
        .unwrap();
        assert_eq!(c.host(), "127.0.0.1:8443");
        assert_eq!(c.access_key.to_base64(), KEY);
    }

    #[test]
    fn unpadded_keys_decode_like_the_sdk() {
        let c = ConnectionString::parse(&format!(
            "endpoint=https://x/;accesskey={}",
            KEY.trim_end_matches('=')
        ))
        .unwrap();
        assert_eq!(c.access_key.to_base64(), KEY);
    }

    #[test]
    fn malformed_strings_are_clear_errors_that_never_echo_the_key() {
        let cases = [
            ("", ConnectionStringError::Empty),
            (
                "accesskey=c2VjcmV0c2VjcmV0",
                ConnectionStringError::MissingEndpoint,
            ),
            ("endpoint=https://x/", ConnectionStringError::MissingKey),
            (
                "endpoint=https://x/;c2VjcmV0c2VjcmV0",
                ConnectionStringError::MalformedSegment,
            ),
            (
                "endpoint=ftp://x/;accesskey=c2VjcmV0c2VjcmV0",
                ConnectionStringError::BadEndpoint,
            ),
            (
                "endpoint=https://x/;accesskey=c2VjcmV0!!c2VjcmV0",
                ConnectionStringError::KeyNotBase64,
            ),
        ];
        for (input, want) in cases {
            let err = ConnectionString::parse(input).unwrap_err();
            assert_eq!(err, want, "{input:?}");
            let text = format!("{err} {err:?}");
            assert!(!text.contains("c2VjcmV0"), "error text leaks key: {text}");
        }
    }

    #[test]
    fn debug_output_is_redacted() {
        let c = ConnectionString::parse(&format!("endpoint=https://x/;accesskey={KEY}")).unwrap();
        let text = format!("{c:?} {}", c.access_key);
        assert!(text.contains("[redacted]"));
        assert!(!text.contains(&KEY[..16]));
    }
}
