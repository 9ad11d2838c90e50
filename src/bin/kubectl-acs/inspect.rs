//! `kubectl acs inspect`: what the token in a CommunicationToken's Secret says, never the token.
//! ACS tokens are JWTs; their payload names the identity (`skypeid`), the scopes and the times.

use acs_identity_operator::api::{secret_keys, CommunicationToken};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use sha2::{Digest, Sha256};

use crate::{Error, Target};

/// What the token says about itself (the JWT payload), when it is a JWT.
#[derive(Debug, Default, PartialEq)]
pub struct Claims {
    pub identity: Option<String>,
    pub scopes: Option<String>,
    pub issued_at: Option<i64>,
    pub expires: Option<i64>,
    pub resource_id: Option<String>,
}

/// Decodes the payload segment of `token`; `None` when it is not a JWT.
pub fn claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(Claims {
        identity: v["skypeid"].as_str().map(|s| format!("8:{s}")),
        scopes: v["acsScope"].as_str().map(str::to_string),
        issued_at: v["iat"].as_i64(),
        expires: v["exp"].as_i64(),
        resource_id: v["resourceId"].as_str().map(str::to_string),
    })
}

/// SHA-256 of the token, hex: compare tokens without showing them.
pub fn fingerprint(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn time(secs: Option<i64>) -> String {
    secs.and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or("-".into(), |t| t.to_string())
}

pub async fn run(t: &Target, name: &str) -> Result<(), Error> {
    let tokens: Api<CommunicationToken> = Api::namespaced(t.client.clone(), &t.namespace);
    let token = tokens.get(name).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => {
            format!(
                "CommunicationToken {name} not found in namespace {}",
                t.namespace
            )
        }
        e => e.to_string(),
    })?;
    let secret_name = token
        .status
        .as_ref()
        .and_then(|s| s.secret_name.clone())
        .or_else(|| token.spec.secret_name.clone())
        .unwrap_or_else(|| name.to_string());
    let secrets: Api<Secret> = Api::namespaced(t.client.clone(), &t.namespace);
    let secret = secrets.get(&secret_name).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => {
            format!("Secret {secret_name} not found (not issued yet?)")
        }
        kube::Error::Api(s) if s.code == 403 => {
            format!("you may not read Secret {secret_name}: {}", s.message)
        }
        e => e.to_string(),
    })?;
    let data = secret.data.unwrap_or_default();
    let field = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let value = field(secret_keys::TOKEN).ok_or("the Secret holds no token")?;
    let c = claims(&value).unwrap_or_default();
    let revision = token.status.as_ref().map_or(0, |s| s.revision);
    println!(
        "CommunicationToken  {}/{name} (revision {revision})",
        t.namespace
    );
    println!("Secret              {secret_name}");
    println!(
        "Identity            {}",
        c.identity
            .or(field(secret_keys::USER_ID))
            .unwrap_or("-".into())
    );
    println!(
        "Scopes              {}",
        c.scopes
            .or(field(secret_keys::SCOPES))
            .unwrap_or("-".into())
    );
    println!("Issued              {}", time(c.issued_at));
    println!(
        "Expires             {}",
        if c.expires.is_some() {
            time(c.expires)
        } else {
            field(secret_keys::EXPIRES_ON).unwrap_or("-".into())
        }
    );
    if let Some(r) = c.resource_id {
        println!("ACS resource        {r}");
    }
    println!("SHA-256             {}", fingerprint(&value));
    Ok(())
}
