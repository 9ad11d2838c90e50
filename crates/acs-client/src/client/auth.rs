//! How one attempt is authorized: an HMAC signature over the exact bytes sent, or an Entra
//! bearer token alone, as the SDKs send them.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::HeaderValue;
use reqwest::Url;

use super::{header_value, request_target, AcsClient};
use crate::bearer::{BearerSource, BearerToken, CredentialFailure};
use crate::connection::AccessKey;
use crate::error::AcsError;
use crate::hmac;
use crate::request::Prepared;

/// How requests are authorized: signed with the resource's access key (HMAC), or carrying a
/// Microsoft Entra ID bearer token. The SDKs never send both.
#[derive(Clone)]
pub(super) enum Auth {
    Key(AccessKey),
    Bearer(Arc<dyn BearerSource>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Key(k) => write!(f, "Key({k:?})"),
            Auth::Bearer(b) => write!(f, "Bearer({})", b.principal()),
        }
    }
}

/// The `Authorization` of one attempt, and the bearer token it carries if any.
pub(super) struct Authorization {
    pub(super) headers: Vec<(&'static str, HeaderValue)>,
    pub(super) bearer: Option<BearerToken>,
}

impl AcsClient {
    /// The authorization headers of one attempt: an HMAC signature over the exact bytes sent
    /// (with the `x-ms-date` it covers), or an Entra bearer token alone, as the SDKs send it.
    pub(super) async fn authorization(
        &self,
        prepared: &Prepared,
        url: &Url,
    ) -> Result<Authorization, AcsError> {
        match &self.auth {
            Auth::Key(key) => {
                let signed = hmac::sign_request(
                    key.expose(),
                    prepared.method.as_str(),
                    &request_target(url),
                    &self.host,
                    &prepared.body,
                    SystemTime::now(),
                );
                let mut authorization = header_value(&signed.authorization)?;
                // Sensitive values print as "Sensitive" in Debug output and are never
                // HPACK-indexed.
                authorization.set_sensitive(true);
                Ok(Authorization {
                    headers: vec![
                        ("x-ms-date", header_value(&signed.x_ms_date)?),
                        ("x-ms-content-sha256", header_value(&signed.content_sha256)?),
                        ("authorization", authorization),
                    ],
                    bearer: None,
                })
            }
            Auth::Bearer(source) => {
                let token = source.bearer().await?;
                let mut authorization =
                    HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                        AcsError::Credential {
                            failure: CredentialFailure::Rejected,
                            message: format!(
                                "the Entra token for {} is not a valid header value",
                                source.principal()
                            ),
                        }
                    })?;
                authorization.set_sensitive(true);
                Ok(Authorization {
                    headers: vec![("authorization", authorization)],
                    bearer: Some(token),
                })
            }
        }
    }
}
