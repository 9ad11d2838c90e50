//! What to do next, by condition reason (the README's troubleshooting table, shortened).

/// The next step for an object whose `Ready` condition has `reason`; `None` when all is well.
pub fn next_step(kind: &str, ready: &str, reason: &str) -> Option<&'static str> {
    if ready == "True" {
        return match reason {
            "RevocationDeferred" => Some(
                "revocations are rate-limited; find what keeps changing scopes or deleting tokens",
            ),
            _ => None,
        };
    }
    Some(match reason {
        "" => "not reconciled yet: is the operator running and watching this namespace? (kubectl acs check)",
        "CredentialsNotFound" => "create the acs-credentials Secret, set spec.credentials, or label the namespace for the default credentials",
        "CredentialsInvalid" => "fix the connection string (endpoint=https://...;accesskey=...) or the ServiceAccount's client id annotation",
        "CredentialsRejected" => "update the Secret with the current access key, or fix the Entra federated credential",
        "NotAuthorized" => "give the Entra principal a data-plane role on the ACS resource",
        "TokenRequestNotAllowed" => "annotate the ServiceAccount communication.acs.dev/allow-token-request=true",
        "TokenRequestFailed" => "the operator may not request ServiceAccount tokens: chart value workloadIdentity.namespaceServiceAccounts",
        "EndpointNotAllowed" => "fix the endpoint, or ask the operator's administrator to allow its host (acs.allowedEndpointHosts)",
        "ResourceMismatch" => "restore the credentials of the identity's ACS resource, or recreate the user",
        "IdentityNotFound" => "the identity is gone from ACS: delete and recreate the CommunicationUser",
        "IdentityInUse" => "another CommunicationUser manages this identity: use it, or another identity",
        "AdoptionNotAllowed" => "adopt identities only with the namespace's own credentials",
        "Deferred" => "the guard deferred work: find what keeps changing the Secret or the spec; it resumes by itself",
        "AcsError" | "IssueFailed" => "ACS or the network failed; retried with backoff (see the message and the operator's logs)",
        "UserNotFound" | "UserNotReady" => "create or fix the CommunicationUser the token names (kubectl acs status <user>)",
        "WaitingForRevocation" => "resolves by itself once the user's revocation is done",
        "TokenRevoked" => "the Secret holds a revoked token; its replacement is pending (see the message)",
        "SecretConflict" => "the Secret name belongs to something else: choose another secretName or delete that Secret",
        "SecretRejected" => "the apiserver refused the Secret: fix spec.secretTemplate",
        "Suspended" => "spec.suspend is true: set it to false to issue tokens again",
        _ if kind == "CommunicationToken" => "see the condition's message (kubectl describe communicationtoken)",
        _ => "see the condition's message (kubectl describe communicationuser)",
    })
}
