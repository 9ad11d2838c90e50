//! The node the tier runs on (started by `scripts/node.sh up`, described by its env file), the
//! clients and commands to drive it, and an emulator on the pod bridge that pods can reach.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use acs_emulator::EmulatorConfig;
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

/// Everything `scripts/node.sh up` exports.
pub struct Node {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    pub api_url: String,
    pub audit_log: PathBuf,
    pub name: String,
    pub bridge_ip: String,
    pub app_image: String,
    pub operator_image: String,
    pub sync_frequency: String,
    /// The node's directory (containerd's socket, the kubelet's root).
    pub dir: PathBuf,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the node tier runs on a real node. Run it through scripts/test.sh, \
             or start one with `scripts/node.sh up` and `source target/node/env` first."
        )
    })
}

/// The previous release, which the upgrade test installs before upgrading to this one:
/// `scripts/node.sh up` builds its operator from its commit (scripts/previous-release.sh),
/// imports its image and exports these (not with `--no-previous-release`).
pub struct Previous {
    /// Its version, e.g. `0.1.0` (also its image's tag).
    pub version: String,
    pub operator_image: String,
    /// Its chart's directory, as that release's commit has it.
    pub chart: PathBuf,
}

/// The previous release of this test process's node.
pub fn previous() -> &'static Previous {
    fn var(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: the upgrade test needs the previous release's chart and \
                 image, which `scripts/node.sh up` builds (scripts/previous-release.sh) and \
                 exports in target/node/env unless started with --no-previous-release."
            )
        })
    }
    static PREVIOUS: OnceLock<Previous> = OnceLock::new();
    PREVIOUS.get_or_init(|| Previous {
        version: var("ACS_PREVIOUS_RELEASE"),
        operator_image: var("ACS_PREVIOUS_OPERATOR_IMAGE"),
        chart: var("ACS_PREVIOUS_CHART").into(),
    })
}

/// The node of this test process.
pub fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| Node {
        kubeconfig: var("KUBECONFIG").into(),
        kubectl: var("KUBECTL").into(),
        helm: var("HELM").into(),
        api_url: var("ACS_TESTENV_API_URL"),
        audit_log: var("ACS_TESTENV_AUDIT_LOG").into(),
        name: var("ACS_NODE_NAME"),
        bridge_ip: var("ACS_NODE_BRIDGE_IP"),
        app_image: var("ACS_APP_IMAGE"),
        operator_image: var("ACS_OPERATOR_IMAGE"),
        sync_frequency: var("ACS_NODE_SYNC_FREQUENCY"),
        dir: var("ACS_NODE_DIR").into(),
    })
}

impl Node {
    /// The apiserver's port (pods reach it at the bridge address: there is no kube-proxy, so the
    /// `kubernetes` Service's ClusterIP leads nowhere).
    pub fn api_port(&self) -> String {
        self.api_url
            .rsplit(':')
            .next()
            .expect("port in the API URL")
            .to_string()
    }
}

/// Tests share one node and one cluster-wide chart release: one at a time.
pub async fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

pub async fn client() -> kube::Client {
    kube::Client::try_default()
        .await
        .expect("a client from KUBECONFIG")
}

/// Runs a command, asserting it succeeds; returns its stdout.
pub fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("KUBECONFIG", &node().kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn kubectl(args: &[&str]) -> String {
    run(&node().kubectl, args, None)
}

pub fn kubectl_apply(yaml: &str) {
    run(&node().kubectl, &["apply", "-f", "-"], Some(yaml));
}

pub fn helm(args: &[&str]) -> String {
    run(&node().helm, args, None)
}

/// Polls `attempt` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = attempt().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The emulator, listening on the node's bridge address so both the host and pods reach it. One
/// per test process, on a runtime of its own: the operator reads its CA bundle at start-up, so
/// every test's release must trust the same CA (a test's own runtime ends with the test).
pub struct Acs {
    pub connection_string: String,
    pub admin_url: String,
    pub ca_pem: String,
    http: reqwest::Client,
}

impl Acs {
    pub async fn start() -> &'static Acs {
        static ACS: OnceLock<Acs> = OnceLock::new();
        if let Some(acs) = ACS.get() {
            return acs;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("emulator runtime");
            runtime.block_on(async move {
                let ip: std::net::IpAddr = node().bridge_ip.parse().expect("bridge IP");
                let emu = acs_emulator::start(EmulatorConfig {
                    listen: (ip, 0).into(),
                    // The test reaches the admin API from the bridge address, not loopback.
                    admin_allow_remote: true,
                    ..EmulatorConfig::default()
                })
                .await
                .expect("the emulator starts on the bridge");
                let _ = tx.send((
                    emu.connection_string(),
                    emu.admin_url(),
                    emu.ca_pem().to_string(),
                ));
                std::future::pending::<()>().await;
                drop(emu);
            });
        });
        let (connection_string, admin_url, ca_pem) = rx.await.expect("the emulator started");
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA"))
            .build()
            .expect("http client");
        ACS.get_or_init(|| Acs {
            connection_string,
            admin_url,
            ca_pem,
            http,
        })
    }

    pub fn connection_string(&self) -> String {
        self.connection_string.clone()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.admin_url);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{url}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Whether a downstream ACS service would accept `token`.
    pub async fn is_valid(&self, token: &str) -> bool {
        let v = self
            .admin(
                reqwest::Method::POST,
                "/validate",
                Some(serde_json::json!({ "token": token })),
            )
            .await;
        v["valid"].as_bool().unwrap_or(false)
    }

    /// Requests answered for `operation` (e.g. `issueAccessToken`), any status.
    pub async fn calls(&self, operation: &str) -> u64 {
        let stats = self.stats().await;
        stats["operations"][operation]
            .as_object()
            .map(|by_status| by_status.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    }

    /// The emulator's counters (`GET /_emulator/stats`): requests by operation and status.
    pub async fn stats(&self) -> Value {
        self.admin(reqwest::Method::GET, "/stats", None).await
    }

    /// Requests answered for any operation, any status.
    pub async fn total_calls(&self) -> u64 {
        self.stats().await["total"].as_u64().unwrap_or(0)
    }
}

/// Audit events (JSON lines) of the control plane, oldest first.
pub fn audit_events() -> Vec<Value> {
    std::fs::read_to_string(&node().audit_log)
        .expect("audit log")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
