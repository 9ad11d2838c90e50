//! The controller runtime: shared caches, the two reconcilers, leader election, the health
//! and metrics server, and graceful shutdown.

pub mod acs_pool;
mod caches;
mod context;
pub mod events;
mod failure;
pub mod failure_backoff;
pub mod finalized;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod fixtures;
pub mod lanes;
pub mod own_writes;
mod run;
pub mod series;
pub mod service;
pub mod service_signals;
pub mod shared_watch;
mod summary;
pub mod tables;
#[cfg(test)]
mod tests;
pub mod token;
pub mod triggers;
pub mod unscheduled;
pub mod user;
mod wakeups;
pub mod watch_health;
pub mod written;

pub use context::{Clock, Context};
pub use failure::{
    credential_reason, error_chain, failure_hint, finalizer_lagged, reconciler_error, FailurePolicy,
};
pub use run::{counted_kube_client, kube_client, run, RunError};
pub use wakeups::signals;

use kube::api::{Api, Patch, PatchParams};
use kube::Resource;
use serde::Serialize;

/// Writes `status` with server-side apply under `manager`, unless it equals `current`
/// (an unchanged write would only trigger another reconcile).
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    current: Option<&S>,
    status: &S,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(None);
    }
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    // force: this manager owns the whole status of its kind; a leftover owner from an older
    // operator version must not block the write.
    let written = api
        .patch_status(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(Some(written))
}

/// `Kind/namespace/name` of an object, the key of per-object state (a user and a token of
/// the same name must not share a failure count).
pub fn key_of<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}
