//! What every scenario needs: a namespace with an emulator and credentials, operators spawned at
//! trace level (their logs kept as evidence), a fleet of users and tokens created in bulk,
//! polled waits over the whole fleet, and the end-of-scenario census (identities, token
//! validity, events and statuses gathered for the secret-leak scan).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use acs_emulator::EmulatorConfig;
use acs_identity_operator::api::{CommunicationToken, CommunicationUser, CommunicationUserSpec};
use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::Value;
use tokio::time::Instant;

use crate::harness::{put_secret, token_spec, Acs, Operator, OperatorArgs};
use crate::report::Suite;
use crate::support::TestEnv;

/// Operator log filter: the operator at trace (every ACS attempt, every reconcile step), its
/// HTTP and Kubernetes clients at debug.
pub const LOG_LEVEL: &str =
    "debug,acs_identity_operator=trace,hyper=info,hyper_util=info,h2=info,rustls=info,tower=info";

/// Label selector of the Secrets the operator writes.
pub fn managed_secrets() -> String {
    format!(
        "{}={}",
        acs_identity_operator::api::MANAGED_BY_LABEL,
        acs_identity_operator::api::MANAGED_BY
    )
}

/// A namespace, an emulator, its admin API and the namespace's `acs-credentials` Secret.
pub struct Stage {
    pub env: TestEnv,
    pub acs: Acs,
    pub admin: Admin,
}

impl Stage {
    /// Starts an emulator with `config`, records its keys as evidence, and writes the
    /// credentials Secret into a fresh namespace named after `test`.
    pub async fn new(suite: &Suite, test: &str, config: EmulatorConfig) -> Stage {
        let env = TestEnv::new(test).await;
        let acs = Acs::start_with(config).await;
        for k in acs.emu.access_keys() {
            suite.add_key(&k.to_base64());
        }
        put_secret(
            &env,
            "acs-credentials",
            "connectionString",
            &acs.connection_string(),
        )
        .await;
        let admin = Admin::new(&acs);
        Stage { env, acs, admin }
    }

    /// Operator arguments for this stage at trace level, with `identity` and extra flags.
    pub fn args(&self, identity: &str, extra: &[&str]) -> OperatorArgs {
        let mut a = OperatorArgs::new(&self.env, &self.acs).identity(identity);
        a.log_level = LOG_LEVEL.to_string();
        for e in extra {
            a = a.arg(e);
        }
        a
    }

    pub fn tokens(&self) -> Api<CommunicationToken> {
        self.env.api()
    }

    pub fn users(&self) -> Api<CommunicationUser> {
        self.env.api()
    }
}

/// Spawns an operator and keeps its log file as evidence for the leak scan.
pub fn spawn(suite: &Suite, args: OperatorArgs) -> Operator {
    let op = Operator::spawn(args);
    suite.add_log(op.log_path.clone());
    op
}

