//! The service reconciler (both kinds): proves a service's credentials with one read that
//! changes nothing (on change, and then every [`REPROBE`], never twice within
//! [`MIN_PROBE_INTERVAL`]), and reports them and how many users and tokens use the service.
//! It never writes to ACS: users act, services only report. By default only a cluster-wide
//! install reconciles ClusterCommunicationServices (`--manage-cluster-services`: several
//! namespaced installs would each count their own users into one status).

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::{instrument, warn};

use super::{apply_status, Context};
use crate::api::condition::{reasons, types};
use crate::api::{
    self, set_condition, ClusterCommunicationService, CommunicationService,
    CommunicationServiceStatus, ConditionExt, ServiceKey,
};
use crate::credentials::ServiceView;

pub(crate) const CONTROLLER: &str = "communicationservice";

/// A service proved working is proved again this often (a key revoked in Azure shows).
pub const REPROBE: Duration = Duration::from_secs(600);
/// Never two probes of one service closer than this, whatever changes.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// Bursts of usage changes (users and tokens created or deleted) become one recount.
const RECOUNT_DEBOUNCE: Duration = Duration::from_secs(2);

/// Why a service reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to patch status")]
    PatchStatus(#[source] kube::Error),
}

/// What the reconciler needs of either kind.
pub trait ServiceObject:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    fn view(&self, operator_namespace: &str) -> Option<ServiceView>;
    fn service_status(&self) -> Option<&CommunicationServiceStatus>;
    fn api(client: kube::Client, namespace: Option<&str>) -> Api<Self>;
    /// Whether the operator may publish events about it: those of a cluster-scoped object
    /// go to namespace `default`, which a namespaced install may not write.
    fn events_allowed(config: &crate::config::Config) -> bool;
}

impl ServiceObject for CommunicationService {
    fn view(&self, _: &str) -> Option<ServiceView> {
        ServiceView::of_namespaced(self)
    }
    fn service_status(&self) -> Option<&CommunicationServiceStatus> {
        self.status.as_ref()
    }
    fn api(client: kube::Client, namespace: Option<&str>) -> Api<Self> {
        Api::namespaced(client, namespace.unwrap_or_default())
    }
    fn events_allowed(_: &crate::config::Config) -> bool {
        true
    }
}

impl ServiceObject for ClusterCommunicationService {
    fn view(&self, operator_namespace: &str) -> Option<ServiceView> {
        ServiceView::of_cluster(self, operator_namespace)
    }
    fn service_status(&self) -> Option<&CommunicationServiceStatus> {
        self.status.as_ref()
    }
    fn api(client: kube::Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn events_allowed(config: &crate::config::Config) -> bool {
        config.watch_namespaces.is_empty() || config.watch_namespaces.iter().any(|n| n == "default")
    }
}

/// Builds the controller of one kind over a shared store: woken by spec changes (its own
/// status writes never wake it) and by `changed` (the service's Secret moved).
pub fn controller<K: ServiceObject>(
    ctx: Arc<Context>,
    reader: Store<K>,
    objects: impl Stream<Item = Arc<K>> + Send + 'static,
    changed: impl Stream<Item = ObjectRef<K>> + Send + 'static,
    table: &'static str,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send {
    let live = reader.clone();
    Controller::for_shared_stream(
        super::triggers::meaningful_changes(
            objects,
            move || live.state(),
            &ctx.change_filters,
            table,
        ),
        reader,
    )
    .with_config(kube::runtime::controller::Config::default().debounce(RECOUNT_DEBOUNCE))
    .reconcile_on(changed)
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|r| {
        if let Err(e) = r {
            tracing::debug!(error = %e, "service reconcile trigger error");
        }
        futures::future::ready(())
    })
}

#[instrument(skip(obj, ctx), fields(namespace = obj.namespace().unwrap_or_default(), name = %obj.name_any(), controller = CONTROLLER))]
async fn reconcile<K: ServiceObject>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let timer = ctx.metrics.reconcile(CONTROLLER);
    let result = apply(obj, &ctx).await;
    timer.finish(if result.is_ok() { "ok" } else { "error" });
    result
}

