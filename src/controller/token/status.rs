//! The CommunicationToken's status: what the Secret records (never the token), conditions,
//! and the writes, skipped when nothing changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::ResourceExt;

use super::plan::{IssueReason, Served};
use super::Error;
use crate::api::condition::{reasons, types};
use crate::api::{self, set_condition, CommunicationToken, CommunicationTokenStatus, ConditionExt};
use crate::controller::{apply_status, Context};
use crate::secret::RecordedToken;

pub async fn write(
    ctx: &Context,
    token: &CommunicationToken,
    status: &CommunicationTokenStatus,
) -> Result<(), Error> {
    let ns = token.namespace().ok_or(Error::Unnamed)?;
    let name = token.name_any();
    let api: Api<CommunicationToken> = Api::namespaced(ctx.client.clone(), &ns);
    // Compared with the freshest status known: the cache may not show this process's last
    // write yet.
    let current = ctx
        .token_status
        .fresher(&ns, &name, token.metadata.resource_version.as_deref())
        .or_else(|| token.status.clone());
    let written = apply_status(&api, &name, api::TOKEN_MANAGER, current.as_ref(), status)
        .await
        .map_err(Error::PatchStatus)?;
    if let Some(w) = written {
        ctx.token_status.wrote(
            &ns,
            &name,
            w.metadata.resource_version.as_deref(),
            status.clone(),
        );
        // The watch may have delivered the write before its response arrived.
        let cached = ctx.tokens.get(&ns, &name);
        ctx.token_status.caught_up(
            &ns,
            &name,
            cached
                .as_ref()
                .and_then(|t| t.metadata.resource_version.as_deref()),
        );
    }
    Ok(())
}

/// Sets Ready and Issuing to the same reason and message.
pub fn set_both(
    status: &mut CommunicationTokenStatus,
    ready: bool,
    issuing: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    set_condition(
        &mut status.conditions,
        types::READY,
        ready,
        reason,
        message.to_string(),
        generation,
        now,
    );
    set_condition(
        &mut status.conditions,
        types::ISSUING,
        issuing,
        reason,
        message.to_string(),
        generation,
        now,
    );
}

/// Ready=False about the token the Secret holds while its replacement (`issuance`) waits for
/// `why`: ACS refuses it (revoked, or the Secret holds none or another identity's). Ready
/// never stays True about a token ACS refuses. `waiting` is the reason used when it was not
/// revoked. Nothing changes when the held token is still usable.
pub fn held_token_refused(
    st: &mut CommunicationTokenStatus,
    token: &CommunicationToken,
    issuance: IssueReason,
    waiting: &str,
    why: &str,
    now: jiff::Timestamp,
) {
    // A renewal's token is usable until it expires.
    let expired = st.expires_on.as_ref().is_some_and(|e| e.0 <= now);
    if issuance.held_token_usable() && !expired {
        return;
    }
    let secret = token.secret_name();
    let (reason, msg) = if issuance.held_token_revoked() {
        (
            reasons::TOKEN_REVOKED,
            format!(
                "Secret {secret} holds a token ACS has revoked ({}); {why}",
                issuance.as_str()
            ),
        )
    } else {
        (
            waiting,
            format!(
                "Secret {secret} holds no usable token ({}); {why}",
                issuance.as_str()
            ),
        )
    };
    set_condition(
        &mut st.conditions,
        types::READY,
        false,
        reason,
        msg,
        token.metadata.generation,
        now,
    );
}

/// After a failed reconcile: if the status says Ready about a token issued before its user's
/// current revocation epoch (ACS refuses it), says instead that it is revoked and its re-issue
/// failed. Best effort (a failing write is retried with the reconcile); writes only on that
/// transition.
pub async fn revoked_while_failing(ctx: &Context, token: &CommunicationToken, category: &str) {
    let (Some(ns), name) = (token.namespace(), token.name_any()) else {
        return;
    };
    let Some(current) = ctx
        .token_status
        .fresher(&ns, &name, token.metadata.resource_version.as_deref())
        .or_else(|| token.status.clone())
    else {
        return;
    };
    let Some(user) = ctx.users.get(&ns, &token.spec.user_ref.name) else {
        return;
    };
    let (Some(issued), epoch) = (current.revocation_epoch, user.revocation_epoch()) else {
        return;
    };
    if issued >= epoch || !current.conditions.is_true(types::READY) {
        return;
    }
    let mut st = current.clone();
    let msg = format!(
        "Secret {} holds a token ACS has revoked (issued under revocation epoch {issued}, the user's is {epoch}); its re-issue failed ({category}) and is retried with back-off",
        token.secret_name()
    );
    set_condition(
        &mut st.conditions,
        types::READY,
        false,
        reasons::TOKEN_REVOKED,
        msg,
        token.metadata.generation,
        ctx.now(),
    );
    if let Err(e) = write(ctx, token, &st).await {
        tracing::debug!(error = %e, "could not report the revoked token");
    }
}

