//! Scenario 3: kube-apiserver, then etcd, restart in the middle of a rollout. The same operator
//! process (same PID, never restarted) must recover its watches and finish the rollout.

use acs_emulator::EmulatorConfig;
use acs_testenv::report;
use tokio::time::Instant;

use crate::fleet::{self, census, create_fleet, judge_secrets, spawn, Stage, SuiteRef};
use crate::report::human;

pub const NAME: &str = "3. apiserver + etcd restart";

pub async fn run(suite: SuiteRef) {
    let scale = suite.scale.clone();
    let stage = Stage::new(&suite, "rel-restart", EmulatorConfig::default()).await;
    let (users, tokens) = create_fleet(&stage.env, scale.restart_tokens).await;
    // A budget that makes the rollout last about 30 s, so both restarts land inside it.
    let rps = ((users + tokens) as f64 / 30.0).max(1.0).to_string();
    let mut op = spawn(
        &suite,
        stage.args(
            "op-restarts",
            &[
                "--acs-api-mode",
                "preview",
                "--acs-requests-per-second",
                &rps,
                "--acs-request-burst",
                "1",
            ],
        ),
    );
    let pid = op.pid();
    let converge = scale.converge_within(users + tokens);
    fleet::wait_tokens_ready(&stage.env, (tokens / 5).max(1), converge).await;

    let cp = stage.env.cp;
    let ready_before_apiserver = ready(&stage).await;
    let t = Instant::now();
    on_own_runtime(move || async move {
        cp.restart_apiserver()
            .await
            .unwrap_or_else(|e| panic!("restarting kube-apiserver: {}", report(&e)))
    })
    .await;
    let apiserver_outage = t.elapsed();
    let ready_before_etcd = ready(&stage).await;
    let t = Instant::now();
    on_own_runtime(move || async move {
        cp.restart_etcd()
            .await
            .unwrap_or_else(|e| panic!("restarting etcd: {}", report(&e)))
    })
    .await;
    let etcd_outage = t.elapsed();
    suite.check(
        NAME,
        "tokens Ready when the apiserver / etcd went down (mid-rollout)",
        format!("< {tokens} / < {tokens}"),
        format!("{ready_before_apiserver} / {ready_before_etcd}"),
        ready_before_apiserver < tokens && ready_before_etcd < tokens,
    );
    suite.figure(
        NAME,
        "apiserver / etcd restart took (down until ready again)",
        format!("{} / {}", human(apiserver_outage), human(etcd_outage)),
    );

    let took = fleet::wait_tokens_ready(&stage.env, tokens, converge).await;
    suite.figure(NAME, "rollout finished after etcd was back", human(took));
    let alive = op.is_running() && op.pid() == pid;
    suite.check(
        NAME,
        "the same operator process recovered (no restart)",
        format!("pid {} alive", pid.unwrap_or(0)),
        if alive {
            format!("pid {} alive", pid.unwrap_or(0))
        } else {
            "exited".to_string()
        },
        alive,
    );
    let (ready, _) = fleet::token_readiness(&stage.env).await.expect("tokens");
    suite.check(NAME, "tokens Ready", tokens, ready, ready == tokens);
    let c = census(&stage.env, &stage.acs).await;
    suite.check(
        NAME,
        "live identities in ACS = CommunicationUsers",
        users,
        format!(
            "{} identities, {} users, {} leaked",
            c.live, c.users, c.leaked
        ),
        c.live == users && c.users == users && c.leaked == 0 && c.unbacked.is_empty(),
    );
    let (checked, invalid) = judge_secrets(&suite, &stage.env, &stage.acs).await;
    suite.check(
        NAME,
        "token Secrets whose token the emulator rejects",
        format!("0 of {tokens}"),
        format!("{} of {checked}", invalid.len()),
        invalid.is_empty() && checked == tokens,
    );
    // An issue whose Secret write met the outage is lost and issued again: reported, since
    // it costs one ACS call and nothing else.
    suite.figure(
        NAME,
        "tokens issued by ACS for the tokens needed",
        format!("{} for {tokens}", c.tokens_issued),
    );
    fleet::gather_evidence(&suite, &stage.env, Some(&op)).await;
    op.kill();
}

async fn ready(stage: &Stage) -> usize {
    fleet::token_readiness(&stage.env)
        .await
        .map(|(n, _)| n)
        .unwrap_or(0)
}

/// Runs a control-plane operation on a thread with its own runtime: its futures are not `Send`,
/// and the scenario runs as a task of the multi-threaded test runtime.
async fn on_own_runtime<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
}
