//! The operator as a child process: start it, wait for `/readyz`, scrape `/metrics`, read its
//! peak memory and CPU time from `/proc`, and stop it with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::error::Error;
use crate::metrics::Samples;

/// What starting an operator needs.
#[derive(Debug, Clone)]
pub struct OperatorSpec {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
    pub acs_ca: PathBuf,
    /// Log file; each start appends.
    pub log: PathBuf,
}

/// Memory and CPU of a process, from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Peak resident set size (VmHWM), in KiB.
    pub peak_rss_kib: u64,
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
}

/// A running operator.
pub struct Operator {
    child: Child,
    pid: u32,
    metrics_url: String,
    readyz_url: String,
    log: PathBuf,
    http: reqwest::Client,
    /// When the process was spawned.
    pub started: Instant,
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(Error::io("bind a free port on", Path::new("127.0.0.1")))?;
    let port = l
        .local_addr()
        .map_err(Error::io("read the port of", Path::new("127.0.0.1")))?
        .port();
    Ok(port)
}

impl Operator {
    /// Starts `acs-identity-operator run` with `extra` flags appended.
    pub fn spawn(spec: &OperatorSpec, extra: &[String]) -> Result<Operator, Error> {
        let port = free_port()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(Error::io("open", &spec.log))?;
        let log_err = log.try_clone().map_err(Error::io("open", &spec.log))?;
        let mut cmd = Command::new(&spec.binary);
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(&spec.kubeconfig)
            .arg("--acs-ca-cert")
            .arg(&spec.acs_ca)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--log-level")
            .arg("warn")
            .args(extra)
            // The benchmark's own environment must not change the operator's defaults.
            .env_remove("CONCURRENCY")
            .env_remove("ACS_REQUESTS_PER_SECOND")
            .env_remove("ACS_REQUEST_BURST")
            .env_remove("WATCH_NAMESPACES")
            // The emulator listens on loopback; a flag in `extra` still wins over this.
            .env(
                "ALLOWED_ENDPOINT_HOSTS",
                format!(
                    "{},127.0.0.1",
                    acs_identity_operator::endpoint_allow::DEFAULT
                ),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        let started = Instant::now();
        let child = cmd.spawn().map_err(|source| Error::SpawnOperator {
            path: spec.binary.clone(),
            source,
        })?;
        let pid = child.id().ok_or_else(|| Error::Parse {
            what: "the operator's pid",
            detail: "the process has already exited".into(),
        })?;
        Ok(Operator {
            child,
            pid,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            readyz_url: format!("http://127.0.0.1:{port}/readyz"),
            log: spec.log.clone(),
            http: reqwest::Client::new(),
            started,
        })
    }

    /// Fails if the process has exited.
    pub fn ensure_running(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(Error::OperatorExited {
                status,
                log: self.log.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Waits until `/readyz` answers 200 (caches synced); returns the time since spawn.
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<Duration, Error> {
        let until = self.started + deadline;
        loop {
            self.ensure_running()?;
            if let Ok(r) = self.http.get(&self.readyz_url).send().await {
                if r.status().is_success() {
                    return Ok(self.started.elapsed());
                }
            }
            if Instant::now() >= until {
                return Err(Error::Timeout {
                    what: "the operator's /readyz".into(),
                    after: deadline,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Scrapes `/metrics` without the per-object series (`?objects=false`): no figure reads
    /// them, and at 20,000 tokens they are 6 MiB that a poll every 100 ms would have the
    /// operator render, and this process parse, while being measured.
    pub async fn metrics(&mut self) -> Result<Samples, Error> {
        let url = format!("{}?objects=false", self.metrics_url);
        Ok(Samples::parse(&self.get_text(&url).await?.0))
    }

    /// Scrapes `/metrics` whole: the text and how long the scrape took.
    pub async fn scrape(&mut self) -> Result<(String, Duration), Error> {
        let url = self.metrics_url.clone();
        self.get_text(&url).await
    }

    async fn get_text(&mut self, url: &str) -> Result<(String, Duration), Error> {
        self.ensure_running()?;
        let started = Instant::now();
        let text = self
            .http
            .get(url)
            .send()
            .await
            .map_err(Error::http("scrape the operator's metrics"))?
            .text()
            .await
            .map_err(Error::http("read the operator's metrics"))?;
        Ok((text, started.elapsed()))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Peak RSS and CPU time so far.
    pub fn usage(&self) -> Result<Usage, Error> {
        read_usage(self.pid)
    }

    /// SIGTERM, then up to 30 s for a graceful exit, then SIGKILL.
    pub async fn stop(mut self) -> Result<(), Error> {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let pid = libc::pid_t::try_from(self.pid).unwrap_or(0);
        if pid > 0 {
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => {
                let _ = self.child.kill().await;
                Ok(())
            }
        }
    }
}

/// Reads VmHWM from `/proc/<pid>/status` and utime + stime from `/proc/<pid>/stat`.
pub fn read_usage(pid: u32) -> Result<Usage, Error> {
    let status_path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = std::fs::read_to_string(&status_path).map_err(Error::io("read", &status_path))?;
    let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
    let stat = std::fs::read_to_string(&stat_path).map_err(Error::io("read", &stat_path))?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Ok(Usage {
        peak_rss_kib: parse_vm_hwm(&status).ok_or_else(|| Error::Parse {
            what: "VmHWM",
            detail: status_path.display().to_string(),
        })?,
        cpu_seconds: parse_cpu_ticks(&stat).ok_or_else(|| Error::Parse {
            what: "utime and stime",
            detail: stat_path.display().to_string(),
        })? as f64
            / ticks,
    })
}

/// `VmHWM:    12345 kB` → 12345.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    status_kib(status, "VmHWM:")
}

/// The value in KiB of the `/proc/<pid>/status` line starting with `field` (`VmRSS:`, ...).
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// utime + stime (fields 14 and 15) of `/proc/<pid>/stat`; the command name (field 2) may hold
/// spaces, so fields are counted after its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_read_from_vm_hwm() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmHWM:\t   4242 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(4242));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "77 (a b) c) S 1 77 77 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 4 0 5 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
    }

    #[test]
    fn this_process_has_a_readable_usage() {
        let u = read_usage(std::process::id()).unwrap();
        assert!(u.peak_rss_kib > 0);
        assert!(u.cpu_seconds >= 0.0);
    }
}
