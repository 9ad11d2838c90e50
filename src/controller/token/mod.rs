//! The CommunicationToken reconciler: keeps a valid token in the Secret, renews it at its
//! renewal time, asks the user for a revocation when the spec changes, re-issues after any
//! revocation or key rotation, repairs a drifted Secret with its same token, restores a
//! deleted one, and cleans up on delete.
//!
//! Shaped observe → plan → act: [`apply`] reads the caches, the Secret and the user; the pure
//! [`plan::decide`] returns the one action; [`issue`] acts on it.

mod cleanup;
mod issue;
pub mod plan;
mod restart;
mod status;
mod summary;
mod wiring;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::ResourceExt;
use tracing::{instrument, warn};

use super::user::error_chain;
use super::{key_of, Context};
use crate::acs::AcsError;
use crate::api::condition::{reasons, types};
use crate::api::{self, CommunicationToken, ConditionExt};
use crate::credentials::CredentialsError;
use crate::secret::{self, SecretState};

use self::cleanup::{cleanup, delete_owned_secret};
use self::issue::Target;
use self::plan::{Observed, Plan};
pub use self::summary::summarize_forever;
pub use self::wiring::{controller, tokens_of_users};

pub(crate) const CONTROLLER: &str = "communicationtoken";

/// Why a CommunicationToken reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to resolve credentials")]
    Credentials(#[source] CredentialsError),
    #[error("failed to create the ACS client")]
    Client(#[source] AcsError),
    #[error("failed to issue token")]
    IssueToken(#[source] AcsError),
    #[error("failed to read secret")]
    ReadSecret(#[source] kube::Error),
    #[error("failed to apply secret")]
    ApplySecret(#[source] kube::Error),
    #[error("failed to delete secret")]
    DeleteSecret(#[source] kube::Error),
    #[error("failed to patch status")]
    PatchStatus(#[source] kube::Error),
    #[error("waiting for the user to revoke tokens")]
    WaitingForRevocation,
    #[error("object has no namespace or name")]
    Unnamed,
    #[error("finalizer failed")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Bounded label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Credentials(_) => "credentials",
            Error::Client(_) => "client",
            Error::IssueToken(e) => e.category(),
            Error::ReadSecret(_)
            | Error::ApplySecret(_)
            | Error::DeleteSecret(_)
            | Error::PatchStatus(_) => "kubernetes",
            Error::WaitingForRevocation => "waiting",
            Error::Unnamed => "invalid",
            Error::Finalizer(e) => super::reconciler_error(e).map_or("kubernetes", Error::category),
        }
    }

    /// Transient errors retry with exponential backoff; the others requeue slowly.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Credentials(e) => e.is_transient(),
            Error::Client(_) | Error::Unnamed => false,
            Error::IssueToken(e) => e.is_transient(),
            Error::ReadSecret(_)
            | Error::ApplySecret(_)
            | Error::DeleteSecret(_)
            | Error::PatchStatus(_)
            | Error::WaitingForRevocation => true,
            Error::Finalizer(e) => super::reconciler_error(e).is_none_or(Error::is_transient),
        }
    }
}

#[instrument(skip(token, ctx), fields(namespace = token.namespace().unwrap_or_default(), name = %token.name_any(), controller = CONTROLLER))]
async fn reconcile(token: Arc<CommunicationToken>, ctx: Arc<Context>) -> Result<Action, Error> {
    let timer = ctx.metrics.reconcile(CONTROLLER);
    let ns = token.namespace().ok_or(Error::Unnamed)?;
    let api: Api<CommunicationToken> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, api::TOKEN_FINALIZER, token.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(t) => apply(t, ctx.clone()).await,
            FinalizerEvent::Cleanup(t) => cleanup(t, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    timer.finish(if result.is_ok() { "ok" } else { "error" });
    result
}

fn error_policy(token: Arc<CommunicationToken>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(token.as_ref());
    if let Error::Finalizer(e) = err {
        if super::gone_at_finalizer_removal(&ctx, token.as_ref(), e) {
            return Action::await_change();
        }
        if super::finalizer_raced(e) {
            return Action::await_change();
        }
    }
    ctx.metrics.reconcile_error(CONTROLLER, err.category());
    if matches!(waiting(err), Some(true)) {
        // Not a failure: the user's status change wakes this object; this is a safety net.
        return Action::requeue(Duration::from_secs(30));
    }
    let n = ctx.failures.record(&key);
    let now = ctx.now();
    let remaining = token
        .status
        .as_ref()
        .and_then(|s| s.expires_on.as_ref())
        .and_then(|e| Duration::try_from(e.0.duration_since(now)).ok());
    // Permanent failures back off too (a fix arrives as a change of spec, key or identity,
    // which the back-off lets through at once), so no failure costs more than one ACS call
    // per step up to the cap.
    let remaining = if err.is_transient() { remaining } else { None };
    let d =
        crate::rotation::failure_backoff(n, remaining, ctx.config.guards.failure_backoff_max, &key);
    ctx.failures.retry_at(&key, std::time::Instant::now() + d);
    warn!(error = %err, cause = %error_chain(err), failures = n, retry_in = ?d, transient = err.is_transient(), "reconcile failed");
    Action::requeue(d)
}

fn waiting(err: &Error) -> Option<bool> {
    match err {
        Error::WaitingForRevocation => Some(true),
        Error::Finalizer(e) => super::reconciler_error(e).and_then(waiting),
        _ => None,
    }
}

/// The earlier-created CommunicationToken that already claims the same Secret name, if any.
fn earlier_claimant(ctx: &Context, token: &CommunicationToken) -> Option<String> {
    let ns = token.namespace()?;
    let mine = token.secret_name();
    let my_key = (token.metadata.creation_timestamp.clone(), token.name_any());
    ctx.claimants(&ns, &mine)
        .into_iter()
        .filter(|o| o.metadata.uid != token.metadata.uid && o.metadata.deletion_timestamp.is_none())
        .filter(|o| (o.metadata.creation_timestamp.clone(), o.name_any()) < my_key)
        .map(|o| o.name_any())
        .next()
}

/// How long a new token waits, without a word, for a user that has no status yet before it
/// looks again (the user's first status normally wakes it sooner). A token older than this
/// whose user still has no status (its reconcile failing before any verdict) says so.
const USER_SETUP_RECHECK: Duration = Duration::from_secs(30);

/// Created less than `USER_SETUP_RECHECK` ago (a missing timestamp counts as old).
fn young(token: &CommunicationToken, now: jiff::Timestamp) -> bool {
    token.metadata.creation_timestamp.as_ref().is_some_and(|c| {
        jiff::SignedDuration::try_from(USER_SETUP_RECHECK)
            .is_ok_and(|limit| now.duration_since(c.0) < limit)
    })
}

async fn apply(token: Arc<CommunicationToken>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = observe_plan_act(token.clone(), ctx.clone()).await;
    if let Err(e) = &result {
        // A failure on any path (credentials, reading the Secret, issuing, writing it) leaves
        // the Secret as it was: Ready must not stay True over a token ACS revoked meanwhile.
        if !matches!(e, Error::WaitingForRevocation) {
            status::revoked_while_failing(&ctx, &token, e.category()).await;
        }
    }
    result
}

/// What the token's status recorded of its Secret, when the Secret watch shows the Secret
/// still at the resourceVersion the status vouched for, at the token's current generation: the
/// Secret then holds exactly that (every change to a Secret moves its resourceVersion).
async fn vouched_by_status(
    ctx: &Context,
    token: &CommunicationToken,
    ns: &str,
    secret_name: &str,
) -> Option<(crate::secret::RecordedToken, String)> {
    let prev = token.status.as_ref()?;
    let rv = prev.secret_resource_version.as_deref()?;
    if prev.observed_generation != token.metadata.generation {
        return None;
    }
    let seen = ctx.own_writes.seen_after_list(ns, secret_name).await?;
    if seen != rv {
        return None;
    }
    Some((status::recorded(prev)?, seen))
}

async fn observe_plan_act(
    token: Arc<CommunicationToken>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ns = token.namespace().ok_or(Error::Unnamed)?;
    let gen = token.metadata.generation;
    // The status this process wrote last, when the cache does not show it yet: everything
    // below (the plan included) reads it, not the stale copy.
    let token = match ctx.token_status.fresher(
        &ns,
        &token.name_any(),
        token.metadata.resource_version.as_deref(),
    ) {
        Some(fresh) => {
            let mut t = (*token).clone();
            t.status = Some(fresh);
            Arc::new(t)
        }
        None => token,
    };
    let mut st = token.status.clone().unwrap_or_default();
    st.observed_generation = gen;
    // Only a write or a confirmation of the Secret at this generation vouches for its version
    // (keep, issue, repair); any other status this reconcile writes does not.
    st.secret_resource_version = None;
    let secret_name = token.secret_name();
    st.secret_name = Some(secret_name.clone());
    let resync = ctx.config.resync_period;

    // Observe: the claim on the Secret name, suspension, the user and its identity, the
    // credentials, the Secret itself.
    if let Some(other) = earlier_claimant(&ctx, &token) {
        let msg = format!("Secret {secret_name} is already used by CommunicationToken {other}; choose another secretName");
        status::not_ready(&ctx, &token, st, reasons::SECRET_CONFLICT, msg, true).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    // The operator's own sealing key is never a token Secret: a token created before the key
    // would otherwise hand the operator a key of the requester's choosing.
    let (seal_ns, seal_name) = &ctx.config.entra.sealing_key_secret;
    if *seal_ns == ns && *seal_name == secret_name {
        let msg = format!(
            "Secret {secret_name} is the operator's sealing key; choose another secretName"
        );
        status::not_ready(&ctx, &token, st, reasons::SECRET_CONFLICT, msg, true).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    if token.spec.suspend {
        let msg = "issuing and renewing are suspended (spec.suspend)".to_string();
        status::not_ready(&ctx, &token, st, reasons::SUSPENDED, msg, false).await?;
        return Ok(Action::requeue(resync));
    }
    // A Secret the apiserver rejected for this generation stays rejected until the spec
    // changes; do not issue (and waste) another token for it.
    if st
        .conditions
        .find(types::READY)
        .is_some_and(|c| c.reason == reasons::SECRET_REJECTED && c.observed_generation == gen)
    {
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let user_name = &token.spec.user_ref.name;
    let user = match ctx.users.get(&ns, user_name) {
        Some(u) if u.metadata.deletion_timestamp.is_none() => u,
        found => {
            // The identity is gone or going, and every token of it with it.
            delete_owned_secret(&ctx, &token).await?;
            let msg = match found {
                Some(_) => format!("CommunicationUser {user_name} is being deleted"),
                None => format!("CommunicationUser {user_name} not found in namespace {ns}"),
            };
            status::not_ready(&ctx, &token, st, reasons::USER_NOT_FOUND, msg, true).await?;
            return Ok(Action::requeue(resync));
        }
    };
    let Some(identity) = user.identity_id().map(str::to_string) else {
        // A user with no verdict yet is being set up, the normal course of a first apply:
        // its first status (an identity, or why not) wakes this token, so a new token writes
        // nothing until then. Cold starts had a status write (and an event) per token here.
        if user.status.is_none() && st.conditions.is_empty() && young(&token, ctx.now()) {
            return Ok(Action::requeue(USER_SETUP_RECHECK));
        }
        let msg = format!("waiting for CommunicationUser {user_name} to have an identity");
        status::not_ready(&ctx, &token, st, reasons::USER_NOT_READY, msg, false).await?;
        return Ok(Action::requeue(resync));
    };
    // The user knows its identity was deleted outside the operator: issuing would only meet
    // the same 404. Its status changing (a new identity) wakes this token.
    if super::user::identity_lost(&user) {
        let msg = format!("the identity {identity} of CommunicationUser {user_name} no longer exists in ACS: delete and recreate the CommunicationUser");
        status::not_ready(&ctx, &token, st, reasons::IDENTITY_NOT_FOUND, msg, true).await?;
        return Ok(Action::requeue(resync));
    }
    let creds = match ctx.credentials.resolve_user(&ns, &user.spec).await {
        Ok(c) => c,
        Err(e) if e.is_transient() => return Err(Error::Credentials(e)),
        Err(e) => {
            status::not_ready(&ctx, &token, st, e.reason(), e.message(), true).await?;
            return Ok(Action::requeue(e.requeue()));
        }
    };
    let key = &creds.seal;
    let epoch = user.revocation_epoch();
    // A Secret the watch shows unchanged since this process wrote it (or, after a restart,
    // since the status vouched for it) needs no GET to confirm it: only a plan other than Keep
    // reads it (to rewrite it at its resourceVersion).
    let unchanged = match ctx.own_writes.unchanged(&ns, &secret_name, gen) {
        Some(found) => Some(found),
        None => vouched_by_status(&ctx, &token, &ns, &secret_name).await,
    };
    if let Some((record, rv)) = unchanged.filter(|(r, _)| r.key_fingerprint == creds.fingerprint())
    {
        let state = SecretState::Intact {
            record,
            drifted: false,
        };
        if let Plan::Keep(r) = plan::decide(&Observed {
            token: &token,
            state: &state,
            identity: &identity,
            epoch,
            user_revoking: user.revocation_pending(),
            now: ctx.now(),
        }) {
            return status::keep(&ctx, &token, st, &r, Some(rv)).await;
        }
    }
    // A token never issued whose Secret the listed metadata watch does not show creates it
    // without a GET first. Only then: an issued token's Secret may have left the watch by losing
    // its label (a deletion to the watch, yet still there to repair). After a conflict (a
    // Secret of that name that is not ours), read it again: the conflict stands without
    // another ACS issue.
    let conflicted = st
        .conditions
        .find(types::READY)
        .is_some_and(|c| c.reason == reasons::SECRET_CONFLICT);
    let first_issue = st.revision == 0;
    let current = if first_issue && !conflicted && ctx.own_writes.known_absent(&ns, &secret_name) {
        None
    } else {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        secrets
            .get_opt(&secret_name)
            .await
            .map_err(Error::ReadSecret)?
    };
    let from_status = status::recorded(&st);
    let state = secret::read_secret(current.as_ref(), &token, key, from_status.as_ref());
    if state == SecretState::Foreign {
        let msg = format!("Secret {secret_name} exists and is not owned by this CommunicationToken; it is never taken over: delete it or choose another secretName");
        status::not_ready(&ctx, &token, st, reasons::SECRET_CONFLICT, msg, true).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }

    // Plan.
    let plan = plan::decide(&Observed {
        token: &token,
        state: &state,
        identity: &identity,
        epoch,
        user_revoking: user.revocation_pending(),
        now: ctx.now(),
    });

    // Act.
    let previous_revision = match &state {
        SecretState::Intact { record, .. } | SecretState::KeyChanged(record) => record.revision,
        _ => 0,
    };
    let target = Target {
        token: &token,
        status: st.clone(),
        identity: &identity,
        epoch,
        creds: &creds,
        current: current.as_ref(),
        previous_revision,
    };
    match plan {
        Plan::Keep(r) => {
            let rv = current
                .as_ref()
                .and_then(|c| c.metadata.resource_version.clone());
            status::keep(&ctx, &token, st, &r, rv).await
        }
        Plan::Repair(r) => issue::repair(&ctx, target, &r).await,
        Plan::Issue(reason) => issue::issue(&ctx, target, reason).await,
        Plan::RequestRevocation(e) => {
            if st.revocation_requested != Some(e) {
                st.revocation_requested = Some(e);
                st.revocation_requested_at = Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ctx.now()),
                );
            }
            let msg = format!("spec changed: waiting for CommunicationUser {user_name} to revoke the tokens issued under epoch {e}");
            status::set_both(
                &mut st,
                false,
                true,
                reasons::WAITING_FOR_REVOCATION,
                &msg,
                gen,
                ctx.now(),
            );
            status::write(&ctx, &token, &st).await?;
            // The user's epoch moving wakes this object through the user watch.
            Ok(Action::requeue(resync))
        }
        Plan::WaitForRevocation(reason) => {
            let mut held = st.clone();
            status::held_token_refused(
                &mut held,
                &token,
                reason,
                reasons::WAITING_FOR_REVOCATION,
                "a new token waits for the revocation in progress",
                ctx.now(),
            );
            if held != st {
                status::write(&ctx, &token, &held).await?;
            }
            Err(Error::WaitingForRevocation)
        }
    }
}
