//! Rollout restarts of the workloads a token names (`spec.rolloutRestartTargets`), for
//! consumers that read the token once (environment variables, `subPath` mounts).
//!
//! The token's status records, per target, the token revision the workload has: a target
//! first seen (a new token, a target added, a workload that opts in later, the feature just
//! enabled) records the current revision and is not restarted; a newer revision restarts it
//! once. So an operator restart, a resync, a sibling created or deleted, or an annotation
//! stripped by a GitOps tool restarts nothing. Two exceptions make "first seen" mean "what the
//! workload can have seen": a target not yet recorded when this operator issues a new
//! revision (with the feature already on for this token) is recorded at the previous
//! revision, so the new one restarts it once; and a workload created after the current
//! revision was issued is recorded at that revision, since its pods started with it. A target
//! that is missing or has not opted in is looked at again on a schedule that starts at 15 s
//! and stretches to 10 minutes (one GET each time), so one applied after its tokens is
//! recorded before their next rotation. A restart sets one pod-template annotation to a
//! hash of the revisions of every token the workload depends on, like `kubectl rollout
//! restart` sets `restartedAt`: siblings re-issued together (a revocation) compute the same
//! value once all are done and the coalescing window has passed, so the first restarts the
//! workload and the others find it done; one re-issued after the window restarts it again. A
//! workload opts in with an annotation of its own, so that whoever may create a
//! CommunicationToken cannot restart any workload of the namespace.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::condition::{reasons, types};
use crate::api::token::{RestartedWorkload, RolloutRestartTarget, WorkloadKind};
use crate::api::{CommunicationToken, CommunicationTokenStatus, ConditionExt};
use crate::controller::Context;

/// The workload's opt-in (pinned: tools outside the project rely on it).
pub const OPT_IN_ANNOTATION: &str = "communication.acs.dev/restart-on-rotation";
/// The pod-template annotation a restart sets.
pub const RESTARTED_FOR_ANNOTATION: &str = "communication.acs.dev/restarted-for";
/// How soon a failed lookup or patch is tried again (a condition says why meanwhile).
const RETRY: Duration = Duration::from_secs(60);
/// A sibling stuck in its re-issue (failing) holds a restart at most this many windows.
const MAX_WAIT_WINDOWS: u32 = 12;
/// A missing or not opted-in target is looked at again after a quarter of the time it has
/// been so, within these bounds.
const RECHECK_MIN: Duration = Duration::from_secs(15);
const RECHECK_MAX: Duration = Duration::from_secs(600);
/// How much later than a revision's issuance a workload must be created to be taken as
/// having started with it.
const CREATED_AFTER_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_secs(30);

/// Called when this operator issued revision `st.revision` over `previous`: targets it has
/// not recorded yet are recorded at `previous`, so the new revision restarts them once (a
/// workload applied after its tokens, not yet looked at). Only once the feature has been
/// evaluated for this token by an operator that has it on: enabling it (or upgrading to it)
/// restarts nothing.
pub fn note_issued(
    ctx: &Context,
    token: &CommunicationToken,
    st: &mut CommunicationTokenStatus,
    previous: i64,
) {
    let evaluated = st
        .conditions
        .find(types::ROLLOUT_RESTART)
        .is_some_and(|c| c.reason != reasons::ROLLOUT_RESTART_DISABLED);
    if !ctx.config.rollout_restart || !evaluated || previous <= 0 {
        return;
    }
    for target in &token.spec.rollout_restart_targets {
        let seen = st
            .restarted_workloads
            .iter()
            .any(|w| w.kind == target.kind && w.name == target.name);
        if !seen {
            st.restarted_workloads.push(RestartedWorkload {
                kind: target.kind,
                name: target.name.clone(),
                observed_revision: previous,
                restarted_at: None,
                revisions_hash: None,
            });
        }
    }
}

/// When to look again at a target that is missing or has not opted in, `age` after the
/// condition started saying so.
fn recheck_after(age: Duration) -> Duration {
    (age / 4).clamp(RECHECK_MIN, RECHECK_MAX)
}

