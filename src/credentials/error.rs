//! Why credentials could not be resolved, with the condition reason and when to look again.

use super::UNWATCHED_TTL;
use crate::acs::ConnectionStringError;
use crate::api;
use crate::sealing::SealingKeyError;

/// Why no usable credentials were found. Messages name the Secret and key, never the value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("endpoint host {host} is not an allowed ACS host ({allowed}); no request is sent there: fix the endpoint, or have the operator's administrator add the host (flag --allowed-endpoint-hosts, chart value acs.allowedEndpointHosts)")]
    EndpointNotAllowed { host: String, allowed: String },
    #[error("credentials Secret {namespace}/{name} not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("no credentials: set spec.credentials, create Secret {namespace}/acs-credentials with key connectionString, or label the namespace to use the operator's default credentials")]
    NoneConfigured { namespace: String },
    #[error("credentials Secret {namespace}/{name} has no key {key}")]
    KeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("credentials in Secret {namespace}/{name} key {key} are invalid")]
    Invalid {
        namespace: String,
        name: String,
        key: String,
        #[source]
        source: ConnectionStringError,
    },
    #[error("ServiceAccount {namespace}/{name} not found")]
    ServiceAccountNotFound { namespace: String, name: String },
    #[error("ServiceAccount {namespace}/{name} has not opted in to token requests: annotate it with communication.acs.dev/allow-token-request=\"true\" to let CommunicationUsers of this namespace use its workload identity")]
    TokenRequestNotAllowed { namespace: String, name: String },
    #[error("ServiceAccount {namespace}/{name} has no {annotation} annotation: set it to the Entra application's or managed identity's {what}")]
    ServiceAccountIncomplete {
        namespace: String,
        name: String,
        annotation: &'static str,
        what: &'static str,
    },
    #[error("{service} not found")]
    ServiceNotFound { service: String },
    #[error("{service} does not select namespace {namespace}: its namespaceSelector decides which namespaces may use it (ask the platform team that owns it)")]
    NamespaceNotSelected { service: String, namespace: String },
    #[error("{service} names endpoint {expected}, but the connection string in Secret {secret} is for {found}")]
    EndpointMismatch {
        service: String,
        secret: String,
        found: String,
        expected: String,
    },
    /// A cluster service failed for a reason its own status shows: the tenant using it is not
    /// told the platform's Secret, key or hosts.
    #[error("{service} cannot be used now ({reason}); the platform team that owns it sees why in its status", reason = .source.reason())]
    ServiceUnusable {
        service: String,
        #[source]
        source: Box<CredentialsError>,
    },
    #[error("{service} uses operatorIdentity, but the operator has no workload identity of its own (chart value entra.operatorIdentity)")]
    NoOperatorIdentity { service: String },
    #[error(transparent)]
    Sealing(#[from] SealingKeyError),
    #[error("failed to read credentials")]
    Kube(#[source] kube::Error),
}

impl CredentialsError {
    /// Transient errors are retried with backoff; the others wait for a Secret change.
    pub fn is_transient(&self) -> bool {
        if let Self::ServiceUnusable { source, .. } = self {
            return source.is_transient();
        }
        matches!(
            self,
            Self::Kube(_) | Self::Sealing(SealingKeyError::Kube(..))
        )
    }

    /// When to look again without a watch event: ServiceAccounts are not watched, so their
    /// annotations are read again after a minute.
    pub fn requeue(&self) -> std::time::Duration {
        match self {
            Self::ServiceUnusable { source, .. } => source.requeue(),
            Self::ServiceAccountNotFound { .. }
            | Self::TokenRequestNotAllowed { .. }
            | Self::ServiceAccountIncomplete { .. } => std::time::Duration::from_secs(60),
            // A safety net: the namespaces' label watch wakes the user when its labels change.
            Self::NamespaceNotSelected { .. } => UNWATCHED_TTL,
            _ => std::time::Duration::from_secs(300),
        }
    }

    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ServiceUnusable { source, .. } => source.reason(),
            Self::Invalid { .. }
            | Self::KeyMissing { .. }
            | Self::EndpointMismatch { .. }
            | Self::ServiceAccountIncomplete { .. }
            | Self::Sealing(SealingKeyError::Unusable(_)) => {
                api::condition::reasons::CREDENTIALS_INVALID
            }
            Self::TokenRequestNotAllowed { .. } => {
                api::condition::reasons::TOKEN_REQUEST_NOT_ALLOWED
            }
            Self::Kube(_) | Self::Sealing(_) => api::condition::reasons::ACS_ERROR,
            Self::EndpointNotAllowed { .. } => api::condition::reasons::ENDPOINT_NOT_ALLOWED,
            Self::ServiceNotFound { .. } => api::condition::reasons::SERVICE_NOT_FOUND,
            Self::NamespaceNotSelected { .. } => api::condition::reasons::NAMESPACE_NOT_SELECTED,
            _ => api::condition::reasons::CREDENTIALS_NOT_FOUND,
        }
    }

    /// The full message including the cause (a parse error never holds the key).
    pub fn message(&self) -> String {
        match self {
            Self::Invalid { source, .. } => format!("{self}: {source}"),
            Self::Kube(e) | Self::Sealing(SealingKeyError::Kube(_, e)) => format!("{self}: {e}"),
            _ => self.to_string(),
        }
    }
}
