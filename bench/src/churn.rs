//! Phase 9: churn. Creates and deletes `tokens` CommunicationTokens in rounds of `batch` on
//! users that stay, then checks that nothing the operator keeps per object outlives it: every
//! in-memory table it reports (`acs_identity_operator_tracked_entries`) back to its size
//! before the first token, and its resident memory back within 10% of where it started.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use acs_identity_operator::api::CommunicationToken;
use kube::api::{Api, DeleteParams};

use crate::error::Error;
use crate::metrics::{Heap, Samples};
use crate::operator::Operator;
use crate::phases::Env;
use crate::ready::ReadyWatch;
use crate::report::{int, Goal};
use crate::workload::{self, Workload};

/// The metric of the tables' sizes.
const TRACKED: &str = "acs_identity_operator_tracked_entries";

/// Sizes of one churn.
#[derive(Debug, Clone)]
pub struct ChurnPlan {
    pub users: usize,
    pub tokens: usize,
    pub batch: usize,
    /// How long to wait, after the tables are back, for the operator to drop the events it
    /// keeps for 6 minutes of idleness (its event recorder's cache) before reading RSS; zero:
    /// read at once.
    pub settle: Duration,
}

/// What one churn measured.
#[derive(Debug, Clone)]
pub struct ChurnRun {
    pub users: usize,
    pub tokens: usize,
    pub rounds: usize,
    /// Resident set size (VmRSS, KiB) with the users Ready, before any token.
    pub rss_cold_kib: u64,
    /// VmRSS after the warm-up round (its tokens created, Ready and deleted): where the churn
    /// starts.
    pub rss_before_kib: u64,
    /// The largest VmRSS seen at the end of a round's creation.
    pub rss_peak_kib: u64,
    /// VmRSS once every token is gone and the tables settled.
    pub rss_after_kib: u64,
    /// VmRSS as each round's tokens are gone and the tables are back (the event recorder not
    /// yet idle): what the churn keeps grows with the rounds, or stays with the largest round.
    pub rss_rounds_kib: Vec<u64>,
    /// The allocator's bytes in use and free, where the churn starts and at its end.
    pub heap_before: Heap,
    pub heap_after: Heap,
    /// Every table before the first token and after the last one is gone.
    pub tables_before: BTreeMap<String, i64>,
    pub tables_after: BTreeMap<String, i64>,
    /// Whether the tables came back within the deadline.
    pub settled: bool,
    pub took: Duration,
}

/// Tokens created and deleted once before the churn is measured.
const WARM_UP: usize = 100;

/// Creates `n` tokens on `users`' users, waits for them all to be Ready, deletes them and waits
/// for them to be gone; returns VmRSS with the `n` tokens Ready.
async fn churn_round(
    env: &Env,
    api: &Api<CommunicationToken>,
    users: &Workload,
    ready: &mut ReadyWatch,
    pid: u32,
    prefix: &str,
    n: usize,
) -> Result<u64, Error> {
    let w = Workload::new(prefix, users.users, n);
    // The round's tokens belong to the users of the first workload (same names).
    let jobs: Vec<CommunicationToken> = (0..n)
        .map(|i| {
            let mut t = w.token(i);
            t.spec.user_ref.name = users.user_name(w.user_of(i));
            t
        })
        .collect();
    let tokens = api.clone();
    workload::for_each_parallel(jobs, 16, move |t| {
        let tokens = tokens.clone();
        async move {
            tokens
                .create(&Default::default(), &t)
                .await
                .map_err(Error::kube("create a CommunicationToken"))?;
            Ok(())
        }
    })
    .await?;
    ready.all_ready(users.users, n, env.deadline).await?;
    let peak = rss_kib(pid)?;
    // One delete each (a deletecollection of thousands outlives the apiserver's request
    // timeout).
    let names: Vec<String> = (0..n).map(|i| w.token_name(i)).collect();
    let tokens = api.clone();
    workload::for_each_parallel(names, 16, move |name| {
        let tokens = tokens.clone();
        async move {
            tokens
                .delete(&name, &DeleteParams::default())
                .await
                .map_err(Error::kube("delete a CommunicationToken"))?;
            Ok(())
        }
    })
    .await?;
    ready
        .wait(
            |_, t| t.seen == 0,
            env.deadline,
            "every token to be gone (finalizers run)",
        )
        .await?;
    Ok(peak)
}