async fn apply<K: ServiceObject>(obj: Arc<K>, ctx: &Context) -> Result<Action, Error> {
    let generation = obj.meta().generation;
    let current = obj.service_status();
    let mut status = current.cloned().unwrap_or_default();
    status.observed_generation = generation;
    let now = ctx.now();
    let mut requeue = REPROBE;
    match obj.view(&ctx.config.operator_namespace) {
        None => set_condition(
            &mut status.conditions,
            types::READY,
            false,
            reasons::CREDENTIALS_NOT_FOUND,
            "set one way to authenticate (connectionString, workloadIdentity or operatorIdentity)",
            generation,
            now,
        ),
        Some(view) => {
            let (users, tokens) = usage(ctx, &view.key);
            status.users = Some(users);
            status.tokens = Some(tokens);
            match ctx.credentials.service_credentials(&view).await {
                Err(e) => {
                    if status.fingerprint.take().is_some() {
                        announce_unwatched(ctx, &view);
                    }
                    set_condition(
                        &mut status.conditions,
                        types::READY,
                        false,
                        e.reason(),
                        e.message(),
                        generation,
                        now,
                    );
                    requeue = requeue.min(e.requeue());
                }
                Ok(creds) => {
                    let fingerprint = creds.fingerprint().to_string();
                    let before = status.fingerprint.replace(fingerprint.clone());
                    if before.is_some_and(|b| b != fingerprint) {
                        announce_unwatched(ctx, &view);
                    }
                    match probe_due(current, &fingerprint, generation, now) {
                        Due::Now => {
                            status.probed_fingerprint = Some(fingerprint);
                            status.last_probe_time = Some(Time(now));
                            let (ok, reason, message) = probe(ctx, &creds, &view).await;
                            set_condition(
                                &mut status.conditions,
                                types::READY,
                                ok,
                                reason,
                                message,
                                generation,
                                now,
                            );
                        }
                        Due::In(d) => requeue = requeue.min(d),
                    }
                }
            }
        }
    }
    let was_ready = current.and_then(|s| s.conditions.find(types::READY).map(|c| c.status.clone()));
    let ready = status.conditions.find(types::READY).cloned();
    let ns = obj.namespace();
    let api = K::api(ctx.client.clone(), ns.as_deref());
    apply_status(
        &api,
        &obj.name_any(),
        api::SERVICE_MANAGER,
        current,
        &status,
    )
    .await
    .map_err(Error::PatchStatus)?;
    let announce = ready
        .filter(|c| Some(&c.status) != was_ready.as_ref())
        .filter(|_| K::events_allowed(&ctx.config));
    if let Some(c) = announce {
        let type_ = if c.status == "True" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        ctx.event(obj.as_ref(), type_, &c.reason, "Probe", c.message)
            .await;
    }
    Ok(Action::requeue(requeue))
}

fn error_policy<K: ServiceObject>(_: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(CONTROLLER, "kubernetes");
    warn!(error = %err, "service reconcile failed");
    Action::requeue(Duration::from_secs(30))
}

/// Users resolve through the service again when what it resolves to changed without a watch
/// event saying so (a Secret outside the watched namespaces, a ServiceAccount's annotations,
/// the operator's own identity); a watched Secret's change was announced by its watch.
fn announce_unwatched(ctx: &Context, view: &ServiceView) {
    let announced = view
        .secret()
        .is_some_and(|(ns, _)| ctx.credentials.watches_secrets_of(ns));
    if !announced {
        let _ = ctx.service_changed.send(view.key.clone());
    }
}

/// When the next probe is due.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Now,
    In(Duration),
}

