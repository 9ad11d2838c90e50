//! Where the CPU goes: CPU seconds of the control-plane processes (found by their work
//! directory on the command line), the operator and this process, from `/proc`, so a phase can
//! report who used the machine's cores while it ran.

use std::collections::BTreeMap;
use std::path::Path;

use crate::operator::read_usage;

/// CPU seconds by process name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuSnapshot(pub BTreeMap<String, f64>);

impl CpuSnapshot {
    /// CPU seconds of every process whose command line mentions `work_dir` (named after its
    /// executable), and of the `extra` pids under their given names.
    pub fn take(work_dir: &Path, extra: &[(&str, u32)]) -> CpuSnapshot {
        let mut out = BTreeMap::new();
        let needle = work_dir.display().to_string();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                // Named pids are counted once, under their own name.
                if extra.iter().any(|(_, p)| *p == pid) {
                    continue;
                }
                let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                    continue;
                };
                let args: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                if !args.iter().skip(1).any(|a| a.contains(&needle)) {
                    continue;
                }
                let name = args
                    .first()
                    .and_then(|a| Path::new(a).file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| pid.to_string());
                if let Ok(u) = read_usage(pid) {
                    *out.entry(name).or_insert(0.0) += u.cpu_seconds;
                }
            }
        }
        for (name, pid) in extra {
            if let Ok(u) = read_usage(*pid) {
                *out.entry((*name).to_string()).or_insert(0.0) += u.cpu_seconds;
            }
        }
        CpuSnapshot(out)
    }

    /// CPU seconds used between `earlier` and this snapshot, by process.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuSnapshot {
        CpuSnapshot(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - earlier.0.get(k).copied().unwrap_or(0.0)))
                .collect(),
        )
    }

    /// `kube-apiserver 30.1 · etcd 8.2 · ... (total 45.0)`, largest first.
    pub fn describe(&self) -> String {
        let mut v: Vec<(&String, &f64)> = self.0.iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts = v
            .iter()
            .map(|(k, s)| format!("{k} {s:.1}"))
            .collect::<Vec<_>>()
            .join(" · ");
        format!("{parts} (total {:.1})", self.total())
    }

    pub fn total(&self) -> f64 {
        self.0.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_between_snapshots_is_the_difference_by_process() {
        let a = CpuSnapshot(
            [
                ("etcd".to_string(), 1.0),
                ("kube-apiserver".to_string(), 2.0),
            ]
            .into(),
        );
        let b = CpuSnapshot(
            [
                ("etcd".to_string(), 3.0),
                ("kube-apiserver".to_string(), 12.0),
                ("operator".to_string(), 4.0),
            ]
            .into(),
        );
        let d = b.since(&a);
        assert_eq!(d.total(), 16.0);
        assert_eq!(
            d.describe(),
            "kube-apiserver 10.0 · operator 4.0 · etcd 2.0 (total 16.0)"
        );
    }

    #[test]
    fn this_process_is_found_as_an_extra_pid() {
        let s = CpuSnapshot::take(
            Path::new("/nonexistent-work-dir"),
            &[("me", std::process::id())],
        );
        assert!(s.0.contains_key("me"));
        assert_eq!(s.0.len(), 1);
    }
}
