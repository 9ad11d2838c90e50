//! Microsoft Entra ID authorization of ACS calls: a source of bearer tokens the client asks
//! before each attempt. The client knows nothing of how tokens are had (the operator's `entra` module does).

use std::fmt;

use futures::future::BoxFuture;

use crate::AcsError;

/// An Entra access token for the ACS scope. `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// The token, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken([redacted])")
    }
}

/// Why no bearer token could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialFailure {
    /// Entra refused the principal or its assertion (wrong subject, expired assertion,
    /// unknown client, ...): retrying the same inputs gets the same answer.
    Rejected,
    /// What the assertion comes from is gone (a ServiceAccount, a token file).
    Missing,
    /// The Kubernetes TokenRequest for the ServiceAccount was refused (the operator's RBAC).
    TokenRequestDenied,
    /// Entra or the apiserver could not be reached or failed; worth retrying.
    Unavailable,
}

impl CredentialFailure {
    pub fn is_transient(self) -> bool {
        self == Self::Unavailable
    }
}

/// Hands out bearer tokens for one principal. A failure to get one is an
/// [`AcsError::Credential`], which says whether it is worth retrying.
pub trait BearerSource: Send + Sync {
    /// A token valid for at least a few minutes (cached by the source).
    fn bearer(&self) -> BoxFuture<'_, Result<BearerToken, AcsError>>;
    /// ACS answered 401 to `token`: forget it so the next attempt gets a fresh one.
    fn rejected(&self, token: &BearerToken);
    /// Who the tokens are for (client and tenant ids), for logs and messages.
    fn principal(&self) -> String;
}
