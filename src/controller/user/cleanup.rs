//! Deleting a CommunicationUser: delete its ACS identity (unless `Retain`), also when the
//! namespace is being torn down and its credentials went first. A deletion ACS refuses (401 or
//! 403: a regenerated key, a removed role, an identity of another resource) is reported and
//! backs off like any failure; in a terminating namespace it lets go after a bounded number of
//! attempts, naming the identity left in ACS, so no namespace wedges on it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::{info, warn};

use super::{current_status, not_ready, Error};
use crate::api::{self, CommunicationUser, DeletionPolicy};
use crate::controller::{key_of, Context};

/// Attempts made to find credentials for a deletion in a terminating namespace before the
/// finalizer lets go (the identity is then left in ACS and reported).
const TERMINATING_NAMESPACE_ATTEMPTS: u32 = 3;

pub async fn cleanup(user: Arc<CommunicationUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    let done = delete_identity(user.clone(), ctx.clone()).await?;
    // Gone for good: nothing keyed by this object may stay behind.
    ctx.failures.reset(&key_of(user.as_ref()));
    if let Some(uid) = user.metadata.uid.as_deref() {
        ctx.unscheduled.forget(uid);
    }
    Ok(done)
}

async fn delete_identity(user: Arc<CommunicationUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = user.namespace().ok_or(Error::Unnamed)?;
    let status = current_status(&ctx, &user);
    ctx.recent_identities.forget(&ns, &user.name_any());
    let Some(id) = status.identity_id.clone() else {
        return Ok(Action::await_change());
    };
    if user.deletion_policy() == DeletionPolicy::Retain {
        info!(identity = %id, "identity retained");
        ctx.event(
            user.as_ref(),
            EventType::Normal,
            "IdentityRetained",
            "DeleteIdentity",
            format!("kept identity {id} in ACS (deletionPolicy: Retain)"),
        )
        .await;
        return Ok(Action::await_change());
    }
    let creds = match ctx.credentials.resolve_user(&ns, &user.spec).await {
        Ok(c) => c,
        Err(e) => {
            // A ServiceAccount's workload identity has no last-known form: its tokens are
            // requested for the ServiceAccount, which must still exist.
            // A service's Secret is found through the service, which may be gone.
            let last = match (&user.spec.service_ref, &user.spec.credentials) {
                (Some(r), _) => ctx.credentials.last_known_service(&ns, r),
                (None, Some(r)) => r
                    .secret()
                    .and_then(|(secret, key)| ctx.credentials.last_known(&ns, secret, key)),
                (None, None) => ctx.credentials.last_known(
                    &ns,
                    api::DEFAULT_CREDENTIALS_SECRET,
                    api::DEFAULT_CREDENTIALS_KEY,
                ),
            };
            match last {
                Some(c) => c,
                None => {
                    let terminating = terminating(&ctx, &ns).await?;
                    if terminating && out_of_attempts(&ctx, &user) {
                        let msg = format!("namespace {ns} is being deleted and its credentials are gone: identity {id} was not deleted from ACS; delete it with the ACS tools if needed");
                        return Ok(let_go(&ctx, &user, &id, msg).await);
                    }
                    let msg = format!("cannot delete identity {id}: {}. Restore the credentials, or set spec.deletionPolicy to Retain to release the resource without deleting the identity", e.message());
                    let status = user.status.clone().unwrap_or_default();
                    let _ = not_ready(&ctx, &user, status, e.reason(), msg).await;
                    if terminating {
                        // Retried quickly (backoff), so the bound above is reached in seconds.
                        return Err(Error::CleanupRetry);
                    }
                    return Err(Error::Credentials(e));
                }
            }
        }
    };
    let acs = ctx
        .acs
        .client(&creds, ctx.credentials.entra_tokens())
        .map_err(Error::Client)?;
    match acs.delete_identity(&id).await {
        Ok(()) => {
            ctx.metrics.identity_deleted();
            info!(identity = %id, "identity deleted");
            ctx.event(
                user.as_ref(),
                EventType::Normal,
                "IdentityDeleted",
                "DeleteIdentity",
                format!("deleted identity {id}"),
            )
            .await;
        }
        // Already gone (deleted by hand or by an earlier attempt): nothing left to do.
        Err(e) if e.is_not_found() => info!(identity = %id, "identity already gone"),
        Err(e) => {
            let Some(reason) = crate::controller::credential_reason(&e) else {
                return Err(Error::DeleteIdentity(e));
            };
            let terminating = terminating(&ctx, &ns).await?;
            if terminating && out_of_attempts(&ctx, &user) {
                let msg = format!("namespace {ns} is being deleted and ACS refused to delete identity {id} ({}): it was left in ACS; delete it with the ACS tools if needed", e.category());
                return Ok(let_go(&ctx, &user, &id, msg).await);
            }
            let msg = format!(
                "cannot delete identity {id}: ACS refused ({}): {}. Fix the credentials, or set spec.deletionPolicy to Retain to release the resource without deleting the identity",
                e.category(),
                crate::controller::error_chain(&e)
            );
            let status = user.status.clone().unwrap_or_default();
            let _ = not_ready(&ctx, &user, status, reason, msg).await;
            if terminating {
                // Retried quickly (backoff), so the bound above is reached in seconds.
                return Err(Error::CleanupRetry);
            }
            return Err(Error::DeleteIdentity(e));
        }
    }
    Ok(Action::await_change())
}

/// This deletion has been tried as often as a terminating namespace waits for it.
fn out_of_attempts(ctx: &Context, user: &CommunicationUser) -> bool {
    ctx.failures.get(&key_of(user)) + 1 >= TERMINATING_NAMESPACE_ATTEMPTS
}

/// Lets the finalizer go without deleting identity `id`, saying so (log and Warning event).
async fn let_go(ctx: &Context, user: &CommunicationUser, id: &str, msg: String) -> Action {
    warn!(identity = %id, "{msg}");
    ctx.event(
        user,
        EventType::Warning,
        "IdentityNotDeleted",
        "DeleteIdentity",
        msg,
    )
    .await;
    Action::await_change()
}

/// The namespace is being deleted (or already gone).
async fn terminating(ctx: &Context, ns: &str) -> Result<bool, Error> {
    Ok(Api::<Namespace>::all(ctx.client.clone())
        .get_metadata_opt(ns)
        .await
        .map_err(Error::ReadNamespace)?
        .is_none_or(|n| n.metadata.deletion_timestamp.is_some()))
}
