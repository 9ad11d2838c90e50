//! Revocation: every pending request (the user's revoke annotation, tokens whose spec changed
//! or that are being deleted) is coalesced into one ACS revoke, after which the epoch moves
//! and every token of the user re-issues.
//!
//! Coalesced in time too: the tokens' requests are served once none came for the coalescing
//! window (at most ten windows after the first), because each revocation makes every sibling
//! re-issue, and a GitOps sync or `kubectl apply -f dir/` changes siblings a few hundred
//! milliseconds apart. A person's revoke annotation is served at once. Revocations are the
//! cost that siblings cannot refuse, so they are what is bounded: at most the configured
//! number per user and window, the requests after that waiting for the next one.
//!
//! Fenced, because a revoke is the one call that can silently break a token: a second revoke
//! after a sibling re-issued at the new epoch leaves that sibling's Secret with a dead token
//! that looks current. So the revocation is first recorded as pending with the
//! `resourceVersion` the decision was read at as a precondition (a reconcile reading a stale
//! cache, or a second writer, fails there with a conflict and makes no ACS call); tokens do
//! not issue while it is pending; then the revoke; then the epoch moves. A crash in between
//! leaves it pending, and the next reconcile finishes it.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::info;

use std::sync::Arc;

use super::{acs_failed, not_ready, Error};
use crate::acs::AcsClient;
use crate::api::condition::{reasons, types};
use crate::api::{self, set_condition, CommunicationUser, CommunicationUserStatus, ConditionExt};
use crate::controller::failure_backoff::inputs_hash;
use crate::controller::unscheduled::Unscheduled;
use crate::controller::{key_of, Context};
use crate::credentials::Credentials;

/// What the revocation step did.
pub enum Outcome {
    /// Nothing was requested.
    Nothing,
    /// Revoked; `status` holds what was written, and this is the user as written.
    Wrote(Arc<CommunicationUser>),
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
) -> Result<Outcome, Error> {
    let ns = user.namespace().unwrap_or_default();
    let mut revocation = status.revocation.clone().unwrap_or_default();
    let annotation = user.annotations().get(api::REVOKE_ANNOTATION).cloned();
    let annotation_pending = annotation.is_some() && annotation != revocation.handled_annotation;
    let requested_at = requested_at(ctx, &ns, &user.name_any(), revocation.epoch);
    let requesters = requested_at.len();
    let resuming = revocation.pending.is_some_and(|p| p > revocation.epoch);
    if !(annotation_pending || requesters > 0 || resuming) {
        return Ok(Outcome::Nothing);
    }
    if !resuming {
        if let Some(later) = admit(ctx, user, status, &requested_at, annotation_pending).await? {
            return Ok(Outcome::Stop(later));
        }
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
    // `user` is as read, or as this reconcile last wrote it.
    let rv = fenced_write(ctx, user, status, user.metadata.resource_version.clone()).await?;
    let pending = super::status::as_written(user, status, rv);

    if let (Some(uid), false) = (user.metadata.uid.as_deref(), resuming) {
        // Counted once per revocation, when it starts: the retries of a failing one back off
        // on their own and must not use up the limit for the requests after it.
        ctx.unscheduled
            .record(uid, Unscheduled::Revocation, Instant::now());
    }
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
            not_ready(ctx, &pending, st, reasons::IDENTITY_NOT_FOUND, msg).await?;
            return Ok(Outcome::Stop(Action::requeue(ctx.config.resync_period)));
        }
        Err(e) => {
            // The pending revocation stays recorded; the retry finishes it.
            acs_failed(ctx, &pending, status.clone(), &e, "revoke tokens").await?;
            return Err(Error::RevokeTokens(e));
        }
    }
    completed(
        &mut revocation,
        target,
        annotation_pending.then_some(annotation),
        ctx.now(),
    );
    ctx.metrics.revocation();
    let why = why(annotation_pending, requesters);
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
    let rv = fenced_write(ctx, user, status, None).await?;
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
    Ok(Outcome::Wrote(super::status::as_written(user, status, rv)))
}

/// Whether a new revocation may start now: token requests coalesce for a while (an
/// annotation does not wait), and the user's limit on revocations holds. `Some`: when to look
/// again.
async fn admit(
    ctx: &Context,
    user: &CommunicationUser,
    status: &CommunicationUserStatus,
    requested_at: &[Option<jiff::Timestamp>],
    annotation_pending: bool,
) -> Result<Option<Action>, Error> {
    let guards = &ctx.config.guards;
    if !annotation_pending {
        if let Some(wait) = coalescing(requested_at, guards.revocation_coalesce, ctx.now()) {
            return Ok(Some(Action::requeue(wait)));
        }
    }
    let uid = user.metadata.uid.as_deref().unwrap_or_default();
    if let Err(wait) = ctx.unscheduled.check(
        uid,
        Unscheduled::Revocation,
        guards.revocation_limit,
        guards.revocation_window,
        Instant::now(),
    ) {
        deferred(ctx, user, status, requested_at.len(), wait).await?;
        return Ok(Some(Action::requeue(wait + Duration::from_millis(100))));
    }
    Ok(None)
}

