//! `acs-emulator`: a local ACS Identity emulator (what Azurite is for Storage): the GA and
//! preview Identity surface, the 2020-07-20-preview2 surface, exact HMAC verification, real error
//! shapes, rate limits, and an admin API under `/_emulator/` for tests, the demo and the
//! benchmark. A crate of its own so the operator's binary and image never contain it; it uses
//! the operator library's pure ACS code (HMAC signing, wire models, keys, scopes), so both sides
//! sign and parse exactly alike.
//!
//! CONTRACT (shared with other crates and tests; keep these names):
//! - `Args` (clap) for the `acs-emulator` binary: `--listen`, `--access-key` (repeatable),
//!   `--http`, `--tls-san`, `--ca-cert-out`, `--state-file`, `--connection-string-out`, ...
//! - `EmulatorConfig` (plain struct, `Default`), built from `Args` or by tests directly.
//! - `start(EmulatorConfig) -> Result<RunningEmulator, EmulatorError>`: binds, serves in the
//!   background, returns once accepting connections.
//! - `RunningEmulator { addr, endpoint(), connection_string(), ca_pem(), admin_url(),
//!   access_keys(), entra_authority(), entra_tenant_id(), shutdown() }`.
//! - `run(Args)`: `start`, print `acs-emulator listening on <endpoint>` as the first stdout line
//!   (after writing `--ca-cert-out` and `--connection-string-out`), then wait for Ctrl-C/SIGTERM.
//!
//! This file holds the contract, the configuration and start-up; each concern of the running
//! emulator lives in its own module (see the list below). `entra` is a stand-in for Microsoft
//! Entra ID, so the Identity API can also be called with Entra bearer tokens.

mod admin;
mod api_version;
mod auth;
mod body;
mod cli;
mod context;
mod entra;
mod faults;
mod handlers;
mod legacy;
mod limits;
mod persist;
mod response;
mod routes;
mod server;
mod stats;
mod store;
mod tls;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use acs_client::{AccessKey, ConnectionString};

pub use cli::{run, Args};
pub use limits::{Limit, LimitClass, RateLimits};

/// Everything [`start`] needs. `Default` is what tests want: HTTPS on an ephemeral loopback
/// port, fresh random keys, the service's rate limits, no state file.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Access keys: the first is the primary, the second the secondary. Missing ones are
    /// generated (64 random bytes, like a real ACS key).
    pub access_keys: Vec<AccessKey>,
    /// Serve HTTPS with a certificate from the emulator's own CA (`false`: plain HTTP).
    pub tls: bool,
    /// Extra subject alternative names; `localhost` and `127.0.0.1` are always included.
    pub tls_sans: Vec<String>,
    /// Persist identities, revocations, keys, the resource id and the CA here.
    pub state_file: Option<PathBuf>,
    /// The ACS resource GUID used in identity ids; random if absent (and kept in the state file).
    pub resource_id: Option<Uuid>,
    /// Per-resource rate limits (§10 of the reference by default).
    pub rate_limits: RateLimits,
    /// Overrides the lifetime of every issued token, whatever the client asked for.
    pub token_lifetime_seconds: Option<u64>,
    /// Accepted difference between the request's date header and the emulator's clock.
    pub clock_skew: Duration,
    /// Answer the admin API for non-loopback peers too.
    pub admin_allow_remote: bool,
    /// Serve the Entra stand-in under this host name too (`login.microsoftonline.com`, with
    /// `:PORT` when clients reach it on another port than the scheme's default): it is added to
    /// the certificate, and the discovery documents and token issuer name it. Without it they
    /// name the emulator's endpoint.
    pub entra_host: Option<String>,
    /// Extra CA certificates (PEM) trusted when fetching a federated credential issuer's OpenID
    /// configuration and keys (e.g. a Kubernetes apiserver's CA).
    pub oidc_ca_pems: Vec<String>,
    /// Lifetime of the Entra stand-in's access tokens.
    pub entra_token_lifetime_seconds: u64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_keys: Vec::new(),
            tls: true,
            tls_sans: Vec::new(),
            state_file: None,
            resource_id: None,
            rate_limits: RateLimits::service_defaults(),
            token_lifetime_seconds: None,
            clock_skew: Duration::from_secs(300),
            admin_allow_remote: false,
            entra_host: None,
            oidc_ca_pems: Vec::new(),
            entra_token_lifetime_seconds: entra::DEFAULT_TOKEN_LIFETIME_SECONDS,
        }
    }
}

/// Why the emulator could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("failed to bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to build the emulator's TLS certificates")]
    Tls(#[source] tls::TlsError),
    #[error("failed to read the state file {path}")]
    ReadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not valid emulator state")]
    ParseState {
        path: PathBuf,
        #[source]
        source: persist::StateError,
    },
    #[error("failed to write the state file")]
    WriteState(#[source] std::io::Error),
    #[error("failed to write {path}")]
    WriteOutput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file belongs to resource {stored}, but --resource-id asks for {requested}")]
    ResourceMismatch { stored: Uuid, requested: Uuid },
    #[error("at most two access keys (primary and secondary) can be given, got {0}")]
    TooManyKeys(usize),
    #[error("invalid emulator configuration: {0}")]
    InvalidConfig(String),
    #[error("failed to use the OIDC CA certificates")]
    OidcCa(#[source] entra::CaError),
}

/// A running emulator. Dropping it stops accepting connections; [`RunningEmulator::shutdown`]
/// also waits for open requests and writes the state file.
pub struct RunningEmulator {
    /// The bound address (with the real port when port 0 was asked for).
    pub addr: SocketAddr,
    shared: Arc<context::Shared>,
    server: Option<server::ServerHandle>,
}

impl std::fmt::Debug for RunningEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningEmulator")
            .field("addr", &self.addr)
            .field("endpoint", &self.shared.endpoint)
            .finish_non_exhaustive()
    }
}

