//! The `run` subcommand's flags and environment, validated into one [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::acs::ApiMode;

/// The api-version mode of ACS calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiModeArg {
    /// GA api-version 2023-10-01. Creation is not idempotent: a crash between the create call
    /// and the status write can leak one identity (see the README).
    Ga,
    /// Preview api-version 2025-04-01-preview: identities are created with an `externalId`
    /// derived from the resource UID (get-or-create), so a crash leaks nothing.
    Preview,
}

impl From<ApiModeArg> for ApiMode {
    fn from(m: ApiModeArg) -> Self {
        match m {
            ApiModeArg::Ga => ApiMode::Ga,
            ApiModeArg::Preview => ApiMode::Preview,
        }
    }
}

/// Flags of `acs-identity-operator run`. Every flag also reads an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Path to a kubeconfig; in-cluster configuration (or ~/.kube/config) when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, env = "KUBE_CONTEXT")]
    pub context: Option<String>,
    /// Namespaces to watch, comma-separated; all namespaces when empty.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub watch_namespaces: Vec<String>,
    /// Reconciles run at once, per controller; objects just applied take the next free one
    /// ahead of the rest.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// ACS request budget per ACS resource (requests per second to one endpoint, shared by
    /// every reconciler and by both keys of the resource, as the service's own limits are).
    /// It keeps the operator below the service limits (1,000 token issues per 30 s per
    /// resource), and one busy resource never delays another's requests.
    #[arg(long, env = "ACS_REQUESTS_PER_SECOND", default_value_t = 25.0)]
    pub acs_requests_per_second: f64,
    /// Burst allowed above the ACS request budget (per ACS resource).
    #[arg(long, env = "ACS_REQUEST_BURST", default_value_t = 50)]
    pub acs_request_burst: u32,
    /// ACS api-version mode.
    #[arg(long, env = "ACS_API_MODE", value_enum, default_value_t = ApiModeArg::Ga)]
    pub acs_api_mode: ApiModeArg,
    /// Allow `http://` ACS endpoints. Development only (an emulator started with `--http`):
    /// the signed requests and the issued tokens travel in clear. Without it, a resource whose
    /// credentials name an `http://` endpoint gets Ready=False and no request is sent.
    #[arg(long, env = "ALLOW_INSECURE_HTTP", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_insecure_http: bool,
    /// Extra CA certificate (PEM) to trust for ACS endpoints, e.g. the emulator's.
    #[arg(long, env = "ACS_CA_CERT")]
    pub acs_ca_cert: Option<PathBuf>,
    /// Timeout of one ACS request.
    #[arg(long, env = "ACS_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub acs_request_timeout: Duration,
    /// Operator-wide default credentials: a Secret as `namespace/name`, used in namespaces
    /// that opt in (see --default-credentials-namespace-selector).
    #[arg(long, env = "DEFAULT_CREDENTIALS_SECRET")]
    pub default_credentials_secret: Option<String>,
    /// Key of the connection string in the default credentials Secret (Azure Service Operator
    /// v2 writes `primaryConnectionString`).
    #[arg(
        long,
        env = "DEFAULT_CREDENTIALS_KEY",
        default_value = "connectionString"
    )]
    pub default_credentials_key: String,
    /// Label selector of the namespaces that opt into the default credentials.
    #[arg(
        long,
        env = "DEFAULT_CREDENTIALS_NAMESPACE_SELECTOR",
        default_value = "communication.acs.dev/default-credentials=true"
    )]
    pub default_credentials_namespace_selector: String,
    /// Operator-wide default credentials with Microsoft Entra ID: the ACS endpoint
    /// (`https://<resource>.communication.azure.com`) that namespaces opting in reach with the
    /// operator's own workload identity (--entra-client-id, --entra-tenant-id,
    /// --entra-federated-token-file). Exclusive with --default-credentials-secret.
    #[arg(long, env = "DEFAULT_CREDENTIALS_ENDPOINT")]
    pub default_credentials_endpoint: Option<String>,
    /// Entra authority host (`AZURE_AUTHORITY_HOST`, set by the AKS workload identity webhook);
    /// another cloud's, or the emulator's, instead of the public cloud's.
    #[arg(long, env = "AZURE_AUTHORITY_HOST", default_value = crate::entra::DEFAULT_AUTHORITY_HOST)]
    pub entra_authority_host: String,
    /// Entra tenant of the operator's own workload identity, and of ServiceAccounts without
    /// an `azure.workload.identity/tenant-id` annotation.
    #[arg(long, env = "AZURE_TENANT_ID")]
    pub entra_tenant_id: Option<String>,
    /// Client id of the operator's own workload identity.
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub entra_client_id: Option<String>,
    /// The operator's projected ServiceAccount token (audience `api://AzureADTokenExchange`),
    /// re-read at every exchange because the kubelet rotates it.
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE")]
    pub entra_federated_token_file: Option<PathBuf>,
    /// The Secret (`namespace/name`) holding the key that seals token Secrets written with
    /// Entra credentials (there is no access key to seal them with); created on first use.
    /// Default: `POD_NAMESPACE` (else `default`) `/acs-identity-operator-sealing-key`.
    #[arg(long, env = "SEALING_KEY_SECRET")]
    pub sealing_key_secret: Option<String>,
    /// Restart the workloads that CommunicationTokens name in spec.rolloutRestartTargets (and
    /// that opt in) when their token changes. Needs get and patch on Deployments,
    /// StatefulSets and DaemonSets (chart value rolloutRestart.enabled).
    #[arg(long, env = "ROLLOUT_RESTART", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub rollout_restart: bool,
    /// Write the status of ClusterCommunicationServices (prove their credentials, count
    /// their users). Default: only when watching every namespace; several namespaced installs
    /// would each count their own users into one status.
    #[arg(long, env = "MANAGE_CLUSTER_SERVICES", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub manage_cluster_services: Option<bool>,
    /// Changes of sibling tokens within this window restart a workload once.
    #[arg(long, env = "RESTART_COALESCE_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub restart_coalesce_window: Duration,
    /// Time reserved for a new token to reach a pod's mounted Secret (the kubelet's sync):
    /// renewals leave at least this plus the SDKs' refresh window (10 minutes) before expiry.
    /// At most a tenth of a token's granted lifetime is used.
    #[arg(long, env = "PROPAGATION_ALLOWANCE", default_value = "2m", value_parser = parse_duration)]
    pub propagation_allowance: Duration,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader through a Lease (required when more than one replica may run).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader-election Lease (default: POD_NAMESPACE, else `default`).
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "LEADER_ELECTION_LEASE",
        default_value = "acs-identity-operator"
    )]
    pub leader_election_lease: String,
    /// Lease duration: a successor waits this long after the leader stops renewing.
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_election_lease_duration: Duration,
    /// The leader gives up when it could not renew for this long.
    #[arg(long, env = "LEADER_ELECTION_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub leader_election_renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    #[arg(long, env = "LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub leader_election_retry_period: Duration,
    /// Identity of this replica in the Lease (default: POD_NAME, else the host name plus a
    /// random suffix).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Longest time between two reconciles of a healthy object (a safety resync).
    #[arg(long, env = "RESYNC_PERIOD", default_value = "1h", value_parser = parse_duration)]
    pub resync_period: Duration,
    /// Longest back-off of a failing object between two attempts (ACS calls).
    #[arg(long, env = "FAILURE_BACKOFF_MAX", default_value = "5m", value_parser = parse_duration)]
    pub failure_backoff_max: Duration,
    /// Unscheduled issuances (after drift, revocation, spec change, rotate annotation, key
    /// change) allowed per token within the window; one more is deferred. Repairs of a
    /// Secret with its same token are limited the same way.
    #[arg(long, env = "UNSCHEDULED_ISSUANCE_LIMIT", default_value_t = 3)]
    pub unscheduled_issuance_limit: u32,
    /// The guard's window: this long, or the token's lifetime if that is shorter.
    #[arg(long, env = "UNSCHEDULED_ISSUANCE_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub unscheduled_issuance_window: Duration,
    /// The hosts ACS requests may go to, comma-separated: `*.domain` (any subdomain) or an
    /// exact host (`127.0.0.1` for a local emulator). Credentials naming any other endpoint are
    /// refused (`EndpointNotAllowed`) before a request is sent.
    #[arg(long, env = "ALLOWED_ENDPOINT_HOSTS", default_value = crate::endpoint_allow::DEFAULT)]
    pub allowed_endpoint_hosts: String,
    /// Revocation requests of a user's tokens (scope or lifetime changes, deletions with
    /// revokeOnDelete) become one revocation once none came for this long (at most ten times
    /// this after the first), so a batch of edits revokes once and every sibling re-issues once.
    /// Requests are timed in whole seconds (as status records them).
    #[arg(long, env = "REVOCATION_COALESCE_WINDOW", default_value = "3s", value_parser = parse_duration)]
    pub revocation_coalesce_window: Duration,
    /// Revocations allowed per user within `--revocation-limit-window`; the requests that come
    /// after wait and are coalesced into the next one the window allows.
    #[arg(long, env = "REVOCATION_LIMIT", default_value_t = 5)]
    pub revocation_limit: u32,
    /// The window of `--revocation-limit`.
    #[arg(long, env = "REVOCATION_LIMIT_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub revocation_limit_window: Duration,
    /// Allow `spec.identityId` (adopting an existing identity) in namespaces that use the
    /// operator-wide default credentials. Off by default: whoever can create a
    /// CommunicationUser there could otherwise take over any identity of that resource.
    #[arg(long, env = "ALLOW_DEFAULT_CREDENTIALS_ADOPTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_default_credentials_adoption: bool,
}

