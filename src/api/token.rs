//! `CommunicationToken`: an ACS access token for a CommunicationUser, kept valid in a Secret.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::acs::models::Scope;

/// A CommunicationToken keeps an ACS access token for a CommunicationUser in a Secret: issued
/// with the declared scopes, renewed before it expires, re-issued when revoked, restored when
/// the Secret is deleted or edited, and revoked when the resource is deleted.
// The derive repeats `printcolumn`/`shortname` attributes by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "communication.acs.dev",
    version = "v1alpha1",
    kind = "CommunicationToken",
    namespaced,
    status = "CommunicationTokenStatus",
    shortname = "acstoken",
    shortname = "acstokens",
    category = "acs",
    doc = "A CommunicationToken keeps a valid Azure Communication Services access token for a CommunicationUser in a Secret.",
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
    printcolumn(name = "User", type_ = "string", json_path = ".spec.userRef.name"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresOn"),
    printcolumn(name = "Renews", type_ = "string", json_path = ".status.renewalTime"),
    printcolumn(
        name = "Scopes",
        type_ = "string",
        json_path = ".spec.scopes",
        priority = 1
    ),
    printcolumn(
        name = "Revision",
        type_ = "integer",
        json_path = ".status.revision",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.secretName) == has(oldSelf.secretName)").message("secretName is immutable: it cannot be added or removed after creation").field_path(".secretName"))]
#[x_kube(validation = kube::core::Rule::new("!(has(self.renewBefore) && has(self.renewBeforePercentage))").message("set at most one of renewBefore and renewBeforePercentage"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.renewBefore) || duration(self.renewBefore).getMinutes() < self.expiresInMinutes").message(kube::core::Message::Expression("'renewBefore ' + self.renewBefore + ' must be shorter than the token lifetime (expiresInMinutes)'".into())).field_path(".renewBefore"))]
pub struct CommunicationTokenSpec {
    /// The CommunicationUser (in this namespace) whose identity the token is issued for.
    /// Immutable.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("userRef is immutable: create a new CommunicationToken for another user"))]
    pub user_ref: UserRef,

    /// Token scopes, a set of: chat, voip, chat.join, chat.join.limited, voip.join. Changing
    /// them revokes every token of the user (ACS revokes per identity) and re-issues them.
    #[serde(default = "default_scopes")]
    #[schemars(length(min = 1, max = 5), extend("x-kubernetes-list-type" = "set"))]
    pub scopes: Vec<Scope>,

    /// Token lifetime in minutes, 60 to 1440 (24 hours). Changing it revokes and re-issues.
    #[serde(default = "default_expires_in_minutes")]
    #[schemars(range(min = 60, max = 1440))]
    pub expires_in_minutes: i32,

    /// Renew this long before the token expires (a duration such as `30m` or `2h`, at least
    /// one minute). Default: renew when two thirds of the lifetime have passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$")
    )]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('1m')").message("renewBefore must be at least 1m"))]
    pub renew_before: Option<kube::core::Duration>,

    /// Renew when this percentage of the lifetime remains (5 to 95). Default: 33.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 95))]
    pub renew_before_percentage: Option<i32>,

    /// Name of the Secret to write the token to, in this namespace. Default: the
    /// CommunicationToken's name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("secretName is immutable"))]
    pub secret_name: Option<String>,

    /// Labels and annotations added to the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,

    /// Stop issuing and renewing. The current Secret stays until its token expires.
    #[serde(default)]
    pub suspend: bool,

    /// Revoke the user's tokens when this resource is deleted. ACS revokes per identity, so
    /// every other CommunicationToken of the same user is re-issued too. Default: true.
    #[serde(default = "default_true")]
    pub revoke_on_delete: bool,

    /// Workloads of this namespace to restart (a rollout, as `kubectl rollout restart` does)
    /// when this token changes, for consumers that read it once: environment variables,
    /// `subPath` mounts, apps that do not watch the file. Each workload must opt in with the
    /// annotation `communication.acs.dev/restart-on-rotation: "true"`, and the operator must
    /// run with rollout restarts enabled (chart value `rolloutRestart.enabled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,
}

