//! The `acs-emulator` command line: its flags, their translation into an [`EmulatorConfig`],
//! and the foreground run (output files, the start-up banner, waiting for a signal).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use uuid::Uuid;

use super::limits::{parse_limit_override, RateLimits};
use super::{start, EmulatorConfig, EmulatorError};
use acs_client::AccessKey;

/// Emulator command-line arguments. `Debug` is written by hand so the keys never print.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (the bound endpoint is printed).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Access key (standard base64). Give it twice for a primary and a secondary key; missing
    /// keys are generated (64 random bytes) and printed at start-up.
    #[arg(long = "access-key", value_name = "BASE64")]
    pub access_keys: Vec<String>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    pub http: bool,
    /// Extra subject alternative name for the TLS certificate (repeatable); `localhost` and
    /// `127.0.0.1` are always included.
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_sans: Vec<String>,
    /// Write the emulator CA certificate (PEM) here before printing the listening line.
    #[arg(long, value_name = "PATH")]
    pub ca_cert_out: Option<PathBuf>,
    /// Persist identities, revocations, keys, the resource id and the CA in this file.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// Write a ready-to-use connection string (primary key) here before printing the
    /// listening line.
    #[arg(long, value_name = "PATH")]
    pub connection_string_out: Option<PathBuf>,
    /// The ACS resource GUID that every identity id carries; random if absent (and kept in the
    /// state file).
    #[arg(long, value_name = "UUID")]
    pub resource_id: Option<Uuid>,
    /// `default` enforces the service's per-resource limits; `off` disables them.
    #[arg(long, value_enum, default_value_t = RateLimitMode::Default)]
    pub rate_limits: RateLimitMode,
    /// Multiply every rate limit by this factor (e.g. 0.01 for tiny limits, 100 for a benchmark).
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    pub rate_limit_scale: f64,
    /// Set one limit: `CLASS=MAX/SECONDS`, CLASS one of create, delete, issue, revoke, exchange
    /// (repeatable; applied after the scale).
    #[arg(long = "rate-limit", value_name = "CLASS=MAX/SECONDS")]
    pub rate_limit: Vec<String>,
    /// Give every issued token this lifetime, whatever the client asked for.
    #[arg(long, value_name = "N")]
    pub token_lifetime_seconds: Option<u64>,
    /// Accepted clock difference of the request's date header.
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub clock_skew_seconds: u64,
    /// Answer the admin API (`/_emulator/`) for non-loopback peers too.
    #[arg(long)]
    pub admin_allow_remote: bool,
    /// Serve the Entra stand-in under this host name too (e.g. `login.microsoftonline.com`, or
    /// `HOST:PORT` when clients reach it on another port): added to the certificate and named
    /// as the authority in its discovery documents and tokens.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub entra_host: Option<String>,
    /// Extra CA certificate (PEM file; repeatable) to trust when fetching a federated
    /// credential issuer's OpenID configuration and keys, e.g. the Kubernetes apiserver's CA.
    #[arg(long = "oidc-ca-cert", value_name = "FILE")]
    pub oidc_ca_certs: Vec<PathBuf>,
    /// Lifetime of the Entra stand-in's access tokens.
    #[arg(long, value_name = "N", default_value_t = crate::entra::DEFAULT_TOKEN_LIFETIME_SECONDS)]
    pub entra_token_lifetime_seconds: u64,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("listen", &self.listen)
            .field(
                "access_keys",
                &format_args!("[{} redacted]", self.access_keys.len()),
            )
            .field("http", &self.http)
            .field("tls_sans", &self.tls_sans)
            .field("state_file", &self.state_file)
            .field("resource_id", &self.resource_id)
            .field("rate_limits", &self.rate_limits)
            .field("token_lifetime_seconds", &self.token_lifetime_seconds)
            .field("entra_host", &self.entra_host)
            .field("oidc_ca_certs", &self.oidc_ca_certs)
            .finish_non_exhaustive()
    }
}

/// `--rate-limits` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RateLimitMode {
    Default,
    Off,
}

