//! The reliability suite (issue 7): ACS faults, operator crashes, apiserver and etcd restarts,
//! namespace deletion, leader changes, bad input and secret leaks, each on the real control
//! plane against the emulator's fault injection. Every scenario checks its invariants and
//! records figures; one test runs them in order and prints the table (markdown) that
//! `docs/reliability.md` holds. `RELIABILITY_SCALE=full` runs the documented size
//! (`scripts/reliability.sh`); the default `ci` size keeps the test command short.
//!
//! One test, not one per scenario: the scenarios share one machine, and the figures (request
//! rates, takeover times) are only meaningful when nothing else runs beside them.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../e2e/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../e2e/support/mod.rs"]
mod support;

mod bad_cases;
mod bad_input;
mod broken;
mod crashes;
mod faults;
mod fleet;
mod history;
mod leader;
mod leaks;
mod namespace_deletion;
mod report;
mod restarts;
mod scale;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use fleet::SuiteRef;
use report::Suite;
use scale::Scale;

/// Runs one scenario as its own task, so a panic (a failed wait, a broken precondition)
/// becomes a failed row and the remaining scenarios still run.
async fn scenario<F, Fut>(suite: &SuiteRef, name: &'static str, body: F)
where
    F: FnOnce(SuiteRef) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    eprintln!("reliability: scenario {name} starting");
    let started = std::time::Instant::now();
    let outcome = tokio::spawn(body(suite.clone())).await;
    if let Err(e) = outcome {
        let msg = match e.try_into_panic() {
            Ok(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".to_string()),
            Err(e) => e.to_string(),
        };
        suite.check(name, "scenario ran to completion", "completed", msg, false);
    }
    suite.figure(name, "scenario duration", report::human(started.elapsed()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_keeps_its_invariants_through_faults_crashes_restarts_leader_changes_and_bad_input(
) {
    let suite: SuiteRef = Arc::new(Suite::new(Scale::from_env()));
    scenario(&suite, faults::NAME, faults::run).await;
    scenario(&suite, crashes::NAME, crashes::run).await;
    scenario(&suite, restarts::NAME, restarts::run).await;
    scenario(&suite, namespace_deletion::NAME, namespace_deletion::run).await;
    scenario(&suite, leader::NAME, leader::run).await;
    scenario(&suite, bad_input::NAME, bad_input::run).await;
    scenario(&suite, broken::NAME, broken::run).await;
    scenario(&suite, leaks::NAME, leaks::run).await;

    let table = suite.render();
    // Straight to the process's stdout: the test harness captures `print!`, and the table is
    // the command's output even when the test passes.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("\n{table}\n").as_bytes());
    let _ = out.flush();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability-table.md");
    std::fs::write(&path, &table).expect("write the table");

    let failures = suite.all_failures();
    assert!(
        failures.is_empty(),
        "{} invariant(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
