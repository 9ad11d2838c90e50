//! ACS clients shared by every reconcile, and their request budgets. ACS throttles per
//! resource, so the budget is kept per endpoint: one tenant's busy resource cannot delay
//! another's, and both keys (and every Entra principal) of one resource draw on the one
//! budget, as the service counts them. Clients are kept per endpoint and credentials, so two
//! keys in use at once (a rotation in progress, or users on the primary and the secondary
//! key) or a few principals never rebuild each other's client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::acs::{
    AcsClient, AcsError, ClientOptions, CredentialFailure, MutationGate, RateLimiter,
};
use crate::credentials::{Auth, Credentials};
use crate::entra::EntraTokens;
use crate::leader::LeaderGate;

/// Clients kept per endpoint: the primary and the secondary key, and a few Entra principals
/// (one per ServiceAccount in use). One more replaces the least recently used one.
const KEYS_PER_ENDPOINT: usize = 8;

/// Endpoints kept (their budgets and clients). Credentials may name any allowed host, and
/// `*.communication.azure.com` has no end of names: one more endpoint than this drops the
/// least recently used one (a later use builds its client and budget again).
const MAX_ENDPOINTS: usize = 256;

/// Requests per second and burst of each endpoint's budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub requests_per_second: f64,
    pub burst: u32,
}

/// Caches clients by endpoint and key fingerprint, with one rate limiter per endpoint.
#[derive(Clone)]
pub struct AcsPool {
    options: ClientOptions,
    budget: Option<Budget>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Normalised endpoint → its budget, created on first use and kept with the endpoint
    /// (see `MAX_ENDPOINTS`), a handful of numbers each.
    limiters: HashMap<String, (RateLimiter, Budget)>,
    /// Normalised endpoint → (key fingerprint, client, last use), at most `KEYS_PER_ENDPOINT`.
    clients: HashMap<String, Vec<Cached>>,
    /// Normalised endpoint → its last use; at most `MAX_ENDPOINTS`.
    endpoints: HashMap<String, u64>,
    /// Increases at every lookup; orders the last uses.
    tick: u64,
    /// Clients built so far.
    built: u64,
}

struct Cached {
    fingerprint: String,
    client: AcsClient,
    used: u64,
}

