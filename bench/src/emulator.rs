//! The ACS emulator for the benchmark: started in this process, driven through its admin API
//! (`/_emulator/stats`, `/_emulator/config`) exactly as an outside tool would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use acs_emulator::{EmulatorConfig, RunningEmulator};
use serde::Deserialize;

use crate::error::Error;

/// Request counters since the last reset (the fields of `GET /_emulator/stats` we read).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Requests by operation, then by answer status.
    pub operations: BTreeMap<String, BTreeMap<String, u64>>,
    pub total: u64,
    /// 429s of the rate limits.
    pub throttled: u64,
    /// Every 429 sent.
    pub total429: u64,
}

impl Stats {
    /// Requests of `operation`, any status.
    pub fn calls(&self, operation: &str) -> u64 {
        self.operations
            .get(operation)
            .map_or(0, |by_status| by_status.values().sum())
    }
}

/// A running emulator and a client for its admin API.
pub struct Emulator {
    running: RunningEmulator,
    http: reqwest::Client,
    /// Its CA certificate, written to a file for the operator and the Python baseline.
    pub ca_file: PathBuf,
}

impl Emulator {
    /// Starts an HTTPS emulator on a free loopback port with rate limits off, and writes its CA
    /// into `dir`.
    pub async fn start(dir: &Path) -> Result<Emulator, Error> {
        let config = EmulatorConfig {
            rate_limits: acs_emulator::RateLimits::off(),
            ..EmulatorConfig::default()
        };
        let running = acs_emulator::start(config)
            .await
            .map_err(Error::StartEmulator)?;
        let ca_file = dir.join("acs-emulator-ca.pem");
        std::fs::write(&ca_file, running.ca_pem()).map_err(Error::io("write", &ca_file))?;
        let ca = reqwest::Certificate::from_pem(running.ca_pem().as_bytes())
            .map_err(Error::http("read the emulator CA"))?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .map_err(Error::http("build the admin client"))?;
        Ok(Emulator {
            running,
            http,
            ca_file,
        })
    }

    /// `endpoint=https://127.0.0.1:PORT/;accesskey=...`.
    pub fn connection_string(&self) -> String {
        self.running.connection_string()
    }

    /// The emulator's PEM CA.
    pub fn ca_pem(&self) -> &str {
        self.running.ca_pem()
    }

    /// Current request counters.
    pub async fn stats(&self) -> Result<Stats, Error> {
        self.http
            .get(format!("{}/stats", self.running.admin_url()))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(Error::http("read the emulator stats"))?
            .json()
            .await
            .map_err(Error::http("decode the emulator stats"))
    }

    /// Zeroes the request counters.
    pub async fn reset_stats(&self) -> Result<(), Error> {
        self.http
            .post(format!("{}/stats/reset", self.running.admin_url()))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(Error::http("reset the emulator stats"))?;
        Ok(())
    }

    /// `"off"` or `"default"` (the service's limits: 1,000 issues per 30 s, ...).
    pub async fn set_rate_limits(&self, limits: &str) -> Result<(), Error> {
        self.http
            .put(format!("{}/config", self.running.admin_url()))
            .json(&serde_json::json!({ "rateLimits": limits }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(Error::http("set the emulator rate limits"))?;
        Ok(())
    }

    /// Adds `ms` of latency to every Identity request (fault injection); 0 clears every fault.
    pub async fn set_latency(&self, ms: u64) -> Result<(), Error> {
        let url = format!("{}/faults", self.running.admin_url());
        let req = if ms == 0 {
            self.http.delete(url)
        } else {
            self.http
                .put(url)
                .json(&serde_json::json!({ "latencyMs": ms }))
        };
        req.send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(Error::http("set the emulator latency"))?;
        Ok(())
    }

    /// Stops serving.
    /// `PUT /_emulator/faults` with `faults` (the emulator's JSON form).
    pub async fn set_faults(&self, faults: serde_json::Value) -> Result<(), Error> {
        self.http
            .put(format!("{}/faults", self.running.admin_url()))
            .json(&faults)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(Error::http("set the emulator faults"))?;
        Ok(())
    }

    /// Tokens the emulator issues live `seconds` (`None`: what was requested).
    pub async fn set_token_lifetime(&self, seconds: Option<u64>) -> Result<(), Error> {
        self.http
            .put(format!("{}/config", self.running.admin_url()))
            .json(&serde_json::json!({ "tokenLifetimeSeconds": seconds }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(Error::http("set the emulator token lifetime"))?;
        Ok(())
    }

    pub async fn shutdown(self) {
        let _ = self.running.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_add_up_every_status_of_an_operation() {
        let s: Stats = serde_json::from_str(
            r#"{"since":"x","operations":{"issueAccessToken":{"200":90,"429":3},"createIdentity":{"201":20}},
                "total":113,"throttled":3,"total429":3,"injected":{},"dropped":0,"authFailures":0}"#,
        )
        .unwrap();
        assert_eq!(s.calls("issueAccessToken"), 93);
        assert_eq!(s.calls("createIdentity"), 20);
        assert_eq!(s.calls("revokeAccessTokens"), 0);
        assert_eq!(s.throttled, 3);
    }
}
