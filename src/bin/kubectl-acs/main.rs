//! `kubectl acs`: the operator's objects for people. kubectl runs `kubectl-acs` from PATH as
//! `kubectl acs ...`. It acts with the caller's kubeconfig only, through the Kubernetes API: a
//! renewal or a revocation is an annotation the operator acts on, and `inspect` reads the
//! token Secret the caller may read. It never holds ACS credentials.

mod advice;
mod check;
mod inspect;
mod request;
mod status;

use std::time::Duration;

use clap::{Parser, Subcommand};

/// Azure Communication Services identities and tokens managed by acs-identity-operator.
#[derive(Parser)]
#[command(name = "kubectl-acs", bin_name = "kubectl acs", version)]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Users and tokens: Ready, reason, expiry, renewal, last event and what to do next.
    Status {
        /// One CommunicationUser or CommunicationToken (both kinds are searched).
        name: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Issue a new token now (sets the rotate annotation) and wait for it.
    Renew {
        /// The CommunicationToken.
        token: String,
        /// How long to wait for the new token.
        #[arg(long, default_value = "2m", value_parser = acs_identity_operator::config::parse_duration)]
        timeout: Duration,
    },
    /// Revoke every token of a user (sets the revoke annotation) and wait for its tokens to be
    /// re-issued.
    Revoke {
        /// The CommunicationUser.
        user: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        /// How long to wait for the revocation.
        #[arg(long, default_value = "2m", value_parser = acs_identity_operator::config::parse_duration)]
        timeout: Duration,
    },
    /// Decode the token in a CommunicationToken's Secret without printing it.
    Inspect {
        /// The CommunicationToken.
        token: String,
    },
    /// Check the installation: the operator, the CRDs' served versions, your RBAC.
    Check,
}

/// What a command failed on, for the user.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A client and the namespace commands act in.
pub struct Target {
    pub client: kube::Client,
    pub namespace: String,
}

async fn target(cli: &Cli) -> Result<Target, Error> {
    let options = kube::config::KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    // A named context must come from the kubeconfig; only without one does a pod's own
    // ServiceAccount count as the caller (kube's usual inference).
    let config = if cli.context.is_some() {
        kube::Config::from_kubeconfig(&options).await?
    } else {
        kube::Config::infer()
            .await
            .map_err(|e| format!("no kubeconfig: {e}"))?
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok(Target {
        client: kube::Client::try_from(config)?,
        namespace,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let result = async {
        let t = target(&cli).await?;
        match &cli.command {
            Command::Status {
                name,
                all_namespaces,
            } => status::run(&t, name.as_deref(), *all_namespaces).await,
            Command::Renew { token, timeout } => request::renew(&t, token, *timeout).await,
            Command::Revoke { user, yes, timeout } => {
                request::revoke(&t, user, *yes, *timeout).await
            }
            Command::Inspect { token } => inspect::run(&t, token).await,
            Command::Check => check::run(&t).await,
        }
    }
    .await;
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