/// One dependent token as seen now.
struct Dependent {
    name: String,
    revision: i64,
    changed: Option<Timestamp>,
    /// About to be re-issued (its user revoked the tokens it holds, or it asked for that).
    reissuing: bool,
}

/// Why a target cannot be restarted.
struct Problem {
    reason: &'static str,
    message: String,
}

/// Restarts what needs restarting; records it in `st`. Returns how soon to look again, if
/// sooner than the token's own schedule.
pub async fn ensure(
    ctx: &Context,
    token: &CommunicationToken,
    st: &mut CommunicationTokenStatus,
) -> Option<Duration> {
    let targets = &token.spec.rollout_restart_targets;
    st.restarted_workloads
        .retain(|w| targets.iter().any(|t| t.kind == w.kind && t.name == w.name));
    if targets.is_empty() {
        st.conditions.retain(|c| c.type_ != types::ROLLOUT_RESTART);
        return None;
    }
    let ns = token.namespace().unwrap_or_default();
    let mut problems: Vec<Problem> = Vec::new();
    let mut wait: Option<Duration> = None;
    for target in targets {
        if !ctx.config.rollout_restart {
            problems.push(Problem {
                reason: reasons::ROLLOUT_RESTART_DISABLED,
                message: format!(
                    "{} {}: rollout restarts are not enabled in this operator (chart value rolloutRestart.enabled, flag --rollout-restart)",
                    target.kind.as_str(),
                    target.name
                ),
            });
            continue;
        }
        match restart_one(ctx, token, st, &ns, target).await {
            Ok(Some(w)) => wait = Some(wait.map_or(w, |x: Duration| x.min(w))),
            Ok(None) => {}
            Err(p) => {
                if p.reason == reasons::RESTART_FAILED {
                    wait = Some(wait.map_or(RETRY, |x: Duration| x.min(RETRY)));
                }
                problems.push(p);
            }
        }
    }
    let gen = token.metadata.generation;
    let now = ctx.now();
    let previous = st
        .conditions
        .find(types::ROLLOUT_RESTART)
        .map(|c| (c.status.clone(), c.message.clone()));
    // A target that may appear or opt in later is looked at again, less often the longer it
    // has been missing (the condition's transition time).
    if problems
        .iter()
        .any(|p| p.reason == reasons::TARGET_NOT_FOUND || p.reason == reasons::TARGET_NOT_OPTED_IN)
    {
        let since = st
            .conditions
            .find(types::ROLLOUT_RESTART)
            .filter(|c| c.status == "False")
            .and_then(|c| Duration::try_from(now.duration_since(c.last_transition_time.0)).ok())
            .unwrap_or_default();
        let again = recheck_after(since);
        wait = Some(wait.map_or(again, |x: Duration| x.min(again)));
    }
    if problems.is_empty() {
        crate::api::set_condition(
            &mut st.conditions,
            types::ROLLOUT_RESTART,
            true,
            reasons::RESTART_TARGETS_READY,
            format!(
                "{} workload(s) restart when this token changes",
                targets.len()
            ),
            gen,
            now,
        );
    } else {
        let message = problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let reason = problems[0].reason;
        crate::api::set_condition(
            &mut st.conditions,
            types::ROLLOUT_RESTART,
            false,
            reason,
            message.clone(),
            gen,
            now,
        );
        if previous != Some(("False".to_string(), message.clone())) {
            ctx.event(token, EventType::Warning, reason, "RolloutRestart", message)
                .await;
        }
    }
    wait
}

