//! Tests of the metric families: names, labels and values in the encoded text.

use super::*;
use std::sync::Arc;

/// The exposition lines of `text` that start with `prefix` (a series name plus labels).
fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn a_finished_reconcile_is_counted_timed_and_leaves_flight() {
    let m = Metrics::new();
    let timer = m.reconcile("user");
    let during = m.encode();
    assert!(
        during.contains("acs_identity_operator_reconciles_in_flight{controller=\"user\"} 1"),
        "{during}"
    );
    timer.finish("ok");
    let text = m.encode();
    assert!(
        text.contains(
            "acs_identity_operator_reconciles_total{controller=\"user\",result=\"ok\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "acs_identity_operator_reconcile_duration_seconds_count{controller=\"user\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("# UNIT acs_identity_operator_reconcile_duration_seconds seconds"),
        "{text}"
    );
    assert!(
        text.contains("acs_identity_operator_reconciles_in_flight{controller=\"user\"} 0"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn a_dropped_reconcile_timer_counts_as_an_error_once() {
    let m = Metrics::new();
    drop(m.reconcile("token"));
    m.reconcile("token").finish("error");
    let text = m.encode();
    assert!(
        text.contains(
            "acs_identity_operator_reconciles_total{controller=\"token\",result=\"error\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "acs_identity_operator_reconcile_duration_seconds_count{controller=\"token\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains("acs_identity_operator_reconciles_in_flight{controller=\"token\"} 0"),
        "{text}"
    );
    assert!(lines_starting(
        &text,
        "acs_identity_operator_reconciles_total{controller=\"token\",result=\"ok\"}"
    )
    .is_empty());
}

#[test]
fn errors_queue_depth_and_counters_are_labelled() {
    let m = Metrics::new();
    m.reconcile_error("user", "credentials");
    m.reconcile_error("user", "credentials");
    m.set_queue_depth("token", 7);
    m.set_queue_depth("token", 3);
    m.token_issued("renewal");
    m.revocation();
    m.identity_created();
    m.identity_created();
    m.identity_deleted();
    let text = m.encode();
    for expected in [
        "acs_identity_operator_reconcile_errors_total{controller=\"user\",category=\"credentials\"} 2",
        "acs_identity_operator_queue_depth{controller=\"token\"} 3",
        "acs_identity_operator_token_issuances_total{reason=\"renewal\"} 1",
        "acs_identity_operator_revocations_total 1",
        "acs_identity_operator_identities_created_total 2",
        "acs_identity_operator_identities_deleted_total 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn acs_requests_are_counted_by_operation_and_bounded_outcome() {
    let m = Metrics::new();
    m.acs_request("issue_token", "201", Duration::from_millis(12));
    m.acs_request("issue_token", "timeout", Duration::from_millis(3));
    m.acs_request("issue_token", "Bearer abc.def", Duration::from_millis(3));
    let text = m.encode();
    for expected in [
        "acs_identity_operator_acs_requests_total{operation=\"issue_token\",outcome=\"201\"} 1",
        "acs_identity_operator_acs_requests_total{operation=\"issue_token\",outcome=\"timeout\"} 1",
        "acs_identity_operator_acs_requests_total{operation=\"issue_token\",outcome=\"other\"} 1",
        "acs_identity_operator_acs_request_duration_seconds_count{operation=\"issue_token\"} 3",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("Bearer"), "{text}");
}

#[test]
fn the_acs_client_observer_feeds_the_request_metrics() {
    let m = Arc::new(Metrics::new());
    let observer: Arc<dyn crate::acs::RequestObserver> = m.clone();
    observer.observe("revoke_tokens", "204", Duration::from_millis(7));
    let text = m.encode();
    assert!(
        text.contains("acs_identity_operator_acs_requests_total{operation=\"revoke_tokens\",outcome=\"204\"} 1"),
        "{text}"
    );
}

#[test]
fn outcome_labels_keep_only_status_codes_and_short_categories() {
    assert_eq!(bound_outcome("200"), "200");
    assert_eq!(bound_outcome("429"), "429");
    assert_eq!(bound_outcome("transport"), "transport");
    assert_eq!(bound_outcome("rate_limited"), "rate_limited");
    assert_eq!(bound_outcome(&"a".repeat(32)), "a".repeat(32));
    assert_eq!(bound_outcome(&"a".repeat(33)), "other");
    assert_eq!(bound_outcome(""), "other");
    assert_eq!(bound_outcome("2000"), "other");
    assert_eq!(bound_outcome("20"), "other");
    assert_eq!(bound_outcome("Timeout"), "other");
    assert_eq!(bound_outcome("user-1"), "other");
    assert_eq!(bound_outcome("8:acs:1234"), "other");
    assert_eq!(bound_outcome("tökén"), "other");
}

#[test]
fn token_summary_sets_state_gauges_and_removes_absent_times() {
    let m = Metrics::new();
    m.set_token_summary(&TokenSummary {
        ready: 4,
        not_ready: 1,
        suspended: 2,
        revoked: 3,
        min_remaining_validity_seconds: Some(3600.5),
        next_expiry_unix: Some(1_900_000_000.0),
        next_renewal_unix: Some(1_899_990_000.0),
        min_pod_validity_seconds: Some(7200.0),
    });
    let text = m.encode();
    for expected in [
        "acs_identity_operator_tokens{state=\"ready\"} 4",
        "acs_identity_operator_tokens{state=\"not_ready\"} 1",
        "acs_identity_operator_tokens{state=\"suspended\"} 2",
        "acs_identity_operator_tokens_revoked 3",
        "acs_identity_operator_token_min_remaining_validity_seconds 3600.5",
        "acs_identity_operator_token_next_expiry_timestamp_seconds 1900000000.0",
        "acs_identity_operator_token_next_renewal_timestamp_seconds 1899990000.0",
        "acs_identity_operator_token_min_pod_validity_at_worst_seconds 7200.0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    m.set_token_summary(&TokenSummary::default());
    let text = m.encode();
    assert!(
        text.contains("acs_identity_operator_tokens{state=\"ready\"} 0"),
        "{text}"
    );
    for absent in [
        "acs_identity_operator_token_min_remaining_validity_seconds ",
        "acs_identity_operator_token_next_expiry_timestamp_seconds ",
        "acs_identity_operator_token_next_renewal_timestamp_seconds ",
        "acs_identity_operator_token_min_pod_validity_at_worst_seconds ",
    ] {
        assert!(
            lines_starting(&text, absent).is_empty(),
            "{absent:?} still in\n{text}"
        );
    }
}

#[test]
fn users_gauge_reports_both_states() {
    let m = Metrics::new();
    m.set_users(5, 2);
    let text = m.encode();
    assert!(
        text.contains("acs_identity_operator_users{state=\"ready\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("acs_identity_operator_users{state=\"not_ready\"} 2"),
        "{text}"
    );
}

#[test]
fn every_family_is_described_with_the_prefix_once_it_has_a_series() {
    let m = Metrics::new();
    m.reconcile("user").finish("ok");
    m.reconcile_error("user", "acs");
    m.set_queue_depth("user", 0);
    m.acs_request("create_identity", "201", Duration::from_millis(1));
    m.token_issued("initial");
    m.set_token_summary(&TokenSummary {
        min_remaining_validity_seconds: Some(1.0),
        next_expiry_unix: Some(2.0),
        next_renewal_unix: Some(1.5),
        ..TokenSummary::default()
    });
    m.set_users(0, 0);
    let text = m.encode();
    for name in [
        "reconciles",
        "reconcile_duration_seconds",
        "reconciles_in_flight",
        "reconcile_errors",
        "queue_depth",
        "acs_requests",
        "acs_request_duration_seconds",
        "token_issuances",
        "revocations",
        "identities_created",
        "identities_deleted",
        "tokens",
        "tokens_revoked",
        "token_min_remaining_validity_seconds",
        "token_next_expiry_timestamp_seconds",
        "token_next_renewal_timestamp_seconds",
        "users",
    ] {
        let help = format!("# HELP acs_identity_operator_{name} ");
        assert!(text.contains(&help), "missing {help:?} in\n{text}");
    }
}

/// A fixed set of objects, as the caches would hold them.
struct Objects(Vec<objects::TokenSeries>, Vec<objects::UserSeries>);

impl objects::ObjectSource for Objects {
    fn tokens(&self) -> Vec<objects::TokenSeries> {
        self.0.clone()
    }
    fn users(&self) -> Vec<objects::UserSeries> {
        self.1.clone()
    }
}

fn token_series(name: &str, ready: objects::Readiness, issued: bool) -> objects::TokenSeries {
    objects::TokenSeries {
        namespace: "team-a".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        ready,
        expiration: issued.then_some(1_800_000_000.0),
        renewal: issued.then_some(1_799_990_000.0),
    }
}

#[test]
fn every_object_gets_one_series_per_metric_named_by_namespace_and_name() {
    use objects::Readiness;
    let m = Metrics::new();
    // Before the controllers install their caches: no per-object series, still valid text.
    assert!(!m.encode().contains("token_ready_status{"));
    m.objects.set_source(Box::new(Objects(
        vec![
            token_series("web", Readiness::True, true),
            token_series("new", Readiness::Unknown, false),
        ],
        vec![objects::UserSeries {
            namespace: "team-a".into(),
            name: "alice".into(),
            ready: Readiness::False,
        }],
    )));
    m.objects.workload_restarted("uid-web");
    m.objects.workload_restarted("uid-web");
    // A count for a token the source no longer has is not shown.
    m.objects.workload_restarted("uid-gone");
    let text = m.encode();
    let p = "acs_identity_operator_";
    for line in [
        "token_expiration_timestamp_seconds{namespace=\"team-a\",name=\"web\"} 1800000000.0",
        "token_renewal_timestamp_seconds{namespace=\"team-a\",name=\"web\"} 1799990000.0",
        "token_ready_status{namespace=\"team-a\",name=\"web\",condition=\"True\"} 1",
        "token_ready_status{namespace=\"team-a\",name=\"new\",condition=\"Unknown\"} 1",
        "token_workload_restarts_total{namespace=\"team-a\",name=\"web\"} 2",
        "user_ready_status{namespace=\"team-a\",name=\"alice\",condition=\"False\"} 1",
    ] {
        assert!(
            text.contains(&format!("{p}{line}")),
            "{line} missing:\n{text}"
        );
    }
    // Not issued yet: no expiration or renewal series, rather than a made-up time.
    assert!(!text.contains("timestamp_seconds{namespace=\"team-a\",name=\"new\"}"));
    assert_eq!(
        lines_starting(&text, &format!("{p}token_ready_status{{")).len(),
        2
    );
    assert_eq!(
        lines_starting(&text, &format!("{p}token_workload_restarts_total{{")).len(),
        1
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Left out on request, with everything else kept.
    let lean = m.encode_with(false);
    assert!(!lean.contains("_status{namespace="), "{lean}");
    assert!(!lean.contains("timestamp_seconds{namespace="), "{lean}");
    assert!(
        lean.contains(&format!("{p}identities_created_total 0")),
        "{lean}"
    );
    assert!(lean.ends_with("# EOF\n") && lean.matches("# EOF").count() == 1);
    assert_eq!(text.matches("# EOF").count(), 1);
    // The deletion path: counts of tokens gone are dropped.
    assert_eq!(m.objects.retain_restarts(|uid| uid == "uid-web"), 1);
    assert_eq!(m.objects.restart_entries(), 1);
}
