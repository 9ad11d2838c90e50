//! The shared caches: one reflector per kind and watched scope, their event hooks, and the
//! subscriptions the controllers take before the watches start. Caches run on every replica
//! (read-only), so a standby is ready to take over at once.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::ReflectHandle;
use kube::runtime::watcher;
use kube::Client;

use super::shared_watch::{self, Drivers, Hook, Shared};
use super::wakeups::{cluster_service_key, namespaced_service_key};
use super::written::Written;
use super::{service_signals, watch_health};
use crate::api::{
    self, ClusterCommunicationService, CommunicationService, CommunicationToken,
    CommunicationTokenStatus, CommunicationUser, CommunicationUserStatus, ServiceKey,
};
use crate::config::Config;
use crate::credentials::ServiceStores;
use crate::stores::Stores;
use crate::token_index::TokenIndex;

type Sub<K> = Option<ReflectHandle<K>>;
type SecretMeta = PartialObjectMeta<Secret>;

/// The controllers' streams, per watched scope, taken before the watches start.
pub(super) struct Subscriptions {
    /// The user controller's: users, tokens, credentials Secrets.
    pub users: Vec<(
        Sub<CommunicationUser>,
        Sub<CommunicationToken>,
        Sub<SecretMeta>,
    )>,
    /// The token controller's: tokens, users, credentials Secrets.
    pub tokens: Vec<(
        Sub<CommunicationToken>,
        Sub<CommunicationUser>,
        Sub<SecretMeta>,
    )>,
    pub services: Vec<Sub<CommunicationService>>,
    pub cluster_services: Sub<ClusterCommunicationService>,
}

/// The stores, what the watches keep in step with them, and the watch tasks.
pub(super) struct Caches {
    pub users: Stores<CommunicationUser>,
    pub tokens: Stores<CommunicationToken>,
    pub creds: Stores<SecretMeta>,
    pub services: ServiceStores,
    pub token_index: Arc<TokenIndex>,
    pub token_status: Arc<Written<CommunicationTokenStatus>>,
    /// User statuses written with a new identity (see [`Written`]).
    pub recent_identities: Arc<Written<(String, CommunicationUserStatus)>>,
    pub drivers: Drivers,
    pub subscriptions: Subscriptions,
}

impl Subscriptions {
    /// One of each stream per controller and scope.
    fn take(
        users: &Shared<CommunicationUser>,
        tokens: &Shared<CommunicationToken>,
        creds: &Shared<SecretMeta>,
        services: &Shared<CommunicationService>,
        cluster: &kube::runtime::reflector::store::Writer<ClusterCommunicationService>,
    ) -> Self {
        let mut subscriptions = Subscriptions {
            users: Vec::new(),
            tokens: Vec::new(),
            services: services.writers.iter().map(|w| w.subscribe()).collect(),
            cluster_services: cluster.subscribe(),
        };
        for ((u, t), c) in users
            .writers
            .iter()
            .zip(&tokens.writers)
            .zip(&creds.writers)
        {
            subscriptions
                .users
                .push((u.subscribe(), t.subscribe(), c.subscribe()));
            subscriptions
                .tokens
                .push((t.subscribe(), u.subscribe(), c.subscribe()));
        }
        subscriptions
    }
}

impl Caches {
    /// Starts every watch; service changes (their spec, their Secret) are announced on
    /// `service_changed`.
    pub(super) fn start(
        client: &Client,
        config: &Config,
        scopes: &[Option<String>],
        watches: &watch_health::WatchHealth,
        (service_changed, service_usage): (
            &tokio::sync::broadcast::Sender<ServiceKey>,
            &tokio::sync::broadcast::Sender<ServiceKey>,
        ),
    ) -> Self {
        let mut users = Shared::<CommunicationUser>::new(scopes, 1024);
        let mut tokens = Shared::<CommunicationToken>::new(scopes, 1024);
        let mut creds = Shared::<SecretMeta>::new(scopes, 256);
        let mut services = Shared::<CommunicationService>::new(scopes, 64);
        let (cluster_services, cluster_writer) =
            kube::runtime::reflector::store_shared::<ClusterCommunicationService>(64);

        // Subscriptions must be taken before the drivers start.
        let subscriptions =
            Subscriptions::take(&users, &tokens, &creds, &services, &cluster_writer);

        let all = watcher::Config::default();
        // Every Secret that is not a token Secret may hold credentials; metadata only, so no
        // Secret data is cached.
        let not_ours = watcher::Config::default().labels(&format!(
            "{}!={}",
            api::MANAGED_BY_LABEL,
            api::MANAGED_BY
        ));
        let token_index = Arc::new(TokenIndex::default());
        let token_status: Arc<Written<CommunicationTokenStatus>> = Arc::default();
        let recent_identities: Arc<Written<(String, CommunicationUserStatus)>> = Arc::default();
        let mut drivers = Drivers(Vec::new(), watches.clone());
        drivers.0.extend(users.drive(
            client,
            scopes,
            &all,
            (watches, "CommunicationUser"),
            // After the store: a user's new identity is remembered until the cache shows it.
            (Hook::AfterStore, |scope: Option<&str>| {
                user_hook(scope, recent_identities.clone(), service_usage.clone())
            }),
        ));
        let user_stores = Stores::new(users.stores.clone());
        // Every event of the tokens' watch keeps the index and the status memo in step
        // (deletions included, which the controllers' subscriber streams do not carry; and, at
        // the end of a relist, the deletions the watch missed while it was down).
        drivers.0.extend(tokens.drive(
            client,
            scopes,
            &all,
            (watches, "CommunicationToken"),
            (Hook::BeforeStore, |scope: Option<&str>| {
                token_hook(
                    scope,
                    (token_index.clone(), token_status.clone()),
                    (user_stores.clone(), service_usage.clone()),
                )
            }),
        ));
        let service_stores = ServiceStores {
            namespaced: Stores::new(services.stores.clone()),
            cluster: cluster_services,
        };
        drivers.0.extend(creds.drive(
            client,
            scopes,
            &not_ours,
            (watches, "Secret/credentials"),
            // After the store: a user woken by a changed Secret must see its new version.
            (Hook::AfterStore, |_: Option<&str>| {
                service_signals::on_secret_event(
                    service_changed.clone(),
                    service_stores.clone(),
                    config.operator_namespace.clone(),
                )
            }),
        ));
        drivers.0.extend(services.drive(
            client,
            scopes,
            &all,
            (watches, "CommunicationService"),
            (Hook::AfterStore, |_: Option<&str>| {
                service_signals::on_service_event(service_changed.clone(), namespaced_service_key)
            }),
        ));
        drivers.0.push(shared_watch::drive_cluster(
            client,
            cluster_writer,
            (watches, "ClusterCommunicationService"),
            service_signals::on_service_event(service_changed.clone(), cluster_service_key),
        ));
        Self {
            users: user_stores,
            tokens: Stores::new(tokens.stores),
            creds: Stores::new(creds.stores),
            services: service_stores,
            token_index,
            token_status,
            recent_identities,
            drivers,
            subscriptions,
        }
    }

