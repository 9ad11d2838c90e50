//! Pure: what a token's status says after an issuance, or after a failed one. The act step
//! (`issue.rs`) only writes what these return, so the wording, the conditions and which of
//! them a failure touches are table-tested.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::plan::{IssueReason, Served};
use super::status;
use crate::acs::AcsError;
use crate::api::condition::{reasons, types};
use crate::api::{self, set_condition, CommunicationToken, CommunicationTokenStatus, ConditionExt};
use crate::controller::{credential_reason, error_chain, failure_hint};

/// What a failed issuance says: its reason and message, and whether the reason is new on the
/// Issuing condition (a permanent failure then gets a Warning event).
pub struct Failed {
    pub reason: &'static str,
    pub message: String,
    pub new_reason: bool,
}

/// Renders a failed issuance into `st`: Issuing says why at once; Ready turns false unless
/// the Secret still holds a usable token and the failure may pass (a transient failure of a
/// renewal or a forced rotation).
pub fn issue_failed(
    st: &mut CommunicationTokenStatus,
    token: &CommunicationToken,
    identity: &str,
    issuance: IssueReason,
    e: &AcsError,
    now: Timestamp,
) -> Failed {
    let gen = token.metadata.generation;
    st.failed_attempts = st.failed_attempts.saturating_add(1);
    let (reason, message) = if e.is_not_found() {
        // Name the identity that is gone, so its user learns it even from a token that never
        // held a token of it (its first issuance).
        st.identity_id = Some(identity.to_string());
        (
            reasons::IDENTITY_NOT_FOUND,
            format!("identity {identity} no longer exists in ACS (deleted outside the operator): delete and recreate the CommunicationUser"),
        )
    } else {
        (
            credential_reason(e).unwrap_or(reasons::ISSUE_FAILED),
            format!(
                "failed to issue token ({}): {}{}",
                e.category(),
                error_chain(e),
                failure_hint(e)
            ),
        )
    };
    let previous = st.conditions.find(types::ISSUING).map(|c| c.reason.clone());
    set_condition(
        &mut st.conditions,
        types::ISSUING,
        true,
        reason,
        message.clone(),
        gen,
        now,
    );
    let still_valid =
        issuance.held_token_usable() && st.expires_on.as_ref().is_some_and(|x| x.0 > now);
    if !still_valid || !e.is_transient() {
        set_condition(
            &mut st.conditions,
            types::READY,
            false,
            reason,
            message.clone(),
            gen,
            now,
        );
        if e.is_transient() {
            // Says what the Secret holds meanwhile (a revoked token, or none).
            let why = format!(
                "issuing its replacement failed ({}), retried with back-off",
                e.category()
            );
            status::held_token_refused(st, token, issuance, reason, &why, now);
        }
    }
    Failed {
        reason,
        message,
        new_reason: previous.as_deref() != Some(reason),
    }
}

