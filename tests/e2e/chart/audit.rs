//! What the chart grants and what the operator used: RBAC rules parsed from the chart's
//! manifests, requests read from the apiserver's audit log, and the justification list of
//! granted verbs a run may not show.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::helm::{chart_dir, RenderedDoc};

/// One permission: API group ("" for core), resource, subresource ("" for none), verb.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub verb: String,
}

impl Access {
    fn new(group: &str, resource: &str, verb: &str) -> Access {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Access {
            group: group.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            verb: verb.to_string(),
        }
    }

    /// `resource[/subresource]` as RBAC spells it.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{group} {} {}", self.resource_path(), self.verb)
    }
}

/// A rule of a Role (with its namespace) or ClusterRole (namespace `None`) bound to the
/// ServiceAccount.
#[derive(Clone, Debug)]
pub struct BoundRule {
    pub namespace: Option<String>,
    pub rule: Value,
}

impl BoundRule {
    /// One (access, resourceName) per combination the rule grants.
    pub fn accesses(&self) -> Vec<(Access, Option<String>)> {
        let mut out = Vec::new();
        let names = strings(&self.rule["resourceNames"]);
        for group in strings(&self.rule["apiGroups"]) {
            for resource in strings(&self.rule["resources"]) {
                for verb in strings(&self.rule["verbs"]) {
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "a rule grants a wildcard: {}",
                        self.rule
                    );
                    let access = Access::new(group, resource, verb);
                    if names.is_empty() {
                        out.push((access, None));
                    } else {
                        for n in &names {
                            out.push((access.clone(), Some(n.to_string())));
                        }
                    }
                }
            }
        }
        out
    }
}

/// The rules of the Roles and ClusterRoles among `docs` that a RoleBinding or
/// ClusterRoleBinding among `docs` grants to the ServiceAccount `namespace/name`. A ClusterRole
/// bound by a RoleBinding counts in that binding's namespace.
pub fn bound_rules(docs: &[RenderedDoc], sa_namespace: &str, sa_name: &str) -> Vec<BoundRule> {
    let mut out = Vec::new();
    for b in docs
        .iter()
        .filter(|d| matches!(d.kind(), "RoleBinding" | "ClusterRoleBinding"))
    {
        let binds_sa = b.value["subjects"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == sa_name
                    && s["namespace"] == sa_namespace
            })
        });
        if !binds_sa {
            continue;
        }
        let role_kind = b.value["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = b.value["roleRef"]["name"].as_str().unwrap_or_default();
        let binding_ns = (b.kind() == "RoleBinding").then(|| b.namespace().unwrap_or_default());
        let role = docs.iter().find(|d| {
            d.kind() == role_kind
                && d.name() == role_name
                && (role_kind == "ClusterRole" || d.namespace() == binding_ns)
        });
        let role = role.unwrap_or_else(|| {
            panic!(
                "{} {} binds {role_kind} {role_name}, which the chart does not define",
                b.kind(),
                b.name()
            )
        });
        for rule in role.value["rules"].as_array().into_iter().flatten() {
            out.push(BoundRule {
                namespace: binding_ns.map(str::to_string),
                rule: rule.clone(),
            });
        }
    }
    out
}

