//! Revocation: every pending request (the user's revoke annotation, tokens whose spec changed
//! or that are being deleted) is coalesced into one ACS revoke, after which the epoch moves
//! and every token of the user re-issues.
//!
//! Fenced, because a revoke is the one call that can silently break a token: a second revoke
//! after a sibling re-issued at the new epoch leaves that sibling's Secret with a dead token
//! that looks current. So the revocation is first recorded as pending with the
//! `resourceVersion` the decision was read at as a precondition (a reconcile reading a stale
//! cache, or a second writer, fails there with a conflict and makes no ACS call); tokens do
//! not issue while it is pending; then the revoke; then the epoch moves. A crash in between
//! leaves it pending, and the next reconcile finishes it.

use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::{acs_failed, not_ready, Error};
use crate::acs::AcsClient;
use crate::api::condition::{reasons, types};
use crate::api::{self, set_condition, CommunicationUser, CommunicationUserStatus};
use crate::controller::backoff::inputs_hash;
use crate::controller::{key_of, Context};
use crate::credentials::Credentials;

/// What the revocation step did.
pub enum Outcome {
    /// Nothing was requested.
    Nothing,
    /// Revoked; `status` holds what was written.
    Wrote,
    /// The reconcile ends here with this action.
    Stop(Action),
}

/// Revokes all tokens of identity `id` if anything asks for it.
pub async fn revoke_if_requested(
    ctx: &Context,
    user: &CommunicationUser,
    acs: &AcsClient,
    creds: &Credentials,
    id: &str,
    status: &mut CommunicationUserStatus,
    written: &Option<CommunicationUserStatus>,
) -> Result<Outcome, Error> {
    let ns = user.namespace().unwrap_or_default();
    let mut revocation = status.revocation.clone().unwrap_or_default();
    let annotation = user.annotations().get(api::REVOKE_ANNOTATION).cloned();
    let annotation_pending = annotation.is_some() && annotation != revocation.handled_annotation;
    let user_name = user.name_any();
    let requesters = ctx
        .tokens_of_user(&ns, &user_name, |t| {
            t.status
                .as_ref()
                .and_then(|s| s.revocation_requested)
                .is_some_and(|e| e >= revocation.epoch)
        })
        .len();
    let resuming = revocation.pending.is_some_and(|p| p > revocation.epoch);
    if !(annotation_pending || requesters > 0 || resuming) {
        return Ok(Outcome::Nothing);
    }

    // A failing revoke backs off whatever wakes the user (every requesting token does).
    let key = key_of(user);
    let inputs = inputs_hash((
        &user.metadata.generation,
        &creds.endpoint,
        creds.fingerprint(),
        &annotation,
    ));
    if let Some(wait) = ctx.failures.try_attempt(&key, inputs, Instant::now()) {
        return Ok(Outcome::Stop(Action::requeue(wait)));
    }

    // Fence: record the revocation as pending, on the resourceVersion this decision was read
    // at. This write also tells the tokens to hold their issuance.
    let target = revocation.epoch + 1;
    revocation.pending = Some(target);
    revocation.pending_since = Some(Time(ctx.now()));
    status.revocation = Some(revocation.clone());
    set_condition(
        &mut status.conditions,
        types::READY,
        true,
        reasons::REVOKING,
        "revoking all tokens of the identity".to_string(),
        user.metadata.generation,
        ctx.now(),
    );
    // What this reconcile already wrote is newer than the cached resourceVersion.
    let rv = if written.is_some() {
        None
    } else {
        user.metadata.resource_version.clone()
    };
    fenced_write(ctx, user, status, rv).await?;

    match acs.revoke_tokens(id).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {
            let msg = format!("identity {id} no longer exists in ACS: it was deleted outside the operator; delete and recreate this CommunicationUser");
            let mut st = status.clone();
            st.revocation = Some(api::RevocationStatus {
                pending: None,
                pending_since: None,
                ..revocation
            });
            not_ready_after_write(ctx, user, st, msg).await?;
            return Ok(Outcome::Stop(Action::requeue(ctx.config.resync_period)));
        }
        Err(e) => {
            // The pending revocation stays recorded; the retry finishes it.
            acs_failed(ctx, user, status.clone(), &e, "revoke tokens").await?;
            return Err(Error::RevokeTokens(e));
        }
    }
    revocation.epoch = target;
    revocation.pending = None;
    revocation.pending_since = None;
    revocation.last_revocation_time = Some(Time(ctx.now()));
    if annotation_pending {
        revocation.handled_annotation = annotation;
    }
    ctx.metrics.revocation();
    let why = match (annotation_pending, requesters) {
        (true, 0) => "requested by annotation".to_string(),
        (true, n) => format!("requested by annotation and {n} token(s)"),
        (false, 0) => "resuming a revocation that was interrupted".to_string(),
        (false, n) => format!("requested by {n} token(s)"),
    };
    info!(identity = %id, epoch = revocation.epoch, %why, "tokens revoked");
    status.revocation = Some(revocation.clone());
    set_condition(
        &mut status.conditions,
        types::READY,
        true,
        reasons::IDENTITY_READY,
        format!("identity {id} is ready"),
        user.metadata.generation,
        ctx.now(),
    );
    // Not fenced: the pending record above already serialized this revocation, and an
    // unrelated metadata change (an annotation) must not cost a second revoke.
    fenced_write(ctx, user, status, None).await?;
    ctx.event(
        user,
        EventType::Normal,
        reasons::TOKENS_REVOKED,
        "RevokeTokens",
        format!(
            "revoked all tokens of identity {id} ({why}); epoch is now {}",
            revocation.epoch
        ),
    )
    .await;
    Ok(Outcome::Wrote)
}