/// The emulator's admin API (`/_emulator/...`), which `harness::Acs` does not expose in full.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    pub fn new(acs: &Acs) -> Admin {
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(acs.emu.ca_pem().as_bytes()).expect("CA"),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        Admin {
            http,
            base: acs.emu.admin_url(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
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

    pub async fn stats(&self) -> Value {
        self.call(reqwest::Method::GET, "/stats", None).await
    }

    pub async fn set_faults(&self, faults: Value) -> Value {
        self.call(reqwest::Method::PUT, "/faults", Some(faults))
            .await
    }

    pub async fn reset_stats(&self) {
        self.call(reqwest::Method::POST, "/stats/reset", None).await;
    }

    pub async fn clear_faults(&self) {
        self.call(reqwest::Method::DELETE, "/faults", None).await;
    }
}

/// Names of user `i` and token `i`.
pub fn user_name(i: usize) -> String {
    format!("u-{i:03}")
}

pub fn token_name(i: usize) -> String {
    format!("t-{i:03}")
}

/// Creates the users for `tokens` tokens (two tokens each) and the tokens.
pub async fn create_fleet(env: &TestEnv, tokens: usize) -> (usize, usize) {
    let users = crate::scale::Scale::users_for(tokens);
    create_objects(env, users, tokens).await;
    (users, tokens)
}

/// Creates `users` users, then `tokens` tokens where token `i` belongs to user `i % users`,
/// eight requests at a time.
pub async fn create_objects(env: &TestEnv, users: usize, tokens: usize) {
    let user_api: Api<CommunicationUser> = env.api();
    let token_api: Api<CommunicationToken> = env.api();
    stream::iter(0..users)
        .for_each_concurrent(8, |i| {
            let api = user_api.clone();
            async move {
                let u = CommunicationUser::new(&user_name(i), CommunicationUserSpec::default());
                api.create(&PostParams::default(), &u)
                    .await
                    .unwrap_or_else(|e| panic!("creating user {i}: {e}"));
            }
        })
        .await;
    stream::iter(0..tokens)
        .for_each_concurrent(8, |i| {
            let api = token_api.clone();
            async move {
                let t = CommunicationToken::new(&token_name(i), token_spec(&user_name(i % users)));
                api.create(&PostParams::default(), &t)
                    .await
                    .unwrap_or_else(|e| panic!("creating token {i}: {e}"));
            }
        })
        .await;
}

/// Repeats `attempt` every `every` until it returns `Ok`, panicking with the last error after
/// `timeout`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match attempt().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("{what} did not happen within {timeout:?}; last state: {e}")
            }
            Err(_) => {}
        }
    }
}

fn ready_reason<'a>(
    conds: impl IntoIterator<Item = &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> Option<(bool, String)> {
    conds
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status == "True", c.reason.clone()))
}

/// Tokens whose Ready condition is True, and a count of the others by reason.
pub async fn token_readiness(env: &TestEnv) -> Result<(usize, BTreeMap<String, usize>), String> {
    let api: Api<CommunicationToken> = env.api();
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut ready = 0;
    let mut others = BTreeMap::new();
    for t in &list.items {
        match t.status.as_ref().and_then(|s| ready_reason(&s.conditions)) {
            Some((true, _)) => ready += 1,
            Some((false, reason)) => *others.entry(reason).or_insert(0) += 1,
            None => *others.entry("NoCondition".to_string()).or_insert(0) += 1,
        }
    }
    Ok((ready, others))
}

/// Users whose Ready condition is True.
pub async fn users_ready(env: &TestEnv) -> Result<usize, String> {
    let api: Api<CommunicationUser> = env.api();
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .iter()
        .filter(|u| {
            u.status
                .as_ref()
                .and_then(|s| ready_reason(&s.conditions))
                .is_some_and(|(ok, _)| ok)
        })
        .count())
}

/// Waits until at least `n` tokens are Ready; returns how long it took.
pub async fn wait_tokens_ready(env: &TestEnv, n: usize, timeout: Duration) -> Duration {
    let start = Instant::now();
    poll(
        &format!("{n} tokens Ready"),
        timeout,
        Duration::from_millis(500),
        || async {
            let (ready, others) = token_readiness(env).await?;
            if ready >= n {
                Ok(())
            } else {
                Err(format!("{ready} Ready, others by reason: {others:?}"))
            }
        },
    )
    .await;
    start.elapsed()
}

/// Every token Secret of the namespace judged by the emulator: (checked, invalid as
/// `name: reason`). Every token seen becomes evidence for the leak scan.
pub async fn judge_secrets(suite: &Suite, env: &TestEnv, acs: &Acs) -> (usize, Vec<String>) {
    let api: Api<Secret> = env.api();
    let list = api
        .list(&ListParams::default().labels(&managed_secrets()))
        .await
        .expect("list token secrets");
    let mut invalid = Vec::new();
    for s in &list.items {
        let Some(token) = secret_token(s) else {
            invalid.push(format!("{}: no token", s.name_any()));
            continue;
        };
        suite.add_token(&token);
        let (valid, reason) = acs.validate(&token).await;
        if !valid {
            invalid.push(format!("{}: {reason}", s.name_any()));
        }
    }
    (list.items.len(), invalid)
}