/// When each token of the user that asks for a revocation past `epoch` asked (`None`: a
/// status written before the time was recorded).
fn requested_at(
    ctx: &Context,
    ns: &str,
    user_name: &str,
    epoch: i64,
) -> Vec<Option<jiff::Timestamp>> {
    ctx.tokens_of_user(ns, user_name, |t| {
        t.status
            .as_ref()
            .and_then(|s| s.revocation_requested)
            .is_some_and(|e| e >= epoch)
    })
    .iter()
    .map(|t| {
        t.status
            .as_ref()
            .and_then(|s| s.revocation_requested_at.as_ref())
            .map(|at| at.0)
    })
    .collect()
}

/// Records a revocation to `target` as done (with the annotation value it served, if any).
fn completed(
    revocation: &mut api::RevocationStatus,
    target: i64,
    annotation: Option<Option<String>>,
    now: jiff::Timestamp,
) {
    revocation.epoch = target;
    revocation.pending = None;
    revocation.pending_since = None;
    revocation.last_revocation_time = Some(Time(now));
    if let Some(value) = annotation {
        revocation.handled_annotation = value;
    }
}

/// Why a revocation happened, for its log line and event.
fn why(annotation_pending: bool, requesters: usize) -> String {
    match (annotation_pending, requesters) {
        (true, 0) => "requested by annotation".to_string(),
        (true, n) => format!("requested by annotation and {n} token(s)"),
        (false, 0) => "resuming a revocation that was interrupted".to_string(),
        (false, n) => format!("requested by {n} token(s)"),
    }
}

/// How long the coalescing window still runs for requests made at `requested_at`: until no
/// request came for `window`, and at most ten windows after the first. A request with no time
/// (written by an older release) does not hold the revocation back.
fn coalescing(
    requested_at: &[Option<jiff::Timestamp>],
    window: Duration,
    now: jiff::Timestamp,
) -> Option<Duration> {
    if requested_at.iter().any(Option::is_none) {
        return None;
    }
    let first = requested_at.iter().flatten().min()?;
    let last = requested_at.iter().flatten().max()?;
    let window = jiff::SignedDuration::try_from(window).ok()?;
    let quiet = last.checked_add(window).ok()?;
    let cap = first.checked_add(window * 10).ok()?;
    let until = quiet.min(cap);
    Duration::try_from(until.duration_since(now))
        .ok()
        .filter(|d| !d.is_zero())
}

/// The user has revoked as often as its window allows: says so once (a Warning event and the
/// Ready reason, which stays True: the identity is fine and every Secret still holds a valid
/// token) and waits.
async fn deferred(
    ctx: &Context,
    user: &CommunicationUser,
    status: &CommunicationUserStatus,
    requesters: usize,
    wait: Duration,
) -> Result<(), Error> {
    let was = status
        .conditions
        .find(types::READY)
        .is_some_and(|c| c.reason == reasons::REVOCATION_DEFERRED);
    if was {
        return Ok(());
    }
    let guards = &ctx.config.guards;
    let asked = match requesters {
        0 => "the revoke annotation".to_string(),
        n => format!("{n} token(s)"),
    };
    let msg = format!(
        "a revocation requested by {asked} is deferred for {}s: {} revocations already happened within {}s (the limit per user); the requests are served together then, and every Secret keeps its valid token meanwhile",
        wait.as_secs().max(1),
        guards.revocation_limit,
        guards.revocation_window.as_secs()
    );
    let mut st = status.clone();
    set_condition(
        &mut st.conditions,
        types::READY,
        true,
        reasons::REVOCATION_DEFERRED,
        msg.clone(),
        user.metadata.generation,
        ctx.now(),
    );
    fenced_write(ctx, user, &st, user.metadata.resource_version.clone()).await?;
    ctx.metrics
        .unscheduled_deferred(Unscheduled::Revocation.as_str());
    ctx.event(
        user,
        EventType::Warning,
        reasons::REVOCATION_DEFERRED,
        "RevokeTokens",
        msg,
    )
    .await;
    Ok(())
}

/// Writes the whole status by server-side apply, with `resource_version` as a precondition
/// when given: a conflict becomes [`Error::Fenced`] and nothing else happens. Returns the
/// resourceVersion written.
pub(super) async fn fenced_write(
    ctx: &Context,
    user: &CommunicationUser,
    status: &CommunicationUserStatus,
    resource_version: Option<String>,
) -> Result<Option<String>, Error> {
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
        Ok(written) => Ok(written.metadata.resource_version),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Fenced),
        Err(e) => Err(Error::PatchStatus(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::api::CommunicationUserSpec;
    use crate::controller::fixtures::status as failure;

    #[test]
    fn requests_are_coalesced_until_none_came_for_a_window_and_at_most_ten_windows() {
        let at = |s: i64| jiff::Timestamp::from_second(1_700_000_000 + s).unwrap();
        let w = Duration::from_secs(2);
        // One request: the window runs from it.
        assert_eq!(
            coalescing(&[Some(at(0))], w, at(1)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(coalescing(&[Some(at(0))], w, at(2)), None);
        // A later request holds it open from the later one.
        assert_eq!(
            coalescing(&[Some(at(0)), Some(at(1))], w, at(2)),
            Some(Duration::from_secs(1))
        );
        // Requests that never stop coming are served ten windows after the first.
        assert_eq!(coalescing(&[Some(at(0)), Some(at(19))], w, at(20)), None);
        assert_eq!(
            coalescing(&[Some(at(0)), Some(at(19))], w, at(19)),
            Some(Duration::from_secs(1))
        );
        // A request without a time (an older release wrote it) does not wait.
        assert_eq!(coalescing(&[Some(at(0)), None], w, at(0)), None);
        assert_eq!(coalescing(&[], w, at(0)), None);
    }

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
