//! Test fixtures: a Context whose Kubernetes client talks to a scripted, mocked apiserver
//! (`tower_test`, as in kube-rs/controller-rs `fixtures.rs`), for the error branches of the act
//! steps that the end-to-end tests cannot reach cheaply. Never the only proof of a behaviour.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::Client;
use serde_json::Value;

use super::{acs_pool::AcsPool, failure_backoff::FailureBackoff, Context};
use crate::config::{Config, Guards};
use crate::credentials::CredentialsResolver;
use crate::metrics::Metrics;
use crate::stores::Stores;

/// The scripted side of the mocked apiserver.
pub struct ApiServer(tower_test::mock::Handle<Request<Body>, Response<Body>>);

impl Context {
    /// A Context on a mocked apiserver, with empty caches and default guards.
    pub fn test() -> (Arc<Context>, ApiServer) {
        Self::test_with_users(Vec::new())
    }

    /// [`Context::test`] with `users` in the users' cache.
    pub fn test_with_users(
        users_in: Vec<crate::api::CommunicationUser>,
    ) -> (Arc<Context>, ApiServer) {
        Self::test_with(users_in, crate::acs::ClientOptions::default())
    }

    /// [`Context::test_with_users`] whose ACS clients trust `ca_pem` only (an emulator's CA):
    /// the apiserver is scripted, ACS is real (the emulator, in process).
    pub fn test_with_acs(
        users_in: Vec<crate::api::CommunicationUser>,
        ca_pem: &str,
    ) -> (Arc<Context>, ApiServer) {
        let options = crate::acs::ClientOptions {
            ca_pem: Some(ca_pem.as_bytes().to_vec()),
            trust_web_roots: false,
            ..crate::acs::ClientOptions::default()
        };
        Self::test_with(users_in, options)
    }

    fn test_with(
        users_in: Vec<crate::api::CommunicationUser>,
        acs_options: crate::acs::ClientOptions,
    ) -> (Arc<Context>, ApiServer) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let config = Arc::new(Config {
            kubeconfig: None,
            context: None,
            watch_namespaces: Vec::new(),
            concurrency: 1,
            acs_requests_per_second: None,
            acs_request_burst: 1,
            api_mode: crate::acs::ApiMode::Ga,
            acs_ca_pem: None,
            allow_insecure_http: false,
            acs_request_timeout: Duration::from_secs(5),
            allowed_endpoint_hosts: Default::default(),
            default_credentials: None,
            default_workload_identity: None,
            entra: crate::config::EntraConfig {
                authority_host: crate::entra::DEFAULT_AUTHORITY_HOST.into(),
                default_tenant_id: None,
                own: None,
                sealing_key_secret: ("default".into(), "sealing".into()),
            },
            rollout_restart: false,
            manage_cluster_services: true,
            restart_coalesce_window: Duration::from_secs(10),
            propagation_allowance: Duration::from_secs(120),
            metrics_addr: ([127, 0, 0, 1], 0).into(),
            leader_election: None,
            identity: "test".into(),
            resync_period: Duration::from_secs(3600),
            operator_namespace: "operator".into(),
            guards: Guards::default(),
        });
        let (users, mut writer) = reflector::store();
        for u in users_in {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(u));
        }
        let (tokens, _) = reflector::store();
        let (creds, _) = reflector::store();
        let reporter = Reporter {
            controller: crate::api::MANAGED_BY.to_string(),
            instance: Some("test".into()),
        };
        let metrics = Arc::new(Metrics::new());
        let ctx = Context {
            client: client.clone(),
            config,
            metrics: metrics.clone(),
            recorder: super::events::Events::new(client.clone(), reporter),
            acs: AcsPool::new(acs_options, None),
            credentials: CredentialsResolver::new(
                client.clone(),
                Stores::new(vec![(None, creds)]),
                None,
                None,
            ),
            users: Stores::new(vec![(None, users)]),
            tokens: Stores::new(vec![(None, tokens)]),
            failures: FailureBackoff::default(),
            own_writes: Default::default(),
            token_index: Default::default(),
            token_status: Default::default(),
            unscheduled: Default::default(),
            default_changed: tokio::sync::broadcast::channel(4).0,
            service_changed: tokio::sync::broadcast::channel(4).0,
            service_usage: tokio::sync::broadcast::channel(4).0,
            recent_identities: Default::default(),
            watches: super::watch_health::WatchHealth::new(Default::default(), metrics),
            change_filters: Default::default(),
            clock: Arc::new(jiff::Timestamp::now),
        };
        (Arc::new(ctx), ApiServer(handle))
    }
}

impl ApiServer {
    /// Expects the next request to be `method` on a path ending in `path_suffix`, answers it
    /// with `status` and `body`, and returns the request's body.
    pub async fn expect(
        &mut self,
        method: &str,
        path_suffix: &str,
        status: u16,
        body: Value,
    ) -> Value {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no {method} …{path_suffix} request came"))
            .unwrap_or_else(|| panic!("the client went away before {method} …{path_suffix}"));
        assert_eq!(request.method().as_str(), method, "{}", request.uri());
        assert!(
            request.uri().path().ends_with(path_suffix),
            "expected …{path_suffix}, got {}",
            request.uri()
        );
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_default();
        let sent = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
            .unwrap_or_else(|e| panic!("{e}"));
        send.send_response(response);
        sent
    }

    /// Asserts that no further request comes within a short while.
    pub async fn expect_nothing_more(&mut self) {
        if let Ok(Some((r, _))) =
            tokio::time::timeout(Duration::from_millis(300), self.0.next_request()).await
        {
            panic!("unexpected request {} {}", r.method(), r.uri());
        }
    }
}

/// A `metav1.Status` failure body.
pub fn status(code: u16, reason: &str) -> Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("mocked {reason}"), "reason": reason, "code": code,
    })
}

/// A CommunicationToken `name` of user `u` in namespace `ns`: one voip scope, 60 minutes,
/// generation 1, revoked on deletion; the builder the reconcilers' unit tests start from.
pub fn token(ns: &str, name: &str) -> crate::api::CommunicationToken {
    use crate::api::{CommunicationToken, CommunicationTokenSpec, UserRef};
    let mut t = CommunicationToken::new(
        name,
        CommunicationTokenSpec {
            user_ref: UserRef { name: "u".into() },
            scopes: vec![crate::acs::Scope::Voip],
            expires_in_minutes: 60,
            renew_before: None,
            renew_before_percentage: None,
            secret_name: None,
            secret_template: None,
            suspend: false,
            revoke_on_delete: true,
            rollout_restart_targets: Vec::new(),
        },
    );
    t.metadata.namespace = Some(ns.into());
    t.metadata.uid = Some(format!("uid-{name}"));
    t.metadata.generation = Some(1);
    t
}

/// A CommunicationUser `name` in namespace `ns`, default spec, no status.
pub fn user(ns: &str, name: &str) -> crate::api::CommunicationUser {
    let mut u = crate::api::CommunicationUser::new(name, Default::default());
    u.metadata.namespace = Some(ns.into());
    u.metadata.uid = Some(format!("uid-{name}"));
    u.metadata.generation = Some(1);
    u
}
