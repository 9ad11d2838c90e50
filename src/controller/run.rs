//! Running the operator: the Kubernetes client, the shared caches and their watches, leader
//! election, the controllers, and graceful shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::events::Reporter;
use kube::Client;
use tracing::{info, warn};

use super::acs_pool::{self, AcsPool};
use super::caches::{Caches, Subscriptions};
use super::failure_backoff::FailureBackoff;
use super::shared_watch::scopes;
use super::wakeups::{cluster_service_ref, default_wakeups, namespaced_service_ref};
use super::{events, series, service, service_signals, tables, token, user, watch_health, Context};
use crate::api::{self, ServiceKey};
use crate::config::Config;
use crate::credentials::CredentialsResolver;
use crate::leader::fence::FenceLayer;
use crate::leader::LeaderGate;
use crate::metrics::Metrics;
use crate::server::Readiness;
use crate::stores::Stores;

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

/// Every write passes this gate: always open without leader election, else valid only while
/// this replica's leadership is (see `leader::gate`).
fn write_gate(config: &Config) -> LeaderGate {
    if config.leader_election.is_some() {
        LeaderGate::closed()
    } else {
        LeaderGate::always_open()
    }
}

/// Resolves when the controllers must stop; watches ending from then on end on purpose, not
/// as failures.
fn stopping(
    stop: impl Future<Output = ()> + Send + 'static,
    watches: watch_health::WatchHealth,
) -> Shutdown {
    let f: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
        stop.await;
        watches.stopping();
    });
    f.shared()
}

/// Runs the operator until a shutdown signal (`Ok`) or the loss of leadership
/// ([`RunError::LeadershipLost`], so the process exits non-zero and restarts with fresh caches).
pub async fn run(config: Config) -> Result<(), RunError> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let gate = write_gate(&config);
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

    let scopes = scopes(&config);
    let service_changed = tokio::sync::broadcast::channel::<ServiceKey>(1024).0;
    let service_usage = tokio::sync::broadcast::channel::<ServiceKey>(1024).0;
    let watches = watch_health::WatchHealth::new(readiness.clone(), metrics.clone());
    let caches = Caches::start(
        &client,
        &config,
        &scopes,
        &watches,
        (&service_changed, &service_usage),
    );
    let caches_ready = caches.ready();
    let Caches {
        users,
        tokens,
        creds,
        services,
        token_index,
        token_status,
        recent_identities,
        mut drivers,
        subscriptions,
    } = caches;
    let ctx = context(
        &config,
        &client,
        &metrics,
        &gate,
        &watches,
        (users.clone(), tokens.clone(), creds, services.clone()),
        (token_index, token_status, recent_identities),
        (service_changed, service_usage),
    )?;
    // A namespace's label change reaches the users of the cluster services whose selection
    // of it changes (their refusal or their service) at once.
    drivers.0.extend(service_signals::watch_namespace_labels(
        &ctx,
        &scopes,
        &services.cluster,
        &watches,
    ));
    metrics
        .objects
        .set_source(Box::new(series::CacheSeries { users, tokens }));
    // Every replica prunes and reports its tables, the leader or not.
    let tables = tokio::spawn(tables::report_forever(ctx.clone()));

    tokio::select! {
        ok = caches_ready => {
            if !ok {
                warn!("a cache closed before it became ready");
            }
        }
        _ = shutdown.clone() => return Ok(()),
    }
    readiness.set_ready(true);
    info!("caches synced");

    let Some(leading) = lead(&config, &client, &gate, &metrics, shutdown.clone()).await? else {
        return Ok(());
    };
    let stop = stopping(leading.stop.clone(), watches.clone());

    // The default credentials Secret outside the watched namespaces has no watch: poll it so
    // a key rotation there still reaches the tokens that use it.
    let poller = ctx.credentials.unwatched_default().is_some().then(|| {
        tokio::spawn(ctx.credentials.clone().poll_unwatched_default(
            ctx.default_changed.clone(),
            crate::credentials::UNWATCHED_TTL,
        ))
    });
    let controllers = controllers(&ctx, &scopes, subscriptions, &services, &stop);
    let summary = tokio::spawn(super::summary::summarize_forever(ctx.clone()));
    futures::future::join_all(controllers).await;
    summary.abort();
    tables.abort();
    if let Some(p) = poller {
        p.abort();
    }
    if let Some(e) = leading.elector {
        if let Err(err) = e.release().await {
            warn!(error = %err, "failed to release the lease");
        }
    }
    drop(drivers);
    readiness.set_ready(false);
    if leading.lost.load(std::sync::atomic::Ordering::SeqCst) {
        server.abort();
        return Err(RunError::LeadershipLost);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    info!("stopped");
    Ok(())
}

