//! Entra credentials: a ServiceAccount of the resource's namespace that opted in to token
//! requests, or the operator's own workload identity; both seal with the operator's key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;

use super::{
    Auth, Credentials, CredentialsError, CredentialsResolver, CredentialsSource,
    ALLOW_TOKEN_REQUEST_ANNOTATION, UNWATCHED_TTL,
};
use crate::config::{DefaultWorkloadIdentity, EntraConfig};
use crate::entra::{AssertionSource, EntraTokens, Principal};
use crate::sealing::SealingKeySecret;
use crate::secret::Seal;

/// A ServiceAccount found usable, and when.
type Usable = (std::time::Instant, Principal);

/// What Entra credentials need: the token cache, settings, the sealing key, and the
/// ServiceAccounts found usable (not watched: re-read after [`UNWATCHED_TTL`]).
#[derive(Clone)]
pub struct Entra {
    pub tokens: EntraTokens,
    pub config: EntraConfig,
    pub default: Option<DefaultWorkloadIdentity>,
    pub sealing: SealingKeySecret,
    pub(super) accounts: Arc<Mutex<HashMap<(String, String), Usable>>>,
}

impl Entra {
    pub fn new(
        tokens: EntraTokens,
        config: EntraConfig,
        default: Option<DefaultWorkloadIdentity>,
        sealing: SealingKeySecret,
    ) -> Self {
        Self {
            tokens,
            config,
            default,
            sealing,
            accounts: Arc::default(),
        }
    }
}

impl CredentialsResolver {
    /// Entra credentials through a ServiceAccount of `namespace` that opted in.
    pub(super) async fn service_account(
        &self,
        namespace: &str,
        name: &str,
        endpoint: &str,
    ) -> Result<Credentials, CredentialsError> {
        let Some(entra) = &self.entra else {
            // Built whenever the operator runs; absent only in narrow unit tests.
            return Err(CredentialsError::NoneConfigured {
                namespace: namespace.to_string(),
            });
        };
        let key = (namespace.to_string(), name.to_string());
        let known = entra
            .accounts
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
            .filter(|(at, _)| at.elapsed() < UNWATCHED_TTL)
            .map(|(_, p)| p);
        let principal = match known {
            Some(p) => p,
            None => {
                let sa = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
                    .get_metadata_opt(name)
                    .await
                    .map_err(CredentialsError::Kube)?;
                let result = principal_of(
                    sa.as_ref().map(|s| &s.metadata),
                    namespace,
                    name,
                    &entra.config,
                );
                if let Ok(mut m) = entra.accounts.lock() {
                    if self.sweeps.accounts.due(m.len()) {
                        m.retain(|_, (at, _)| at.elapsed() < UNWATCHED_TTL);
                        self.sweeps.accounts.swept(m.len());
                    }
                    match &result {
                        Ok(p) => m.insert(key, (std::time::Instant::now(), p.clone())),
                        Err(_) => m.remove(&key),
                    };
                }
                result?
            }
        };
        let source = CredentialsSource::ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.entra_credentials(entra, endpoint, principal, source, false)
            .await
    }

    pub(super) async fn entra_credentials(
        &self,
        entra: &Entra,
        endpoint: &str,
        principal: Principal,
        source: CredentialsSource,
        operator_default: bool,
    ) -> Result<Credentials, CredentialsError> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let seal = Seal::new(entra.sealing.get().await?, principal.fingerprint(&endpoint));
        Ok(Credentials {
            endpoint,
            auth: Auth::Entra(principal),
            source,
            seal,
            operator_default,
            budget: None,
        })
    }
}

/// The principal a ServiceAccount's annotations name, if it opted in.
fn principal_of(
    meta: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    namespace: &str,
    name: &str,
    config: &EntraConfig,
) -> Result<Principal, CredentialsError> {
    let Some(meta) = meta else {
        return Err(CredentialsError::ServiceAccountNotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    };
    let ann = meta.annotations.clone().unwrap_or_default();
    let get = |k: &str| {
        ann.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if get(ALLOW_TOKEN_REQUEST_ANNOTATION).as_deref() != Some("true") {
        return Err(CredentialsError::TokenRequestNotAllowed {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }
    let incomplete = |annotation, what| CredentialsError::ServiceAccountIncomplete {
        namespace: namespace.to_string(),
        name: name.to_string(),
        annotation,
        what,
    };
    let client_id = get(crate::entra::CLIENT_ID_ANNOTATION)
        .ok_or_else(|| incomplete(crate::entra::CLIENT_ID_ANNOTATION, "client id"))?;
    let tenant_id = get(crate::entra::TENANT_ID_ANNOTATION)
        .or_else(|| config.default_tenant_id.clone())
        .ok_or_else(|| incomplete(crate::entra::TENANT_ID_ANNOTATION, "tenant id"))?;
    Ok(Principal::new(
        &config.authority_host,
        &tenant_id,
        &client_id,
        AssertionSource::ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
    ))
}