impl AcsPool {
    /// `options` carries the trust, timeouts, metrics observer and mutation gate of every
    /// client; `budget` (None: unlimited) is applied per endpoint.
    pub fn new(options: ClientOptions, budget: Option<Budget>) -> Self {
        Self {
            options,
            budget,
            state: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below leaves the maps consistent before it can panic (it cannot), so a
        // poisoned lock still holds usable data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The client for these credentials, created on first use. Entra credentials need the
    /// token cache.
    pub fn client(
        &self,
        creds: &Credentials,
        entra: Option<&EntraTokens>,
    ) -> Result<AcsClient, AcsError> {
        // A service's own budget is kept apart, per service: every object using that service,
        // and only those, draws on it; never above the operator's own per-endpoint budget.
        let (endpoint, budget) = match &creds.budget {
            Some(b) => {
                let wanted = f64::from(b.requests_per_second.max(1));
                let rps = self
                    .budget
                    .map_or(wanted, |o| o.requests_per_second.min(wanted));
                (
                    format!("{} service={}", endpoint_key(&creds.endpoint), b.service),
                    Some(Budget {
                        requests_per_second: rps,
                        burst: b.requests_per_second.max(1),
                    }),
                )
            }
            None => (endpoint_key(&creds.endpoint), self.budget),
        };
        let fingerprint = creds.client_key();
        let mut state = self.state();
        state.tick += 1;
        let tick = state.tick;
        if state.endpoints.insert(endpoint.clone(), tick).is_none() {
            state.evict_beyond(MAX_ENDPOINTS);
        }
        // A service whose budget changed gets a new limiter, and new clients holding it.
        if state
            .limiters
            .get(&endpoint)
            .is_some_and(|(_, b)| Some(*b) != budget)
        {
            state.limiters.remove(&endpoint);
            state.clients.remove(&endpoint);
        }
        if let Some(cached) = state
            .clients
            .get_mut(&endpoint)
            .and_then(|keys| keys.iter_mut().find(|c| c.fingerprint == fingerprint))
        {
            cached.used = tick;
            return Ok(cached.client.clone());
        }
        let limiter = match state.limiters.get(&endpoint) {
            Some((l, _)) => Some(l.clone()),
            None => {
                let created = budget.and_then(|b| {
                    RateLimiter::new(b.requests_per_second, b.burst)
                        .map_err(
                            |e| tracing::warn!(error = %e, "invalid acs request budget; unlimited"),
                        )
                        .ok()
                        .map(|l| (l, b))
                });
                if let Some(l) = &created {
                    state.limiters.insert(endpoint.clone(), l.clone());
                }
                created.map(|(l, _)| l)
            }
        };
        let options = ClientOptions {
            rate_limiter: limiter,
            ..self.options.clone()
        };
        let client = match (&creds.auth, entra) {
            (Auth::Key(conn), _) => AcsClient::new(conn.as_ref().clone(), options)?,
            (Auth::Entra(principal), Some(tokens)) => {
                AcsClient::with_bearer(&creds.endpoint, tokens.source(principal.clone()), options)?
            }
            (Auth::Entra(_), None) => {
                return Err(AcsError::Credential {
                    failure: CredentialFailure::Missing,
                    message: "Microsoft Entra ID credentials are not enabled in this operator"
                        .into(),
                })
            }
        };
        state.built += 1;
        let keys = state.clients.entry(endpoint).or_default();
        if keys.len() >= KEYS_PER_ENDPOINT {
            if let Some(oldest) = keys
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.used)
                .map(|(i, _)| i)
            {
                keys.swap_remove(oldest);
            }
        }
        keys.push(Cached {
            fingerprint,
            client: client.clone(),
            used: tick,
        });
        Ok(client)
    }
}

impl State {
    /// Drops the least recently used endpoints until at most `max` are kept.
    fn evict_beyond(&mut self, max: usize) {
        while self.endpoints.len() > max {
            let Some(oldest) = self
                .endpoints
                .iter()
                .min_by_key(|(_, used)| **used)
                .map(|(e, _)| e.clone())
            else {
                return;
            };
            self.endpoints.remove(&oldest);
            self.limiters.remove(&oldest);
            self.clients.remove(&oldest);
        }
    }
}

impl AcsPool {
    /// Endpoints and clients kept.
    pub fn sizes(&self) -> (usize, usize) {
        let state = self.state();
        (
            state.endpoints.len(),
            state.clients.values().map(Vec::len).sum(),
        )
    }
}

/// The endpoint as the budget is keyed: scheme and host lowercased, a default port and any
/// trailing `/` dropped, so spellings of one resource share one budget.
fn endpoint_key(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(url) => {
            let host = url.host_str().unwrap_or_default();
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            let path = url.path().trim_end_matches('/');
            format!("{}://{host}{port}{path}", url.scheme())
        }
        Err(_) => endpoint.trim_end_matches('/').to_ascii_lowercase(),
    }
}

/// The operator's leader gate decides whether the ACS client may send a mutation.
impl MutationGate for LeaderGate {
    fn admit(&self, _operation: &'static str) -> bool {
        LeaderGate::admit(self, "acs")
    }
}

/// Client options of the operator: its CA, timeouts, metrics, the write fence and whether
/// plain-HTTP endpoints are allowed. The budget is per endpoint (see [`budget`]).
pub fn client_options(
    config: &crate::config::Config,
    metrics: Arc<crate::metrics::Metrics>,
    gate: LeaderGate,
) -> ClientOptions {
    ClientOptions {
        api_mode: config.api_mode,
        ca_pem: config.acs_ca_pem.clone(),
        request_timeout: config.acs_request_timeout,
        observer: Some(metrics),
        mutation_gate: Some(Arc::new(gate)),
        allow_insecure_http: config.allow_insecure_http,
        ..ClientOptions::default()
    }
}

