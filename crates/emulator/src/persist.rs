//! The state file: loading (or creating) the resource's durable state at start, and writing it
//! off the request path (debounced, atomic by temp file and rename, durable before shutdown).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::KeySlot;
use super::entra::{Client, EntraKey, EntraState};
use super::store::{IdentityRecord, KeyState, Store};
use super::tls::Ca;
use super::token::SigningKey;
use super::{EmulatorConfig, EmulatorError};
use acs_client::AccessKey;

/// How long the writer waits after a change, so bursts of requests become one write (a busy
/// emulator writes at most a few times a second; shutdown always writes the final state).
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file is not valid JSON of the expected shape")]
    Json(#[source] serde_json::Error),
    #[error("state file format {0} is not supported")]
    Format(u32),
    #[error("state file holds a key that is not valid base64")]
    Key,
    #[error("state file does not hold exactly a primary and a secondary key")]
    KeySlots,
    #[error("state file holds an Entra signing key that is not usable")]
    EntraKey,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersistedState {
    format: u32,
    resource_id: Uuid,
    sequence: u64,
    keys: Vec<PersistedKey>,
    token_signing_key: String,
    ca: PersistedCa,
    identities: Vec<IdentityRecord>,
    /// The Entra stand-in's tenant; absent in files written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entra: Option<PersistedEntra>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersistedEntra {
    tenant_id: Uuid,
    /// Standard base64 of the RSA key's PKCS#1 DER; absent until first used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signing_key: Option<String>,
    #[serde(default)]
    clients: Vec<Client>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersistedKey {
    slot: KeySlot,
    key: String,
    generation: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersistedCa {
    cert_pem: String,
    key_pem: String,
}

/// Durable state, loaded or freshly made.
pub struct Loaded {
    pub store: Store,
    pub ca: Ca,
    pub signing_key: SigningKey,
    /// Taken by `start` for the Entra stand-in.
    pub entra: Option<EntraState>,
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    rand::rng().fill_bytes(&mut b);
    b
}

/// A fresh 64-byte access key, shaped like a real ACS key.
pub fn generate_access_key() -> AccessKey {
    AccessKey::from_bytes(random_bytes(64))
}

/// Loads the state file if there is one, else creates fresh state. Keys given in the config
/// replace stored ones (bumping the generation when they differ, as a regeneration would).
pub fn load_or_init(config: &EmulatorConfig) -> Result<Loaded, EmulatorError> {
    let stored = match &config.state_file {
        Some(path) => read(path)?,
        None => None,
    };
    let from_file = stored.is_some();
    let mut loaded = match stored {
        Some(loaded) => {
            if let Some(requested) = config.resource_id {
                if requested != loaded.store.resource_id {
                    return Err(EmulatorError::ResourceMismatch {
                        stored: loaded.store.resource_id,
                        requested,
                    });
                }
            }
            loaded
        }
        None => {
            let key = |_| KeyState {
                key: generate_access_key(),
                generation: 0,
            };
            Loaded {
                store: Store::new(
                    config.resource_id.unwrap_or_else(Uuid::new_v4),
                    [key(0), key(1)],
                    0,
                    Vec::new(),
                ),
                ca: Ca::generate().map_err(EmulatorError::Tls)?,
                signing_key: SigningKey::new(random_bytes(32)),
                entra: Some(EntraState::fresh()),
            }
        }
    };
    for (i, key) in config.access_keys.iter().enumerate().take(2) {
        let slot = &mut loaded.store.keys[i];
        if slot.key != *key {
            slot.key = key.clone();
            if from_file {
                // A different key than the stored one is a rotation: old tokens die with it.
                slot.generation += 1;
            }
        }
    }
    Ok(loaded)
}

fn read(path: &Path) -> Result<Option<Loaded>, EmulatorError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(EmulatorError::ReadState {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse(&bytes)
        .map(Some)
        .map_err(|source| EmulatorError::ParseState {
            path: path.to_path_buf(),
            source,
        })
}

fn parse(bytes: &[u8]) -> Result<Loaded, StateError> {
    let state: PersistedState = serde_json::from_slice(bytes).map_err(StateError::Json)?;
    if state.format != 1 {
        return Err(StateError::Format(state.format));
    }
    let find = |slot: KeySlot| -> Result<KeyState, StateError> {
        let k = state
            .keys
            .iter()
            .find(|k| k.slot == slot)
            .ok_or(StateError::KeySlots)?;
        Ok(KeyState {
            key: AccessKey::from_base64(&k.key).map_err(|_| StateError::Key)?,
            generation: k.generation,
        })
    };
    let keys = [find(KeySlot::Primary)?, find(KeySlot::Secondary)?];
    let signing = STANDARD
        .decode(&state.token_signing_key)
        .map_err(|_| StateError::Key)?;
    let entra = match state.entra {
        None => EntraState::fresh(),
        Some(e) => EntraState {
            tenant_id: e.tenant_id,
            key: e
                .signing_key
                .map(|k| {
                    let der = STANDARD.decode(k).map_err(|_| StateError::EntraKey)?;
                    EntraKey::from_pkcs1_der(&der).map_err(|_| StateError::EntraKey)
                })
                .transpose()?,
            clients: e.clients,
        },
    };
    Ok(Loaded {
        store: Store::new(state.resource_id, keys, state.sequence, state.identities),
        ca: Ca {
            cert_pem: state.ca.cert_pem,
            key_pem: state.ca.key_pem,
        },
        signing_key: SigningKey::new(signing),
        entra: Some(entra),
    })
}

/// What the state file holds, borrowed from a running emulator.
pub struct Snapshot<'a> {
    pub store: &'a Store,
    pub ca: &'a Ca,
    pub signing_key: &'a SigningKey,
    /// The Entra stand-in's tenant, signing key (PKCS#1 DER) and clients.
    pub entra: (Uuid, Option<Vec<u8>>, Vec<Client>),
}

/// A running emulator as its persister sees it. `context::Shared` implements it, so this module
/// never depends on the shared state it writes.
pub trait Durable: Send + Sync + 'static {
    /// The state file's bytes now.
    fn encode_state(&self) -> Result<Vec<u8>, EmulatorError>;
    fn persister(&self) -> &Persister;
}

/// The state file's bytes for `snapshot`.
pub fn encode(snapshot: Snapshot<'_>) -> Result<Vec<u8>, EmulatorError> {
    let Snapshot {
        store,
        ca,
        signing_key,
        entra: (tenant_id, entra_key, clients),
    } = snapshot;
    let state = PersistedState {
        format: 1,
        resource_id: store.resource_id,
        sequence: store.sequence,
        keys: [KeySlot::Primary, KeySlot::Secondary]
            .into_iter()
            .map(|slot| PersistedKey {
                slot,
                key: store.keys[slot.index()].key.to_base64(),
                generation: store.keys[slot.index()].generation,
            })
            .collect(),
        token_signing_key: STANDARD.encode(signing_key.secret()),
        ca: PersistedCa {
            cert_pem: ca.cert_pem.clone(),
            key_pem: ca.key_pem.clone(),
        },
        identities: store.list().cloned().collect(),
        entra: Some(PersistedEntra {
            tenant_id,
            signing_key: entra_key.map(|der| STANDARD.encode(der)),
            clients,
        }),
    };
    serde_json::to_vec(&state).map_err(|e| EmulatorError::WriteState(std::io::Error::other(e)))
}

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync, rename. The file holds
/// keys, so it is created owner-only.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// The change signal shared by the persister and its writer task.
#[derive(Debug, Default)]
struct Signal {
    dirty: AtomicBool,
    changed: tokio::sync::Notify,
}

/// Writes the state file when the state changes (debounced) and on shutdown.
#[derive(Debug)]
pub struct Persister {
    path: Option<PathBuf>,
    signal: Arc<Signal>,
    writes: tokio::sync::Mutex<()>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Persister {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            signal: Arc::default(),
            writes: tokio::sync::Mutex::new(()),
            writer: Mutex::new(None),
        }
    }

    /// Notes a change; the writer task persists it shortly.
    pub fn mark_dirty(&self) {
        if self.path.is_some() {
            self.signal.dirty.store(true, Ordering::Release);
            self.signal.changed.notify_one();
        }
    }

    /// Writes the current state now (no-op without a state file).
    pub async fn flush(&self, state: &impl Durable) -> Result<(), EmulatorError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let _serialized = self.writes.lock().await;
        self.signal.dirty.store(false, Ordering::Release);
        let bytes = state.encode_state()?;
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| EmulatorError::WriteState(std::io::Error::other(e)))?
            .map_err(EmulatorError::WriteState)
    }

    /// Starts the background writer. It holds only a weak reference, so a dropped emulator
    /// does not live on through it.
    pub fn spawn_writer<D: Durable>(&self, state: &Arc<D>) {
        if self.path.is_none() {
            return;
        }
        let weak: Weak<D> = Arc::downgrade(state);
        let signal = self.signal.clone();
        let handle = tokio::spawn(async move {
            loop {
                if !signal.dirty.load(Ordering::Acquire) {
                    // A notify_one before this wait leaves a permit, so no change is missed.
                    signal.changed.notified().await;
                    continue;
                }
                tokio::time::sleep(DEBOUNCE).await;
                let Some(state) = weak.upgrade() else { return };
                if let Err(e) = state.persister().flush(&*state).await {
                    tracing::warn!(error = %e, "failed to write the emulator state file");
                }
            }
        });
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }

    /// Stops the writer without a final write (the emulator was dropped, not shut down).
    pub fn abort_writer(&self) {
        if let Some(handle) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            handle.abort();
        }
    }

    /// Stops the writer and writes the final state.
    pub async fn stop_and_flush(&self, state: &impl Durable) -> Result<(), EmulatorError> {
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            handle.abort();
            let _ = handle.await;
        }
        self.flush(state).await
    }
}
