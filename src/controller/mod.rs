//! The controller runtime: shared caches, the two reconcilers, leader election, the health
//! and metrics server, and graceful shutdown.

pub mod acs_pool;
pub mod backoff;
pub mod events;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod fixtures;
pub mod guard;
pub mod own_writes;
pub mod series;
pub mod service;
pub mod service_signals;
pub mod shared_watch;
pub mod status_memo;
pub mod tables;
#[cfg(test)]
mod tests;
pub mod token;
pub mod triggers;
pub mod user;
pub mod watch_health;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::Serialize;
use tracing::{info, warn};

use crate::api::{
    self, ClusterCommunicationService, CommunicationService, CommunicationToken, CommunicationUser,
    ServiceKey, ServiceKind,
};
use crate::config::Config;
use crate::credentials::CredentialsResolver;
use crate::leader::fence::FenceLayer;
use crate::leader::LeaderGate;
use crate::metrics::Metrics;
use crate::server::Readiness;

use self::acs_pool::AcsPool;
use self::backoff::Failures;
use self::shared_watch::{ignore_events, scopes, Drivers, Shared};
use crate::stores::Stores;

/// A clock, injected so tests can fix time.
pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub recorder: events::Events,
    pub acs: AcsPool,
    pub credentials: CredentialsResolver,
    pub users: Stores<CommunicationUser>,
    pub tokens: Stores<CommunicationToken>,
    pub failures: Failures,
    /// What this process last wrote to each token Secret (saves re-reading it).
    pub own_writes: own_writes::OwnWrites,
    /// The cached tokens by user and by Secret name (`tokens_of_user`, `claimants`).
    pub token_index: Arc<crate::token_index::TokenIndex>,
    /// The token statuses this process wrote, until the cache shows them.
    pub token_status: Arc<status_memo::StatusMemo<crate::api::CommunicationTokenStatus>>,
    /// Bounds unscheduled issuances and repairs per object.
    pub guard: guard::Guard,
    /// Signalled when the operator-wide default credentials change (seen by a watch, or by
    /// polling when no watch covers them): every controller wakes the objects using them.
    pub default_changed: tokio::sync::broadcast::Sender<()>,
    /// Announces a service whose spec or Secret changed (see [`service_signals`]).
    pub service_changed: tokio::sync::broadcast::Sender<ServiceKey>,
    /// User statuses this process wrote with a new identity, by UID, until the cache shows
    /// them: a reconcile that reads a cache not yet updated by its own write must not create
    /// a second identity (GA creation is not idempotent).
    pub recent_identities:
        std::sync::Mutex<std::collections::HashMap<String, crate::api::CommunicationUserStatus>>,
    /// Health of the watches (the controllers' own watches report here too).
    pub watches: watch_health::WatchHealth,
    /// The controllers' change filters (pruned and measured by [`tables::report`]).
    pub change_filters: triggers::ChangeFilters,
    pub clock: Clock,
}

impl Context {
    pub fn now(&self) -> jiff::Timestamp {
        (self.clock)()
    }

    /// The ACS client for `conn`, for the object with failure key `key`: an object that is
    /// already failing backs off between its attempts itself, so its client makes no retries
    /// of its own and each attempt is one request.
    pub fn acs_client(
        &self,
        creds: &crate::credentials::Credentials,
        key: &str,
    ) -> Result<crate::acs::AcsClient, crate::acs::AcsError> {
        let client = self.acs.client(creds, self.credentials.entra_tokens())?;
        Ok(if self.failures.get(key) > 0 {
            client.without_retries()
        } else {
            client
        })
    }

    /// The cached tokens of `user` in `ns` matching `also`, found through the index.
    pub fn tokens_of_user(
        &self,
        ns: &str,
        user: &str,
        also: impl Fn(&CommunicationToken) -> bool,
    ) -> Vec<Arc<CommunicationToken>> {
        self.token_index
            .of_user(ns, user)
            .into_iter()
            .filter_map(|n| self.tokens.get(ns, &n))
            .filter(|t| t.spec.user_ref.name == user && also(t))
            .collect()
    }

    /// The cached tokens in `ns` that write the Secret named `secret`.
    pub fn claimants(&self, ns: &str, secret: &str) -> Vec<Arc<CommunicationToken>> {
        self.token_index
            .claiming(ns, secret)
            .into_iter()
            .filter_map(|n| self.tokens.get(ns, &n))
            .filter(|t| t.secret_name() == secret)
            .collect()
    }

