//! One run: the control plane and the emulator, then the parts asked for, in order.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::phases::{self, Busy, During, Env};
use crate::probe::{self, Probe};
use crate::report::{self, CompareRun, LatencyRun, ScaleRun};
use crate::workload::{self, Workload};
use crate::{baseline, churn, emulator, floor, operator, renewal, Args, Part, Scale};

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

/// The operator's flags with its ACS budget lifted, watching `namespaces`: its machinery is
/// measured, not the budget (phase 4 and 8 run with the default). `extra`: `--operator-arg`.
fn lifted(namespaces: &str, extra: &[String]) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--watch-namespaces",
        namespaces,
        "--acs-requests-per-second",
        "100000",
        "--acs-request-burst",
        "100000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.extend(extra.iter().cloned());
    flags
}

pub async fn run(args: &Args, scale: &Scale) -> Result<report::Results, Error> {
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
    let result = parts(args, scale, &cp, &work_dir, operator_bin, t).await;
    step(t, "stopping the control plane");
    let _ = tokio::task::block_in_place(|| cp.stop());
    result
}

async fn parts(
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
        client,
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
    let result = async {
        let mut results = report::Results {
            label: scale.label.clone(),
            scale: None,
            compare: None,
            renewal: None,
            churn: None,
        };
        if scale.parts.contains(&Part::Scale) {
            results.scale = Some(scale_part(&env, args, scale, t).await?);
        }
        if scale.parts.contains(&Part::Compare) {
            results.compare = Some(compare_part(&env, args, scale, work_dir, t).await?);
        }
        if scale.parts.contains(&Part::Renewal) {
            step(
                t,
                &format!(
                    "phase 8: renewal of {} tokens ({} s lifetime) beside {} failing ones, real limits",
                    scale.compare_tokens,
                    scale.renewal_lifetime.as_secs(),
                    scale.failing_tokens
                ),
            );
            let plan = renewal::RenewalPlan {
                users: scale.compare_users,
                tokens: scale.compare_tokens,
                failing: scale.failing_tokens,
                lifetime: scale.renewal_lifetime,
            };
            results.renewal = Some(renewal::run(&env, &plan).await?);
        }
        if scale.parts.contains(&Part::Churn) {
            step(
                t,
                &format!(
                    "phase 9: churn, {} tokens created and deleted in rounds of {}",
                    scale.churn.tokens, scale.churn.batch
                ),
            );
            let ns = "bench-churn";
            results.churn =
                Some(churn::run(&env, &lifted(ns, &args.operator_arg), ns, &scale.churn).await?);
        }
        Ok(results)
    }
    .await;
    env.emu.shutdown().await;
    result
}

/// Phases 1, 2, 5, 6 and 7.
async fn scale_part(env: &Env, args: &Args, scale: &Scale, t: Instant) -> Result<ScaleRun, Error> {
    step(
        t,
        "phase 1: floor (sweep, then the full workload at the best worker count)",
    );
    let sample = floor::SampleToken::issue(&env.emu).await?;
    let floor = floor::run(
        &env.client,
        "bench-floor",
        &floor::FloorPlan {
            users: scale.users,
            tokens: scale.tokens,
            sweep: scale.sweep.clone(),
            sweep_users: scale.sweep_users,
            sweep_tokens: scale.sweep_tokens,
            cp_work_dir: env.cp_work_dir.clone(),
        },
        sample,
    )
    .await?;
    step(
        t,
        &format!(
            "  T_floor {} at {} workers, T_mix {}, watched {}",
            report::secs(floor.t_floor),
            floor.best_workers,
            report::secs(floor.t_mix),
            report::secs(floor.t_mix_watched)
        ),
    );

    step(t, "phase 2: operator cold start");
    let ns = "bench-op";
    let fast = lifted(ns, &args.operator_arg);
    let w = Workload::new("", scale.users, scale.tokens);
    let during = During {
        busy: None,
        perf: scale.perf,
    };
    let (mut op, operator) = phases::cold_start(env, ns, &w, &fast, during).await?;
    step(t, &format!("  T_op {}", report::secs(operator.t_ready)));

    step(t, "phase 5: steady state");
    let steady = phases::steady(env, &mut op, scale.quiet).await?;

    step(t, "phase 6: restart");
    let (op, restart) = phases::restart(env, op, &fast, scale.users, scale.tokens).await?;

    step(t, "phase 7: renewal spread");
    let spread = phases::renewal_spread(&env.client, ns).await?;
    op.stop().await?;
    Ok(ScaleRun {
        floor,
        operator,
        steady,
        restart,
        spread,
    })
}