/// Ready=False with `reason`; an event when the reason is new (a Warning if `warn_event`).
pub async fn not_ready(
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
    set_both(
        &mut status,
        false,
        false,
        reason,
        &message,
        token.metadata.generation,
        ctx.now(),
    );
    write(ctx, token, &status).await?;
    ctx.not_ready_event(token, previous.as_deref(), (reason, warn_event), message)
        .await;
    Ok(())
}

/// Copies what the Secret records into status (status never holds the token).
pub fn record(
    status: &mut CommunicationTokenStatus,
    served: &Served,
    allowance: std::time::Duration,
) -> crate::rotation::PodMargin {
    let (r, renew) = (&served.record, served.renew);
    status.identity_id = Some(r.user_id.clone());
    status.expires_on = Some(Time(r.expires_on));
    // Whole seconds: `Time` serializes without a fraction, so a fractional instant would never
    // equal what the cache reads back, and every reconcile would rewrite status.
    status.renewal_time = Some(Time(crate::rotation::whole_seconds(renew)));
    // The current token's issue time (whole seconds, as above): a status vouching for the
    // Secret must record the token the Secret holds, even after a crash between the Secret's
    // write and the status's.
    if status.last_rotation_time.as_ref().map(|t| t.0.as_second()) != Some(r.issued_at.as_second())
    {
        status.last_rotation_time = Some(Time(crate::rotation::whole_seconds(r.issued_at)));
    }
    status.revision = r.revision;
    status.revocation_epoch = Some(r.revocation_epoch);
    status.issued_scopes = r.scopes.clone();
    status.issued_expires_in_minutes = Some(r.expires_in_minutes);
    status.key_fingerprint = Some(r.key_fingerprint.clone());
    let margin = crate::rotation::pod_margin(r.issued_at, r.expires_on, renew, allowance);
    status.pod_validity_at_worst_seconds = Some(margin.pod_validity_at_worst.as_secs());
    margin
}

/// `RenewalMargin` False when the renewal leaves a pod less than the propagation allowance
/// plus the SDK's refresh window; absent otherwise (no write for the usual case).
pub fn margin_condition(
    st: &mut CommunicationTokenStatus,
    token: &CommunicationToken,
    m: &crate::rotation::PodMargin,
    gen: Option<i64>,
    now: jiff::Timestamp,
) {
    if !m.short {
        st.conditions.retain(|c| c.type_ != types::RENEWAL_MARGIN);
        return;
    }
    let policy = match (&token.spec.renew_before, token.spec.renew_before_percentage) {
        (Some(d), _) => format!(
            "renewBefore {}",
            humantime(std::time::Duration::from(*d).as_secs())
        ),
        (None, Some(p)) => format!("renewBeforePercentage {p}"),
        (None, None) => "the renewal policy".to_string(),
    };
    crate::api::set_condition(
        &mut st.conditions,
        types::RENEWAL_MARGIN,
        false,
        reasons::RENEWAL_TOO_LATE,
        format!(
            "{policy} leaves a pod {} of validity at worst once the new token reaches it (propagation allowance {}), and the SDKs refresh {} before expiry: renew at least {} before expiry",
            humantime(m.pod_validity_at_worst.as_secs().max(0) as u64),
            humantime(m.allowance.as_secs()),
            humantime(m.needed.saturating_sub(m.allowance).as_secs()),
            humantime(m.needed.as_secs()),
        ),
        gen,
        now,
    );
}