    /// Resolves with whether every cache got its initial list (false: one closed first). The
    /// credentials cache counts too: a reconcile before it is filled would find no
    /// credentials, mark every object NotReady and emit a Warning each (seen as writes after
    /// every restart in docs/benchmarks.md).
    pub(super) fn ready(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        let (users, tokens, creds, services) = (
            self.users.clone(),
            self.tokens.clone(),
            self.creds.clone(),
            self.services.clone(),
        );
        async move {
            users.wait_until_ready().await
                && tokens.wait_until_ready().await
                && creds.wait_until_ready().await
                && services.namespaced.wait_until_ready().await
                && services.cluster.wait_until_ready().await.is_ok()
        }
    }
}

/// Every event of the tokens' watch keeps the index and the status memory in step (deletions
/// included, which the controllers' subscriber streams do not carry; and, at the end of a
/// relist, the deletions the watch missed while it was down), and counts a service's tokens.
fn token_hook(
    scope: Option<&str>,
    (ix, memo): (Arc<TokenIndex>, Arc<Written<CommunicationTokenStatus>>),
    (users, usage): (
        Stores<CommunicationUser>,
        tokio::sync::broadcast::Sender<ServiceKey>,
    ),
) -> impl FnMut(&watcher::Event<CommunicationToken>) + Send + 'static {
    let scope = scope.map(str::to_string);
    let mut relist = crate::relist::Relist::default();
    move |e: &watcher::Event<CommunicationToken>| {
        ix.apply(e);
        memo.on_event(e);
        let counted = match e {
            watcher::Event::Apply(t) => service_signals::token_usage(&users, t, false),
            watcher::Event::Delete(t) => service_signals::token_usage(&users, t, true),
            _ => None,
        };
        if let Some(k) = counted {
            let _ = usage.send(k);
        }
        if let Some(listed) = relist.on_event(e) {
            ix.retain_listed(scope.as_deref(), &listed);
            memo.retain_listed(scope.as_deref(), &listed);
        }
    }
}

/// Every event of the users' watch, after the store: a deleted user's new identity is
/// forgotten (a reconcile forgets it once the cache shows it), and a service's users are
/// counted.
fn user_hook(
    scope: Option<&str>,
    memory: Arc<Written<(String, CommunicationUserStatus)>>,
    usage: tokio::sync::broadcast::Sender<ServiceKey>,
) -> impl FnMut(&watcher::Event<CommunicationUser>) + Send + 'static {
    let mut usage = service_signals::on_user_event(usage);
    let scope = scope.map(str::to_string);
    let mut relist = crate::relist::Relist::default();
    move |e: &watcher::Event<CommunicationUser>| {
        if let watcher::Event::Delete(u) = e {
            memory.forget(
                u.metadata.namespace.as_deref().unwrap_or_default(),
                u.metadata.name.as_deref().unwrap_or_default(),
            );
        }
        usage(e);
        if let Some(listed) = relist.on_event(e) {
            memory.retain_listed(scope.as_deref(), &listed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(rv: &str) -> CommunicationUser {
        let mut u = crate::controller::fixtures::user("ns", "u");
        u.metadata.resource_version = Some(rv.into());
        u
    }

    #[test]
    fn the_users_watch_forgets_a_new_identity_only_when_its_user_is_deleted() {
        let memory: Arc<Written<(String, CommunicationUserStatus)>> = Arc::default();
        let usage = tokio::sync::broadcast::channel(4).0;
        let mut hook = user_hook(None, memory.clone(), usage);
        // Whether or not its write's answer was recorded.
        memory.wrote(
            "ns",
            "u",
            Some("50"),
            ("uid-u".into(), CommunicationUserStatus::default()),
        );
        // A relist's objects reach the store only at its end: a version past the write, seen
        // while relisting, must not end the memory.
        hook(&watcher::Event::Init);
        hook(&watcher::Event::InitApply(user("100")));
        hook(&watcher::Event::Apply(user("101")));
        assert!(memory.contains("ns", "u"));
        hook(&watcher::Event::InitDone);
        assert!(memory.contains("ns", "u"), "the relist showed the user");
        hook(&watcher::Event::Delete(user("102")));
        assert!(memory.is_empty());
    }
}
