//! One running control plane: etcd, kube-apiserver and kube-controller-manager on 127.0.0.1
//! ephemeral ports with TLS, RBAC, production admission plugins and an audit log. Starting
//! (with readiness under one deadline, retried on a port clash), accessors, client construction,
//! CRD installation, restarts that keep ports, certificates and data, and an ordered stop.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use tokio::time::Instant;

use crate::bins::{Binaries, Binary};
use crate::certs::{Pki, PkiSpec};
use crate::components::{self, Layout, NodeLayout, APISERVER, CONTROLLER_MANAGER, ETCD};
use crate::error::Error;
use crate::kubeconfig::{self, Identity};
use crate::options::Options;
use crate::process::Process;
use crate::spawn::{free_ports, spawn_apiserver, spawn_controller_manager, spawn_etcd};
use crate::{crds, readiness, workdir};

/// envtest retries a start that lost a port race up to five times; so do we.
const MAX_START_ATTEMPTS: u32 = 5;

/// The component processes; `None` when stopped.
#[derive(Debug, Default)]
struct Procs {
    etcd: Option<Process>,
    apiserver: Option<Process>,
    controller_manager: Option<Process>,
}

impl Procs {
    /// Fails with the log tail of the first component that has exited.
    fn ensure_running(&mut self) -> Result<(), Error> {
        for p in [
            &mut self.etcd,
            &mut self.apiserver,
            &mut self.controller_manager,
        ]
        .into_iter()
        .flatten()
        {
            p.ensure_running()?;
        }
        Ok(())
    }

    /// Stops controller manager, apiserver, etcd in that order (dependents first), returning the
    /// first error after trying all.
    fn stop_all(&mut self, timeout: Duration) -> Result<(), Error> {
        let mut first = Ok(());
        for slot in [
            &mut self.controller_manager,
            &mut self.apiserver,
            &mut self.etcd,
        ] {
            if let Some(mut p) = slot.take() {
                if let Err(e) = p.stop(timeout) {
                    if first.is_ok() {
                        first = Err(e);
                    }
                }
            }
        }
        first
    }
}

/// A running local control plane. Dropping it stops it.
#[derive(Debug)]
pub struct ControlPlane {
    layout: Layout,
    bins: Binaries,
    options: Options,
    config: kube::Config,
    version: String,
    started_in: Duration,
    procs: Mutex<Procs>,
    stopped: AtomicBool,
}

impl ControlPlane {
    /// Resolves (or builds) the binaries and starts a control plane, retrying the whole start
    /// with fresh ports when a port was taken between picking and binding it.
    pub async fn start(options: Options) -> Result<ControlPlane, Error> {
        let bins = tokio::task::spawn_blocking(Binaries::resolve)
            .await
            .map_err(|e| Error::StartThread(std::io::Error::other(e)))??;
        Self::start_with(options, bins).await
    }

    /// Starts a control plane with already resolved binaries.
    pub async fn start_with(options: Options, bins: Binaries) -> Result<ControlPlane, Error> {
        let version = bins.apiserver_version()?;
        workdir::sweep_stale(&work_dir_parent(&options));
        let mut attempt = 1;
        loop {
            match Self::start_once(&options, &bins, &version).await {
                Ok(cp) => return Ok(cp),
                Err(e) if e.is_port_conflict() && attempt < MAX_START_ATTEMPTS => {
                    tracing::warn!(
                        attempt,
                        "a port was taken during start-up; retrying with new ports"
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_once(
        options: &Options,
        bins: &Binaries,
        version: &str,
    ) -> Result<ControlPlane, Error> {
        let started = std::time::Instant::now();
        let work_dir = workdir::create(&work_dir_parent(options))?;
        let mut procs = Procs::default();
        match boot(options, bins, &work_dir, &mut procs).await {
            Ok((layout, config)) => {
                let started_in = started.elapsed();
                tracing::info!(
                    api_url = %layout.api_url(),
                    work_dir = %work_dir.display(),
                    ?started_in,
                    "control plane ready"
                );
                Ok(ControlPlane {
                    layout,
                    bins: bins.clone(),
                    options: options.clone(),
                    config,
                    version: version.to_string(),
                    started_in,
                    procs: Mutex::new(procs),
                    stopped: AtomicBool::new(false),
                })
            }
            Err(err) => {
                let _ = procs.stop_all(options.stop_timeout);
                if err.is_port_conflict() {
                    let _ = std::fs::remove_dir_all(&work_dir);
                } else {
                    workdir::mark_kept(&work_dir);
                    tracing::error!(work_dir = %work_dir.display(), "control plane failed to start; its logs are kept");
                }
                Err(err)
            }
        }
    }

    fn ensure_not_stopped(&self) -> Result<(), Error> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Error::NotRunning {
                component: "the control plane",
            });
        }
        Ok(())
    }

    fn procs(&self) -> MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The admin kubeconfig (`system:masters` client certificate).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.layout.kubeconfig
    }

    /// The admin client configuration (clone it to adjust, e.g. timeouts).
    pub fn kube_config(&self) -> kube::Config {
        self.config.clone()
    }

    /// A new admin client. Call it inside the tokio runtime that will use the client: a client's
    /// connection tasks live on the runtime it was built in.
    pub fn client(&self) -> Result<Client, Error> {
        Client::try_from(self.config.clone()).map_err(Error::Client)
    }

    /// A new client using the admin certificate to impersonate `user` (and `groups`); RBAC then
    /// decides as for that user. A ServiceAccount (`system:serviceaccount:<ns>:<name>`) gets its
    /// groups added by the apiserver.
    pub fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client, Error> {
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.to_string());
        if !groups.is_empty() {
            config.auth_info.impersonate_groups =
                Some(groups.iter().map(|g| g.to_string()).collect());
        }
        if let Some(ns) = kubeconfig::service_account_namespace(user) {
            config.default_namespace = ns.to_string();
        }
        Client::try_from(config).map_err(Error::Client)
    }