/// A probe is due when the credentials or the spec changed since the last one, or it failed,
/// or [`REPROBE`] passed; but never within [`MIN_PROBE_INTERVAL`] of the last one.
fn probe_due(
    status: Option<&CommunicationServiceStatus>,
    fingerprint: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Due {
    let Some(st) = status else {
        return Due::Now;
    };
    let Some(last) = st.last_probe_time.as_ref() else {
        return Due::Now;
    };
    let age = now
        .duration_since(last.0)
        .try_into()
        .unwrap_or(Duration::ZERO);
    // The Ready condition is written by probes (and resolution failures) only: its
    // generation is the spec the last probe saw.
    let ready = st.conditions.find(types::READY);
    let changed = st.probed_fingerprint.as_deref() != Some(fingerprint)
        || ready.and_then(|c| c.observed_generation) != generation
        || ready.is_none_or(|c| c.status != "True");
    let wait = if changed { MIN_PROBE_INTERVAL } else { REPROBE };
    match wait.checked_sub(age) {
        Some(d) if !d.is_zero() => Due::In(d),
        _ => Due::Now,
    }
}

/// One authenticated read; the condition it makes.
async fn probe(
    ctx: &Context,
    creds: &crate::credentials::Credentials,
    view: &ServiceView,
) -> (bool, &'static str, String) {
    let client = match ctx.acs.client(creds, ctx.credentials.entra_tokens()) {
        Ok(c) => c,
        Err(e) => return (false, reasons::CREDENTIALS_INVALID, e.to_string()),
    };
    match client.probe().await {
        Ok(()) => (
            true,
            reasons::CREDENTIALS_VERIFIED,
            format!(
                "{} accepted the credentials ({})",
                crate::endpoint_allow::host_only(&view.endpoint),
                creds.source
            ),
        ),
        Err(e) => {
            let reason = super::credential_reason(&e).unwrap_or(reasons::ACS_ERROR);
            (
                false,
                reason,
                format!(
                    "the probe of {} failed: {e}{}",
                    crate::endpoint_allow::host_only(&view.endpoint),
                    super::failure_hint(&e)
                ),
            )
        }
    }
}

/// The users referencing the service and served by it (not those its selector refuses), and
/// their tokens.
fn usage(ctx: &Context, key: &ServiceKey) -> (i32, i32) {
    let uses = |u: &api::CommunicationUser| {
        let ns = u.metadata.namespace.as_deref().unwrap_or_default();
        u.spec
            .service_ref
            .as_ref()
            .is_some_and(|r| key.is_referenced_by(ns, r))
            && !super::service_signals::refused_by_selector(u)
    };
    let users = match &key.namespace {
        Some(ns) => ctx.users.in_namespace_where(ns, uses),
        None => ctx.users.all_where(uses),
    };
    let tokens: usize = users
        .iter()
        .map(|u| {
            ctx.token_index
                .of_user(
                    u.metadata.namespace.as_deref().unwrap_or_default(),
                    &u.name_any(),
                )
                .len()
        })
        .sum();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    (count(users.len()), count(tokens))
}

/// The users of `scope` (all scopes: `None`) that reference the service `key`.
pub fn users_of_service(
    ctx: &Context,
    key: &ServiceKey,
    scope: Option<&str>,
) -> Vec<ObjectRef<api::CommunicationUser>> {
    let uses = |u: &api::CommunicationUser| {
        let ns = u.metadata.namespace.as_deref().unwrap_or_default();
        scope.is_none_or(|s| s == ns)
            && u.spec
                .service_ref
                .as_ref()
                .is_some_and(|r| key.is_referenced_by(ns, r))
    };
    let users = match (&key.namespace, scope) {
        (Some(ns), _) => ctx.users.in_namespace_where(ns, uses),
        (None, Some(s)) => ctx.users.in_namespace_where(s, uses),
        (None, None) => ctx.users.all_where(uses),
    };
    users
        .iter()
        .map(|u| ObjectRef::from_obj(u.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn status(
        fp: &str,
        gen: i64,
        probed: jiff::Timestamp,
        ready: bool,
    ) -> CommunicationServiceStatus {
        CommunicationServiceStatus {
            observed_generation: Some(gen),
            fingerprint: Some(fp.into()),
            probed_fingerprint: Some(fp.into()),
            last_probe_time: Some(Time(probed)),
            conditions: vec![Condition {
                type_: types::READY.into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: "r".into(),
                message: String::new(),
                observed_generation: Some(gen),
                last_transition_time: Time(probed),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn probes_on_change_at_most_once_a_minute_and_else_every_ten_minutes() {
        let t0 = jiff::Timestamp::from_second(1_000_000).unwrap();
        let after = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        assert_eq!(probe_due(None, "a", Some(1), t0), Due::Now);
        let ok = status("a", 1, t0, true);
        // Unchanged and working: again after REPROBE.
        assert_eq!(
            probe_due(Some(&ok), "a", Some(1), after(30)),
            Due::In(REPROBE - Duration::from_secs(30))
        );
        assert_eq!(probe_due(Some(&ok), "a", Some(1), after(600)), Due::Now);
        // A new key or spec: as soon as a minute has passed since the last probe.
        assert_eq!(
            probe_due(Some(&ok), "b", Some(1), after(20)),
            Due::In(Duration::from_secs(40))
        );
        assert_eq!(probe_due(Some(&ok), "a", Some(2), after(60)), Due::Now);
        // Failing: once a minute.
        let failing = status("a", 1, t0, false);
        assert_eq!(
            probe_due(Some(&failing), "a", Some(1), after(59)),
            Due::In(Duration::from_secs(1))
        );
        assert_eq!(probe_due(Some(&failing), "a", Some(1), after(61)), Due::Now);
    }
}
