//! The custom resources (`communication.acs.dev/v1alpha1`) and every name the operator writes
//! into the cluster, each defined once here. Types only, no IO.

pub mod condition;
pub mod service;
pub mod token;
pub mod user;

pub use condition::{set_condition, ConditionExt};
pub use service::{
    ClusterCommunicationService, ClusterCommunicationServiceSpec, CommunicationService,
    CommunicationServiceSpec, CommunicationServiceStatus, ServiceKey, ServiceKind, ServiceRef,
};
pub use token::{
    CommunicationToken, CommunicationTokenSpec, CommunicationTokenStatus, SecretTemplate, UserRef,
};
pub use user::{
    CommunicationUser, CommunicationUserSpec, CommunicationUserStatus, CredentialsRef,
    DeletionPolicy, RevocationStatus, WorkloadIdentityRef,
};

/// API group of both kinds.
pub const GROUP: &str = "communication.acs.dev";
/// API version of both kinds.
pub const VERSION: &str = "v1alpha1";
/// The `kubectl get acs` category.
pub const CATEGORY: &str = "acs";

/// Finalizer on a CommunicationUser: the ACS identity must be deleted (or retained) first.
pub const USER_FINALIZER: &str = "communication.acs.dev/identity";
/// Finalizer on a CommunicationToken: revocation must be requested before the Secret goes.
pub const TOKEN_FINALIZER: &str = "communication.acs.dev/token";

/// Annotation on a CommunicationUser: any new value revokes all of its tokens.
pub const REVOKE_ANNOTATION: &str = "communication.acs.dev/revoke";
/// Annotation on a CommunicationToken: any new value forces an immediate rotation.
pub const ROTATE_ANNOTATION: &str = "communication.acs.dev/rotate";

/// Label put on every Secret the operator writes, so a metadata watch can select only ours.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "acs-identity-operator";
/// Label naming the CommunicationToken a Secret belongs to.
pub const TOKEN_LABEL: &str = "communication.acs.dev/token";
/// Label naming the CommunicationUser a Secret's token belongs to.
pub const USER_LABEL: &str = "communication.acs.dev/user";

/// Namespace label that opts a namespace into the operator-wide default credentials.
pub const DEFAULT_CREDENTIALS_OPT_IN_LABEL: &str = "communication.acs.dev/default-credentials";

/// Field manager of the CommunicationUser reconciler.
pub const USER_MANAGER: &str = "acs-identity-operator/user";
/// Field manager of the CommunicationToken reconciler.
pub const TOKEN_MANAGER: &str = "acs-identity-operator/token";
/// Field manager of the services' status.
pub const SERVICE_MANAGER: &str = "acs-identity-operator/service";

/// Type of the Secrets holding tokens.
pub const SECRET_TYPE: &str = "communication.acs.dev/token";

/// Credentials Secret looked up when a resource names none.
pub const DEFAULT_CREDENTIALS_SECRET: &str = "acs-credentials";
/// Key of the connection string in a credentials Secret when none is named.
pub const DEFAULT_CREDENTIALS_KEY: &str = "connectionString";
/// Key Azure Service Operator v2 writes for a CommunicationService's primary connection string.
pub const ASO_PRIMARY_CONNECTION_STRING_KEY: &str = "primaryConnectionString";

/// Keys of a token Secret.
pub mod secret_keys {
    pub const TOKEN: &str = "token";
    pub const EXPIRES_ON: &str = "expiresOn";
    pub const USER_ID: &str = "userId";
    pub const SCOPES: &str = "scopes";
}
