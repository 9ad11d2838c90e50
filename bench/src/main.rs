//! acs-bench: the performance benchmark of the acs-identity-operator (docs/benchmarks.md).
//! Starts a local control plane and the ACS emulator, runs every phase, prints one table with
//! each goal met or not. `--smoke` runs the same phases on a tiny workload and fails only when
//! a correctness goal (no calls when nothing is due) is missed.

mod baseline;
mod cpu;
mod emulator;
mod error;
mod floor;
mod metrics;
mod operator;
mod phases;
mod ready;
mod report;
mod spread;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::error::{report as error_report, Error};
use crate::phases::Env;
use crate::workload::Workload;

#[derive(Parser, Debug)]
#[command(name = "acs-bench", about = "Benchmark of the acs-identity-operator")]
struct Args {
    /// A small run (20 users, 100 tokens) for CI: enforces only the zero-call goals.
    #[arg(long)]
    smoke: bool,
    /// CommunicationUsers of the operator phases (default 1,000; smoke 20).
    #[arg(long)]
    users: Option<usize>,
    /// CommunicationTokens of the operator phases (default 5,000; smoke 100).
    #[arg(long)]
    tokens: Option<usize>,
    /// Tokens the Python baseline issues before extrapolating (default 200; smoke 20).
    #[arg(long)]
    baseline_tokens: Option<usize>,
    /// Length of the steady-state window (default 60 s; smoke 10 s).
    #[arg(long)]
    quiet_seconds: Option<u64>,
    /// Latency added to every ACS call (emulator fault injection) for the sensitivity run of
    /// the baseline against the operator; 0 skips that run.
    #[arg(long, default_value_t = 50)]
    acs_latency_ms: u64,
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
    /// Where logs go (operator.log, baseline.log).
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
    users: usize,
    tokens: usize,
    sweep: Vec<usize>,
    sweep_users: usize,
    sweep_tokens: usize,
    baseline_tokens: usize,
    quiet: Duration,
    deadline: Duration,
}

impl Scale {
    fn from_args(a: &Args) -> Scale {
        let (users, tokens, baseline, quiet) = if a.smoke {
            (20, 100, 20, 10)
        } else {
            (1000, 5000, 200, 60)
        };
        let users = a.users.unwrap_or(users);
        let tokens = a.tokens.unwrap_or(tokens);
        let smoke = a.smoke;
        Scale {
            label: format!(
                "{}{} users, {} tokens",
                if smoke { "smoke: " } else { "" },
                report::int(users as f64),
                report::int(tokens as f64)
            ),
            users,
            tokens,
            sweep: if smoke {
                vec![1, 8, 64]
            } else {
                vec![1, 2, 4, 8, 16, 32, 64]
            },
            sweep_users: if smoke { 4 } else { 100 },
            sweep_tokens: if smoke { 20 } else { 500 },
            baseline_tokens: a.baseline_tokens.unwrap_or(baseline),
            quiet: Duration::from_secs(a.quiet_seconds.unwrap_or(quiet)),
            deadline: if smoke {
                Duration::from_secs(180)
            } else {
                Duration::from_secs(1200)
            },
        }
    }
}

/// Prints a progress line on stderr, so stdout holds only the table.
fn step(started: Instant, text: &str) {
    eprintln!(
        "[acs-bench {:>6.1}s] {text}",
        started.elapsed().as_secs_f64()
    );
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

async fn run(args: &Args, scale: &Scale) -> Result<report::Results, Error> {
    let t = Instant::now();
    std::fs::create_dir_all(&args.work_dir).map_err(Error::io("create", &args.work_dir))?;
    let work_dir =
        std::fs::canonicalize(&args.work_dir).map_err(Error::io("resolve", &args.work_dir))?;
    let operator_bin = match &args.operator_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(Error::io("locate", Path::new("acs-bench")))?
            .with_file_name("acs-identity-operator"),
    };
    let crds = args
        .crds
        .clone()
        .unwrap_or_else(|| workspace_root().join("crds"));

    step(t, "starting the control plane");
    let options = acs_testenv::Options::from_env()
        .map_err(Error::StartControlPlane)?
        .with_crds_dir(&crds);
    let cp = acs_testenv::ControlPlane::start(options)
        .await
        .map_err(Error::StartControlPlane)?;
    let result = phases_all(args, scale, &cp, &work_dir, operator_bin, t).await;
    step(t, "stopping the control plane");
    let _ = tokio::task::block_in_place(|| cp.stop());
    result
}