    /// Writes a kubeconfig that impersonates `user` with the admin certificate, e.g. the chart's
    /// ServiceAccount `system:serviceaccount:acs-system:acs-identity-operator`, for running the
    /// operator (or kubectl, helm) with exactly the RBAC that user was granted.
    pub fn write_kubeconfig_impersonating(&self, path: &Path, user: &str) -> Result<(), Error> {
        kubeconfig::write(
            path,
            &self.layout.api_url(),
            &self.layout.pki,
            &Identity::Impersonating { user, groups: &[] },
        )
    }

    /// `https://<bind address>:<port>`.
    pub fn api_url(&self) -> String {
        self.layout.api_url()
    }

    /// etcd's client URL.
    pub fn etcd_url(&self) -> String {
        self.layout.etcd_url()
    }

    /// The apiserver's audit log (JSON lines, level Metadata).
    pub fn audit_log_path(&self) -> &Path {
        &self.layout.audit_log
    }

    /// The node this control plane serves (its name and the kubelet's kubeconfig), if any.
    pub fn node(&self) -> Option<&NodeLayout> {
        self.layout.node.as_ref()
    }

    /// The work directory (logs, certificates, etcd data, kubeconfig, audit log).
    pub fn work_dir(&self) -> &Path {
        &self.layout.work_dir
    }

    /// The certificate files.
    pub fn pki(&self) -> &Pki {
        &self.layout.pki
    }

