//! Phase 3, the baseline: runs `bench/baseline.py` (official ACS SDK + official Kubernetes
//! client, sequential) for a sample of tokens and extrapolates its time linearly.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;

/// Where the baseline runs.
#[derive(Debug, Clone)]
pub struct BaselineSpec {
    pub python: PathBuf,
    pub script: PathBuf,
    pub kubeconfig: PathBuf,
    pub ca_file: PathBuf,
    pub connection_string: String,
    pub namespace: String,
    pub tokens: usize,
    pub tokens_per_user: usize,
    /// The script's output.
    pub log: PathBuf,
}

/// The script's last line.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BaselineRun {
    pub tokens: usize,
    pub users: usize,
    pub seconds: f64,
}

impl BaselineRun {
    /// The time for `tokens` tokens at the sample's rate.
    pub fn extrapolate(&self, tokens: usize) -> Duration {
        let per_token = self.seconds / self.tokens.max(1) as f64;
        Duration::from_secs_f64(per_token * tokens as f64)
    }
}

/// Reads the JSON summary from the script's output (its last non-empty line).
pub fn parse_output(stdout: &str) -> Result<BaselineRun, Error> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    serde_json::from_str(line).map_err(|e| Error::Parse {
        what: "the baseline's summary line",
        detail: e.to_string(),
    })
}

/// Runs the script to completion.
pub async fn run(spec: &BaselineSpec) -> Result<BaselineRun, Error> {
    let log = std::fs::File::create(&spec.log).map_err(Error::io("create", &spec.log))?;
    let out = tokio::process::Command::new(&spec.python)
        .arg(&spec.script)
        .arg("--tokens")
        .arg(spec.tokens.to_string())
        .arg("--tokens-per-user")
        .arg(spec.tokens_per_user.to_string())
        .arg("--namespace")
        .arg(&spec.namespace)
        .env(
            "COMMUNICATION_SERVICES_CONNECTION_STRING",
            &spec.connection_string,
        )
        .env("KUBECONFIG", &spec.kubeconfig)
        // requests (the SDK's transport) must trust the emulator's CA.
        .env("REQUESTS_CA_BUNDLE", &spec.ca_file)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .output()
        .await
        .map_err(Error::io("run", &spec.python))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::Baseline {
            status: out.status,
            log: spec.log.clone(),
        });
    }
    parse_output(&stdout)
}

/// `bench/baseline.py` next to this crate.
pub fn default_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline.py")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_the_last_line_and_extrapolates_linearly() {
        let run =
            parse_output("warning: x\n{\"tokens\": 200, \"users\": 40, \"seconds\": 8.0}\n\n")
                .unwrap();
        assert_eq!(run.users, 40);
        assert_eq!(run.extrapolate(5000), Duration::from_secs(200));
    }

    #[test]
    fn output_without_a_summary_is_an_error() {
        assert!(parse_output("Traceback ...\n").is_err());
        assert!(parse_output("").is_err());
    }
}
