//! What the suite found: one row per checked invariant or recorded figure, the bad-input case
//! table, and the evidence the secret-leak scan reads at the end (keys, tokens, log files,
//! events, statuses). Rendered as the markdown table that `docs/reliability.md` holds.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::scale::Scale;

/// First line of the printed table; `scripts/reliability.sh` cuts the table out between it and
/// [`END_MARKER`].
pub const BEGIN_MARKER: &str = "<!-- reliability-table:begin -->";
pub const END_MARKER: &str = "<!-- reliability-table:end -->";

/// The outcome of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// A figure that is reported, not judged.
    Figure,
}

#[derive(Debug, Clone)]
struct Row {
    scenario: &'static str,
    check: String,
    expected: String,
    observed: String,
    verdict: Verdict,
}

/// One bad-input case: what was sent and how the operator answered.
#[derive(Debug, Clone)]
pub struct CaseRow {
    pub case: String,
    pub expected: String,
    pub observed: String,
    pub ok: bool,
}

/// Secret material to search for, and where to search.
#[derive(Default)]
struct Evidence {
    /// Access keys, base64 as in connection strings.
    keys: BTreeSet<String>,
    /// Every token seen in a Secret.
    tokens: BTreeSet<String>,
    /// Operator log files (trace level).
    log_files: Vec<PathBuf>,
    /// Events, statuses and metrics, each with a label.
    texts: Vec<(String, String)>,
}

/// A copy of the evidence, for the leak scan.
pub struct Gathered {
    pub keys: Vec<String>,
    pub tokens: Vec<String>,
    pub logs: Vec<PathBuf>,
    /// Events, statuses and metrics, each with a label.
    pub texts: Vec<(String, String)>,
}

/// The suite's shared state: scale, rows and evidence.
pub struct Suite {
    pub scale: Scale,
    started: Instant,
    rows: Mutex<Vec<Row>>,
    cases: Mutex<Vec<CaseRow>>,
    evidence: Mutex<Evidence>,
}

impl Suite {
    pub fn new(scale: Scale) -> Suite {
        Suite {
            scale,
            started: Instant::now(),
            rows: Mutex::default(),
            cases: Mutex::default(),
            evidence: Mutex::default(),
        }
    }

    /// Records an invariant; returns `ok` so callers can also fail at once.
    pub fn check(
        &self,
        scenario: &'static str,
        check: &str,
        expected: impl Display,
        observed: impl Display,
        ok: bool,
    ) -> bool {
        self.push(Row {
            scenario,
            check: check.to_string(),
            expected: expected.to_string(),
            observed: observed.to_string(),
            verdict: if ok { Verdict::Pass } else { Verdict::Fail },
        });
        ok
    }

    /// Records a figure (reported, not judged).
    pub fn figure(&self, scenario: &'static str, what: &str, observed: impl Display) {
        self.push(Row {
            scenario,
            check: what.to_string(),
            expected: "(figure)".to_string(),
            observed: observed.to_string(),
            verdict: Verdict::Figure,
        });
    }

    fn push(&self, row: Row) {
        let mark = match row.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Figure => "figure",
        };
        eprintln!(
            "reliability: [{}] {}: expected {}, observed {} ({mark})",
            row.scenario, row.check, row.expected, row.observed
        );
        lock(&self.rows).push(row);
    }

    /// Every failed row of the suite.
    pub fn all_failures(&self) -> Vec<String> {
        lock(&self.rows)
            .iter()
            .filter(|r| r.verdict == Verdict::Fail)
            .map(|r| {
                format!(
                    "[{}] {}: expected {}, observed {}",
                    r.scenario, r.check, r.expected, r.observed
                )
            })
            .collect()
    }

    pub fn case(&self, row: CaseRow) {
        lock(&self.cases).push(row);
    }

    pub fn add_key(&self, base64: &str) {
        lock(&self.evidence).keys.insert(base64.to_string());
    }

    pub fn add_token(&self, token: &str) {
        lock(&self.evidence).tokens.insert(token.to_string());
    }

    pub fn add_log(&self, path: PathBuf) {
        lock(&self.evidence).log_files.push(path);
    }

    pub fn add_text(&self, label: String, text: String) {
        lock(&self.evidence).texts.push((label, text));
    }

    /// The evidence gathered so far.
    pub fn evidence(&self) -> Gathered {
        let e = lock(&self.evidence);
        Gathered {
            keys: e.keys.iter().cloned().collect(),
            tokens: e.tokens.iter().cloned().collect(),
            logs: e.log_files.clone(),
            texts: e.texts.clone(),
        }
    }

    /// The markdown table, between the markers.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(BEGIN_MARKER);
        out.push('\n');
        out.push_str(&format!(
            "#### Reliability suite: scale `{}`, {} in {}\n\n",
            self.scale.name,
            if self.all_failures().is_empty() {
                "all invariants held"
            } else {
                "SOME INVARIANTS FAILED"
            },
            human(self.started.elapsed())
        ));
        out.push_str("| Scenario | Check | Expected | Observed | Result |\n");
        out.push_str("|---|---|---|---|---|\n");
        for r in lock(&self.rows).iter() {
            let verdict = match r.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "**FAIL**",
                Verdict::Figure => "figure",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                cell(r.scenario),
                cell(&r.check),
                cell(&r.expected),
                cell(&r.observed),
                verdict
            ));
        }
        let cases = lock(&self.cases);
        if !cases.is_empty() {
            out.push_str("\n##### Bad input (scenario 6)\n\n");
            out.push_str("| # | Case | Expected | Observed | Result |\n|---|---|---|---|---|\n");
            for (i, c) in cases.iter().enumerate() {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    i + 1,
                    cell(&c.case),
                    cell(&c.expected),
                    cell(&c.observed),
                    if c.ok { "pass" } else { "**FAIL**" }
                ));
            }
        }
        out.push_str(END_MARKER);
        out.push('\n');
        out
    }
}

/// A table cell: one line, no pipes, at most 160 characters.
fn cell(s: &str) -> String {
    let one_line: String = s
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
        .chars()
        .collect();
    if one_line.chars().count() > 160 {
        let cut: String = one_line.chars().take(157).collect();
        format!("{cut}...")
    } else {
        one_line
    }
}

/// `1m 02s`, `12.3 s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1} s")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
