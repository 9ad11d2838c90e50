//! The CommunicationToken reconciler: keeps a valid token in the Secret, renews it at its
//! renewal time, asks the user for a revocation when the spec changes, re-issues after any
//! revocation or key rotation, repairs a drifted Secret with its same token, restores a
//! deleted one, and cleans up on delete.
//!
//! Shaped observe → plan → act: [`apply`] reads the caches, the Secret and the user; the pure
//! [`plan::decide`] returns the one action; [`issue`] acts on it.

mod cleanup;
pub mod gate;
mod issue;
pub mod plan;
mod render;
mod restart;
mod status;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
mod wiring;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use tracing::instrument;

use super::{finalized, Context, FailurePolicy};
use crate::acs::AcsError;
use crate::api::condition::{reasons, types};
use crate::api::{self, CommunicationToken, ConditionExt};
use crate::credentials::CredentialsError;
use crate::secret::{self, SecretState};

use self::cleanup::{cleanup, delete_owned_secret};
use self::issue::Target;
use self::plan::{Observed, Plan, Stop};
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
    let steps = (|t| apply(t, ctx.clone()), |t| cleanup(t, ctx.clone()));
    finalized::reconcile(&ctx, CONTROLLER, api::TOKEN_FINALIZER, token, steps).await
}

finalized::reconcile_error!(Error);

