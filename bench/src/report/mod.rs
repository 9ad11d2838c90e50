//! Pure: every phase's figures as one Markdown table, and each goal with met / not met. A run
//! may hold any of the three parts (`--phases`); each prints its own rows and goals.

mod compare;
mod scale;

use std::fmt::Write;
use std::time::Duration;

use crate::baseline::BaselineRun;
use crate::floor::FloorResult;
use crate::phases::{ColdStart, Restart, Steady};
use crate::probe;
use crate::renewal::RenewalRun;
use crate::spread::Spread;

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Results {
    pub label: String,
    pub scale: Option<ScaleRun>,
    pub compare: Option<CompareRun>,
    pub renewal: Option<RenewalRun>,
    pub churn: Option<crate::churn::ChurnRun>,
}

/// Phases 1, 2, 5, 6 and 7 at the large scale.
#[derive(Debug, Clone)]
pub struct ScaleRun {
    pub floor: FloorResult,
    pub operator: ColdStart,
    pub steady: Steady,
    pub restart: Restart,
    pub spread: Option<Spread>,
}

/// Phases 3 and 4 at the comparison scale, and the apply-to-Secret latency.
#[derive(Debug, Clone)]
pub struct CompareRun {
    /// The baseline and the operator at each ACS latency (0 = loopback).
    pub runs: Vec<LatencyRun>,
    /// Apply-to-Secret samples on a quiet operator.
    pub quiet: probe::Samples,
    /// The cold start with the real limits and default budget (probes taken during it).
    pub limited: ColdStart,
}

/// The baseline and the operator with `ms` added to every ACS call.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    pub ms: u64,
    pub baseline: BaselineRun,
    /// The baseline extrapolated to the operator's token count.
    pub t_script: Duration,
    pub operator: ColdStart,
}

/// One goal of the issue.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    pub name: &'static str,
    pub target: &'static str,
    pub measured: String,
    pub met: bool,
    /// Goals of correctness (zero calls, the model matching the counters) hold at any scale;
    /// the smoke run enforces them.
    pub exact: bool,
}

/// `12,345`.
pub fn int(n: f64) -> String {
    let n = n.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// `12.3 s`.
pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// `123 ms`, or `-` for nothing.
fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| {
        format!("{} ms", int(d.as_secs_f64() * 1000.0))
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn per(n: f64, d: usize) -> f64 {
    n / d.max(1) as f64
}

fn verbs(kube: &std::collections::BTreeMap<String, f64>) -> String {
    kube.iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(v, n)| format!("{v} {}", int(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

type Row = (&'static str, String, String);

/// The goals, in the order.
pub fn goals(r: &Results) -> Vec<Goal> {
    let mut g = Vec::new();
    if let Some(s) = &r.scale {
        g.extend(scale::goals(s));
    }
    if let Some(c) = &r.compare {
        g.extend(compare::goals(c));
    }
    if let Some(rn) = &r.renewal {
        g.extend(compare::renewal_goals(rn));
    }
    if let Some(c) = &r.churn {
        g.extend(crate::churn::goals(c));
    }
    g
}

/// The table, as printed and as recorded in docs/benchmarks.md.
pub fn render(r: &Results) -> String {
    let mut rows: Vec<Row> = Vec::new();
    if let Some(s) = &r.scale {
        scale::rows(s, &mut rows);
    }
    if let Some(c) = &r.compare {
        compare::rows(c, &mut rows);
    }
    if let Some(rn) = &r.renewal {
        compare::renewal_rows(rn, &mut rows);
    }
    if let Some(c) = &r.churn {
        crate::churn::rows(c, &mut rows);
    }
    let mut out = String::new();
    let _ = writeln!(out, "acs-identity-operator benchmark ({})", r.label);
    let _ = writeln!(out);
    let _ = writeln!(out, "| Phase | Figure | Value |");
    let _ = writeln!(out, "|---|---|---|");
    for (phase, figure, value) in rows {
        let _ = writeln!(out, "| {phase} | {figure} | {value} |");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| Goal | Target | Measured | Status |");
    let _ = writeln!(out, "|---|---|---|---|");
    for g in goals(r) {
        let status = if g.met { "met" } else { "NOT MET" };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {status} |",
            g.name, g.target, g.measured
        );
    }
    out
}

#[cfg(test)]
mod tests;
