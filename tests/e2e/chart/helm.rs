//! Running helm and kubectl against a control plane for the chart tests: rendering the chart
//! with a values document, splitting manifests into objects, server-side dry runs, installs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use acs_testenv::{Binary, ControlPlane};
use serde_json::Value;

/// The Kubernetes version the chart is rendered for offline: the apiserver's, so the compatibility
/// tier (`ACS_K8S_VERSION=1.32`) also checks the chart's `kubeVersion` admits the oldest release.
pub fn kube_version() -> &'static str {
    acs_testenv::release::selected_from_env()
        .unwrap_or_else(|e| panic!("{e}"))
        .trim_start_matches('v')
}

/// The chart directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/acs-identity-operator")
}

/// The repository's generated CRDs.
pub fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crds")
}

/// helm and kubectl with a private helm home, so tests never touch the user's repositories or
/// cache and never see each other's.
pub struct Tools {
    cp: &'static ControlPlane,
    home: tempfile::TempDir,
}

impl Tools {
    pub fn new(cp: &'static ControlPlane) -> Tools {
        Tools {
            cp,
            home: tempfile::tempdir().expect("helm home"),
        }
    }

    fn helm_cmd(&self) -> Command {
        let mut cmd = Command::new(self.cp.binary(Binary::Helm));
        let home = self.home.path();
        cmd.env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(self.cp.kubeconfig_path());
        cmd
    }

    /// Writes `values` (JSON is YAML) to a file in the helm home and returns its path.
    fn values_file(&self, values: &Value) -> PathBuf {
        let path = self
            .home
            .path()
            .join(format!("values-{:08x}.yaml", rand::random::<u32>()));
        std::fs::write(&path, serde_json::to_vec_pretty(values).expect("values")).expect("write");
        path
    }

    /// Runs helm with `args`, returning its output whatever the exit status.
    pub fn helm(&self, args: &[&str]) -> Output {
        self.helm_cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("helm runs")
    }

    /// Runs helm and returns stdout, panicking with stderr on failure.
    pub fn helm_ok(&self, args: &[&str]) -> String {
        let out = self.helm(args);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    /// `helm template` of the chart as release `release` in `namespace` with `values`.
    pub fn template(
        &self,
        release: &str,
        namespace: &str,
        values: &Value,
    ) -> Result<String, String> {
        let file = self.values_file(values);
        let chart = chart_dir();
        let out = self.helm(&[
            "template",
            release,
            path_str(&chart),
            "--namespace",
            namespace,
            "--kube-version",
            kube_version(),
            "--values",
            path_str(&file),
        ]);
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).expect("utf8"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `helm install` (no `--wait`: no pod ever runs on this control plane).
    pub fn install(&self, release: &str, namespace: &str, values: &Value) {
        let file = self.values_file(values);
        let chart = chart_dir();
        self.helm_ok(&[
            "install",
            release,
            path_str(&chart),
            "--namespace",
            namespace,
            "--values",
            path_str(&file),
        ]);
    }

    /// The manifest helm installed for a release.
    pub fn installed_manifest(&self, release: &str, namespace: &str) -> String {
        self.helm_ok(&["get", "manifest", release, "--namespace", namespace])
    }

    /// `kubectl apply --dry-run=server` of `yaml`: the apiserver admits (schema, defaulting,
    /// admission plugins, RBAC escalation checks) without persisting.
    pub fn apply_dry_run(&self, yaml: &str) -> Result<String, String> {
        let mut child = Command::new(self.cp.binary(Binary::Kubectl))
            .env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(self.cp.kubeconfig_path())
            .args(["apply", "--dry-run=server", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(yaml.as_bytes())
            .expect("write manifests");
        let out = child.wait_with_output().expect("kubectl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// One rendered document: its `# Source:` template and its raw text as helm printed it.
#[derive(Clone, Debug)]
pub struct RenderedDoc {
    pub source: String,
    pub text: String,
    pub value: Value,
}

impl RenderedDoc {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }
}

/// Splits helm's output into documents. helm prints every document as
/// `---\n# Source: <template>\n<document text>\n`.
pub fn split(rendered: &str) -> Vec<RenderedDoc> {
    let mut docs = Vec::new();
    for chunk in rendered.split("---\n# Source: ").skip(1) {
        let (source, rest) = chunk.split_once('\n').expect("source line");
        let text = rest.strip_suffix('\n').unwrap_or(rest).to_string();
        let value: Value = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{source} does not parse: {e}\n{text}"));
        if value.is_null() {
            continue;
        }
        docs.push(RenderedDoc {
            source: source.to_string(),
            text,
            value,
        });
    }
    docs
}

/// The documents of `kind`.
pub fn of_kind<'a>(docs: &'a [RenderedDoc], kind: &str) -> Vec<&'a RenderedDoc> {
    docs.iter().filter(|d| d.kind() == kind).collect()
}

/// The single document of `kind`, panicking if there is not exactly one.
pub fn one<'a>(docs: &'a [RenderedDoc], kind: &str) -> &'a RenderedDoc {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

/// The operator's own ClusterRole: the one not aggregated into the built-in roles for people.
pub fn operator_cluster_role(docs: &[RenderedDoc]) -> &RenderedDoc {
    let found: Vec<_> = of_kind(docs, "ClusterRole")
        .into_iter()
        .filter(|r| {
            r.value["metadata"]["labels"].as_object().is_none_or(|l| {
                !l.keys()
                    .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
            })
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one operator ClusterRole, got {}",
        found.len()
    );
    found[0]
}

/// Joins documents back into one multi-document YAML stream.
pub fn join<'a>(docs: impl IntoIterator<Item = &'a RenderedDoc>) -> String {
    docs.into_iter()
        .map(|d| format!("---\n{}\n", d.text))
        .collect()
}

/// The operator container of a rendered or installed Deployment.
pub fn operator_container(deployment: &Value) -> &Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "operator")
        .expect("operator container")
}

/// The literal `value` of an environment variable of a container.
pub fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?
        .get("value")?
        .as_str()
}
