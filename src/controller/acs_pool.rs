//! One ACS client per set of credentials, shared by every reconcile, all behind one global
//! request budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::acs::{AcsClient, AcsError, ClientOptions, ConnectionString, MutationGate};
use crate::leader::LeaderGate;
use crate::secret::key_fingerprint;

/// Caches clients by endpoint and key fingerprint.
#[derive(Clone)]
pub struct AcsPool {
    options: ClientOptions,
    clients: Arc<Mutex<HashMap<(String, String), AcsClient>>>,
}

impl AcsPool {
    /// `options` carries the shared rate limiter and metrics observer.
    pub fn new(options: ClientOptions) -> Self {
        Self {
            options,
            clients: Arc::default(),
        }
    }

    /// The client for these credentials, created on first use.
    pub fn client(&self, conn: &ConnectionString) -> Result<AcsClient, AcsError> {
        let key = (conn.endpoint.clone(), key_fingerprint(&conn.access_key));
        if let Some(c) = self.clients.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let client = AcsClient::new(conn.clone(), self.options.clone())?;
        if let Ok(mut m) = self.clients.lock() {
            // Old keys are dropped when a key rotates, so the map does not grow without bound.
            m.retain(|(endpoint, _), _| endpoint != &key.0);
            m.insert(key, client.clone());
        }
        Ok(client)
    }
}

/// The operator's leader gate decides whether the ACS client may send a mutation.
impl MutationGate for LeaderGate {
    fn admit(&self, _operation: &'static str) -> bool {
        LeaderGate::admit(self, "acs")
    }
}

/// Client options of the operator: its CA, timeouts, the global request budget, metrics and
/// the write fence.
pub fn client_options(
    config: &crate::config::Config,
    metrics: Arc<crate::metrics::Metrics>,
    gate: LeaderGate,
) -> ClientOptions {
    let rate_limiter = config
        .acs_requests_per_second
        .and_then(|rps| crate::acs::RateLimiter::new(rps, config.acs_request_burst).ok());
    ClientOptions {
        api_mode: config.api_mode,
        ca_pem: config.acs_ca_pem.clone(),
        request_timeout: config.acs_request_timeout,
        rate_limiter,
        observer: Some(metrics),
        mutation_gate: Some(Arc::new(gate)),
        ..ClientOptions::default()
    }
}