    /// Publishes an event about `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "failed to publish event");
        }
    }
}

/// The condition reason of an ACS failure that concerns the credentials, if it does: Entra
/// refusing the principal or its assertion, the ServiceAccount gone, the TokenRequest denied,
/// ACS rejecting the key or token (401) or the principal lacking a role (403).
pub fn credential_reason(e: &crate::acs::AcsError) -> Option<&'static str> {
    use crate::acs::{AcsError, CredentialFailure};
    use crate::api::condition::reasons;
    match e {
        AcsError::Credential { failure, .. } => match failure {
            CredentialFailure::Rejected => Some(reasons::CREDENTIALS_REJECTED),
            CredentialFailure::Missing => Some(reasons::CREDENTIALS_NOT_FOUND),
            CredentialFailure::TokenRequestDenied => Some(reasons::TOKEN_REQUEST_FAILED),
            CredentialFailure::Unavailable => None,
        },
        _ if e.status() == Some(401) => Some(reasons::CREDENTIALS_REJECTED),
        _ if e.status() == Some(403) => Some(reasons::NOT_AUTHORIZED),
        _ => None,
    }
}

/// What a person should do about an ACS failure, appended to its message where there is
/// something to say.
pub fn failure_hint(e: &crate::acs::AcsError) -> &'static str {
    if e.status() == Some(403) {
        "; the Entra principal needs a data-plane role on the ACS resource: Contributor, or Communication and Email Service Owner"
    } else {
        ""
    }
}

/// Writes `status` with server-side apply under `manager`, unless it equals `current`
/// (an unchanged write would only trigger another reconcile).
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    current: Option<&S>,
    status: &S,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(None);
    }
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    // force: this manager owns the whole status of its kind; a leftover owner from an older
    // operator version must not block the write.
    let written = api
        .patch_status(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(Some(written))
}

/// The reconciler's own error inside a finalizer error, if the failure was the reconciler's
/// (and not adding or removing the finalizer itself).
pub fn reconciler_error<E: std::error::Error + 'static>(
    e: &kube::runtime::finalizer::Error<E>,
) -> Option<&E> {
    match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => Some(e),
        _ => None,
    }
}

/// Whether removing the finalizer found the object gone: a reconcile of a cached copy that
/// lagged the previous, successful cleanup (the finalizer was already removed and the object
/// deleted). Nothing failed: the object's per-object state is forgotten and nothing recorded,
/// which would keep a failure entry for an object that no longer exists and log a warning for
/// every such lag.
pub fn gone_at_finalizer_removal<K, E>(
    ctx: &Context,
    obj: &K,
    e: &kube::runtime::finalizer::Error<E>,
) -> bool
where
    K: Resource<DynamicType = ()>,
    E: std::error::Error + 'static,
{
    let gone = matches!(
        e,
        kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(ae)) if ae.code == 404
    );
    if gone {
        forget_object(ctx, obj);
        tracing::debug!("already deleted: a lagging copy found its finalizer gone");
    }
    gone
}

/// Forgets the per-object state of an object that is gone (its failures and guard entries).
fn forget_object<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K) {
    ctx.failures.reset(&key_of(obj));
    if let Some(uid) = obj.meta().uid.as_deref() {
        ctx.guard.forget(uid);
    }
}