type CacheStores = (
    Stores<api::CommunicationUser>,
    Stores<api::CommunicationToken>,
    Stores<PartialObjectMeta<Secret>>,
    crate::credentials::ServiceStores,
);
type WriteMemory = (
    Arc<crate::token_index::TokenIndex>,
    Arc<super::written::Written<api::CommunicationTokenStatus>>,
    Arc<super::written::Written<(String, api::CommunicationUserStatus)>>,
);

/// What every reconcile shares, over the caches.
#[allow(clippy::too_many_arguments)]
fn context(
    config: &Arc<Config>,
    client: &Client,
    metrics: &Arc<Metrics>,
    gate: &LeaderGate,
    watches: &watch_health::WatchHealth,
    (users, tokens, creds, services): CacheStores,
    (token_index, token_status, recent_identities): WriteMemory,
    (service_changed, service_usage): (
        tokio::sync::broadcast::Sender<ServiceKey>,
        tokio::sync::broadcast::Sender<ServiceKey>,
    ),
) -> Result<Arc<Context>, RunError> {
    Ok(Arc::new(Context {
        client: client.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
        recorder: events::Events::new(
            client.clone(),
            Reporter {
                controller: api::MANAGED_BY.to_string(),
                instance: Some(config.identity.clone()),
            },
        ),
        acs: AcsPool::new(
            acs_pool::client_options(config, metrics.clone(), gate.clone()),
            acs_pool::budget(config),
        ),
        credentials: resolver(config, client, metrics, creds, services)?,
        users,
        tokens,
        token_index,
        failures: FailureBackoff::default(),
        own_writes: Default::default(),
        token_status,
        unscheduled: Default::default(),
        default_changed: tokio::sync::broadcast::channel(4).0,
        service_changed,
        service_usage,
        recent_identities,
        watches: watches.clone(),
        change_filters: Default::default(),
        clock: Arc::new(jiff::Timestamp::now),
    }))
}

/// The credentials resolver over the caches, with Entra credentials and the allowed hosts.
fn resolver(
    config: &Arc<Config>,
    client: &Client,
    metrics: &Arc<Metrics>,
    creds: Stores<PartialObjectMeta<Secret>>,
    services: crate::credentials::ServiceStores,
) -> Result<CredentialsResolver, RunError> {
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
        crate::sealing::SealingKeySecret::new(client.clone(), seal_ns, seal_name),
    );
    Ok(CredentialsResolver::new(
        client.clone(),
        creds,
        config.default_credentials.clone(),
        Some(entra),
    )
    .with_allowed_hosts(config.allowed_endpoint_hosts.clone())
    .with_services(services, &config.operator_namespace))
}

