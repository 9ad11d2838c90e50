//! Microsoft Entra ID tokens for ACS calls, had with workload identity: a Kubernetes
//! ServiceAccount token (audience `api://AzureADTokenExchange`) is the client assertion of an
//! OAuth client-credentials grant at `{authority}/{tenant}/oauth2/v2.0/token`.
//!
//! The assertion comes from a TokenRequest for a ServiceAccount of the resource's namespace
//! (the ServiceAccount opted in), or from the operator's own projected token file (its own
//! workload identity). Access tokens are cached per principal and refreshed before expiry;
//! one exchange at a time per principal, so many objects on one ServiceAccount cost one.
//!
//! The flow is small and written on the operator's HTTP stack rather than with the
//! `azure_identity` crate: it shares the ACS client's CA (the emulator's in tests), timeouts
//! and request metrics, and maps Entra's answers onto conditions.

mod assertion;
mod exchange;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::acs::{AcsError, BearerSource, BearerToken, CredentialFailure, RequestObserver};

/// The scope the ACS SDKs request (the double slash is Azure's).
pub const ACS_SCOPE: &str = "https://communication.azure.com//.default";
/// The audience of a token exchanged with Entra (AKS workload identity's).
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Entra's public cloud authority.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";
/// ServiceAccount annotations of AKS workload identity.
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";

/// Lifetime asked of a TokenRequest (the apiserver's minimum is 10 minutes).
const ASSERTION_SECONDS: i64 = 600;
/// A refused exchange is remembered this long, so the objects sharing a principal share
/// one refusal instead of each asking Entra again.
const FAILURE_MEMO: Duration = Duration::from_secs(10);
/// A failure worth retrying (Entra or the apiserver unavailable) is shared for this long, so
/// the callers queued behind one exchange do not each repeat it.
const TRANSIENT_MEMO: Duration = Duration::from_secs(2);
/// Principals kept beyond those in use: one more than this sweeps the slots nobody holds
/// whose token needs refreshing anyway, then, if still too many, every slot nobody holds
/// (a later use exchanges again). ServiceAccounts are cheap to create; slots must not be.
const MAX_PRINCIPALS: usize = 1024;

/// Where a principal's client assertion comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AssertionSource {
    /// A TokenRequest for this ServiceAccount.
    ServiceAccount { namespace: String, name: String },
    /// A token file the kubelet keeps fresh (`AZURE_FEDERATED_TOKEN_FILE`).
    File(PathBuf),
}

/// An Entra application or managed identity, and how to prove being it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// `https://login.microsoftonline.com` (no trailing `/`).
    pub authority: String,
    pub tenant_id: String,
    pub client_id: String,
    pub assertion: AssertionSource,
}

impl Principal {
    pub fn new(
        authority: &str,
        tenant_id: &str,
        client_id: &str,
        assertion: AssertionSource,
    ) -> Self {
        Self {
            authority: authority.trim_end_matches('/').to_string(),
            tenant_id: tenant_id.to_string(),
            client_id: client_id.to_string(),
            assertion,
        }
    }

    /// `client id X in tenant Y`, for messages.
    pub fn describe(&self) -> String {
        format!("client id {} in tenant {}", self.client_id, self.tenant_id)
    }

    /// Where the assertion comes from, as a key: client ids are not secret, so two
    /// namespaces naming the same one are two principals, and neither may be served by a
    /// client (and bearer token) the other's assertion obtained. Part of the client pool's key
    /// (the token cache keys by the whole principal already).
    pub fn source_key(&self) -> String {
        match &self.assertion {
            AssertionSource::ServiceAccount { namespace, name } => {
                format!("serviceaccount:{namespace}/{name}")
            }
            AssertionSource::File(path) => format!("file:{}", path.display()),
        }
    }

    /// A short fingerprint of who calls which resource: what a token Secret records instead
    /// of an access-key fingerprint, so a change of principal or endpoint re-issues. It leaves
    /// the assertion source out on purpose: it is what existing Secrets record (a new formula
    /// would re-issue every token on Entra credentials at an upgrade), and a namespace cannot
    /// use a Secret it cannot read; the client pool keys by the source as well.
    pub fn fingerprint(&self, endpoint: &str) -> String {
        use base64::Engine;
        let mut h = Sha256::new();
        for part in [
            "acs-identity-operator/entra-fingerprint",
            &endpoint.trim_end_matches('/').to_ascii_lowercase(),
            &self.authority.to_ascii_lowercase(),
            &self.tenant_id.to_ascii_lowercase(),
            &self.client_id.to_ascii_lowercase(),
        ] {
            h.update(part.as_bytes());
            h.update(b"\0");
        }
        format!(
            "entra:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h.finalize()[..12])
        )
    }
}

