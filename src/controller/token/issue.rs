//! Acting on a plan that writes the Secret: issuing a new token, or repairing the Secret with
//! its same token. Both go through the per-object guard when unscheduled, and an issuance
//! also through the failure back-off, so nothing here can loop faster than those allow.
//!
//! Secrets are written by create (a new one: fails if someone else created it meanwhile) or
//! by replace with the `resourceVersion` that was read (an existing one: fails if it changed
//! since). A replace, unlike server-side apply, also removes what other field managers added
//! (an extra data key), and never deletes and recreates the Secret, which would leave pods
//! unable to start while it is missing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::info;

use super::plan::{IssueReason, Served};
use super::{render, status, Error};
use crate::api::condition::{reasons, types};
use crate::api::{self, CommunicationToken, CommunicationTokenStatus, ConditionExt};
use crate::controller::failure_backoff::inputs_hash;
use crate::controller::unscheduled::Unscheduled;
use crate::controller::{key_of, Context};
use crate::credentials::Credentials;
use crate::rotation;
use crate::secret::{self, IssuedToken, RecordedToken};

/// Everything an issuance or a repair acts on, as observed by the reconcile.
pub struct Target<'a> {
    pub token: &'a Arc<CommunicationToken>,
    /// Status prepared by the reconcile (observed generation, Secret name).
    pub status: CommunicationTokenStatus,
    pub identity: &'a str,
    pub epoch: i64,
    pub creds: &'a Credentials,
    /// The Secret as read, if it exists (and is ours).
    pub current: Option<&'a Secret>,
    /// The revision of the token the Secret holds now, if any.
    pub previous_revision: i64,
}

/// The guard's window for this token: the configured window or the token's lifetime, the
/// shorter.
fn window(ctx: &Context, token: &CommunicationToken, record: Option<&RecordedToken>) -> Duration {
    let lifetime = record
        .and_then(|r| Duration::try_from(r.expires_on.duration_since(r.issued_at)).ok())
        .unwrap_or(Duration::from_secs(
            u64::try_from(token.spec.expires_in_minutes).unwrap_or(60) * 60,
        ));
    ctx.config.guards.unscheduled_window.min(lifetime)
}

/// Checks the guard for one more unscheduled `what`; on refusal writes the Deferred condition
/// (a Warning event and the metric when it is new) and says when to come back.
async fn guarded(
    ctx: &Context,
    t: &Target<'_>,
    what: Unscheduled,
    record: Option<&RecordedToken>,
    issuance: Option<IssueReason>,
    why: &str,
) -> Result<Option<Action>, Error> {
    let uid = t.token.metadata.uid.clone().unwrap_or_default();
    let limit = ctx.config.guards.unscheduled_limit;
    let window = window(ctx, t.token, record);
    let Err(wait) = ctx
        .unscheduled
        .check(&uid, what, limit, window, Instant::now())
    else {
        return Ok(None);
    };
    let mut st = t.status.clone();
    if let Some(issuance) = issuance {
        // Whatever was deferred before, Ready says what the Secret holds now (a deferred forced
        // rotation keeps a usable token; a Secret deleted meanwhile does not).
        let why = "a new one is deferred by the guard against loops (see the Issuing condition)";
        status::held_token_refused(
            &mut st,
            t.token,
            issuance,
            reasons::DEFERRED,
            why,
            ctx.now(),
        );
    }
    let was = st
        .conditions
        .find(types::ISSUING)
        .is_some_and(|c| c.reason == reasons::DEFERRED);
    if was {
        // Already said; a rewrite would only cost a write per wake-up.
        if st != t.status {
            status::write(ctx, t.token, &st).await?;
        }
        return Ok(Some(Action::requeue(wait + Duration::from_millis(100))));
    }
    let msg = format!(
        "{why}: deferred for {}s, {limit} unscheduled {}s already happened within {}s (the guard against loops)",
        wait.as_secs().max(1),
        what.as_str(),
        window.as_secs()
    );
    crate::api::set_condition(
        &mut st.conditions,
        types::ISSUING,
        true,
        reasons::DEFERRED,
        msg.clone(),
        t.token.metadata.generation,
        ctx.now(),
    );
    status::write(ctx, t.token, &st).await?;
    ctx.metrics.unscheduled_deferred(what.as_str());
    ctx.event(
        t.token.as_ref(),
        EventType::Warning,
        reasons::DEFERRED,
        "Guard",
        msg,
    )
    .await;
    Ok(Some(Action::requeue(wait + Duration::from_millis(100))))
}

