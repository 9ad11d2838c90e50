//! The user's status: written fenced on the resourceVersion read (or unfenced for a new
//! identity's first record), remembered until the cache shows it, and the NotReady reports.

use kube::ResourceExt;

use super::{revoke, Error};
use crate::acs::AcsError;
use crate::api::condition::{reasons, types};
use crate::api::{set_condition, CommunicationUser, CommunicationUserStatus, ConditionExt};
use crate::controller::Context;
use std::sync::Arc;

/// Writes status if it changed, on the resourceVersion `user` was read at (or this reconcile
/// last wrote): a status built from a stale read fails with [`Error::Fenced`] instead of
/// overwriting a newer one, so no write can lower the revocation epoch or drop a pending
/// revocation. Returns the user as written, for the rest of the reconcile to build on.
pub(super) async fn write_status(
    ctx: &Context,
    user: &CommunicationUser,
    status: &CommunicationUserStatus,
) -> Result<Option<Arc<CommunicationUser>>, Error> {
    if user.status.as_ref() == Some(status) {
        return Ok(None);
    }
    let rv =
        revoke::fenced_write(ctx, user, status, user.metadata.resource_version.clone()).await?;
    Ok(Some(as_written(user, status, rv)))
}

/// The first record of a new identity, written unfenced: in GA mode it is the only durable
/// record of the identity, so an unrelated change of the object (a label) must not make it
/// fail; a user without an identity has no revocation state a stale read could lower.
pub(super) async fn write_identity(
    ctx: &Context,
    user: &CommunicationUser,
    status: &CommunicationUserStatus,
) -> Result<Arc<CommunicationUser>, Error> {
    let rv = revoke::fenced_write(ctx, user, status, None).await?;
    Ok(as_written(user, status, rv))
}

/// `user` with the status this process wrote and the resourceVersion that write returned
/// (the status kept as sent: the apiserver's copy rounds times, and would compare unequal).
pub(super) fn as_written(
    user: &CommunicationUser,
    status: &CommunicationUserStatus,
    resource_version: Option<String>,
) -> Arc<CommunicationUser> {
    let mut u = user.clone();
    u.status = Some(status.clone());
    u.metadata.resource_version = resource_version;
    Arc::new(u)
}

/// Sets Ready=False with `reason`, writes status, and emits a Warning event when the reason is
/// new (events on transitions only).
pub(super) async fn not_ready(
    ctx: &Context,
    user: &CommunicationUser,
    mut status: CommunicationUserStatus,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let previous = status
        .conditions
        .find(types::READY)
        .map(|c| c.reason.clone());
    set_condition(
        &mut status.conditions,
        types::READY,
        false,
        reason,
        message.clone(),
        user.metadata.generation,
        ctx.now(),
    );
    write_status(ctx, user, &status).await?;
    ctx.not_ready_event(user, previous.as_deref(), (reason, true), message)
        .await;
    Ok(())
}

/// The user's status, or the one this process wrote (or is writing) with a new identity when
/// the cache has not caught up with that write yet: remembered from before the write until a
/// cached copy shows an identity, whatever its resourceVersion (a relist's objects reach the
/// cache only when the relist ends; a write that failed must not lead to a second identity).
pub(super) fn current_status(ctx: &Context, user: &CommunicationUser) -> CommunicationUserStatus {
    let cached = user.status.clone().unwrap_or_default();
    let (ns, name) = (user.namespace().unwrap_or_default(), user.name_any());
    if cached.identity_id.is_some() {
        ctx.recent_identities.forget(&ns, &name);
        return cached;
    }
    match ctx
        .recent_identities
        .fresher(&ns, &name, user.metadata.resource_version.as_deref())
    {
        Some((uid, written)) if user.metadata.uid.as_ref() == Some(&uid) => written,
        _ => cached,
    }
}

/// Remembers a status with a new identity before it is written (see [`current_status`]).
pub(super) fn remember(ctx: &Context, user: &CommunicationUser, status: &CommunicationUserStatus) {
    if let Some(uid) = user.metadata.uid.clone() {
        let (ns, name) = (user.namespace().unwrap_or_default(), user.name_any());
        ctx.recent_identities
            .sending(&ns, &name, (uid, status.clone()));
    }
}

/// Reports a failed ACS call on the resource: `CredentialsRejected` for a 401 (wrong or
/// regenerated key), else `AcsError`; the caller still returns the error so transient
/// failures back off.
pub(super) async fn acs_failed(
    ctx: &Context,
    user: &CommunicationUser,
    status: CommunicationUserStatus,
    err: &AcsError,
    action: &str,
) -> Result<(), Error> {
    let reason = crate::controller::credential_reason(err).unwrap_or(reasons::ACS_ERROR);
    let msg = format!(
        "failed to {action} ({}): {}{}",
        err.category(),
        crate::controller::error_chain(err),
        crate::controller::failure_hint(err)
    );
    not_ready(ctx, user, status, reason, msg).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures;

    #[tokio::test]
    async fn a_new_identity_is_remembered_until_a_cached_copy_shows_one() {
        let (ctx, _api) = Context::test();
        let mut user = fixtures::user("ns", "u");
        user.metadata.resource_version = Some("5".into());
        let written = CommunicationUserStatus {
            identity_id: Some("8:acs:r_u".into()),
            ..Default::default()
        };
        remember(&ctx, &user, &written);
        // A copy at any later version without an identity (a relist not yet in the cache, an
        // unrelated write, a write that failed) still gets the identity this process made.
        user.metadata.resource_version = Some("99".into());
        assert_eq!(current_status(&ctx, &user).identity_id, written.identity_id);
        // A user of the same name created since (another UID) does not inherit it.
        let mut other = user.clone();
        other.metadata.uid = Some("uid-other".into());
        assert_eq!(current_status(&ctx, &other).identity_id, None);
        // A cached copy that shows an identity ends it.
        user.status = Some(written.clone());
        assert_eq!(current_status(&ctx, &user), written);
        assert!(ctx.recent_identities.is_empty());
    }
}