fn error_policy(token: Arc<CommunicationToken>, err: &Error, ctx: Arc<Context>) -> Action {
    if let Some(a) = finalized::not_a_failure(&ctx, CONTROLLER, token.as_ref(), err) {
        return a;
    }
    if matches!(waiting(err), Some(true)) {
        // Not a failure: the user's status change wakes this object; this is a safety net.
        return Action::requeue(Duration::from_secs(30));
    }
    let now = ctx.now();
    FailurePolicy {
        remaining: token
            .status
            .as_ref()
            .and_then(|s| s.expires_on.as_ref())
            .and_then(|e| Duration::try_from(e.0.duration_since(now)).ok()),
        transient: err.is_transient(),
    }
    .back_off(&ctx, token.as_ref(), err)
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

/// Created less than [`gate::USER_SETUP_RECHECK`] ago (a missing timestamp counts as old).
fn young(token: &CommunicationToken, now: jiff::Timestamp) -> bool {
    token.metadata.creation_timestamp.as_ref().is_some_and(|c| {
        jiff::SignedDuration::try_from(gate::USER_SETUP_RECHECK)
            .is_ok_and(|limit| now.duration_since(c.0) < limit)
    })
}

/// Acts on a plan that serves no token: says why (deleting the Secret of a user that is gone),
/// or waits without a word.
async fn stop_here(
    ctx: &Context,
    token: &CommunicationToken,
    st: api::CommunicationTokenStatus,
    stop: Stop,
) -> Result<Action, Error> {
    match stop {
        Stop::NotReady(n) => {
            if n.delete_secret {
                delete_owned_secret(ctx, token).await?;
            }
            status::not_ready(ctx, token, st, n.reason, n.message, n.event).await?;
            Ok(Action::requeue(n.requeue))
        }
        Stop::Wait(after) => Ok(Action::requeue(after)),
    }
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
    let token = freshest(&ctx, token, &ns);
    let mut st = token.status.clone().unwrap_or_default();
    st.observed_generation = gen;
    // Only a write or a confirmation of the Secret at this generation vouches for its version
    // (keep, issue, repair); any other status this reconcile writes does not.
    st.secret_resource_version = None;
    let secret_name = token.secret_name();
    st.secret_name = Some(secret_name.clone());
    let resync = ctx.config.resync_period;

    // Observe what the caches say (the claim on the Secret name, suspension, the user and its
    // identity), and stop there when the gate says so; only then the credentials and the Secret.
    let cached_user = ctx.users.get(&ns, &token.spec.user_ref.name);
    let checked = gate::check(&gate_of(&ctx, &token, &st, &ns, cached_user.as_deref()));
    let (user, identity) = match checked {
        Ok(found) => found,
        Err(stop) => return stop_here(&ctx, &token, st, stop).await,
    };
    let creds = match ctx
        .credentials_for(&ns, &user.spec)
        .await
        .map_err(Error::Credentials)?
    {
        Ok(c) => c,
        Err(refused) => {
            return stop_here(&ctx, &token, st, gate::credentials_refused(&refused)).await
        }
    };
    let epoch = user.revocation_epoch();
    let mut seen =
        observe_secret(&ctx, &token, &st, &ns, &secret_name, creds.fingerprint()).await?;

    // Plan once; again only when a plan that writes the Secret finds a vouched Secret changed
    // since the watch showed it (then from the Secret as read, which ends the loop).
    let (plan, state, current) = loop {
        let state = seen.state(&token, &creds.seal, status::recorded(&st).as_ref());
        let plan = plan::decide(&Observed {
            token: &token,
            state: &state,
            identity: &identity,
            epoch,
            user_revoking: user.revocation_pending(),
            now: ctx.now(),
        });
        if !matches!(plan, Plan::Repair(_) | Plan::Issue(_)) {
            break (plan, state, None);
        }
        match secret_to_write(&ctx, &seen, &st, &ns, &secret_name).await? {
            ToWrite::At(current) => break (plan, state, current),
            ToWrite::Moved(read) => seen = SecretSeen::Read(read),
        }
    };

    // Act.
    let previous_revision = match &state {
        SecretState::Intact { record, .. } | SecretState::KeyChanged(record) => record.revision,
        _ => 0,
    };
    /// The plans that write the Secret.
    enum Write {
        Repair(plan::Served),
        Issue(plan::IssueReason),
    }
    let write = match plan {
        Plan::Keep(served) => {
            return status::keep(&ctx, &token, st, &served, seen.version()).await;
        }
        Plan::RequestRevocation(e) => {
            status::request_revocation(&ctx, &token, st, e).await?;
            // The user's epoch moving wakes this object through the user watch.
            return Ok(Action::requeue(resync));
        }
        Plan::Stop(stop) => return stop_here(&ctx, &token, st, stop).await,
        Plan::WaitForRevocation(reason) => {
            status::wait_for_revocation(&ctx, &token, st, reason).await?;
            return Err(Error::WaitingForRevocation);
        }
        Plan::Repair(served) => Write::Repair(served),
        Plan::Issue(reason) => Write::Issue(reason),
    };
    let target = Target {
        token: &token,
        status: st.clone(),
        identity: &identity,
        epoch,
        creds: &creds,
        current: current.as_deref(),
        previous_revision,
    };
    match write {
        Write::Repair(served) => issue::repair(&ctx, target, &served).await,
        Write::Issue(reason) => issue::issue(&ctx, target, reason).await,
    }
}

/// The Secret a plan writes over, at its resourceVersion.
enum ToWrite {
    /// Write over this one (none: create it).
    At(Option<Box<Secret>>),
    /// A vouched Secret read now is not the version the plan was made from: plan again from it.
    Moved(Option<Box<Secret>>),
}

/// A Secret vouched for is read only when a plan writes over it, and written only while it is
/// still the version the plan was made from.
async fn secret_to_write(
    ctx: &Context,
    seen: &SecretSeen,
    st: &api::CommunicationTokenStatus,
    ns: &str,
    secret_name: &str,
) -> Result<ToWrite, Error> {
    match seen {
        SecretSeen::Read(current) => Ok(ToWrite::At(current.clone())),
        SecretSeen::Vouched { version, .. } => {
            let current = read_current(ctx, st, ns, secret_name).await?;
            let read = current
                .as_ref()
                .and_then(|c| c.metadata.resource_version.as_deref());
            let same = read == Some(version.as_str());
            let current = current.map(Box::new);
            Ok(if same {
                ToWrite::At(current)
            } else {
                ToWrite::Moved(current)
            })
        }
    }
}

/// The token Secret as this reconcile knows it: vouched for by the Secrets' watch (unchanged
/// since this process wrote it, or since the status recorded its version), or read.
enum SecretSeen {
    Vouched {
        record: crate::secret::RecordedToken,
        version: String,
    },
    Read(Option<Box<Secret>>),
}

impl SecretSeen {
    fn state(
        &self,
        token: &CommunicationToken,
        seal: &secret::Seal,
        from_status: Option<&crate::secret::RecordedToken>,
    ) -> SecretState {
        match self {
            SecretSeen::Vouched { record, .. } => SecretState::Intact {
                record: record.clone(),
                drifted: false,
            },
            SecretSeen::Read(current) => {
                secret::read_secret(current.as_deref(), token, seal, from_status)
            }
        }
    }

    /// The Secret's resourceVersion, for the status to vouch for.
    fn version(&self) -> Option<String> {
        match self {
            SecretSeen::Vouched { version, .. } => Some(version.clone()),
            SecretSeen::Read(current) => current
                .as_ref()
                .and_then(|c| c.metadata.resource_version.clone()),
        }
    }
}

/// A Secret the watch shows unchanged since this process wrote it (or, after a restart, since
/// the status vouched for it), sealed under the key in use, needs no GET: a plan that keeps it
/// writes nothing to it. Otherwise it is read (a token never issued whose Secret the listed
/// metadata watch does not show creates it without a GET first).
async fn observe_secret(
    ctx: &Context,
    token: &CommunicationToken,
    st: &api::CommunicationTokenStatus,
    ns: &str,
    secret_name: &str,
    fingerprint: &str,
) -> Result<SecretSeen, Error> {
    let unchanged = match ctx
        .own_writes
        .unchanged(ns, secret_name, token.metadata.generation)
    {
        Some(found) => Some(found),
        None => vouched_by_status(ctx, token, ns, secret_name).await,
    };
    if let Some((record, version)) = unchanged.filter(|(r, _)| r.key_fingerprint == fingerprint) {
        return Ok(SecretSeen::Vouched { record, version });
    }
    let current = read_current(ctx, st, ns, secret_name).await?;
    Ok(SecretSeen::Read(current.map(Box::new)))
}

/// What the gate reads, from the caches.
fn gate_of<'a, 'u>(
    ctx: &Context,
    token: &'a CommunicationToken,
    st: &'a api::CommunicationTokenStatus,
    ns: &'a str,
    user: Option<&'u api::CommunicationUser>,
) -> gate::Gate<'a, 'u> {
    let (seal_ns, seal_name) = &ctx.config.entra.sealing_key_secret;
    let secret_name = st.secret_name.as_deref().unwrap_or_default();
    gate::Gate {
        token,
        status: st,
        namespace: ns,
        secret_name,
        earlier_claimant: earlier_claimant(ctx, token),
        names_sealing_key: seal_ns == ns && seal_name == secret_name,
        user: match user {
            None => gate::UserSeen::Missing,
            Some(u) if u.metadata.deletion_timestamp.is_some() => gate::UserSeen::Deleting,
            Some(u) => gate::UserSeen::Found(u),
        },
        young: young(token, ctx.now()),
        resync: ctx.config.resync_period,
    }
}

/// The Secret as it is now, read unless the Secrets' watch (listed) shows it absent for a
/// token never issued. Only then: an issued token's Secret may have left the watch by losing
/// its label (a deletion to the watch, yet still there to repair). After a conflict (a Secret
/// of that name that is not ours), read it again: the conflict stands without another ACS
/// issue.
async fn read_current(
    ctx: &Context,
    st: &api::CommunicationTokenStatus,
    ns: &str,
    secret_name: &str,
) -> Result<Option<Secret>, Error> {
    let conflicted = st
        .conditions
        .find(types::READY)
        .is_some_and(|c| c.reason == reasons::SECRET_CONFLICT);
    if st.revision == 0 && !conflicted && ctx.own_writes.known_absent(ns, secret_name) {
        return Ok(None);
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    secrets
        .get_opt(secret_name)
        .await
        .map_err(Error::ReadSecret)
}

/// The token with the status this process wrote last, when the cache does not show it yet:
/// everything in a reconcile (the plan included) reads it, not the stale copy.
fn freshest(ctx: &Context, token: Arc<CommunicationToken>, ns: &str) -> Arc<CommunicationToken> {
    match ctx.token_status.fresher(
        ns,
        &token.name_any(),
        token.metadata.resource_version.as_deref(),
    ) {
        Some(fresh) => {
            let mut t = (*token).clone();
            t.status = Some(fresh);
            Arc::new(t)
        }
        None => token,
    }
}
