//! The client assertion of a principal: a ServiceAccount token with Entra's audience, from a
//! TokenRequest or from the file the kubelet projects (re-read each time: it is rotated).

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use super::{credential, AssertionSource, Principal, ASSERTION_SECONDS, TOKEN_EXCHANGE_AUDIENCE};
use crate::acs::{AcsError, CredentialFailure};

/// A ServiceAccount token. `Debug` prints `[redacted]`.
pub struct Assertion(pub(super) String);

impl std::fmt::Debug for Assertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Assertion([redacted])")
    }
}

pub async fn get(kube: &kube::Client, p: &Principal) -> Result<Assertion, AcsError> {
    match &p.assertion {
        AssertionSource::ServiceAccount { namespace, name } => {
            token_request(kube, namespace, name).await
        }
        AssertionSource::File(path) => match tokio::fs::read_to_string(path).await {
            Ok(t) if !t.trim().is_empty() => Ok(Assertion(t.trim().to_string())),
            Ok(_) => Err(credential(
                CredentialFailure::Missing,
                format!("the federated token file {} is empty", path.display()),
            )),
            Err(e) => Err(credential(
                CredentialFailure::Missing,
                format!(
                    "the federated token file {} cannot be read: {e}",
                    path.display()
                ),
            )),
        },
    }
}

async fn token_request(
    kube: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Assertion, AcsError> {
    let api: Api<ServiceAccount> = Api::namespaced(kube.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![TOKEN_EXCHANGE_AUDIENCE.to_string()],
            expiration_seconds: Some(ASSERTION_SECONDS),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    match api
        .create_token_request(name, &PostParams::default(), &request)
        .await
    {
        Ok(r) => match r.status {
            Some(s) if !s.token.is_empty() => Ok(Assertion(s.token)),
            _ => Err(credential(
                CredentialFailure::Unavailable,
                format!("the TokenRequest for ServiceAccount {namespace}/{name} returned no token"),
            )),
        },
        Err(kube::Error::Api(s)) if s.code == 404 => Err(credential(
            CredentialFailure::Missing,
            format!("ServiceAccount {namespace}/{name} not found"),
        )),
        Err(kube::Error::Api(s)) if s.code == 400 || s.code == 422 => Err(credential(
            CredentialFailure::Rejected,
            format!("the apiserver refused the TokenRequest for ServiceAccount {namespace}/{name}: {}", s.message),
        )),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(credential(
            CredentialFailure::TokenRequestDenied,
            format!("the operator may not request tokens for ServiceAccount {namespace}/{name} (RBAC: create serviceaccounts/token, chart value workloadIdentity.namespaceServiceAccounts): {}", s.message),
        )),
        Err(e) => Err(credential(
            CredentialFailure::Unavailable,
            format!("the TokenRequest for ServiceAccount {namespace}/{name} failed: {e}"),
        )),
    }
}
