//! Phase 1, the floor: a tight client makes exactly the object writes the operator needs and
//! nothing else (per user: the finalizer patch and a status apply; per token: the finalizer
//! patch, an apply of a Secret of the same size, a status apply; no reads, no events), with a
//! sweep of worker counts to find the apiserver's best, then the full workload at that count.
//!
//! Then the same client makes the operator's whole request sequence per object (the writes
//! above plus the event per identity it publishes and the Secret read it makes before issuing; the
//! reconcile its own writes trigger confirms the Secret without reading it), which separates
//! what the operator's design costs from what its runtime adds. The report sets this model
//! beside the operator's own request counters of the same run.
//!
//! Last, the same sequence again on objects of their own while three watches take every
//! change of the namespace, as the operator's caches do (CommunicationUsers,
//! CommunicationTokens, the Secrets' metadata): what the apiserver spends sending each write
//! to a controller's watches, which no client of the floor pays.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acs_client::{
    AccessKey, AcsClient, ClientOptions, ConnectionString, CreateIdentity, TokenString,
};
use acs_identity_operator::api::condition::{reasons, types};
use acs_identity_operator::api::{
    self, set_condition, CommunicationToken, CommunicationTokenStatus, CommunicationUser,
    CommunicationUserStatus, RevocationStatus,
};
use acs_identity_operator::secret::{self, IssuedToken, RecordedToken};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use crate::cpu::CpuSnapshot;
use crate::emulator::Emulator;
use crate::error::Error;
use crate::workload::{self, for_each_parallel, Workload};

/// Writes the floor makes per user and per token.
pub const WRITES_PER_USER: usize = 2;
pub const WRITES_PER_TOKEN: usize = 3;

/// A real identity and token from the emulator, so Secrets and statuses have the real sizes.
#[derive(Clone)]
pub struct SampleToken {
    pub identity: String,
    pub token: TokenString,
    pub expires_on: Timestamp,
    pub endpoint: String,
    pub key: AccessKey,
}

impl SampleToken {
    /// Creates one identity and issues one 24 h voip token.
    pub async fn issue(emu: &Emulator) -> Result<SampleToken, Error> {
        let conn = ConnectionString::parse(&emu.connection_string()).map_err(|e| Error::Parse {
            what: "the emulator connection string",
            detail: e.to_string(),
        })?;
        let options = ClientOptions {
            ca_pem: Some(emu.ca_pem().as_bytes().to_vec()),
            ..ClientOptions::default()
        };
        let acs = AcsClient::new(conn.clone(), options).map_err(Error::SampleToken)?;
        let created = acs
            .create_identity(CreateIdentity::new())
            .await
            .map_err(Error::SampleToken)?;
        let id = created.identity.id;
        let issued = acs
            .issue_token(&id, &[api::token::Scope::Voip], Some(1440))
            .await
            .map_err(Error::SampleToken)?;
        let now = Timestamp::now();
        Ok(SampleToken {
            identity: id,
            expires_on: issued
                .expires_at()
                .unwrap_or(now + jiff::SignedDuration::from_hours(24)),
            token: issued.token,
            endpoint: conn.endpoint,
            key: conn.access_key,
        })
    }
}

/// The floor's figures.
#[derive(Debug, Clone)]
pub struct FloorResult {
    /// Worker count and writes per second of each sweep step.
    pub sweep: Vec<(usize, f64)>,
    pub best_workers: usize,
    pub writes: usize,
    pub t_floor: Duration,
    /// Requests of the operator's whole sequence (writes, events, reads) by verb, as the
    /// client sent them: the floor's model of the operator, checked against its counters.
    pub mix: BTreeMap<String, f64>,
    /// The operator's whole request sequence at the same worker count.
    pub t_mix: Duration,
    /// The same, with three watches (users, tokens, Secrets' metadata) taking its changes.
    pub t_mix_watched: Duration,
    /// The events those watches took (their initial lists included).
    pub watch_events: u64,
    /// CPU seconds by process during the full floor run.
    pub cpu: CpuSnapshot,
}

/// What the floor's client sends per object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The object writes only.
    Writes,
    /// The writes plus the operator's events and Secret reads.
    OperatorMix,
}

impl FloorResult {
    pub fn writes_per_second(&self) -> f64 {
        self.writes as f64 / self.t_floor.as_secs_f64().max(1e-9)
    }

    pub fn mix_requests(&self) -> f64 {
        self.mix.values().sum()
    }
}

/// Requests by verb sent in the operator's sequence.
#[derive(Default)]
struct VerbCounts {
    get: AtomicU64,
    create: AtomicU64,
    patch: AtomicU64,
}

impl VerbCounts {
    fn add(&self, verb: &AtomicU64) {
        verb.fetch_add(1, Ordering::Relaxed);
    }

