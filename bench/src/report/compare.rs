//! Rows and goals of the comparison-scale part (the baseline at each ACS latency, the real
//! limits, the apply-to-Secret latency) and of the renewal phase.

use std::time::Duration;

use super::{int, ms, ratio, secs, CompareRun, Goal, LatencyRun, Row};
use crate::renewal::RenewalRun;

/// The run the `T_script / T_op` goal is judged on: 100 ms per ACS call (the low end of a
/// measurement from Azure compute), else the slowest one measured.
fn judged(c: &CompareRun) -> Option<&LatencyRun> {
    c.runs
        .iter()
        .find(|r| r.ms == 100)
        .or_else(|| c.runs.iter().max_by_key(|r| r.ms))
}

pub fn goals(c: &CompareRun) -> Vec<Goal> {
    let mut g = Vec::new();
    if let Some(r) = judged(c) {
        let x = ratio(r.t_script, r.operator.t_ready);
        g.push(Goal {
            name: "T_script / T_op",
            target: "≥ 12 at 100 ms per ACS call",
            measured: format!(
                "{x:.1} at {} ms, {} tokens",
                r.ms,
                int(r.operator.tokens as f64)
            ),
            met: x >= 12.0 && r.ms >= 100,
            exact: false,
        });
    }
    let p99 = c.quiet.quantile(0.99);
    g.push(Goal {
        name: "apply → Secret p99, quiet operator",
        target: "≤ 500 ms",
        measured: format!("{} ({} samples)", ms(p99), c.quiet.took.len()),
        met: p99.is_some_and(|d| d <= Duration::from_millis(500)) && c.quiet.missed == 0,
        exact: false,
    });
    if let Some(b) = &c.limited.probes {
        let p99 = b.quantile(0.99);
        g.push(Goal {
            name: "apply → Secret p99 during a cold rollout, its namespace, cluster-wide",
            target: "≤ 2 s",
            measured: format!("{} ({} samples)", ms(p99), b.took.len()),
            met: p99.is_some_and(|d| d <= Duration::from_secs(2)) && b.missed == 0,
            exact: false,
        });
    }
    g.push(Goal {
        name: "429s with the real limits",
        target: "0 (budget below the limit)",
        measured: int(c.limited.acs.throttled as f64),
        met: c.limited.acs.throttled == 0,
        exact: false,
    });
    g
}

pub fn rows(c: &CompareRun, rows: &mut Vec<Row>) {
    for r in &c.runs {
        let b = &r.baseline;
        let what = if r.ms == 0 {
            "loopback ACS".to_string()
        } else {
            format!("+{} ms per ACS call", r.ms)
        };
        rows.push((
            "3 Baseline",
            format!(
                "{what}: sample of {} tokens ({} users), sequential · T_script for {} · T_op · T_script / T_op",
                int(b.tokens as f64),
                int(b.users as f64),
                int(r.operator.tokens as f64)
            ),
            format!(
                "{} ({:.1} ms per token) · {} · {} · {:.1}",
                secs(Duration::from_secs_f64(b.seconds)),
                b.seconds * 1000.0 / b.tokens.max(1) as f64,
                secs(r.t_script),
                secs(r.operator.t_ready),
                ratio(r.t_script, r.operator.t_ready)
            ),
        ));
    }
    let l = &c.limited;
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
    rows.push((
        "Latency",
        "apply → Secret, quiet operator: p50 · p99 · max (samples)".into(),
        quantiles(&c.quiet),
    ));
    if let Some(b) = &l.probes {
        rows.push((
            "Latency",
            format!(
                "apply → Secret during phase 4's cold rollout, in its namespace, cluster-wide ({} tokens, {}): p50 · p99 · max (samples)",
                int(l.tokens as f64),
                secs(l.t_ready)
            ),
            quantiles(b),
        ));
    }
}

/// `p50 · p99 · max (samples[, missed])`.
fn quantiles(q: &crate::probe::Samples) -> String {
    let missed = if q.missed > 0 {
        format!(", {} missed", q.missed)
    } else {
        String::new()
    };
    format!(
        "{} · {} · {} ({}{missed})",
        ms(q.quantile(0.5)),
        ms(q.quantile(0.99)),
        ms(q.max()),
        q.took.len()
    )
}

pub fn renewal_goals(r: &RenewalRun) -> Vec<Goal> {
    let p99 = r.lateness_quantile(0.99);
    vec![
        Goal {
            name: "renewal lateness p99, real limits, failing tokens present",
            target: "≤ 5 s, every token renewed",
            measured: format!(
                "{} ({} of {} renewed)",
                p99.map_or("-".into(), |s| format!("{s:.1} s")),
                int(r.renewed as f64),
                int(r.tokens as f64)
            ),
            met: p99.is_some_and(|s| s <= 5.0) && r.renewed == r.tokens,
            exact: false,
        },
        Goal {
            name: "429s during the renewals",
            target: "0",
            measured: int(r.throttled as f64),
            met: r.throttled == 0,
            exact: false,
        },
    ]
}

pub fn renewal_rows(r: &RenewalRun, rows: &mut Vec<Row>) {
    rows.push((
        "8 Renewal",
        format!(
            "{} tokens ({} users) of {} lifetime, real limits, default budget: first issuance of all",
            int(r.tokens as f64),
            int(r.users as f64),
            secs(r.lifetime)
        ),
        secs(r.first_issue),
    ));
    let q = |x: f64| {
        r.lateness_quantile(x)
            .map_or("-".into(), |s| format!("{s:.2} s"))
    };
    rows.push((
        "8 Renewal",
        "lateness against status.renewalTime: p50 · p99 · max (renewed)".into(),
        format!(
            "{} · {} · {} ({})",
            q(0.5),
            q(0.99),
            q(1.0),
            int(r.renewed as f64)
        ),
    ));
    rows.push((
        "8 Renewal",
        format!(
            "{} permanently failing tokens (every issue 500): their ACS calls",
            int(r.failing as f64)
        ),
        format!(
            "{} in {} = {:.1} per minute",
            int(r.failing_calls as f64),
            secs(r.failing_window),
            r.failing_per_minute()
        ),
    ));
    rows.push((
        "8 Renewal",
        "429s received (of ACS calls)".into(),
        format!(
            "{} (of {})",
            int(r.throttled as f64),
            int(r.acs_calls as f64)
        ),
    ));
}