/// VmRSS of `pid`, KiB.
fn rss_kib(pid: u32) -> Result<u64, Error> {
    let path = std::path::PathBuf::from(format!("/proc/{pid}/status"));
    let status = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
    crate::operator::status_kib(&status, "VmRSS:").ok_or_else(|| Error::Parse {
        what: "VmRSS",
        detail: path.display().to_string(),
    })
}

/// RssAnon and RssFile of `pid`, and the largest anonymous mappings, for the progress log:
/// what the resident size is made of.
fn rss_parts(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mut out: Vec<String> = ["RssAnon:", "RssFile:"]
        .iter()
        .map(|f| {
            let kib = crate::operator::status_kib(&status, f).unwrap_or(0);
            format!("{} {:.1} MiB", f.trim_end_matches(':'), kib as f64 / 1024.0)
        })
        .collect();
    // /proc/<pid>/smaps: a header line per mapping, then its fields.
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps: Vec<(u64, String)> = Vec::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            let path = line.split_whitespace().nth(5).unwrap_or("[anon]");
            let size = first
                .split_once('-')
                .and_then(|(a, b)| {
                    Some(u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?)
                })
                .unwrap_or(0);
            current = format!("{path} ({} KiB mapped)", size / 1024);
        } else if let Some(v) = line.strip_prefix("Rss:") {
            if !current.contains('/') {
                let kib = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                maps.push((kib, current.clone()));
            }
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    let anon_maps = maps.iter().filter(|m| m.0 > 0).count();
    out.push(format!("{anon_maps} anonymous mappings resident; largest:"));
    for (kib, what) in maps.iter().take(6) {
        out.push(format!("{what} {kib} KiB"));
    }
    out.join(", ")
}

fn tables(m: &Samples) -> BTreeMap<String, i64> {
    m.0.iter()
        .filter(|s| s.name == TRACKED)
        .filter_map(|s| Some((s.labels.get("table")?.clone(), s.value as i64)))
        .collect()
}

/// What a table may hold after the churn beyond its size before: the guard keeps each
/// remaining user's revocations (those the tokens' deletions asked for) for its window, the
/// event recorder what it published until it has been idle for 6 minutes (at most 1,024);
/// every other table, nothing.
fn allowance(table: &str, users: usize) -> i64 {
    match table {
        "guard" => users as i64,
        "events" => 1024,
        _ => 0,
    }
}

/// Tables larger than they were before (beyond their allowance).
fn grown(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    users: usize,
) -> Vec<String> {
    after
        .iter()
        .filter(|(t, n)| **n > before.get(*t).copied().unwrap_or(0) + allowance(t, users))
        .map(|(t, n)| format!("{t} {} → {n}", before.get(t).copied().unwrap_or(0)))
        .collect()
}