/// A cached access token, or a remembered refusal.
#[derive(Default)]
struct Slot {
    token: Option<(BearerToken, Instant)>,
    refused: Option<(CredentialFailure, String, Instant)>,
}

impl Slot {
    /// Whether it still saves an exchange at `now`.
    fn useful(&self, now: Instant) -> bool {
        self.token.as_ref().is_some_and(|(_, at)| now < *at)
            || self
                .refused
                .as_ref()
                .is_some_and(|(_, _, at)| now.duration_since(*at) < FAILURE_MEMO)
    }
}

type Slots = HashMap<Principal, Arc<tokio::sync::Mutex<Slot>>>;

/// Keeps `slots` within [`MAX_PRINCIPALS`]: a slot held by a caller (an exchange in progress
/// or waited for) is never dropped.
fn sweep(slots: &mut Slots, now: Instant) {
    if slots.len() <= MAX_PRINCIPALS {
        return;
    }
    slots.retain(|_, s| {
        Arc::strong_count(s) > 1 || s.try_lock().map_or(true, |slot| slot.useful(now))
    });
    if slots.len() > MAX_PRINCIPALS {
        slots.retain(|_, s| Arc::strong_count(s) > 1);
    }
}

/// Entra tokens of every principal in use. Cheap to clone.
#[derive(Clone)]
pub struct EntraTokens {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    kube: kube::Client,
    observer: Option<Arc<dyn RequestObserver>>,
    /// Bounds one TokenRequest plus exchange, so a hung call cannot hold a principal's queue.
    timeout: Duration,
    slots: Mutex<Slots>,
}

/// The HTTP client could not be built (a bad CA bundle).
#[derive(Debug, thiserror::Error)]
#[error("failed to build the Entra HTTP client")]
pub struct BuildError(#[source] reqwest::Error);

impl EntraTokens {
    /// `ca_pem` is trusted besides the public roots (the emulator's CA in tests).
    pub fn new(
        kube: kube::Client,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Result<Self, BuildError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("acs-identity-operator/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout);
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(BuildError)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                http: builder.build().map_err(BuildError)?,
                kube,
                observer,
                timeout,
                slots: Mutex::default(),
            }),
        })
    }

    /// The bearer source of `principal`, for an ACS client.
    pub fn source(&self, principal: Principal) -> Arc<dyn BearerSource> {
        Arc::new(PrincipalSource {
            tokens: self.clone(),
            principal,
        })
    }

    fn slot(&self, p: &Principal) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = slots.get(p) {
            return s.clone();
        }
        sweep(&mut slots, Instant::now());
        slots.entry(p.clone()).or_default().clone()
    }

    /// Principals with a slot.
    pub fn len(&self) -> usize {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A token for `p`, from the cache or a new exchange.
    pub async fn token(&self, p: &Principal) -> Result<BearerToken, AcsError> {
        let slot = self.slot(p);
        // Held across the exchange: the other callers of this principal wait for its result.
        let mut slot = slot.lock().await;
        let now = Instant::now();
        if let Some((token, refresh_at)) = &slot.token {
            if now < *refresh_at {
                return Ok(token.clone());
            }
        }
        if let Some((failure, message, at)) = &slot.refused {
            let memo = if failure.is_transient() {
                TRANSIENT_MEMO
            } else {
                FAILURE_MEMO
            };
            if now.duration_since(*at) < memo {
                return Err(AcsError::Credential {
                    failure: *failure,
                    message: message.clone(),
                });
            }
        }
        let result = match tokio::time::timeout(self.inner.timeout, self.exchange(p)).await {
            Ok(r) => r,
            Err(_) => Err(credential(
                CredentialFailure::Unavailable,
                format!(
                    "no Entra token for {} within {:?} (TokenRequest and exchange)",
                    p.describe(),
                    self.inner.timeout
                ),
            )),
        };
        match result {
            Ok((token, lifetime)) => {
                slot.token = Some((token.clone(), Instant::now() + refresh_after(lifetime)));
                slot.refused = None;
                Ok(token)
            }
            Err(e) => {
                if let AcsError::Credential { failure, message } = &e {
                    slot.refused = Some((*failure, message.clone(), Instant::now()));
                }
                Err(e)
            }
        }
    }

    async fn exchange(&self, p: &Principal) -> Result<(BearerToken, Duration), AcsError> {
        let assertion = assertion::get(&self.inner.kube, p).await?;
        let started = Instant::now();
        let result = exchange::client_assertion(&self.inner.http, p, &assertion).await;
        if let Some(o) = &self.inner.observer {
            let outcome = match &result {
                Ok(_) => "200".to_string(),
                Err(e) => e.outcome.clone(),
            };
            o.observe("entra_token", &outcome, started.elapsed());
        }
        result.map_err(|e| e.error)
    }

    /// Forgets `token` if it is still the cached one of `p` (waiting for an exchange in
    /// progress, so a rejection is never lost).
    fn forget(&self, p: &Principal, token: &BearerToken) {
        let slot = self.slot(p);
        let token = token.clone();
        let forget = async move {
            let mut slot = slot.lock().await;
            if slot.token.as_ref().is_some_and(|(t, _)| *t == token) {
                slot.token = None;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(forget)),
            Err(_) => futures::executor::block_on(forget),
        }
    }
}

