//! Pure: the operator's `/metrics` text parsed into samples, and the sums the benchmark reads
//! from them (apiserver requests by verb, reconciles by controller).

use std::collections::BTreeMap;

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples(pub Vec<Sample>);

/// Verbs that change state in the apiserver.
pub const WRITE_VERBS: [&str; 4] = ["create", "update", "patch", "delete"];

/// Name of the operator's apiserver request counter.
pub const KUBE_REQUESTS: &str = "acs_identity_operator_kube_requests_total";
/// Name of the operator's reconcile counter.
pub const RECONCILES: &str = "acs_identity_operator_reconciles_total";

/// Name of the allocator's bytes, by `state` (`in_use`, `free`).
pub const HEAP: &str = "acs_identity_operator_heap_bytes";

/// The allocator's bytes as the operator last reported them (0 where it reports none).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Heap {
    pub in_use: f64,
    pub free: f64,
}

impl Heap {
    /// "in use · free", in MiB.
    pub fn describe(&self) -> String {
        let mib = |b: f64| format!("{:.1} MiB", b / (1024.0 * 1024.0));
        format!("{} · {}", mib(self.in_use), mib(self.free))
    }
}

impl Samples {
    /// Parses the Prometheus / OpenMetrics text format; lines it cannot read are skipped.
    pub fn parse(text: &str) -> Samples {
        Samples(text.lines().filter_map(parse_line).collect())
    }

    /// The sum of every series of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// What the operator's allocator holds.
    pub fn heap(&self) -> Heap {
        Heap {
            in_use: self.sum(HEAP, &[("state", "in_use")]),
            free: self.sum(HEAP, &[("state", "free")]),
        }
    }

    /// Apiserver requests by verb.
    pub fn kube_requests(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.0.iter().filter(|s| s.name == KUBE_REQUESTS) {
            if let Some(v) = s.labels.get("verb") {
                *out.entry(v.clone()).or_insert(0.0) += s.value;
            }
        }
        out
    }

    /// Apiserver requests of any verb.
    pub fn kube_total(&self) -> f64 {
        self.sum(KUBE_REQUESTS, &[])
    }

    /// Apiserver requests that write (create, update, patch, delete).
    pub fn kube_writes(&self) -> f64 {
        WRITE_VERBS
            .iter()
            .map(|v| self.sum(KUBE_REQUESTS, &[("verb", v)]))
            .sum()
    }

    /// Finished reconciles (ok and error) of `controller`.
    pub fn reconciles(&self, controller: &str) -> f64 {
        self.sum(RECONCILES, &[("controller", controller)])
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (head, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].find('}')? + open;
            (&line[..close + 1], &line[close + 1..])
        }
        None => {
            let sp = line.find(' ')?;
            (&line[..sp], &line[sp..])
        }
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match head.find('{') {
        Some(open) => (
            &head[..open],
            parse_labels(&head[open + 1..head.len() - 1])?,
        ),
        None => (head, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y"`; values may hold escaped quotes and commas.
fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => value.push(chars.next()?),
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim().to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP acs_identity_operator_kube_requests Requests
# TYPE acs_identity_operator_kube_requests counter
acs_identity_operator_kube_requests_total{verb="get"} 5000
acs_identity_operator_kube_requests_total{verb="patch"} 15000
acs_identity_operator_kube_requests_total{verb="create"} 6000
acs_identity_operator_kube_requests_total{verb="watch"} 4
acs_identity_operator_reconciles_total{controller="communicationtoken",result="ok"} 9000
acs_identity_operator_reconciles_total{controller="communicationtoken",result="error"} 12
acs_identity_operator_reconciles_total{controller="communicationuser",result="ok"} 2000
acs_identity_operator_acs_requests_total{operation="issue_token",outcome="a \"b\", c"} 3
process_up 1
# EOF
"#;

    #[test]
    fn counters_are_summed_by_label() {
        let s = Samples::parse(TEXT);
        assert_eq!(s.kube_total(), 26004.0);
        assert_eq!(s.kube_writes(), 21000.0);
        assert_eq!(s.kube_requests().get("get"), Some(&5000.0));
        assert_eq!(s.reconciles("communicationtoken"), 9012.0);
        assert_eq!(s.reconciles("communicationuser"), 2000.0);
        assert_eq!(s.sum("process_up", &[]), 1.0);
    }

    #[test]
    fn quoted_label_values_keep_escapes_and_commas() {
        let s = Samples::parse(TEXT);
        assert_eq!(
            s.sum(
                "acs_identity_operator_acs_requests_total",
                &[("outcome", "a \"b\", c")]
            ),
            3.0
        );
    }

    #[test]
    fn comments_and_garbage_are_skipped() {
        let s = Samples::parse("# x\n\nnot a sample\nx{a=\"1\" 2\n");
        assert!(s.0.is_empty(), "{s:?}");
    }
}
