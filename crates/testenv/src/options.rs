//! How a control plane is started: work directory, deadlines, CRDs to install first, and the
//! environment variables (envtest's where they exist) that override the defaults.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;

/// envtest's start deadline variable (a Go duration such as `90s`).
pub const START_TIMEOUT_ENV: &str = "KUBEBUILDER_CONTROLPLANE_START_TIMEOUT";
/// envtest's stop deadline variable (a Go duration).
pub const STOP_TIMEOUT_ENV: &str = "KUBEBUILDER_CONTROLPLANE_STOP_TIMEOUT";
/// Set to `1`/`true` to keep the work directory (logs, audit log, certificates) after stopping.
pub const KEEP_WORK_DIR_ENV: &str = "ACS_TESTENV_KEEP_WORK_DIR";
/// Extra kube-apiserver flags, separated by whitespace (e.g. `--v=4` while debugging).
pub const APISERVER_ARGS_ENV: &str = "ACS_TESTENV_APISERVER_ARGS";
/// The address kube-apiserver binds to (default 127.0.0.1), e.g. the node's bridge address so
/// pods reach it.
pub const BIND_ADDRESS_ENV: &str = "ACS_TESTENV_BIND_ADDRESS";
/// The name of the node the control plane serves (a kubelet started by `scripts/node.sh`); unset:
/// no node.
pub const NODE_NAME_ENV: &str = "ACS_TESTENV_NODE_NAME";

/// Start options. `Options::from_env()` is what tests and the `acs-testenv` binary use.
#[derive(Clone, Debug)]
pub struct Options {
    /// Parent directory for the work directory; the system temp dir when `None`.
    pub work_dir_parent: Option<PathBuf>,
    /// Keep the work directory after `stop()` (it is always kept when start-up fails).
    pub keep_work_dir: bool,
    /// Deadline for one start attempt, from spawning etcd to the last readiness check. 60 s by
    /// default: kube-apiserver alone needs up to ~10 s on two busy cores.
    pub start_timeout: Duration,
    /// How long each component gets between SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
    /// Directories of CRD YAML installed (and awaited Established) before
    /// kube-controller-manager starts, because its garbage collector only discovers new kinds
    /// on a ~30 s resync.
    pub crd_dirs: Vec<PathBuf>,
    /// Run kube-controller-manager (garbage collection, namespace deletion, ServiceAccounts).
    pub controller_manager: bool,
    /// Extra kube-apiserver flags, appended after the harness's own.
    pub extra_apiserver_args: Vec<String>,
    /// The address kube-apiserver binds to and advertises (etcd stays on 127.0.0.1).
    pub bind_address: IpAddr,
    /// Serve a node of this name (its kubelet reaching the apiserver on `bind_address`): Node
    /// authorization, the kubelet's certificates and kubeconfig, and the controllers that pods
    /// and workloads need.
    pub node_name: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            work_dir_parent: None,
            keep_work_dir: false,
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(20),
            crd_dirs: Vec::new(),
            controller_manager: true,
            extra_apiserver_args: Vec::new(),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            node_name: None,
        }
    }
}

impl Options {
    /// Defaults overridden by `KUBEBUILDER_CONTROLPLANE_START_TIMEOUT`,
    /// `KUBEBUILDER_CONTROLPLANE_STOP_TIMEOUT`, `ACS_TESTENV_KEEP_WORK_DIR` and
    /// `ACS_TESTENV_APISERVER_ARGS`, `ACS_TESTENV_BIND_ADDRESS` and `ACS_TESTENV_NODE_NAME`.
    pub fn from_env() -> Result<Options, Error> {
        let mut options = Options::default();
        if let Some(d) = duration_env(START_TIMEOUT_ENV)? {
            options.start_timeout = d;
        }
        if let Some(d) = duration_env(STOP_TIMEOUT_ENV)? {
            options.stop_timeout = d;
        }
        options.keep_work_dir = std::env::var(KEEP_WORK_DIR_ENV)
            .map(|v| matches!(v.as_str(), "1" | "true" | "yes"))
            .unwrap_or(false);
        if let Ok(args) = std::env::var(APISERVER_ARGS_ENV) {
            options.extra_apiserver_args = args.split_whitespace().map(str::to_string).collect();
        }
        if let Ok(value) = std::env::var(BIND_ADDRESS_ENV) {
            if !value.trim().is_empty() {
                options.bind_address = value.trim().parse().map_err(|_| Error::BadBindAddress {
                    value: value.clone(),
                })?;
            }
        }
        options.node_name = std::env::var(NODE_NAME_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        Ok(options)
    }

    /// Adds a directory of CRD YAML files to install before the controller manager starts.
    pub fn with_crds_dir(mut self, dir: impl Into<PathBuf>) -> Options {
        self.crd_dirs.push(dir.into());
        self
    }
}

fn duration_env(var: &'static str) -> Result<Option<Duration>, Error> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => parse_go_duration(value.trim())
            .map(Some)
            .ok_or(Error::BadDuration { var, value }),
        _ => Ok(None),
    }
}

/// Parses a non-negative Go duration (`300ms`, `1.5s`, `2m30s`, `1h`); a bare number is seconds,
/// as envtest accepts too.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let value: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(parse_go_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_go_duration("45"), Some(Duration::from_secs(45)));
    }

    #[test]
    fn malformed_durations_are_rejected() {
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration("10x"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("-5s"), None);
    }
}