/// Rewrites the Secret with its same token after drift (extra data keys, edited labels or
/// annotations, a new `secretTemplate`).
pub async fn repair(ctx: &Context, t: Target<'_>, served: &Served) -> Result<Action, Error> {
    let record = &served.record;
    let Some(current) = t.current else {
        return Err(Error::Unnamed);
    };
    if let Some(a) = guarded(
        ctx,
        &t,
        Unscheduled::Repair,
        Some(record),
        None,
        "Secret repair",
    )
    .await?
    {
        return Ok(a);
    }
    let key = &t.creds.seal;
    let token_value = secret::token_of(current).unwrap_or_default();
    let Some(desired) = secret::rewritten_secret(current, t.token, token_value, record, key) else {
        return Err(Error::Unnamed);
    };
    let uid = t.token.metadata.uid.clone().unwrap_or_default();
    ctx.unscheduled
        .record(&uid, Unscheduled::Repair, Instant::now());
    let name = t.token.secret_name();
    let written = match write_secret(
        ctx,
        t.token,
        &name,
        &desired,
        Write::Replace,
        &t.status,
        record,
    )
    .await?
    {
        Written::Ok(rv) => rv,
        Written::Refused(a) => return Ok(a),
    };
    ctx.metrics.secret_repaired();
    let mut st = t.status.clone();
    st.secret_resource_version = written;
    status::record(&mut st, served, ctx.config.propagation_allowance);
    st.failed_attempts = 0;
    let now = ctx.now();
    let note = format!("Secret {name} drifted (data keys, labels or annotations): restored with its same token, valid until {}", record.expires_on);
    status::set_both(
        &mut st,
        true,
        false,
        reasons::SECRET_REPAIRED,
        &note,
        t.token.metadata.generation,
        now,
    );
    status::write(ctx, t.token, &st).await?;
    info!(secret = %name, "secret repaired with the same token");
    ctx.event(
        t.token.as_ref(),
        EventType::Normal,
        reasons::SECRET_REPAIRED,
        "RepairSecret",
        note,
    )
    .await;
    Ok(requeue_at(ctx, served.renew))
}

fn requeue_at(ctx: &Context, renew: jiff::Timestamp) -> Action {
    Action::requeue(rotation::requeue_after(
        ctx.now(),
        renew,
        Duration::from_secs(1),
        ctx.config.resync_period,
    ))
}