/// A stream of the signals sent on `rx` (a lagging receiver still yields once).
pub fn signals(
    rx: tokio::sync::broadcast::Receiver<()>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some(((), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// Wake-ups of one controller's objects when the unwatched default credentials change: the
/// users resolving to them (or, through `map`, their tokens), within `scope`.
fn default_wakeups<K, F>(
    ctx: &Arc<Context>,
    scope: &Option<String>,
    rx: tokio::sync::broadcast::Receiver<()>,
    map: F,
) -> impl futures::Stream<Item = kube::runtime::reflector::ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
    F: Fn(
            &Context,
            Vec<kube::runtime::reflector::ObjectRef<CommunicationUser>>,
        ) -> Vec<kube::runtime::reflector::ObjectRef<K>>
        + Send
        + Sync
        + 'static,
{
    let ctx = ctx.clone();
    let scope = scope.clone();
    signals(rx).flat_map(move |()| {
        let refs = match ctx.config.default_credentials.as_ref() {
            Some(_) => map(&ctx, user::users_on_default(&ctx)),
            None => Vec::new(),
        };
        let scope = scope.clone();
        futures::stream::iter(
            refs.into_iter()
                .filter(move |r| scope.is_none() || r.namespace == scope),
        )
    })
}

fn namespaced_service_key(s: &CommunicationService) -> Option<ServiceKey> {
    Some(ServiceKey {
        kind: ServiceKind::CommunicationService,
        namespace: s.metadata.namespace.clone(),
        name: s.metadata.name.clone()?,
    })
}

fn cluster_service_key(s: &ClusterCommunicationService) -> Option<ServiceKey> {
    Some(ServiceKey {
        kind: ServiceKind::ClusterCommunicationService,
        namespace: None,
        name: s.metadata.name.clone()?,
    })
}

fn namespaced_service_ref(
    k: &ServiceKey,
) -> Option<kube::runtime::reflector::ObjectRef<CommunicationService>> {
    match (k.kind, &k.namespace) {
        (ServiceKind::CommunicationService, Some(ns)) => {
            Some(kube::runtime::reflector::ObjectRef::new(&k.name).within(ns))
        }
        _ => None,
    }
}

fn cluster_service_ref(
    k: &ServiceKey,
) -> Option<kube::runtime::reflector::ObjectRef<ClusterCommunicationService>> {
    (k.kind == ServiceKind::ClusterCommunicationService)
        .then(|| kube::runtime::reflector::ObjectRef::new(&k.name))
}

/// `Kind/namespace/name` of an object, the key of per-object state (a user and a token of
/// the same name must not share a failure count).
pub fn key_of<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Failure to start the operator.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("failed to load the Kubernetes client configuration")]
    KubeConfig(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("failed to create the Kubernetes client")]
    KubeClient(#[source] kube::Error),
    #[error("invalid Entra settings (the CA bundle)")]
    Entra(#[source] crate::entra::BuildError),
    #[error("failed to bind the metrics and health server")]
    Server(#[source] std::io::Error),
    #[error("leader election failed")]
    Leader(#[source] crate::leader::LeaderError),
    /// Leadership was lost (or could no longer be proven valid) while leading. The process
    /// exits non-zero so that the pod restarts with fresh caches, like controller-runtime.
    #[error("leadership lost; stopped every controller")]
    LeadershipLost,
    /// The message names the found and the minimum version, so it is the whole error.
    #[error(transparent)]
    UnsupportedServer(#[from] crate::kube_version::TooOld),
}

/// Builds the Kubernetes client from a kubeconfig path and context, or infers it.
pub async fn kube_client(config: &Config) -> Result<Client, RunError> {
    Client::try_from(kube_config(config).await?).map_err(RunError::KubeClient)
}

/// Like [`kube_client`], with every request counted by verb in `metrics`
/// (`acs_identity_operator_kube_requests_total`), so the cost per object is observable, and
/// every write fenced by `gate` (except to the election's own Lease). The fence is the outer
/// layer: a refused write is never sent, so it is not counted.
pub async fn counted_kube_client(
    config: &Config,
    metrics: Arc<Metrics>,
    gate: &LeaderGate,
) -> Result<Client, RunError> {
    let builder = kube::client::ClientBuilder::try_from(kube_config(config).await?)
        .map_err(RunError::KubeClient)?;
    let (lease_ns, lease_name) = config
        .leader_election
        .as_ref()
        .map(|le| (le.namespace.as_str(), le.lease_name.as_str()))
        .unwrap_or_default();
    Ok(builder
        .with_layer(&crate::metrics::kube_requests::layer(metrics))
        .with_layer(&FenceLayer::new(gate.clone(), lease_ns, lease_name))
        .build())
}

/// The client configuration from a kubeconfig path and context, or inferred.
async fn kube_config(config: &Config) -> Result<kube::Config, RunError> {
    let kc = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| RunError::KubeConfig(Box::new(e)))?;
            let options = kube::config::KubeConfigOptions {
                context: config.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| RunError::KubeConfig(Box::new(e)))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| RunError::KubeConfig(Box::new(e)))?,
    };
    Ok(kc)
}

type Shutdown = futures::future::Shared<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// Resolves on SIGINT or SIGTERM.
fn shutdown_signal() -> Shutdown {
    let f: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {},
                        _ = term.recv() => {},
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        info!("shutdown signal received");
    });
    f.shared()
}

/// Runs the operator until a shutdown signal (`Ok`) or the loss of leadership
/// ([`RunError::LeadershipLost`], so the process exits non-zero and restarts with fresh caches).
pub async fn run(config: Config) -> Result<(), RunError> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    // Every write passes this gate: always open without leader election, else valid only
    // while this replica's leadership is (see `leader::gate`).
    let gate = if config.leader_election.is_some() {
        LeaderGate::closed()
    } else {
        LeaderGate::always_open()
    };
    let client = counted_kube_client(&config, metrics.clone(), &gate).await?;
    let readiness = Readiness::default();
    let shutdown = shutdown_signal();

    let (bound, server) = crate::server::bind(
        config.metrics_addr,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(RunError::Server)?;
    info!(address = %bound, "serving /metrics, /healthz and /readyz");
    let server = tokio::spawn(server);

    // Refuse an unsupported API server before anything else talks to it, rather than failing
    // later on a rule or field it does not know. /healthz already answers and /readyz stays
    // false while the server is unreachable: that is an outage to wait out, not a crash.
    tokio::select! {
        checked = crate::kube_version::wait_and_check(|| client.apiserver_version()) => checked?,
        _ = shutdown.clone() => return Ok(()),
    }

    // Caches run on every replica (read-only), so a standby is ready to take over at once.
    let scopes = scopes(&config);
    let mut users = Shared::<CommunicationUser>::new(&scopes, 1024);
    let mut tokens = Shared::<CommunicationToken>::new(&scopes, 1024);
    let mut creds = Shared::<PartialObjectMeta<Secret>>::new(&scopes, 256);
    let mut services = Shared::<CommunicationService>::new(&scopes, 64);
    let (cluster_services, cluster_services_writer) =
        kube::runtime::reflector::store_shared::<ClusterCommunicationService>(64);
    let service_changed = tokio::sync::broadcast::channel::<ServiceKey>(1024).0;

    // Subscriptions must be taken before the drivers start.
    let mut user_ctrl_streams = Vec::new();
    let mut token_ctrl_streams = Vec::new();
    for ((u, t), c) in users
        .writers
        .iter()
        .zip(&tokens.writers)
        .zip(&creds.writers)
    {
        user_ctrl_streams.push((u.subscribe(), t.subscribe(), c.subscribe()));
        token_ctrl_streams.push((t.subscribe(), u.subscribe(), c.subscribe()));
    }
    let service_ctrl_streams: Vec<_> = services.writers.iter().map(|w| w.subscribe()).collect();
    let cluster_service_stream = cluster_services_writer.subscribe();

    let all = watcher::Config::default();
    // Every Secret that is not a token Secret may hold credentials; metadata only, so no
    // Secret data is cached.
    let not_ours = watcher::Config::default().labels(&format!(
        "{}!={}",
        api::MANAGED_BY_LABEL,
        api::MANAGED_BY
    ));
    let token_index = Arc::new(crate::token_index::TokenIndex::default());
    let token_status: Arc<status_memo::StatusMemo<api::CommunicationTokenStatus>> = Arc::default();
    let watches = watch_health::WatchHealth::new(readiness.clone(), metrics.clone());
    let mut drivers = Drivers(Vec::new(), watches.clone());
    drivers.0.extend(users.drive(
        &client,
        &scopes,
        &all,
        (&watches, "CommunicationUser"),
        ignore_events,
    ));
    // Every event of the tokens' watch keeps the index and the status memo in step (deletions
    // included, which the controllers' subscriber streams do not carry; and, at the end of a
    // relist, the deletions the watch missed while it was down).
    drivers.0.extend(tokens.drive(
        &client,
        &scopes,
        &all,
        (&watches, "CommunicationToken"),
        |scope| {
            let (ix, memo) = (token_index.clone(), token_status.clone());
            let scope = scope.map(str::to_string);
            let mut relist = crate::relist::Relist::default();
            move |e: &watcher::Event<CommunicationToken>| {
                ix.apply(e);
                memo.on_event(e);
                if let Some(listed) = relist.on_event(e) {
                    ix.retain_listed(scope.as_deref(), &listed);
                    memo.retain_listed(scope.as_deref(), &listed);
                }
            }
        },
    ));
    let service_stores = crate::credentials::ServiceStores {
        namespaced: Stores::new(services.stores.clone()),
        cluster: cluster_services.clone(),
    };
    drivers.0.extend(creds.drive(
        &client,
        &scopes,
        &not_ours,
        (&watches, "Secret/credentials"),
        |_| {
            service_signals::on_secret_event(
                service_changed.clone(),
                service_stores.clone(),
                config.operator_namespace.clone(),
            )
        },
    ));
    drivers.0.extend(services.drive(
        &client,
        &scopes,
        &all,
        (&watches, "CommunicationService"),
        |_| service_signals::on_service_event(service_changed.clone(), namespaced_service_key),
    ));
    drivers.0.push(shared_watch::drive_cluster(
        &client,
        cluster_services_writer,
        (&watches, "ClusterCommunicationService"),
        service_signals::on_service_event(service_changed.clone(), cluster_service_key),
    ));

    let user_stores = Stores::new(users.stores);
    let token_stores = Stores::new(tokens.stores);
    let cred_store: Stores<PartialObjectMeta<Secret>> = Stores::new(creds.stores);

    let acs_options = acs_pool::client_options(&config, metrics.clone(), gate.clone());
    let entra_tokens = crate::entra::EntraTokens::new(
        client.clone(),
        config.acs_ca_pem.as_deref(),
        config.acs_request_timeout,
        Some(metrics.clone()),
    )
    .map_err(RunError::Entra)?;
    let (seal_ns, seal_name) = &config.entra.sealing_key_secret;
    let entra = crate::credentials::Entra::new(
        entra_tokens,
        config.entra.clone(),
        config.default_workload_identity.clone(),
        crate::sealing::SealingKey::new(client.clone(), seal_ns, seal_name),
    );
    let reporter = Reporter {
        controller: api::MANAGED_BY.to_string(),
        instance: Some(config.identity.clone()),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
        recorder: events::Events::new(client.clone(), reporter),
        acs: AcsPool::new(acs_options, acs_pool::budget(&config)),
        credentials: CredentialsResolver::new(
            client.clone(),
            cred_store.clone(),
            config.default_credentials.clone(),
            Some(entra),
        )
        .with_allowed_hosts(config.allowed_endpoint_hosts.clone())
        .with_services(service_stores.clone(), &config.operator_namespace),
        users: user_stores.clone(),
        tokens: token_stores.clone(),
        token_index,
        failures: Failures::default(),
        own_writes: Default::default(),
        token_status,
        guard: Default::default(),
        default_changed: tokio::sync::broadcast::channel(4).0,
        service_changed: service_changed.clone(),
        recent_identities: Default::default(),
        watches: watches.clone(),
        change_filters: Default::default(),
        clock: Arc::new(jiff::Timestamp::now),
    });

    metrics.objects.set_source(Box::new(series::CacheSeries {
        users: user_stores.clone(),
        tokens: token_stores.clone(),
    }));
    // Every replica prunes and reports its tables, the leader or not.
    let tables = tokio::spawn(tables::report_forever(ctx.clone()));

    // Ready once every cache has its initial list. The credentials cache counts too: a
    // reconcile before it is filled would find no credentials, mark every object NotReady and
    // emit a Warning each (seen as writes after every restart in docs/benchmarks.md).
    tokio::select! {
        ok = async {
            user_stores.wait_until_ready().await
                && token_stores.wait_until_ready().await
                && cred_store.wait_until_ready().await
                && service_stores.namespaced.wait_until_ready().await
                && cluster_services.wait_until_ready().await.is_ok()
        } => {
            if !ok {
                warn!("a cache closed before it became ready");
            }
        }
        _ = shutdown.clone() => return Ok(()),
    }
    readiness.set_ready(true);
    info!("caches synced");

    // Leader election gates every write: a standby keeps only its caches warm.
    let mut elector = None;
    let lost_leadership = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop: Shutdown = if let Some(le) = &config.leader_election {
        let e = crate::leader::LeaderElector::with_gate(
            client.clone(),
            crate::leader::LeaseConfig {
                namespace: le.namespace.clone(),
                name: le.lease_name.clone(),
                identity: config.identity.clone(),
                lease_duration: le.lease_duration,
                renew_deadline: le.renew_deadline,
                retry_period: le.retry_period,
            },
            gate.clone(),
        );
        info!(identity = %config.identity, lease = %le.lease_name, "waiting for leadership");
        tokio::select! {
            r = e.acquire() => r.map_err(RunError::Leader)?,
            _ = shutdown.clone() => return Ok(()),
        }
        info!("acquired leadership");
        metrics.runtime.set_leader(true);
        let mut lost = e.keep_renewing();
        // A refused write means the gate saw leadership expire before the renew loop did
        // (a frozen process that just resumed): stop just the same.
        let mut refused = gate.refusals();
        elector = Some(e);
        let s = shutdown.clone();
        let flag = lost_leadership.clone();
        let leading = metrics.clone();
        let f: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            tokio::select! {
                _ = s => return,
                _ = lost.wait_for(|leads| !*leads) => {},
                _ = refused.wait_for(|r| *r) => {},
            }
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            leading.runtime.set_leader(false);
            warn!("leadership lost; stopping every controller and exiting");
        });
        f.shared()
    } else {
        metrics.runtime.set_leader(true);
        shutdown.clone()
    };

    // Watches ending from here on end on purpose, not as failures.
    let stop: Shutdown = {
        let (stop, watches) = (stop.clone(), watches.clone());
        let f: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            stop.await;
            watches.stopping();
        });
        f.shared()
    };

    // The default credentials Secret outside the watched namespaces has no watch: poll it so
    // a key rotation there still reaches the tokens that use it.
    let default_changed = ctx.default_changed.clone();
    let poller = ctx.credentials.unwatched_default().is_some().then(|| {
        tokio::spawn(
            ctx.credentials
                .clone()
                .poll_unwatched_default(default_changed.clone(), crate::credentials::UNWATCHED_TTL),
        )
    });
    let mut controllers = Vec::new();
    for (i, (u, t, c)) in user_ctrl_streams.into_iter().enumerate() {
        let scope = scopes[i].clone();
        if let (Some(u), Some(t), Some(c)) = (u, t, c) {
            let wake = futures::stream::select(
                default_wakeups(&ctx, &scope, default_changed.subscribe(), |_, users| users),
                service_signals::user_wakeups(
                    &ctx,
                    &scope,
                    service_changed.subscribe(),
                    |_, users| users,
                ),
            );
            controllers.push(
                user::controller(ctx.clone(), scope.clone(), u, t, c, wake, stop.clone()).boxed(),
            );
        }
    }
    for (i, (t, u, c)) in token_ctrl_streams.into_iter().enumerate() {
        let scope = scopes[i].clone();
        if let (Some(t), Some(u), Some(c)) = (t, u, c) {
            let wake = futures::stream::select(
                default_wakeups(
                    &ctx,
                    &scope,
                    default_changed.subscribe(),
                    token::tokens_of_users,
                ),
                service_signals::user_wakeups(
                    &ctx,
                    &scope,
                    service_changed.subscribe(),
                    token::tokens_of_users,
                ),
            );
            controllers
                .push(token::controller(ctx.clone(), scope, t, u, c, wake, stop.clone()).boxed());
        }
    }
    for (i, stream) in service_ctrl_streams.into_iter().enumerate() {
        let (Some(stream), Some(reader)) = (
            stream,
            service_stores
                .namespaced
                .store_for_scope(scopes[i].as_deref()),
        ) else {
            continue;
        };
        let scope = scopes[i].clone();
        let changed = service_signals::service_wakeups(
            &ctx,
            service_changed.subscribe(),
            namespaced_service_ref,
        )
        .filter(move |r| futures::future::ready(scope.is_none() || r.namespace == scope));
        controllers.push(
            service::controller(
                ctx.clone(),
                reader,
                stream,
                changed,
                "service_changes",
                stop.clone(),
            )
            .boxed(),
        );
    }
    if let Some(stream) = cluster_service_stream {
        let changed = service_signals::service_wakeups(
            &ctx,
            service_changed.subscribe(),
            cluster_service_ref,
        );
        controllers.push(
            service::controller(
                ctx.clone(),
                cluster_services.clone(),
                stream,
                changed,
                "cluster_service_changes",
                stop.clone(),
            )
            .boxed(),
        );
    }
    let summary = tokio::spawn(token::summarize_forever(ctx.clone()));
    futures::future::join_all(controllers).await;
    summary.abort();
    tables.abort();
    if let Some(p) = poller {
        p.abort();
    }
    if let Some(e) = elector {
        if let Err(err) = e.release().await {
            warn!(error = %err, "failed to release the lease");
        }
    }
    drop(drivers);
    readiness.set_ready(false);
    if lost_leadership.load(std::sync::atomic::Ordering::SeqCst) {
        server.abort();
        return Err(RunError::LeadershipLost);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    info!("stopped");
    Ok(())
}
