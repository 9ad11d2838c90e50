//! Status conditions (`metav1.Condition`, kstatus-compatible) and the one rule for updating
//! them: keep `lastTransitionTime` unless the status flips, so unchanged writes stay no-ops.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The resource is fully reconciled and usable.
    pub const READY: &str = "Ready";
    /// A token is being issued or re-issued.
    pub const ISSUING: &str = "Issuing";
    /// The workloads of `spec.rolloutRestartTargets` can be restarted (present only when the
    /// token names some).
    pub const ROLLOUT_RESTART: &str = "RolloutRestart";
    /// False when the token's renewal leaves a pod less validity than the propagation
    /// allowance plus the SDK's refresh window (present only then).
    pub const RENEWAL_MARGIN: &str = "RenewalMargin";
}

/// Condition reasons (PascalCase), also used as event reasons.
pub mod reasons {
    pub const IDENTITY_CREATED: &str = "IdentityCreated";
    pub const IDENTITY_ADOPTED: &str = "IdentityAdopted";
    pub const IDENTITY_READY: &str = "IdentityReady";
    pub const CREDENTIALS_NOT_FOUND: &str = "CredentialsNotFound";
    pub const CREDENTIALS_INVALID: &str = "CredentialsInvalid";
    pub const CREDENTIALS_REJECTED: &str = "CredentialsRejected";
    /// `serviceRef` names a service that does not exist.
    pub const SERVICE_NOT_FOUND: &str = "ServiceNotFound";
    /// `serviceRef` names a ClusterCommunicationService that does not select the namespace.
    pub const NAMESPACE_NOT_SELECTED: &str = "NamespaceNotSelected";
    /// A service's credentials were proved with an authenticated call.
    pub const CREDENTIALS_VERIFIED: &str = "CredentialsVerified";
    pub const RESOURCE_MISMATCH: &str = "ResourceMismatch";
    /// The credentials name an endpoint that is not an allowed ACS host: nothing is sent.
    pub const ENDPOINT_NOT_ALLOWED: &str = "EndpointNotAllowed";
    /// The ServiceAccount named by `workloadIdentity` has not opted in to token requests.
    pub const TOKEN_REQUEST_NOT_ALLOWED: &str = "TokenRequestNotAllowed";
    /// The operator may not request tokens for the ServiceAccount (its RBAC).
    pub const TOKEN_REQUEST_FAILED: &str = "TokenRequestFailed";
    /// Every rollout restart target exists, opted in and can be restarted.
    pub const RESTART_TARGETS_READY: &str = "RestartTargetsReady";
    /// A workload was restarted for a new token (event).
    pub const WORKLOAD_RESTARTED: &str = "WorkloadRestarted";
    pub const ROLLOUT_RESTART_DISABLED: &str = "RolloutRestartDisabled";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
    pub const TARGET_NOT_OPTED_IN: &str = "TargetNotOptedIn";
    /// The target's update strategy is OnDelete: a restart would replace no pod.
    pub const TARGET_ON_DELETE: &str = "TargetOnDelete";
    pub const RESTART_FAILED: &str = "RestartFailed";
    /// renewBefore (or its percentage) leaves less than the propagation margin.
    pub const RENEWAL_TOO_LATE: &str = "RenewalTooLate";
    /// The Entra principal holds no data-plane role on the ACS resource (403).
    pub const NOT_AUTHORIZED: &str = "NotAuthorized";
    pub const IDENTITY_NOT_FOUND: &str = "IdentityNotFound";
    pub const ACS_ERROR: &str = "AcsError";
    pub const REVOKING: &str = "Revoking";
    pub const TOKENS_REVOKED: &str = "TokensRevoked";
    /// A user's revocation waits: it revoked as often as its limit allows within the window.
    pub const REVOCATION_DEFERRED: &str = "RevocationDeferred";
    /// The Secret holds a token ACS has revoked (issued before the user's current revocation
    /// epoch) and its replacement is not there yet.
    pub const TOKEN_REVOKED: &str = "TokenRevoked";
    pub const DELETING: &str = "Deleting";
    pub const TOKEN_ISSUED: &str = "TokenIssued";
    pub const TOKEN_ROTATED: &str = "TokenRotated";
    pub const TOKEN_VALID: &str = "TokenValid";
    pub const SECRET_RESTORED: &str = "SecretRestored";
    pub const USER_NOT_FOUND: &str = "UserNotFound";
    pub const USER_NOT_READY: &str = "UserNotReady";
    pub const WAITING_FOR_REVOCATION: &str = "WaitingForRevocation";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const SECRET_REJECTED: &str = "SecretRejected";
    pub const SUSPENDED: &str = "Suspended";
    pub const ISSUE_FAILED: &str = "IssueFailed";
    /// An unscheduled issuance or repair waits for the per-object guard's window.
    pub const DEFERRED: &str = "Deferred";
    /// The Secret was rewritten with its same, still valid token.
    pub const SECRET_REPAIRED: &str = "SecretRepaired";
    /// An immutable token Secret was deleted and created to hold a new token (event).
    pub const SECRET_REPLACED: &str = "SecretReplaced";
    /// `spec.identityId` names an identity another CommunicationUser already manages.
    pub const IDENTITY_IN_USE: &str = "IdentityInUse";
    /// Adoption is refused under the operator-wide default credentials.
    pub const ADOPTION_NOT_ALLOWED: &str = "AdoptionNotAllowed";
    /// A GA identity creation failed after the request was sent: it may have been processed.
    pub const AMBIGUOUS_CREATE: &str = "AmbiguousCreate";
}

/// Convenience lookups on a condition list.
pub trait ConditionExt {
    fn find(&self, type_: &str) -> Option<&Condition>;
    fn is_true(&self, type_: &str) -> bool {
        self.find(type_).is_some_and(|c| c.status == "True")
    }
}

impl ConditionExt for [Condition] {
    fn find(&self, type_: &str) -> Option<&Condition> {
        self.iter().find(|c| c.type_ == type_)
    }
}

/// Sets a condition, keeping `lastTransitionTime` when the status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation,
            last_transition_time: Time(now),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut c = Vec::new();
        set_condition(&mut c, "Ready", false, "A", "m", Some(1), ts(10));
        set_condition(&mut c, "Ready", false, "B", "m2", Some(2), ts(20));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, Time(ts(10)));
        assert_eq!(c[0].reason, "B");
        set_condition(&mut c, "Ready", true, "C", "m3", Some(2), ts(30));
        assert_eq!(c[0].last_transition_time, Time(ts(30)));
        assert!(c.is_true("Ready"));
        assert!(!c.is_true("Issuing"));
    }
}
