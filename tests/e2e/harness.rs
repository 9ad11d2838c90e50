//! The operator under test: an ACS emulator on 127.0.0.1 and the real operator binary running
//! as a child process against the shared control plane, watching only the test's namespace.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use acs_emulator::{EmulatorConfig, RunningEmulator};
use acs_identity_operator::api::{
    CommunicationToken, CommunicationTokenSpec, CommunicationUser, CommunicationUserSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::wait::Condition;
use serde_json::Value;

use crate::support::TestEnv;

/// How long a test waits for the operator to converge.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// An emulator with its CA written to a file the operator can read.
pub struct Acs {
    pub emu: RunningEmulator,
    pub ca_path: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Acs {
    pub async fn start() -> Acs {
        Self::start_with(EmulatorConfig::default()).await
    }

    pub async fn start_with(config: EmulatorConfig) -> Acs {
        let emu = acs_emulator::start(config).await.expect("emulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, emu.ca_pem()).expect("write CA");
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).expect("CA"),
            )
            .build()
            .expect("http client");
        Acs {
            emu,
            ca_path,
            http,
            _dir: dir,
        }
    }

    pub fn connection_string(&self) -> String {
        self.emu.connection_string()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.emu.admin_url());
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{url}: {status} {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
    }

    /// Every identity ever created: `{"id", "externalId", "deleted", ...}`.
    pub async fn identities(&self) -> Vec<Value> {
        let v = self.admin(reqwest::Method::GET, "/identities", None).await;
        v["identities"].as_array().cloned().unwrap_or_default()
    }

    /// The emulator's record of one identity.
    pub async fn identity(&self, id: &str) -> Option<Value> {
        self.identities().await.into_iter().find(|i| i["id"] == id)
    }

    /// Whether a downstream ACS service would accept `token`, and why not.
    pub async fn validate(&self, token: &str) -> (bool, String) {
        let v = self
            .admin(
                reqwest::Method::POST,
                "/validate",
                Some(serde_json::json!({ "token": token })),
            )
            .await;
        (
            v["valid"].as_bool().unwrap_or(false),
            v["reason"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// Regenerates a key; returns the new connection string.
    pub async fn regenerate(&self, which: &str) -> String {
        let v = self
            .admin(
                reqwest::Method::POST,
                "/keys/regenerate",
                Some(serde_json::json!({ "key": which })),
            )
            .await;
        v["connectionString"]
            .as_str()
            .expect("connectionString")
            .to_string()
    }

    /// The emulator's request counters (`GET /_emulator/stats`).
    // Not every test binary that includes this file uses each helper.
    #[allow(dead_code)]
    pub async fn stats(&self) -> Value {
        self.admin(reqwest::Method::GET, "/stats", None).await
    }

    /// Requests answered for `operation` (e.g. `issueAccessToken`), any status.
    #[allow(dead_code)]
    pub async fn calls(&self, operation: &str) -> u64 {
        let stats = self.stats().await;
        stats["operations"][operation]
            .as_object()
            .map(|by_status| by_status.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    }

    /// Requests answered for every operation, any status.
    #[allow(dead_code)]
    pub async fn total_calls(&self) -> u64 {
        let stats = self.stats().await;
        stats["operations"]
            .as_object()
            .into_iter()
            .flat_map(|ops| ops.values())
            .filter_map(Value::as_object)
            .flat_map(|by_status| by_status.values())
            .filter_map(Value::as_u64)
            .sum()
    }

    /// Sets the injected faults (`PUT /_emulator/faults`), e.g. `{"latencyMs": 3000}`.
    #[allow(dead_code)]
    pub async fn set_faults(&self, faults: Value) {
        self.admin(reqwest::Method::PUT, "/faults", Some(faults))
            .await;
    }

    /// Removes every injected fault.
    #[allow(dead_code)]
    pub async fn clear_faults(&self) {
        self.admin(reqwest::Method::DELETE, "/faults", None).await;
    }

    /// An ACS client of the operator's own library, as a tool outside the operator would use.
    #[allow(dead_code)]
    pub fn client(&self) -> acs_identity_operator::acs::AcsClient {
        let conn = acs_identity_operator::acs::ConnectionString::parse(&self.connection_string())
            .expect("connection string");
        let options = acs_identity_operator::acs::ClientOptions {
            ca_pem: Some(self.emu.ca_pem().as_bytes().to_vec()),
            ..Default::default()
        };
        acs_identity_operator::acs::AcsClient::new(conn, options).expect("ACS client")
    }

    /// Registers an Entra application (`POST /_emulator/entra/clients`); answers
    /// `{"tenantId", "clientId", "clientSecret"?}`.
    #[allow(dead_code)]
    pub async fn entra_client(&self, body: Value) -> Value {
        self.admin(reqwest::Method::POST, "/entra/clients", Some(body))
            .await
    }

    /// Sets an Entra application's roles on the resource.
    #[allow(dead_code)]
    pub async fn admin_put_roles(&self, client_id: &str, roles: &[&str]) {
        self.admin(
            reqwest::Method::PUT,
            &format!("/entra/clients/{client_id}/roles"),
            Some(serde_json::json!({ "roles": roles })),
        )
        .await;
    }

    /// Deletes an Entra application.
    #[allow(dead_code)]
    pub async fn delete_entra_client(&self, client_id: &str) {
        self.admin(
            reqwest::Method::DELETE,
            &format!("/entra/clients/{client_id}"),
            None,
        )
        .await;
    }

    /// Number of revocations the emulator recorded for `id`.
    pub async fn revocations(&self, id: &str) -> u64 {
        self.identity(id)
            .await
            .and_then(|i| i["revocations"].as_u64())
            .unwrap_or(0)
    }
}

/// Picks a free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The operator binary running as a child process.
pub struct Operator {
    child: Option<Child>,
    pub metrics: SocketAddr,
    pub log_path: PathBuf,
}

/// How to start an operator.
pub struct OperatorArgs {
    pub kubeconfig: PathBuf,
    pub namespaces: Vec<String>,
    pub ca: Option<PathBuf>,
    pub extra: Vec<String>,
    pub identity: String,
    /// Hosts added to the operator's allowed ACS endpoints (the emulator's).
    pub allowed_hosts: Vec<String>,
    pub log_level: String,
    /// Extra environment variables of the child.
    pub env: Vec<(String, String)>,
    /// Run with exactly `extra` as arguments and `env` as the whole environment: no default
    /// flags and nothing inherited, except `METRICS_ADDR`, which is always the loopback port the
    /// harness probes. For running the binary as a Deployment's container would run.
    pub bare: bool,
}

impl OperatorArgs {
    pub fn new(env: &TestEnv, acs: &Acs) -> Self {
        Self {
            kubeconfig: env.cp.kubeconfig_path().to_path_buf(),
            namespaces: vec![env.ns().to_string()],
            ca: Some(acs.ca_path.clone()),
            extra: vec![],
            identity: format!("op-{}", env.ns()),
            allowed_hosts: vec![acs_identity_operator::endpoint_allow::host_only(
                &acs.emu.endpoint(),
            )],
            log_level: "info,acs_identity_operator=trace".into(),
            env: vec![],
            bare: false,
        }
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }

    pub fn identity(mut self, id: &str) -> Self {
        self.identity = id.to_string();
        self
    }
}

impl Operator {
    pub fn spawn(args: OperatorArgs) -> Operator {
        let port = free_port();
        let metrics = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = std::env::temp_dir().join("acs-operator-e2e-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log_path = dir.join(format!("{}-{}.log", args.identity, std::process::id()));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_acs-identity-operator"));
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // The emulator's host joins the allowed ACS endpoints (the chart's list when bare).
        let allowed = |base: &str| {
            std::iter::once(base.to_string())
                .chain(args.allowed_hosts.iter().cloned())
                .collect::<Vec<_>>()
                .join(",")
        };
        if args.bare {
            cmd.env_clear()
                .args(&args.extra)
                .envs(args.env.iter().map(|(k, v)| {
                    let v = if k == "ALLOWED_ENDPOINT_HOSTS" {
                        allowed(v)
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                }))
                .env("METRICS_ADDR", metrics.to_string());
        } else {
            cmd.arg("run")
                .arg("--kubeconfig")
                .arg(&args.kubeconfig)
                .arg("--metrics-addr")
                .arg(metrics.to_string())
                .arg("--identity")
                .arg(&args.identity)
                .arg("--log-level")
                .arg(&args.log_level)
                .env_remove("KUBECONFIG")
                .env_remove("RUST_LOG");
            if !args.namespaces.is_empty() {
                cmd.arg("--watch-namespaces").arg(args.namespaces.join(","));
            }
            if let Some(ca) = &args.ca {
                cmd.arg("--acs-ca-cert").arg(ca);
            }
            // An environment variable, so a test's own `--allowed-endpoint-hosts` overrides it.
            cmd.env(
                "ALLOWED_ENDPOINT_HOSTS",
                allowed(acs_identity_operator::endpoint_allow::DEFAULT),
            );
            cmd.args(&args.extra)
                .envs(args.env.iter().map(|(k, v)| (k, v)));
        }
        let child = cmd.spawn().expect("operator starts");
        Operator {
            child: Some(child),
            metrics,
            log_path,
        }
    }

    /// The value of a counter or gauge sample (`name{labels}` exactly as exposed), 0 if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == sample).then(|| v.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    /// The operator's apiserver requests with `verb` so far (its request metrics).
    #[allow(dead_code)]
    pub async fn kube_requests(&self, verb: &str) -> f64 {
        self.metric(&format!(
            "acs_identity_operator_kube_requests_total{{verb=\"{verb}\"}}"
        ))
        .await
    }

    /// The operator's apiserver writes so far (create, update, patch, delete).
    #[allow(dead_code)]
    pub async fn kube_writes(&self) -> f64 {
        let mut n = 0.0;
        for verb in ["create", "update", "patch", "delete"] {
            n += self.kube_requests(verb).await;
        }
        n
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.metrics);
        crate::support::eventually("operator /readyz", CONVERGE, || async {
            let r = reqwest::get(&url).await.map_err(|e| e.to_string())?;
            if r.status() == 200 {
                Ok(())
            } else {
                Err(format!("{}", r.status()))
            }
        })
        .await;
    }

    /// The status code of an endpoint of the health server, if it answers.
    pub async fn probe(&self, path: &str) -> Option<u16> {
        reqwest::get(format!("http://{}{path}", self.metrics))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (graceful shutdown), returning the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: plain signal to our own child process.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The child's process id while it has not been killed or stopped.
    // Used by tests/reliability, which includes this file too.
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) to the child.
    #[allow(dead_code)]
    pub fn signal(&self, signal: i32) {
        let pid = self.pid().expect("the operator is running") as i32;
        // SAFETY: a plain signal to our own child process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits up to `timeout` for the child to exit by itself; its exit status, or None if it
    /// is still running (it is then left running).
    #[allow(dead_code)]
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let c = self.child.as_mut()?;
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Everything the operator logged so far.
    pub fn logs(&self) -> String {
        read_file(&self.log_path)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_file(p: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Creates (or replaces) an Opaque Secret with one string key.
pub async fn put_secret(env: &TestEnv, name: &str, key: &str, value: &str) {
    let api: Api<Secret> = env.api();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name },
        "stringData": { key: value },
    }))
    .expect("secret");
    let _ = api.delete(name, &Default::default()).await;
    crate::support::eventually("secret created", CONVERGE, || async {
        api.create(&PostParams::default(), &secret)
            .await
            .map(|_| ())
    })
    .await;
}

/// Labels the namespace of `env` to use the operator-wide default credentials.
#[allow(dead_code)]
pub async fn opt_in_to_default_credentials(env: &TestEnv) {
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    ns_api
        .patch(
            env.ns(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "metadata": { "labels": { "communication.acs.dev/default-credentials": "true" } }
            })),
        )
        .await
        .expect("label the namespace");
}

/// Creates a CommunicationUser.
pub async fn create_user(
    env: &TestEnv,
    name: &str,
    spec: CommunicationUserSpec,
) -> CommunicationUser {
    let api: Api<CommunicationUser> = env.api();
    api.create(&PostParams::default(), &CommunicationUser::new(name, spec))
        .await
        .expect("create user")
}

/// A fresh namespace whose `acs-credentials` Secret names a fresh emulator.
#[allow(dead_code)]
pub async fn keyed_namespace(test: &str) -> (TestEnv, Acs) {
    let env = TestEnv::new(test).await;
    let acs = Acs::start().await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    (env, acs)
}

/// Creates user `name` (default spec), waits until it is Ready and returns its identity id.
#[allow(dead_code)]
pub async fn ready_user_id(env: &TestEnv, name: &str) -> String {
    create_user(env, name, CommunicationUserSpec::default()).await;
    let users: Api<CommunicationUser> = env.api();
    let u = crate::support::wait_for(&users, name, CONVERGE, "user Ready", user_ready(""))
        .await
        .expect("user");
    u.identity_id().expect("identity").to_string()
}

/// Creates a token of `user` per name (default spec) and waits until each is Ready.
#[allow(dead_code)]
pub async fn ready_tokens(env: &TestEnv, user: &str, names: &[&str]) {
    for n in names {
        create_token(env, n, token_spec(user)).await;
    }
    let tokens: Api<CommunicationToken> = env.api();
    for n in names {
        crate::support::wait_for(&tokens, n, CONVERGE, "token Ready", token_ready(""))
            .await
            .expect("token");
    }
}

/// A token spec with defaults for `user`.
pub fn token_spec(user: &str) -> CommunicationTokenSpec {
    serde_json::from_value(serde_json::json!({ "userRef": { "name": user } })).expect("spec")
}

/// Creates a CommunicationToken.
pub async fn create_token(
    env: &TestEnv,
    name: &str,
    spec: CommunicationTokenSpec,
) -> CommunicationToken {
    let api: Api<CommunicationToken> = env.api();
    api.create(&PostParams::default(), &CommunicationToken::new(name, spec))
        .await
        .expect("create token")
}

/// The Ready condition's status and reason of a user.
pub fn user_ready(reason: &'static str) -> impl Condition<CommunicationUser> {
    move |u: Option<&CommunicationUser>| {
        u.and_then(|u| u.status.as_ref())
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| (reason.is_empty() && c.status == "True") || c.reason == reason)
    }
}

/// True when the token's Ready condition is True (any reason) or has `reason`.
pub fn token_ready(reason: &'static str) -> impl Condition<CommunicationToken> {
    move |t: Option<&CommunicationToken>| {
        t.and_then(|t| t.status.as_ref())
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| (reason.is_empty() && c.status == "True") || c.reason == reason)
    }
}

