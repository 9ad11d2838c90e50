//! Deleting a CommunicationToken: revoke its tokens through its user (unless
//! `revokeOnDelete: false` or the user is going too), then remove its Secret.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::{status, Error};
use crate::api::condition::{reasons, types};
use crate::api::{CommunicationToken, ConditionExt};
use crate::controller::Context;
use crate::secret;

/// Deletes the token's Secret if (and only if) this CommunicationToken controls it.
pub async fn delete_owned_secret(ctx: &Context, token: &CommunicationToken) -> Result<bool, Error> {
    match owned_secret(ctx, token).await? {
        Some(s) => delete_secret(ctx, token, &s).await,
        None => Ok(false),
    }
}

/// The token's Secret, if this CommunicationToken controls it.
async fn owned_secret(ctx: &Context, token: &CommunicationToken) -> Result<Option<Secret>, Error> {
    let ns = token.namespace().ok_or(Error::Unnamed)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let found = api
        .get_opt(&token.secret_name())
        .await
        .map_err(Error::ReadSecret)?;
    Ok(found.filter(|s| secret::is_controlled_by(s, token)))
}

/// Deletes Secret `s` of `token`, at its UID (one recreated meanwhile is not touched).
async fn delete_secret(
    ctx: &Context,
    token: &CommunicationToken,
    s: &Secret,
) -> Result<bool, Error> {
    let ns = token.namespace().ok_or(Error::Unnamed)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let name = token.secret_name();
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: s.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(Error::DeleteSecret(e)),
    }
}

/// The revocation epoch a token Secret records.
fn held_epoch(s: &Secret) -> Option<i64> {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(secret::annotations::REVOCATION_EPOCH))
        .and_then(|e| e.parse().ok())
}

pub async fn cleanup(token: Arc<CommunicationToken>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = token.namespace().ok_or(Error::Unnamed)?;
    // Read once: for the epoch its token was issued under, and to delete it at its UID.
    let owned = owned_secret(&ctx, &token).await?;
    let user = ctx
        .users
        .get(&ns, &token.spec.user_ref.name)
        .filter(|u| u.metadata.deletion_timestamp.is_none());
    // Deleting the user deletes the identity, which revokes everything: no separate revoke.
    if let (true, Some(user)) = (token.spec.revoke_on_delete, user) {
        // The epoch the Secret's token was issued under, as the Secret records it: the cached
        // status may lag a re-issue that raced this deletion, and judging by it would skip the
        // revocation of a token that is still valid.
        let in_secret = owned.as_ref().and_then(held_epoch);
        let issued_epoch = token
            .status
            .as_ref()
            .and_then(|s| s.revocation_epoch)
            .max(in_secret);
        let user_ready = user
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.is_true(types::READY));
        if let (Some(e), true) = (issued_epoch, user.identity_id().is_some()) {
            if user.revocation_epoch() <= e {
                if user_ready {
                    let mut st = token.status.clone().unwrap_or_default();
                    if st.revocation_requested != Some(e) {
                        st.revocation_requested = Some(e);
                        st.revocation_requested_at = Some(
                            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ctx.now()),
                        );
                        status::write(&ctx, &token, &st).await?;
                    }
                    return Err(Error::WaitingForRevocation);
                }
                // A user that cannot revoke (bad credentials, identity gone) must not wedge
                // the deletion: say so and go on.
                let msg = format!(
                    "CommunicationUser {} is not ready; tokens were not revoked",
                    token.spec.user_ref.name
                );
                ctx.event(
                    token.as_ref(),
                    EventType::Warning,
                    "RevocationSkipped",
                    "RevokeTokens",
                    msg,
                )
                .await;
            } else {
                ctx.event(
                    token.as_ref(),
                    EventType::Normal,
                    reasons::TOKENS_REVOKED,
                    "RevokeTokens",
                    format!("tokens of {} revoked on deletion", token.spec.user_ref.name),
                )
                .await;
            }
        }
    }
    if let Some(s) = &owned {
        delete_secret(&ctx, &token, s).await?;
    }
    if let Some(uid) = token.metadata.uid.as_deref() {
        ctx.unscheduled.forget(uid);
    }
    ctx.failures
        .reset(&crate::controller::key_of(token.as_ref()));
    Ok(Action::await_change())
}
