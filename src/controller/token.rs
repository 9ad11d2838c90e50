//! The CommunicationToken reconciler: keeps a valid token in the Secret, renews it at its
//! renewal time, asks the user for a revocation when the spec changes, re-issues after any
//! revocation or key rotation, restores a deleted or edited Secret, and cleans up on delete.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PartialObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use tracing::{info, instrument, warn};

use super::user::error_chain;
use super::{apply_status, key_of, Context};
use crate::acs::AcsError;
use crate::api::condition::{reasons, types};
use crate::api::{
    self, set_condition, CommunicationToken, CommunicationTokenStatus, CommunicationUser,
    ConditionExt,
};
use crate::credentials::CredentialsError;
use crate::rotation::{self, RenewalPolicy};
use crate::secret::{self, IssuedToken, RecordedToken, SecretState};

const CONTROLLER: &str = "communicationtoken";

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

/// Builds the CommunicationToken controller for one watched scope.
pub fn controller(
    ctx: Arc<Context>,
    scope: Option<String>,
    tokens: impl Stream<Item = Arc<CommunicationToken>> + Send + 'static,
    users: impl Stream<Item = Arc<CommunicationUser>> + Send + 'static,
    creds: impl Stream<Item = Arc<PartialObjectMeta<Secret>>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send {
    let reader: Store<CommunicationToken> = match ctx.tokens.store_for_scope(scope.as_deref()) {
        Some(s) => s,
        None => unreachable!("a store exists for every scope"),
    };
    let secrets_api: Api<PartialObjectMeta<Secret>> = match &scope {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    // Only our Secrets, and only their metadata: a deletion or an edit (new resourceVersion)
    // wakes the owner, which then reads that one Secret.
    let owned = watcher(
        secrets_api,
        watcher::Config::default().labels(&format!(
            "{}={}",
            api::MANAGED_BY_LABEL,
            api::MANAGED_BY
        )),
    )
    .default_backoff()
    .touched_objects();
    let by_user = ctx.clone();
    let by_secret = ctx.clone();
    Controller::for_shared_stream(tokens, reader)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency),
        )
        .owns_stream(owned)
        // A user's epoch moving (or its identity appearing) wakes all of its tokens.
        .watches_shared_stream(users, move |u: Arc<CommunicationUser>| {
            // A user without an identity (being set up) gives its tokens nothing to do but
            // write "waiting" again; its identity appearing, or its deletion, wakes them.
            if u.identity_id().is_none() && u.metadata.deletion_timestamp.is_none() {
                return Vec::new();
            }
            let ns = u.namespace().unwrap_or_default();
            let name = u.name_any();
            by_user
                .tokens
                .in_namespace_where(&ns, |t| t.spec.user_ref.name == name)
                .into_iter()
                .map(|t| ObjectRef::from_obj(t.as_ref()))
                .collect::<Vec<_>>()
        })
        // New or rotated credentials wake every token of the namespace (key rotation).
        .watches_shared_stream(creds, move |s: Arc<PartialObjectMeta<Secret>>| {
            let ns = s.namespace().unwrap_or_default();
            by_secret
                .tokens
                .in_namespace(&ns)
                .into_iter()
                .map(|t| ObjectRef::from_obj(t.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "token reconcile trigger error");
            }
            futures::future::ready(())
        })
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
    super::finish_reconcile(&ctx, token.as_ref(), timer, &result);
    result
}

fn error_policy(token: Arc<CommunicationToken>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(CONTROLLER, err.category());
    let key = key_of(token.as_ref());
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
    if err.is_transient() {
        let d = rotation::failure_backoff(n, remaining, &key);
        warn!(error = %err, cause = %error_chain(err), failures = n, retry_in = ?d, "reconcile failed");
        Action::requeue(d)
    } else {
        warn!(error = %err, cause = %error_chain(err), "reconcile failed; waiting for a change");
        Action::requeue(Duration::from_secs(300))
    }
}

fn waiting(err: &Error) -> Option<bool> {
    match err {
        Error::WaitingForRevocation => Some(true),
        Error::Finalizer(e) => super::reconciler_error(e).and_then(waiting),
        _ => None,
    }
}

