//! The CommunicationUser reconciler: creates (or adopts) the ACS identity, records it, owns
//! revocation for all of the user's tokens, and deletes the identity behind a finalizer.

use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tracing::{instrument, Span};

mod cleanup;
mod identity;
mod observe;
pub mod plan;
mod revoke;
mod status;

use self::cleanup::cleanup;
use self::identity::Step;
use self::plan::Plan;
use self::status::{acs_failed, current_status, not_ready, write_status};
use super::lanes::{express, in_lane, Laned, Lanes};
use super::{finalized, key_of, Context, FailurePolicy};
use crate::acs::AcsError;
use crate::api::condition::{reasons, types};
use crate::api::{
    self, set_condition, CommunicationToken, CommunicationUser, ConditionExt, RevocationStatus,
};
use crate::credentials::{Credentials, CredentialsError};

pub(crate) const CONTROLLER: &str = "communicationuser";

/// Why a CommunicationUser reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to resolve credentials")]
    Credentials(#[source] CredentialsError),
    #[error("failed to create the ACS client")]
    Client(#[source] AcsError),
    #[error("failed to create identity")]
    CreateIdentity(#[source] AcsError),
    #[error("failed to check the adopted identity")]
    GetIdentity(#[source] AcsError),
    #[error("failed to revoke tokens")]
    RevokeTokens(#[source] AcsError),
    #[error("failed to delete identity")]
    DeleteIdentity(#[source] AcsError),
    #[error("failed to patch status")]
    PatchStatus(#[source] kube::Error),
    #[error("failed to read the namespace")]
    ReadNamespace(#[source] kube::Error),
    #[error("object has no namespace or name")]
    Unnamed,
    #[error("credentials for the deletion are missing in a terminating namespace")]
    CleanupRetry,
    #[error("the user changed since it was read; a revocation waits for a fresh read")]
    Fenced,
    #[error("finalizer failed")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Bounded label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Credentials(_) => "credentials",
            Error::Client(_) => "client",
            Error::CreateIdentity(e)
            | Error::GetIdentity(e)
            | Error::RevokeTokens(e)
            | Error::DeleteIdentity(e) => e.category(),
            Error::PatchStatus(_) | Error::ReadNamespace(_) => "kubernetes",
            Error::Unnamed => "invalid",
            Error::CleanupRetry => "credentials",
            Error::Fenced => "conflict",
            Error::Finalizer(e) => super::reconciler_error(e).map_or("kubernetes", Error::category),
        }
    }

    /// Transient errors retry with exponential backoff; the others requeue slowly.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Credentials(e) => e.is_transient(),
            Error::Client(_) | Error::Unnamed => false,
            Error::CreateIdentity(e)
            | Error::GetIdentity(e)
            | Error::RevokeTokens(e)
            | Error::DeleteIdentity(e) => e.is_transient(),
            Error::PatchStatus(_)
            | Error::ReadNamespace(_)
            | Error::CleanupRetry
            | Error::Fenced => true,
            Error::Finalizer(e) => super::reconciler_error(e).is_none_or(Error::is_transient),
        }
    }
}

/// Builds the CommunicationUser controller for one watched scope.
pub fn controller(
    ctx: Arc<Context>,
    scope: Option<String>,
    users: impl Stream<Item = Arc<CommunicationUser>> + Send + 'static,
    tokens: impl Stream<Item = Arc<CommunicationToken>> + Send + 'static,
    creds: impl Stream<Item = Arc<PartialObjectMeta<Secret>>> + Send + 'static,
    default_changed: impl Stream<Item = ObjectRef<CommunicationUser>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send {
    let reader: Store<CommunicationUser> = match ctx.users.store_for_scope(scope.as_deref()) {
        Some(s) => s,
        None => unreachable!("a store exists for every scope"),
    };
    let lookup = ctx.clone();
    let cred_lookup = ctx.clone();
    let lanes = Lanes::new(ctx.config.concurrency.into());
    let (offers, express) = express::express(lanes.clone(), ctx.clone(), reconcile, error_policy);
    let secret_offers = offers.clone();
    // Only changes a reconcile must act on: its own status writes never wake it.
    let controller = Controller::for_shared_stream(
        super::triggers::meaningful_changes(
            users,
            {
                let live = reader.clone();
                move || live.state()
            },
            &ctx.change_filters,
            "user_changes",
        )
        .inspect(move |u| offers.offer(u.as_ref())),
        reader,
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency))
    // A token asking for a revocation, or finding the identity gone, wakes its user.
    .watches_shared_stream(tokens, |t: Arc<CommunicationToken>| {
        // Only a revocation request concerns the user: waking it on every token change
        // cost ~13 reconciles per user in a cold start of 5 tokens each, and each extra
        // reconcile may read a cache that lags its own status write.
        let st = t.status.as_ref()?;
        let lost = st
            .conditions
            .find(types::READY)
            .is_some_and(|c| c.reason == reasons::IDENTITY_NOT_FOUND);
        if st.revocation_requested.is_none() && !lost {
            return None;
        }
        t.namespace()
            .map(|ns| ObjectRef::new(&t.spec.user_ref.name).within(&ns))
    })
    // A credentials Secret created or changed later wakes the users that may use it.
    .watches_shared_stream(creds, move |s: Arc<PartialObjectMeta<Secret>>| {
        let ns = s.namespace().unwrap_or_default();
        let name = s.name_any();
        // The default Secret wakes its users through `default_changed` (the token
        // controller's mapper sends that signal once for both).
        if super::wakeups::is_default_secret(&cred_lookup, &ns, &name) {
            return Vec::new();
        }
        let woken = super::wakeups::users_using_secret(&cred_lookup, &ns, &name);
        woken.iter().for_each(|u| secret_offers.offer_ref(u));
        woken
    })
    // The unwatched default credentials changed (polled).
    .reconcile_on(default_changed)
    .graceful_shutdown_on(lanes.closing_on(shutdown))
    .run(
        move |u, ctx| in_lane(lanes.clone(), u, ctx, |u, ctx| Box::pin(reconcile(u, ctx))),
        error_policy,
        ctx,
    )
    .for_each(move |r| {
        let _ = &lookup;
        if let Err(e) = r {
            tracing::debug!(error = %e, "user reconcile trigger error");
        }
        futures::future::ready(())
    });
    // The express path ends with the controller (its offers live in the controller's streams).
    futures::future::join(controller, express).map(|_| ())
}

impl Laned for CommunicationUser {
    const FINALIZER: &'static str = crate::api::USER_FINALIZER;

    fn has_status(&self, ctx: &Context) -> bool {
        // A status written with a new identity and not in the cache yet counts.
        self.status.is_some()
            || ctx
                .recent_identities
                .contains(&self.namespace().unwrap_or_default(), &self.name_any())
    }

    fn cached(ctx: &Context, ns: &str, name: &str) -> Option<Arc<Self>> {
        ctx.users.get(ns, name)
    }
}

#[instrument(skip(user, ctx), fields(namespace = user.namespace().unwrap_or_default(), name = %user.name_any(), controller = CONTROLLER, identity = tracing::field::Empty))]
async fn reconcile(user: Arc<CommunicationUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    let steps = (|u| apply(u, ctx.clone()), |u| cleanup(u, ctx.clone()));
    finalized::reconcile(&ctx, CONTROLLER, api::USER_FINALIZER, user, steps).await
}

finalized::reconcile_error!(Error);

fn error_policy(user: Arc<CommunicationUser>, err: &Error, ctx: Arc<Context>) -> Action {
    if let Some(a) = finalized::not_a_failure(&ctx, CONTROLLER, user.as_ref(), err) {
        return a;
    }
    if fenced(err) {
        // Not a failure: this reconcile read a cache that did not show the latest write yet
        // (often its own); the watch delivers it within moments. Read again soon, backing off
        // should the cache stay behind, but without holding the next ACS call.
        let key = key_of(user.as_ref());
        let n = ctx.failures.record(&key);
        let d =
            crate::rotation::failure_backoff(n, None, ctx.config.guards.failure_backoff_max, &key);
        tracing::debug!(retry_in = ?d, "status write fenced off by a newer resourceVersion; reading again");
        return Action::requeue(d);
    }
    FailurePolicy {
        remaining: None,
        transient: err.is_transient(),
    }
    .back_off(&ctx, user.as_ref(), err)
}

fn fenced(err: &Error) -> bool {
    match err {
        Error::Fenced => true,
        Error::Finalizer(e) => super::reconciler_error(e).is_some_and(fenced),
        _ => false,
    }
}

/// The ACS resource GUID inside an identity id (`8:acs:<resource>_<user>`).
pub fn resource_of(id: &str) -> Option<String> {
    let rest = id.strip_prefix("8:")?;
    let (_, rest) = rest.split_once(':')?;
    let (resource, _) = rest.split_once('_')?;
    Some(resource.to_string())
}

/// The externalId that makes creation idempotent in preview mode.
pub fn external_id_for(user: &CommunicationUser) -> Option<String> {
    user.metadata.uid.as_ref().map(|uid| format!("k8s-{uid}"))
}

async fn apply(user: Arc<CommunicationUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = user.namespace().ok_or(Error::Unnamed)?;
    let mut status = current_status(&ctx, &user);
    status.observed_generation = user.metadata.generation;
    let creds = ctx
        .credentials_for(&ns, &user.spec)
        .await
        .map_err(Error::Credentials)?;
    if status.identity_id.is_none() && status.revocation.is_none() && creds.is_ok() {
        // Part of the first write (an identity, or why not with usable credentials), so that
        // write is also the last one of a new user.
        status.revocation = Some(RevocationStatus::default());
    }
    let plan = plan::decide(&observe::observe(&ctx, &user, &status, creds.as_ref()));
    if let Plan::NotReady {
        reason,
        message,
        requeue,
    } = plan
    {
        // Missing credentials: a watch on Secrets wakes this object when they appear or
        // change (ServiceAccounts are not watched: the requeue reads again sooner).
        not_ready(&ctx, &user, status, reason, message).await?;
        return Ok(Action::requeue(requeue));
    }
    // Only a refusal comes of credentials that cannot be used.
    let creds = creds.map_err(Error::Credentials)?;
    let acs = ctx
        .acs_client(&creds, &key_of(user.as_ref()))
        .map_err(Error::Client)?;
    // Rebound to the user as written after each status write of this reconcile, so the next
    // write compares with it and is fenced on its resourceVersion.
    let step = match plan {
        Plan::Adopt { id, verify } => {
            identity::adopt(&ctx, user, &mut status, &acs, &creds, id, verify).await?
        }
        Plan::Create => identity::create(&ctx, user, &mut status, &acs, &creds).await?,
        Plan::Ready { .. } | Plan::NotReady { .. } => Step::Continue(user),
    };
    let user = match step {
        Step::Continue(u) => u,
        Step::Stop(action) => return Ok(action),
    };
    let Some(id) = status.identity_id.clone() else {
        return Err(Error::Unnamed);
    };
    ready(&ctx, user, &acs, &creds, &id, status).await
}

/// The identity is in place: serves a revocation request, then reports the user ready.
async fn ready(
    ctx: &Context,
    mut user: Arc<CommunicationUser>,
    acs: &crate::acs::AcsClient,
    creds: &Credentials,
    id: &str,
    mut status: api::CommunicationUserStatus,
) -> Result<Action, Error> {
    // The reconcile's span names the identity from here on (revocation logs included).
    Span::current().record("identity", id);
    match revoke::revoke_if_requested(ctx, &user, acs, creds, id, &mut status).await? {
        revoke::Outcome::Nothing => {}
        revoke::Outcome::Wrote(w) => user = w,
        revoke::Outcome::Stop(action) => return Ok(action),
    }
    if status.revocation.is_none() {
        status.revocation = Some(RevocationStatus::default());
    }
    // Keep the reason of a creation or adoption until something else happens.
    let reason = status
        .conditions
        .find(types::READY)
        .filter(|c| c.status == "True")
        .map(|c| c.reason.clone())
        .filter(|r| r == reasons::IDENTITY_CREATED || r == reasons::IDENTITY_ADOPTED)
        .unwrap_or_else(|| reasons::IDENTITY_READY.to_string());
    set_condition(
        &mut status.conditions,
        types::READY,
        true,
        &reason,
        format!("identity {id} is ready"),
        user.metadata.generation,
        ctx.now(),
    );
    write_status(ctx, &user, &status).await?;
    ctx.failures.reset(&key_of(user.as_ref()));
    Ok(Action::requeue(ctx.config.resync_period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_guid_is_read_from_an_identity_id() {
        assert_eq!(
            resource_of("8:acs:2dee53b4-368b-45b4-ab52-8493fb117652_00000005-14a2").as_deref(),
            Some("2dee53b4-368b-45b4-ab52-8493fb117652")
        );
        assert_eq!(resource_of("8:gcch-acs:r_u").as_deref(), Some("r"));
        assert_eq!(resource_of("nonsense"), None);
    }
}