/// Phases 3 and 4, and the apply-to-Secret latency.
async fn compare_part(
    env: &Env,
    args: &Args,
    scale: &Scale,
    work_dir: &Path,
    t: Instant,
) -> Result<CompareRun, Error> {
    let w = Workload::new("", scale.compare_users, scale.compare_tokens);
    let baseline_spec = baseline::BaselineSpec {
        python: args.python.clone(),
        script: args
            .baseline_script
            .clone()
            .unwrap_or_else(baseline::default_script),
        kubeconfig: env.spec.kubeconfig.clone(),
        ca_file: env.emu.ca_file.clone(),
        connection_string: env.emu.connection_string(),
        namespace: String::new(),
        tokens: scale.baseline_tokens,
        tokens_per_user: w.tokens.div_ceil(w.users).max(1),
        log: PathBuf::new(),
    };
    let mut runs = Vec::new();
    for &ms in &scale.latencies {
        step(
            t,
            &format!("phase 3: baseline and operator, {ms} ms added per ACS call"),
        );
        env.emu.set_latency(ms).await?;
        let ns = format!("bench-baseline-{ms}");
        workload::ensure_namespace(&env.client, &ns).await?;
        let sample = baseline::run(&baseline::BaselineSpec {
            namespace: ns,
            log: work_dir.join(format!("baseline-{ms}.log")),
            ..baseline_spec.clone()
        })
        .await?;
        let ns = format!("bench-latency-{ms}");
        let flags = lifted(&ns, &args.operator_arg);
        let (op, run) = phases::cold_start(env, &ns, &w, &flags, During::default()).await?;
        op.stop().await?;
        step(
            t,
            &format!(
                "  T_script {} · T_op {}",
                report::secs(sample.extrapolate(w.tokens)),
                report::secs(run.t_ready)
            ),
        );
        runs.push(LatencyRun {
            ms,
            t_script: sample.extrapolate(w.tokens),
            baseline: sample,
            operator: run,
        });
    }
    env.emu.set_latency(0).await?;

    // The operator as users run it (default flags, budget included) for both latency figures:
    // watching two namespaces for the quiet samples, cluster-wide for phase 4, whose samples
    // are taken in the rollout's own namespace (a new object must not wait behind it).
    let (probe_ns, limited_ns) = ("bench-probe", "bench-limits");
    let flags = vec![
        "--watch-namespaces".to_string(),
        format!("{probe_ns},{limited_ns}"),
    ];
    step(
        t,
        &format!(
            "latency: {} apply-to-Secret samples on a quiet operator",
            scale.latency_samples
        ),
    );
    workload::ensure_namespace(&env.client, probe_ns).await?;
    workload::create_credentials(&env.client, probe_ns, &env.emu.connection_string()).await?;
    workload::ensure_namespace(&env.client, limited_ns).await?;
    workload::create_credentials(&env.client, limited_ns, &env.emu.connection_string()).await?;
    let mut op = operator::Operator::spawn(&env.spec, &flags)?;
    op.wait_ready(Duration::from_secs(120)).await?;
    probe::ready_user(&env.client, probe_ns, env.deadline).await?;
    probe::ready_user(&env.client, limited_ns, env.deadline).await?;
    let probe = Probe::start(&env.client, probe_ns).await?;
    let quiet = probe
        .sequential("quiet-", scale.latency_samples, Duration::from_secs(30))
        .await?;
    op.stop().await?;
    let rollout_probe = Probe::start(&env.client, limited_ns).await?;

    step(
        t,
        "phase 4: real ACS limits, default budget (apply-to-Secret samples during it)",
    );
    env.emu.set_rate_limits("default").await?;
    // One sample a second: phase 4 at 5,000 tokens takes about 240 s with the default budget.
    let during = During {
        busy: Some(Busy {
            probe: &rollout_probe,
            n: scale.latency_samples,
            every: Duration::from_secs(1),
        }),
        perf: false,
    };
    let cluster_wide: Vec<String> = Vec::new();
    let (op, limited) = phases::cold_start(env, limited_ns, &w, &cluster_wide, during).await?;
    op.stop().await?;
    env.emu.set_rate_limits("off").await?;
    Ok(CompareRun {
        runs,
        quiet,
        limited,
    })
}
