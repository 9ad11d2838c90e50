//! Client assertions checked as Entra checks a federated identity credential: the unverified
//! claims pick the credential (issuer, then subject, then audience, each an exact match), the
//! issuer's published keys verify the signature, then the time window (with the emulator's
//! clock skew) is checked. Each failure is the AADSTS error Entra gives for it.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jiff::Timestamp;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::clients::{Client, FederatedCredential};
use super::oauth_error::AadError;
use super::oidc::OidcFetcher;

/// Signature algorithms accepted for assertions (Kubernetes signs RS256 or ES256).
const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// The claims that pick and bound an assertion; `aud` may be a string or a list.
#[derive(Debug, Deserialize)]
struct Unverified {
    iss: Option<String>,
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
}

impl Unverified {
    fn audiences(&self) -> Vec<String> {
        match &self.aud {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Reads the claims without trusting them (they only pick the credential to check against).
fn peek(assertion: &str) -> Result<(jsonwebtoken::Header, Unverified), AadError> {
    let header =
        jsonwebtoken::decode_header(assertion).map_err(|_| AadError::malformed_assertion())?;
    let payload = assertion
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .ok_or_else(AadError::malformed_assertion)?;
    let claims: Unverified =
        serde_json::from_slice(&payload).map_err(|_| AadError::malformed_assertion())?;
    Ok((header, claims))
}

/// The federated credential of `client` that the assertion's claims match.
fn matching_credential<'a>(
    client: &'a Client,
    iss: &str,
    sub: &str,
    audiences: &[String],
) -> Result<&'a FederatedCredential, AadError> {
    if client.federated.is_empty() {
        return Err(AadError::no_federated_record(
            iss,
            sub,
            &audiences.join(","),
        ));
    }
    let by_issuer: Vec<&FederatedCredential> = client
        .federated
        .iter()
        .filter(|f| f.issuer == iss)
        .collect();
    if by_issuer.is_empty() {
        return Err(AadError::no_record_for_issuer(iss));
    }
    let by_subject: Vec<&FederatedCredential> =
        by_issuer.into_iter().filter(|f| f.subject == sub).collect();
    if by_subject.is_empty() {
        return Err(AadError::no_record_for_subject(sub));
    }
    by_subject
        .into_iter()
        .find(|f| audiences.contains(&f.audience))
        .ok_or_else(|| AadError::no_record_for_audience(&audiences.join(",")))
}

/// The key the assertion names (by `kid`, or the only key when it names none).
fn pick_key<'a>(keys: &'a [Jwk], kid: Option<&str>) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
}

/// Verifies `assertion` for `client`; `Ok` means Entra would accept it as the client's
/// credential.
pub async fn verify(
    client: &Client,
    assertion: &str,
    fetcher: &OidcFetcher,
    skew: Duration,
    now: Timestamp,
) -> Result<(), AadError> {
    let (header, claims) = peek(assertion)?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(AadError::malformed_assertion());
    }
    let (Some(iss), Some(sub)) = (claims.iss.as_deref(), claims.sub.as_deref()) else {
        return Err(AadError::malformed_assertion());
    };
    let audiences = claims.audiences();
    let credential = matching_credential(client, iss, sub, &audiences)?;

    let kid = header.kid.as_deref();
    let mut keys = fetcher
        .keys(&credential.issuer, false)
        .await
        .map_err(|e| AadError::oidc_fetch_failed(&e.to_string()))?;
    if pick_key(&keys, kid).is_none() {
        // Keys rotate: an unknown kid fetches them again (at most every few seconds).
        keys = fetcher
            .keys(&credential.issuer, true)
            .await
            .map_err(|e| AadError::oidc_fetch_failed(&e.to_string()))?;
    }
    let jwk = pick_key(&keys, kid).ok_or_else(|| {
        AadError::bad_signature(&format!(
            "The key was not found., Key ID of the assertion: '{}'",
            kid.unwrap_or("(none)")
        ))
    })?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|_| AadError::bad_signature("The key was not usable."))?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(assertion, &key, &validation).map_err(|_| {
        AadError::bad_signature(
            "The provided signature value did not match the expected signature value.",
        )
    })?;

    let skew = i64::try_from(skew.as_secs()).unwrap_or(i64::MAX / 2);
    let now_s = now.as_second();
    let expired = claims
        .exp
        .is_none_or(|exp| now_s > exp.saturating_add(skew));
    let early = claims
        .nbf
        .is_some_and(|nbf| now_s < nbf.saturating_sub(skew));
    if expired || early {
        return Err(AadError::assertion_time(
            now,
            claims.nbf.or(claims.iat),
            claims.exp,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entra::clients::{NewClient, Registry};

    fn fed(iss: &str, sub: &str, aud: &str) -> FederatedCredential {
        FederatedCredential {
            issuer: iss.into(),
            subject: sub.into(),
            audience: aud.into(),
        }
    }

    #[test]
    fn the_credential_is_picked_by_issuer_then_subject_then_audience() {
        let mut r = Registry::default();
        let (c, _) = r.create(
            NewClient {
                federated: vec![fed("https://i", "system:serviceaccount:ns:a", "api://x")],
                ..NewClient::default()
            },
            Timestamp::now(),
        );
        let aud = vec!["api://x".to_string()];
        assert!(matching_credential(&c, "https://i", "system:serviceaccount:ns:a", &aud).is_ok());
        let code = |iss: &str, sub: &str, aud: &[String]| {
            matching_credential(&c, iss, sub, aud).unwrap_err().code
        };
        assert_eq!(
            code("https://other", "system:serviceaccount:ns:a", &aud),
            700211
        );
        assert_eq!(
            code("https://i", "system:serviceaccount:ns:b", &aud),
            700213
        );
        assert_eq!(
            code(
                "https://i",
                "system:serviceaccount:ns:a",
                &["api://y".into()]
            ),
            700212
        );
        let (bare, _) = r.create(NewClient::default(), Timestamp::now());
        assert_eq!(
            matching_credential(&bare, "https://i", "s", &aud)
                .unwrap_err()
                .code,
            70021
        );
    }

    #[test]
    fn malformed_assertions_are_told_apart_from_unknown_ones() {
        assert_eq!(peek("not a jwt").unwrap_err().code, 50027);
        assert_eq!(peek("e30.e30.x").unwrap_err().code, 50027);
    }
}
