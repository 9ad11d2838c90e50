//! The benchmark's one error type: every failure names the action that failed, with the cause
//! in `source`.

use std::path::PathBuf;
use std::time::Duration;

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to start the control plane")]
    StartControlPlane(#[source] acs_testenv::Error),
    #[error("failed to start the ACS emulator")]
    StartEmulator(#[source] acs_emulator::EmulatorError),
    #[error("failed to issue the sample token")]
    SampleToken(#[source] acs_client::AcsError),
    #[error("failed to {action}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("failed to {action}")]
    Http {
        action: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start the operator {path}")]
    SpawnOperator {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the operator exited early ({status}); see {log}")]
    OperatorExited {
        status: std::process::ExitStatus,
        log: PathBuf,
    },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("the Python baseline failed ({status}); see {log}")]
    Baseline {
        status: std::process::ExitStatus,
        log: PathBuf,
    },
    #[error("failed to read {what}: {detail}")]
    Parse { what: &'static str, detail: String },
    #[error("a floor worker failed")]
    Worker(#[source] tokio::task::JoinError),
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// A Kubernetes API failure while doing `action`.
    pub fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { action, source }
    }

    /// An HTTP failure while doing `action`.
    pub fn http(action: &'static str) -> impl FnOnce(reqwest::Error) -> Error {
        move |source| Error::Http { action, source }
    }

    /// An I/O failure while doing `action` on `path`.
    pub fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// The error and its sources on one line.
pub use acs_client::error_chain as report;