/// Issues a new token into the Secret.
pub async fn issue(ctx: &Context, t: Target<'_>, reason: IssueReason) -> Result<Action, Error> {
    let token = t.token;
    if reason.is_guarded() {
        let why = format!("a new token ({})", reason.as_str());
        if let Some(a) = guarded(ctx, &t, Unscheduled::Issue, None, Some(reason), &why).await? {
            return Ok(a);
        }
    }
    let key = &t.creds.seal;
    let fingerprint = key.fingerprint().to_string();
    // A failure is tied to these inputs: while they stay the same, the back-off holds
    // whatever wakes the object; a change (new spec, key, identity, epoch) gets one attempt.
    let object_key = key_of(token.as_ref());
    let rotate = token.annotations().get(api::ROTATE_ANNOTATION);
    let inputs = inputs_hash((
        &token.metadata.generation,
        &t.identity,
        &t.epoch,
        &fingerprint,
        &rotate,
    ));
    if let Some(wait) = ctx
        .failures
        .try_attempt(&object_key, inputs, Instant::now())
    {
        return Ok(Action::requeue(wait));
    }

    let acs = ctx
        .acs_client(t.creds, &object_key)
        .map_err(Error::Client)?;
    let now = ctx.now();
    let mut st = t.status.clone();
    let issued = match acs
        .issue_token(
            t.identity,
            &token.spec.scopes,
            Some(token.spec.expires_in_minutes as u32),
        )
        .await
    {
        Ok(i) => i,
        Err(e) => {
            let failed = render::issue_failed(&mut st, token, t.identity, reason, &e, now);
            let _ = status::write(ctx, token, &st).await;
            if !e.is_transient() && failed.new_reason {
                ctx.event(
                    token.as_ref(),
                    EventType::Warning,
                    failed.reason,
                    "IssueToken",
                    failed.message,
                )
                .await;
            }
            return Err(Error::IssueToken(e));
        }
    };
    if reason.is_guarded() {
        let uid = token.metadata.uid.clone().unwrap_or_default();
        ctx.unscheduled
            .record(&uid, Unscheduled::Issue, Instant::now());
    }
    let name = token.secret_name();
    let (recorded, desired, how) = new_secret(&t, issued, fingerprint, st.revision, now)?;
    st.secret_resource_version =
        match write_secret(ctx, token, &name, &desired, how, &st, &recorded).await? {
            Written::Ok(rv) => rv,
            Written::Refused(a) => return Ok(a),
        };
    ctx.failures.reset(&object_key);
    ctx.metrics.token_issued(reason.as_str());

    let served = Served::of(token, recorded);
    let margin = status::record(&mut st, &served, ctx.config.propagation_allowance);
    ctx.metrics
        .pod_validity_at_issue(margin.pod_validity_at_worst.as_secs_f64().max(0.0));
    let (recorded, renew) = (&served.record, served.renew);
    super::restart::note_issued(ctx, token, &mut st, recorded.revision - 1);
    let (event_reason, note) =
        render::issued(&mut st, token, &served, t.identity, reason, t.epoch, now);
    status::write(ctx, token, &st).await?;
    info!(reason = reason.as_str(), revision = recorded.revision, expires_on = %recorded.expires_on, %renew, "token issued");
    // No event for a first issuance: the person who applied the object asked for exactly this,
    // and Ready=True/TokenIssued in status already says it. At scale it would be one event
    // write per token (a fifth of a cold start's requests). Rotations, restores and failures
    // keep theirs: something changed that nobody applied.
    if reason != IssueReason::Initial {
        ctx.event(
            token.as_ref(),
            EventType::Normal,
            event_reason,
            "IssueToken",
            note,
        )
        .await;
    }
    Ok(requeue_at(ctx, renew))
}

/// The record of a token ACS just issued, and the Secret that holds it: created, replaced, or
/// (immutable) recreated.
fn new_secret(
    t: &Target<'_>,
    issued: crate::acs::AccessToken,
    fingerprint: String,
    status_revision: i64,
    now: jiff::Timestamp,
) -> Result<(RecordedToken, Secret, Write), Error> {
    let (token, key) = (t.token, &t.creds.seal);
    let expires_on = issued.expires_at().unwrap_or_else(|| {
        now + jiff::SignedDuration::from_mins(i64::from(token.spec.expires_in_minutes))
    });
    // Whole seconds, as the Secret records them, so the next reconcile reads back exactly what
    // this one wrote to status (no second status write).
    let recorded = RecordedToken {
        expires_on: crate::rotation::whole_seconds(expires_on),
        issued_at: crate::rotation::whole_seconds(now),
        user_id: t.identity.to_string(),
        scopes: token.spec.scopes.clone(),
        expires_in_minutes: token.spec.expires_in_minutes,
        revocation_epoch: t.epoch,
        key_fingerprint: fingerprint,
        revision: t.previous_revision.max(status_revision) + 1,
    };
    let new = IssuedToken {
        token: issued.token,
        record: recorded.clone(),
    };
    let desired = match t.current {
        None => secret::desired_secret(token, &new, key),
        Some(c) => {
            secret::rewritten_secret(c, token, new.token.expose().as_bytes(), &recorded, key)
        }
    };
    let desired = desired.ok_or(Error::Unnamed)?;
    let how = match t.current {
        None => Write::Create,
        // An immutable Secret cannot take new data: it is replaced (and only here).
        Some(c) if c.immutable == Some(true) => Write::Recreate,
        Some(_) => Write::Replace,
    };
    Ok((recorded, desired, how))
}