    /// The log file of `etcd`, `kube-apiserver` or `kube-controller-manager`.
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.layout.log(component)
    }

    /// The last lines of a component's log, for test failure messages.
    pub fn log_tail(&self, component: &str) -> String {
        crate::process::log_tail(&self.layout.log(component))
    }

    /// The resolved binaries.
    pub fn binaries(&self) -> &Binaries {
        &self.bins
    }

    /// The path of one binary (e.g. kubectl or helm for chart tests).
    pub fn binary(&self, binary: Binary) -> &Path {
        self.bins.path(binary)
    }

    /// The directory holding the binaries.
    pub fn bin_dir(&self) -> &Path {
        self.bins.dir()
    }

    /// What `kube-apiserver --version` printed, e.g. `v1.37.2`.
    pub fn apiserver_version(&self) -> &str {
        &self.version
    }

    /// How long the successful start attempt took, from creating the work dir to the last
    /// readiness check (binary resolution excluded).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Installs every CRD in the YAML files of `dir` and waits until all are Established.
    pub async fn apply_crds_from_dir(&self, dir: &Path) -> Result<Vec<String>, Error> {
        let crds = crds::load_dir(dir)?;
        self.apply_crds(&crds).await
    }

    /// Installs `crds` and waits until all are Established (within the start timeout).
    pub async fn apply_crds(
        &self,
        crds: &[CustomResourceDefinition],
    ) -> Result<Vec<String>, Error> {
        crds::apply(&self.client()?, crds, self.options.start_timeout).await
    }

    /// Whether a component (`etcd`, `kube-apiserver`, `kube-controller-manager`) is running.
    pub fn is_running(&self, component: &str) -> bool {
        let mut procs = self.procs();
        let slot = match component {
            ETCD => &mut procs.etcd,
            APISERVER => &mut procs.apiserver,
            CONTROLLER_MANAGER => &mut procs.controller_manager,
            _ => return false,
        };
        slot.as_mut().is_some_and(|p| p.exit_status().is_none())
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL after the stop timeout); ports, certificates
    /// and etcd data stay, so [`start_apiserver`](Self::start_apiserver) brings it back as it was.
    pub fn stop_apiserver(&self) -> Result<(), Error> {
        let taken = self.procs().apiserver.take();
        match taken {
            Some(mut p) => p.stop(self.options.stop_timeout).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Starts kube-apiserver again with the same flags and waits for `/readyz`. No-op while it
    /// runs; an error after [`stop`](Self::stop).
    pub async fn start_apiserver(&self) -> Result<(), Error> {
        self.ensure_not_stopped()?;
        {
            let mut procs = self.procs();
            if procs
                .apiserver
                .as_mut()
                .is_some_and(|p| p.exit_status().is_none())
            {
                return Ok(());
            }
            procs.apiserver = Some(spawn_apiserver(&self.bins, &self.layout, &self.options)?);
        }
        self.wait_apiserver_ready().await
    }

    /// Stops and starts kube-apiserver, keeping its port, certificates and data.
    pub async fn restart_apiserver(&self) -> Result<(), Error> {
        self.stop_apiserver()?;
        self.start_apiserver().await
    }

    /// Stops etcd (the apiserver keeps running and fails its storage checks meanwhile).
    pub fn stop_etcd(&self) -> Result<(), Error> {
        let taken = self.procs().etcd.take();
        match taken {
            Some(mut p) => p.stop(self.options.stop_timeout).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Starts etcd again on the same data and port, then waits until it is healthy and, if the
    /// apiserver runs, until the apiserver is ready again. No-op while etcd runs.
    pub async fn start_etcd(&self) -> Result<(), Error> {
        self.ensure_not_stopped()?;
        {
            let mut procs = self.procs();
            if procs
                .etcd
                .as_mut()
                .is_some_and(|p| p.exit_status().is_none())
            {
                return Ok(());
            }
            procs.etcd = Some(spawn_etcd(&self.bins, &self.layout)?);
        }
        let timeout = self.options.start_timeout;
        let deadline = Instant::now() + timeout;
        let port = self.layout.etcd_port;
        readiness::wait_until(
            "etcd /health",
            deadline,
            timeout,
            &self.layout.log(ETCD),
            &mut || self.procs().ensure_running(),
            || readiness::etcd_healthy(port),
        )
        .await?;
        let apiserver_running = self.procs().apiserver.is_some();
        if apiserver_running {
            self.wait_apiserver_ready().await?;
        }
        Ok(())
    }

    /// Stops and starts etcd, keeping its data and port.
    pub async fn restart_etcd(&self) -> Result<(), Error> {
        self.stop_etcd()?;
        self.start_etcd().await
    }

    async fn wait_apiserver_ready(&self) -> Result<(), Error> {
        let client = self.client()?;
        let timeout = self.options.start_timeout;
        readiness::wait_until(
            "kube-apiserver /readyz",
            Instant::now() + timeout,
            timeout,
            &self.layout.log(APISERVER),
            &mut || self.procs().ensure_running(),
            || readiness::apiserver_ready(&client),
        )
        .await
    }

    /// Stops every component (controller manager, apiserver, etcd; SIGTERM, then SIGKILL after
    /// the stop timeout) and removes the work directory unless asked to keep it. Idempotent; a
    /// stopped control plane cannot be started again.
    pub fn stop(&self) -> Result<(), Error> {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let stopped = self.procs().stop_all(self.options.stop_timeout);
        if self.options.keep_work_dir {
            workdir::mark_kept(&self.layout.work_dir);
            tracing::info!(work_dir = %self.layout.work_dir.display(), "control plane stopped; work dir kept");
        } else if self.layout.work_dir.exists() {
            std::fs::remove_dir_all(&self.layout.work_dir).map_err(|source| Error::Dir {
                path: self.layout.work_dir.clone(),
                source,
            })?;
        }
        stopped
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %crate::report(&e), "stopping the control plane failed");
        }
    }
}

fn work_dir_parent(options: &Options) -> PathBuf {
    options
        .work_dir_parent
        .clone()
        .unwrap_or_else(std::env::temp_dir)
}

/// Generates the PKI, picks ports, writes files, starts etcd, kube-apiserver, installs CRDs and
/// starts kube-controller-manager, each awaited under one deadline. Started processes are left in
/// `procs` so the caller stops them on failure.
async fn boot(
    options: &Options,
    bins: &Binaries,
    work_dir: &Path,
    procs: &mut Procs,
) -> Result<(Layout, kube::Config), Error> {
    let timeout = options.start_timeout;
    let deadline = Instant::now() + timeout;

    let pki_dir = work_dir.join("pki");
    std::fs::create_dir(&pki_dir).map_err(|source| Error::Dir {
        path: pki_dir.clone(),
        source,
    })?;
    let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let extra_ips: Vec<IpAddr> = Some(options.bind_address)
        .filter(|ip| !ip.is_loopback())
        .into_iter()
        .collect();
    let spec = PkiSpec {
        extra_ips: &extra_ips,
        // The kubelet serves on loopback: apiserver -> kubelet (logs, exec) stays on this machine.
        node: options.node_name.as_deref().map(|n| (n, &loopback[..])),
    };
    let pki = Pki::generate_for(&pki_dir, &spec)?;
    let [etcd_port, etcd_peer_port, apiserver_port] = free_ports()?;
    let mut layout = Layout::new(work_dir, pki, etcd_port, etcd_peer_port, apiserver_port);
    layout.bind_address = options.bind_address;
    if let Some(name) = &options.node_name {
        let node = NodeLayout {
            name: name.clone(),
            kubelet_kubeconfig: work_dir.join("kubelet.kubeconfig"),
        };
        kubeconfig::write(
            &node.kubelet_kubeconfig,
            &layout.api_url(),
            &layout.pki,
            &Identity::Kubelet,
        )?;
        layout.node = Some(node);
    }
    std::fs::write(&layout.audit_policy, components::AUDIT_POLICY).map_err(|source| {
        Error::Write {
            path: layout.audit_policy.clone(),
            source,
        }
    })?;
    kubeconfig::write(
        &layout.kubeconfig,
        &layout.api_url(),
        &layout.pki,
        &Identity::Admin,
    )?;
    let config = kubeconfig::load(&layout.kubeconfig).await?;
    let client = Client::try_from(config.clone()).map_err(Error::Client)?;

    procs.etcd = Some(spawn_etcd(bins, &layout)?);
    readiness::wait_until(
        "etcd /health",
        deadline,
        timeout,
        &layout.log(ETCD),
        &mut || procs.ensure_running(),
        || readiness::etcd_healthy(etcd_port),
    )
    .await?;

    procs.apiserver = Some(spawn_apiserver(bins, &layout, options)?);
    readiness::wait_until(
        "kube-apiserver /readyz",
        deadline,
        timeout,
        &layout.log(APISERVER),
        &mut || procs.ensure_running(),
        || readiness::apiserver_ready(&client),
    )
    .await?;
    readiness::wait_until(
        "namespace default",
        deadline,
        timeout,
        &layout.log(APISERVER),
        &mut || procs.ensure_running(),
        || readiness::namespace_exists(&client, "default"),
    )
    .await?;
    readiness::wait_until(
        "anonymous ServiceAccount issuer discovery",
        deadline,
        timeout,
        &layout.log(APISERVER),
        &mut || procs.ensure_running(),
        || readiness::serve_issuer_discovery_anonymously(&client),
    )
    .await?;

    // CRDs go in before the controller manager so its garbage collector knows their kinds from
    // the start instead of after its ~30 s discovery resync.
    for dir in &options.crd_dirs {
        let crds = crds::load_dir(dir)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let names = crds::apply(&client, &crds, remaining).await?;
        tracing::info!(dir = %dir.display(), ?names, "CRDs established");
    }

    if options.controller_manager {
        procs.controller_manager = Some(spawn_controller_manager(bins, &layout)?);
        readiness::wait_until(
            "serviceaccount default/default (kube-controller-manager)",
            deadline,
            timeout,
            &layout.log(CONTROLLER_MANAGER),
            &mut || procs.ensure_running(),
            || readiness::service_account_exists(&client, "default", "default"),
        )
        .await?;
    }
    Ok((layout, config))
}
