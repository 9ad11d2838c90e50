//! The client-credentials grant with a client assertion, as `azure-identity`'s
//! `ClientAssertionCredential` sends it, and Entra's answers mapped onto failures.

use std::time::Duration;

use serde::Deserialize;

use super::assertion::Assertion;
use super::{credential, Principal, ACS_SCOPE};
use crate::acs::{AcsError, BearerToken, CredentialFailure};

/// Entra's error descriptions run to several lines (trace and correlation ids); the first
/// line, bounded, is what a condition needs.
const MAX_DESCRIPTION: usize = 300;

/// A failed exchange: the error, and the outcome label of the request metric.
pub struct Failed {
    pub error: AcsError,
    pub outcome: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ErrorResponse {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

pub async fn client_assertion(
    http: &reqwest::Client,
    p: &Principal,
    assertion: &Assertion,
) -> Result<(BearerToken, Duration), Failed> {
    let url = format!("{}/{}/oauth2/v2.0/token", p.authority, p.tenant_id);
    let form = [
        ("client_id", p.client_id.as_str()),
        ("scope", ACS_SCOPE),
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.0.as_str()),
    ];
    let unavailable = |outcome: &str, message: String| Failed {
        error: credential(CredentialFailure::Unavailable, message),
        outcome: outcome.to_string(),
    };
    let response = match http.post(&url).form(&form).send().await {
        Ok(r) => r,
        Err(e) => {
            let outcome = if e.is_timeout() { "timeout" } else { "network" };
            // reqwest's error names the URL, never the form body.
            return Err(unavailable(
                outcome,
                format!(
                    "Entra token endpoint {url} unreachable: {}",
                    crate::acs::error_chain(&e)
                ),
            ));
        }
    };
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    if status == 200 {
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            unavailable(
                "decode",
                format!("Entra token endpoint {url} answered 200 without an access token"),
            )
        })?;
        let lifetime = parsed
            .expires_in
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(3600);
        return Ok((
            BearerToken::new(parsed.access_token),
            Duration::from_secs(lifetime),
        ));
    }
    let err: ErrorResponse = serde_json::from_slice(&body).unwrap_or_default();
    let description = first_line(&err.error_description);
    let message = format!(
        "Microsoft Entra ID refused {} (http {status}, {}): {description}",
        p.describe(),
        if err.error.is_empty() {
            "no error code"
        } else {
            &err.error
        },
    );
    let failure = if status == 429 || status >= 500 {
        CredentialFailure::Unavailable
    } else {
        CredentialFailure::Rejected
    };
    Err(Failed {
        error: credential(failure, message),
        outcome: status.to_string(),
    })
}

/// The first sentence of the first line: Entra appends trace ids and the current time, which
/// would make every attempt's condition message different (and worth a status write).
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default().trim();
    let line = match line.find(". ") {
        Some(i) => &line[..=i],
        None => line,
    };
    match line.char_indices().nth(MAX_DESCRIPTION) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_keep_their_first_line_bounded() {
        assert_eq!(
            first_line("AADSTS700016: Application not found.\r\nTrace ID: 1"),
            "AADSTS700016: Application not found."
        );
        assert!(first_line(&"x".repeat(1000)).chars().count() <= MAX_DESCRIPTION + 1);
        assert_eq!(
            first_line("AADSTS700024: Client assertion is not within its valid time range. Current time: 2026-11-30T05:00:00Z, assertion valid from 2026-11-30T03:00:00Z"),
            "AADSTS700024: Client assertion is not within its valid time range."
        );
    }
}