/// The token string in a token Secret.
pub async fn secret_token(env: &TestEnv, name: &str) -> Option<String> {
    let api: Api<Secret> = env.api();
    let s = api.get_opt(name).await.expect("get secret")?;
    let data = s.data?;
    Some(String::from_utf8(data.get("token")?.0.clone()).expect("utf8"))
}

/// Every event in the namespace as `reason: note` lines.
pub async fn events(env: &TestEnv) -> Vec<(String, String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = env.api();
    api.list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.reporting_instance.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits until an event matching `pred` (over reason, note, reporting instance) exists.
pub async fn wait_event(env: &TestEnv, pred: impl Fn(&(String, String, String)) -> bool) {
    crate::support::eventually("the expected event", CONVERGE, || async {
        let evs = events(env).await;
        if evs.iter().any(&pred) {
            Ok(())
        } else {
            Err(evs)
        }
    })
    .await;
}

/// Fails if any secret material appears in `haystack`: each key in full and every
/// 16-character window of it, and each token and its signature segment.
pub fn assert_no_secrets(haystack: &str, keys_b64: &[String], tokens: &[String], what: &str) {
    for k in keys_b64 {
        assert!(
            !haystack.contains(k.as_str()),
            "{what} contains an access key"
        );
        let chars: Vec<char> = k.chars().collect();
        for w in chars.windows(16) {
            let s: String = w.iter().collect();
            assert!(
                !haystack.contains(&s),
                "{what} contains a 16-character window of an access key"
            );
        }
    }
    for t in tokens {
        assert!(!haystack.contains(t.as_str()), "{what} contains a token");
        if let Some(sig) = t.rsplit('.').next().filter(|s| s.len() >= 16) {
            assert!(!haystack.contains(sig), "{what} contains a token signature");
        }
    }
}

/// The audience of ServiceAccount tokens exchanged with Entra.
#[allow(dead_code)]
pub const SA_AUDIENCE: &str = "api://AzureADTokenExchange";

/// An emulator that trusts the control plane's CA for fetching its issuer's keys.
#[allow(dead_code)]
pub async fn entra_acs(env: &crate::support::TestEnv) -> Acs {
    entra_acs_with(env, EmulatorConfig::default()).await
}

/// [`entra_acs`] with other settings of `config`.
#[allow(dead_code)]
pub async fn entra_acs_with(env: &crate::support::TestEnv, config: EmulatorConfig) -> Acs {
    let ca = std::fs::read_to_string(&env.cp.pki().ca_cert).expect("cluster CA");
    Acs::start_with(EmulatorConfig {
        oidc_ca_pems: vec![ca],
        ..config
    })
    .await
}

/// The apiserver's ServiceAccount issuer (`--service-account-issuer`).
#[allow(dead_code)]
pub fn issuer(env: &crate::support::TestEnv) -> String {
    format!("{}/", env.cp.api_url())
}

#[allow(dead_code)]
pub fn subject(env: &crate::support::TestEnv, sa: &str) -> String {
    format!("system:serviceaccount:{}:{sa}", env.ns())
}

/// Registers an Entra application federated with `subject`, holding `roles`.
#[allow(dead_code)]
pub async fn federated_client(
    acs: &Acs,
    env: &crate::support::TestEnv,
    name: &str,
    subject: &str,
    roles: &[&str],
) -> Value {
    acs.entra_client(serde_json::json!({
        "displayName": name,
        "federated": [{"issuer": issuer(env), "subject": subject, "audience": SA_AUDIENCE}],
        "roles": roles,
    }))
    .await
}

/// A ServiceAccount annotated for workload identity, opted in to token requests or not.
#[allow(dead_code)]
pub async fn workload_identity_sa(
    env: &crate::support::TestEnv,
    name: &str,
    app: &Value,
    opted_in: bool,
) {
    let mut ann = serde_json::json!({
        "azure.workload.identity/client-id": app["clientId"],
        "azure.workload.identity/tenant-id": app["tenantId"],
    });
    if opted_in {
        ann["communication.acs.dev/allow-token-request"] = serde_json::json!("true");
    }
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": ann}
        }))
        .unwrap();
    env.api::<k8s_openapi::api::core::v1::ServiceAccount>()
        .create(&PostParams::default(), &sa)
        .await
        .expect("create ServiceAccount");
}

