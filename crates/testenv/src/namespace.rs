//! A fresh, uniquely named namespace per test, deleted (best effort) when the test ends, so
//! tests sharing one control plane never see each other's objects.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use rand::Rng;

use crate::control_plane::ControlPlane;
use crate::error::Error;

/// The label every test namespace carries (value: the sanitized prefix).
pub const TEST_NAMESPACE_LABEL: &str = "acs-testenv.acs.dev/test";

/// How long the drop-time deletion may take before it is abandoned.
const DROP_DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// A namespace created for one test.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    config: kube::Config,
    deleted: bool,
}

/// Turns a test name into a DNS-1123 label prefix: lower-case alphanumerics and single dashes,
/// at most 40 characters (leaving room for the random suffix).
pub fn sanitize(prefix: &str) -> String {
    let mut out = String::new();
    for c in prefix.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 40 {
            break;
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "test".to_string()
    } else {
        trimmed.to_string()
    }
}

impl TestNamespace {
    /// Creates `<prefix>-<8 random hex digits>` on `cp` as admin.
    pub async fn create(cp: &ControlPlane, prefix: &str) -> Result<TestNamespace, Error> {
        let prefix = sanitize(prefix);
        let name = format!("{prefix}-{:08x}", rand::rng().random::<u32>());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_string(), prefix)].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(cp.client()?)
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|source| Error::Namespace {
                action: "create",
                name: name.clone(),
                source,
            })?;
        Ok(TestNamespace {
            name,
            config: cp.kube_config(),
            deleted: false,
        })
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the namespace now (the controller manager finishes the deletion asynchronously).
    pub async fn delete(mut self) -> Result<(), Error> {
        self.deleted = true;
        let client = Client::try_from(self.config.clone()).map_err(Error::Client)?;
        delete(client, &self.name).await
    }
}

async fn delete(client: Client, name: &str) -> Result<(), Error> {
    match Api::<Namespace>::all(client)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Namespace {
            action: "delete",
            name: name.to_string(),
            source,
        }),
    }
}

impl Drop for TestNamespace {
    /// Deletes the namespace on a helper thread with its own runtime: the test's runtime may be
    /// shutting down, and `drop` cannot await.
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let name = self.name.clone();
        let config = self.config.clone();
        let worker = std::thread::Builder::new()
            .name("acs-testenv-ns-delete".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::StartThread)?;
                runtime.block_on(async {
                    let client = Client::try_from(config).map_err(Error::Client)?;
                    match tokio::time::timeout(DROP_DELETE_TIMEOUT, delete(client, &name)).await {
                        Ok(result) => result,
                        Err(_) => {
                            tracing::warn!(namespace = %name, "namespace deletion timed out");
                            Ok(())
                        }
                    }
                })
            });
        match worker.map(|w| w.join()) {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(namespace = %self.name, error = %crate::report(&e), "failed to delete test namespace")
            }
            _ => tracing::warn!(namespace = %self.name, "failed to run test namespace deletion"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_become_dns_labels() {
        assert_eq!(sanitize("smoke::Secret_GC"), "smoke-secret-gc");
        assert_eq!(sanitize("--"), "test");
        assert_eq!(sanitize(&"a".repeat(80)).len(), 40);
        assert_eq!(sanitize("ends with dash -"), "ends-with-dash");
    }
}