fn policy(token: &CommunicationToken) -> RenewalPolicy {
    match (&token.spec.renew_before, token.spec.renew_before_percentage) {
        (Some(d), _) => RenewalPolicy::Before(Duration::from(*d)),
        (None, Some(p)) => RenewalPolicy::RemainingPercentage(p.clamp(1, 99) as u8),
        (None, None) => RenewalPolicy::Default,
    }
}

fn renewal_at(token: &CommunicationToken, r: &RecordedToken) -> jiff::Timestamp {
    rotation::renewal_time(
        r.issued_at,
        r.expires_on,
        policy(token),
        token.metadata.uid.as_deref().unwrap_or_default(),
    )
}

fn sorted(mut v: Vec<api::token::Scope>) -> Vec<api::token::Scope> {
    v.sort();
    v.dedup();
    v
}

/// What the reconcile must do about the token.
#[derive(Debug, PartialEq)]
enum Decision {
    /// The Secret holds a good token: record it and requeue at its renewal time.
    Keep(RecordedToken),
    /// Issue a new token now, for this reason (a metric label and an event).
    Issue(&'static str),
    /// The spec changed: ask the user to revoke tokens issued under this epoch, then wait.
    RequestRevocation(i64),
}

fn decide(
    token: &CommunicationToken,
    state: &SecretState,
    identity: &str,
    epoch: i64,
    now: jiff::Timestamp,
) -> Decision {
    let revision = token.status.as_ref().map_or(0, |s| s.revision);
    match state {
        SecretState::Missing if revision == 0 => Decision::Issue("initial"),
        SecretState::Missing | SecretState::Tampered => Decision::Issue("secret_restored"),
        SecretState::KeyChanged(_) => Decision::Issue("key_rotated"),
        SecretState::Foreign => unreachable!("handled before deciding"),
        SecretState::Valid(r) => {
            let spec_changed = sorted(r.scopes.clone()) != sorted(token.spec.scopes.clone())
                || r.expires_in_minutes != token.spec.expires_in_minutes;
            let rotate = token.annotations().get(api::ROTATE_ANNOTATION);
            let handled = token
                .status
                .as_ref()
                .and_then(|s| s.handled_rotate_annotation.as_ref());
            if r.user_id != identity {
                Decision::Issue("initial")
            } else if spec_changed {
                if epoch > r.revocation_epoch {
                    Decision::Issue("spec_changed")
                } else {
                    Decision::RequestRevocation(r.revocation_epoch)
                }
            } else if r.revocation_epoch < epoch {
                Decision::Issue("revoked")
            } else if rotate.is_some() && rotate != handled {
                Decision::Issue("forced")
            } else if now >= renewal_at(token, r) || now >= r.expires_on {
                Decision::Issue("renewal")
            } else {
                Decision::Keep(r.clone())
            }
        }
    }
}

async fn write_status(
    ctx: &Context,
    token: &CommunicationToken,
    status: &CommunicationTokenStatus,
) -> Result<(), Error> {
    let ns = token.namespace().ok_or(Error::Unnamed)?;
    let api: Api<CommunicationToken> = Api::namespaced(ctx.client.clone(), &ns);
    apply_status(
        &api,
        &token.name_any(),
        api::TOKEN_MANAGER,
        token.status.as_ref(),
        status,
    )
    .await
    .map_err(Error::PatchStatus)?;
    Ok(())
}

/// Ready=False with `reason`; a Warning event when the reason is new.
async fn not_ready(
    ctx: &Context,
    token: &CommunicationToken,
    mut status: CommunicationTokenStatus,
    reason: &str,
    message: String,
    warn_event: bool,
) -> Result<(), Error> {
    let previous = status
        .conditions
        .find(types::READY)
        .map(|c| c.reason.clone());
    let gen = token.metadata.generation;
    let now = ctx.now();
    set_condition(
        &mut status.conditions,
        types::READY,
        false,
        reason,
        message.clone(),
        gen,
        now,
    );
    set_condition(
        &mut status.conditions,
        types::ISSUING,
        false,
        reason,
        message.clone(),
        gen,
        now,
    );
    write_status(ctx, token, &status).await?;
    if previous.as_deref() != Some(reason) {
        let type_ = if warn_event {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(token, type_, reason, "Reconcile", message).await;
    }
    Ok(())
}

/// Deletes the token's Secret if (and only if) this CommunicationToken controls it.
async fn delete_owned_secret(ctx: &Context, token: &CommunicationToken) -> Result<bool, Error> {
    let ns = token.namespace().ok_or(Error::Unnamed)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let name = token.secret_name();
    let Some(s) = api.get_opt(&name).await.map_err(Error::ReadSecret)? else {
        return Ok(false);
    };
    if !secret::is_controlled_by(&s, token) {
        return Ok(false);
    }
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

/// The earlier-created CommunicationToken that already claims the same Secret name, if any.
fn earlier_claimant(ctx: &Context, token: &CommunicationToken) -> Option<String> {
    let ns = token.namespace()?;
    let mine = token.secret_name();
    let my_key = (token.metadata.creation_timestamp.clone(), token.name_any());
    ctx.tokens
        .in_namespace_where(&ns, |o| {
            // secret_name() without its allocation: this runs for every token in the namespace.
            let claims = match &o.spec.secret_name {
                Some(s) => *s == mine,
                None => o.metadata.name.as_deref() == Some(mine.as_str()),
            };
            claims
                && o.metadata.uid != token.metadata.uid
                && o.metadata.deletion_timestamp.is_none()
        })
        .into_iter()
        .filter(|o| (o.metadata.creation_timestamp.clone(), o.name_any()) < my_key)
        .map(|o| o.name_any())
        .next()
}

async fn apply(token: Arc<CommunicationToken>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = token.namespace().ok_or(Error::Unnamed)?;
    let now = ctx.now();
    let gen = token.metadata.generation;
    let mut status = token.status.clone().unwrap_or_default();
    status.observed_generation = gen;
    let secret_name = token.secret_name();
    status.secret_name = Some(secret_name.clone());
    let resync = ctx.config.resync_period;

    if let Some(other) = earlier_claimant(&ctx, &token) {
        let msg = format!("Secret {secret_name} is already used by CommunicationToken {other}; choose another secretName");
        not_ready(&ctx, &token, status, reasons::SECRET_CONFLICT, msg, true).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    if token.spec.suspend {
        let msg = "issuing and renewing are suspended (spec.suspend)".to_string();
        not_ready(&ctx, &token, status, reasons::SUSPENDED, msg, false).await?;
        return Ok(Action::requeue(resync));
    }

    // A Secret the apiserver rejected for this generation stays rejected until the spec
    // changes; do not issue (and waste) another token for it.
    if status
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
            not_ready(&ctx, &token, status, reasons::USER_NOT_FOUND, msg, true).await?;
            return Ok(Action::requeue(resync));
        }
    };
    let Some(identity) = user.identity_id().map(str::to_string) else {
        let msg = format!("waiting for CommunicationUser {user_name} to have an identity");
        not_ready(&ctx, &token, status, reasons::USER_NOT_READY, msg, false).await?;
        return Ok(Action::requeue(resync));
    };
    let epoch = user.revocation_epoch();

    let creds = match ctx
        .credentials
        .resolve(&ns, user.spec.credentials.as_ref())
        .await
    {
        Ok(c) => c,
        Err(e) if e.is_transient() => return Err(Error::Credentials(e)),
        Err(e) => {
            not_ready(&ctx, &token, status, e.reason(), e.message(), true).await?;
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    };
    let key = &creds.connection.access_key;

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let current = secrets
        .get_opt(&secret_name)
        .await
        .map_err(Error::ReadSecret)?;
    let state = secret::read_secret(current.as_ref(), &token, key);
    if state == SecretState::Foreign {
        let msg = format!("Secret {secret_name} exists and is not owned by this CommunicationToken; it is never taken over: delete it or choose another secretName");
        not_ready(&ctx, &token, status, reasons::SECRET_CONFLICT, msg, true).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }

    let reason = match decide(&token, &state, &identity, epoch, now) {
        Decision::Keep(r) => {
            record(&mut status, &r, &token, key);
            if status.revocation_requested.is_some_and(|e| epoch > e) {
                status.revocation_requested = None;
            }
            status.failed_attempts = 0;
            let renew = renewal_at(&token, &r);
            // The condition written with the token (TokenIssued, TokenRotated, ...) already says
            // it is valid; rewriting it would cost a status write per issuance.
            let current = status.conditions.find(types::READY).is_some_and(|c| {
                c.status == "True"
                    && c.observed_generation == gen
                    && [
                        reasons::TOKEN_ISSUED,
                        reasons::TOKEN_ROTATED,
                        reasons::SECRET_RESTORED,
                        reasons::TOKEN_VALID,
                    ]
                    .contains(&c.reason.as_str())
            });
            if !current {
                set_condition(
                    &mut status.conditions,
                    types::READY,
                    true,
                    reasons::TOKEN_VALID,
                    format!("token valid until {}", r.expires_on),
                    gen,
                    now,
                );
                set_condition(
                    &mut status.conditions,
                    types::ISSUING,
                    false,
                    reasons::TOKEN_VALID,
                    format!("next renewal at {renew}"),
                    gen,
                    now,
                );
            }
            write_status(&ctx, &token, &status).await?;
            return Ok(Action::requeue(rotation::requeue_after(
                now,
                renew,
                Duration::from_secs(1),
                resync,
            )));
        }
        Decision::RequestRevocation(e) => {
            status.revocation_requested = Some(e);
            let msg = format!("spec changed: waiting for CommunicationUser {user_name} to revoke the tokens issued under epoch {e}");
            set_condition(
                &mut status.conditions,
                types::READY,
                false,
                reasons::WAITING_FOR_REVOCATION,
                msg.clone(),
                gen,
                now,
            );
            set_condition(
                &mut status.conditions,
                types::ISSUING,
                true,
                reasons::WAITING_FOR_REVOCATION,
                msg,
                gen,
                now,
            );
            write_status(&ctx, &token, &status).await?;
            // The user's epoch moving wakes this object through the user watch.
            return Ok(Action::requeue(resync));
        }
        Decision::Issue(reason) => reason,
    };

    // A pending revocation request (spec change or deletion) must complete first, or the new
    // token would be revoked by it.
    if let Some(e) = status.revocation_requested {
        if epoch <= e && reason != "spec_changed" {
            return Err(Error::WaitingForRevocation);
        }
    }

    let acs = ctx.acs.client(&creds.connection).map_err(Error::Client)?;
    let issued = match acs
        .issue_token(
            &identity,
            &token.spec.scopes,
            Some(token.spec.expires_in_minutes as u32),
        )
        .await
    {
        Ok(t) => t,
        Err(e) => {
            status.failed_attempts = status.failed_attempts.saturating_add(1);
            let permanent = !e.is_transient();
            let reason_text = if e.status() == Some(401) {
                reasons::CREDENTIALS_REJECTED
            } else {
                reasons::ISSUE_FAILED
            };
            let msg = format!(
                "failed to issue token ({}): {}",
                e.category(),
                error_chain(&e)
            );
            set_condition(
                &mut status.conditions,
                types::ISSUING,
                true,
                reason_text,
                msg.clone(),
                gen,
                now,
            );
            let still_valid = status.expires_on.as_ref().is_some_and(|x| x.0 > now);
            if !still_valid || permanent {
                set_condition(
                    &mut status.conditions,
                    types::READY,
                    false,
                    reason_text,
                    msg.clone(),
                    gen,
                    now,
                );
            }
            let _ = write_status(&ctx, &token, &status).await;
            if permanent {
                ctx.event(
                    token.as_ref(),
                    EventType::Warning,
                    reason_text,
                    "IssueToken",
                    msg,
                )
                .await;
            }
            return Err(Error::IssueToken(e));
        }
    };
    let expires_on = issued.expires_at().unwrap_or_else(|| {
        now + jiff::SignedDuration::from_mins(i64::from(token.spec.expires_in_minutes))
    });
    let prev_revision = match &state {
        SecretState::Valid(r) | SecretState::KeyChanged(r) => r.revision,
        _ => 0,
    };
    // Whole seconds, as the Secret records them, so the next reconcile reads back exactly what
    // this one wrote to status (no second status write).
    let whole = |t: jiff::Timestamp| jiff::Timestamp::from_second(t.as_second()).unwrap_or(t);
    let recorded = RecordedToken {
        expires_on: whole(expires_on),
        issued_at: whole(now),
        user_id: identity.clone(),
        scopes: token.spec.scopes.clone(),
        expires_in_minutes: token.spec.expires_in_minutes,
        revocation_epoch: epoch,
        key_fingerprint: secret::key_fingerprint(key),
        revision: prev_revision.max(status.revision) + 1,
    };
    let record_new = IssuedToken {
        token: issued.token,
        record: recorded.clone(),
    };
    let Some(mut desired) = secret::desired_secret(&token, &record_new, key) else {
        return Err(Error::Unnamed);
    };
    // Our own Secret is taken back by force (an edit by hand made kubectl a co-owner of its
    // fields), with the resourceVersion we read as a precondition; a new one is applied
    // without force, so a Secret created by someone else meanwhile is never taken over.
    let pp = match (&state, &current) {
        (SecretState::Missing, _) => PatchParams::apply(api::TOKEN_MANAGER),
        (_, Some(c)) => {
            desired.metadata.resource_version = c.metadata.resource_version.clone();
            PatchParams::apply(api::TOKEN_MANAGER).force()
        }
        _ => PatchParams::apply(api::TOKEN_MANAGER).force(),
    };
    match secrets
        .patch(&secret_name, &pp, &Patch::Apply(&desired))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 && matches!(state, SecretState::Missing) => {
            let msg = format!("Secret {secret_name} was created by someone else; it is never taken over: delete it or choose another secretName");
            not_ready(&ctx, &token, status, reasons::SECRET_CONFLICT, msg, true).await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        // The apiserver refuses the Secret itself (a secretTemplate label or annotation it
        // rejects, or too large): retrying would only burn ACS issues until the spec changes.
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 413 => {
            let msg = format!(
                "the apiserver rejected Secret {secret_name}: {}; fix spec.secretTemplate",
                e.message
            );
            not_ready(&ctx, &token, status, reasons::SECRET_REJECTED, msg, true).await?;
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
        Err(e) => return Err(Error::ApplySecret(e)),
    }
    ctx.metrics.token_issued(reason);

    record(&mut status, &recorded, &token, key);
    status.last_rotation_time = Some(Time(recorded.issued_at));
    if status.revocation_requested.is_some_and(|e| epoch > e) {
        status.revocation_requested = None;
    }
    status.handled_rotate_annotation = token.annotations().get(api::ROTATE_ANNOTATION).cloned();
    status.failed_attempts = 0;
    let renew = renewal_at(&token, &recorded);
    let (event_reason, note) = match reason {
        "initial" => (reasons::TOKEN_ISSUED, format!("issued a token for {identity}, valid until {}", recorded.expires_on)),
        "secret_restored" => (reasons::SECRET_RESTORED, format!("Secret {secret_name} was deleted or edited: restored with a fresh token valid until {}", recorded.expires_on)),
        other => (reasons::TOKEN_ROTATED, format!("rotated the token ({other}); valid until {}", recorded.expires_on)),
    };
    set_condition(
        &mut status.conditions,
        types::READY,
        true,
        event_reason,
        note.clone(),
        gen,
        now,
    );
    set_condition(
        &mut status.conditions,
        types::ISSUING,
        false,
        event_reason,
        format!("next renewal at {renew}"),
        gen,
        now,
    );
    write_status(&ctx, &token, &status).await?;
    info!(reason, revision = recorded.revision, expires_on = %recorded.expires_on, %renew, "token issued");
    ctx.event(
        token.as_ref(),
        EventType::Normal,
        event_reason,
        "IssueToken",
        note,
    )
    .await;
    Ok(Action::requeue(rotation::requeue_after(
        now,
        renew,
        Duration::from_secs(1),
        resync,
    )))
}

/// Copies what the Secret records into status (status never holds the token).
fn record(
    status: &mut CommunicationTokenStatus,
    r: &RecordedToken,
    token: &CommunicationToken,
    key: &crate::acs::AccessKey,
) {
    status.identity_id = Some(r.user_id.clone());
    status.expires_on = Some(Time(r.expires_on));
    // Whole seconds: `Time` serializes without a fraction, so a fractional instant would never
    // equal what the cache reads back, and every reconcile would rewrite status.
    let renew = renewal_at(token, r);
    status.renewal_time = Some(Time(
        jiff::Timestamp::from_second(renew.as_second()).unwrap_or(renew),
    ));
    if status.last_rotation_time.is_none() {
        status.last_rotation_time = Some(Time(r.issued_at));
    }
    status.revision = r.revision;
    status.revocation_epoch = Some(r.revocation_epoch);
    status.issued_scopes = r.scopes.clone();
    status.issued_expires_in_minutes = Some(r.expires_in_minutes);
    status.key_fingerprint = Some(secret::key_fingerprint(key));
}

async fn cleanup(token: Arc<CommunicationToken>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = token.namespace().ok_or(Error::Unnamed)?;
    let user = ctx
        .users
        .get(&ns, &token.spec.user_ref.name)
        .filter(|u| u.metadata.deletion_timestamp.is_none());
    // Deleting the user deletes the identity, which revokes everything: no separate revoke.
    if let (true, Some(user)) = (token.spec.revoke_on_delete, user) {
        let issued_epoch = token.status.as_ref().and_then(|s| s.revocation_epoch);
        let user_ready = user
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.is_true(types::READY));
        if let (Some(e), true) = (issued_epoch, user.identity_id().is_some()) {
            if user.revocation_epoch() <= e {
                if user_ready {
                    let mut status = token.status.clone().unwrap_or_default();
                    if status.revocation_requested != Some(e) {
                        status.revocation_requested = Some(e);
                        write_status(&ctx, &token, &status).await?;
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
    delete_owned_secret(&ctx, &token).await?;
    Ok(Action::await_change())
}

/// Refreshes the token summary gauges from the cache every few seconds (no API calls).
pub async fn summarize_forever(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let now = ctx.now();
        let mut s = crate::metrics::TokenSummary {
            ready: 0,
            not_ready: 0,
            suspended: 0,
            min_remaining_validity_seconds: None,
            next_expiry_unix: None,
            next_renewal_unix: None,
        };
        // Objects waiting for a reconcile: never reconciled, a spec not yet observed, or a
        // token past its renewal time (kube-runtime does not expose its scheduler queue).
        let mut pending_tokens = 0;
        for t in ctx.tokens.all() {
            if t.spec.suspend {
                s.suspended += 1;
            }
            let Some(st) = t.status.as_ref() else {
                s.not_ready += 1;
                pending_tokens += 1;
                continue;
            };
            let due = st.renewal_time.as_ref().is_some_and(|r| r.0 <= now);
            if due || st.observed_generation != t.metadata.generation {
                pending_tokens += 1;
            }
            if st.conditions.is_true(types::READY) {
                s.ready += 1;
            } else if !t.spec.suspend {
                s.not_ready += 1;
            }
            if let Some(e) = &st.expires_on {
                let rem = e.0.duration_since(now).as_secs_f64();
                s.min_remaining_validity_seconds = Some(
                    s.min_remaining_validity_seconds
                        .map_or(rem, |m: f64| m.min(rem)),
                );
                let x = e.0.as_second() as f64;
                s.next_expiry_unix = Some(s.next_expiry_unix.map_or(x, |m: f64| m.min(x)));
            }
            if let Some(r) = &st.renewal_time {
                let x = r.0.as_second() as f64;
                s.next_renewal_unix = Some(s.next_renewal_unix.map_or(x, |m: f64| m.min(x)));
            }
        }
        ctx.metrics.set_token_summary(&s);
        ctx.metrics.set_queue_depth(CONTROLLER, pending_tokens);
        let users = ctx.users.all();
        let pending_users = users
            .iter()
            .filter(|u| {
                u.status
                    .as_ref()
                    .is_none_or(|s| s.observed_generation != u.metadata.generation)
            })
            .count() as i64;
        ctx.metrics
            .set_queue_depth(super::user::CONTROLLER, pending_users);
        let ready = users
            .iter()
            .filter(|u| {
                u.status
                    .as_ref()
                    .is_some_and(|s| s.conditions.is_true(types::READY))
            })
            .count() as i64;
        ctx.metrics.set_users(ready, users.len() as i64 - ready);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::token::Scope;
    use crate::api::{CommunicationTokenSpec, UserRef};
    use jiff::Timestamp;

    fn token() -> CommunicationToken {
        let mut t = CommunicationToken::new(
            "t",
            CommunicationTokenSpec {
                user_ref: UserRef { name: "u".into() },
                scopes: vec![Scope::Voip],
                expires_in_minutes: 60,
                renew_before: None,
                renew_before_percentage: None,
                secret_name: None,
                secret_template: None,
                suspend: false,
                revoke_on_delete: true,
            },
        );
        t.metadata.uid = Some("uid".into());
        t.status = Some(CommunicationTokenStatus {
            revision: 1,
            ..Default::default()
        });
        t
    }

    fn recorded(epoch: i64) -> RecordedToken {
        RecordedToken {
            expires_on: Timestamp::from_second(3600).unwrap(),
            issued_at: Timestamp::from_second(0).unwrap(),
            user_id: "id".into(),
            scopes: vec![Scope::Voip],
            expires_in_minutes: 60,
            revocation_epoch: epoch,
            key_fingerprint: "fp".into(),
            revision: 1,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn a_fresh_token_is_kept_until_its_renewal_time() {
        let t = token();
        let d = decide(&t, &SecretState::Valid(recorded(0)), "id", 0, at(60));
        assert!(matches!(d, Decision::Keep(_)));
        assert_eq!(
            decide(&t, &SecretState::Valid(recorded(0)), "id", 0, at(2400)),
            Decision::Issue("renewal")
        );
    }

    #[test]
    fn a_moved_epoch_reissues_and_a_spec_change_asks_for_a_revocation_first() {
        let mut t = token();
        assert_eq!(
            decide(&t, &SecretState::Valid(recorded(0)), "id", 1, at(60)),
            Decision::Issue("revoked")
        );
        t.spec.scopes = vec![Scope::Chat];
        assert_eq!(
            decide(&t, &SecretState::Valid(recorded(0)), "id", 0, at(60)),
            Decision::RequestRevocation(0)
        );
        assert_eq!(
            decide(&t, &SecretState::Valid(recorded(0)), "id", 1, at(60)),
            Decision::Issue("spec_changed")
        );
    }

    #[test]
    fn missing_tampered_and_rekeyed_secrets_are_reissued() {
        let mut t = token();
        assert_eq!(
            decide(&t, &SecretState::Missing, "id", 0, at(0)),
            Decision::Issue("secret_restored")
        );
        assert_eq!(
            decide(&t, &SecretState::Tampered, "id", 0, at(0)),
            Decision::Issue("secret_restored")
        );
        assert_eq!(
            decide(&t, &SecretState::KeyChanged(recorded(0)), "id", 0, at(0)),
            Decision::Issue("key_rotated")
        );
        t.status = None;
        assert_eq!(
            decide(&t, &SecretState::Missing, "id", 0, at(0)),
            Decision::Issue("initial")
        );
    }

    #[test]
    fn the_rotate_annotation_forces_one_rotation() {
        let mut t = token();
        t.metadata.annotations =
            Some([(api::ROTATE_ANNOTATION.to_string(), "1".to_string())].into());
        assert_eq!(
            decide(&t, &SecretState::Valid(recorded(0)), "id", 0, at(60)),
            Decision::Issue("forced")
        );
        t.status.as_mut().unwrap().handled_rotate_annotation = Some("1".into());
        assert!(matches!(
            decide(&t, &SecretState::Valid(recorded(0)), "id", 0, at(60)),
            Decision::Keep(_)
        ));
    }
}
