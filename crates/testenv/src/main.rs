//! `acs-testenv`: resolve (or build) the control-plane binaries, or run a local control plane
//! until SIGINT/SIGTERM for the demo, a dev shell or the benchmark, handing it over through an
//! env file that exports `KUBECONFIG` and friends.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use acs_testenv::{report, Binaries, Binary, ControlPlane, Error, Options};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "acs-testenv",
    version,
    about = "A local Kubernetes control plane for tests, the demo and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resolve the binaries (building missing ones into the cache) and print their directory.
    Bins {
        /// Print `<name> <path> <source>` for every binary instead.
        #[arg(long)]
        list: bool,
    },
    /// Start a control plane, print the env file, and run until SIGINT or SIGTERM.
    Up {
        /// Where to write the env file (`export KUBECONFIG=...` lines); written atomically once
        /// the control plane is ready, removed at shutdown.
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// Directories of CRD YAML to install before the controller manager starts.
        #[arg(long = "crds")]
        crds: Vec<PathBuf>,
        /// Keep the work directory (logs, audit log, certificates) after shutdown.
        #[arg(long)]
        keep_work_dir: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // kube's client logs every failed request at ERROR; readiness polls fail by design
                // until the apiserver is up.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
                }),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bins { list } => bins(list),
        Command::Up {
            env_file,
            crds,
            keep_work_dir,
        } => up(env_file, crds, keep_work_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("acs-testenv: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

fn bins(list: bool) -> Result<(), Error> {
    let bins = Binaries::resolve()?;
    let mut out = std::io::stdout().lock();
    if list {
        for b in Binary::ALL {
            let _ = writeln!(
                out,
                "{} {} {:?}",
                b.name(),
                bins.path(b).display(),
                bins.source(b)
            );
        }
    } else {
        let _ = writeln!(out, "{}", bins.dir().display());
    }
    Ok(())
}

fn up(env_file: Option<PathBuf>, crds: Vec<PathBuf>, keep_work_dir: bool) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::StartThread)?;
    runtime.block_on(async move {
        let mut options = Options::from_env()?;
        options.crd_dirs = crds;
        options.keep_work_dir |= keep_work_dir;
        // Listen before starting, so a signal during start-up is not lost.
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(Error::StartThread)?;
        let start = ControlPlane::start(options);
        let cp = tokio::select! {
            cp = start => cp?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        };
        let env = env_text(&cp);
        if let Some(path) = &env_file {
            write_atomically(path, &env)?;
        }
        print!("{env}");
        let _ = std::io::stdout().flush();
        tracing::info!(started_in = ?cp.started_in(), "control plane up; stop with Ctrl-C or SIGTERM");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        if let Some(path) = &env_file {
            let _ = std::fs::remove_file(path);
        }
        cp.stop()
    })
}

/// Single-quotes a value for a POSIX shell.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn env_text(cp: &ControlPlane) -> String {
    let path = |p: &Path| p.display().to_string();
    let vars = [
        ("KUBECONFIG", path(cp.kubeconfig_path())),
        ("ACS_TESTENV_API_URL", cp.api_url()),
        ("ACS_TESTENV_AUDIT_LOG", path(cp.audit_log_path())),
        ("ACS_TESTENV_WORK_DIR", path(cp.work_dir())),
        ("ACS_TESTENV_BIN_DIR", path(cp.bin_dir())),
        ("ACS_TESTENV_CA_CERT", path(&cp.pki().ca_cert)),
        ("ACS_TESTENV_PID", std::process::id().to_string()),
        ("KUBECTL", path(cp.binary(Binary::Kubectl))),
        ("HELM", path(cp.binary(Binary::Helm))),
    ];
    let node = cp.node().map(|n| {
        [
            ("ACS_TESTENV_NODE_NAME", n.name.clone()),
            (
                "ACS_TESTENV_KUBELET_KUBECONFIG",
                path(&n.kubelet_kubeconfig),
            ),
        ]
    });
    vars.iter()
        .chain(node.iter().flatten())
        .map(|(k, v)| format!("export {k}={}\n", quote(v)))
        .collect()
}

fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let write_err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, text).map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)
}