/// Every (group, resource, subresource, verb) granted by `rules`.
pub fn granted(rules: &[BoundRule]) -> BTreeSet<Access> {
    rules
        .iter()
        .flat_map(BoundRule::accesses)
        .map(|(a, _)| a)
        .collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// One audited request of the identity under test.
#[derive(Clone, Debug)]
pub struct Request {
    pub access: Access,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub code: Option<u64>,
    pub decision: Option<String>,
    pub uri: String,
}

/// The size of the audit log now: requests logged later start at this offset.
pub fn offset(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// Every request that `user` made (directly or by impersonation) logged after `from`. The log
/// is JSON lines at level Metadata, one line per request (RequestReceived is omitted; a watch
/// also logs ResponseStarted, which adds nothing new to the sets built from this).
pub fn requests_of(log: &Path, from: u64, user: &str) -> Vec<Request> {
    let mut file = std::fs::File::open(log).expect("audit log");
    file.seek(SeekFrom::Start(from)).expect("seek");
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.expect("read audit log");
        // Cheap pre-filter: the shared control plane's log holds every test's requests.
        if !line.contains(user) {
            continue;
        }
        let Ok(ev) = serde_json::from_str::<Value>(&line) else {
            continue; // a line being written right now
        };
        let who = ev["impersonatedUser"]["username"]
            .as_str()
            .or_else(|| ev["user"]["username"].as_str());
        if who != Some(user) {
            continue;
        }
        let o = &ev["objectRef"];
        let Some(resource) = o["resource"].as_str() else {
            continue; // non-resource URLs (discovery, /version)
        };
        let mut access = Access::new(
            o["apiGroup"].as_str().unwrap_or_default(),
            resource,
            ev["verb"].as_str().unwrap_or_default(),
        );
        access.subresource = o["subresource"].as_str().unwrap_or_default().to_string();
        let code = ev["responseStatus"]["code"].as_u64();
        // A server-side apply that creates its object (201) is authorized as create too,
        // though the audit log names only the patch.
        if access.verb == "patch" && code == Some(201) {
            let mut create = access.clone();
            create.verb = "create".to_string();
            out.push(Request {
                access: create,
                namespace: o["namespace"].as_str().map(str::to_string),
                name: o["name"].as_str().map(str::to_string),
                code,
                decision: None,
                uri: ev["requestURI"].as_str().unwrap_or_default().to_string(),
            });
        }
        out.push(Request {
            access,
            namespace: o["namespace"].as_str().map(str::to_string),
            name: o["name"].as_str().map(str::to_string),
            code: ev["responseStatus"]["code"].as_u64(),
            decision: ev["annotations"]["authorization.k8s.io/decision"]
                .as_str()
                .map(str::to_string),
            uri: ev["requestURI"].as_str().unwrap_or_default().to_string(),
        });
    }
    out
}

/// A granted verb a run may not show, and why it is granted anyway.
#[derive(Debug, Deserialize)]
pub struct Justification {
    #[serde(rename = "apiGroup")]
    pub api_group: String,
    pub resource: String,
    pub verbs: Vec<String>,
    pub why: String,
}

/// The chart's machine-readable list of justified grants (`rbac-justifications.yaml`).
pub fn justifications() -> Vec<Justification> {
    let path = chart_dir().join("rbac-justifications.yaml");
    let text = std::fs::read_to_string(&path).expect("rbac-justifications.yaml");
    serde_yaml::from_str(&text).expect("rbac-justifications.yaml parses")
}

/// Compares the audited requests with the grants: nothing was denied, everything used was
/// granted, and every granted verb was used or is justified (in the list and in the README).
/// Returns a report of granted vs used, for the test log.
pub fn compare(granted: &BTreeSet<Access>, requests: &[Request]) -> String {
    let denied: Vec<&Request> = requests
        .iter()
        .filter(|r| r.decision.as_deref() == Some("forbid") || r.code == Some(403))
        .collect();
    assert!(
        denied.is_empty(),
        "requests of the operator were denied:\n{}",
        denied
            .iter()
            .map(|r| format!("  {} {} -> {:?} {:?}", r.access, r.uri, r.code, r.decision))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut used: BTreeMap<Access, usize> = BTreeMap::new();
    for r in requests {
        *used.entry(r.access.clone()).or_default() += 1;
    }
    let not_granted: Vec<&Access> = used.keys().filter(|a| !granted.contains(a)).collect();
    assert!(
        not_granted.is_empty(),
        "requests that the chart's rules do not cover, yet were allowed (another binding?): {not_granted:?}"
    );
    let justified = justifications();
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).expect("chart README");
    let mut report = String::from("granted -> used (audited requests):\n");
    let mut unjustified = Vec::new();
    for g in granted {
        let n = used.get(g).copied().unwrap_or(0);
        let why = justified.iter().find(|j| {
            j.api_group == g.group && j.resource == g.resource_path() && j.verbs.contains(&g.verb)
        });
        let note = match (n, why) {
            (0, Some(j)) => format!("unused, justified: {}", j.why.trim()),
            (0, None) => {
                unjustified.push(g.to_string());
                "UNUSED and not justified".to_string()
            }
            (n, _) => format!("{n} requests"),
        };
        report.push_str(&format!("  {:<58} {note}\n", g.to_string()));
    }
    assert!(
        unjustified.is_empty(),
        "granted but never used, and not justified in rbac-justifications.yaml: {unjustified:?}\n{report}"
    );
    for j in &justified {
        assert!(
            readme.contains(&j.resource),
            "README.md does not explain the justified grant on {}",
            j.resource
        );
    }
    report
}
