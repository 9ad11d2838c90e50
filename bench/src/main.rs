//! acs-bench: the performance benchmark of the acs-identity-operator (docs/benchmarks.md).
//! Starts a local control plane and the ACS emulator, runs the phases asked for, prints one
//! table with each goal met or not. `--smoke` runs the same phases on a tiny workload and fails
//! only when a correctness goal (no calls when nothing is due, the floor's model matching the
//! operator's counters) is missed.

mod baseline;
mod churn;
mod cpu;
mod emulator;
mod error;
mod floor;
mod metrics;
mod operator;
mod phases;
mod probe;
mod profile;
mod ready;
mod renewal;
mod report;
mod run;
mod spread;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::error::{report as error_report, Error};

/// The parts of a run; each can run alone (one commit, separate invocations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Phases 1, 2, 5, 6, 7 at `--users`/`--tokens`: floor, cold start, quiet minute, restart,
    /// renewal spread.
    Scale,
    /// Phases 3 and 4 at `--compare-users`/`--compare-tokens`: the baseline at each ACS
    /// latency, the real limits, and the apply-to-Secret latency (quiet and during phase 4).
    Compare,
    /// Phase 8: renewal under the real limits with permanently failing tokens.
    Renewal,
    /// Phase 9: tokens created and deleted in rounds; memory and tables back where they were.
    Churn,
}

#[derive(Parser, Debug)]
#[command(name = "acs-bench", about = "Benchmark of the acs-identity-operator")]
struct Args {
    /// A small run for CI (20 users, 100 tokens everywhere): enforces only the exact goals.
    #[arg(long)]
    smoke: bool,
    /// Parts to run (default: all).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "scale,compare,renewal,churn"
    )]
    phases: Vec<Part>,
    /// CommunicationUsers of the scale phases (default 4,000; smoke 20).
    #[arg(long)]
    users: Option<usize>,
    /// CommunicationTokens of the scale phases (default 20,000; smoke 100).
    #[arg(long)]
    tokens: Option<usize>,
    /// CommunicationUsers of the comparison and renewal phases (default 1,000; smoke 20).
    #[arg(long)]
    compare_users: Option<usize>,
    /// CommunicationTokens of the comparison and renewal phases (default 5,000; smoke 100).
    #[arg(long)]
    compare_tokens: Option<usize>,
    /// Tokens the Python baseline issues before extrapolating (default 200; smoke 20).
    #[arg(long)]
    baseline_tokens: Option<usize>,
    /// Length of the steady-state window (default 60 s; smoke 10 s).
    #[arg(long)]
    quiet_seconds: Option<u64>,
    /// ACS latencies (emulator fault injection, ms per Identity call) at which the baseline and
    /// the operator are compared; 0 is loopback (default 0,50,100; smoke 100).
    #[arg(long, value_delimiter = ',')]
    acs_latency_ms: Option<Vec<u64>>,
    /// Apply-to-Secret samples on a quiet operator, and at most as many during phase 4
    /// (default 200; smoke 20).
    #[arg(long)]
    latency_samples: Option<usize>,
    /// Lifetime of the tokens the emulator issues in phase 8 (default 1200 s, so the
    /// propagation allowance of 2 minutes is a tenth of it; smoke 20 s).
    #[arg(long)]
    renewal_lifetime_seconds: Option<u64>,
    /// Permanently failing tokens beside phase 8's healthy ones (default 100; smoke 5).
    #[arg(long)]
    failing_tokens: Option<usize>,
    /// Tokens phase 9 creates and deletes (default 20,000; smoke 100).
    #[arg(long)]
    churn_tokens: Option<usize>,
    /// Tokens per round of phase 9 (default 5,000; smoke 50).
    #[arg(long)]
    churn_batch: Option<usize>,
    /// How long phase 9 waits for the operator's event cache to go idle before reading RSS
    /// (default 420 s: its 6 minutes and a margin; smoke 0).
    #[arg(long)]
    churn_settle_seconds: Option<u64>,
    /// Record a `perf` profile of phase 2 (falls back to /proc accounting without perf).
    #[arg(long)]
    perf: bool,
    /// An extra flag for the operator in phases 2 and 3 (repeatable), e.g.
    /// `--operator-arg=--concurrency=64`.
    #[arg(long, allow_hyphen_values = true)]
    operator_arg: Vec<String>,
    /// The operator binary (default: `acs-identity-operator` next to this executable).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// Python interpreter with bench/requirements.txt installed (`scripts/python-env.sh --bench`).
    #[arg(long, env = "ACS_PYTHON_BENCH")]
    python: PathBuf,
    /// The baseline script (default: bench/baseline.py).
    #[arg(long)]
    baseline_script: Option<PathBuf>,
    /// Directory of the CRD YAML (default: crds/ of the workspace).
    #[arg(long)]
    crds: Option<PathBuf>,
    /// Where logs go (operator.log, baseline.log, perf reports).
    #[arg(long, default_value = "target/bench")]
    work_dir: PathBuf,
    /// Also write the table to this file.
    #[arg(long)]
    output: Option<PathBuf>,
}

