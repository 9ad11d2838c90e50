//! Pure: what a CommunicationUser reconcile must do, from what it observed (its status, its
//! spec, its credentials, what its tokens and the other users say). Every verdict short of
//! "ready" is decided here, so it is table-tested, but one: in preview mode, whether an
//! identity to adopt exists takes an ACS call, made by the act step with the others.

use std::time::Duration;

use crate::acs::ApiMode;
use crate::api::condition::reasons;

/// How soon a user whose identity and credentials disagree looks again (a fix usually comes
/// as a change that wakes it sooner).
pub const MISMATCH_RECHECK: Duration = Duration::from_secs(300);

/// What a user reconcile observed.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The identity the status records, and the endpoint of the resource it lives in.
    pub identity: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    /// `spec.identityId`: an identity to adopt.
    pub adopt: Option<&'a str>,
    /// The credentials, or why there are none (a lasting reason; transient failures never get
    /// this far).
    pub creds: Result<Creds<'a>, Refused>,
    /// The recorded identity is known deleted outside the operator: `Some(token)` when one of
    /// the user's tokens found it gone, `Some(None)` when the user's own status says so.
    pub lost: Option<Option<String>>,
    /// Why adopting `adopt` is refused (its reason and message), if it is.
    pub adoption_refused: Option<(&'static str, String)>,
    pub api_mode: ApiMode,
    /// How soon a ready user, or one that only a person can fix, is looked at again.
    pub resync: Duration,
}

/// The credentials as far as the plan needs them.
#[derive(Debug, Clone)]
pub struct Creds<'a> {
    pub endpoint: &'a str,
    /// Where they came from, for messages.
    pub source: String,
}

/// Credentials that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    pub message: String,
    pub requeue: Duration,
}

/// The one thing a reconcile does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Report `Ready=False` with this reason; no ACS call.
    NotReady {
        reason: &'static str,
        message: String,
        requeue: Duration,
    },
    /// Record `id` as the user's identity (after checking it exists, in preview mode).
    Adopt { id: String, verify: bool },
    /// Create an identity.
    Create,
    /// The identity `id` is in place: serve revocation requests and report ready.
    Ready { id: String },
}

