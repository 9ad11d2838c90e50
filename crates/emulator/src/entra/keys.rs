//! The Entra stand-in's token-signing key: RSA 2048, generated once (the `rsa` crate, since
//! ring cannot generate RSA keys) and kept in the state file as PKCS#1 DER; ring signs and
//! verifies through `jsonwebtoken`. Its JWKS entry carries a `kid` derived from the public key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const KEY_BITS: usize = 2048;

/// Why a key could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("failed to generate the Entra signing key")]
    Generate(#[source] rsa::Error),
    #[error("the stored Entra signing key is not an RSA key in PKCS#1 DER")]
    Load,
    #[error("the Entra signing key generation was interrupted")]
    Interrupted,
    #[error("failed to sign an Entra token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The RSA key that signs the stand-in's access tokens.
pub struct EntraKey {
    kid: String,
    pkcs1_der: Vec<u8>,
    n: String,
    e: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for EntraKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl EntraKey {
    /// A fresh key (a fraction of a second with the optimized `rsa` build; call off the
    /// request path's async threads).
    pub fn generate() -> Result<Self, KeyError> {
        let key =
            RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS).map_err(KeyError::Generate)?;
        Self::from_private(&key)
    }

    /// The key from its PKCS#1 DER (as the state file keeps it).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = RsaPrivateKey::from_pkcs1_der(der).map_err(|_| KeyError::Load)?;
        Self::from_private(&key)
    }

    fn from_private(key: &RsaPrivateKey) -> Result<Self, KeyError> {
        let der = key.to_pkcs1_der().map_err(|_| KeyError::Load)?;
        let pkcs1_der = der.as_bytes().to_vec();
        let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
        // Like Entra's 27-character kids: a truncated thumbprint of the public key (RFC 7638).
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(canonical.as_bytes())[..20]);
        let decoding = DecodingKey::from_rsa_components(&n, &e).map_err(|_| KeyError::Load)?;
        Ok(Self {
            kid,
            encoding: EncodingKey::from_rsa_der(&pkcs1_der),
            pkcs1_der,
            n,
            e,
            decoding,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn pkcs1_der(&self) -> &[u8] {
        &self.pkcs1_der
    }

    /// The public key as a JWKS entry, shaped like Entra's (`issuer` only for a tenant's keys).
    pub fn jwk(&self, issuer: Option<&str>) -> Value {
        let mut jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.n,
            "e": self.e,
        });
        if let (Some(issuer), Some(map)) = (issuer, jwk.as_object_mut()) {
            map.insert("issuer".into(), Value::from(issuer));
        }
        jwk
    }

    /// Signs `claims` as an RS256 JWT with this key's `kid` (and `x5t`, as Entra sends both).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.kid.clone());
        header.x5t = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(KeyError::Sign)
    }

    /// Verifies a token this key signed with `validation`'s rules, and decodes its claims.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        validation: &jsonwebtoken::Validation,
    ) -> Result<T, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<T>(token, &self.decoding, validation).map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_key_verifies_what_the_original_signed() {
        let key = EntraKey::generate().unwrap();
        assert_eq!(key.kid().len(), 27);
        let again = EntraKey::from_pkcs1_der(key.pkcs1_der()).unwrap();
        assert_eq!(again.kid(), key.kid());
        let token = key
            .sign(&json!({"sub": "x", "exp": 4_000_000_000u64}))
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        let validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        let claims: Value = again.verify(&token, &validation).unwrap();
        assert_eq!(claims["sub"], "x");
        // The JWK round-trips into a key that verifies too, as a downstream validator uses it.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk(Some("iss"))).unwrap();
        let from_jwk = DecodingKey::from_jwk(&jwk).unwrap();
        assert!(jsonwebtoken::decode::<Value>(&token, &from_jwk, &validation).is_ok());
        assert!(EntraKey::from_pkcs1_der(b"nope").is_err());
    }
}
