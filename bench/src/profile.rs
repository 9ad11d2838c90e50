//! What bounds a figure: a `perf record` of the whole machine (software `cpu-clock` event, which
//! works where hardware counters are not exposed) while a cold start runs, then the operator's
//! top symbols from `perf report` (shares of its own samples). Without a working `perf` the
//! phase has only the `/proc` CPU accounting (`cpu.rs`). kube-apiserver is a stripped Go binary
//! perf cannot name; docs/benchmarks.md profiles it through its own `/debug/pprof` endpoint.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Symbols with their share of a process's samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// Where `perf report` wrote the full text.
    pub report: PathBuf,
    pub operator: Vec<(String, f64)>,
}

/// A `perf record` in progress.
pub struct Recording {
    child: Child,
    data: PathBuf,
    base: PathBuf,
}

/// `perf` can sample here (installed, and permitted to record).
fn perf_works() -> bool {
    Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Recording {
    /// Starts sampling every CPU at 99 Hz with call graphs into `{base}.data`; `None` when
    /// `perf` is missing or not permitted.
    pub fn start(base: &Path) -> Option<Recording> {
        if !perf_works() {
            eprintln!("[acs-bench] perf is not usable here: only /proc CPU accounting");
            return None;
        }
        let data = base.with_extension("data");
        let child = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "99", "-g", "-a", "-o"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Recording {
            child,
            data,
            base: base.to_path_buf(),
        })
    }

    /// Stops the recording (SIGINT, as perf expects) and reads the top symbols of the operator
    /// (`operator_pid`).
    pub fn finish(mut self, operator_pid: u32) -> Profile {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let report = self.base.with_extension("txt");
        let operator = top(&self.data, &["--pid", &operator_pid.to_string()]);
        let mut text = String::from("# operator: share of its samples by symbol\n");
        for (sym, pct) in &operator {
            text.push_str(&format!("{pct:6.2}%  {sym}\n"));
        }
        let _ = std::fs::write(&report, text);
        Profile { report, operator }
    }
}

/// The symbols above 0.5% of the samples `filter` selects, largest first.
fn top(data: &Path, filter: &[&str]) -> Vec<(String, f64)> {
    let out = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "-g", "none"])
        .args(["--sort", "sym", "--percentage", "relative"])
        .args(["--percent-limit", "0.5", "-i"])
        .arg(data)
        .args(filter)
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) => parse_report(&String::from_utf8_lossy(&o.stdout)),
        Err(_) => Vec::new(),
    }
}

/// Lines like `    12.34%  [.] runtime.mallocgc`.
pub fn parse_report(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let l = l.trim();
            let (pct, rest) = l.split_once('%')?;
            let pct: f64 = pct.trim().parse().ok()?;
            let sym = rest.trim();
            let sym = sym
                .strip_prefix("[.]")
                .or_else(|| sym.strip_prefix("[k]"))
                .unwrap_or(sym)
                .trim();
            (!sym.is_empty()).then(|| (sym.to_string(), pct))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_become_symbols_with_shares() {
        let text = "# Samples: 1K\n#\n    12.34%  [.] runtime.mallocgc\n     3.10%  [k] _raw_spin_unlock_irqrestore\n\n";
        assert_eq!(
            parse_report(text),
            [
                ("runtime.mallocgc".to_string(), 12.34),
                ("_raw_spin_unlock_irqrestore".to_string(), 3.10)
            ]
        );
    }
}