/// The token string of a token Secret.
pub fn secret_token(s: &Secret) -> Option<String> {
    let data = s.data.as_ref()?;
    String::from_utf8(data.get("token")?.0.clone()).ok()
}

/// ACS identities compared with the CommunicationUsers of the namespace.
#[derive(Debug)]
pub struct Census {
    /// Users in the namespace.
    pub users: usize,
    /// Live (not deleted) identities in the emulator.
    pub live: usize,
    /// Users without an identity id, or whose identity is not live.
    pub unbacked: Vec<String>,
    /// Live identities that no user records: leaked.
    pub leaked: usize,
    /// Identities recorded by more than one user.
    pub shared: usize,
    /// Tokens issued by the emulator over all identities.
    pub tokens_issued: u64,
    /// Revocations by the emulator over all identities.
    pub revocations: u64,
}

pub async fn census(env: &TestEnv, acs: &Acs) -> Census {
    let users: Api<CommunicationUser> = env.api();
    let users = users.list(&ListParams::default()).await.expect("users");
    let identities = acs.identities().await;
    let live: BTreeSet<String> = identities
        .iter()
        .filter(|i| i["deleted"] == false)
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    let mut recorded: BTreeMap<String, usize> = BTreeMap::new();
    let mut unbacked = Vec::new();
    for u in &users.items {
        match u.identity_id() {
            Some(id) if live.contains(id) => *recorded.entry(id.to_string()).or_insert(0) += 1,
            Some(id) => unbacked.push(format!("{} ({id} not live)", u.name_any())),
            None => unbacked.push(format!("{} (no identity)", u.name_any())),
        }
    }
    Census {
        users: users.items.len(),
        live: live.len(),
        unbacked,
        leaked: live.iter().filter(|id| !recorded.contains_key(*id)).count(),
        shared: recorded.values().filter(|n| **n > 1).count(),
        tokens_issued: identities
            .iter()
            .filter_map(|i| i["tokensIssued"].as_u64())
            .sum(),
        revocations: identities
            .iter()
            .filter_map(|i| i["revocations"].as_u64())
            .sum(),
    }
}

/// Keeps the namespace's events, the statuses of every user and token, and (when given) the
/// operator's metrics as evidence for the secret-leak scan.
pub async fn gather_evidence(suite: &Suite, env: &TestEnv, op: Option<&Operator>) {
    let ns = env.ns().to_string();
    let events: Api<k8s_openapi::api::events::v1::Event> = env.api();
    if let Ok(list) = events.list(&ListParams::default()).await {
        let text = list
            .items
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default(),
                    e.regarding
                        .as_ref()
                        .and_then(|r| r.name.clone())
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        suite.add_text(format!("events of {ns}"), text);
    }
    let core: Api<k8s_openapi::api::core::v1::Event> = env.api();
    if let Ok(list) = core.list(&ListParams::default()).await {
        let text = serde_json::to_string(&list.items).unwrap_or_default();
        suite.add_text(format!("core events of {ns}"), text);
    }
    let users: Api<CommunicationUser> = env.api();
    if let Ok(list) = users.list(&ListParams::default()).await {
        let statuses: Vec<_> = list.items.iter().map(|u| &u.status).collect();
        suite.add_text(
            format!("user statuses of {ns}"),
            serde_json::to_string(&statuses).unwrap_or_default(),
        );
    }
    let tokens: Api<CommunicationToken> = env.api();
    if let Ok(list) = tokens.list(&ListParams::default()).await {
        let statuses: Vec<_> = list.items.iter().map(|t| &t.status).collect();
        suite.add_text(
            format!("token statuses of {ns}"),
            serde_json::to_string(&statuses).unwrap_or_default(),
        );
    }
    if let Some(op) = op {
        if let Ok(r) = reqwest::get(format!("http://{}/metrics", op.metrics)).await {
            if let Ok(text) = r.text().await {
                suite.add_text(format!("metrics of an operator in {ns}"), text);
            }
        }
    }
}

/// Shared handle to the suite, for tasks.
pub type SuiteRef = Arc<Suite>;
