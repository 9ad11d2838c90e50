//! The chart's alerts and dashboard read metrics the operator exports: every
//! `acs_identity_operator_*` name in the rendered PrometheusRule and in the dashboard has a
//! `# TYPE` line in a running operator's `/metrics`, or (for the failure counters, which show
//! only once something failed) in the operator library's registry with one sample recorded.
//! A renamed metric would otherwise silently blind an alert.
//! promtool checks and unit-tests the rules themselves (scripts/lint-packaging.sh).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::helm::{one, split, Tools};
use crate::harness::{keyed_namespace, ready_tokens, ready_user_id};
use crate::harness::{Operator, OperatorArgs};

/// Every `acs_identity_operator_*` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let prefix = "acs_identity_operator_";
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The families `/metrics` declares (`# TYPE <name> <type>`).
fn declared(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Whether `name` is a sample of a declared family (counters and histograms add suffixes).
fn exported(name: &str, families: &BTreeSet<String>) -> bool {
    families.contains(name)
        || ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|b| families.contains(b)))
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_use_is_exported() {
    let (env, acs) = keyed_namespace("chart-monitoring").await;
    let tools = Tools::new(env.cp);
    let rendered = tools
        .template(
            "acs",
            env.ns(),
            &json!({"prometheusRule": {"enabled": true}, "grafanaDashboard": {"enabled": true}}),
        )
        .unwrap();
    let docs = split(&rendered);
    let rule = one(&docs, "PrometheusRule");
    let exprs: Vec<&str> = rule.value["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["expr"].as_str().unwrap())
        .collect();
    assert_eq!(exprs.len(), 8, "{exprs:?}");
    let dashboard = &docs
        .iter()
        .find(|d| d.kind() == "ConfigMap" && d.name().ends_with("-dashboard"))
        .expect("the dashboard ConfigMap")
        .value["data"]["acs-identity-operator.json"];
    let dashboard: Value = serde_json::from_str(dashboard.as_str().unwrap()).unwrap();
    let panel_exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(panel_exprs.len() >= 10, "{panel_exprs:?}");

    // An operator with a user and a token, so the per-object families have series too.
    let op = Operator::spawn(OperatorArgs::new(&env, &acs));
    op.wait_ready().await;
    ready_user_id(&env, "alice").await;
    ready_tokens(&env, "alice", &["web"]).await;
    let mut families = declared(&op.metrics_text().await);
    // A family shows only once it has a series: record one in each of a fresh registry too
    // (the counters of failures this run has none of).
    let m = acs_identity_operator::metrics::Metrics::new();
    m.reconcile_error("token", "acs");
    m.unscheduled_deferred("issue");
    m.runtime.watch_error("CommunicationToken");
    m.set_token_summary(&acs_identity_operator::metrics::TokenSummary {
        min_remaining_validity_seconds: Some(1.0),
        next_expiry_unix: Some(1.0),
        next_renewal_unix: Some(1.0),
        min_pod_validity_seconds: Some(1.0),
        ..Default::default()
    });
    families.extend(declared(&m.encode()));

    let mut used = BTreeSet::new();
    for e in exprs
        .iter()
        .copied()
        .chain(panel_exprs.iter().map(String::as_str))
    {
        used.extend(metric_names(e));
    }
    assert!(used.len() >= 15, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !exported(n, &families)).collect();
    assert!(
        missing.is_empty(),
        "used by the chart's alerts or dashboard but not exported: {missing:?}\nexported: {families:?}"
    );
}