/// When the operator last reported its tables.
const REPORTED: &str = "acs_identity_operator_tracked_entries_reported_timestamp_seconds";

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Waits (polling `/metrics` every 500 ms, up to `deadline`) until the operator has reported
/// its tables after now and `done` holds for them; returns the last tables, whether `done`
/// held, and the allocator's bytes reported with them.
async fn tables_when(
    op: &mut Operator,
    deadline: Duration,
    done: impl Fn(&BTreeMap<String, i64>) -> bool,
) -> Result<(BTreeMap<String, i64>, bool, Heap), Error> {
    let since = unix_now();
    let until = Instant::now() + deadline;
    loop {
        let m = op.metrics().await?;
        let t = tables(&m);
        if m.sum(REPORTED, &[]) >= since && done(&t) {
            return Ok((t, true, m.heap()));
        }
        if Instant::now() >= until {
            return Ok((t, false, m.heap()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// [`tables_when`] every table is back to its size `before` (beyond its allowance), for at
/// most 60 s.
async fn tables_back(
    op: &mut Operator,
    before: &BTreeMap<String, i64>,
    users: usize,
) -> Result<(BTreeMap<String, i64>, bool, Heap), Error> {
    tables_when(op, Duration::from_secs(60), |t| {
        grown(before, t, users).is_empty()
    })
    .await
}

pub async fn run(
    env: &Env,
    flags: &[String],
    ns: &str,
    plan: &ChurnPlan,
) -> Result<ChurnRun, Error> {
    let started = Instant::now();
    workload::ensure_namespace(&env.client, ns).await?;
    workload::create_credentials(&env.client, ns, &env.emu.connection_string()).await?;
    let mut op = Operator::spawn(&env.spec, flags)?;
    op.wait_ready(Duration::from_secs(120)).await?;
    let users = Workload::new("churn-", plan.users, 0);
    users.create(&env.client, ns, 16).await?;
    let mut ready = ReadyWatch::start(&env.client, ns).await?;
    ready.all_ready(plan.users, 0, env.deadline).await?;
    // Before: every user seen by its change filter (the tables reported after the users).
    let (before, _, _) = tables_when(&mut op, Duration::from_secs(30), |t| {
        t.get("user_changes").copied() == Some(plan.users as i64)
    })
    .await?;
    let rss_cold_kib = rss_kib(op.pid())?;
    let api: Api<CommunicationToken> = Api::namespaced(env.client.clone(), ns);
    // A warm-up round first: "where it started" is an operator that has issued and revoked
    // tokens once (its code paths paged in, its connection pools and worker threads up), so
    // what the churn adds is what it keeps, not what any first token costs.
    let warm_up = WARM_UP.min(plan.tokens);
    if warm_up > 0 {
        churn_round(
            env,
            &api,
            &users,
            &mut ready,
            op.pid(),
            "churn-warm-",
            warm_up,
        )
        .await?;
    }
    let (_, _, heap_before) = tables_back(&mut op, &before, plan.users).await?;
    let rss_before_kib = rss_kib(op.pid())?;
    eprintln!("[acs-bench churn] start: {}", rss_parts(op.pid()));
    let batch = plan.batch.clamp(1, plan.tokens.max(1));
    let rounds = plan.tokens.div_ceil(batch);
    let mut rss_peak_kib = rss_before_kib;
    let mut rss_rounds_kib = Vec::with_capacity(rounds);
    let mut back = None;
    for round in 0..rounds {
        let n = batch.min(plan.tokens - round * batch);
        let peak = churn_round(
            env,
            &api,
            &users,
            &mut ready,
            op.pid(),
            &format!("churn-{round}-"),
            n,
        )
        .await?;
        rss_peak_kib = rss_peak_kib.max(peak);
        // Read once the tables are back (and the memory they gave up handed back), as at the
        // start.
        back = Some(tables_back(&mut op, &before, plan.users).await?);
        let gone = rss_kib(op.pid())?;
        rss_rounds_kib.push(gone);
        eprintln!(
            "[acs-bench churn] round {}/{rounds}: {n} tokens created, Ready and deleted after {:.0} s; RSS {} Ready, {} once the tables are back",
            round + 1,
            started.elapsed().as_secs_f64(),
            mib(peak),
            mib(gone)
        );
    }
    // The last round's wait for the tables is the churn's.
    let (mut after, settled, mut heap_after) = match back {
        Some(b) => b,
        None => tables_back(&mut op, &before, plan.users).await?,
    };
    if !plan.settle.is_zero() {
        eprintln!(
            "[acs-bench churn] tables back; waiting up to {} s for the event recorder to go idle",
            plan.settle.as_secs()
        );
        (after, _, heap_after) =
            tables_when(&mut op, plan.settle, |t| t.get("events") == Some(&0)).await?;
    }
    let rss_after_kib = rss_kib(op.pid())?;
    eprintln!("[acs-bench churn] end: {}", rss_parts(op.pid()));
    op.stop().await?;
    Ok(ChurnRun {
        users: plan.users,
        tokens: plan.tokens,
        rounds,
        rss_cold_kib,
        rss_before_kib,
        rss_peak_kib,
        rss_after_kib,
        rss_rounds_kib,
        heap_before,
        heap_after,
        tables_before: before,
        tables_after: after,
        settled,
        took: started.elapsed(),
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn table_list(t: &BTreeMap<String, i64>) -> String {
    t.iter()
        .filter(|(_, n)| **n != 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of phase 9.
pub fn rows(c: &ChurnRun, rows: &mut Vec<(&'static str, String, String)>) {
    let p = "9 churn";
    rows.push((
        p,
        "tokens created and deleted".into(),
        format!(
            "{} in {} rounds, {:.0} s",
            int(c.tokens as f64),
            c.rounds,
            c.took.as_secs_f64()
        ),
    ));
    rows.push((
        p,
        "RSS cold / after warm-up / peak / after".into(),
        format!(
            "{} / {} / {} / {}",
            mib(c.rss_cold_kib),
            mib(c.rss_before_kib),
            mib(c.rss_peak_kib),
            mib(c.rss_after_kib)
        ),
    ));
    rows.push((
        p,
        "RSS as each round's tokens are gone".into(),
        c.rss_rounds_kib
            .iter()
            .map(|k| mib(*k))
            .collect::<Vec<_>>()
            .join(" / "),
    ));
    rows.push((
        p,
        "allocator in use · free: start → after".into(),
        format!("{} → {}", c.heap_before.describe(), c.heap_after.describe()),
    ));
    rows.push((
        p,
        "tables before (non-zero)".into(),
        table_list(&c.tables_before),
    ));
    rows.push((
        p,
        "tables after (non-zero)".into(),
        table_list(&c.tables_after),
    ));
}

/// The goals of phase 9.
pub fn goals(c: &ChurnRun) -> Vec<Goal> {
    let grown = grown(&c.tables_before, &c.tables_after, c.users);
    let rss = c.rss_after_kib as f64 / c.rss_before_kib.max(1) as f64;
    vec![
        Goal {
            name: "tables after churn",
            target: "back to their size before (guard: + a revocation entry per user; events: ≤ 1,024 until 6 idle minutes)",
            measured: if grown.is_empty() && c.settled {
                "all back".into()
            } else {
                grown.join(", ")
            },
            met: grown.is_empty() && c.settled,
            exact: true,
        },
        Goal {
            name: "RSS kept by the churn, by round",
            target: "as the last round's tokens are gone, within 10% of as the first round's are (what is kept stays with the largest round, not the tokens churned)",
            measured: match (c.rss_rounds_kib.first(), c.rss_rounds_kib.last()) {
                (Some(f), Some(l)) => format!(
                    "{:+.1}% ({} → {})",
                    (*l as f64 / (*f).max(1) as f64 - 1.0) * 100.0,
                    mib(*f),
                    mib(*l)
                ),
                _ => "no round".into(),
            },
            met: rounds_flat(&c.rss_rounds_kib),
            exact: false,
        },
        Goal {
            name: "RSS after churn",
            target: "within 10% of where it started (after a 100-token warm-up)",
            measured: format!(
                "{:+.1}% ({} → {})",
                (rss - 1.0) * 100.0,
                mib(c.rss_before_kib),
                mib(c.rss_after_kib)
            ),
            met: rss <= 1.10,
            exact: false,
        },
    ]
}

/// Whether the RSS the last round left is within 10% of the first's.
fn rounds_flat(rounds: &[u64]) -> bool {
    match (rounds.first(), rounds.last()) {
        (Some(f), Some(l)) => *l as f64 <= *f as f64 * 1.10,
        _ => false,
    }
}