impl RunningEmulator {
    /// `https://127.0.0.1:PORT` (or `http://` with `tls: false`), without a trailing `/`.
    pub fn endpoint(&self) -> String {
        self.shared.endpoint.clone()
    }

    /// A ready-to-use connection string with the current primary key.
    pub fn connection_string(&self) -> String {
        self.connection_string_for(0)
    }

    /// A ready-to-use connection string with the current secondary key.
    pub fn secondary_connection_string(&self) -> String {
        self.connection_string_for(1)
    }

    fn connection_string_for(&self, slot: usize) -> String {
        let keys = self.access_keys();
        ConnectionString {
            endpoint: self.endpoint(),
            access_key: keys[slot.min(keys.len() - 1)].clone(),
        }
        .render()
    }

    /// The emulator CA certificate (PEM) that signs its TLS certificate; trust it in clients.
    pub fn ca_pem(&self) -> &str {
        &self.shared.ca_pem
    }

    /// Base URL of the admin API, e.g. `https://127.0.0.1:PORT/_emulator`.
    pub fn admin_url(&self) -> String {
        format!("{}/_emulator", self.shared.endpoint)
    }

    /// The current access keys: `[primary, secondary]`.
    pub fn access_keys(&self) -> Vec<AccessKey> {
        self.shared.access_keys()
    }

    /// The ACS resource GUID every identity id of this emulator carries.
    pub fn resource_id(&self) -> Uuid {
        self.shared.resource_id
    }

    /// The Entra stand-in's authority (`https://HOST:PORT`, the `--entra-host` when set): give
    /// it to MSAL / azure-identity as `authority`.
    pub fn entra_authority(&self) -> String {
        self.shared.entra.authority.clone()
    }

    /// The one tenant of the Entra stand-in (kept in the state file).
    pub fn entra_tenant_id(&self) -> Uuid {
        self.shared.entra.tenant_id
    }

    /// Stops accepting, lets open requests finish (bounded), and writes the state file.
    pub async fn shutdown(mut self) -> Result<(), EmulatorError> {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        self.shared.persister.stop_and_flush(&*self.shared).await
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.signal_stop();
            self.shared.persister.abort_writer();
        }
    }
}

/// Binds, loads or creates state, and serves in the background. Returns once the listener
/// accepts connections.
pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator, EmulatorError> {
    if config.access_keys.len() > 2 {
        return Err(EmulatorError::TooManyKeys(config.access_keys.len()));
    }
    config
        .rate_limits
        .validate()
        .map_err(EmulatorError::InvalidConfig)?;
    if config.token_lifetime_seconds == Some(0) || config.entra_token_lifetime_seconds == 0 {
        return Err(EmulatorError::InvalidConfig(
            "token lifetime must be at least one second".into(),
        ));
    }
    let entra_host = config
        .entra_host
        .as_deref()
        .map(entra_host_name)
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| EmulatorError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind {
            addr: config.listen,
            source,
        })?;
    let mut loaded = persist::load_or_init(&config)?;
    let tls_config = if config.tls {
        let mut names = config.tls_sans.clone();
        names.extend(entra_host.clone());
        let sans = tls::subject_alt_names(&names, addr.ip());
        Some(loaded.ca.server_config(&sans).map_err(EmulatorError::Tls)?)
    } else {
        None
    };
    let endpoint = endpoint_for(addr, config.tls);
    let authority = match &config.entra_host {
        Some(host) => format!("{}://{host}", if config.tls { "https" } else { "http" }),
        None => endpoint.clone(),
    };
    let entra = entra::Entra::new(
        loaded.entra.take().unwrap_or_else(entra::EntraState::fresh),
        authority,
        &config.oidc_ca_pems,
        config.entra_token_lifetime_seconds,
        config.clock_skew,
    )
    .map_err(EmulatorError::OidcCa)?;
    let shared = Arc::new(context::Shared::new(&config, loaded, endpoint, entra));
    // Write the state once up front so the CA and keys survive even if no request ever comes.
    shared.persister.flush(&*shared).await?;
    shared.persister.spawn_writer(&shared);
    let server = server::serve(listener, tls_config, shared.clone());
    tracing::info!(
        %addr,
        tls = config.tls,
        resource_id = %shared.resource_id,
        entra_tenant_id = %shared.entra.tenant_id,
        entra_authority = %shared.entra.authority,
        "acs emulator started"
    );
    Ok(RunningEmulator {
        addr,
        shared,
        server: Some(server),
    })
}

/// The host name of `--entra-host` (`HOST` or `HOST:PORT`), for the certificate.
fn entra_host_name(value: &str) -> Result<String, EmulatorError> {
    let bad = || EmulatorError::InvalidConfig(format!("--entra-host {value:?} is not HOST[:PORT]"));
    let authority: http::uri::Authority = value.parse().map_err(|_| bad())?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(bad());
    }
    Ok(authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string())
}

/// The endpoint clients use: an unspecified bind address is reached through loopback.
fn endpoint_for(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    format!("{scheme}://{ip}:{}", addr.port())
}
