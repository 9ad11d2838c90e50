//! `CommunicationService` and `ClusterCommunicationService`: an ACS resource and how to
//! authenticate to it, as an object users reference (the Issuer / ClusterIssuer pattern).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A CommunicationService is one ACS resource and the credentials that reach it, usable by
/// the CommunicationUsers of its namespace (`spec.serviceRef`).
// The derive repeats `printcolumn`/`shortname` attributes by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[kube(
    group = "communication.acs.dev",
    version = "v1alpha1",
    kind = "CommunicationService",
    namespaced,
    status = "CommunicationServiceStatus",
    shortname = "acsservice",
    category = "acs",
    doc = "A CommunicationService is one Azure Communication Services resource and how to authenticate to it, for the CommunicationUsers of its namespace.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(name = "Users", type_ = "integer", json_path = ".status.users"),
    printcolumn(name = "Tokens", type_ = "integer", json_path = ".status.tokens"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.connectionString) != has(self.workloadIdentity)").message("set exactly one of connectionString (a Secret of this namespace) or workloadIdentity (a ServiceAccount of this namespace)"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.connectionString) || !has(self.connectionString.secretRef.namespace)").message("a CommunicationService reads Secrets of its own namespace only: remove connectionString.secretRef.namespace (a ClusterCommunicationService may name one)"))]
pub struct CommunicationServiceSpec {
    /// The ACS resource's endpoint, `https://<resource>.communication.azure.com`. A
    /// connection string must name the same endpoint.
    #[schemars(
        length(min = 9, max = 2048),
        regex(pattern = r"^https?://[^/\s?#]+/?$")
    )]
    pub endpoint: String,
    /// Authenticate with an access key: a connection string in a Secret of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<ConnectionStringAuth>,
    /// Authenticate with Microsoft Entra ID as the workload identity of a ServiceAccount of
    /// this namespace (it must opt in with `communication.acs.dev/allow-token-request: "true"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<ServiceWorkloadIdentity>,
    /// The request budget of this ACS resource, shared by every object that uses this
    /// service (requests per second; the operator's `--acs-requests-per-second` when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub requests_per_second: Option<i32>,
}

/// A ClusterCommunicationService is an ACS resource and its credentials, set up by a
/// platform team for the namespaces its `namespaceSelector` selects.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[kube(
    group = "communication.acs.dev",
    version = "v1alpha1",
    kind = "ClusterCommunicationService",
    status = "CommunicationServiceStatus",
    shortname = "acsclusterservice",
    category = "acs",
    doc = "A ClusterCommunicationService is one Azure Communication Services resource and how to authenticate to it, for the CommunicationUsers of the namespaces it selects.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(name = "Users", type_ = "integer", json_path = ".status.users"),
    printcolumn(name = "Tokens", type_ = "integer", json_path = ".status.tokens"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.connectionString) != has(self.operatorIdentity)").message("set exactly one of connectionString (a Secret) or operatorIdentity (the operator's own workload identity)"))]
pub struct ClusterCommunicationServiceSpec {
    /// The ACS resource's endpoint, `https://<resource>.communication.azure.com`. A
    /// connection string must name the same endpoint.
    #[schemars(
        length(min = 9, max = 2048),
        regex(pattern = r"^https?://[^/\s?#]+/?$")
    )]
    pub endpoint: String,
    /// Authenticate with an access key: a connection string in a Secret of the operator's
    /// namespace, or of `secretRef.namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<ConnectionStringAuth>,
    /// Authenticate with Microsoft Entra ID as the operator's own workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_identity: Option<OperatorIdentity>,
    /// The namespaces whose CommunicationUsers may use this service. No selector selects no
    /// namespace; `{}` selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// The request budget of this ACS resource, shared by every object that uses this
    /// service (requests per second; the operator's `--acs-requests-per-second` when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub requests_per_second: Option<i32>,
}

/// A connection string (`endpoint=https://...;accesskey=...`) in a Secret.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStringAuth {
    pub secret_ref: SecretKeyRef,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the connection string; `connectionString` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
    /// The Secret's namespace (ClusterCommunicationService only; the operator's namespace
    /// when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

impl SecretKeyRef {
    /// The key, defaulted.
    pub fn key(&self) -> &str {
        self.key
            .as_deref()
            .unwrap_or(super::DEFAULT_CREDENTIALS_KEY)
    }
}

/// A ServiceAccount whose workload identity the service uses.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceWorkloadIdentity {
    pub service_account_ref: LocalRef,
}

/// An object of the same namespace, by name.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct LocalRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The operator's own workload identity (no settings).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
pub struct OperatorIdentity {}

/// Observed state of a (Cluster)CommunicationService.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommunicationServiceStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Names the key or Entra principal in use, and the endpoint, without revealing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// When the credentials were last proved with an authenticated call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// The fingerprint that call proved (or saw refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probed_fingerprint: Option<String>,
    /// CommunicationUsers that reference this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<i32>,
    /// CommunicationTokens of those users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<i32>,
    /// Current conditions (`Ready`: whether the credentials work).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Which kind a `serviceRef` names.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, JsonSchema)]
pub enum ServiceKind {
    CommunicationService,
    ClusterCommunicationService,
}

impl std::fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CommunicationService => "CommunicationService",
            Self::ClusterCommunicationService => "ClusterCommunicationService",
        })
    }
}

/// A CommunicationUser's reference to the service it uses.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, JsonSchema)]
pub struct ServiceRef {
    /// `CommunicationService` (of the user's namespace) or `ClusterCommunicationService`.
    pub kind: ServiceKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A service object, by kind, namespace (the namespaced kind's) and name: what a change is
/// announced by and what users are found by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub kind: ServiceKind,
    /// `None` for a ClusterCommunicationService.
    pub namespace: Option<String>,
    pub name: String,
}

impl ServiceKey {
    /// The service `r` names for a user of `namespace`.
    pub fn of_ref(namespace: &str, r: &ServiceRef) -> Self {
        Self {
            kind: r.kind,
            namespace: (r.kind == ServiceKind::CommunicationService).then(|| namespace.to_string()),
            name: r.name.clone(),
        }
    }

    /// Whether a user of `namespace` referencing `r` uses this service.
    pub fn is_referenced_by(&self, namespace: &str, r: &ServiceRef) -> bool {
        *self == Self::of_ref(namespace, r)
    }
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}
