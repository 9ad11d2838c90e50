//! The controller runtime: shared caches, the two reconcilers, leader election, the health
//! and metrics server, and graceful shutdown.

pub mod acs_pool;
pub mod backoff;
mod caches;
mod context;
pub mod events;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod fixtures;
pub mod guard;
pub mod lanes;
pub mod own_writes;
mod run;
pub mod series;
pub mod service;
pub mod service_signals;
pub mod shared_watch;
pub mod status_memo;
pub mod tables;
#[cfg(test)]
mod tests;
pub mod token;
pub mod triggers;
pub mod user;
mod wakeups;
pub mod watch_health;

pub use context::{Clock, Context};
pub use run::{counted_kube_client, kube_client, run, RunError};
pub use wakeups::signals;

use kube::api::{Api, Patch, PatchParams};
use kube::Resource;
use serde::Serialize;

/// The condition reason of an ACS failure that concerns the credentials, if it does: Entra
/// refusing the principal or its assertion, the ServiceAccount gone, the TokenRequest denied,
/// ACS rejecting the key or token (401) or the principal lacking a role (403).
pub fn credential_reason(e: &crate::acs::AcsError) -> Option<&'static str> {
    use crate::acs::{AcsError, CredentialFailure};
    use crate::api::condition::reasons;
    match e {
        AcsError::Credential { failure, .. } => match failure {
            CredentialFailure::Rejected => Some(reasons::CREDENTIALS_REJECTED),
            CredentialFailure::Missing => Some(reasons::CREDENTIALS_NOT_FOUND),
            CredentialFailure::TokenRequestDenied => Some(reasons::TOKEN_REQUEST_FAILED),
            CredentialFailure::Unavailable => None,
        },
        _ if e.status() == Some(401) => Some(reasons::CREDENTIALS_REJECTED),
        _ if e.status() == Some(403) => Some(reasons::NOT_AUTHORIZED),
        _ => None,
    }
}

/// What a person should do about an ACS failure, appended to its message where there is
/// something to say.
pub fn failure_hint(e: &crate::acs::AcsError) -> &'static str {
    if e.status() == Some(403) {
        "; the Entra principal needs a data-plane role on the ACS resource: Contributor, or Communication and Email Service Owner"
    } else {
        ""
    }
}

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

/// The reconciler's own error inside a finalizer error, if the failure was the reconciler's
/// (and not adding or removing the finalizer itself).
pub fn reconciler_error<E: std::error::Error + 'static>(
    e: &kube::runtime::finalizer::Error<E>,
) -> Option<&E> {
    match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => Some(e),
        _ => None,
    }
}

/// Whether removing the finalizer found the object gone: a reconcile of a cached copy that
/// lagged the previous, successful cleanup (the finalizer was already removed and the object
/// deleted). Nothing failed: the object's per-object state is forgotten and nothing recorded,
/// which would keep a failure entry for an object that no longer exists and log a warning for
/// every such lag.
pub fn gone_at_finalizer_removal<K, E>(
    ctx: &Context,
    obj: &K,
    e: &kube::runtime::finalizer::Error<E>,
) -> bool
where
    K: Resource<DynamicType = ()>,
    E: std::error::Error + 'static,
{
    let gone = matches!(
        e,
        kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(ae)) if ae.code == 404
    );
    if gone {
        forget_object(ctx, obj);
        tracing::debug!("already deleted: a lagging copy found its finalizer gone");
    }
    gone
}

/// Whether adding the finalizer found it added since the cached copy was read: a reconcile of
/// a copy that lagged the previous one's finalizer patch (kube's JSON patch `test` fails).
/// Nothing failed: the watch event carrying the finalizer wakes the object again, so nothing
/// is recorded or retried (it would count a failure, log a warning and delay the object's
/// first ACS call behind a back-off).
pub fn finalizer_raced<E: std::error::Error + 'static>(
    e: &kube::runtime::finalizer::Error<E>,
) -> bool {
    let raced = matches!(
        e,
        kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(ae))
            if ae.code == 422 || ae.code == 409
    );
    if raced {
        tracing::debug!("finalizer already added: a lagging copy raced the previous reconcile");
    }
    raced
}

/// Forgets the per-object state of an object that is gone (its failures and guard entries).
fn forget_object<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K) {
    ctx.failures.reset(&key_of(obj));
    if let Some(uid) = obj.meta().uid.as_deref() {
        ctx.guard.forget(uid);
    }
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
