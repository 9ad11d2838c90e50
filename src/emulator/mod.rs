//! A local ACS Identity emulator (what Azurite is for Storage): the GA and preview Identity
//! surface, the 2020-07-20-preview2 surface, exact HMAC verification, real error shapes, rate
//! limits, and an admin API under `/_emulator/` for tests, the demo and the benchmark.
//!
//! CONTRACT (shared with other modules and tests; keep these names):
//! - `Args` (clap) for the `emulator` subcommand: `--listen`, `--access-key` (repeatable),
//!   `--http`, `--tls-san`, `--ca-cert-out`, `--state-file`, `--connection-string-out`, ...
//! - `EmulatorConfig` (plain struct, `Default`), built from `Args` or by tests directly.
//! - `start(EmulatorConfig) -> Result<RunningEmulator, EmulatorError>`: binds, serves in the
//!   background, returns once accepting connections.
//! - `RunningEmulator { addr, endpoint(), connection_string(), ca_pem(), admin_url(),
//!   access_keys(), shutdown() }`.
//! - `run(Args)`: `start`, print `acs-emulator listening on <endpoint>` as the first stdout line
//!   (after writing `--ca-cert-out` and `--connection-string-out`), then wait for Ctrl-C/SIGTERM.

/// Emulator command-line arguments.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the emulator until interrupted.
pub async fn run(_args: Args) -> Result<(), Box<dyn std::error::Error>> {
    Ok(())
}