async fn restart_one(
    ctx: &Context,
    token: &CommunicationToken,
    st: &mut CommunicationTokenStatus,
    ns: &str,
    target: &RolloutRestartTarget,
) -> Result<Option<Duration>, Problem> {
    let what = format!("{} {}", target.kind.as_str(), target.name);
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &resource(target.kind));
    let failed = |action: &str, e: kube::Error| request_failed(&what, target.kind, action, &e);
    let Some(obj) = api
        .get_opt(&target.name)
        .await
        .map_err(|e| failed("read", e))?
    else {
        let hint = if target.kind == WorkloadKind::Rollout {
            " (is Argo Rollouts installed?)"
        } else {
            ""
        };
        return Err(Problem {
            reason: reasons::TARGET_NOT_FOUND,
            message: format!("{what} not found in namespace {ns}{hint}"),
        });
    };
    if let Some(refused) = refusal(&what, &token.name_any(), &obj) {
        return Err(refused);
    }
    let current = restarted_for(target.kind, &obj);
    let revision = st.revision;
    let seen = |w: &RestartedWorkload| w.kind == target.kind && w.name == target.name;
    // Created well after the current revision was issued: its pods started with it. The
    // margin covers the issuance itself (the time is taken before the ACS call and the Secret
    // write) and clock skew, and errs towards one restart too many.
    let created_after = match (&obj.metadata.creation_timestamp, &st.last_rotation_time) {
        (Some(created), Some(issued)) => created.0 > issued.0 + CREATED_AFTER_MARGIN,
        _ => false,
    };
    if created_after {
        if let Some(w) = st.restarted_workloads.iter_mut().find(|w| seen(w)) {
            w.observed_revision = w.observed_revision.max(revision);
        }
    }
    match st.restarted_workloads.iter().find(|w| seen(w)) {
        None => {
            // First sight: its pods already run with this token (or wait for its Secret).
            st.restarted_workloads.push(RestartedWorkload {
                kind: target.kind,
                name: target.name.clone(),
                observed_revision: revision,
                restarted_at: None,
                revisions_hash: None,
            });
            return Ok(None);
        }
        Some(w) if w.observed_revision >= revision => return Ok(None),
        Some(_) => {}
    }
    // This token changed since the workload last got it.
    let window = ctx.config.restart_coalesce_window;
    let now = ctx.now();
    let dependents = dependents(ctx, token, st, ns, target);
    let latest = dependents.iter().filter_map(|d| d.changed).max();
    let since_latest =
        latest.map(|l| Duration::try_from(now.duration_since(l)).unwrap_or_default());
    if dependents.iter().any(|d| d.reissuing)
        && since_latest.is_none_or(|s| s < window * MAX_WAIT_WINDOWS)
    {
        // A sibling is being re-issued: its change does not wake this token, so look again.
        return Ok(Some(window));
    }
    let hash = revisions_hash(&dependents);
    let record = |st: &mut CommunicationTokenStatus, restarted: Option<Time>| {
        if let Some(w) = st.restarted_workloads.iter_mut().find(|w| seen(w)) {
            w.observed_revision = revision;
            if restarted.is_some() {
                w.restarted_at = restarted;
                w.revisions_hash = Some(hash.clone());
            }
        }
    };
    if current.as_deref() == Some(hash.as_str()) {
        // A sibling restarted it for these same revisions.
        record(st, None);
        return Ok(None);
    }
    if let Some(s) = since_latest.filter(|s| *s < window) {
        return Ok(Some((window - s).max(Duration::from_millis(100))));
    }
    let patch = restart_patch(target.kind, &hash, now);
    api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| failed("patch", e))?;
    tracing::info!(workload = %what, revision, "rollout restart for a new token");
    if let Some(uid) = token.metadata.uid.as_deref() {
        ctx.metrics.objects.workload_restarted(uid);
    }
    record(st, Some(Time(now)));
    ctx.event(
        token,
        EventType::Normal,
        reasons::WORKLOAD_RESTARTED,
        "RolloutRestart",
        format!("restarted {what} for token revision {revision}"),
    )
    .await;
    Ok(None)
}

/// A failed read or patch of a workload: for a 403, the chart value that grants it.
fn request_failed(what: &str, kind: WorkloadKind, action: &str, e: &kube::Error) -> Problem {
    match e {
        kube::Error::Api(s) if s.code == 403 => Problem {
            reason: reasons::RESTART_FAILED,
            message: format!("{what}: the operator may not {action} it (RBAC: chart value {} grants get and patch)", if kind == WorkloadKind::Rollout { "rolloutRestart.argoRollouts" } else { "rolloutRestart.enabled" }),
        },
        _ => Problem {
            reason: reasons::RESTART_FAILED,
            message: format!("{what}: failed to {action} it: {e}"),
        },
    }
}