async fn phases_all(
    args: &Args,
    scale: &Scale,
    cp: &acs_testenv::ControlPlane,
    work_dir: &Path,
    operator_bin: PathBuf,
    t: Instant,
) -> Result<report::Results, Error> {
    let client = cp.client().map_err(Error::StartControlPlane)?;
    let emu = emulator::Emulator::start(work_dir).await?;
    let log = work_dir.join("operator.log");
    let _ = std::fs::remove_file(&log);
    let env = Env {
        client: client.clone(),
        spec: operator::OperatorSpec {
            binary: operator_bin,
            kubeconfig: cp.kubeconfig_path().to_path_buf(),
            acs_ca: emu.ca_file.clone(),
            log,
        },
        emu,
        deadline: scale.deadline,
        cp_work_dir: cp.work_dir().to_path_buf(),
    };

    step(
        t,
        "phase 1: floor (sweep, then the full workload at the best worker count)",
    );
    let sample = floor::SampleToken::issue(&env.emu).await?;
    let floor = floor::run(
        &client,
        "bench-floor",
        &floor::FloorPlan {
            users: scale.users,
            tokens: scale.tokens,
            sweep: scale.sweep.clone(),
            sweep_users: scale.sweep_users,
            sweep_tokens: scale.sweep_tokens,
            cp_work_dir: cp.work_dir().to_path_buf(),
        },
        sample,
    )
    .await?;
    step(
        t,
        &format!(
            "  T_floor {} at {} workers",
            report::secs(floor.t_floor),
            floor.best_workers
        ),
    );

    step(t, "phase 3: Python baseline");
    workload::ensure_namespace(&client, "bench-baseline").await?;
    let baseline_spec = baseline::BaselineSpec {
        python: args.python.clone(),
        script: args
            .baseline_script
            .clone()
            .unwrap_or_else(baseline::default_script),
        kubeconfig: cp.kubeconfig_path().to_path_buf(),
        ca_file: env.emu.ca_file.clone(),
        connection_string: env.emu.connection_string(),
        namespace: "bench-baseline".into(),
        tokens: scale.baseline_tokens,
        tokens_per_user: scale.tokens.div_ceil(scale.users.max(1)).max(1),
        log: work_dir.join("baseline.log"),
    };
    let baseline = baseline::run(&baseline_spec).await?;
    let t_script = baseline.extrapolate(scale.tokens);
    step(t, &format!("  T_script {}", report::secs(t_script)));

    // Rate limits off, and the operator's own ACS budget lifted, so the operator's machinery
    // is measured; phase 4 measures the real limits with the default budget.
    step(t, "phase 2: operator cold start");
    let ns = "bench-op";
    let fast: Vec<String> = [
        "--watch-namespaces",
        ns,
        "--acs-requests-per-second",
        "100000",
        "--acs-request-burst",
        "100000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let w = Workload::new("", scale.users, scale.tokens);
    let (mut op, operator) = phases::cold_start(&env, ns, &w, &fast).await?;
    step(t, &format!("  T_op {}", report::secs(operator.t_ready)));

    step(t, "phase 5: steady state");
    let steady = phases::steady(&env, &mut op, scale.quiet).await?;

    step(t, "phase 6: restart");
    let (op, restart) = phases::restart(&env, op, &fast, scale.users, scale.tokens).await?;

    step(t, "phase 7: renewal spread");
    let spread = phases::renewal_spread(&client, ns).await?;
    op.stop().await?;

    step(t, "phase 4: real ACS limits, default budget");
    env.emu.set_rate_limits("default").await?;
    let ns = "bench-limits";
    let limited_args: Vec<String> = vec!["--watch-namespaces".into(), ns.into()];
    let (op, limited) = phases::cold_start(&env, ns, &w, &limited_args).await?;
    op.stop().await?;
    env.emu.set_rate_limits("off").await?;

    let latency = if args.acs_latency_ms > 0 {
        let ms = args.acs_latency_ms;
        step(
            t,
            &format!("phase 3b: baseline and operator with {ms} ms per ACS call"),
        );
        env.emu.set_latency(ms).await?;
        workload::ensure_namespace(&client, "bench-baseline-latency").await?;
        let sample = baseline::run(&baseline::BaselineSpec {
            namespace: "bench-baseline-latency".into(),
            log: work_dir.join("baseline-latency.log"),
            ..baseline_spec.clone()
        })
        .await?;
        let ns = "bench-latency";
        let mut slow_args = fast.clone();
        slow_args[1] = ns.to_string();
        let (op, run) = phases::cold_start(&env, ns, &w, &slow_args).await?;
        op.stop().await?;
        env.emu.set_latency(0).await?;
        Some(report::LatencyRun {
            ms,
            t_script: sample.extrapolate(scale.tokens),
            baseline: sample,
            operator: run,
        })
    } else {
        None
    };
    env.emu.shutdown().await;

    Ok(report::Results {
        label: scale.label.clone(),
        floor,
        baseline,
        t_script,
        operator,
        steady,
        restart,
        spread,
        limited,
        latency,
    })
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
        r = run(&args, &scale) => r,
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
