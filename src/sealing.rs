//! The operator's own sealing key: token Secrets issued with Entra credentials are sealed
//! with it, as there is no access key to seal them with. It lives in a Secret of the
//! operator's namespace, created on first use (and read by every replica); deleting that
//! Secret makes every Entra-sealed token Secret read as edited, which re-issues them.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use tokio::sync::OnceCell;

use crate::acs::AccessKey;

/// The data key of the sealing key (64 random bytes).
pub const DATA_KEY: &str = "sealingKey";
const KEY_BYTES: usize = 64;

/// Loads (or creates) the sealing key once; a failure is retried at the next use.
#[derive(Clone)]
pub struct SealingKeySecret {
    client: kube::Client,
    namespace: String,
    name: String,
    key: Arc<OnceCell<AccessKey>>,
}

/// The sealing key Secret could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum SealingKeyError {
    #[error("failed to read or create the sealing key Secret {0}")]
    Kube(String, #[source] kube::Error),
    #[error("the sealing key Secret {0} has no usable key {DATA_KEY} (64 bytes or more): delete it to have a new one made, which re-issues every Entra-credentialed token")]
    Unusable(String),
}

impl SealingKeySecret {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: Arc::default(),
        }
    }

    fn path(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The key, read or created on first call.
    pub async fn get(&self) -> Result<AccessKey, SealingKeyError> {
        self.key.get_or_try_init(|| self.load()).await.cloned()
    }

    async fn load(&self) -> Result<AccessKey, SealingKeyError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let kube_err = |e| SealingKeyError::Kube(self.path(), e);
        if let Some(s) = api.get_opt(&self.name).await.map_err(kube_err)? {
            return self.parse(&s);
        }
        let fresh: Vec<u8> = (0..KEY_BYTES).map(|_| rand::random::<u8>()).collect();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    crate::api::MANAGED_BY_LABEL.to_string(),
                    crate::api::MANAGED_BY.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_string()),
            data: Some(BTreeMap::from([(DATA_KEY.to_string(), ByteString(fresh))])),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(s) => {
                tracing::info!(secret = %self.path(), "created the sealing key of Entra-credentialed token Secrets");
                self.parse(&s)
            }
            // Another replica (or a concurrent first use) made it: use theirs.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let s = api.get(&self.name).await.map_err(kube_err)?;
                self.parse(&s)
            }
            Err(e) => Err(kube_err(e)),
        }
    }

    fn parse(&self, s: &Secret) -> Result<AccessKey, SealingKeyError> {
        s.data
            .as_ref()
            .and_then(|d| d.get(DATA_KEY))
            .filter(|k| k.0.len() >= KEY_BYTES)
            .map(|k| AccessKey::from_bytes(k.0.clone()))
            .ok_or_else(|| SealingKeyError::Unusable(self.path()))
    }
}