/// Renders a token issued and written into `st` (its record copied by `status::record`
/// before): both conditions name the issuance, Issuing the next renewal. Returns the reason
/// and the note, for the event.
pub fn issued(
    st: &mut CommunicationTokenStatus,
    token: &CommunicationToken,
    served: &Served,
    identity: &str,
    issuance: IssueReason,
    epoch: i64,
    now: Timestamp,
) -> (&'static str, String) {
    let (recorded, renew) = (&served.record, served.renew);
    let gen = token.metadata.generation;
    st.last_rotation_time = Some(Time(recorded.issued_at));
    if st.revocation_requested.is_some_and(|e| epoch > e) {
        st.revocation_requested = None;
        st.revocation_requested_at = None;
    }
    st.handled_rotate_annotation = token
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(api::ROTATE_ANNOTATION))
        .cloned();
    st.failed_attempts = 0;
    let name = token.secret_name();
    let (reason, note) = match issuance {
        IssueReason::Initial => (
            reasons::TOKEN_ISSUED,
            format!("issued a token for {identity}, valid until {}", recorded.expires_on),
        ),
        IssueReason::SecretRestored => (
            reasons::SECRET_RESTORED,
            format!("Secret {name} was deleted, or its token edited: restored with a fresh token valid until {}", recorded.expires_on),
        ),
        other => (
            reasons::TOKEN_ROTATED,
            format!("rotated the token ({}); valid until {}", other.as_str(), recorded.expires_on),
        ),
    };
    set_condition(
        &mut st.conditions,
        types::READY,
        true,
        reason,
        note.clone(),
        gen,
        now,
    );
    set_condition(
        &mut st.conditions,
        types::ISSUING,
        false,
        reason,
        format!("next renewal at {renew}"),
        gen,
        now,
    );
    (reason, note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::RecordedToken;

    fn token() -> CommunicationToken {
        let mut t = crate::controller::fixtures::token("ns", "web");
        t.metadata.generation = Some(4);
        t
    }

    fn service(status: u16, code: &str) -> AcsError {
        AcsError::Service {
            status,
            code: Some(code.into()),
            message: None,
            target: None,
            retry_after: None,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn reason(st: &CommunicationTokenStatus, type_: &str) -> Option<String> {
        st.conditions.find(type_).map(|c| c.reason.clone())
    }

    #[test]
    fn a_transient_failure_of_a_renewal_keeps_ready_while_the_held_token_is_valid() {
        let t = token();
        let mut st = CommunicationTokenStatus {
            expires_on: Some(Time(at(1_000))),
            ..Default::default()
        };
        let f = issue_failed(
            &mut st,
            &t,
            "8:acs:r_u",
            IssueReason::Renewal,
            &service(503, "ServiceUnavailable"),
            at(500),
        );
        assert_eq!(f.reason, reasons::ISSUE_FAILED);
        assert!(f.new_reason);
        assert_eq!(st.failed_attempts, 1);
        assert_eq!(
            reason(&st, types::ISSUING).as_deref(),
            Some(reasons::ISSUE_FAILED)
        );
        assert_eq!(reason(&st, types::READY), None, "Ready is not touched");
        // The same failure again: the reason is not new (no second event).
        let again = issue_failed(
            &mut st,
            &t,
            "8:acs:r_u",
            IssueReason::Renewal,
            &service(503, "ServiceUnavailable"),
            at(501),
        );
        assert!(!again.new_reason);
        assert_eq!(st.failed_attempts, 2);
    }

    #[test]
    fn a_failure_with_no_usable_token_or_a_permanent_one_turns_ready_false() {
        let t = token();
        let mut st = CommunicationTokenStatus::default();
        let f = issue_failed(
            &mut st,
            &t,
            "8:acs:r_u",
            IssueReason::Initial,
            &service(404, "IdentityNotFound"),
            at(500),
        );
        assert_eq!(f.reason, reasons::IDENTITY_NOT_FOUND);
        assert!(f.message.contains("8:acs:r_u"));
        assert_eq!(st.identity_id.as_deref(), Some("8:acs:r_u"));
        assert_eq!(
            reason(&st, types::READY).as_deref(),
            Some(reasons::IDENTITY_NOT_FOUND)
        );

        let mut valid = CommunicationTokenStatus {
            expires_on: Some(Time(at(1_000))),
            ..Default::default()
        };
        let f = issue_failed(
            &mut valid,
            &t,
            "8:acs:r_u",
            IssueReason::Renewal,
            &service(401, "Unauthorized"),
            at(500),
        );
        assert_eq!(f.reason, reasons::CREDENTIALS_REJECTED);
        assert_eq!(
            reason(&valid, types::READY).as_deref(),
            Some(reasons::CREDENTIALS_REJECTED)
        );
    }

    #[test]
    fn an_issued_token_names_its_issuance_and_next_renewal_and_clears_what_it_served() {
        let mut t = token();
        t.metadata.annotations = Some(
            [(api::ROTATE_ANNOTATION.to_string(), "2".to_string())]
                .into_iter()
                .collect(),
        );
        let recorded = RecordedToken {
            expires_on: at(3_600),
            issued_at: at(0),
            user_id: "8:acs:r_u".into(),
            scopes: vec![crate::acs::Scope::Voip],
            expires_in_minutes: 60,
            revocation_epoch: 3,
            key_fingerprint: "f".into(),
            revision: 2,
        };
        let mut st = CommunicationTokenStatus {
            failed_attempts: 2,
            revocation_requested: Some(2),
            ..Default::default()
        };
        let served = Served {
            record: recorded,
            renew: at(3_000),
        };
        let (r, note) = issued(
            &mut st,
            &t,
            &served,
            "8:acs:r_u",
            IssueReason::Forced,
            3,
            at(1),
        );
        assert_eq!(r, reasons::TOKEN_ROTATED);
        assert!(note.contains("forced"), "{note}");
        assert_eq!(
            reason(&st, types::READY).as_deref(),
            Some(reasons::TOKEN_ROTATED)
        );
        let issuing = st.conditions.find(types::ISSUING).unwrap();
        assert_eq!(issuing.status, "False");
        assert!(issuing.message.contains(&at(3_000).to_string()));
        assert_eq!(st.failed_attempts, 0);
        assert_eq!(
            st.revocation_requested, None,
            "the epoch it waited for is passed"
        );
        assert_eq!(st.handled_rotate_annotation.as_deref(), Some("2"));
        assert_eq!(st.last_rotation_time, Some(Time(at(0))));

        let (first, _) = issued(
            &mut CommunicationTokenStatus::default(),
            &t,
            &served,
            "8:acs:r_u",
            IssueReason::Initial,
            3,
            at(1),
        );
        assert_eq!(first, reasons::TOKEN_ISSUED);
    }
}
