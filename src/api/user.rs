//! `CommunicationUser`: one ACS identity, declared in YAML.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A CommunicationUser is one Azure Communication Services identity (`8:acs:...`). The operator
/// creates the identity, records it in status, revokes its tokens on request and deletes it
/// when the resource is deleted (unless `deletionPolicy: Retain`).
// The derive repeats `printcolumn`/`shortname` attributes by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[kube(
    group = "communication.acs.dev",
    version = "v1alpha1",
    kind = "CommunicationUser",
    namespaced,
    status = "CommunicationUserStatus",
    shortname = "acsuser",
    shortname = "acsusers",
    category = "acs",
    doc = "A CommunicationUser is one Azure Communication Services identity, created, tracked and deleted by the operator.",
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
    printcolumn(name = "Identity", type_ = "string", json_path = ".status.identityId"),
    printcolumn(
        name = "Revocations",
        type_ = "integer",
        json_path = ".status.revocation.epoch",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!(has(self.serviceRef) && has(self.credentials))").message("set at most one of serviceRef (a CommunicationService or ClusterCommunicationService) and credentials (the older way)"))]
pub struct CommunicationUserSpec {
    /// The ACS resource to use: a `CommunicationService` of this namespace, or a
    /// `ClusterCommunicationService` whose `namespaceSelector` selects this namespace. The
    /// preferred way; `credentials` and the fallbacks below are the older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_ref: Option<super::service::ServiceRef>,

    /// How to authenticate to ACS (the older way; see `serviceRef`): a connection string in a
    /// Secret, or Microsoft Entra ID workload identity through a ServiceAccount. When omitted
    /// (and no `serviceRef`), the operator uses the Secret `acs-credentials` (key
    /// `connectionString`) in this namespace, and otherwise the operator-wide default
    /// credentials if this namespace opted into them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsRef>,

    /// What happens to the ACS identity when this resource is deleted: `Delete` removes it
    /// (revoking all of its tokens), `Retain` leaves it in ACS so it can be adopted again.
    /// When omitted: `Retain` for an adopted identity (`identityId` set), else `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// The id of an existing ACS identity (`8:acs:...`) to manage instead of creating a new one,
    /// for example one kept with `deletionPolicy: Retain`. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 8, max = 256),
        regex(pattern = r"^8:(acs|gcch-acs|dod-acs|spool):\S+$")
    )]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("identityId is immutable: create a new CommunicationUser to manage another identity"))]
    pub identity_id: Option<String>,
}

/// How the operator authenticates to the ACS resource: a connection string in a Secret of
/// this namespace (`secretName`, `key`), or Microsoft Entra ID workload identity through a
/// ServiceAccount of this namespace (`endpoint`, `workloadIdentity`). Exactly one form.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.secretName) != has(self.workloadIdentity)").message("set exactly one of secretName (a connection string in a Secret) or workloadIdentity (Microsoft Entra ID)"))]
#[x_kube(validation = kube::core::Rule::new("has(self.workloadIdentity) == has(self.endpoint)").message("endpoint goes with workloadIdentity, and workloadIdentity needs it: the ACS resource's https://<resource>.communication.azure.com (a connection string carries its own)"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.key) || has(self.secretName)").message("key names the connection string's key in secretName's Secret; it has no meaning with workloadIdentity"))]
pub struct CredentialsRef {
    /// Name of a Secret in this namespace holding a connection string. References never cross
    /// namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Key of the connection string in that Secret (`endpoint=https://...;accesskey=...`);
    /// `connectionString` when omitted. Azure Service Operator v2 writes
    /// `primaryConnectionString` or `secondaryConnectionString`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
    /// The ACS resource's endpoint, `https://<resource>.communication.azure.com`, for
    /// `workloadIdentity` (a connection string names its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 9, max = 2048),
        regex(pattern = r"^https?://[^/\s?#]+/?$")
    )]
    pub endpoint: Option<String>,
    /// Authenticate with Microsoft Entra ID as the workload identity of a ServiceAccount of this
    /// namespace: the operator requests a token for it (TokenRequest, audience
    /// `api://AzureADTokenExchange`) and exchanges it with Entra. The ServiceAccount must carry
    /// `azure.workload.identity/client-id` (and `azure.workload.identity/tenant-id` unless the
    /// operator has a default tenant) and opt in with
    /// `communication.acs.dev/allow-token-request: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentityRef>,
}