/// Parses `90s`, `5m`, `1h`, `250ms` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (s, 1_000.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use a number with ms, s, m or h"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!(
            "invalid duration {s:?}: must be a non-negative number"
        ));
    }
    Ok(Duration::from_millis((v * mult_ms) as u64))
}

/// Where the operator-wide default credentials live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultCredentials {
    pub namespace: String,
    pub name: String,
    pub key: String,
    /// Label selector of the namespaces allowed to use them.
    pub namespace_selector: String,
}

/// The operator-wide default credentials with Entra: an endpoint reached with the operator's
/// own workload identity, in namespaces matching the selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultWorkloadIdentity {
    pub endpoint: String,
    pub namespace_selector: String,
}

/// The operator's own workload identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnIdentity {
    pub client_id: String,
    pub tenant_id: String,
    pub token_file: PathBuf,
}

/// Microsoft Entra ID settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraConfig {
    pub authority_host: String,
    /// The tenant of ServiceAccounts that do not name one.
    pub default_tenant_id: Option<String>,
    pub own: Option<OwnIdentity>,
    /// Where the sealing key of Entra-credentialed token Secrets lives.
    pub sealing_key_secret: (String, String),
}

/// Validated operator configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Empty means all namespaces.
    pub watch_namespaces: Vec<String>,
    pub concurrency: u16,
    /// `None`: no client-side limit.
    pub acs_requests_per_second: Option<f64>,
    pub acs_request_burst: u32,
    pub api_mode: ApiMode,
    pub acs_ca_pem: Option<Vec<u8>>,
    /// Send ACS requests to `http://` endpoints (development only).
    pub allow_insecure_http: bool,
    pub acs_request_timeout: Duration,
    /// The hosts ACS requests may go to.
    pub allowed_endpoint_hosts: crate::endpoint_allow::AllowedHosts,
    pub default_credentials: Option<DefaultCredentials>,
    pub default_workload_identity: Option<DefaultWorkloadIdentity>,
    pub entra: EntraConfig,
    pub rollout_restart: bool,
    /// This install writes the status of ClusterCommunicationServices.
    pub manage_cluster_services: bool,
    pub restart_coalesce_window: Duration,
    pub propagation_allowance: Duration,
    pub metrics_addr: SocketAddr,
    pub leader_election: Option<LeaderElectionConfig>,
    pub identity: String,
    pub resync_period: Duration,
    pub guards: Guards,
    /// The operator's namespace (`POD_NAMESPACE`, else `default`): a ClusterCommunicationService
    /// reads its Secret there unless it names another.
    pub operator_namespace: String,
}

