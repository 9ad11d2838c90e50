//! Access tokens: HS256 JWTs signed with a key only the emulator holds. The payload carries the
//! service's claims (§8) plus the emulator's own (`emuSeq`, key slot and generation) that the
//! validity check needs. The Python SDK decodes the payload with *standard* base64, so a
//! padding claim is varied until the base64url payload segment holds no `-` or `_`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use acs_client::hmac;
use acs_client::Scope;

/// The claims of an emulator token. Field order is the serialization order: `emuPad` comes
/// first so its length shifts the base64 alignment of everything after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "emuPad")]
    pub pad: String,
    /// The identity id without `8:` (`acs:<resource>_<id>`), as the service writes it.
    pub skypeid: String,
    /// A scope bitmask (see `scope_bits`).
    pub scp: u32,
    /// Issue time, epoch seconds as a string.
    pub csi: String,
    pub iat: i64,
    pub exp: i64,
    /// The granted scopes, comma-separated.
    #[serde(rename = "acsScope")]
    pub acs_scope: String,
    #[serde(rename = "resourceId")]
    pub resource_id: String,
    /// Global issue sequence number: revocation compares against it, not against time.
    #[serde(rename = "emuSeq")]
    pub seq: u64,
    /// Issue instant in Unix nanoseconds, for the legacy `tokensValidFrom` revocation.
    #[serde(rename = "emuIatNs")]
    pub issued_at_ns: i64,
    /// The access key (`primary`/`secondary`) that signed the minting request...
    #[serde(rename = "emuKeySlot")]
    pub key_slot: String,
    /// ...and its generation; regenerating that key invalidates the token.
    #[serde(rename = "emuKeyGeneration")]
    pub key_generation: u64,
}

impl Claims {
    /// The full identity id (`8:` + `skypeid`).
    pub fn identity_id(&self) -> String {
        format!("8:{}", self.skypeid)
    }
}

/// The emulator's token-signing key and its `kid`.
#[derive(Clone)]
pub struct SigningKey {
    secret: Vec<u8>,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from its secret; the `kid` is derived from it so it is stable across restarts.
    pub fn new(secret: Vec<u8>) -> Self {
        let digest = hmac::content_sha256(&secret);
        let kid = format!(
            "emulator-{}",
            digest
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(12)
                .collect::<String>()
        );
        Self { secret, kid }
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    kid: String,
    typ: String,
}

/// Why a token could not be minted or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is not valid")]
    BadSignature,
    #[error("no padding makes the payload segment free of '-' and '_'")]
    Unpaddable,
}

/// Mints a token; `claims.pad` is overwritten with the shortest padding that works.
pub fn mint(key: &SigningKey, mut claims: Claims) -> Result<String, TokenError> {
    let header = Header {
        alg: "HS256".into(),
        kid: key.kid.clone(),
        typ: "JWT".into(),
    };
    let header_json = serde_json::to_vec(&header).map_err(|_| TokenError::Malformed)?;
    let header_seg = URL_SAFE_NO_PAD.encode(header_json);
    // After escaping, the JSON is ASCII without '>', '?', '~', so the first try succeeds; the
    // padding loop stays as the guarantee should the claim set ever change.
    for pad_len in 0..48 {
        claims.pad = "0".repeat(pad_len);
        let payload = serde_json::to_string(&claims).map_err(|_| TokenError::Malformed)?;
        let payload_seg = URL_SAFE_NO_PAD.encode(escape_risky_chars(&payload));
        if payload_seg.contains(['-', '_']) {
            continue;
        }
        let signing_input = format!("{header_seg}.{payload_seg}");
        let sig = mac(&key.secret, signing_input.as_bytes());
        return Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)));
    }
    Err(TokenError::Unpaddable)
}

