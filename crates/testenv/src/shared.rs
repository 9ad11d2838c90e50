//! The process-wide control plane for a test binary: started lazily by the first test that asks
//! (with the repository's CRDs installed), shared by every later one, and stopped by the exit
//! handler when the test process exits (statics are never dropped).
//!
//! `cargo test` runs each test binary as one process, so all e2e tests share one control plane.
//! (cargo-nextest would run each test in its own process and start one per test.)

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::control_plane::ControlPlane;
use crate::error::Error;
use crate::options::Options;

/// Overrides the CRD directory installed into the shared control plane (default: the
/// workspace's `crds/`).
pub const CRDS_DIR_ENV: &str = "ACS_TESTENV_CRDS_DIR";

static SHARED: OnceLock<Result<ControlPlane, Arc<Error>>> = OnceLock::new();

/// The shared control plane, started on first use. Blocks the caller while it starts (or while
/// another thread starts it); a failed start is reported to every caller.
pub fn shared() -> Result<&'static ControlPlane, Error> {
    match SHARED.get_or_init(start_shared) {
        Ok(cp) => Ok(cp),
        Err(e) => Err(Error::Shared(Arc::clone(e))),
    }
}

/// The CRD directory installed into the shared control plane.
pub fn crds_dir() -> PathBuf {
    match std::env::var_os(CRDS_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => crate::workspace_root().join("crds"),
    }
}

fn start_shared() -> Result<ControlPlane, Arc<Error>> {
    crate::process::register_exit_hook(stop_shared);
    start_on_own_thread().map_err(Arc::new)
}

/// Starts on a dedicated thread with its own runtime: the caller may be inside a test's runtime,
/// where blocking on another runtime would panic, and no task of the start-up may depend on a
/// test runtime that ends with its test.
fn start_on_own_thread() -> Result<ControlPlane, Error> {
    let mut options = Options::from_env()?;
    let crds = crds_dir();
    if crds.is_dir() && !crate::crds::yaml_files(&crds)?.is_empty() {
        options = options.with_crds_dir(crds);
    }
    let thread = std::thread::Builder::new()
        .name("acs-testenv-start".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::StartThread)?;
            runtime.block_on(ControlPlane::start(options))
        })
        .map_err(Error::StartThread)?;
    let cp = thread
        .join()
        .map_err(|_| Error::StartThread(std::io::Error::other("the start-up thread panicked")))??;
    tracing::info!(started_in = ?cp.started_in(), api_url = %cp.api_url(), "shared control plane started");
    Ok(cp)
}

fn stop_shared() {
    if let Some(Ok(cp)) = SHARED.get() {
        if let Err(e) = cp.stop() {
            eprintln!(
                "acs-testenv: stopping the shared control plane failed: {}",
                crate::report(&e)
            );
        }
    }
}