/// Sizes of one run.
#[derive(Debug, Clone)]
struct Scale {
    label: String,
    parts: Vec<Part>,
    users: usize,
    tokens: usize,
    compare_users: usize,
    compare_tokens: usize,
    sweep: Vec<usize>,
    sweep_users: usize,
    sweep_tokens: usize,
    baseline_tokens: usize,
    quiet: Duration,
    deadline: Duration,
    latencies: Vec<u64>,
    latency_samples: usize,
    renewal_lifetime: Duration,
    failing_tokens: usize,
    churn: churn::ChurnPlan,
    perf: bool,
}

impl Scale {
    fn from_args(a: &Args) -> Scale {
        let smoke = a.smoke;
        let pick = |v: Option<usize>, full: usize, small: usize| {
            v.unwrap_or(if smoke { small } else { full })
        };
        let users = pick(a.users, 4000, 20);
        let tokens = pick(a.tokens, 20000, 100);
        let compare_users = pick(a.compare_users, 1000, 20);
        let compare_tokens = pick(a.compare_tokens, 5000, 100);
        let mut parts = a.phases.clone();
        parts.dedup();
        let mut label = format!(
            "{}{} users, {} tokens",
            if smoke { "smoke: " } else { "" },
            report::int(users as f64),
            report::int(tokens as f64)
        );
        if parts
            .iter()
            .any(|p| matches!(p, Part::Compare | Part::Renewal))
        {
            label.push_str(&format!(
                "; comparison and renewal: {} users, {} tokens",
                report::int(compare_users as f64),
                report::int(compare_tokens as f64)
            ));
        }
        let names: Vec<String> = parts
            .iter()
            .filter_map(|p| p.to_possible_value().map(|v| v.get_name().to_string()))
            .collect();
        label.push_str(&format!("; parts: {}", names.join(", ")));
        if !a.operator_arg.is_empty() {
            label.push_str(&format!(
                "; operator flags in phases 2 and 3: {}",
                a.operator_arg.join(" ")
            ));
        }
        Scale {
            label,
            parts,
            users,
            tokens,
            compare_users,
            compare_tokens,
            sweep: if smoke {
                vec![1, 8, 64]
            } else {
                vec![1, 2, 4, 8, 16, 32, 64]
            },
            sweep_users: if smoke { 4 } else { 100 },
            sweep_tokens: if smoke { 20 } else { 500 },
            baseline_tokens: pick(a.baseline_tokens, 200, 20),
            quiet: Duration::from_secs(a.quiet_seconds.unwrap_or(if smoke { 10 } else { 60 })),
            deadline: if smoke {
                Duration::from_secs(180)
            } else {
                Duration::from_secs(1800)
            },
            latencies: a.acs_latency_ms.clone().unwrap_or(if smoke {
                vec![100]
            } else {
                vec![0, 50, 100]
            }),
            latency_samples: pick(a.latency_samples, 200, 20),
            renewal_lifetime: Duration::from_secs(a.renewal_lifetime_seconds.unwrap_or(if smoke {
                20
            } else {
                1200
            })),
            failing_tokens: pick(a.failing_tokens, 100, 5),
            churn: churn::ChurnPlan {
                users: if smoke { 5 } else { 100 },
                tokens: pick(a.churn_tokens, 20000, 100),
                batch: pick(a.churn_batch, 5000, 50),
                settle: Duration::from_secs(a.churn_settle_seconds.unwrap_or(if smoke {
                    0
                } else {
                    420
                })),
            },
            perf: a.perf,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let scale = Scale::from_args(&args);
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("acs-bench: {e}");
                return ExitCode::FAILURE;
            }
        };
    let result = tokio::select! {
        r = run::run(&args, &scale) => r,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
        _ = terminate.recv() => Err(Error::Interrupted),
    };
    let results = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("acs-bench: {}", error_report(&e));
            return ExitCode::FAILURE;
        }
    };
    let table = report::render(&results);
    println!("{table}");
    if let Some(path) = &args.output {
        if let Err(e) = std::fs::write(path, &table) {
            eprintln!("acs-bench: failed to write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    // A benchmark reports; only the smoke run fails, and only on the zero-call goals, which
    // hold at any scale.
    let missed: Vec<report::Goal> = report::goals(&results)
        .into_iter()
        .filter(|g| !g.met && g.exact)
        .collect();
    if args.smoke && !missed.is_empty() {
        for g in &missed {
            eprintln!("acs-bench: smoke goal not met: {} = {}", g.name, g.measured);
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
