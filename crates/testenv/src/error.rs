//! The harness's one error type, and a helper that renders an error with its whole cause chain
//! (test failures should say why a control plane did not start, not just that it did not).

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong while resolving binaries or running a control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `TEST_ASSET_*` variable names something that is not an executable file.
    #[error("{var} is set to {path}, which is not an executable file")]
    AssetOverrideMissing { var: String, path: PathBuf },

    /// Neither HOME nor XDG_CACHE_HOME nor ACS_OPERATOR_CACHE is set, so there is no cache.
    #[error(
        "cannot locate the binary cache: none of ACS_OPERATOR_CACHE, XDG_CACHE_HOME, HOME is set"
    )]
    NoCacheDir,

    /// `ACS_K8S_VERSION` names no release the harness knows.
    #[error("ACS_K8S_VERSION={value:?} names no known Kubernetes release (known: {known})")]
    UnknownK8sVersion { value: String, known: String },

    /// The build script could not be run at all.
    #[error("failed to run the control-plane build script {script}")]
    RunBuildScript {
        script: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The build script ran and failed; its own output (stderr) says why.
    #[error(
        "the control-plane build script {script} failed ({status}); its output above says why"
    )]
    BuildScriptFailed { script: PathBuf, status: ExitStatus },

    /// The build script succeeded but a binary is still not where resolution looks.
    #[error("{binary} is still missing after running the build script (looked in {dir})")]
    StillMissing { binary: &'static str, dir: PathBuf },

    /// `<binary> --version` could not be run.
    #[error("failed to run {path} --version")]
    Version {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A start or stop timeout variable does not hold a Go duration.
    #[error("{var}={value:?} is not a duration like \"90s\" or \"1m30s\"")]
    BadDuration { var: &'static str, value: String },

    /// `ACS_TESTENV_BIND_ADDRESS` does not hold an IP address.
    #[error("ACS_TESTENV_BIND_ADDRESS={value:?} is not an IP address")]
    BadBindAddress { value: String },

    /// Creating or cleaning a directory failed.
    #[error("failed to prepare directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Writing a file (certificate, kubeconfig, policy, env file) failed.
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Reading a file or directory failed.
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Certificate or key generation failed.
    #[error("failed to generate {what}")]
    Certificate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },

    /// No free loopback port could be reserved.
    #[error("failed to pick a free port on 127.0.0.1")]
    FreePort(#[source] std::io::Error),

    /// The spawner thread could not be started or is gone.
    #[error("the process spawner thread is unavailable")]
    Spawner,

    /// A component process could not be spawned.
    #[error("failed to spawn {component} ({path})")]
    Spawn {
        component: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A component exited while the harness was waiting for it to become ready.
    #[error("{component} exited during start-up ({status}); last lines of {log}:\n{tail}")]
    Exited {
        component: &'static str,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
        /// Whether the log says a port was taken; the caller then retries with new ports.
        port_conflict: bool,
    },

    /// A readiness condition did not hold before the deadline.
    #[error("timed out after {timeout:?} waiting for {what} (last: {last}); last lines of {log}:\n{tail}")]
    NotReady {
        what: String,
        timeout: Duration,
        last: String,
        log: PathBuf,
        tail: String,
    },

    /// Waiting for a component process to exit failed.
    #[error("failed to stop {component}")]
    Stop {
        component: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// An operation needs a component that is not running.
    #[error("{component} is not running")]
    NotRunning { component: &'static str },

    /// The kubeconfig could not be turned into a client configuration.
    #[error("failed to load kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// A `kube::Client` could not be built (it must be built inside a tokio runtime).
    #[error("failed to build a kube client")]
    Client(#[source] kube::Error),

    /// A YAML document in a CRD directory is not a CustomResourceDefinition.
    #[error("failed to parse a CustomResourceDefinition in {path}")]
    ParseCrd {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },

    /// Applying a CRD was rejected.
    #[error("failed to apply CustomResourceDefinition {name}")]
    ApplyCrd {
        name: String,
        #[source]
        source: kube::Error,
    },

    /// A CRD did not report Established in time.
    #[error("CustomResourceDefinition {name} was not Established within {timeout:?}")]
    CrdNotEstablished { name: String, timeout: Duration },

    /// Watching a CRD for its Established condition failed.
    #[error("failed to watch CustomResourceDefinition {name}")]
    WatchCrd {
        name: String,
        #[source]
        source: kube::runtime::wait::Error,
    },

    /// Creating or deleting a test namespace failed.
    #[error("failed to {action} namespace {name}")]
    Namespace {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },

    /// The process-wide shared control plane failed to start (the first caller's error, shared
    /// with every later caller).
    #[error("the shared control plane failed to start")]
    Shared(#[source] Arc<Error>),

    /// Starting a control plane on its own thread and runtime failed.
    #[error("failed to run the control-plane start-up thread")]
    StartThread(#[source] std::io::Error),
}

impl Error {
    /// Whether a start attempt failed only because a port it picked was taken meanwhile.
    pub fn is_port_conflict(&self) -> bool {
        match self {
            Error::Exited { port_conflict, .. } => *port_conflict,
            Error::NotReady { tail, .. } => log_mentions_port_conflict(tail),
            _ => false,
        }
    }
}

/// Whether a component log says that it could not bind its port.
pub(crate) fn log_mentions_port_conflict(log: &str) -> bool {
    log.contains("address already in use")
}

/// Renders an error followed by each of its causes, one per `: `. A cause whose text the message
/// already contains is skipped (kube's API errors repeat their status in their own message).
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_every_cause_in_order() {
        let inner = std::io::Error::other("disk full");
        let err = Error::Write {
            path: PathBuf::from("/x/y"),
            source: inner,
        };
        assert_eq!(report(&err), "failed to write /x/y: disk full");
    }

    #[test]
    fn report_skips_a_cause_the_message_already_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(report(&err), "outer: inner");
    }

    #[test]
    fn an_exited_component_with_a_bind_error_is_a_port_conflict() {
        assert!(log_mentions_port_conflict(
            "listen tcp 127.0.0.1:4001: bind: address already in use"
        ));
        assert!(!log_mentions_port_conflict("permission denied"));
    }
}
