//! Pure: every phase's figures as one Markdown table, and each goal with met / not met.

use std::fmt::Write;
use std::time::Duration;

use crate::baseline::BaselineRun;
use crate::floor::FloorResult;
use crate::phases::{ColdStart, Restart, Steady};
use crate::spread::Spread;

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Results {
    pub label: String,
    pub floor: FloorResult,
    pub baseline: BaselineRun,
    /// The baseline extrapolated to the operator's token count.
    pub t_script: Duration,
    pub operator: ColdStart,
    pub steady: Steady,
    pub restart: Restart,
    pub spread: Option<Spread>,
    pub limited: ColdStart,
    /// The baseline and the operator again with latency added to every ACS call.
    pub latency: Option<LatencyRun>,
}

/// The sensitivity run: both sides with `ms` added to every ACS call.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    pub ms: u64,
    pub baseline: BaselineRun,
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
    /// Goals of correctness (zero calls) hold at any scale; the smoke run enforces them.
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

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// The goals, in the issue's order.
pub fn goals(r: &Results) -> Vec<Goal> {
    let op_vs_floor = ratio(r.operator.t_ready, r.floor.t_floor);
    let script_vs_op = ratio(r.t_script, r.operator.t_ready);
    let rss = mib(r.operator.usage.peak_rss_kib);
    let mut g = vec![
        Goal {
            name: "T_op / T_floor",
            target: "≤ 1.5",
            measured: format!("{op_vs_floor:.2}"),
            met: op_vs_floor <= 1.5,
            exact: false,
        },
        Goal {
            name: "T_script / T_op",
            target: "≥ 5",
            measured: format!("{script_vs_op:.1}"),
            met: script_vs_op >= 5.0,
            exact: false,
        },
        Goal {
            name: "operator peak RSS",
            target: "≤ 64 MiB at 5,000 tokens",
            measured: format!("{rss:.1} MiB at {} tokens", int(r.operator.tokens as f64)),
            met: rss <= 64.0,
            exact: false,
        },
        Goal {
            name: "ACS calls, quiet minute",
            target: "0",
            measured: int(r.steady.acs_calls as f64),
            met: r.steady.acs_calls == 0,
            exact: true,
        },
        Goal {
            name: "apiserver writes, quiet minute",
            target: "0",
            measured: int(r.steady.writes),
            met: r.steady.writes == 0.0,
            exact: true,
        },
        Goal {
            name: "ACS calls after a restart",
            target: "0",
            measured: int(r.restart.acs_calls as f64),
            met: r.restart.acs_calls == 0,
            exact: true,
        },
        Goal {
            name: "429s with the real limits",
            target: "≈ 0 (budget below the limit)",
            measured: int(r.limited.acs.throttled as f64),
            met: r.limited.acs.throttled == 0,
            exact: false,
        },
    ];
    g.push(match &r.spread {
        Some(s) => Goal {
            name: "busiest minute / fair share",
            target: "≤ 2×",
            measured: format!("{:.2}×", s.ratio),
            met: s.ratio <= 2.0,
            exact: false,
        },
        None => Goal {
            name: "busiest minute / fair share",
            target: "≤ 2×",
            measured: "no renewal times".into(),
            met: false,
            exact: false,
        },
    });
    g
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

/// The table, as printed and as recorded in docs/benchmarks.md.
pub fn render(r: &Results) -> String {
    let mut rows: Vec<(&str, String, String)> = Vec::new();
    let f = &r.floor;
    let sweep = f
        .sweep
        .iter()
        .map(|(w, rate)| format!("{w}: {}", int(*rate)))
        .collect::<Vec<_>>()
        .join(" · ");
    rows.push(("1 Floor", "writes/s by workers (sweep)".into(), sweep));
    rows.push((
        "1 Floor",
        format!(
            "T_floor: {} writes at {} workers",
            int(f.writes as f64),
            f.best_workers
        ),
        format!(
            "{} ({} writes/s)",
            secs(f.t_floor),
            int(f.writes_per_second())
        ),
    ));
    rows.push((
        "1 Floor",
        format!(
            "T_mix: the operator's whole sequence, {} requests (+ events, Secret reads)",
            int(f.mix_requests as f64)
        ),
        format!(
            "{} (T_op / T_mix = {:.2})",
            secs(f.t_mix),
            ratio(r.operator.t_ready, f.t_mix)
        ),
    ));
    rows.push((
        "1 Floor",
        format!(
            "CPU seconds by process during T_floor (2 cores: {:.1} available)",
            2.0 * f.t_floor.as_secs_f64()
        ),
        f.cpu.describe(),
    ));
    let o = &r.operator;
    rows.push((
        "2 Operator",
        format!(
            "T_op: {} users + {} tokens, cold, to all Ready",
            int(o.users as f64),
            int(o.tokens as f64)
        ),
        format!(
            "{} (/readyz {}, quiet {}; objects applied before the start in {})",
            secs(o.t_ready),
            secs(o.readyz),
            secs(o.settled),
            secs(o.apply)
        ),
    ));
    rows.push((
        "2 Operator",
        "peak RSS (VmHWM) · CPU time".into(),
        format!(
            "{:.1} MiB · {:.1} s",
            mib(o.usage.peak_rss_kib),
            o.usage.cpu_seconds
        ),
    ));
    let issue = o.acs.calls("issueAccessToken") as f64;
    let create = o.acs.calls("createIdentity") as f64;
    rows.push((
        "2 Operator",
        format!(
            "CPU seconds by process during T_op (2 cores: {:.1} available)",
            2.0 * o.t_ready.as_secs_f64()
        ),
        o.cpu.describe(),
    ));
    rows.push((
        "2 Operator",
        "ACS calls per token".into(),
        format!(
            "{:.2} ({} issue + {} create identity; {} total)",
            per(o.acs.total as f64, o.tokens),
            int(issue),
            int(create),
            int(o.acs.total as f64)
        ),
    ));
    rows.push((
        "2 Operator",
        "apiserver requests per object".into(),
        format!(
            "{:.2} ({:.2} writes): {}",
            per(o.kube_total, o.objects()),
            per(o.kube_writes, o.objects()),
            verbs(&o.kube)
        ),
    ));
    // The floor's model of the operator's sequence, beside what the operator sent in this run:
    // if they drift apart, T_mix no longer says what the design costs.
    rows.push((
        "2 Operator",
        "requests per object: the floor's model · the operator's counters".into(),
        format!(
            "{:.2} · {:.2} (gets per token: 1.00 · {:.2})",
            per(r.floor.mix_requests as f64, o.objects()),
            per(o.kube_total, o.objects()),
            per(o.kube.get("get").copied().unwrap_or(0.0), o.tokens)
        ),
    ));
    rows.push((
        "2 Operator",
        "reconciles per object (users · tokens)".into(),
        format!(
            "{:.2} · {:.2}",
            per(o.reconciles_user, o.users),
            per(o.reconciles_token, o.tokens)
        ),
    ));
    let b = &r.baseline;
    rows.push((
        "3 Baseline",
        format!(
            "Python SDK + kubernetes client, sequential: {} tokens ({} users)",
            int(b.tokens as f64),
            int(b.users as f64)
        ),
        format!(
            "{} ({:.1} ms per token)",
            secs(Duration::from_secs_f64(b.seconds)),
            b.seconds * 1000.0 / b.tokens.max(1) as f64
        ),
    ));
    rows.push((
        "3 Baseline",
        format!("T_script, extrapolated to {} tokens", int(o.tokens as f64)),
        secs(r.t_script),
    ));
    if let Some(lr) = &r.latency {
        rows.push((
            "3 Baseline",
            format!(
                "+{} ms per ACS call: sample {} tokens · T_script · T_op · T_script / T_op",
                lr.ms,
                int(lr.baseline.tokens as f64)
            ),
            format!(
                "{} · {} · {} · {:.1}",
                secs(Duration::from_secs_f64(lr.baseline.seconds)),
                secs(lr.t_script),
                secs(lr.operator.t_ready),
                ratio(lr.t_script, lr.operator.t_ready)
            ),
        ));
    }
    let l = &r.limited;
    rows.push((
        "4 Real limits",
        format!(
            "{} users + {} tokens to all Ready, default budget",
            int(l.users as f64),
            int(l.tokens as f64)
        ),
        secs(l.t_ready),
    ));
    rows.push((
        "4 Real limits",
        "429s received (of ACS calls)".into(),
        format!(
            "{} (of {})",
            int(l.acs.throttled as f64),
            int(l.acs.total as f64)
        ),
    ));
    let s = &r.steady;
    rows.push((
        "5 Steady state",
        format!("quiet {}: ACS calls · apiserver writes", secs(s.window)),
        format!(
            "{} · {} (gets {}, reconciles {})",
            int(s.acs_calls as f64),
            int(s.writes),
            int(s.gets),
            int(s.reconciles)
        ),
    ));
    let rs = &r.restart;
    rows.push((
        "6 Restart",
        "ACS calls for tokens not due · apiserver writes · gets".into(),
        format!(
            "{} · {} · {}",
            int(rs.acs_calls as f64),
            int(rs.writes),
            int(rs.gets)
        ),
    ));
    rows.push((
        "6 Restart",
        "ready again: /readyz · every object re-verified".into(),
        format!("{} · {}", secs(rs.readyz), secs(rs.reverified)),
    ));
    match &r.spread {
        Some(sp) => rows.push((
            "7 Renewal spread",
            format!(
                "busiest minute of {} renewals vs fair share ({:.0}-minute window)",
                int(sp.renewals as f64),
                sp.window_seconds / 60.0
            ),
            format!(
                "{} = {:.2}% vs {:.2}% ({:.2}×)",
                sp.busiest_minute,
                sp.busiest_share * 100.0,
                sp.fair_share * 100.0,
                sp.ratio
            ),
        )),
        None => rows.push(("7 Renewal spread", "renewal times".into(), "none".into())),
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
mod tests {
    use super::*;
    use crate::cpu::CpuSnapshot;
    use crate::emulator::Stats;
    use crate::operator::Usage;

    fn cold(t: u64, throttled: u64) -> ColdStart {
        ColdStart {
            users: 1000,
            tokens: 5000,
            apply: Duration::from_secs(20),
            readyz: Duration::from_millis(400),
            t_ready: Duration::from_secs(t),
            settled: Duration::from_secs(t + 3),
            usage: Usage {
                peak_rss_kib: 40 * 1024,
                cpu_seconds: 12.5,
            },
            acs: Stats {
                operations: [
                    (
                        "issueAccessToken".to_string(),
                        [("200".to_string(), 5000)].into(),
                    ),
                    (
                        "createIdentity".to_string(),
                        [("201".to_string(), 1000)].into(),
                    ),
                ]
                .into(),
                total: 6000,
                throttled,
                total429: throttled,
            },
            kube: [("get".to_string(), 5000.0), ("patch".to_string(), 17000.0)].into(),
            kube_total: 22000.0,
            kube_writes: 17000.0,
            reconciles_user: 2000.0,
            reconciles_token: 10000.0,
            cpu: CpuSnapshot::default(),
        }
    }

    fn results() -> Results {
        Results {
            label: "test".into(),
            floor: FloorResult {
                sweep: vec![(1, 100.0), (16, 700.0)],
                best_workers: 16,
                writes: 17000,
                t_floor: Duration::from_secs(25),
                mix_requests: 34000,
                t_mix: Duration::from_secs(28),
                cpu: CpuSnapshot::default(),
            },
            baseline: BaselineRun {
                tokens: 200,
                users: 40,
                seconds: 10.0,
            },
            t_script: Duration::from_secs(250),
            operator: cold(30, 0),
            steady: Steady {
                window: Duration::from_secs(60),
                acs_calls: 0,
                writes: 0.0,
                gets: 0.0,
                reconciles: 0.0,
            },
            restart: Restart {
                readyz: Duration::from_millis(500),
                reverified: Duration::from_secs(8),
                acs_calls: 0,
                writes: 0.0,
                gets: 5000.0,
            },
            spread: Some(Spread {
                renewals: 5000,
                busiest_minute: 50,
                busiest_share: 0.01,
                window_seconds: 8640.0,
                fair_share: 60.0 / 8640.0,
                ratio: 1.44,
            }),
            limited: cold(240, 0),
            latency: Some(LatencyRun {
                ms: 50,
                baseline: BaselineRun {
                    tokens: 200,
                    users: 40,
                    seconds: 12.0,
                },
                t_script: Duration::from_secs(300),
                operator: cold(40, 0),
            }),
        }
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(int(17000.0), "17,000");
        assert_eq!(int(999.0), "999");
        assert_eq!(int(1234567.0), "1,234,567");
        assert_eq!(int(-1000.0), "-1,000");
    }

    #[test]
    fn goals_are_judged_against_the_issue_targets() {
        let mut r = results();
        let g = goals(&r);
        assert!(g.iter().all(|g| g.met), "{g:?}");
        r.operator.t_ready = Duration::from_secs(40);
        r.steady.writes = 3.0;
        let g = goals(&r);
        let failed: Vec<&str> = g.iter().filter(|g| !g.met).map(|g| g.name).collect();
        assert_eq!(failed, ["T_op / T_floor", "apiserver writes, quiet minute"]);
    }

    #[test]
    fn the_table_has_every_phase_and_goal() {
        let t = render(&results());
        for needle in [
            "1 Floor",
            "2 Operator",
            "3 Baseline",
            "4 Real limits",
            "5 Steady state",
            "6 Restart",
            "7 Renewal spread",
            "| T_op / T_floor | ≤ 1.5 | 1.20 | met |",
            "| T_script / T_op | ≥ 5 | 8.3 | met |",
            "1.20 (5,000 issue + 1,000 create identity; 6,000 total)",
            "28.0 s (T_op / T_mix = 1.07)",
            "12.0 s · 300.0 s · 40.0 s · 7.5",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
    }
}