impl Args {
    /// Translates the flags; a bad key or limit is an error that never echoes the key.
    pub fn to_config(&self) -> Result<EmulatorConfig, EmulatorError> {
        let access_keys = self
            .access_keys
            .iter()
            .map(|k| {
                AccessKey::from_base64(k).map_err(|e| {
                    EmulatorError::InvalidConfig(format!("--access-key is not usable: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut rate_limits = match self.rate_limits {
            RateLimitMode::Default => RateLimits::service_defaults(),
            RateLimitMode::Off => RateLimits::off(),
        };
        if !(self.rate_limit_scale.is_finite() && self.rate_limit_scale > 0.0) {
            return Err(EmulatorError::InvalidConfig(
                "--rate-limit-scale must be a positive number".into(),
            ));
        }
        rate_limits = rate_limits.scaled(self.rate_limit_scale);
        for spec in &self.rate_limit {
            let (class, limit) =
                parse_limit_override(spec).map_err(EmulatorError::InvalidConfig)?;
            rate_limits.set(class, Some(limit));
        }
        let oidc_ca_pems = self
            .oidc_ca_certs
            .iter()
            .map(|path| {
                std::fs::read_to_string(path).map_err(|e| {
                    EmulatorError::InvalidConfig(format!(
                        "--oidc-ca-cert {} is not readable: {e}",
                        path.display()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EmulatorConfig {
            listen: self.listen,
            access_keys,
            tls: !self.http,
            tls_sans: self.tls_sans.clone(),
            state_file: self.state_file.clone(),
            resource_id: self.resource_id,
            rate_limits,
            token_lifetime_seconds: self.token_lifetime_seconds,
            clock_skew: Duration::from_secs(self.clock_skew_seconds),
            admin_allow_remote: self.admin_allow_remote,
            entra_host: self.entra_host.clone(),
            oidc_ca_pems,
            entra_token_lifetime_seconds: self.entra_token_lifetime_seconds,
        })
    }
}

/// Runs the emulator until interrupted.
pub async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = args.to_config()?;
    let emulator = start(config).await?;
    if let Some(path) = &args.ca_cert_out {
        write_file(path, emulator.ca_pem().as_bytes())?;
    }
    if let Some(path) = &args.connection_string_out {
        write_file(
            path,
            format!("{}\n", emulator.connection_string()).as_bytes(),
        )?;
    }
    // The first stdout line is a contract: harnesses wait for it and parse the endpoint.
    println!("acs-emulator listening on {}", emulator.endpoint());
    // A development tool may print its own dev keys; the operator never does.
    println!("resource id: {}", emulator.resource_id());
    println!("connection string: {}", emulator.connection_string());
    println!(
        "secondary connection string: {}",
        emulator.secondary_connection_string()
    );
    println!("admin api: {}/", emulator.admin_url());
    println!("entra authority: {}", emulator.entra_authority());
    println!("entra tenant id: {}", emulator.entra_tenant_id());
    if let Some(path) = &args.ca_cert_out {
        println!("ca certificate: {}", path.display());
    }
    if let Some(path) = &args.state_file {
        println!("state file: {}", path.display());
    }
    use std::io::Write as _;
    std::io::stdout().flush()?;
    wait_for_signal().await?;
    tracing::info!("shutting down the emulator");
    emulator.shutdown().await?;
    Ok(())
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), EmulatorError> {
    std::fs::write(path, contents).map_err(|source| EmulatorError::WriteOutput {
        path: path.to_path_buf(),
        source,
    })
}

async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("emulator").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn flags_become_a_config_and_keys_never_print() {
        let key = "c2VjcmV0c2VjcmV0c2VjcmV0";
        let args = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--access-key",
            key,
            "--access-key",
            key,
            "--http",
            "--tls-san",
            "emu.test",
            "--rate-limit-scale",
            "0.01",
            "--rate-limit",
            "issue=5/10",
            "--token-lifetime-seconds",
            "30",
            "--clock-skew-seconds",
            "60",
            "--entra-host",
            "login.microsoftonline.com",
            "--entra-token-lifetime-seconds",
            "5",
        ]);
        assert!(!format!("{args:?}").contains(key));
        let c = args.to_config().unwrap();
        assert!(!c.tls);
        assert_eq!(c.access_keys.len(), 2);
        assert_eq!(c.tls_sans, ["emu.test"]);
        assert_eq!(c.rate_limits.create, Some(crate::Limit::new(10, 30.0)));
        assert_eq!(c.rate_limits.issue, Some(crate::Limit::new(5, 10.0)));
        assert_eq!(c.token_lifetime_seconds, Some(30));
        assert_eq!(c.clock_skew, Duration::from_secs(60));
        assert_eq!(c.entra_host.as_deref(), Some("login.microsoftonline.com"));
        assert_eq!(c.entra_token_lifetime_seconds, 5);
    }

    #[test]
    fn defaults_are_the_documented_ones_and_bad_values_fail_without_echoing_keys() {
        let c = parse(&[]).to_config().unwrap();
        assert_eq!(c.listen, "127.0.0.1:8443".parse().unwrap());
        assert!(c.tls);
        assert_eq!(c.rate_limits, RateLimits::service_defaults());
        assert_eq!(
            parse(&["--rate-limits", "off"])
                .to_config()
                .unwrap()
                .rate_limits,
            RateLimits::off()
        );
        let err = parse(&["--access-key", "not base64!!secret"])
            .to_config()
            .unwrap_err();
        assert!(!err.to_string().contains("secret"));
        assert!(parse(&["--rate-limit", "issue=0/1"]).to_config().is_err());
        assert!(parse(&["--rate-limit-scale", "0"]).to_config().is_err());
        assert_eq!(c.entra_token_lifetime_seconds, 3600);
        assert!(parse(&["--oidc-ca-cert", "/nonexistent/ca.pem"])
            .to_config()
            .is_err());
    }
}
