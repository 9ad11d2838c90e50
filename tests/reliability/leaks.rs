//! Scenario 7: no secret leaks, across the whole suite. Every operator log (trace level), every
//! event, status and metrics page gathered by the other scenarios is searched for every access
//! key (in full and every 16-character window) and every token that reached a Secret (in full
//! and every 16-character window of its signature segment).

use std::collections::HashMap;

use crate::fleet::SuiteRef;
use crate::harness::assert_no_secrets;

pub const NAME: &str = "7. No secret leaks";

/// Length of the windows searched for.
const WINDOW: usize = 16;

pub async fn run(suite: SuiteRef) {
    let crate::report::Gathered {
        keys,
        tokens,
        logs,
        texts,
    } = suite.evidence();
    let scan = {
        let keys = keys.clone();
        let tokens = tokens.clone();
        tokio::task::spawn_blocking(move || scan_logs(&keys, &tokens, &logs))
            .await
            .expect("log scan")
    };
    suite.check(
        NAME,
        "material searched for: access keys / tokens",
        "> 0 / > 0",
        format!("{} / {}", keys.len(), tokens.len()),
        !keys.is_empty() && !tokens.is_empty(),
    );
    suite.check(
        NAME,
        "operator logs scanned at trace level (files / MB / ACS request trace lines)",
        "> 0 / > 0 / > 0",
        format!(
            "{} / {:.1} / {}",
            scan.files,
            scan.bytes as f64 / 1e6,
            scan.trace_lines
        ),
        scan.files > 0 && scan.trace_lines > 0,
    );
    suite.check(
        NAME,
        "key or token windows found in operator logs",
        0,
        format!(
            "{} {:?}",
            scan.hits.len(),
            scan.hits.iter().take(3).collect::<Vec<_>>()
        ),
        scan.hits.is_empty(),
    );

    let mut leaked = Vec::new();
    let mut bytes = 0;
    for (label, text) in &texts {
        bytes += text.len();
        let outcome = std::panic::catch_unwind(|| assert_no_secrets(text, &keys, &tokens, label));
        if let Err(p) = outcome {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| label.clone());
            leaked.push(msg);
        }
    }
    suite.check(
        NAME,
        "events, statuses and metrics containing a key or token",
        format!("0 of {} texts", texts.len()),
        format!(
            "{} of {} texts ({:.1} MB) {:?}",
            leaked.len(),
            texts.len(),
            bytes as f64 / 1e6,
            leaked
        ),
        leaked.is_empty() && !texts.is_empty(),
    );
}

#[derive(Debug, Default)]
struct LogScan {
    files: usize,
    bytes: usize,
    /// Lines of the ACS client's per-attempt trace, proving the level was trace.
    trace_lines: usize,
    /// `file: what` for every window found.
    hits: Vec<String>,
}

/// One pass over each log: every 16-byte window is looked up in the set of secret windows,
/// which covers full keys and tokens too (they contain such windows).
fn scan_logs(keys: &[String], tokens: &[String], logs: &[std::path::PathBuf]) -> LogScan {
    let mut needles: HashMap<&[u8], &'static str> = HashMap::new();
    for k in keys {
        for w in k.as_bytes().windows(WINDOW) {
            needles.insert(w, "an access key");
        }
    }
    for t in tokens {
        if let Some(sig) = t.rsplit('.').next() {
            for w in sig.as_bytes().windows(WINDOW) {
                needles.insert(w, "a token signature");
            }
        }
    }
    let mut scan = LogScan::default();
    for path in logs {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        scan.files += 1;
        scan.bytes += bytes.len();
        scan.trace_lines += count(&bytes, b"sending acs request");
        if let Some(what) = bytes.windows(WINDOW).find_map(|w| needles.get(w)) {
            scan.hits
                .push(format!("{} contains {what}", path.display()));
        }
    }
    scan
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}
