//! What every reconcile shares: the clients, caches, per-object state and the clock.

use std::sync::Arc;

use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource};
use tracing::warn;

use super::acs_pool::AcsPool;
use super::failure_backoff::FailureBackoff;
use super::written::Written;
use super::{events, own_writes, triggers, unscheduled, watch_health};
use crate::api::{CommunicationToken, CommunicationUser, ServiceKey};
use crate::config::Config;
use crate::credentials::{Credentials, CredentialsError, CredentialsResolver};
use crate::metrics::Metrics;
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
    pub failures: FailureBackoff,
    /// What this process last wrote to each token Secret (saves re-reading it).
    pub own_writes: own_writes::OwnWrites,
    /// The cached tokens by user and by Secret name (`tokens_of_user`, `claimants`).
    pub token_index: Arc<crate::token_index::TokenIndex>,
    /// The token statuses this process wrote, until the cache shows them.
    pub token_status: Arc<Written<crate::api::CommunicationTokenStatus>>,
    /// Bounds unscheduled issuances and repairs per object.
    pub unscheduled: unscheduled::UnscheduledLimit,
    /// Signalled when the operator-wide default credentials change (seen by a watch, or by
    /// polling when no watch covers them): every controller wakes the objects using them.
    pub default_changed: tokio::sync::broadcast::Sender<()>,
    /// Announces a service whose spec or Secret changed (see [`service_signals`]).
    pub service_changed: tokio::sync::broadcast::Sender<ServiceKey>,
    /// Announces a service whose users or tokens were created or deleted (its counts).
    pub service_usage: tokio::sync::broadcast::Sender<ServiceKey>,
    /// User statuses this process wrote with a new identity, by UID, until the cache shows
    /// them: a reconcile that reads a cache not yet updated by its own write must not create
    /// a second identity (GA creation is not idempotent).
    /// (With the user's UID: a user of the same name created since must not inherit it.)
    pub recent_identities: Arc<Written<(String, crate::api::CommunicationUserStatus)>>,
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

    /// The credentials a user's spec names, for both reconcilers. A transient failure (the
    /// apiserver, an Entra outage) is the outer error, retried by the caller's back-off. A
    /// refusal (missing, malformed, not allowed here) is the inner one: retrying cannot fix
    /// it, so the caller reports it as not ready with the error's `reason`, `message` and
    /// `requeue`; a change to what it names wakes the object.
    pub async fn credentials_for(
        &self,
        ns: &str,
        spec: &crate::api::CommunicationUserSpec,
    ) -> Result<Result<Credentials, CredentialsError>, CredentialsError> {
        match self.credentials.resolve_user(ns, spec).await {
            Ok(c) => Ok(Ok(c)),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => Ok(Err(e)),
        }
    }

    /// The ACS client for `conn`, for the object with failure key `key`: an object that is
    /// already failing backs off between its attempts itself, so its client makes no retries
    /// of its own and each attempt is one request.
    pub fn acs_client(
        &self,
        creds: &Credentials,
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

    /// The event of a not-ready object, published only when its Ready reason is new (the one
    /// before was `previous`): a condition already said costs no event per wake-up.
    pub async fn not_ready_event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        previous: Option<&str>,
        (reason, warning): (&str, bool),
        message: String,
    ) {
        if previous != Some(reason) {
            let type_ = if warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            self.event(obj, type_, reason, "Reconcile", message).await;
        }
    }
}