/// Why token `me` may not restart workload `obj`, if it may not: the workload has not opted
/// in for it, or its pods are never replaced by a rollout restart.
fn refusal(what: &str, me: &str, obj: &DynamicObject) -> Option<Problem> {
    if !opted_in(
        obj.annotations().get(OPT_IN_ANNOTATION).map(String::as_str),
        me,
    ) {
        return Some(Problem {
            reason: reasons::TARGET_NOT_OPTED_IN,
            message: format!("{what} has not opted in for CommunicationToken {me}: annotate it with {OPT_IN_ANNOTATION} set to a comma-separated list of the CommunicationTokens allowed to restart it (or \"true\" for any token of the namespace)"),
        });
    }
    if obj.data["spec"]["updateStrategy"]["type"] == "OnDelete" {
        return Some(Problem {
            reason: reasons::TARGET_ON_DELETE,
            message: format!("{what} uses updateStrategy OnDelete: a rollout restart never replaces its pods; delete them, or use RollingUpdate"),
        });
    }
    None
}

/// Whether the workload's opt-in annotation lets CommunicationToken `token` restart it: a
/// comma-separated list of token names, or `"true"` for any token of the namespace.
fn opted_in(annotation: Option<&str>, token: &str) -> bool {
    match annotation.map(str::trim) {
        Some("true") => true,
        Some(list) => list.split(',').map(str::trim).any(|n| n == token),
        None => false,
    }
}

fn resource(kind: WorkloadKind) -> ApiResource {
    match kind {
        WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
        WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
        WorkloadKind::Rollout => ApiResource {
            group: "argoproj.io".into(),
            version: "v1alpha1".into(),
            api_version: "argoproj.io/v1alpha1".into(),
            kind: "Rollout".into(),
            plural: "rollouts".into(),
        },
    }
}

/// The revisions hash the last restart recorded on the workload: on the pod template, or for
/// a Rollout on the object itself (its pod template changing would start a new canary).
fn restarted_for(kind: WorkloadKind, obj: &DynamicObject) -> Option<String> {
    match kind {
        WorkloadKind::Rollout => obj.annotations().get(RESTARTED_FOR_ANNOTATION).cloned(),
        _ => obj.data["spec"]["template"]["metadata"]["annotations"][RESTARTED_FOR_ANNOTATION]
            .as_str()
            .map(str::to_string),
    }
}

/// The merge patch that restarts the workload's pods: a pod-template annotation (what
/// `kubectl rollout restart` does), or for a Rollout its `spec.restartAt` (what
/// `kubectl argo rollouts restart` does: the pods are replaced without a new revision).
fn restart_patch(kind: WorkloadKind, hash: &str, now: Timestamp) -> serde_json::Value {
    match kind {
        WorkloadKind::Rollout => json!({
            "metadata": {"annotations": {RESTARTED_FOR_ANNOTATION: hash}},
            // Whole seconds: metav1.Time.
            "spec": {"restartAt": crate::rotation::whole_seconds(now).to_string()},
        }),
        _ => json!({"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_FOR_ANNOTATION: hash,
        }}}}}),
    }
}

/// Every token of the namespace that restarts `target`, this one as it is being written.
fn dependents(
    ctx: &Context,
    token: &CommunicationToken,
    st: &CommunicationTokenStatus,
    ns: &str,
    target: &RolloutRestartTarget,
) -> Vec<Dependent> {
    let me = token.name_any();
    let mut out = vec![Dependent {
        name: me.clone(),
        revision: st.revision,
        changed: st.last_rotation_time.as_ref().map(|t| t.0),
        reissuing: false,
    }];
    for t in ctx.tokens.in_namespace_where(ns, |t| {
        t.spec.rollout_restart_targets.contains(target) && t.name_any() != me
    }) {
        let Some(s) = t.status.as_ref() else {
            // Never issued yet: its first token restarts nothing either.
            out.push(Dependent {
                name: t.name_any(),
                revision: 0,
                changed: None,
                reissuing: false,
            });
            continue;
        };
        // About to be re-issued: it waits for a revocation, or its user revoked the token it
        // still holds. A sibling that is failing, suspended or not ready for another reason
        // does not hold a restart.
        let user = ctx.users.get(ns, &t.spec.user_ref.name);
        let behind = user.as_ref().is_some_and(|u| {
            u.revocation_pending() || s.revocation_epoch.is_some_and(|e| e < u.revocation_epoch())
        });
        out.push(Dependent {
            name: t.name_any(),
            revision: s.revision,
            changed: s.last_rotation_time.as_ref().map(|t| t.0),
            reissuing: behind || s.revocation_requested.is_some(),
        });
    }
    out
}