impl CredentialsRef {
    /// The Secret form: the connection string under `key` of Secret `name`.
    pub fn from_secret(name: &str, key: &str) -> Self {
        Self {
            secret_name: Some(name.to_string()),
            key: Some(key.to_string()),
            endpoint: None,
            workload_identity: None,
        }
    }

    /// The Entra form: `endpoint`, as the workload identity of ServiceAccount `name`.
    pub fn from_service_account(endpoint: &str, name: &str) -> Self {
        Self {
            secret_name: None,
            key: None,
            endpoint: Some(endpoint.to_string()),
            workload_identity: Some(WorkloadIdentityRef {
                service_account_name: name.to_string(),
            }),
        }
    }

    /// The Secret form's Secret name and key (the key defaulted), if this is that form.
    pub fn secret(&self) -> Option<(&str, &str)> {
        let name = self.secret_name.as_deref()?;
        Some((
            name,
            self.key
                .as_deref()
                .unwrap_or(super::DEFAULT_CREDENTIALS_KEY),
        ))
    }
}

/// A ServiceAccount whose workload identity the operator uses.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentityRef {
    /// Name of a ServiceAccount in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: String,
}

/// What to do with the ACS identity when the CommunicationUser is deleted.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the ACS identity, which revokes all of its tokens.
    #[default]
    Delete,
    /// Keep the ACS identity; only the Kubernetes resource goes.
    Retain,
}

/// Observed state of a CommunicationUser.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommunicationUserStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The ACS identity id (`8:acs:<resource>_<user>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
    /// The externalId the identity was created with (preview api mode: derived from this
    /// resource's UID, which makes creation idempotent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The ACS endpoint the identity was created at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The immutable id of the ACS resource the identity belongs to (the GUID inside its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Token revocation state. Every token issued before `epoch` moved is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationStatus>,
    /// Current conditions (`Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Revocation state of an identity. ACS revokes every token of an identity at once, so the
/// operator counts revocations: a token issued under an older epoch is no longer valid.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevocationStatus {
    /// Number of revocations done so far; tokens issued under a smaller epoch are revoked.
    pub epoch: i64,
    /// When the last revocation completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revocation_time: Option<Time>,
    /// The value of the `communication.acs.dev/revoke` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_annotation: Option<String>,
    /// The epoch a revocation in progress will move to. Written (with the resourceVersion
    /// read as a precondition) before the revoke call, so two reconciles or a stale cache
    /// can never revoke twice around a re-issue; tokens do not issue while it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
    /// When the revocation in progress was started (or last retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<Time>,
}

impl CommunicationUser {
    /// The current revocation epoch (0 before any revocation).
    pub fn revocation_epoch(&self) -> i64 {
        self.status
            .as_ref()
            .and_then(|s| s.revocation.as_ref())
            .map_or(0, |r| r.epoch)
    }

    /// True while a revocation is in progress (started, epoch not yet moved).
    pub fn revocation_pending(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.revocation.as_ref())
            .is_some_and(|r| r.pending.is_some_and(|p| p > r.epoch))
    }

    /// The deletion policy in effect: as set, else `Retain` for an adopted identity (it
    /// existed before this resource, so deleting it with the resource would surprise) and
    /// `Delete` for one the operator created.
    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.spec
            .deletion_policy
            .unwrap_or(if self.spec.identity_id.is_some() {
                DeletionPolicy::Retain
            } else {
                DeletionPolicy::Delete
            })
    }

    /// The identity id recorded in status, if any.
    pub fn identity_id(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.identity_id.as_deref())
    }

    /// The user knows its identity was deleted outside the operator (a revoke or one of its
    /// tokens met `IdentityNotFound`). Sticky: nothing will bring that identity back.
    pub fn identity_lost(&self) -> bool {
        use super::condition::{reasons, types, ConditionExt};
        self.status.as_ref().is_some_and(|s| {
            s.identity_id.is_some()
                && s.conditions
                    .find(types::READY)
                    .is_some_and(|c| c.reason == reasons::IDENTITY_NOT_FOUND)
        })
    }
}