/// Bounds on what a failing or drifting object may cost.
#[derive(Debug, Clone)]
pub struct Guards {
    pub failure_backoff_max: Duration,
    pub unscheduled_limit: u32,
    pub unscheduled_window: Duration,
    /// Quiet time after the last revocation request of a user before it revokes.
    pub revocation_coalesce: Duration,
    /// Revocations per user within `revocation_window`.
    pub revocation_limit: u32,
    pub revocation_window: Duration,
    pub allow_default_credentials_adoption: bool,
}

impl Default for Guards {
    fn default() -> Self {
        Self {
            failure_backoff_max: Duration::from_secs(300),
            unscheduled_limit: 3,
            unscheduled_window: Duration::from_secs(600),
            revocation_coalesce: Duration::from_secs(3),
            revocation_limit: 5,
            revocation_window: Duration::from_secs(600),
            allow_default_credentials_adoption: false,
        }
    }
}

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// A flag combination that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--default-credentials-secret must be namespace/name")]
    DefaultCredentialsFormat,
    #[error("--sealing-key-secret must be namespace/name")]
    SealingKeySecretFormat,
    #[error("--allowed-endpoint-hosts: {0}")]
    AllowedEndpointHosts(String),
    #[error("set at most one of --default-credentials-secret and --default-credentials-endpoint")]
    TwoDefaults,
    #[error(
        "--default-credentials-endpoint must be an https:// URL with a host and nothing after it"
    )]
    DefaultEndpoint,
    #[error("--default-credentials-endpoint uses the operator's own workload identity: set --entra-client-id, --entra-tenant-id and --entra-federated-token-file (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE; the AKS workload identity webhook or the chart's workloadIdentity values set them)")]
    NoOwnIdentity,
    #[error("failed to read --acs-ca-cert {path}")]
    ReadCaCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--concurrency must be at least 1")]
    Concurrency,
    #[error("--acs-requests-per-second must be positive (0 disables the limit is not supported; use a large value)")]
    Budget,
    #[error(
        "leader election needs renew deadline < lease duration and retry period < renew deadline"
    )]
    LeaderTimings,
}