/// When to refresh a token that lives `lifetime`: 5 minutes before it expires, or at half
/// its life when it is shorter than 10 minutes.
fn refresh_after(lifetime: Duration) -> Duration {
    let margin = Duration::from_secs(300);
    if lifetime > 2 * margin {
        lifetime - margin
    } else {
        lifetime / 2
    }
}

struct PrincipalSource {
    tokens: EntraTokens,
    principal: Principal,
}

impl BearerSource for PrincipalSource {
    fn bearer(&self) -> BoxFuture<'_, Result<BearerToken, AcsError>> {
        Box::pin(self.tokens.token(&self.principal))
    }

    fn rejected(&self, token: &BearerToken) {
        self.tokens.forget(&self.principal, token);
    }

    fn principal(&self) -> String {
        self.principal.describe()
    }
}

fn credential(failure: CredentialFailure, message: String) -> AcsError {
    AcsError::Credential { failure, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(client: &str) -> Principal {
        Principal::new(
            "https://login.microsoftonline.com/",
            "t",
            client,
            AssertionSource::File("/f".into()),
        )
    }

    #[test]
    fn tokens_refresh_before_expiry_and_short_ones_at_half_life() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(3300)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn the_fingerprint_follows_principal_and_endpoint_but_not_spelling() {
        let a = principal("c1").fingerprint("https://r.communication.azure.com/");
        assert_eq!(
            a,
            principal("C1").fingerprint("https://R.communication.azure.com")
        );
        assert_ne!(
            a,
            principal("c2").fingerprint("https://r.communication.azure.com")
        );
        assert_ne!(
            a,
            principal("c1").fingerprint("https://s.communication.azure.com")
        );
        assert!(a.starts_with("entra:"));
        // Stable across releases: what existing token Secrets record.
        assert_eq!(a, "entra:IrrEDyrasaGNcG_w");
        // The same client id asserted by another ServiceAccount is another principal.
        let sa = |ns: &str| {
            Principal::new(
                "https://login.microsoftonline.com/",
                "t",
                "c1",
                AssertionSource::ServiceAccount {
                    namespace: ns.into(),
                    name: "wi".into(),
                },
            )
            .source_key()
        };
        assert_ne!(sa("team-a"), sa("team-b"));
        assert_ne!(sa("team-a"), principal("c1").source_key());
    }

    #[tokio::test]
    async fn principals_beyond_the_bound_keep_only_slots_in_use_or_worth_keeping() {
        let kube = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
            .unwrap();
        let tokens = EntraTokens::new(kube, None, Duration::from_secs(1), None).unwrap();
        let held = tokens.slot(&principal("held"));
        {
            let fresh = tokens.slot(&principal("fresh"));
            fresh.lock().await.token = Some((
                BearerToken::new("t".into()),
                Instant::now() + Duration::from_secs(600),
            ));
        }
        for i in 0..MAX_PRINCIPALS {
            tokens.slot(&principal(&format!("idle-{i}")));
        }
        // The slot that crossed the bound swept the idle ones; the held and the fresh stay.
        assert!(tokens.len() <= 3, "{} slots", tokens.len());
        let slots = tokens.inner.slots.lock().unwrap();
        assert!(slots.contains_key(&principal("held")));
        assert!(slots.contains_key(&principal("fresh")));
        drop(held);
    }
}