    fn by_verb(&self) -> BTreeMap<String, f64> {
        [
            ("create", &self.create),
            ("get", &self.get),
            ("patch", &self.patch),
        ]
        .into_iter()
        .map(|(v, n)| (v.to_string(), n.load(Ordering::Relaxed) as f64))
        .collect()
    }
}

/// One object's writes.
enum Job {
    User(Arc<CommunicationUser>),
    Token(Arc<CommunicationToken>),
}

/// Everything a job needs, shared by the workers.
struct Writer {
    client: Client,
    ns: String,
    sample: SampleToken,
    /// The operator's event publisher, so events cost what they cost the operator.
    recorder: Recorder,
    /// What the operator's sequence sent (mix mode only).
    mix: VerbCounts,
}

fn status_body<K: Resource<DynamicType = ()>, S: Serialize>(status: &S) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    })
}

/// The same JSON patch kube's `finalizer()` sends for an object without finalizers.
fn finalizer_patch(name: &str) -> Result<json_patch::Patch, Error> {
    serde_json::from_value(serde_json::json!([
        { "op": "test", "path": "/metadata/finalizers", "value": null },
        { "op": "add", "path": "/metadata/finalizers", "value": [name] },
    ]))
    .map_err(|e| Error::Parse {
        what: "the finalizer patch",
        detail: e.to_string(),
    })
}

impl Writer {
    fn user_status(&self, u: &CommunicationUser) -> CommunicationUserStatus {
        let now = Timestamp::now();
        let mut status = CommunicationUserStatus {
            observed_generation: u.metadata.generation,
            identity_id: Some(self.sample.identity.clone()),
            external_id: None,
            endpoint: Some(self.sample.endpoint.clone()),
            resource_id: acs_identity_operator::controller::user::resource_of(
                &self.sample.identity,
            ),
            revocation: Some(RevocationStatus::default()),
            conditions: Vec::new(),
        };
        set_condition(
            &mut status.conditions,
            types::READY,
            true,
            reasons::IDENTITY_CREATED,
            format!("identity {} is ready", self.sample.identity),
            u.metadata.generation,
            now,
        );
        status
    }

    fn token_status(&self, t: &CommunicationToken) -> CommunicationTokenStatus {
        let now = Timestamp::now();
        let gen = t.metadata.generation;
        let mut status = CommunicationTokenStatus {
            observed_generation: gen,
            secret_name: Some(t.secret_name()),
            identity_id: Some(self.sample.identity.clone()),
            expires_on: Some(Time(self.sample.expires_on)),
            renewal_time: Some(Time(now)),
            last_rotation_time: Some(Time(now)),
            revision: 1,
            revocation_epoch: Some(0),
            revocation_requested: None,
            revocation_requested_at: None,
            issued_scopes: t.spec.scopes.clone(),
            issued_expires_in_minutes: Some(t.spec.expires_in_minutes),
            key_fingerprint: Some(secret::key_fingerprint(&self.sample.key)),
            secret_resource_version: None,
            handled_rotate_annotation: None,
            failed_attempts: 0,
            // The same field the operator writes (its value does not change the cost).
            pod_validity_at_worst_seconds: Some(
                self.sample.expires_on.duration_since(now).as_secs() / 3,
            ),
            restarted_workloads: Vec::new(),
            conditions: Vec::new(),
        };
        let note = format!(
            "issued a token for {}, valid until {}",
            self.sample.identity, self.sample.expires_on
        );
        set_condition(
            &mut status.conditions,
            types::READY,
            true,
            reasons::TOKEN_ISSUED,
            note,
            gen,
            now,
        );
        set_condition(
            &mut status.conditions,
            types::ISSUING,
            false,
            reasons::TOKEN_ISSUED,
            format!("next renewal at {now}"),
            gen,
            now,
        );
        status
    }

    async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        let ev = Event {
            type_: EventType::Normal,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        // As in the operator, a failed event is not an error.
        let _ = self.recorder.publish(&ev, &obj.object_ref(&())).await;
    }