/// Writes the whole status by server-side apply, with `resource_version` as a precondition
/// when given: a conflict becomes [`Error::Fenced`] and nothing else happens.
async fn fenced_write(
    ctx: &Context,
    user: &CommunicationUser,
    status: &CommunicationUserStatus,
    resource_version: Option<String>,
) -> Result<(), Error> {
    let ns = user.namespace().ok_or(Error::Unnamed)?;
    let api: Api<CommunicationUser> = Api::namespaced(ctx.client.clone(), &ns);
    let mut meta = serde_json::json!({ "name": user.name_any() });
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = serde_json::Value::String(rv);
    }
    let body = serde_json::json!({
        "apiVersion": api::CommunicationUser::api_version(&()),
        "kind": api::CommunicationUser::kind(&()),
        "metadata": meta,
        "status": status,
    });
    match api
        .patch_status(
            &user.name_any(),
            &PatchParams::apply(api::USER_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Fenced),
        Err(e) => Err(Error::PatchStatus(e)),
    }
}

/// `not_ready` compares with the cached status, which this reconcile already changed by its
/// pending write; force the write by comparing with nothing.
async fn not_ready_after_write(
    ctx: &Context,
    user: &CommunicationUser,
    status: CommunicationUserStatus,
    msg: String,
) -> Result<(), Error> {
    let mut stale = user.clone();
    stale.status = None;
    not_ready(ctx, &stale, status, reasons::IDENTITY_NOT_FOUND, msg).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::api::CommunicationUserSpec;
    use crate::controller::fixtures::status as failure;

    #[tokio::test]
    async fn a_revocation_decided_on_a_stale_read_is_fenced_off_by_its_resource_version() {
        let (ctx, mut api) = crate::controller::Context::test();
        let mut user = CommunicationUser::new("alice", CommunicationUserSpec::default());
        user.metadata.namespace = Some("ns".into());
        user.metadata.resource_version = Some("41".into());
        let status = CommunicationUserStatus::default();
        let act = tokio::spawn({
            let user = user.clone();
            async move { fenced_write(&ctx, &user, &status, Some("41".into())).await }
        });
        let sent = api
            .expect(
                "PATCH",
                "/communicationusers/alice/status",
                409,
                failure(409, "Conflict"),
            )
            .await;
        assert_eq!(sent["metadata"]["resourceVersion"], "41");
        assert!(matches!(act.await.unwrap(), Err(Error::Fenced)));
        api.expect_nothing_more().await;
    }
}