/// A short hash of the dependents' names and revisions, order-independent.
fn revisions_hash(dependents: &[Dependent]) -> String {
    use base64::Engine;
    let mut parts: Vec<String> = dependents
        .iter()
        .map(|d| format!("{}={}", d.name, d.revision))
        .collect();
    parts.sort();
    let digest = Sha256::digest(parts.join(";").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str, revision: i64) -> Dependent {
        Dependent {
            name: name.into(),
            revision,
            changed: None,
            reissuing: false,
        }
    }

    #[test]
    fn a_missing_target_is_looked_at_less_often_the_longer_it_is_missing() {
        assert_eq!(recheck_after(Duration::ZERO), RECHECK_MIN);
        assert_eq!(
            recheck_after(Duration::from_secs(120)),
            Duration::from_secs(30)
        );
        assert_eq!(recheck_after(Duration::from_secs(86_400)), RECHECK_MAX);
        // Over a day missing: about 160 reads, not one per reconcile or per second.
        let (mut t, mut reads) = (Duration::ZERO, 0);
        while t < Duration::from_secs(86_400) {
            t += recheck_after(t);
            reads += 1;
        }
        assert!(reads < 200, "{reads}");
    }

    #[test]
    fn a_workload_opts_in_for_named_tokens_or_for_any() {
        assert!(opted_in(Some("true"), "calls"));
        assert!(opted_in(Some("calls, chat"), "calls"));
        assert!(opted_in(Some("chat,calls"), "calls"));
        assert!(!opted_in(Some("chat"), "calls"));
        assert!(!opted_in(Some("calls-2"), "calls"));
        assert!(!opted_in(Some(""), "calls"));
        assert!(!opted_in(Some("false"), "calls"));
        assert!(!opted_in(None, "calls"));
    }

    #[test]
    fn the_hash_follows_revisions_not_order() {
        let a = revisions_hash(&[dep("a", 2), dep("b", 1)]);
        assert_eq!(a, revisions_hash(&[dep("b", 1), dep("a", 2)]));
        assert_ne!(a, revisions_hash(&[dep("a", 3), dep("b", 1)]));
        assert_ne!(a, revisions_hash(&[dep("a", 2), dep("c", 1)]));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn a_rollout_restarts_through_restart_at_and_keeps_its_hash_on_itself() {
        let now: Timestamp = "2026-12-07T10:11:12.987Z".parse().unwrap();
        assert_eq!(
            restart_patch(WorkloadKind::Rollout, "h1", now),
            json!({"metadata": {"annotations": {RESTARTED_FOR_ANNOTATION: "h1"}},
                   "spec": {"restartAt": "2026-12-07T10:11:12Z"}})
        );
        assert_eq!(
            restart_patch(WorkloadKind::Deployment, "h1", now),
            json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_FOR_ANNOTATION: "h1"}}}}})
        );
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "annotations": {RESTARTED_FOR_ANNOTATION: "h0"}},
            "spec": {"template": {"metadata": {"annotations": {RESTARTED_FOR_ANNOTATION: "x"}}}},
        }))
        .unwrap();
        assert_eq!(
            restarted_for(WorkloadKind::Rollout, &obj).as_deref(),
            Some("h0")
        );
        assert_eq!(
            restarted_for(WorkloadKind::Deployment, &obj).as_deref(),
            Some("x")
        );
    }
}