impl Config {
    /// Validates the flags.
    pub fn from_args(a: RunArgs) -> Result<Self, ConfigError> {
        if a.concurrency == 0 {
            return Err(ConfigError::Concurrency);
        }
        if !(a.acs_requests_per_second.is_finite() && a.acs_requests_per_second > 0.0) {
            return Err(ConfigError::Budget);
        }
        let default_credentials = default_credentials(&a)?;
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let own = match (
            nonempty(&a.entra_client_id),
            nonempty(&a.entra_tenant_id),
            a.entra_federated_token_file.clone(),
        ) {
            (Some(client_id), Some(tenant_id), Some(token_file)) => Some(OwnIdentity {
                client_id,
                tenant_id,
                token_file,
            }),
            _ => None,
        };
        let default_workload_identity = match nonempty(&a.default_credentials_endpoint) {
            None => None,
            Some(_) if default_credentials.is_some() => return Err(ConfigError::TwoDefaults),
            Some(_) if own.is_none() => return Err(ConfigError::NoOwnIdentity),
            Some(e) => {
                let e = e.trim().trim_end_matches('/').to_string();
                let host = e.strip_prefix("https://").unwrap_or_default();
                if host.is_empty() || host.contains(['/', '?', '#']) {
                    return Err(ConfigError::DefaultEndpoint);
                }
                Some(DefaultWorkloadIdentity {
                    endpoint: e,
                    namespace_selector: a.default_credentials_namespace_selector.clone(),
                })
            }
        };
        let pod_namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let sealing_key_secret = match nonempty(&a.sealing_key_secret) {
            None => (
                pod_namespace.clone(),
                "acs-identity-operator-sealing-key".to_string(),
            ),
            Some(s) => s
                .split_once('/')
                .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
                .map(|(ns, n)| (ns.to_string(), n.to_string()))
                .ok_or(ConfigError::SealingKeySecretFormat)?,
        };
        let allowed_endpoint_hosts =
            crate::endpoint_allow::AllowedHosts::parse(&a.allowed_endpoint_hosts)
                .map_err(ConfigError::AllowedEndpointHosts)?;
        let entra = EntraConfig {
            authority_host: a.entra_authority_host.clone(),
            default_tenant_id: nonempty(&a.entra_tenant_id),
            own,
            sealing_key_secret,
        };
        let acs_ca_pem = match &a.acs_ca_cert {
            Some(p) => Some(std::fs::read(p).map_err(|source| ConfigError::ReadCaCert {
                path: p.clone(),
                source,
            })?),
            None => None,
        };
        let leader_election = leader_election(&a)?;
        let identity = a.identity.clone().unwrap_or_else(generated_identity);
        let every_namespace = a.watch_namespaces.iter().all(|n| n.trim().is_empty());
        Ok(Self {
            kubeconfig: a.kubeconfig,
            context: a.context,
            watch_namespaces: a
                .watch_namespaces
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            concurrency: a.concurrency,
            acs_requests_per_second: Some(a.acs_requests_per_second),
            acs_request_burst: a.acs_request_burst.max(1),
            api_mode: a.acs_api_mode.into(),
            acs_ca_pem,
            allow_insecure_http: a.allow_insecure_http,
            acs_request_timeout: a.acs_request_timeout,
            allowed_endpoint_hosts,
            default_credentials,
            default_workload_identity,
            entra,
            rollout_restart: a.rollout_restart,
            manage_cluster_services: a.manage_cluster_services.unwrap_or(every_namespace),
            restart_coalesce_window: a.restart_coalesce_window,
            propagation_allowance: a.propagation_allowance,
            metrics_addr: a.metrics_addr,
            leader_election,
            identity,
            resync_period: a.resync_period.max(Duration::from_secs(10)),
            operator_namespace: pod_namespace,
            guards: Guards {
                failure_backoff_max: a.failure_backoff_max.max(Duration::from_secs(1)),
                unscheduled_limit: a.unscheduled_issuance_limit.max(1),
                unscheduled_window: a.unscheduled_issuance_window.max(Duration::from_secs(1)),
                revocation_coalesce: a.revocation_coalesce_window,
                revocation_limit: a.revocation_limit.max(1),
                revocation_window: a.revocation_limit_window.max(Duration::from_secs(1)),
                allow_default_credentials_adoption: a.allow_default_credentials_adoption,
            },
        })
    }