#[allow(dead_code)]
pub fn entra_user(acs: &Acs, sa: &str) -> CommunicationUserSpec {
    CommunicationUserSpec {
        credentials: Some(
            acs_identity_operator::api::CredentialsRef::from_service_account(
                &acs.emu.endpoint(),
                sa,
            ),
        ),
        ..CommunicationUserSpec::default()
    }
}

#[allow(dead_code)]
pub fn entra_operator(env: &crate::support::TestEnv, acs: &Acs) -> OperatorArgs {
    OperatorArgs::new(env, acs)
        .arg("--entra-authority-host")
        .arg(&acs.emu.entra_authority())
        .arg("--sealing-key-secret")
        .arg(&format!("{}/acs-sealing-key", env.ns()))
}

/// Creates a CommunicationService of the test namespace from its spec as JSON.
#[allow(dead_code)]
pub async fn create_service(env: &TestEnv, name: &str, spec: Value) {
    use acs_identity_operator::api::CommunicationService;
    let api: Api<CommunicationService> = env.api();
    let obj: CommunicationService = serde_json::from_value(serde_json::json!({
        "apiVersion": "communication.acs.dev/v1alpha1",
        "kind": "CommunicationService",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("service");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create CommunicationService");
}

/// Creates a ClusterCommunicationService from its spec as JSON (deleted by the caller).
#[allow(dead_code)]
pub async fn create_cluster_service(env: &TestEnv, name: &str, spec: Value) {
    use acs_identity_operator::api::ClusterCommunicationService;
    let api: Api<ClusterCommunicationService> = Api::all(env.client.clone());
    let obj: ClusterCommunicationService = serde_json::from_value(serde_json::json!({
        "apiVersion": "communication.acs.dev/v1alpha1",
        "kind": "ClusterCommunicationService",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("cluster service");
    let _ = api.delete(name, &Default::default()).await;
    crate::support::eventually("cluster service created", CONVERGE, || async {
        api.create(&PostParams::default(), &obj).await.map(|_| ())
    })
    .await;
}

/// Held by every test whose operator manages ClusterCommunicationServices' status
/// (`--manage-cluster-services`): cluster-scoped, they are seen by every such operator, and one
/// that does not watch a service's Secret namespace would report it not Ready over another
/// test's operator. These tests take turns.
pub async fn cluster_services_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// A platform team's ClusterCommunicationService `name` over the connection string of `acs`,
/// kept in Secret `acs-platform` of `platform`, selecting the namespaces `selector` selects
/// (`None`: no selector, which selects none).
pub async fn platform_cluster_service(
    platform: &TestEnv,
    acs: &Acs,
    name: &str,
    selector: Option<Value>,
) {
    put_secret(
        platform,
        "acs-platform",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    let mut spec = serde_json::json!({
        "endpoint": acs.emu.endpoint(),
        "connectionString": { "secretRef": { "name": "acs-platform", "namespace": platform.ns() } },
    });
    if let Some(s) = selector {
        spec["namespaceSelector"] = s;
    }
    create_cluster_service(platform, name, spec).await;
}

/// A user spec referencing a service of `kind`.
#[allow(dead_code)]
pub fn service_user(kind: &str, name: &str) -> CommunicationUserSpec {
    serde_json::from_value(serde_json::json!({ "serviceRef": { "kind": kind, "name": name } }))
        .expect("user spec")
}

/// The Ready condition of a service (either kind): `reason` empty means Ready=True.
#[allow(dead_code)]
pub fn service_ready<K>(reason: &'static str) -> impl Condition<K>
where
    K: serde::Serialize,
{
    move |s: Option<&K>| {
        let Some(v) = s.and_then(|s| serde_json::to_value(s).ok()) else {
            return false;
        };
        let Some(c) = v["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        else {
            return false;
        };
        if reason.is_empty() {
            c["status"] == "True"
        } else {
            c["reason"] == reason
        }
    }
}