/// How the Secret is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// A new Secret: fails if someone else created it meanwhile.
    Create,
    /// Replace at the `resourceVersion` read: fails if it changed since.
    Replace,
    /// Delete at the UID and `resourceVersion` read, then create: for an immutable Secret, which
    /// a person or a policy tool made so and which can hold no new token otherwise. The
    /// replacement is mutable; pods that mount it see the new token as with any rotation.
    Recreate,
}

enum Written {
    /// Written; the Secret's new resourceVersion.
    Ok(Option<String>),
    /// The apiserver refused the Secret in a way retrying cannot fix; status says why.
    Refused(Action),
}

/// Creates, replaces or recreates the Secret (`how`); a refusal is written to status `st` (the
/// one this reconcile prepared).
async fn write_secret(
    ctx: &Context,
    token: &Arc<CommunicationToken>,
    name: &str,
    desired: &Secret,
    how: Write,
    st: &CommunicationTokenStatus,
    record: &RecordedToken,
) -> Result<Written, Error> {
    let ns = token.namespace().ok_or(Error::Unnamed)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let pp = PostParams {
        field_manager: Some(api::TOKEN_MANAGER.to_string()),
        ..PostParams::default()
    };
    let result = match how {
        Write::Create => api.create(&pp, desired).await,
        Write::Replace => api.replace(name, &pp, desired).await,
        Write::Recreate => {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: desired.metadata.uid.clone(),
                    resource_version: desired.metadata.resource_version.clone(),
                }),
                ..DeleteParams::default()
            };
            // A conflict (changed or gone since it was read) retries with a fresh read.
            api.delete(name, &dp).await.map_err(Error::ApplySecret)?;
            let mut fresh = desired.clone();
            fresh.immutable = None;
            fresh.metadata.resource_version = None;
            fresh.metadata.uid = None;
            fresh.metadata.creation_timestamp = None;
            let created = api.create(&pp, &fresh).await;
            if created.is_ok() {
                let msg = format!("Secret {name} was immutable and could not take the new token: it was replaced (deleted and created, not immutable)");
                info!(secret = %name, "immutable secret replaced");
                ctx.event(
                    token.as_ref(),
                    EventType::Warning,
                    reasons::SECRET_REPLACED,
                    "IssueToken",
                    msg,
                )
                .await;
            }
            created
        }
    };
    let create = how != Write::Replace;
    match result {
        Ok(written) => {
            if let Some(rv) = written.metadata.resource_version.as_deref() {
                ctx.own_writes
                    .wrote(&ns, name, rv, token.metadata.generation, record.clone());
            }
            Ok(Written::Ok(written.metadata.resource_version))
        }
        Err(kube::Error::Api(e)) if e.code == 409 && create => {
            let msg = format!("Secret {name} was created by someone else; it is never taken over: delete it or choose another secretName");
            status::not_ready(ctx, token, st.clone(), reasons::SECRET_CONFLICT, msg, true).await?;
            Ok(Written::Refused(Action::requeue(Duration::from_secs(60))))
        }
        // The apiserver refuses the Secret itself (a secretTemplate label or annotation it
        // rejects, or too large): retrying would only burn ACS issues until the spec changes.
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 413 => {
            let msg = format!(
                "the apiserver rejected Secret {name}: {}; fix spec.secretTemplate",
                e.message
            );
            status::not_ready(ctx, token, st.clone(), reasons::SECRET_REJECTED, msg, true).await?;
            Ok(Written::Refused(Action::requeue(Duration::from_secs(300))))
        }
        Err(e) => Err(Error::ApplySecret(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