/// Escapes, as JSON `\uXXXX`, every character that can put a `-` or `_` into base64url: in
/// ASCII JSON only `>`, `?`, `~` and DEL can (as the third byte of a 3-byte group), and any
/// non-ASCII byte can. Outside strings JSON has none of them, so escaping is always valid JSON
/// that decodes to the same claims.
fn escape_risky_chars(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && !matches!(c, '>' | '?' | '~' | '\u{7f}') {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Verifies the signature and reads the claims (expiry and revocation are the store's job).
pub fn decode(key: &SigningKey, token: &str) -> Result<Claims, TokenError> {
    let mut parts = token.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TokenError::Malformed)?;
    if header.alg != "HS256" || header.kid != key.kid {
        return Err(TokenError::BadSignature);
    }
    let signing_input = format!("{h}.{p}");
    let expected = mac(&key.secret, signing_input.as_bytes());
    if !constant_time_eq(&expected, &sig) {
        return Err(TokenError::BadSignature);
    }
    serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)
}

fn mac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use ::hmac::{Hmac, Mac};
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `scp` bitmask. Only `chat` = 1792 is known (a 2020 example token); the other bits are
/// the emulator's own choice.
pub fn scope_bits(scopes: &[String]) -> u32 {
    scopes
        .iter()
        .map(|s| match Scope::parse(s) {
            Some(Scope::Chat) => 1792,
            Some(Scope::Voip) => 1 << 12,
            Some(Scope::ChatJoin) => 1 << 13,
            Some(Scope::ChatJoinLimited) => 1 << 14,
            Some(Scope::VoipJoin) => 1 << 15,
            None => 1 << 16,
        })
        .fold(0, |a, b| a | b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(skypeid: &str) -> Claims {
        Claims {
            pad: String::new(),
            skypeid: skypeid.into(),
            scp: 1792,
            csi: "1735787045".into(),
            iat: 1735787045,
            exp: 1735873445,
            acs_scope: "chat,voip".into(),
            resource_id: "2dee53b4-368b-45b4-ab52-8493fb117652".into(),
            seq: 42,
            issued_at_ns: 1_735_787_045_000_000_000,
            key_slot: "primary".into(),
            key_generation: 0,
        }
    }

    #[test]
    fn tokens_round_trip_and_a_foreign_key_is_a_bad_signature() {
        let key = SigningKey::new(vec![3; 32]);
        let t = mint(&key, claims("acs:r_u")).unwrap();
        let c = decode(&key, &t).unwrap();
        assert_eq!(c.seq, 42);
        assert_eq!(c.identity_id(), "8:acs:r_u");
        let other = SigningKey::new(vec![4; 32]);
        assert_eq!(decode(&other, &t), Err(TokenError::BadSignature));
        assert_eq!(decode(&key, "abc"), Err(TokenError::Malformed));
        let mut tampered = t.clone();
        tampered.pop();
        tampered.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert!(decode(&key, &tampered).is_err());
    }

    #[test]
    fn payloads_that_would_need_dashes_are_padded_away() {
        let key = SigningKey::new(vec![5; 32]);
        // '>' '?' '~' produce '-'/'_' at some offsets; the padding must route around them.
        for s in [
            "acs:>?~",
            "acs:~~~",
            "acs:??>>",
            "acs:plain",
            "acs:\u{e4}\u{1f600}~?",
        ] {
            let t = mint(&key, claims(s)).unwrap();
            let payload = t.split('.').nth(1).unwrap();
            assert!(!payload.contains(['-', '_']), "{s}: {payload}");
            assert_eq!(decode(&key, &t).unwrap().skypeid, s);
        }
    }

    #[test]
    fn the_payload_decodes_with_standard_base64_like_the_python_sdk() {
        use base64::engine::general_purpose::STANDARD_NO_PAD;
        let key = SigningKey::new(vec![6; 32]);
        let t = mint(&key, claims("acs:r_u")).unwrap();
        let payload = t.split('.').nth(1).unwrap();
        let bytes = STANDARD_NO_PAD.decode(payload).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["exp"].is_i64());
    }
}
