//! The stand-in's access tokens for the ACS resource: RS256 JWTs signed by the tenant key, with
//! v2.0 claims (`iss` = `{authority}/{tenant}/v2.0`, as the discovery document says) plus the
//! v1 `appid`/`appidacr` that ACS-side code often reads. Verification is what the ACS gateway
//! does before authorization: signature, issuer, tenant, audience and time window (no skew: the
//! emulator issues and checks them on one clock).

use std::collections::HashSet;

use jiff::Timestamp;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::clients::Client;
use super::keys::{EntraKey, KeyError};

/// The ACS resource's application ID URI: the `aud` of its tokens.
pub const ACS_AUDIENCE: &str = "https://communication.azure.com";

/// How the client authenticated (`appidacr`/`azpacr`): 1 = secret, 2 = assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Secret,
    Assertion,
}

impl ClientAuth {
    fn acr(self) -> &'static str {
        match self {
            ClientAuth::Secret => "1",
            ClientAuth::Assertion => "2",
        }
    }
}

/// The claims of an access token (an app-only token: `sub` = `oid`, `idtyp` = `app`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub appid: String,
    pub appidacr: String,
    pub azp: String,
    pub azpacr: String,
    pub idtyp: String,
    pub oid: String,
    pub sub: String,
    pub tid: String,
    pub uti: String,
    pub ver: String,
}

/// Mints a token for `client`, valid from `now` for `lifetime_seconds`.
pub fn mint(
    key: &EntraKey,
    issuer: &str,
    tenant_id: Uuid,
    client: &Client,
    auth: ClientAuth,
    now: Timestamp,
    lifetime_seconds: u64,
) -> Result<String, KeyError> {
    let iat = now.as_second();
    let lifetime = i64::try_from(lifetime_seconds).unwrap_or(i64::MAX / 4);
    let claims = AccessClaims {
        aud: ACS_AUDIENCE.into(),
        iss: issuer.into(),
        iat,
        nbf: iat,
        exp: iat.saturating_add(lifetime),
        appid: client.client_id.to_string(),
        appidacr: auth.acr().into(),
        azp: client.client_id.to_string(),
        azpacr: auth.acr().into(),
        idtyp: "app".into(),
        oid: client.object_id.to_string(),
        sub: client.object_id.to_string(),
        tid: tenant_id.to_string(),
        uti: Uuid::new_v4().simple().to_string(),
        ver: "2.0".into(),
    };
    key.sign(&claims)
}

/// Why a bearer token is not one of this tenant's valid ACS tokens (debug logs only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("no Entra token was ever issued by this emulator")]
    NoKey,
    #[error("the token is malformed or not signed by the tenant key")]
    Signature,
    #[error("the token has expired or is not yet valid")]
    Time,
    #[error("the token is for another audience")]
    Audience,
    #[error("the token is from another issuer or tenant")]
    Issuer,
}

/// Verifies a bearer token against the tenant key and the ACS audience.
pub fn verify(
    key: &EntraKey,
    token: &str,
    issuer: &str,
    tenant_id: Uuid,
) -> Result<AccessClaims, Invalid> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
    // ACS accepts its application ID URI with and without the trailing slash.
    validation.aud = Some(HashSet::from([
        ACS_AUDIENCE.to_string(),
        format!("{ACS_AUDIENCE}/"),
    ]));
    validation.iss = Some(HashSet::from([issuer.to_string()]));
    let claims: AccessClaims = key.verify(token, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::ExpiredSignature | K::ImmatureSignature => Invalid::Time,
            K::InvalidAudience => Invalid::Audience,
            K::InvalidIssuer => Invalid::Issuer,
            _ => Invalid::Signature,
        }
    })?;
    if claims.tid != tenant_id.to_string() {
        return Err(Invalid::Issuer);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entra::clients::{NewClient, Registry};

    #[test]
    fn minted_tokens_verify_and_other_issuers_or_expired_ones_do_not() {
        let key = EntraKey::generate().unwrap();
        let tenant = Uuid::new_v4();
        let (client, _) = Registry::default().create(NewClient::default(), Timestamp::now());
        let iss = format!("https://login.test/{tenant}/v2.0");
        let now = Timestamp::now();
        let token = mint(&key, &iss, tenant, &client, ClientAuth::Secret, now, 3600).unwrap();
        let claims = verify(&key, &token, &iss, tenant).unwrap();
        assert_eq!(claims.aud, ACS_AUDIENCE);
        assert_eq!(claims.appid, client.client_id.to_string());
        assert_eq!(claims.oid, client.object_id.to_string());
        assert_eq!(claims.appidacr, "1");
        assert_eq!(claims.exp - claims.iat, 3600);
        assert_eq!(
            verify(&key, &token, "https://elsewhere/v2.0", tenant),
            Err(Invalid::Issuer)
        );
        assert_eq!(
            verify(&key, &token, &iss, Uuid::new_v4()),
            Err(Invalid::Issuer)
        );
        let old = now - jiff::SignedDuration::from_secs(7200);
        let expired = mint(&key, &iss, tenant, &client, ClientAuth::Assertion, old, 60).unwrap();
        assert_eq!(verify(&key, &expired, &iss, tenant), Err(Invalid::Time));
        let other = EntraKey::generate().unwrap();
        assert_eq!(
            verify(&other, &token, &iss, tenant),
            Err(Invalid::Signature)
        );
        assert_eq!(verify(&key, "x.y.z", &iss, tenant), Err(Invalid::Signature));
    }
}