fn humantime(secs: u64) -> String {
    match (secs / 3600, (secs % 3600) / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// The record status keeps of the current token, if complete: it proves an intact token
/// whose record annotations on the Secret were edited or removed.
pub fn recorded(status: &CommunicationTokenStatus) -> Option<RecordedToken> {
    Some(RecordedToken {
        expires_on: status.expires_on.as_ref()?.0,
        issued_at: status.last_rotation_time.as_ref()?.0,
        user_id: status.identity_id.clone()?,
        scopes: status.issued_scopes.clone(),
        expires_in_minutes: status.issued_expires_in_minutes?,
        revocation_epoch: status.revocation_epoch?,
        key_fingerprint: status.key_fingerprint.clone()?,
        revision: status.revision,
    })
    .filter(|r| !r.scopes.is_empty())
}

/// The Secret holds a good token: record it in status (written only if that changed).
pub(super) async fn keep(
    ctx: &Context,
    token: &CommunicationToken,
    mut st: api::CommunicationTokenStatus,
    served: &Served,
    secret_rv: Option<String>,
) -> Result<kube::runtime::controller::Action, Error> {
    let (r, renew) = (&served.record, served.renew);
    let gen = token.metadata.generation;
    let now = ctx.now();
    let margin = record(&mut st, served, ctx.config.propagation_allowance);
    margin_condition(&mut st, token, &margin, gen, now);
    if st
        .revocation_requested
        .is_some_and(|e| r.revocation_epoch > e)
    {
        st.revocation_requested = None;
        st.revocation_requested_at = None;
    }
    st.failed_attempts = 0;
    ctx.failures.reset(&crate::controller::key_of(token));
    // The condition written with the token (TokenIssued, TokenRotated, ...) already says it
    // is valid; rewriting it would cost a status write per issuance.
    let current = st.conditions.find(types::READY).is_some_and(|c| {
        c.status == "True"
            && c.observed_generation == gen
            && [
                reasons::TOKEN_ISSUED,
                reasons::TOKEN_ROTATED,
                reasons::SECRET_RESTORED,
                reasons::SECRET_REPAIRED,
                reasons::TOKEN_VALID,
            ]
            .contains(&c.reason.as_str())
    }) && st
        .conditions
        .find(types::ISSUING)
        .is_some_and(|c| c.status == "False");
    if !current {
        set_both(
            &mut st,
            true,
            false,
            reasons::TOKEN_VALID,
            &format!(
                "token valid until {}; next renewal at {renew}",
                r.expires_on
            ),
            gen,
            now,
        );
    }
    let restart_wait = super::restart::ensure(ctx, token, &mut st).await;
    // Vouch for the Secret's version (a restart then needs no read of it) when the status is
    // written anyway or already vouches for a version; never a write of its own for an object
    // whose status predates the field (an upgrade writes nothing).
    let prior = token
        .status
        .as_ref()
        .and_then(|s| s.secret_resource_version.clone());
    st.secret_resource_version.clone_from(&prior);
    let changed = Some(&st) != token.status.as_ref();
    st.secret_resource_version = if prior.is_some() || changed {
        secret_rv
    } else {
        None
    };
    write(ctx, token, &st).await?;
    let next = crate::rotation::requeue_after(
        now,
        renew,
        std::time::Duration::from_secs(1),
        ctx.config.resync_period,
    );
    Ok(kube::runtime::controller::Action::requeue(
        restart_wait.map_or(next, |w| w.min(next)),
    ))
}

/// The spec changed: asks the user to revoke the tokens issued under epoch `e` (once), and
/// says so.
pub async fn request_revocation(
    ctx: &Context,
    token: &CommunicationToken,
    mut st: CommunicationTokenStatus,
    e: i64,
) -> Result<(), Error> {
    if st.revocation_requested != Some(e) {
        st.revocation_requested = Some(e);
        st.revocation_requested_at = Some(Time(ctx.now()));
    }
    let user_name = &token.spec.user_ref.name;
    let msg = format!("spec changed: waiting for CommunicationUser {user_name} to revoke the tokens issued under epoch {e}");
    set_both(
        &mut st,
        false,
        true,
        reasons::WAITING_FOR_REVOCATION,
        &msg,
        token.metadata.generation,
        ctx.now(),
    );
    write(ctx, token, &st).await
}

/// A new token waits for the revocation in progress: says what the Secret holds meanwhile,
/// if that changed.
pub async fn wait_for_revocation(
    ctx: &Context,
    token: &CommunicationToken,
    st: CommunicationTokenStatus,
    issuance: IssueReason,
) -> Result<(), Error> {
    let mut held = st.clone();
    held_token_refused(
        &mut held,
        token,
        issuance,
        reasons::WAITING_FOR_REVOCATION,
        "a new token waits for the revocation in progress",
        ctx.now(),
    );
    if held != st {
        write(ctx, token, &held).await?;
    }
    Ok(())
}
