//! The shared state of one running emulator, handed to every connection: the store behind one
//! mutex (short critical sections only), and the independent parts beside it.

use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::Duration;

use uuid::Uuid;

use super::entra::Entra;
use super::faults::FaultInjector;
use super::limits::RateLimiter;
use super::persist::{self, Durable, Loaded, Persister};
use super::stats::Stats;
use super::store::Store;
use super::tls::Ca;
use super::token::SigningKey;
use super::{EmulatorConfig, EmulatorError};
use acs_client::AccessKey;

#[derive(Debug)]
pub struct Shared {
    pub resource_id: Uuid,
    pub endpoint: String,
    pub ca: Ca,
    pub ca_pem: String,
    pub signing_key: SigningKey,
    store: Mutex<Store>,
    pub limiter: RateLimiter,
    pub faults: FaultInjector,
    pub stats: Stats,
    pub persister: Persister,
    token_lifetime: RwLock<Option<u64>>,
    pub clock_skew: Duration,
    pub admin_allow_remote: bool,
    pub entra: Entra,
}

impl Shared {
    pub fn new(config: &EmulatorConfig, loaded: Loaded, endpoint: String, entra: Entra) -> Self {
        Self {
            resource_id: loaded.store.resource_id,
            endpoint,
            ca_pem: loaded.ca.cert_pem.clone(),
            ca: loaded.ca,
            signing_key: loaded.signing_key,
            store: Mutex::new(loaded.store),
            limiter: RateLimiter::new(config.rate_limits.clone()),
            faults: FaultInjector::default(),
            stats: Stats::default(),
            persister: Persister::new(config.state_file.clone()),
            token_lifetime: RwLock::new(config.token_lifetime_seconds),
            clock_skew: config.clock_skew,
            admin_allow_remote: config.admin_allow_remote,
            entra,
        }
    }

    /// The store. A panic while it was held cannot leave it half-updated in a way that matters
    /// more than stopping the emulator would, so a poisoned lock is used as is.
    pub fn lock_store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current `[primary, secondary]` keys.
    pub fn access_keys(&self) -> Vec<AccessKey> {
        let s = self.lock_store();
        s.keys.iter().map(|k| k.key.clone()).collect()
    }

    pub fn token_lifetime_override(&self) -> Option<u64> {
        *self
            .token_lifetime
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_token_lifetime_override(&self, seconds: Option<u64>) {
        *self
            .token_lifetime
            .write()
            .unwrap_or_else(|e| e.into_inner()) = seconds;
    }
}

impl Durable for Shared {
    fn encode_state(&self) -> Result<Vec<u8>, EmulatorError> {
        let entra = self.entra.snapshot();
        let store = self.lock_store();
        persist::encode(persist::Snapshot {
            store: &store,
            ca: &self.ca,
            signing_key: &self.signing_key,
            entra,
        })
    }

    fn persister(&self) -> &Persister {
        &self.persister
    }
}