    async fn write(&self, job: Job, mode: Mode) -> Result<(), Error> {
        let mix = mode == Mode::OperatorMix;
        match job {
            Job::User(u) => {
                let api: Api<CommunicationUser> = Api::namespaced(self.client.clone(), &self.ns);
                let name = u.name_any();
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::<()>::Json(finalizer_patch(api::USER_FINALIZER)?),
                )
                .await
                .map_err(Error::kube("add a finalizer"))?;
                let body = status_body::<CommunicationUser, _>(&self.user_status(&u));
                api.patch_status(
                    &name,
                    &PatchParams::apply(api::USER_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
                .map_err(Error::kube("apply a user status"))?;
                if mix {
                    self.mix.add(&self.mix.patch);
                    self.mix.add(&self.mix.patch);
                    let note = format!("created identity {}", self.sample.identity);
                    self.event(u.as_ref(), reasons::IDENTITY_CREATED, note)
                        .await;
                    self.mix.add(&self.mix.create);
                }
            }
            Job::Token(t) => {
                let api: Api<CommunicationToken> = Api::namespaced(self.client.clone(), &self.ns);
                let name = t.name_any();
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::<()>::Json(finalizer_patch(api::TOKEN_FINALIZER)?),
                )
                .await
                .map_err(Error::kube("add a finalizer"))?;
                // No read of the Secret first: the operator's metadata watch, once listed, shows
                // it absent.
                let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
                let now = Timestamp::now();
                let issued = IssuedToken {
                    token: self.sample.token.clone(),
                    record: RecordedToken {
                        expires_on: self.sample.expires_on,
                        issued_at: now,
                        user_id: self.sample.identity.clone(),
                        scopes: t.spec.scopes.clone(),
                        expires_in_minutes: t.spec.expires_in_minutes,
                        revocation_epoch: 0,
                        key_fingerprint: secret::key_fingerprint(&self.sample.key),
                        revision: 1,
                    },
                };
                let desired = secret::desired_secret(
                    &t,
                    &issued,
                    &secret::Seal::access_key(&self.sample.key),
                )
                .ok_or(Error::Parse {
                    what: "the token's Secret",
                    detail: "the CommunicationToken has no name or uid".into(),
                })?;
                let written = if mix {
                    // The operator creates a token's first Secret (and learns of one in the
                    // way from the 409); the floor applies it, the cheapest single write.
                    secrets
                        .create(&PostParams::default(), &desired)
                        .await
                        .map_err(Error::kube("create a Secret"))?
                } else {
                    secrets
                        .patch(
                            &t.secret_name(),
                            &PatchParams::apply(api::TOKEN_MANAGER),
                            &Patch::Apply(&desired),
                        )
                        .await
                        .map_err(Error::kube("apply a Secret"))?
                };
                let mut status = self.token_status(&t);
                status.secret_resource_version = written.metadata.resource_version;
                let body = status_body::<CommunicationToken, _>(&status);
                api.patch_status(
                    &name,
                    &PatchParams::apply(api::TOKEN_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
                .map_err(Error::kube("apply a token status"))?;
                if mix {
                    self.mix.add(&self.mix.patch);
                    self.mix.add(&self.mix.create);
                    self.mix.add(&self.mix.patch);
                }
            }
        }
        Ok(())
    }
}

/// How the floor runs.
#[derive(Debug, Clone)]
pub struct FloorPlan {
    pub users: usize,
    pub tokens: usize,
    /// Worker counts of the sweep.
    pub sweep: Vec<usize>,
    /// Objects per sweep step.
    pub sweep_users: usize,
    pub sweep_tokens: usize,
    /// The control plane's work directory (CPU accounting).
    pub cp_work_dir: PathBuf,
}

/// Creates the objects (not timed), runs the sweep, then the full workload at the best count.
pub async fn run(
    client: &Client,
    ns: &str,
    plan: &FloorPlan,
    sample: SampleToken,
) -> Result<FloorResult, Error> {
    workload::ensure_namespace(client, ns).await?;
    let steps: Vec<(usize, Workload)> = plan
        .sweep
        .iter()
        .map(|w| {
            (
                *w,
                Workload::new(&format!("s{w}-"), plan.sweep_users, plan.sweep_tokens),
            )
        })
        .collect();
    let full = Workload::new("f-", plan.users, plan.tokens);
    let full_mix = Workload::new("m-", plan.users, plan.tokens);
    let full_watched = Workload::new("w-", plan.users, plan.tokens);
    for (_, w) in &steps {
        w.create(client, ns, 32).await?;
    }
    full.create(client, ns, 32).await?;
    full_mix.create(client, ns, 32).await?;
    full_watched.create(client, ns, 32).await?;

    // The objects with their UIDs (Secrets carry an ownerReference to the token).
    let users: HashMap<String, Arc<CommunicationUser>> =
        Api::<CommunicationUser>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("list the floor's users"))?
            .items
            .into_iter()
            .map(|u| (u.name_any(), Arc::new(u)))
            .collect();
    let tokens: HashMap<String, Arc<CommunicationToken>> =
        Api::<CommunicationToken>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("list the floor's tokens"))?
            .items
            .into_iter()
            .map(|t| (t.name_any(), Arc::new(t)))
            .collect();
    let jobs_of = |w: &Workload| -> Vec<Job> {
        let mut jobs = Vec::with_capacity(w.users + w.tokens);
        jobs.extend(
            (0..w.users).filter_map(|i| users.get(&w.user_name(i)).cloned().map(Job::User)),
        );
        jobs.extend(
            (0..w.tokens).filter_map(|i| tokens.get(&w.token_name(i)).cloned().map(Job::Token)),
        );
        jobs
    };
    let reporter = Reporter {
        controller: "acs-bench".to_string(),
        instance: None,
    };
    let writer_of = |sample: SampleToken| {
        Arc::new(Writer {
            client: client.clone(),
            ns: ns.to_string(),
            sample,
            recorder: Recorder::new(client.clone(), reporter.clone()),
            mix: VerbCounts::default(),
        })
    };
    let writer = writer_of(sample.clone());
    // Its own counts: the model compared with the operator's counters is one sequence.
    let watched_writer = writer_of(sample);
    let run_with = |writer: Arc<Writer>, jobs: Vec<Job>, workers: usize, mode: Mode| async move {
        let n = jobs.len();
        let start = Instant::now();
        for_each_parallel(jobs, workers, move |job| {
            let writer = writer.clone();
            async move { writer.write(job, mode).await }
        })
        .await?;
        Ok::<_, Error>((n, start.elapsed()))
    };
    let run_jobs =
        |jobs: Vec<Job>, workers: usize, mode: Mode| run_with(writer.clone(), jobs, workers, mode);