/// This replica leads: `stop` resolves at shutdown or when leadership is lost (then `lost`
/// is set); `elector` releases the Lease at the end.
struct Leading {
    stop: Shutdown,
    elector: Option<crate::leader::LeaderElector>,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

/// Waits for leadership when leader election is on (every write is gated by it: a standby
/// keeps only its caches warm). `None` when shut down first.
async fn lead(
    config: &Config,
    client: &Client,
    gate: &LeaderGate,
    metrics: &Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<Option<Leading>, RunError> {
    let lost_leadership = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let Some(le) = &config.leader_election else {
        metrics.runtime.set_leader(true);
        return Ok(Some(Leading {
            stop: shutdown,
            elector: None,
            lost: lost_leadership,
        }));
    };
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
        _ = shutdown.clone() => return Ok(None),
    }
    info!("acquired leadership");
    metrics.runtime.set_leader(true);
    let mut lost = e.keep_renewing();
    // A refused write means the gate saw leadership expire before the renew loop did (a
    // frozen process that just resumed): stop just the same.
    let mut refused = gate.refusals();
    let flag = lost_leadership.clone();
    let leading = metrics.clone();
    let f: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
        tokio::select! {
            _ = shutdown => return,
            _ = lost.wait_for(|leads| !*leads) => {},
            _ = refused.wait_for(|r| *r) => {},
        }
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        leading.runtime.set_leader(false);
        warn!("leadership lost; stopping every controller and exiting");
    });
    Ok(Some(Leading {
        stop: f.shared(),
        elector: Some(e),
        lost: lost_leadership,
    }))
}

type Controllers = Vec<futures::future::BoxFuture<'static, ()>>;

/// Every controller of every scope: users and tokens (woken by their own watches, by the
/// default credentials changing and by their service changing) and both service kinds.
fn controllers(
    ctx: &Arc<Context>,
    scopes: &[Option<String>],
    subs: Subscriptions,
    services: &crate::credentials::ServiceStores,
    stop: &Shutdown,
) -> Controllers {
    let mut controllers: Controllers = Vec::new();
    for (i, (u, t, c)) in subs.users.into_iter().enumerate() {
        let scope = scopes[i].clone();
        if let (Some(u), Some(t), Some(c)) = (u, t, c) {
            let wake = futures::stream::select(
                default_wakeups(ctx, &scope, ctx.default_changed.subscribe(), |_, u| u),
                service_signals::user_wakeups(
                    ctx,
                    &scope,
                    ctx.service_changed.subscribe(),
                    |_, u| u,
                ),
            );
            controllers.push(
                user::controller(ctx.clone(), scope.clone(), u, t, c, wake, stop.clone()).boxed(),
            );
        }
    }
    for (i, (t, u, c)) in subs.tokens.into_iter().enumerate() {
        let scope = scopes[i].clone();
        if let (Some(t), Some(u), Some(c)) = (t, u, c) {
            let wake = futures::stream::select(
                default_wakeups(
                    ctx,
                    &scope,
                    ctx.default_changed.subscribe(),
                    token::tokens_of_users,
                ),
                service_signals::user_wakeups(
                    ctx,
                    &scope,
                    ctx.service_changed.subscribe(),
                    token::tokens_of_users,
                ),
            );
            controllers
                .push(token::controller(ctx.clone(), scope, t, u, c, wake, stop.clone()).boxed());
        }
    }
    for (i, stream) in subs.services.into_iter().enumerate() {
        let reader = services.namespaced.store_for_scope(scopes[i].as_deref());
        let (Some(stream), Some(reader)) = (stream, reader) else {
            continue;
        };
        let scope = scopes[i].clone();
        let changed = futures::stream::select(
            service_signals::service_wakeups(
                ctx,
                ctx.service_changed.subscribe(),
                namespaced_service_ref,
            ),
            service_signals::service_wakeups(
                ctx,
                ctx.service_usage.subscribe(),
                namespaced_service_ref,
            ),
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
    // By default only a cluster-wide install writes the cluster services' status.
    let manage = ctx.config.manage_cluster_services;
    if let Some(stream) = subs.cluster_services.filter(|_| manage) {
        let changed = futures::stream::select(
            service_signals::service_wakeups(
                ctx,
                ctx.service_changed.subscribe(),
                cluster_service_ref,
            ),
            service_signals::service_wakeups(
                ctx,
                ctx.service_usage.subscribe(),
                cluster_service_ref,
            ),
        );
        controllers.push(
            service::controller(
                ctx.clone(),
                services.cluster.clone(),
                stream,
                changed,
                "cluster_service_changes",
                stop.clone(),
            )
            .boxed(),
        );
    }
    controllers
}