    /// True when the operator watches this namespace.
    pub fn watches_namespace(&self, ns: &str) -> bool {
        self.watch_namespaces.is_empty() || self.watch_namespaces.iter().any(|n| n == ns)
    }
}

/// `--default-credentials-secret` (`namespace/name`), if set.
fn default_credentials(a: &RunArgs) -> Result<Option<DefaultCredentials>, ConfigError> {
    Ok(match a.default_credentials_secret.as_deref() {
        None | Some("") => None,
        Some(s) => {
            let (ns, name) = s
                .split_once('/')
                .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
                .ok_or(ConfigError::DefaultCredentialsFormat)?;
            Some(DefaultCredentials {
                namespace: ns.to_string(),
                name: name.to_string(),
                key: a.default_credentials_key.clone(),
                namespace_selector: a.default_credentials_namespace_selector.clone(),
            })
        }
    })
}

/// Leader election's settings, when it is on: the lease must outlast the renew deadline, and
/// that the retry period.
fn leader_election(a: &RunArgs) -> Result<Option<LeaderElectionConfig>, ConfigError> {
    if !a.leader_election {
        return Ok(None);
    }
    if a.leader_election_renew_deadline >= a.leader_election_lease_duration
        || a.leader_election_retry_period >= a.leader_election_renew_deadline
    {
        return Err(ConfigError::LeaderTimings);
    }
    Ok(Some(LeaderElectionConfig {
        namespace: a
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_string()),
        lease_name: a.leader_election_lease.clone(),
        lease_duration: a.leader_election_lease_duration,
        renew_deadline: a.leader_election_renew_deadline,
        retry_period: a.leader_election_retry_period,
    }))
}

/// This replica's identity when none is given: its host name and a random suffix.
fn generated_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "operator".to_string());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

#[cfg(test)]
mod tests;