    let mut sweep = Vec::new();
    for (workers, w) in &steps {
        let (_, took) = run_jobs(jobs_of(w), *workers, Mode::Writes).await?;
        let writes = w.users * WRITES_PER_USER + w.tokens * WRITES_PER_TOKEN;
        sweep.push((*workers, writes as f64 / took.as_secs_f64().max(1e-9)));
    }
    let best_workers = sweep
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(16, |(w, _)| *w);
    let me = [("acs-bench", std::process::id())];
    let cpu_before = CpuSnapshot::take(&plan.cp_work_dir, &me);
    let (_, t_floor) = run_jobs(jobs_of(&full), best_workers, Mode::Writes).await?;
    let cpu = CpuSnapshot::take(&plan.cp_work_dir, &me).since(&cpu_before);
    let (_, t_mix) = run_jobs(jobs_of(&full_mix), best_workers, Mode::OperatorMix).await?;
    let watches = Watches::start(client, ns).await?;
    let (_, t_mix_watched) = run_with(
        watched_writer,
        jobs_of(&full_watched),
        best_workers,
        Mode::OperatorMix,
    )
    .await?;
    let watch_events = watches.stop();
    Ok(FloorResult {
        sweep,
        best_workers,
        writes: full.users * WRITES_PER_USER + full.tokens * WRITES_PER_TOKEN,
        t_floor,
        mix: writer.mix.by_verb(),
        t_mix,
        t_mix_watched,
        watch_events,
        cpu,
    })
}

/// Three watches of the namespace taking every change, as the operator's caches do.
struct Watches {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    events: Arc<AtomicU64>,
}

impl Watches {
    /// Starts them and waits until each has listed what exists (not part of the timing).
    async fn start(client: &Client, ns: &str) -> Result<Self, Error> {
        use futures::StreamExt;
        use kube::core::PartialObjectMeta;
        use kube::runtime::{watcher, WatchStreamExt};
        let events = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let mut listed = Vec::new();
        let mut spawn = |stream: futures::stream::BoxStream<'static, bool>| {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let events = events.clone();
            let mut tx = Some(tx);
            tasks.push(tokio::spawn(stream.for_each(move |init_done| {
                events.fetch_add(1, Ordering::Relaxed);
                if init_done {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                futures::future::ready(())
            })));
            listed.push(rx);
        };
        // Each watch's stream: true at the end of its initial list.
        fn inits<K>(api: Api<K>) -> futures::stream::BoxStream<'static, bool>
        where
            K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
            K: Send + 'static,
        {
            watcher(api, watcher::Config::default())
                .default_backoff()
                .map(|e| matches!(e, Ok(watcher::Event::InitDone)))
                .boxed()
        }
        spawn(inits(Api::<CommunicationUser>::namespaced(
            client.clone(),
            ns,
        )));
        spawn(inits(Api::<CommunicationToken>::namespaced(
            client.clone(),
            ns,
        )));
        spawn(inits(Api::<PartialObjectMeta<Secret>>::namespaced(
            client.clone(),
            ns,
        )));
        for rx in listed {
            rx.await.map_err(|_| Error::Parse {
                what: "a floor watch",
                detail: "ended before it listed the namespace".into(),
            })?;
        }
        Ok(Self { tasks, events })
    }

    /// Stops them; returns the events they took.
    fn stop(self) -> u64 {
        for t in &self.tasks {
            t.abort();
        }
        self.events.load(Ordering::Relaxed)
    }
}