pub fn decide(o: &Observed) -> Plan {
    let creds = match &o.creds {
        Ok(c) => c,
        Err(r) => {
            return Plan::NotReady {
                reason: r.reason,
                message: r.message.clone(),
                requeue: r.requeue,
            }
        }
    };
    let not_ready = |reason, message, requeue| Plan::NotReady {
        reason,
        message,
        requeue,
    };
    // Credentials now pointing at another ACS resource: never recreate silently.
    if let (Some(id), Some(endpoint)) = (o.identity, o.endpoint) {
        if !endpoint.eq_ignore_ascii_case(creds.endpoint) {
            let msg = format!(
                "identity {id} belongs to {endpoint}, but the credentials ({}) point to {}; restore the credentials, or delete this CommunicationUser and create a new one",
                creds.source, creds.endpoint
            );
            return not_ready(reasons::RESOURCE_MISMATCH, msg, MISMATCH_RECHECK);
        }
    }
    // Deleted outside the operator: nothing to call ACS for until the resource is recreated.
    if let (Some(id), Some(by)) = (o.identity, &o.lost) {
        let by = by.as_ref().map_or(String::new(), |t| {
            format!(" (found by CommunicationToken {t})")
        });
        let msg = format!("identity {id} no longer exists in ACS{by}: it was deleted outside the operator; delete and recreate this CommunicationUser");
        return not_ready(reasons::IDENTITY_NOT_FOUND, msg, o.resync);
    }
    match (o.identity, o.adopt) {
        (None, Some(adopt)) => match &o.adoption_refused {
            Some((reason, msg)) => not_ready(reason, msg.clone(), o.resync),
            None => Plan::Adopt {
                id: adopt.to_string(),
                verify: o.api_mode == ApiMode::Preview,
            },
        },
        (None, None) => Plan::Create,
        (Some(have), Some(want)) if want != have => {
            let msg = format!("spec.identityId {want} differs from the managed identity {have}; create a new CommunicationUser to manage another identity");
            not_ready(reasons::RESOURCE_MISMATCH, msg, MISMATCH_RECHECK)
        }
        (Some(id), _) => Plan::Ready { id: id.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: &str = "https://a.communication.azure.com";
    const ID: &str = "8:acs:r_1";
    const RESYNC: Duration = Duration::from_secs(3600);

    fn observed() -> Observed<'static> {
        Observed {
            identity: None,
            endpoint: None,
            adopt: None,
            creds: Ok(Creds {
                endpoint: EP,
                source: "Secret ns/acs-credentials".into(),
            }),
            lost: None,
            adoption_refused: None,
            api_mode: ApiMode::Ga,
            resync: RESYNC,
        }
    }

    fn reason(p: &Plan) -> (&'static str, Duration) {
        match p {
            Plan::NotReady {
                reason, requeue, ..
            } => (reason, *requeue),
            other => panic!("not a refusal: {other:?}"),
        }
    }

    #[test]
    fn a_new_user_creates_and_a_recorded_identity_is_ready() {
        assert_eq!(decide(&observed()), Plan::Create);
        let o = Observed {
            identity: Some(ID),
            endpoint: Some(EP),
            ..observed()
        };
        assert_eq!(decide(&o), Plan::Ready { id: ID.into() });
        // The same identity named in the spec is no mismatch; the endpoint's case is ignored.
        let o = Observed {
            adopt: Some(ID),
            endpoint: Some("HTTPS://A.communication.azure.com"),
            ..o
        };
        assert_eq!(decide(&o), Plan::Ready { id: ID.into() });
    }

    #[test]
    fn adoption_is_verified_in_preview_only_and_refusals_win() {
        let o = Observed {
            adopt: Some(ID),
            ..observed()
        };
        assert_eq!(
            decide(&o),
            Plan::Adopt {
                id: ID.into(),
                verify: false
            }
        );
        let preview = Observed {
            api_mode: ApiMode::Preview,
            ..o.clone()
        };
        assert_eq!(
            decide(&preview),
            Plan::Adopt {
                id: ID.into(),
                verify: true
            }
        );
        let refused = Observed {
            adoption_refused: Some((reasons::IDENTITY_IN_USE, "taken".into())),
            ..o
        };
        assert_eq!(
            reason(&decide(&refused)),
            (reasons::IDENTITY_IN_USE, RESYNC)
        );
    }

    #[test]
    fn each_refusal_has_its_reason_and_recheck() {
        let no_creds = Observed {
            creds: Err(Refused {
                reason: reasons::CREDENTIALS_NOT_FOUND,
                message: "no Secret".into(),
                requeue: Duration::from_secs(60),
            }),
            identity: Some(ID),
            endpoint: Some("https://other"),
            ..observed()
        };
        // Without credentials, nothing else can be judged.
        assert_eq!(
            reason(&decide(&no_creds)),
            (reasons::CREDENTIALS_NOT_FOUND, Duration::from_secs(60))
        );
        let moved = Observed {
            creds: observed().creds,
            lost: Some(None),
            ..no_creds
        };
        // Another resource is reported before a lost identity (it may exist over there).
        assert_eq!(
            reason(&decide(&moved)),
            (reasons::RESOURCE_MISMATCH, MISMATCH_RECHECK)
        );
        let lost = Observed {
            endpoint: Some(EP),
            lost: Some(Some("t1".into())),
            ..moved.clone()
        };
        let p = decide(&lost);
        assert_eq!(reason(&p), (reasons::IDENTITY_NOT_FOUND, RESYNC));
        assert!(
            matches!(p, Plan::NotReady { message, .. } if message.contains("found by CommunicationToken t1"))
        );
        // Known from the user's own status (a revoke found it gone).
        let p = decide(&Observed {
            lost: Some(None),
            ..lost.clone()
        });
        assert_eq!(reason(&p), (reasons::IDENTITY_NOT_FOUND, RESYNC));
        assert!(matches!(&p, Plan::NotReady { message, .. } if !message.contains("found by")));
        let other = Observed {
            lost: None,
            adopt: Some("8:acs:r_2"),
            ..lost
        };
        let p = decide(&other);
        assert_eq!(reason(&p), (reasons::RESOURCE_MISMATCH, MISMATCH_RECHECK));
        assert!(
            matches!(&p, Plan::NotReady { message, .. } if message.starts_with("spec.identityId 8:acs:r_2 differs"))
        );
        let p = decide(&moved);
        assert!(
            matches!(&p, Plan::NotReady { message, .. } if message.contains("point to https://a.communication.azure.com"))
        );
    }
}