/// A workload restarted when a token changes.
#[derive(
    Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartTarget {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, or `Rollout` (Argo Rollouts, restarted through
    /// its `spec.restartAt`).
    pub kind: WorkloadKind,
    /// Name of the workload in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The kinds of workload a rollout restart applies to.
#[derive(
    Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    /// An Argo Rollouts `Rollout` (`argoproj.io/v1alpha1`).
    Rollout,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Rollout => "Rollout",
        }
    }
}

/// A rollout restart target as this token last saw it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartedWorkload {
    pub kind: WorkloadKind,
    pub name: String,
    /// This token's revision the workload has (a restart since, or first seen at): a newer
    /// revision restarts it, an older one never does.
    pub observed_revision: i64,
    /// When this token last restarted it (absent: never, only seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<Time>,
    /// The revisions of the tokens the workload depends on, hashed, as set on its pod template
    /// (`communication.acs.dev/restarted-for`) by that restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revisions_hash: Option<String>,
}

/// A reference to a CommunicationUser in the same namespace.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    /// Name of the CommunicationUser.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Metadata added to the token Secret.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Labels for the Secret (keys under communication.acs.dev/ are reserved).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, !k.startsWith('communication.acs.dev/'))").message("secretTemplate.labels: keys under communication.acs.dev/ are reserved"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, size(self[k]) <= 63)").message("secretTemplate.labels: values must be at most 63 characters"))]
    pub labels: BTreeMap<String, String>,
    /// Annotations for the Secret (keys under communication.acs.dev/ are reserved).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, !k.startsWith('communication.acs.dev/'))").message("secretTemplate.annotations: keys under communication.acs.dev/ are reserved"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, size(self[k]) <= 4096)").message("secretTemplate.annotations: values must be at most 4096 characters"))]
    pub annotations: BTreeMap<String, String>,
}

fn default_scopes() -> Vec<Scope> {
    vec![Scope::Voip]
}

fn default_expires_in_minutes() -> i32 {
    1440
}

fn default_true() -> bool {
    true
}

/// Observed state of a CommunicationToken. Never holds the token itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommunicationTokenStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Secret holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The ACS identity the current token was issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
    /// When the current token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<Time>,
    /// When the token will be renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// When the current token was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    /// How many tokens have been issued for this resource.
    #[serde(default)]
    pub revision: i64,
    /// The user's revocation epoch the current token was issued under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_epoch: Option<i64>,
    /// Set while this token asks its user to revoke the tokens issued under this epoch
    /// (after a change of scopes or lifetime, or on deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_requested: Option<i64>,
    /// When this token asked for that revocation: the user revokes once no sibling has asked
    /// for a short while, so a batch of changes costs one revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_requested_at: Option<Time>,
    /// The scopes the current token was issued with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issued_scopes: Vec<Scope>,
    /// The lifetime the current token was requested with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_expires_in_minutes: Option<i32>,
    /// A fingerprint of the access key the current token was issued with; a rotated key
    /// revokes the token at ACS, so a changed fingerprint means re-issue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// The Secret's resourceVersion when this token's status last vouched for it: the
    /// operator's own write, or a read that found it intact. A restarted operator whose Secret
    /// watch shows the Secret still at this version (and the token still at `observedGeneration`)
    /// trusts the fields above without reading the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_resource_version: Option<String>,
    /// The value of the `communication.acs.dev/rotate` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_rotate_annotation: Option<String>,
    /// Consecutive failed attempts to issue (reset on success).
    #[serde(default)]
    pub failed_attempts: i32,
    /// The validity a pod is guaranteed to hold, at worst, when the next token reaches it:
    /// `expiresOn - renewalTime - propagation allowance` (the kubelet's Secret sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_validity_at_worst_seconds: Option<i64>,
    /// The workloads of `spec.rolloutRestartTargets`: the token revision each has, and when
    /// this token last restarted it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarted_workloads: Vec<RestartedWorkload>,
    /// Current conditions (`Ready`, `Issuing`, `RolloutRestart`, `RenewalMargin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl CommunicationToken {
    /// The Secret name: `spec.secretName`, else the resource's name.
    pub fn secret_name(&self) -> String {
        self.spec
            .secret_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}