/// The request budget of each ACS endpoint, from the flags.
pub fn budget(config: &crate::config::Config) -> Option<Budget> {
    config.acs_requests_per_second.map(|rps| Budget {
        requests_per_second: rps,
        burst: config.acs_request_burst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_1: &str = "a2V5LW9uZS1rZXktb25lLWtleS1vbmU=";
    const KEY_2: &str = "a2V5LXR3by1rZXktdHdvLWtleS10d28=";

    fn conn(endpoint: &str, key: &str) -> Credentials {
        let c = std::sync::Arc::new(
            crate::acs::ConnectionString::parse(&format!("endpoint={endpoint};accesskey={key}"))
                .unwrap(),
        );
        Credentials {
            endpoint: c.endpoint.clone(),
            seal: crate::secret::Seal::access_key(&c.access_key),
            auth: Auth::Key(c),
            source: crate::credentials::CredentialsSource::OperatorIdentity,
            operator_default: false,
            budget: None,
        }
    }

    fn entra(endpoint: &str, client: &str) -> Credentials {
        let p = crate::entra::Principal::new(
            "https://login.example",
            "t",
            client,
            crate::entra::AssertionSource::File("/f".into()),
        );
        Credentials {
            endpoint: endpoint.into(),
            seal: crate::secret::Seal::new(
                crate::acs::AccessKey::from_bytes(vec![1; 64]),
                p.fingerprint(endpoint),
            ),
            auth: Auth::Entra(p),
            source: crate::credentials::CredentialsSource::OperatorIdentity,
            operator_default: false,
            budget: None,
        }
    }

    fn pool() -> AcsPool {
        AcsPool::new(
            ClientOptions::default(),
            Some(Budget {
                requests_per_second: 1.0,
                burst: 1,
            }),
        )
    }

    fn limiter(pool: &AcsPool, endpoint: &str) -> RateLimiter {
        pool.state().limiters[&endpoint_key(endpoint)].0.clone()
    }

    fn fingerprints(pool: &AcsPool, endpoint: &str) -> Vec<String> {
        let mut f: Vec<String> = pool.state().clients[&endpoint_key(endpoint)]
            .iter()
            .map(|c| c.fingerprint.clone())
            .collect();
        f.sort();
        f
    }

    #[test]
    fn spellings_of_one_endpoint_share_one_key() {
        for e in [
            "https://res.communication.azure.com",
            "https://Res.Communication.Azure.com/",
            "https://res.communication.azure.com:443",
            "HTTPS://res.communication.azure.com//",
        ] {
            assert_eq!(
                endpoint_key(e),
                "https://res.communication.azure.com",
                "{e}"
            );
        }
        assert_eq!(
            endpoint_key("https://127.0.0.1:8443/"),
            "https://127.0.0.1:8443"
        );
        assert_ne!(
            endpoint_key("http://127.0.0.1:8443"),
            endpoint_key("https://127.0.0.1:8443")
        );
    }

    #[tokio::test]
    async fn two_keys_of_one_endpoint_share_one_budget_and_are_both_kept() {
        let pool = pool();
        let e = "https://res.communication.azure.com";
        pool.client(&conn(e, KEY_1), None).unwrap();
        let budget = limiter(&pool, e);
        pool.client(&conn("https://RES.communication.azure.com/", KEY_2), None)
            .unwrap();
        assert!(
            limiter(&pool, e).shares_bucket(&budget),
            "the second key got its own budget"
        );
        assert_eq!(fingerprints(&pool, e).len(), 2, "a key evicted the other");
        // Alternating keys finds both cached: no client is built again.
        for key in [KEY_1, KEY_2, KEY_1, KEY_2] {
            pool.client(&conn(e, key), None).unwrap();
        }
        assert_eq!(pool.state().built, 2);
        assert_eq!(pool.state().limiters.len(), 1);
    }

    #[tokio::test]
    async fn another_endpoint_has_its_own_budget() {
        let pool = pool();
        pool.client(&conn("https://a.communication.azure.com", KEY_1), None)
            .unwrap();
        pool.client(&conn("https://b.communication.azure.com", KEY_1), None)
            .unwrap();
        let a = limiter(&pool, "https://a.communication.azure.com");
        let b = limiter(&pool, "https://b.communication.azure.com");
        assert!(!a.shares_bucket(&b));
        // Exhausting a's budget (burst 1) leaves b's untouched.
        tokio::time::timeout(std::time::Duration::from_millis(100), async {
            a.acquire().await;
            b.acquire().await;
        })
        .await
        .expect("b waited for a's budget");
    }

    #[tokio::test]
    async fn one_more_credential_replaces_the_least_recently_used_one() {
        let pool = pool();
        let e = "https://res.communication.azure.com";
        let keys: Vec<String> = (1..=KEYS_PER_ENDPOINT as u8 + 1)
            .map(|i| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode([i; 32])
            })
            .collect();
        for k in &keys[..KEYS_PER_ENDPOINT] {
            pool.client(&conn(e, k), None).unwrap();
        }
        pool.client(&conn(e, &keys[0]), None).unwrap(); // keys[1] is now the least recently used
        pool.client(&conn(e, &keys[KEYS_PER_ENDPOINT]), None)
            .unwrap();
        let fp = |k: &str| conn(e, k).fingerprint().to_string();
        let have = fingerprints(&pool, e);
        assert_eq!(have.len(), KEYS_PER_ENDPOINT);
        assert!(
            !have.contains(&fp(&keys[1])),
            "the least recently used was kept"
        );
        assert!(have.contains(&fp(&keys[0])) && have.contains(&fp(&keys[KEYS_PER_ENDPOINT])));
    }

    #[tokio::test]
    async fn entra_principals_share_the_endpoint_budget_and_need_the_token_cache() {
        let pool = pool();
        let e = "https://res.communication.azure.com";
        pool.client(&conn(e, KEY_1), None).unwrap();
        let err = pool.client(&entra(e, "c1"), None).unwrap_err();
        assert_eq!(err.category(), "credentials");
        assert!(!err.is_transient());
        assert_eq!(pool.state().limiters.len(), 1);
    }

    #[tokio::test]
    async fn without_a_budget_no_limiter_is_created() {
        let pool = AcsPool::new(ClientOptions::default(), None);
        pool.client(&conn("https://a.communication.azure.com", KEY_1), None)
            .unwrap();
        assert!(pool.state().limiters.is_empty());
    }

    #[tokio::test]
    async fn endpoints_beyond_the_bound_drop_the_least_recently_used() {
        let pool = pool();
        let name = |i: usize| format!("https://r{i}.communication.azure.com");
        for i in 0..MAX_ENDPOINTS {
            pool.client(&conn(&name(i), KEY_1), None).unwrap();
        }
        // r0 used again: r1 is now the least recently used.
        pool.client(&conn(&name(0), KEY_1), None).unwrap();
        for i in MAX_ENDPOINTS..MAX_ENDPOINTS + 10 {
            pool.client(&conn(&name(i), KEY_1), None).unwrap();
        }
        assert_eq!(pool.sizes(), (MAX_ENDPOINTS, MAX_ENDPOINTS));
        let state = pool.state();
        assert_eq!(state.limiters.len(), MAX_ENDPOINTS);
        assert!(state.clients.contains_key(&endpoint_key(&name(0))));
        assert!(!state.clients.contains_key(&endpoint_key(&name(1))));
        assert!(!state.limiters.contains_key(&endpoint_key(&name(1))));
        assert!(state
            .clients
            .contains_key(&endpoint_key(&name(MAX_ENDPOINTS + 9))));
    }
}
