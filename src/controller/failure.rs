//! How a reconcile's failure is told and paid for: the condition reason and hint of an ACS
//! failure, the error chain in logs, and what each error policy does first (a finalizer step
//! that met a lagging copy is no failure) and last (count, back off, hold the next ACS call).

use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::Resource;

use super::{key_of, Context};

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
pub(super) fn gone_at_finalizer_removal<K, E>(
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
fn finalizer_raced<E: std::error::Error + 'static>(e: &kube::runtime::finalizer::Error<E>) -> bool {
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
        ctx.unscheduled.forget(uid);
    }
}

/// The error and its sources, for logs. ACS and credential errors never carry secrets.
pub use crate::acs::error_chain;

/// A finalizer error that is no failure: a lagging copy found its finalizer already removed
/// (the object is gone) or already added (its watch event wakes it again).
pub fn finalizer_lagged<K, E>(
    ctx: &Context,
    obj: &K,
    e: &kube::runtime::finalizer::Error<E>,
) -> bool
where
    K: Resource<DynamicType = ()>,
    E: std::error::Error + 'static,
{
    gone_at_finalizer_removal(ctx, obj, e) || finalizer_raced(e)
}

/// How a reconciler's failure backs off.
pub struct FailurePolicy {
    /// A transient failure backs off no further than this (what the object serves stays valid
    /// that long: a token's remaining lifetime); a permanent one up to the cap.
    pub remaining: Option<Duration>,
    pub transient: bool,
}

impl FailurePolicy {
    /// Counts a failure of `obj`, holds its next ACS call until the back-off step ends (a
    /// change of its inputs still goes through at once), logs it, and requeues at the step.
    /// Permanent failures back off too: a fix arrives as a change (spec, credentials,
    /// identity), so no failure costs more than one ACS call per step up to the cap.
    pub fn back_off<K: Resource<DynamicType = ()>>(
        self,
        ctx: &Context,
        obj: &K,
        err: &dyn std::error::Error,
    ) -> Action {
        let key = key_of(obj);
        let n = ctx.failures.record(&key);
        let remaining = if self.transient { self.remaining } else { None };
        let d = crate::rotation::failure_backoff(
            n,
            remaining,
            ctx.config.guards.failure_backoff_max,
            &key,
        );
        ctx.failures.retry_at(&key, Instant::now() + d);
        tracing::warn!(error = %err, cause = %error_chain(err), failures = n, retry_in = ?d, transient = self.transient, "reconcile failed");
        Action::requeue(d)
    }
}
